"""Keep large tensor buffers in the process heap between uses (glibc malloc, Linux).

glibc serves allocations above its mmap threshold (at most 32 MiB, however it adapts) with a fresh
mmap and returns them with munmap, so a loop that allocates the same large temporaries every step
(a shard of 800 SIRENs: 80 MB activations) pays page faults and zeroing each time: on this 2-core
machine more system time than compute (fitting 400 SIRENs for 60 steps: 32 s wall, 15 s of it in the
kernel; with the thresholds raised, 15 s). Raising the mmap and trim thresholds keeps freed blocks
for reuse; the cost is that up to 1 GiB of freed memory stays with the process.
Set WSBENCH_MALLOC_TUNING=0 to leave malloc as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30
_done = False


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where that does not apply."""
    global _done
    if _done:
        return True
    if os.environ.get("WSBENCH_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    return _done
