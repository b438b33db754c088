"""Keep large tensor buffers in the process heap between uses (glibc malloc, Linux).

glibc serves allocations above its mmap threshold (128 KiB at first, adapting up to 32 MiB) with a
fresh mmap and returns them with munmap, so a loop that allocates the same temporaries every step
pays page faults and zeroing each time: on this 2-core machine more system time than compute
(fitting 2,048 SIRENs for 100 steps: 54 s wall, 31 s of it in the kernel). Fixing the mmap threshold
at 64 MiB and the trim threshold at 128 MiB keeps those blocks for reuse (33 s, 1 s in the kernel).
Higher thresholds (1 GiB, tried first) fit SIRENs no faster but keep the freed temporaries of every
round of a build whose shapes change between rounds: 1,000 small CNNs in 16 shards peaked at 4.6 GB
and ran 93 s, against 2.8 GB and 58 s at 64/128 MiB (and 2.7 GB, 65 s untuned).
Set WSBENCH_MALLOC_TUNING=0 to leave malloc as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_BYTES, _TRIM_BYTES = 64 << 20, 128 << 20
_done = False


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds once per process; False where that does not apply."""
    global _done
    if _done:
        return True
    if os.environ.get("WSBENCH_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
    return _done
