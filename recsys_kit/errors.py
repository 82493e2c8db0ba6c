"""The one error type the CLI turns into exit status 2 and a one-line reason."""


class DataError(ValueError):
    """Bad input: the message names the file, the line or id, what is wrong and the fix."""


def where(path, line: int | None = None) -> str:
    """`file:line` prefix for DataError messages (line is 1-based, header = line 1)."""
    return f"{path}:{line}" if line is not None else f"{path}"
