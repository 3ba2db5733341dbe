"""What the host offers a run now: the memory it can still use (both the size check of a config and the data
commands that build a set in memory ask it)."""

from __future__ import annotations

from pathlib import Path


def available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable); 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
