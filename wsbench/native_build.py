"""Small C kernels of the package, compiled on first use for this machine and loaded with ctypes.

A kernel is one C file without Python or torch headers (it compiles in about a second), built with
the system C compiler (`$CC`, default `cc`) at -O3 for this CPU (-march=native) with OpenMP. The
library is cached in `$WSBENCH_CACHE_DIR/native` under a key of the source, the flags, the
compiler's version and the CPU model, written to a temporary name and renamed into place, so
concurrent processes and machines sharing a home folder never load a half-written or foreign
build. Its OpenMP runtime is torch's: torch has loaded `libgomp.so.1` before any kernel is loaded,
so the kernel's parallel loops use torch's thread pool and thread count.

Where no compiler works, or with `WSBENCH_NATIVE=0`, `load_kernel` returns None (one warning per
process) and callers run their plain-torch path: same results, slower.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from .resources import cache_dir

# no -ffast-math family: reassociation would fold the kernels' rounding tricks ((x + c) - c) away
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno")


@functools.cache
def _cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields = [line.split(":", 1)[1].strip() for line in info.splitlines()
              if line.startswith(("model name", "flags")) and ":" in line]
    return " | ".join(dict.fromkeys(fields)) + " | " + platform.machine()


@functools.cache
def _compiler_version(cc: str) -> str:
    done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else cc


def _build(source: Path, cc: str) -> Path:
    text = source.read_bytes()
    key = hashlib.sha256(b"\0".join([text, " ".join(FLAGS).encode(), _compiler_version(cc).encode(),
                                     _cpu_model().encode()])).hexdigest()[:16]
    out_dir = cache_dir() / "native"
    target = out_dir / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, str(source), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed on {source.name}: {done.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


Signatures = tuple[tuple[str, tuple[type, ...]], ...]


@functools.lru_cache(maxsize=None)
def load_kernel(source: Path, signatures: Signatures = ()) -> ctypes.CDLL | None:
    """The compiled library of C file `source`, with the ctypes argument types of its functions set from
    `signatures` ((name, argtypes) pairs), or None (with one warning) where it cannot be built."""
    if os.environ.get("WSBENCH_NATIVE", "1") == "0":
        return None
    import torch  # noqa: F401 - its libgomp must be loaded first, so that the kernel shares it

    cc = os.environ.get("CC") or "cc"
    try:
        if shutil.which(cc) is None:
            raise RuntimeError(f"no C compiler ({cc}) on PATH")
        lib = ctypes.CDLL(str(_build(source, cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"could not build the C kernel {source.name} ({error}); the plain torch path runs instead "
                      "(same results, slower)", RuntimeWarning, stacklevel=2)
        return None
    for name, argtypes in signatures:
        getattr(lib, name).argtypes = list(argtypes)
    return lib
