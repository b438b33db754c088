"""NeRN losses and optimiser: values against their formulas, exact gradients, Ranger's Lookahead."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wsbench.methods.nern.losses import (alias_resnet_maps, fmd_loss, fmd_loss_reference, kd_loss,
                                         reconstruction_loss)
from wsbench.methods.nern.optim import (Lookahead, build_optimizer, cosine_lr, load_optimizer_tensors,
                                        optimizer_tensors)


def _maps(cl: bool, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(4, c, s, s, generator=g, dtype=dtype) for c, s in ((3, 8), (5, 4), (2, 2))]
    s = [x + 0.2 * torch.randn(x.shape, generator=g, dtype=dtype) for x in t]
    if cl:
        t = [x.contiguous(memory_format=torch.channels_last) for x in t]
        s = [x.contiguous(memory_format=torch.channels_last) for x in s]
    return [x.requires_grad_() for x in s], t


@pytest.mark.parametrize("cl", [False, True])
def test_fused_fmd_equals_formula_value_and_gradient(cl):
    s, t = _maps(cl, torch.float64)
    a, b = fmd_loss(s, t), fmd_loss_reference(s, t)
    assert a.item() == pytest.approx(b.item(), rel=1e-10)
    ga, gb = torch.autograd.grad(a, s), torch.autograd.grad(b, s)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-12)
    s32, t32 = _maps(cl)
    assert fmd_loss(s32, t32).item() == pytest.approx(fmd_loss_reference(s32, t32).item(), rel=1e-4)


def test_fmd_is_zero_for_equal_maps_and_scale_invariant():
    s, t = _maps(False, torch.float64)
    same = [x.detach().clone().requires_grad_() for x in t]
    assert fmd_loss(same, t).item() == pytest.approx(0.0, abs=1e-12)
    # normalised maps: scaling the student by 10 changes the loss only through the 1e-3 epsilon
    big = [(10 * x).detach().requires_grad_() for x in t]
    assert fmd_loss(big, t).item() < 1e-6
    assert torch.autograd.gradcheck(lambda *m: fmd_loss(list(m), t), tuple(x.detach().requires_grad_() for x in s))


def test_kd_losses():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    p, q = F.softmax(t, 1), F.softmax(s, 1)
    exact = (p * (p.log() - q.log())).sum(1).mean()
    assert kd_loss(s, t, "kl").item() == pytest.approx(exact.item(), rel=1e-5)
    stable = (p * (p.log() - (q + 1e-4).log())).sum(1).mean()
    assert kd_loss(s, t, "stable_kl").item() == pytest.approx(stable.item(), rel=1e-5)
    assert kd_loss(t, t, "kl").item() == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_losses():
    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 0.0, 3.0, 2.0])
    assert reconstruction_loss(a, b, "mse").item() == pytest.approx(2.0)
    assert reconstruction_loss(a, b, "rmse").item() == pytest.approx(math.sqrt(2.0))


def test_aliasing_replaces_bn2_by_the_sum():
    maps = [torch.tensor(float(i)) for i in range(7)]  # stem + 2 blocks
    assert [m.item() for m in alias_resnet_maps(maps)] == [0, 1, 3, 3, 4, 6, 6]


def test_cosine_schedule_endpoints():
    assert cosine_lr(0, 100, 5e-3, 1e-6) == pytest.approx(5e-3)
    assert cosine_lr(50, 100, 5e-3, 1e-6) == pytest.approx((5e-3 + 1e-6) / 2)
    assert cosine_lr(100, 100, 5e-3, 1e-6) == pytest.approx(1e-6)
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, 100, 1e-6)
    for it in range(1, 40):
        sgd.step()
        sched.step()
        assert cosine_lr(it, 100, 5e-3, 1e-6) == pytest.approx(sched.get_last_lr()[0], rel=1e-9)


def test_lookahead_syncs_every_k_steps_and_roundtrips():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([p], "ranger", 0.1, (0.5, 0.999), 1e-5, 0.0, 3, 0.5)
    assert isinstance(opt, Lookahead)
    start = p.detach().clone()
    for i in range(3):
        p.grad = torch.ones(3)
        before = p.detach().clone()
        opt.step()
        if i < 2:
            assert not torch.equal(p.detach(), before)
    # after k=3 steps the fast weights were pulled halfway back to the slow (initial) ones
    assert torch.allclose(opt.slow[0], p.detach()) and not torch.equal(p.detach(), start)
    tensors, scalars = optimizer_tensors(opt)
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = build_optimizer([q], "ranger", 0.1, (0.5, 0.999), 1e-5, 0.0, 3, 0.5)
    load_optimizer_tensors(opt2, tensors, scalars)
    for _ in range(4):
        p.grad, q.grad = torch.full((3,), 0.3), torch.full((3,), 0.3)
        opt.step()
        opt2.step()
    assert torch.equal(p.detach(), q.detach())


def test_ranger_weight_decay_is_decoupled():
    p = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer([p], "ranger", 0.1, (0.5, 0.999), 1e-5, 0.5, 6, 0.5)
    p.grad = torch.zeros(2)
    opt.step()  # zero gradient: only the decay p <- p (1 - lr wd) acts
    assert torch.allclose(p.detach(), torch.full((2,), 1 - 0.1 * 0.5))


def test_gradient_centralisation_removes_row_means_of_matrices_only():
    w = torch.nn.Parameter(torch.randn(4, 6))
    b = torch.nn.Parameter(torch.randn(4))
    opt = build_optimizer([w, b], "ranger", 0.1, (0.5, 0.999), 1e-5, 0.0, 6, 0.5, gradient_centralization=True)
    gw, gb = torch.randn(4, 6) + 3.0, torch.randn(4) + 3.0
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    assert torch.allclose(w.grad, gw - gw.mean(1, keepdim=True)) and w.grad.mean(1).abs().max() < 1e-6
    assert torch.equal(b.grad, gb)  # 1-D gradients are left alone, as in the official Ranger


def test_kd_has_no_nan_when_a_teacher_probability_underflows():
    teacher = torch.tensor([[200.0, 0.0, -200.0]])  # softmax underflows to exactly 0 for the last class
    student = torch.zeros(1, 3, requires_grad=True)
    loss = kd_loss(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("weighted", [False, True])
def test_sampled_total_estimate_is_unbiased(weighted):
    from wsbench.methods.nern.sampling import KernelSampler, StepRandom

    g = torch.Generator().manual_seed(0)
    norms = torch.rand(500, generator=g) + 0.1
    x = torch.rand(500, generator=g) ** 4  # heavy-tailed per-kernel errors
    sampler = KernelSampler(500, 64, "mixed", 1.0 if weighted else 0.0, norms)
    rnd = StepRandom(0, torch.device("cpu"))
    estimates = []
    for it in range(3000):
        idx, branch = sampler.sample_branch(rnd, it)
        assert branch == weighted
        estimates.append(float((x[idx] * sampler.total_weights(idx, branch)).sum()))
    mean = sum(estimates) / len(estimates)
    assert mean == pytest.approx(float(x.sum()), rel=0.02)


def test_fmd_of_aliased_maps_counts_each_repeat_and_compiles_without_a_graph_break():
    """Aliased ResNet maps put one tensor at two positions; it is passed once with a count of 2 (an
    autograd.Function given the same tensor twice broke torch.compile's graph on every step)."""
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(7)]
    t = [torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64) for _ in range(7)]
    sa, ta = alias_resnet_maps(s), alias_resnet_maps(t)
    assert sa[2] is sa[3]
    ours, ref = fmd_loss(sa, ta), fmd_loss_reference(sa, ta)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    used = [x for i, x in enumerate(s) if any(x is y for y in sa)]  # aliasing drops each block's bn2 map
    assert len(used) == 5
    g_ours = torch.autograd.grad(ours, used)
    g_ref = torch.autograd.grad(ref, used)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(g_ours, g_ref))
    explained = torch._dynamo.explain(lambda *m: fmd_loss(alias_resnet_maps(list(m[:7])), alias_resnet_maps(list(m[7:]))))(
        *[x.detach().float() for x in s], *[x.float() for x in t])
    assert explained.graph_break_count == 0, explained.break_reasons


def test_fmd_of_a_student_map_whose_norm_overflows_is_finite_as_in_the_official():
    """A deep student built from an untrained predictor can have maps of norm > 3e38 (float32 inf):
    the official s / (|s| + eps) makes them 0 (loss |t_hat|^2 = 1 per sample, no gradient); the fused
    form gave inf / inf = NaN."""
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(2, 3, 4, 4, generator=g) for _ in range(2)]
    s = [t[0] + 0.1, (1e20 * torch.randn(2, 3, 4, 4, generator=g)).requires_grad_()]
    loss = fmd_loss(s, t)
    ref = fmd_loss_reference(s, t)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ref.item(), rel=1e-5)
    grad, = torch.autograd.grad(loss, s[1])
    assert torch.equal(grad, torch.zeros_like(grad))
