"""Process set-up: keep the memory that tensors free for the next tensors (glibc malloc).

PyTorch allocates every CPU tensor with ``malloc``. glibc serves a large request with a fresh ``mmap``
and gives it back to the kernel on ``free`` (and trims the heap's free top beyond a threshold), so the
next tensor of that size is new memory again: the kernel zeroes each of its 4 KiB pages on first touch
(a minor page fault each). Offline encode + decode allocates layer outputs of tens to hundreds of MB,
and that re-faulting costs CPU time, the more the longer the input. :func:`keep_freed_memory` makes
glibc serve every size from its heap and keep up to 2 GiB of freed memory there for the next tensors.
Measured (``tools/bench/rave_malloc.py``: v2, 1 thread, CPU time, medians of 6 alternated pairs of
processes; README "Allocator"): encode + decode of 10 s of audio 0.757 -> 0.689 s (1.10x), of 60 s
5.67 -> 4.19 s (1.35x); training steps unchanged (1.01x). Peak resident memory +0-6 % (freed blocks are
reused, not all at once); the memory is not handed back to the kernel before the process ends, which
suits one-shot commands and training.

The ``acids-rave`` command calls it at start; library users may call it once. ``ACIDS_MALLOC=system``
leaves the allocator as it is. Other C libraries than glibc (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: freed memory kept at the top of the heap before glibc trims it (mallopt takes an int)
TRIM_THRESHOLD = 2**31 - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory instead of returning it to the kernel (see the module).

    Returns whether the setting is in force. Idempotent; a no-op (False) off glibc or with
    ``ACIDS_MALLOC=system`` in the environment.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("ACIDS_MALLOC", "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt accepts and ignores these  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # no mmap for large requests: they come from the heap (glibc still falls back to mmap where the heap
    # cannot grow), and freed memory stays there for reuse up to TRIM_THRESHOLD
    _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
