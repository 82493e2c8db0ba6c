"""The one error type the CLI turns into exit status 2 and a one-line reason, and the
translation of file-system and decoding errors into it (so every reader fails the same way)."""
from __future__ import annotations

from pathlib import Path

HEAD_BYTES = 1 << 16  # how much of a text file is checked before its reader runs
# Leading bytes of files that are not text, and what to do about each.
_BINARY_MAGIC = ((b"\x1f\x8b", "gzip-compressed; decompress it first (gunzip)"),
                 (b"PK\x03\x04", "a zip archive; extract it first"),
                 (b"\x93NUMPY", "a NumPy array file, not text"))


class DataError(ValueError):
    """Bad input: the message names the file, the line or id, what is wrong and the fix."""


def where(path, line: int | None = None) -> str:
    """`file:line` prefix for DataError messages (line is 1-based, header = line 1)."""
    return f"{path}:{line}" if line is not None else f"{path}"


def os_error(path, err: OSError, fix: str) -> DataError:
    """An OSError (missing, a directory, no permission, disk full ...) as a one-line DataError."""
    reason = err.strerror or type(err).__name__
    return DataError(f"{path}: {reason[:1].lower()}{reason[1:]}; {fix}")


def check_text_file(path, fix: str) -> None:
    """A regular file whose first bytes look like UTF-8 text; DataError naming the problem if not.

    Only the head is read: a decoding error further in is left to the reader, which should pass
    it to `decoding_error`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; {fix}")
    if not path.is_file():
        raise DataError(f"{path}: is a directory (or not a regular file); {fix}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
            whole = not handle.read(1)
    except OSError as err:
        raise os_error(path, err, fix) from None
    for magic, what in _BINARY_MAGIC:
        if head.startswith(magic):
            raise DataError(f"{path}: is {what}; {fix}")
    if b"\x00" in head:
        raise DataError(f"{path}: holds NUL bytes, so it is binary, not text; {fix}")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if whole or err.start < len(head) - 3:  # not just a character cut at the end of the head
            raise decoding_error(path) from None


def decoding_error(path) -> DataError:
    """The file is not UTF-8: name its first undecodable line (read again, on this error path only)."""
    line = None
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = number
                    break
    except OSError:
        pass
    return DataError(f"{where(path, line)}: not UTF-8 text; save the file as UTF-8 "
                     f"(e.g. iconv -f latin1 -t utf-8)")


def read_text_file(path, fix: str) -> str:
    """The whole file as UTF-8 text, or a one-line DataError (missing, directory, binary, encoding)."""
    check_text_file(path, fix)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise decoding_error(path) from None
    except OSError as err:
        raise os_error(path, err, fix) from None
