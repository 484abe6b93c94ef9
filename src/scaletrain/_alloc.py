"""glibc malloc tuning at start-up, for users who never set MALLOC_* environment variables.

glibc serves allocations above a dynamic threshold (128 KiB at first) with fresh `mmap`s and
returns freed heap tops to the kernel; a training step allocates and frees the same 1-30 MB
tensors every step, so each step page-faults its memory in anew (seconds of system time per
run, 10-40 % of step time on small CPU models; see bench/README.md). Fixing the threshold at
32 MiB and never trimming keeps those pages in the process, as `MALLOC_MMAP_THRESHOLD_` and
`MALLOC_TRIM_THRESHOLD_` would. Cost: freed memory is kept for reuse instead of returned, so
peak RSS is the high-water mark (which it is for a training loop anyway).

The only environment read outside `parallel/env.py` and the launcher: whether the user set
glibc's own two variables. Their values win, so setting either one is also how to opt out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest a C int holds: effectively never trim

_applied: bool | None = None


def tune_malloc() -> bool:
    """Apply the thresholds once per process; True where glibc took them.

    Leaves the allocator alone where the user set either variable (their choice wins), or
    off glibc (macOS, musl, Windows).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    # glibc read these at start-up; we only ask whether the user configured it themselves
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return _applied
    if not sys.platform.startswith("linux"):
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # trim first: setting M_MMAP_THRESHOLD also freezes glibc's dynamic adjustment of both
    trimmed = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(trimmed)
    return _applied
