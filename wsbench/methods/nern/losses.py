"""NeRN's three losses (paper sec. 3.2): weight reconstruction, KD and feature-map distillation.

- reconstruction: "rmse" = sqrt of the mean squared error over all predicted weights (official
  `L2Loss`, default); "mse" = the mean squared error itself (ablation). The RMSE's gradient is
  1/(2*RMSE) (5-10x) larger, which matters: with Ranger's eps = 1e-5 most second moments sit
  below eps, so the step is proportional to the gradient.
- KD: KL(teacher || student) at temperature 1, averaged over the batch. "stable_kl" is the
  official `StableKLDivLoss`, sum_k p_k (log p_k - log(q_k + 1e-4)); "kl" the exact KL.
- FMD: every feature map is flattened per sample and divided by (||.||_2 + 1e-3); the loss is
  (1/B) sum_maps sum_b ||n_T - n_S||^2 (official `L2BatchedAttentionLoss`: maps are summed).
  Computed by one autograd function from per-sample norms and the dot product s.t (read-only
  passes), so the normalised maps and their difference are never materialised; the gradient
  c_s s + c_t t is exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FMD_EPS = 1e-3
REC_LOSSES = ("mse", "rmse")
KD_LOSSES = ("stable_kl", "kl")


def reconstruction_loss(pred: Tensor, target: Tensor, kind: str = "mse") -> Tensor:
    sq = (pred - target).square().mean()
    return sq.sqrt() if kind == "rmse" else sq


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, kind: str = "stable_kl") -> Tensor:
    s = student_logits.float()
    t = teacher_logits.float()
    if kind == "kl":
        return F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)
    log_p = F.log_softmax(t, 1)  # log p from the logits: finite where p underflows to 0 (no 0 * -inf)
    q = F.softmax(s, 1)
    return (log_p.exp() * (log_p - torch.log(q + 1e-4))).sum(1).mean()


def _flat_pair(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample flat views (B, D) of two same-shaped maps, in one common element order."""
    b = s.shape[0]
    if s.dim() == 4 and not s.is_contiguous() and s.is_contiguous(memory_format=torch.channels_last):
        return s.permute(0, 2, 3, 1).reshape(b, -1), t.permute(0, 2, 3, 1).reshape(b, -1)
    return s.reshape(b, -1), t.reshape(b, -1)


class _NormalizedMapDistance(torch.autograd.Function):
    """sum over maps m and samples b of ||s_mb/(|s_mb|+e) - t_mb/(|t_mb|+e)||^2; grad w.r.t. s only.

    Per map only three per-sample dot products are read (s.s, s.t, t.t); the per-sample scalars of
    all maps are then combined at once (in float64). Map m counts `counts[m]` times (a map that
    appears several times is passed once: torch.compile cannot trace one tensor in two inputs)."""

    @staticmethod
    def forward(ctx, n_maps: int, counts: tuple[int, ...], *maps: Tensor) -> Tensor:  # type: ignore[override]
        ss, ts = maps[:n_maps], maps[n_maps:]
        s2, st, t2 = [], [], []
        for s, t in zip(ss, ts):  # norms and one dot product per sample: 3 read-only passes
            sf, tf = _flat_pair(s, t)
            s2.append(torch.linalg.vector_norm(sf, dim=1).square())
            st.append(torch.linalg.vecdot(sf, tf, dim=1))
            t2.append(torch.linalg.vector_norm(tf, dim=1).square())
        s2_, st_, t2_ = (torch.stack(v).double() for v in (s2, st, t2))  # (M, B)
        r = s2_.sqrt()
        u = r + FMD_EPS
        a = 1.0 / (t2_.sqrt() + FMD_EPS)  # teacher scale
        dot = st_ * a
        w = torch.tensor(counts, dtype=torch.float64, device=r.device).view(-1, 1)
        # a student map whose norm overflows float32 (a deep student from a barely trained predictor)
        # normalises to 0, as in the official s / (|s| + eps): its terms are 0, not inf / inf = NaN
        over = torch.isinf(u)
        s_terms = torch.where(over, 0.0, s2_ / (u * u) - 2.0 * dot / u)
        per = (t2_ * a * a + s_terms).clamp_min(0.0) * w
        # d/ds = s * (2 dot / (u^2 r) + 2 eps / u^3) - t * 2a / u
        cs = torch.where(over, 0.0, 2.0 * dot / (u * u * r.clamp_min(1e-30)) + 2.0 * FMD_EPS / (u * u * u)) * w
        ct = torch.where(over, 0.0, -2.0 * a / u) * w
        ctx.n_maps = n_maps
        ctx.save_for_backward(cs.to(ss[0].dtype), ct.to(ss[0].dtype), *maps)
        return per.sum().to(ss[0].dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        cs, ct, *maps = ctx.saved_tensors
        n = ctx.n_maps
        cs, ct = cs * grad, ct * grad
        grads = []
        for m, (s, t) in enumerate(zip(maps[:n], maps[n:])):
            shape = (-1,) + (1,) * (s.dim() - 1)
            grads.append(torch.mul(s, cs[m].view(shape)).addcmul_(t, ct[m].view(shape)))
        return (None, None, *grads, *([None] * n))


def fmd_loss(student_maps: list[Tensor], teacher_maps: list[Tensor]) -> Tensor:
    """(1/B) sum over maps and samples of the normalised map distances."""
    pairs: list[tuple[Tensor, Tensor]] = []
    counts: list[int] = []
    for s, t in zip(student_maps, teacher_maps):  # the same pair twice (aliased maps) is passed once
        k = next((i for i, (ps, pt) in enumerate(pairs) if ps is s and pt is t), None)
        if k is None:
            pairs.append((s, t))
            counts.append(1)
        else:
            counts[k] += 1
    total = _NormalizedMapDistance.apply(len(pairs), tuple(counts), *[s for s, _ in pairs],
                                         *[t.detach() for _, t in pairs])
    return total / student_maps[0].shape[0]


def fmd_loss_reference(student_maps: list[Tensor], teacher_maps: list[Tensor]) -> Tensor:
    """The plain formula (for tests)."""
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        sf, tf = s.flatten(1), t.flatten(1)
        ns = sf / (sf.norm(dim=1, keepdim=True) + FMD_EPS)
        nt = tf / (tf.norm(dim=1, keepdim=True) + FMD_EPS)
        total = total + (nt - ns).square().sum()
    return total / student_maps[0].shape[0]


def alias_resnet_maps(maps: list[Tensor]) -> list[Tensor]:
    """Official quirk: `out += shortcut` made the saved BN2 map equal the residual sum, so each
    block contributes (bn1, sum, sum) instead of (bn1, bn2, sum). Maps: [stem, (bn1, bn2, sum)*]."""
    out = list(maps)
    for i in range(1, len(out) - 2, 3):
        out[i + 1] = out[i + 2]
    return out
