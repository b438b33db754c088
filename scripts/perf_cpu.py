#!/usr/bin/env python
"""How close the heavy small-network paths run to this machine's limit: achieved GFLOP/s of each
path as a fraction of the fp32 GEMM rate measured in the same run, and each path's peak memory.

    WSBENCH_DATA_DIR=../shared/data python scripts/perf_cpu.py [--out leaderboards/perf/cpu] [--paths ...]

With WSBENCH_OFFICIAL_DWSNETS=<a checkout of github:AvivNavon/DWSNets>, the DWSNet path also times the
official model at the same settings in the same process (imported from the checkout, not copied).

FLOPs are counted with torch.utils.flop_counter over one step (matrix products and convolutions,
forward and backward; elementwise work such as sin or Adam is not counted: it is what a path
spends beyond the useful FLOPs). Every path runs in a fresh process (its peak RSS is its own, taken
after its timed steps and before its reference and bound runs), with the malloc tuning that
run_bench.py applies. Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# the small-CNN architectures of the zoo cards (small_cnn_fashion_mnist trains small_cnn_mnist's at the same size):
# path -> (card, architecture group)
SMALL_CNN_PATHS = {"small_cnn_train": ("small_cnn_cifar10_gray", "cnn"), "small_cnn_train_mnist": ("small_cnn_mnist", "cnn"),
                   "small_cnn_train_arch2": ("small_cnn_arch2_mnist", "cnn"),
                   **{f"small_cnn_train_{g}": ("cnn_families_mnist", g) for g in ("d2w8", "d3w16", "d4w32")}}


# issue 13's targets, as fractions of the GEMM rate
TARGETS = {"siren_fit": 0.30, "dwsnet_step": 0.15, **dict.fromkeys(SMALL_CNN_PATHS, 0.15),
           **{f"{m}_step": 0.15 for m in ("nfn_np", "nfn_hnp", "neural_graph", "sne", "mlp", "statnn")}}


def _flops(fn: Callable[[], None]) -> int:
    from matmul_replay import count_flops

    return count_flops(fn)


def _top_ops(fn: Callable[[], None], steps: int, n: int = 5) -> list[dict]:
    """The ops with the most self CPU time over `steps` calls (torch.profiler): where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "ms_per_step": e.self_cpu_time_total / 1e3 / steps, "share": e.self_cpu_time_total / total}
            for e in events[:n]]


def _timed(fn: Callable[[], None], steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def _peak_rss_mb() -> float:
    """The process's peak RSS so far: taken right after a path's own timed steps, so that its reference and
    bound measurements (an eager or official model, replayed kernels) do not count towards it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


GEMM_STEPS = {"run": 40, "around": 12}  # timed products: the run's first GEMM rate, the rates around each path


def path_gemm(steps: int | None = None) -> dict:
    steps = GEMM_STEPS["run"] if steps is None else steps
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    s = _timed(lambda: torch.mm(a, b), steps, warmup=5)
    return {"what": "torch.mm 2048x2048 fp32", "flops_per_step": 2 * 2048 ** 3, "seconds_per_step": s}


def _gemm_gflops_now() -> float:
    """The GEMM rate right now (a shorter path_gemm): taken just before and just after each path, in its own
    process, because this machine's speed drifts by up to 2x between minutes of one run."""
    g = path_gemm(steps=GEMM_STEPS["around"])
    return g["flops_per_step"] / g["seconds_per_step"] / 1e9


def path_siren_fit() -> dict:
    from wsbench.archs.siren import image_coords
    from wsbench.zoo_builders.siren_inr import fit_sirens, init_sirens, siren_forward, siren_shapes

    n, steps, hidden, pixels = 400, 20, 32, 28 * 28
    imgs, seeds = torch.rand(n, 28, 28), torch.arange(n)
    coords, target = image_coords(28), imgs.reshape(n, -1)
    params = {k: v.requires_grad_(True) for k, v in init_sirens(seeds, siren_shapes(), 30.0).items()}

    def one_step() -> None:
        ((siren_forward(params, coords, 30.0, 0.5) - target) ** 2).mean(1).sum().backward()

    flops = _flops(one_step)
    report: dict = {}
    fit_sirens(imgs, seeds, steps=1, lr=1e-3, compile_mode="on")  # warm-up, compiles the chunk function
    t = time.perf_counter()
    fit_sirens(imgs, seeds, steps=steps, lr=1e-3, stop_psnr=40, compile_mode="on", report=report)
    seconds = (time.perf_counter() - t) / steps
    peak = _peak_rss_mb()
    fit_sirens(imgs, seeds, steps=1, lr=1e-3, engine="autograd")
    t = time.perf_counter()
    fit_sirens(imgs, seeds, steps=steps // 2, lr=1e-3, stop_psnr=40, engine="autograd")
    autograd_seconds = (time.perf_counter() - t) / (steps // 2)
    bound = _siren_fit_bound(n, pixels, hidden, n_hidden=2)
    return {"what": f"siren_mnist recipe: {n} SIRENs fitted at once (fit_sirens, {report['grad_engine']}), Adam",
            "flops_per_step": flops, "seconds_per_step": seconds, "peak_rss_mb": peak,
            "networks_per_s_at_1000_steps": n / (seconds * 1000),
            "reference": {"what": "the same fit with engine=autograd", "seconds_per_step": autograd_seconds,
                          "speedup": autograd_seconds / seconds},
            "bound": bound}


def _siren_fit_bound(n: int, pixels: int, hidden: int, n_hidden: int) -> dict:
    """What no SIREN fitting step can beat with this machine's kernels: the sine (forward) and cosine
    (backward) of every hidden pre-activation, at the compiled rate of the shared-reduction `sincos`
    the path's fused loops run, plus the three batched products of each square hidden layer (forward,
    weight and input gradients) at the chunk shapes the path uses, each timed alone. The thin first
    and last layers are left out."""
    from wsbench.zoo_builders.siren_grads import CPU_CHUNK
    from wsbench.zoo_builders.sincos import sincos

    chunk, chunks = CPU_CHUNK, n / CPU_CHUNK
    z = 30.0 * torch.randn(chunk, pixels, hidden)
    trig = torch.compile(sincos, dynamic=False)
    trig_s = _timed(lambda: trig(z), 40) / z.numel()
    h, w, g = torch.randn(chunk, pixels, hidden), torch.randn(chunk, hidden, hidden), torch.randn(chunk, pixels, hidden)
    products_s = (_timed(lambda: torch.bmm(h, w), 40) + _timed(lambda: torch.bmm(g.transpose(1, 2), h), 40)
                  + _timed(lambda: torch.bmm(g, w), 40))
    trig_step = n_hidden * n * pixels * hidden * trig_s
    products_step = (n_hidden - 1) * chunks * products_s
    return {"what": f"a sine and a cosine of every hidden pre-activation at the compiled sincos rate (one range reduction) "
                    f"({1e9 * trig_s:.2f} ns a value pair), plus the square hidden layers' batched products (forward, "
                    f"weight and input gradients) at the path's chunk shapes [{chunk}, {pixels}, {hidden}] "
                    f"({1e3 * trig_step:.1f} + {1e3 * products_step:.1f} ms)",
            "seconds_per_step": trig_step + products_step, "trig_ns_per_value_pair": trig_s * 1e9,
            "trig_seconds_per_step": trig_step, "products_seconds_per_step": products_step}


def _grouped_conv_seconds(arch, nb: int, bs: int, hw: int) -> float:
    """The shard's convolutions alone (grouped, forward and the backward training needs: no input
    gradient for the first layer), per step, in the memory format the path's activations take: what the
    small-CNN path cannot beat."""
    import torch.nn.functional as F

    from wsbench.zoo_builders.batched_training import uses_channels_last

    total, c_in = 0.0, arch.in_channels
    layout = torch.channels_last if uses_channels_last("cpu", bs * nb * c_in * hw * hw) else torch.contiguous_format
    for i in range(arch.n_conv):
        x = torch.randn(bs, nb * c_in, hw, hw).contiguous(memory_format=layout).requires_grad_(i > 0)
        w = torch.randn(nb * arch.channels, c_in, 3, 3, requires_grad=True)
        hw = (hw + 2 * arch.padding - 3) // 2 + 1
        g = torch.randn(bs, nb * arch.channels, hw, hw).contiguous(memory_format=layout)
        wrt = [x, w] if i > 0 else [w]
        total += _timed(lambda: torch.autograd.grad(F.conv2d(x, w, stride=2, padding=arch.padding, groups=nb), wrt, g), 3)
        c_in = arch.channels
    return total


def path_small_cnn_train(card_name: str, group: str) -> dict:
    from wsbench.registry import ZOOS
    import wsbench.builtins  # noqa: F401
    from wsbench.zoo_builders import fused_dropout, small_cnn
    from wsbench.zoo_builders.batched_training import ImageData, MemberHParams, forward, train_batch, uses_channels_last

    card = ZOOS.get(card_name).resolve("full")
    arch, bs, steps = small_cnn.cnn_arch(card, group), int(card.recipe["batch_size"]), 3
    nb, hw = int(card.recipe["members_per_shard"]), 32 if card.dataset.startswith("cifar") else 28
    micro = small_cnn.micro_batch(card) or bs
    passes = -(-bs // micro)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(steps * bs, 1, hw, hw, generator=g) * 2 - 1, torch.randint(0, 10, (steps * bs,), generator=g)
    data = ImageData(x, y, x[:64], y[:64])
    hp = MemberHParams(seed=list(range(nb)), optimizer=["adam", "sgd", "rmsprop", "adam"] * (nb // 4),
                       lr=[1e-3] * nb, weight_decay=[1e-4] * nb, dropout=(0.7 * torch.rand(nb, generator=g)).tolist(),
                       init_scale=[1.0] * nb, train_fraction=[1.0] * nb)  # dropout ~ U(0, 0.7): the recipe's law
    flat = torch.randn(nb, arch.n_params)
    xb = torch.randn(bs, nb, 1, hw, hw)
    with torch.no_grad():  # flop_counter counts grouped-convolution backward as ungrouped: count the forward,
        fwd = _flops(lambda: forward(arch, flat, xb, "relu"))  # x 3, less the first layer's input gradient
    first = 2 * bs * nb * arch.channels * arch.in_channels * 9 * ((hw + 2 * arch.padding - 3) // 2 + 1) ** 2
    run = lambda mb=micro: train_batch(arch, hp, "relu", data, epochs=1, checkpoints=[], batch_size=bs,  # noqa: E731
                                       micro_batch=mb)
    # the card's full build runs thousands of steps: its smaller activations' dropout runs compiled too
    saved = fused_dropout.LONG_RUN_STEPS, fused_dropout.COMPILE_MIN_ELEMENTS, fused_dropout.LONG_RUN_MIN_ELEMENTS
    fused_dropout.LONG_RUN_STEPS = 1
    try:
        run()  # warm-up: compiles the dropout-mask loops
        t = time.perf_counter()
        run()
        seconds = (time.perf_counter() - t) / steps
        peak = _peak_rss_mb()
        if micro < bs:
            run(None)  # warm-up: its activations' shapes compile their own dropout loops
            t = time.perf_counter()
            run(None)
            one_pass = (time.perf_counter() - t) / steps
        # the eager masks: the path before the compiled loops
        fused_dropout.COMPILE_MIN_ELEMENTS = fused_dropout.LONG_RUN_MIN_ELEMENTS = 1 << 62
        run()
        t = time.perf_counter()
        run()
        eager_seconds = (time.perf_counter() - t) / steps
    finally:
        fused_dropout.LONG_RUN_STEPS, fused_dropout.COMPILE_MIN_ELEMENTS, fused_dropout.LONG_RUN_MIN_ELEMENTS = saved
    references = [{"what": "the same training with the dropout masks hashed eagerly", "seconds_per_step": eager_seconds,
                   "speedup": eager_seconds / seconds}]
    if micro < bs:
        references.append({"what": f"the same training with each {bs}-image step in one pass (not {passes} "
                                   f"micro-batches of {micro})", "seconds_per_step": one_pass, "speedup": one_pass / seconds})
    layers = f"{arch.n_conv} conv of {arch.channels}" + (f", dense {arch.fc_hidden}" if arch.fc_hidden else "")
    return {"what": f"{card_name} recipe{'' if group == 'cnn' else f' ({group})'} ({hw}x{hw} gray, {layers}, "
                    f"{'valid' if arch.padding == 0 else 'same'}): {nb} members trained at once (train_batch), "
                    f"batch {bs}" + (f" in micro-batches of {micro}" if micro < bs else "") + ", dropout ~ U(0, 0.7)"
                    + (", channels-last activations" if uses_channels_last("cpu", micro * nb * arch.in_channels * hw * hw) else ""),
            "flops_per_step": 3 * fwd - first, "seconds_per_step": seconds, "peak_rss_mb": peak,
            "image_passes_per_s": nb * bs / seconds, "references": references,
            "bound": {"what": f"its {arch.n_conv} grouped convolutions alone (forward and backward, mkldnn) at the same "
                              f"shapes and memory format ({passes} pass{'es' if passes > 1 else ''} of {micro} images)",
                      "seconds_per_step": _grouped_conv_seconds(arch, nb, micro, hw) * passes}}


# the encoders of the INR-classification table, each at its paper preset or, where the paper's sizes were not
# available to us, its default one; batch 64 SIREN INRs (the paper's MNIST INRs: 2 -> 32 -> 32 -> 1)
ENCODER_PRESETS = {"dwsnet": "paper", "nfn_np": "default", "nfn_hnp": "default", "neural_graph": "default",
                   "sne": "default", "mlp": "paper", "statnn": "default"}


def _encoder_step(method: str, batch: int = 64) -> dict:
    return _encoder_measure(method, batch)[0]


def _encoder_measure(method: str, batch: int = 64) -> tuple[dict, Callable[[], None]]:
    """One training step of `method` as the encoder trainer takes it: forward, cross-entropy plus the
    method's auxiliary loss, backward, gradient clipping where the preset asks, AdamW (fused, flat). Returns
    the measurements and the step."""
    import wsbench.builtins  # noqa: F401
    from wsbench.archs import spec_for_arch
    from wsbench.registry import METHODS
    from wsbench.runner import load_preset, preset_method_config
    from wsbench.flat_adamw import adamw
    from wsbench.weights import WeightSpace

    cfg = preset_method_config(method, ENCODER_PRESETS[method])
    task = load_preset(method, ENCODER_PRESETS[method]).get("task", {})
    spec = spec_for_arch("siren")
    g = torch.Generator().manual_seed(0)

    def inputs(n: int) -> tuple[WeightSpace, torch.Tensor]:
        return (WeightSpace(spec, {p.key: 0.1 * torch.randn(n, *p.shape, generator=g) for p in spec.params}),
                torch.randint(0, 10, (n,), generator=g))

    ws, y = inputs(batch)
    model = METHODS.get(method)(spec, 10, **cfg)
    model.train()
    params = list(model.parameters())
    opt = adamw(params, lr=float(task.get("lr", 1e-3)), weight_decay=float(task.get("weight_decay", 0.0)))
    clip = float(task.get("grad_clip", 0.0))

    def step(ws: WeightSpace = ws, y: torch.Tensor = y) -> None:
        out = model(ws)
        loss = torch.nn.functional.cross_entropy(out, y)
        extra = model.auxiliary_loss(ws, out, g)
        if extra is not None:
            loss = loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    from matmul_replay import record_counted_ops, replay_seconds

    flops = _flops(step)
    steps = max(3, min(50, int(2.0 / max(_timed(step, 1, warmup=1), 1e-4))))
    seconds = _timed(step, steps)
    peak = _peak_rss_mb()
    calls = record_counted_ops(step)
    small = inputs(2)  # 2 networks: the step's cost that does not grow with the batch (BatchNorm needs 2)
    fixed = _timed(lambda: step(*small), max(3, steps))
    return {"what": f"{method} ({ENCODER_PRESETS[method]} preset, {sum(p.numel() for p in params):,} params), "
                    f"batch {batch} SIREN INRs, one training step with AdamW (the trainer's: fused, on one flat tensor)",
            "flops_per_step": flops, "seconds_per_step": seconds, "networks_per_s": batch / seconds, "peak_rss_mb": peak,
            "bound": {"what": f"its {len(calls)} FLOP-counted calls (matrix products, attention) alone, each replayed "
                              "at the step's own shapes and strides", "seconds_per_step": replay_seconds(calls)},
            "fixed": {"what": "the same step on 2 networks: what a step costs whatever its batch (Python, op "
                              "dispatch, autograd, the optimiser)", "seconds_per_step": fixed},
            "top_ops": _top_ops(step, max(1, steps // 3))}, step


def _interleaved(ours: Callable[[], None], ref: Callable[[], None], rounds: int = 6, steps: int = 2) -> dict:
    """Ours and the reference timed in alternating rounds of `steps` steps: this machine's speed drifts
    between minutes, so each round's ratio compares neighbours in time; the median of the rounds' ratios is
    the speedup reported."""
    ours_s, ref_s = [], []
    for _ in range(rounds):
        ours_s.append(_timed(ours, steps, warmup=0))
        ref_s.append(_timed(ref, steps, warmup=0))
    ratios = [r / o for o, r in zip(ours_s, ref_s)]
    return {"speedup": statistics.median(ratios), "seconds_per_step": statistics.median(ref_s),
            "interleaved": {"rounds": rounds, "steps_per_round": steps, "ratios": ratios,
                            "ours_seconds": ours_s, "reference_seconds": ref_s}}


def path_dwsnet_step() -> dict:
    out, step = _encoder_measure("dwsnet")
    official = os.environ.get("WSBENCH_OFFICIAL_DWSNETS")
    if official:
        y = torch.randint(0, 10, (64,))
        from official_dwsnets import SIREN_SHAPES, official_dwsnet

        ref_model = official_dwsnet(official)
        ref_inputs = (tuple(0.1 * torch.randn(64, a, b, 1) for a, b in SIREN_SHAPES),
                      tuple(0.1 * torch.randn(64, b, 1) for _, b in SIREN_SHAPES))
        ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-3)

        def ref_step() -> None:
            loss = torch.nn.functional.cross_entropy(ref_model(ref_inputs), y)
            ref_opt.zero_grad(set_to_none=True)
            loss.backward()
            ref_opt.step()

        ref_step()
        out["reference"] = {"what": "the official DWSNets DWSModelForClassification, same settings and batch "
                                    f"({sum(p.numel() for p in ref_model.parameters()):,} params), its AdamW",
                            **_interleaved(step, ref_step)}
    return out


def _nern(kd: bool) -> dict:
    from safetensors.torch import load_file

    from wsbench.methods.base import ReconstructionTarget, RunContext
    from wsbench.methods.nern import NeRN

    data = Path(os.environ["WSBENCH_DATA_DIR"])
    t = ReconstructionTarget("r20", "resnet_cifar", {"depth": 20}, load_file(str(data / "pretrained" / "resnet20.safetensors")),
                             "cifar10")
    cfg = {"hidden": 180, "selection": "last", "iterations": 68600,
           **({} if kd else {"kd_weight": 0.0, "fmd_weight": 0.0})}
    tr = NeRN(**cfg).trainer(t, RunContext(progress=False), train_images=torch.randn(2048, 3, 32, 32))
    it = iter(range(10 ** 6))
    flops = _flops(lambda: tr.step(next(it)))
    s = _timed(lambda: tr.step(next(it)), 3 if kd else 30)
    return {"what": "NeRN ResNet20 h180 step, " + ("KD+FMD (image batch 256)" if kd else "reconstruction only"),
            "flops_per_step": flops, "seconds_per_step": s}


PATHS: dict[str, Callable[[], dict]] = {
    "gemm": path_gemm, "siren_fit": path_siren_fit,
    **{path: (lambda c=card, g=group: path_small_cnn_train(c, g)) for path, (card, group) in SMALL_CNN_PATHS.items()},
    "dwsnet_step": path_dwsnet_step,
    **{f"{m}_step": (lambda m=m: _encoder_step(m)) for m in ENCODER_PRESETS if m != "dwsnet"},
    "nern_rec_step": lambda: _nern(False), "nern_full_step": lambda: _nern(True)}


def run_one(name: str) -> dict:
    from wsbench.allocator import tune_allocator

    tune_allocator()
    before = None if name == "gemm" else _gemm_gflops_now()
    out = PATHS[name]()
    if before is not None:
        out["gemm_gflops_around"] = [before, _gemm_gflops_now()]
    out["gflops"] = out["flops_per_step"] / out["seconds_per_step"] / 1e9
    out.setdefault("peak_rss_mb", _peak_rss_mb())
    return out


def path_gemm_rate(r: dict, first_gemm: float) -> float:
    """The GEMM rate a path's fraction is of: the mean of the rates measured just before and after it in its
    own process (records from before those were taken: the run's first GEMM measurement)."""
    around = r.get("gemm_gflops_around")
    return sum(around) / len(around) if around else first_gemm


def markdown(res: dict) -> str:
    gemm = res["paths"]["gemm"]["gflops"]
    title = f", {res['title']}" if res.get("title") else ""
    lines = [f"# CPU efficiency{title}: {res['machine']}", "", f"`{res['command']}` ({res['date']}, torch {res['torch']}, "
             f"{res['threads']} threads). fp32 GEMM rate measured at the start of the run: **{gemm:.1f} GFLOP/s**. "
             "Each path's fraction is of the GEMM rate measured in its own process just before and just after it "
             "(column \"GEMM then\", the mean of the two), since this machine's speed drifts between minutes; the "
             "fraction of the first measurement is beside it.", "",
             "| path | GFLOP/s | GEMM then | of GEMM | of first GEMM | target | ms/step | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in res["paths"].items():
        if name == "gemm" or "error" in r:
            continue
        target = TARGETS.get(name)
        met = "" if target is None else f"{target:.0%} {'met' if r['fraction_of_gemm'] >= target else 'NOT met'}"
        around = r.get("gemm_gflops_around")
        then = f"{path_gemm_rate(r, gemm):.1f} ({around[0]:.0f}, {around[1]:.0f})" if around else "—"
        mark = f" (rerun {r['rerun']['date']})" if "rerun" in r else ""
        lines.append(f"| {name}{mark}: {r['what']} | {r['gflops']:.2f} | {then} | {r['fraction_of_gemm']:.1%} | "
                     f"{r.get('fraction_of_first_gemm', r['gflops'] / gemm):.1%} | {met} | "
                     f"{1e3 * r['seconds_per_step']:.1f} | {r['peak_rss_mb']:.0f} |")
    reruns = sorted({(r["rerun"]["date"], r["rerun"]["command"], r["rerun"]["first_gemm_gflops"])
                     for r in res["paths"].values() if "rerun" in r})
    for date, command, first in reruns:
        lines += ["", f"Rows marked rerun {date} were measured later, by `{command}` (its first GEMM rate "
                      f"{first:.1f} GFLOP/s: their \"of first GEMM\" is of that)."]
    for name, r in res["paths"].items():
        if name == "gemm" or "error" in r:
            continue
        rate = path_gemm_rate(r, gemm)
        for ref in r.get("references", [r["reference"]] if "reference" in r else []):
            il = ref.get("interleaved")
            rounds = "" if il is None else (f"; the median of {il['rounds']} rounds of {il['steps_per_round']} steps each, "
                                            f"alternating with ours: {min(il['ratios']):.2f}-{max(il['ratios']):.2f}x by round")
            lines += ["", f"{name}: {ref['speedup']:.2f}x the speed of {ref['what']} ({1e3 * ref['seconds_per_step']:.1f} "
                      f"ms/step, measured in the same process{rounds})."]
        if "bound" in r:
            b = r["bound"]
            ceiling = r["flops_per_step"] / b["seconds_per_step"] / 1e9
            lines += [f"What bounds {name}: {b['what']}: {1e3 * b['seconds_per_step']:.1f} ms/step, so at most "
                      f"{ceiling:.1f} GFLOP/s ({ceiling / rate:.1%} of the GEMM rate); the path runs at "
                      f"{r['gflops'] / ceiling:.0%} of that ceiling."]
            if "reference" in r:  # the most a faster path could gain over the reference with the same kernels
                lines += [f"At that ceiling {name} would be {r['reference']['seconds_per_step'] / b['seconds_per_step']:.2f}x "
                          "the speed of its reference: with nothing but those calls left in the step."]
        if "fixed" in r:
            f = r["fixed"]
            lines += [f"{name}: {f['what']}: {1e3 * f['seconds_per_step']:.1f} ms, "
                      f"{f['seconds_per_step'] / r['seconds_per_step']:.0%} of the batch-64 step."]
        if "top_ops" in r:
            lines += [f"Where {name}'s time goes (self CPU time, torch.profiler): " + ", ".join(
                f"{o['op']} {o['share']:.0%}" for o in r["top_ops"]) + "."]
    lines += ["", "FLOPs: matrix products, convolutions and attention (torch.utils.flop_counter; the CPU attention kernels with "
              "its formulas for the CUDA ones), forward and backward "
              "(small_cnn_train: 3 x the forward count less the first layer's input gradient, since flop_counter "
              "counts grouped-convolution backward as ungrouped); elementwise work (sin, activations, optimizer updates) is not counted. "
              "Peak RSS: the path's process after its timed steps, before its reference and bound are measured.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    ap.add_argument("--one", choices=list(PATHS), help=argparse.SUPPRESS)
    ap.add_argument("--quick-gemm", action="store_true",
                    help="time 4 GEMMs instead of 40 (12 around each path: 2): a smoke test of the script, noisier rates")
    ap.add_argument("--title", help="a phrase for the report's heading, e.g. 'latest full run of the current code'")
    ap.add_argument("--update", metavar="JSON", help="measure --paths and put them into this earlier run's report "
                    "(rewritten to --out, default beside it); each row measured now is marked with this run's date")
    ap.add_argument("--render", metavar="JSON", help="write the report of an earlier run's JSON (to --out, default "
                    "beside it; with --title) without measuring anything")
    a = ap.parse_args()
    if a.render:
        from wsbench.files import print_and_write_report

        res = read_report(a.render, "render", a.title)
        if res is None:
            return 2
        return print_and_write_report(a.out or str(Path(a.render).with_suffix("")), res, markdown(res))
    if a.quick_gemm:
        GEMM_STEPS.update(run=4, around=2)
    if a.one:
        print(json.dumps(run_one(a.one)))
        return 0
    if not os.environ.get("WSBENCH_DATA_DIR"):
        print("perf_cpu: set WSBENCH_DATA_DIR", file=sys.stderr)
        return 2
    base = read_report(a.update, "update") if a.update else None
    if a.update and base is None:
        return 2
    paths = ["gemm"] + [p for p in a.paths if p != "gemm"]
    res = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "torch": torch.__version__,
           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
           "command": "python scripts/perf_cpu.py " + " ".join(sys.argv[1:]), "paths": {},
           **({"title": a.title} if a.title else {})}
    for name in paths:
        proc = subprocess.run([sys.executable, __file__, "--one", name] + (["--quick-gemm"] if a.quick_gemm else []),
                              capture_output=True, text=True, timeout=1800)
        r = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
        if "gflops" in r and name != "gemm":
            first = res["paths"]["gemm"]["gflops"]
            r["fraction_of_gemm"], r["fraction_of_first_gemm"] = r["gflops"] / path_gemm_rate(r, first), r["gflops"] / first
        elif "gflops" in r:
            r["fraction_of_gemm"] = 1.0
        res["paths"][name] = r
        print(f"{name}: " + (f"{r['gflops']:.2f} GFLOP/s ({r.get('fraction_of_gemm', 1):.1%} of GEMM), "
                             f"{r['peak_rss_mb']:.0f} MB" if "gflops" in r else r["error"]), flush=True)
    from wsbench.files import print_and_write_report

    if base is not None:
        res = with_reruns(base, res)
    return print_and_write_report(a.out or (str(Path(a.update).with_suffix("")) if a.update else None), res,
                                  markdown(res))


def read_report(path: str, verb: str, title: str | None = None) -> dict | None:
    """An earlier run's JSON (with `title` as its heading's phrase when given), checked by rendering it;
    None after one error line on stderr where it cannot be read or rendered."""
    try:
        res = json.loads(Path(path).read_text())
        if title:
            res["title"] = title
        markdown(res)
        return res
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"perf_cpu: cannot {verb} {path}: {type(error).__name__}: {error}", file=sys.stderr)
        return None


def with_reruns(base: dict, run: dict) -> dict:
    """`base` (an earlier run) with the paths measured in `run` in place of its own, each marked with the
    run's date, command and first GEMM rate (its fraction of the first GEMM stays that run's)."""
    rerun = {"date": run["date"], "command": run["command"], "first_gemm_gflops": run["paths"]["gemm"].get("gflops")}
    paths = dict(base["paths"])
    for name, r in run["paths"].items():
        if name != "gemm":
            paths[name] = {**r, "rerun": rerun}
    return {**base, "paths": paths}


if __name__ == "__main__":
    raise SystemExit(main())
