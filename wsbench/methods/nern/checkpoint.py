"""Checkpoint and resume: one safetensors file per member written atomically (temp name + os.replace).

A run of several members (e.g. `--preset paper` on ResNet20 and ResNet56) shares one run folder;
each member's files are named after it: `nern_ckpt.<member>.safetensors` / `.json`.

Tensors: predictor ("predictor.*"), best predictor so far ("best.*"), a learned embedding table
if any, optimizer moments ("opt.*") and Lookahead slow weights ("slow.*"). Scalars (iteration,
best accuracy and its iteration, optimizer step counters, the run's identity) go into the file's
metadata under "nern_state" as JSON, and a copy into nern_ckpt.json for people. The random draws
of step t are a function of (seed, t) (sampling.py), so no generator state is needed, and the
learning rate is a function of t (optim.cosine_lr), so no scheduler state either.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from ...errors import ConfigError, IntegrityError
from ...files import sweep_leftovers, write_atomic

LEGACY_CKPT_NAME = "nern_ckpt.safetensors"  # before per-member names: still resumed when its identity matches
FORMAT = 1


def checkpoint_names(member_id: str) -> tuple[str, str]:
    """(checkpoint, JSON copy) file names of one member: letters, digits, '_', '-' and '.' only (they
    travel back from a GPU lease), with a hash suffix when the id had to be changed to get there."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", member_id)[:64]
    if safe != member_id:
        safe += "-" + hashlib.sha256(member_id.encode()).hexdigest()[:8]
    return f"nern_ckpt.{safe}.safetensors", f"nern_ckpt.{safe}.json"


def run_identity(config: dict[str, Any], non_result_keys: set[str], member_id: str,
                 weights_digest: str, seed: int) -> dict[str, Any]:
    """What must match for a checkpoint to be continued."""
    return {"config": {k: v for k, v in sorted(config.items()) if k not in non_result_keys},
            "member_id": member_id, "weights_digest": weights_digest, "seed": seed}


def state_dict_digest(state_dict: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:32]


def save_checkpoint(workdir: Path, tensors: dict[str, Tensor], scalars: dict[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_name, json_name = checkpoint_names(scalars["identity"]["member_id"])
    path = workdir / ckpt_name
    payload = {"format": FORMAT, **scalars}
    text = json.dumps(payload, sort_keys=True, default=float)
    write_atomic(path, save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                            metadata={"nern_state": text}))
    write_atomic(workdir / json_name, json.dumps(payload, indent=1, sort_keys=True, default=float))
    return path


def load_checkpoint(workdir: Path, identity: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(tensors, scalars) of the checkpoint in `workdir`, None if there is none.

    ConfigError if it belongs to another run (config, member, weights or seed differ)."""
    sweep_leftovers(workdir)  # a save killed mid-write
    path = workdir / checkpoint_names(identity["member_id"])[0]
    if not path.is_file():
        legacy = workdir / LEGACY_CKPT_NAME
        if not legacy.is_file() or _stored_identity(legacy).get("member_id") != identity["member_id"]:
            return None
        path = legacy
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
        scalars = json.loads(meta["nern_state"])
    except (SafetensorError, KeyError, ValueError, OSError) as e:
        raise IntegrityError(f"nern: checkpoint {path} is unreadable ({e}); delete it to start afresh") from None
    if scalars.get("format") != FORMAT:
        raise IntegrityError(f"nern: checkpoint {path} has format {scalars.get('format')}, expected {FORMAT}")
    stored = scalars.get("identity", {})
    if stored != json.loads(json.dumps(identity, sort_keys=True, default=float)):
        diffs = _differences(stored, identity)
        raise ConfigError(f"nern: checkpoint {path} belongs to a different run ({'; '.join(diffs)}); "
                          f"use another workdir or delete the checkpoint")
    return tensors, scalars


# config keys that change nothing before the first KD/FMD step (images are only drawn for KD/FMD)
DISTILL_ONLY_KEYS = frozenset({"kd_weight", "fmd_weight", "loss_warmup", "kd_loss", "fmd_aliasing", "data", "noise",
                               "image_batch", "augment", "train_limit", "bf16"})


def reconstruction_only_until(config: dict[str, Any]) -> int:
    """Iterations before which every step of a run with `config` is reconstruction-only."""
    if config.get("kd_weight", 0) == 0 and config.get("fmd_weight", 0) == 0:
        return int(config["iterations"])
    return int(config.get("loss_warmup", 0))


def _sibling_checkpoints(workdir: Path, member_id: str) -> Iterator[tuple[Path, dict[str, Any], int]]:
    """(folder, identity, iteration) of each readable checkpoint of `member_id` in the run folders
    beside `workdir` (its JSON side file is read; unreadable ones are skipped)."""
    if not workdir.parent.is_dir():
        return
    ckpt_name, json_name = checkpoint_names(member_id)
    for other in sorted(workdir.parent.iterdir()):
        if other == workdir or not (other / ckpt_name).is_file() or not (other / json_name).is_file():
            continue
        try:
            info = json.loads((other / json_name).read_text())
            theirs, iteration = info["identity"], int(info["iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        yield other, theirs, iteration


def find_prefix_checkpoint(workdir: Path, identity: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """A checkpoint of another run beside `workdir` (e.g. runs/<other key>/) that this run would have
    reached itself: same member, weights, seed and config except keys that only matter for KD/FMD,
    taken at an iteration before either run's first KD/FMD step. The latest such: (folder, identity).

    This lets a run with KD/FMD switched on for the last part of a schedule start from a
    reconstruction-only run of the same schedule instead of repeating its steps."""
    ours = json.loads(json.dumps(identity, sort_keys=True, default=float))
    best: tuple[int, Path, dict[str, Any]] | None = None
    for other, theirs, it in _sibling_checkpoints(workdir, identity["member_id"]):
        if any(theirs.get(k) != ours.get(k) for k in ("member_id", "weights_digest", "seed")):
            continue
        a, b = theirs.get("config", {}), ours["config"]
        if any(a.get(k) != b.get(k) for k in set(a) | set(b) if k not in DISTILL_ONLY_KEYS):
            continue
        if it <= min(reconstruction_only_until(a), reconstruction_only_until(b)) and (best is None or it > best[0]):
            best = (it, other, theirs)
    return None if best is None else (best[1], best[2])


def adopt_same_run_checkpoint(workdir: Path, identity: dict[str, Any]) -> Path | None:
    """Move into `workdir` the checkpoint of this very training (identical identity: config, member,
    weights digest, seed) that a sibling run folder holds, e.g. one recorded under an older run key
    (run keys gained the zoo's content digest). Returns the folder it came from, or None."""
    ckpt_name, json_name = checkpoint_names(identity["member_id"])
    if (workdir / ckpt_name).is_file():
        return None
    ours = json.loads(json.dumps(identity, sort_keys=True, default=float))
    for other, theirs, _ in _sibling_checkpoints(workdir, identity["member_id"]):
        if theirs == ours and _stored_identity(other / ckpt_name) == ours:
            workdir.mkdir(parents=True, exist_ok=True)
            os.replace(other / ckpt_name, workdir / ckpt_name)
            os.replace(other / json_name, workdir / json_name)
            if not any(other.iterdir()):
                other.rmdir()
            return other
    return None


def _stored_identity(path: Path) -> dict[str, Any]:
    """The identity in a checkpoint file's metadata ({} when unreadable: then it is not ours to resume)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {})["nern_state"]).get("identity", {})
    except (SafetensorError, KeyError, ValueError, OSError):
        return {}


def _differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    out = []
    cur = json.loads(json.dumps(current, sort_keys=True, default=float))
    for key in ("member_id", "weights_digest", "seed"):
        if stored.get(key) != cur.get(key):
            out.append(f"{key}: checkpoint {stored.get(key)!r} vs now {cur.get(key)!r}")
    sc, cc = stored.get("config", {}), cur.get("config", {})
    for k in sorted(set(sc) | set(cc)):
        if sc.get(k) != cc.get(k):
            out.append(f"config key {k!r}: checkpoint {sc.get(k)!r} vs now {cc.get(k)!r}")
    return out or ["identity differs"]
