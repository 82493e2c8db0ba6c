"""How much memory this process can still take: the kernel's estimate, capped by a cgroup limit."""
from __future__ import annotations

from pathlib import Path


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """limit - usage of this process's cgroup (v2, then v1); None when unlimited or unknown."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # v1 writes "unlimited" as a huge number
            return None
        return max(limit - usage, 0)
    return None


def available_bytes() -> int | None:
    """Bytes a new allocation can take without swapping or the OOM killer; None if unknown."""
    known = [b for b in (_meminfo_available(), _cgroup_headroom()) if b is not None]
    return min(known) if known else None


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"
