"""A first `kit cv` on new files: the data parsed and the holdout drawn in a forked child while the
parent imports torch and checks the options (two seconds of imports, which a thread could not
overlap: both halves hold the GIL too often). The child leaves both in the data cache
(recsys_kit.data.cache), where the run's own calls find them; it never reports anything, so bad
files are still found and named by the parent's own parse.
"""
from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

from recsys_kit.config import HoldoutConfig
from recsys_kit.data import cache as data_cache


def start(data_dir: str | Path, holdout: HoldoutConfig, seed: int) -> int | None:
    """The child's pid, or None where a child would not help: no fork (not POSIX), the cache off,
    or torch already imported (nothing left to overlap, and a forked child of a process with
    torch's thread pools is best avoided)."""
    if not hasattr(os, "fork") or data_cache.cache_dir() is None or "torch" in sys.modules:
        return None
    from recsys_kit.data.load import load_dataset
    from recsys_kit.protocol.holdout import contest_holdout

    pid = os.fork()
    if pid:
        return pid
    try:  # the child: warm the cache, say nothing, leave without the parent's exit handlers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = load_dataset(Path(data_dir))
            contest_holdout(dataset.matrix, dataset.times, holdout, seed, dataset.source)
    except BaseException:  # noqa: BLE001  (the parent parses again and names what is wrong)
        pass
    finally:
        os._exit(0)


def finish(pid: int | None) -> None:
    """Wait for the child (the cache is complete, or the parent parses itself)."""
    if pid is not None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def cancel(pid: int | None) -> None:
    """Stop the child (a bad option ends the command); a cache entry it was writing is never
    published half-written (recsys_kit.files writes under a temporary name)."""
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finish(pid)
