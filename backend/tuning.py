"""Process-level tuning for the CLI and TUI processes (never called by library users).

glibc's malloc raises its mmap threshold dynamically after large blocks are freed, after which
16 MiB pack buffers come from the heap and are never returned: resident memory grows with
every pack. A fixed threshold keeps large buffers in mmap (returned on free), and a small arena
count bounds per-thread fragmentation.
"""

from __future__ import annotations

import ctypes
import sys

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc() -> bool:
    """Apply the malloc settings; returns whether they took effect (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The C library this process already has (find_library would run ``ldconfig -p``:
        # a fork and ~20 ms on every command).
        libc = ctypes.CDLL(None)
        ok1 = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        ok2 = libc.mallopt(_M_ARENA_MAX, 2)
        return bool(ok1 and ok2)
    except (OSError, AttributeError):
        return False
