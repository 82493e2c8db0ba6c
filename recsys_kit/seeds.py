"""One base seed; every random choice draws from a child seed derived from it (lenskit's make_seed)."""
from __future__ import annotations

import hashlib


def derive_seed(base: int, *keys) -> int:
    """A stable child seed per (base, purpose, fold, trial ...), as lenskit's make_seed."""
    text = ":".join(str(k) for k in (base, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
