"""SIREN INR zoos as in DWSNets: one SIREN (2->32->32->1, omega0 = 30, +0.5 output) fitted to each
image of MNIST / Fashion-MNIST, the image's class as label, the fit's PSNR recorded.

Many SIRENs fit at once: a shard of B images is B independent networks held as [B, ...]
tensors (a batched matmul per layer), trained full-batch (all pixels every step) with Adam on
the sum of per-image MSEs, so each network's update is exactly what it gets fitted alone.
Initialisation as the published INRs' (`init: dwsnets`, see init_sirens; `sitzmann` kept as an
option), drawn per image from a counter-based generator seeded by the image; a fit stops at
`stop_psnr` (DWSNets: 40 dB). Splits by image as in DWSNets: the source test
images are `test`, `val_size` source training images (seeded) are `val`, the rest `train`.
Shards of `images_per_shard` images are kept in the work folder (resume); under torchrun each rank
fits its own shards (BuildContext.owns) and rank 0 assembles the zoo.
"""
from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..archs.siren import image_coords
from ..errors import ConfigError
from ..zoo_card import ZooCard
from . import BUILDERS, BuildContext, BuildResult, shards_across_ranks
from . import counter_rng as rng
from . import siren_grads
from .planning import device_name, progress
from .resumable import assemble, card_fingerprint, combine_reports, load_shards, open_store


def siren_shapes(hidden: int = 32, n_hidden: int = 2, in_dim: int = 2, out_dim: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    widths = [in_dim] + [hidden] * n_hidden + [out_dim]
    out = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        out += [(f"layers.{i}.weight", (b, a)), (f"layers.{i}.bias", (b,))]
    return out


INITS = ("dwsnets", "sitzmann")


def init_sirens(seeds: Tensor, shapes: list[tuple[str, tuple[int, ...]]], omega0: float,
                scheme: str = "dwsnets") -> dict[str, Tensor]:
    """Initial parameters of B SIRENs ([B, ...] per key), drawn per member from its seed.

    "dwsnets" (the published INRs' init, DWSNets nn/inr.py): every sine layer U(+-sqrt(6/fan_in)/omega0)
    (its `is_first` is never set), sine biases 0, the output layer nn.Linear's default U(+-1/sqrt(fan_in))
    for weights and bias. "sitzmann": first layer U(+-1/fan_in), later U(+-sqrt(6/fan_in)/omega0),
    every bias U(+-1/sqrt(fan_in)) (wsbench zoos before version 2: far sharper fits, ~88 dB)."""
    if scheme not in INITS:
        raise ConfigError(f"SIREN init must be one of {list(INITS)}, got {scheme!r}")
    n_layers = len(shapes) // 2
    out = {}
    for j, (key, shape) in enumerate(shapes):
        fan_in = shapes[j - 1 if key.endswith("bias") else j][1][1]
        layer = int(key.split(".")[1])
        last = layer == n_layers - 1
        if key.endswith("bias"):
            if scheme == "dwsnets" and not last:
                out[key] = torch.zeros(len(seeds), *shape, device=seeds.device)
                continue
            bound = 1.0 / math.sqrt(fan_in)
        elif scheme == "dwsnets":
            bound = 1.0 / math.sqrt(fan_in) if last else math.sqrt(6.0 / fan_in) / omega0
        else:
            bound = 1.0 / fan_in if layer == 0 else math.sqrt(6.0 / fan_in) / omega0
        u = rng.uniform(seeds, rng.STREAM_INIT, j, shape)
        out[key] = (2.0 * u - 1.0) * bound
    return out


def siren_forward(params: dict[str, Tensor], coords: Tensor, omega0: float, offset: float) -> Tensor:
    """[B, P] outputs of B SIRENs at shared coordinates [P, in]."""
    n = len(params) // 2
    h = coords.unsqueeze(0).expand(params["layers.0.weight"].shape[0], -1, -1)
    for i in range(n):
        h = torch.baddbmm(params[f"layers.{i}.bias"].unsqueeze(1), h, params[f"layers.{i}.weight"].transpose(1, 2))
        if i < n - 1:
            h = torch.sin(omega0 * h)
    return h.squeeze(-1) + offset


ENGINES = ("analytic", "autograd")
COMPILE_MODES = ("auto", "on", "off")
COMPILE_MIN_WORK = 200_000  # network-steps below which compiling (a few seconds) does not pay


def fit_sirens(images: Tensor, seeds: Tensor, *, steps: int, lr: float, omega0: float = 30.0, offset: float = 0.5,
               hidden: int = 32, n_hidden: int = 2, init: str = "dwsnets", stop_psnr: float | None = None,
               on_step=None, engine: str = "analytic", chunk: int | None = None, compile_mode: str = "auto",
               report: dict[str, Any] | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Fit one SIREN per image ([B, H, W] in [0, 1]); returns (params {key: [B, ...]}, final MSE [B]).

    With `stop_psnr`, a network whose fit reaches that PSNR stops there (its parameters are frozen,
    as a network fitted alone would stop), as in DWSNets' recipe (early stop at 40 dB).
    `engine` "analytic" (siren_grads: hand-written gradients over chunks of `chunk` networks, compiled
    on the CPU when `compile_mode` allows) or "autograd" (the simple reference); both give the same
    updates to float rounding. `report`, if given, receives the engine that ran."""
    if engine not in ENGINES or compile_mode not in COMPILE_MODES:
        raise ConfigError(f"SIREN fitting: engine must be one of {list(ENGINES)} and compile_mode one of "
                          f"{list(COMPILE_MODES)}, got {engine!r} / {compile_mode!r}")
    nb, hh, ww = images.shape
    if hh != ww:
        raise ConfigError(f"SIREN fitting expects square images, got {hh}x{ww}")
    if n_hidden < 1:
        raise ConfigError(f"SIREN fitting needs at least one sine layer, got n_hidden={n_hidden}")
    coords = image_coords(hh, device=images.device)
    target = images.reshape(nb, -1)
    params = {k: v.requires_grad_(engine == "autograd") for k, v in
              init_sirens(seeds, siren_shapes(hidden, n_hidden), omega0, init).items()}
    opt = torch.optim.Adam(params.values(), lr=lr, fused=True)  # elementwise: per-network Adam; fused: one pass (2x the for-loop one)
    on_cpu = images.device.type == "cpu"
    chunk = max(1, int(chunk or (siren_grads.CPU_CHUNK if on_cpu else nb)))
    use_compile = engine == "analytic" and on_cpu and (compile_mode == "on" or (compile_mode == "auto" and nb * steps >= COMPILE_MIN_WORK))
    compile_fn = siren_grads.compiled_chunk_fn() if use_compile else None
    stop_mse = None if stop_psnr is None else 10.0 ** (-stop_psnr / 10.0)
    done = torch.zeros(nb, dtype=torch.bool, device=images.device)
    for s in range(steps):
        if engine == "autograd":
            opt.zero_grad(set_to_none=True)
            mse = ((siren_forward(params, coords, omega0, offset) - target) ** 2).mean(1)
            mse.sum().backward()
        else:
            with torch.no_grad():
                mse, grads, compiled = siren_grads.loss_and_grads(params, coords, target, omega0, offset, chunk=chunk,
                                                                   compile_fn=compile_fn)
            compile_fn = compile_fn if compiled else None
            for k, v in params.items():
                v.grad = grads[k]
        if stop_mse is not None:  # no host sync: every step keeps and restores (the parameters are small)
            done |= mse.detach() <= stop_mse  # reached before this step: no further update
            kept = {k: v.detach().clone() for k, v in params.items()}
        opt.step()
        if stop_mse is not None:
            with torch.no_grad():
                for k, v in params.items():
                    v.copy_(torch.where(done.view(-1, *[1] * (v.dim() - 1)), kept[k], v))
        if on_step is not None:
            on_step(s + 1)
    with torch.no_grad():
        mse = ((siren_forward(params, coords, omega0, offset) - target) ** 2).mean(1)
    if report is not None:
        report["grad_engine"] = engine + ("+compiled" if compile_fn is not None else "") + (f", chunks of {chunk}" if engine == "analytic" else "")
    return {k: v.detach() for k, v in params.items()}, mse


def psnr(mse: Tensor, peak: float = 1.0) -> Tensor:
    return 10.0 * torch.log10(peak ** 2 / mse.clamp_min(1e-12))


def _load_images(card: ZooCard, device: torch.device) -> dict[str, Any]:
    from ..data import load_split

    r = card.recipe
    out = {}
    for source, limit_key in (("train", "train_images"), ("test", "test_images")):
        s = load_split(card.dataset, "train_full" if source == "train" else "test", device=device, normalize=False,
                       limit=r.get(limit_key))
        if s.x.shape[1] != 1:
            raise ConfigError(f"zoo {card.name}: SIREN zoos fit one-channel images; {card.dataset} has {s.x.shape[1]}")
        index = s.index if s.index is not None else torch.arange(len(s))
        out[source] = (s.x[:, 0], s.y, index.cpu(), s.source)
    return out


@BUILDERS.register("siren_inr")
@shards_across_ranks
def build_siren_inr(card: ZooCard, ctx: BuildContext) -> BuildResult:
    t_start = time.perf_counter()
    r = card.recipe
    steps, lr = int(r.get("steps", 1000)), float(r.get("lr", 1e-3))
    init = str(r.get("init", "dwsnets"))
    stop_psnr = None if r.get("stop_psnr") is None else float(r["stop_psnr"])
    arch_kw = next(iter(card.archs.values())).get("kwargs", {})
    group = next(iter(card.archs))
    omega0, offset = float(arch_kw.get("omega0", 30.0)), float(arch_kw.get("output_offset", 0.5))
    hidden, n_hidden = int(arch_kw.get("hidden", 32)), int(arch_kw.get("n_hidden", 2))
    per_shard = int(r.get("images_per_shard", 10000))
    images = _load_images(card, ctx.device)
    seed_base = int(card.seeds.get("init", 0))
    n_train = len(images["train"][1])
    items = [("train", i) for i in range(n_train)] + [("test", i) for i in range(len(images["test"][1]))]
    shard_ids = [f"{group}-{k // per_shard:05d}" for k in range(0, len(items), per_shard)]
    store = open_store(ctx, card_fingerprint(card, {"device": ctx.device.type}))
    todo = [k for k, sid in enumerate(shard_ids) if ctx.owns(k) and not store.has(sid)]
    n_mine = sum(len(items[k * per_shard:(k + 1) * per_shard]) for k in range(len(shard_ids)) if ctx.owns(k))
    bar = progress(n_mine, f"build {card.name}", ctx.progress and bool(todo))
    bar.update(n_mine - sum(len(items[k * per_shard:(k + 1) * per_shard]) for k in todo))
    fit_seconds, fitted, fit_report = 0.0, 0, {}
    for k in todo:
        chunk = items[k * per_shard:(k + 1) * per_shard]
        srcs = sorted({s for s, _ in chunk})
        x = torch.cat([images[s][0][[i for ss, i in chunk if ss == s]] for s in srcs])
        pos = [i for s in srcs for ss, i in chunk if ss == s]
        src_of = [s for s in srcs for ss, _ in chunk if ss == s]
        seeds = torch.tensor([seed_base + (i if s == "train" else n_train + i) for s, i in zip(src_of, pos)],
                             dtype=torch.int64, device=ctx.device)
        t0 = time.perf_counter()
        params, mse = fit_sirens(x, seeds, steps=steps, lr=lr, omega0=omega0, offset=offset, hidden=hidden,
                                 n_hidden=n_hidden, init=init, stop_psnr=stop_psnr, report=fit_report,
                                 on_step=lambda _s, n=len(chunk): bar.update(n / steps))
        fit_seconds += time.perf_counter() - t0
        fitted += len(chunk)
        rows = []
        for j, (s, i) in enumerate(zip(src_of, pos)):
            rows.append({"id": f"{s}{int(images[s][2][i]):05d}", "source_split": s,
                         "image_index": int(images[s][2][i]), "label": int(images[s][1][i]),
                         "psnr": float(psnr(mse[j:j + 1])), "mse": float(mse[j]), "seed": int(seeds[j]),
                         "steps": steps, "shard_row": j})
        if not all(torch.isfinite(v).all() for v in params.values()):
            raise ConfigError(f"zoo {card.name}: SIREN fits diverged (non-finite weights) with lr={lr}; lower recipe.lr")
        store.save(shard_ids[k], group, pd.DataFrame(rows), params)
    bar.close()
    reports = ctx.gather({"fit_seconds": fit_seconds, "fitted": fitted, "grad_engine": fit_report.get("grad_engine")})  # every rank has saved its shards
    if not ctx.is_main:
        return BuildResult(pd.DataFrame(), {})
    totals = combine_reports(reports, maximum=("fit_seconds",))
    fit_seconds, fitted = totals["fit_seconds"], totals["fitted"]
    parts = load_shards(store, shard_ids, ctx.world_size)
    members, weights = assemble(parts, sort_by=["source_split", "image_index"])
    val_size = int(r.get("val_size", 5000))
    train_pos = members.index[members["source_split"] == "train"].to_numpy()
    g = torch.Generator().manual_seed(int(card.seeds.get("split", 0)))
    val_pos = set(train_pos[torch.randperm(len(train_pos), generator=g)[:min(val_size, len(train_pos))].numpy()].tolist())
    members.insert(1, "split", ["test" if s == "test" else ("val" if j in val_pos else "train")
                                for j, s in enumerate(members["source_split"])])
    members = members[["id", "split", "group", "row"] + [c for c in members.columns if c not in ("id", "split", "group", "row")]]
    stats = {"device": device_name(ctx.device), "inrs_total": len(items), "inrs_fitted_now": fitted,
             "fit_seconds": round(fit_seconds, 3), "networks_per_s": round(fitted / fit_seconds, 3) if fit_seconds else None,
             "psnr_mean": round(float(members["psnr"].mean()), 3), "psnr_min": round(float(members["psnr"].min()), 3),
             "wall_seconds": round(time.perf_counter() - t_start, 3),
             "grad_engine": sorted({str(r["grad_engine"]) for r in reports if r.get("grad_engine")}),
             "train_source": images["train"][3], "test_source": images["test"][3]}
    ctx.log(f"{card.name}: {len(members)} INRs, PSNR mean {stats['psnr_mean']:.1f} dB (min {stats['psnr_min']:.1f}); "
            f"fitted {fitted} in {fit_seconds:.1f}s")
    return BuildResult(members.reset_index(drop=True), weights, stats)
