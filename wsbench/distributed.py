"""Several processes (`torchrun`): one process group, one device per process, small collectives.

    torchrun --nproc_per_node 8 run_bench.py build-zoo siren_mnist --device cuda
    torchrun --nproc_per_node 8 run_bench.py --method dwsnet --zoo siren_mnist --device cuda

A launch by torchrun is told apart by its environment (RANK, WORLD_SIZE, LOCAL_RANK). `setup`
then starts the process group (nccl for cuda, gloo for cpu) and gives each process the GPU of its
local rank. Without torchrun, or with a world of one process, nothing is started and every helper
here is the identity: single-process runs behave as if this module did not exist.

The timeout of every collective is WSBENCH_DIST_TIMEOUT_S seconds (default 4 hours: zoo shards
are unevenly long, and ranks that finish early wait for the others).
"""
from __future__ import annotations

import atexit
import datetime
import gc
import os
from typing import Any, Sequence

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 4 * 3600


def launched() -> bool:
    """True in a process started by torchrun (or anything setting RANK/WORLD_SIZE) with > 1 process."""
    try:
        return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    """True when a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: torchrun's RANK (before `setup` too), 0 in a single process."""
    if active():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched() else 0


def world() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    """The rank on this node (torchrun's LOCAL_RANK), 0 without a process group."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def is_main() -> bool:
    """True on rank 0, which alone writes zoos and result records and prints."""
    return rank() == 0


def setup(device: torch.device | str) -> torch.device:
    """Start the process group when launched by torchrun (idempotent) and return this process's
    device: `cuda` becomes `cuda:LOCAL_RANK`; anything else is returned unchanged."""
    device = torch.device(device)
    if not launched():
        return device
    if device.type == "cuda":
        if torch.cuda.device_count() <= local_rank():
            from .errors import ConfigError

            raise ConfigError(f"torchrun started local rank {local_rank()} but this node has "
                              f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("WSBENCH_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        atexit.register(shutdown, wait=False)  # before the interpreter tears torch down
    return device


def shutdown(wait: bool = True) -> None:
    """Tear the process group down (safe to call twice, or without one). `wait`: first wait for
    every rank, so that none closes its connections while another still uses them (the normal
    end of a run); pass False on an error path, where the other ranks may never arrive."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # DDP reducers and pending work hold the process group
    if wait:
        barrier()
    dist.destroy_process_group()


def _uses_nccl() -> bool:
    return dist.get_backend() == "nccl"


def _tensor_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if _uses_nccl() else torch.device("cpu")


def barrier() -> None:
    """Wait until every process gets here."""
    if active():
        if _uses_nccl():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank (picklable, small)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (picklable, small); [obj] without a process group."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_values(values: Sequence[float], op: str = "sum") -> list[float]:
    """Element-wise sum ("sum") or maximum ("max") of a few numbers over the ranks."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_tensor_device())
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t.cpu().tolist()


def describe(device_text: str) -> str:
    """A device description with the number of processes added under torchrun."""
    return f"{device_text} x{world()} processes (torchrun)" if active() else device_text


__all__ = ["launched", "active", "rank", "world", "local_rank", "is_main", "setup", "shutdown", "barrier",
           "broadcast_object", "all_gather_object", "all_reduce_values", "describe"]
