#!/usr/bin/env python
"""Do our NFN layers span the same linear maps as the original NPLinear / HNPLinear?

    WSBENCH_OFFICIAL_NFN=<checkout of github:AllanYangZhou/nfn> \
        python scripts/nfn_layer_parity.py [--out leaderboards/parity/nfn_layers]   # writes <out>.json and <out>.md

For a fixed input a layer's output is linear in its parameters: y = J(x) theta. Over a stack of random
inputs, J_ours and J_orig span the maps each layer can be. We fit our layer's parameters by least squares
to the original's outputs (theta_orig drawn by its own init, several draws), and the reverse, and report
relative residuals |J_a theta_a - y_b| / |y_b| (~1e-12 in float64 if b's maps lie in a's span), the worst
case over all of b's maps (|(I - P_a) J_b|_F / |J_b|_F) and each Jacobian's rank (the dimension of the
space of maps) next to the parameter counts. Our layers are DWSLayer(reduction="mean", set_layer="ds") on
the HNP layouts (nfn_hnp) or the NP ones (nfn_np), as wsbench.methods.nfn builds them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacfwd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from wsbench.files import print_and_write_report  # noqa: E402
from wsbench.methods.equivariant.layer import DWSLayer  # noqa: E402
from wsbench.methods.equivariant.layout import Axis, TensorLayout  # noqa: E402
from wsbench.methods.nfn import np_layouts  # noqa: E402

# (name, MLP widths d_0..d_L, channels in, channels out, input networks stacked)
CASES = (("siren 2-32-32-1", (2, 32, 32, 1), 1, 1, 16),
         ("siren-shaped 2-8-6-1", (2, 8, 6, 1), 2, 3, 40),
         ("mlp 3-5-4-6-2", (3, 5, 4, 6, 2), 2, 2, 48))


def mlp_layouts(dims: Sequence[int]) -> list[TensorLayout]:
    """HNP layouts of an MLP d_0 -> ... -> d_L: hidden neurons permutable, input and output neurons not."""
    L = len(dims) - 1
    group = [None] + [f"h{i}" for i in range(1, L)] + [None]
    weights = [TensorLayout(f"layers.{i}.weight", "weight", i, (Axis(group[i + 1], dims[i + 1]), Axis(group[i], dims[i])), 1)
               for i in range(L)]
    biases = [TensorLayout(f"layers.{i}.bias", "bias", i, (Axis(group[i + 1], dims[i + 1]),), 1) for i in range(L)]
    return weights + biases


def our_layer(dims: Sequence[int], mode: str, c_in: int, c_out: int) -> DWSLayer:
    layouts = mlp_layouts(dims)
    return DWSLayer(np_layouts(layouts) if mode == "np" else layouts, c_in, c_out, reduction="mean", set_layer="ds")


def random_inputs(dims: Sequence[int], c: int, batch: int, generator: torch.Generator) -> list[Tensor]:
    """Our layout, [B, *axes, C]: weights [B, out, in, C], then biases [B, out, C]."""
    L = len(dims) - 1
    w = [torch.randn(batch, dims[i + 1], dims[i], c, generator=generator, dtype=torch.float64) for i in range(L)]
    return w + [torch.randn(batch, dims[i + 1], c, generator=generator, dtype=torch.float64) for i in range(L)]


def to_official(xs: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Our [B, out, in, C] / [B, out, C] as the original's [B, C, out, in] / [B, C, out]."""
    L = len(xs) // 2
    return [x.permute(0, 3, 1, 2) for x in xs[:L]], [x.permute(0, 2, 1) for x in xs[L:]]


def from_official(weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """The original's outputs flattened in our order (weights then biases, [B, *axes, C] each)."""
    return torch.cat([w.permute(0, 2, 3, 1).flatten() for w in weights] + [b.permute(0, 2, 1).flatten() for b in biases])


def param_jacobian(module: nn.Module, output: Callable[[nn.Module], Tensor]) -> Tensor:
    """d output / d parameters, [n outputs, n parameters], for a module whose output is linear in them."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])

    def f(theta: Tensor) -> Tensor:
        params, start = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[start:start + s.numel()].view(s)
            start += s.numel()
        return output(_Bound(module, params))

    return jacfwd(f)(flat)


class _Bound:
    """A module called with substituted parameters (functional_call)."""

    def __init__(self, module: nn.Module, params: dict[str, Tensor]) -> None:
        self.module, self.params = module, params

    def __call__(self, *args):
        return functional_call(self.module, self.params, args)


def fit_residual(J: Tensor, y: Tensor) -> float:
    """min_theta |J theta - y| / |y| (least squares; J may be rank-deficient)."""
    theta = torch.linalg.lstsq(J, y.unsqueeze(-1), driver="gelsd").solution
    return float((J @ theta).squeeze(-1).sub(y).norm() / y.norm())


def span_residual(J_a: Tensor, J_b: Tensor, rtol: float = 1e-10) -> float:
    """|(I - P_a) J_b|_F / |J_b|_F: how much of b's maps lies outside a's span (0 if inside)."""
    U, S, _ = torch.linalg.svd(J_a, full_matrices=False)
    Q = U[:, S > rtol * S[0]]
    R = J_b - Q @ (Q.T @ J_b)
    return float(R.norm() / J_b.norm())


def rank(J: Tensor, rtol: float = 1e-10) -> int:
    S = torch.linalg.svdvals(J)
    return int((S > rtol * S[0]).sum())


def compare(path: str, name: str, dims: Sequence[int], c_in: int, c_out: int, batch: int, mode: str,
            draws: int = 3, seed: int = 0) -> dict:
    from official_model import checkout_import
    from official_nfn import official_spec

    NPLinear, HNPLinear, WSF = checkout_import(path, "nfn.layers.NPLinear", "nfn.layers.HNPLinear", "nfn.common.WeightSpaceFeatures")
    shapes = tuple(zip(dims[:-1], dims[1:]))
    torch.manual_seed(seed)
    orig = (NPLinear if mode == "np" else HNPLinear)(official_spec(path, shapes), c_in, c_out).double()
    ours = our_layer(dims, mode, c_in, c_out).double()
    xs = random_inputs(dims, c_in, batch, torch.Generator().manual_seed(seed))
    wo, bo = to_official(xs)

    def run_orig(m) -> Tensor:
        out = m(WSF(wo, bo))
        return from_official(out.weights, out.biases)

    def run_ours(m) -> Tensor:
        return torch.cat([y.flatten() for y in m(xs)])

    J_orig, J_ours = param_jacobian(orig, run_orig), param_jacobian(ours, run_ours)
    assert torch.allclose(J_orig @ torch.cat([p.flatten() for p in orig.parameters()]), run_orig(orig).detach())
    fits = {"ours_fit_to_original": [], "original_fit_to_ours": []}
    for d in range(draws):
        torch.manual_seed(seed + 1 + d)  # each layer's own init
        o2, u2 = (NPLinear if mode == "np" else HNPLinear)(official_spec(path, shapes), c_in, c_out).double(), \
            our_layer(dims, mode, c_in, c_out).double()
        fits["ours_fit_to_original"].append(fit_residual(J_ours, run_orig(o2).detach()))
        fits["original_fit_to_ours"].append(fit_residual(J_orig, run_ours(u2).detach()))
    return {"case": name, "mode": mode, "dims": list(dims), "c_in": c_in, "c_out": c_out, "inputs": batch,
            "outputs": J_ours.shape[0],
            "params": {"ours": J_ours.shape[1], "original": J_orig.shape[1]},
            "rank": {"ours": rank(J_ours), "original": rank(J_orig)},
            "residual": {k: max(v) for k, v in fits.items()},
            "span_residual": {"original_outside_ours": span_residual(J_ours, J_orig),
                              "ours_outside_original": span_residual(J_orig, J_ours)}}


def markdown(res: dict) -> str:
    lines = [f"# NFN layers: ours (DWS blocks, mean pooling, DeepSets) against the original NPLinear / HNPLinear "
             f"({res['repo']})", "", f"`{res['command']}` ({res['date']}, torch {res['torch']}, float64). {res['how']}", "",
             "| layer | network | C in -> out | params ours / orig | rank ours / orig | ours fit to orig | orig fit to ours "
             "| orig outside ours | ours outside orig |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["cases"]:
        lines.append(f"| {r['mode'].upper()} | {r['case']} | {r['c_in']} -> {r['c_out']} | {r['params']['ours']:,} / "
                     f"{r['params']['original']:,} | {r['rank']['ours']} / {r['rank']['original']} | "
                     f"{r['residual']['ours_fit_to_original']:.1e} | {r['residual']['original_fit_to_ours']:.1e} | "
                     f"{r['span_residual']['original_outside_ours']:.1e} | {r['span_residual']['ours_outside_original']:.1e} |")
    return "\n".join(lines + ["", res["reading"], ""])


HOW = ("Each row: both layers on the same random inputs (stacked networks, N(0, 1) entries); the fit columns give the "
       "largest relative least-squares residual over 3 draws of the other layer's initialisation; the outside columns "
       "the share of all of one layer's maps (Jacobian columns, Frobenius norm) outside the other's span; rank: the "
       "dimension of each layer's space of maps on these inputs.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    a = ap.parse_args(argv)
    path = os.environ.get("WSBENCH_OFFICIAL_NFN")
    if not path:
        raise SystemExit("nfn_layer_parity: set WSBENCH_OFFICIAL_NFN to a checkout of github:AllanYangZhou/nfn")
    cases = []
    for mode in ("hnp", "np"):
        for name, dims, c_in, c_out, batch in CASES:
            cases.append(compare(path, name, dims, c_in, c_out, batch, mode))
            print(cases[-1], flush=True)
    res = {"repo": "AllanYangZhou/nfn", "command": "python scripts/nfn_layer_parity.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "how": HOW, "cases": cases, "reading": ""}
    res["reading"] = reading(cases)
    return print_and_write_report(a.out, res, markdown(res))


# why the HNP spans differ (checked by hand: a zero-mean change of b_{L-2} leaves the original's W_{L-1} unchanged)
HNP_GAP = ("The original HNPLinear lacks one block: b_{L-2} -> W_{L-1} (the last hidden layer's biases to the columns "
           "of the last weight, the same hidden neurons) enters it only through its mean, while its hidden layers do "
           "get b_{i-1} -> W_i; the rank gap, C_in x C_out x d_L, is that block.")


def reading(cases: list[dict], tol: float = 1e-6) -> str:
    """One sentence per mode: equal spans, or which one is larger (and why, for the HNP gap)."""
    out = []
    for mode in ("hnp", "np"):
        rs = [r for r in cases if r["mode"] == mode]
        a_in_b = all(r["residual"]["original_fit_to_ours"] < tol for r in rs)
        b_in_a = all(r["residual"]["ours_fit_to_original"] < tol for r in rs)
        what = ("the same space of maps" if a_in_b and b_in_a else "ours spans the original's and more" if b_in_a
                else "the original spans ours and more" if a_in_b else "neither spans the other")
        gap = all(r.get("rank") and r["rank"]["ours"] - r["rank"]["original"] == r["c_in"] * r["c_out"] * r["dims"][-1]
                  for r in rs)
        out.append(f"{mode.upper()}: {what} (residual tolerance {tol:g}).")
        if mode == "hnp" and b_in_a and not a_in_b and gap:
            out.append(HNP_GAP)
    return " ".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
