"""Keep large tensor buffers in the process heap between uses (glibc malloc, Linux).

glibc serves allocations above its mmap threshold (128 KiB at first, adapting up to 32 MiB) with a
fresh mmap and returns them with munmap, so a loop that allocates the same temporaries every step
pays page faults and zeroing each time: on this 2-core machine more system time than compute
(fitting 2,048 SIRENs for 100 steps: 54 s wall, 31 s of it in the kernel). The thresholds must
exceed the largest per-step temporary: a small-CNN shard (64 networks at batch 512) has 470 MB
activations, so at 64 MiB / 128 MiB the medium small-CNN zoo built in 64 minutes, 54 of them
system time, against 27.5 minutes at 1 GiB (128 runs x 20 steps: 161 s, 131 s system, against
131 s, 32 s system). What 1 GiB keeps after a round of a build is handed back with
`release_free_memory()` between shards (1,000 small CNNs in 16 shards peaked at 4.6 GB without it).
Set WSBENCH_MALLOC_TUNING=0 to leave malloc as it is, or to "MMAP_MIB,TRIM_MIB" for other thresholds.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

from .errors import ConfigError

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_BYTES, _TRIM_BYTES = 1 << 30, 1 << 30
_done = False


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds once per process; False where that does not apply."""
    global _done
    if _done:
        return True
    setting = os.environ.get("WSBENCH_MALLOC_TUNING", "1").strip()
    if setting == "0" or not sys.platform.startswith("linux"):
        return False
    mmap_bytes, trim_bytes = _thresholds(setting)
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:  # not glibc (musl, ...): nothing to tune
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_bytes))
    return _done


def _thresholds(setting: str) -> tuple[int, int]:
    """(mmap, trim) thresholds in bytes: the defaults for "1", else from "MMAP_MIB,TRIM_MIB"."""
    if setting == "1":
        return _MMAP_BYTES, _TRIM_BYTES
    parts = setting.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"WSBENCH_MALLOC_TUNING={setting!r}: expected 0, 1 or MMAP_MIB,TRIM_MIB (positive integers)")
    mmap_mib, trim_mib = (int(p) for p in parts)
    return mmap_mib << 20, trim_mib << 20


def release_free_memory() -> bool:
    """Hand the heap's free memory back to the system (glibc malloc_trim) once a build round is done,
    so the next round's different shapes do not stack on what the last one freed. False where that
    does not apply (tuning off, not glibc)."""
    if not _done:
        return False
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False
