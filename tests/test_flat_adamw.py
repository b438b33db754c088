"""FlatAdamW: the updates of torch.optim.AdamW(fused=True), on one flat tensor per device and dtype.

The fused kernel takes a tensor's last few elements through a scalar loop; on the flat tensor other
elements fall there, so an update may differ in its last bit (float rounding), and no more."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from wsbench.flat_adamw import FlatAdamW, adamw


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3, bias=False), nn.BatchNorm1d(3), nn.Linear(3, 2))


def _train(model: nn.Module, opt, steps: int, skip: dict[int, str] | None = None, clip: float = 0.0) -> list[float]:
    """`steps` steps on fixed data; at step k in `skip` the named parameter gets no gradient."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 5, generator=g), torch.randn(16, 2, generator=g)
    params = dict(model.named_parameters())
    losses = []
    for k in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if skip and k in skip:
            params[skip[k]].grad = None
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("options", [dict(lr=1e-2), dict(lr=3e-3, weight_decay=0.1, amsgrad=True),
                                     dict(lr=1e-2, betas=(0.8, 0.9), eps=1e-6, maximize=True)])
def test_updates_equal_torch_fused_adamw_to_float_rounding(options):
    ref, flat = _model(), _model()
    ref_losses = _train(ref, torch.optim.AdamW(ref.parameters(), fused=True, **options), 6, clip=0.5)
    opt = FlatAdamW(list(flat.parameters()), **options)
    assert _train(flat, opt, 6, clip=0.5) == pytest.approx(ref_losses, rel=1e-6)
    assert opt.flattened and len(opt.flat) == 1
    _assert_same_parameters(ref, flat)
    for a, b in zip(ref.buffers(), flat.buffers()):  # BatchNorm running statistics: the same forward passes
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _assert_same_parameters(ref: nn.Module, model: nn.Module) -> None:
    initial = _model()
    for (name, a), b in zip(ref.named_parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.equal(a, initial.get_parameter(name)), f"{name} never moved"  # the test trains


def test_parameters_stay_the_same_objects_and_share_the_flat_storage(tmp_path):
    model = _model()
    params = list(model.parameters())
    values = [p.detach().clone() for p in params]
    opt = FlatAdamW(params, lr=1e-2)
    assert list(model.parameters()) == params  # same Parameter objects, same values
    assert all(torch.equal(p, v) for p, v in zip(params, values))
    flat = opt.flat[0][0]
    assert all(p.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr() for p in params)
    state = copy.deepcopy(model.state_dict())  # load_state_dict writes into the flat tensor
    _train(model, opt, 2)
    model.load_state_dict(state)
    assert torch.equal(flat.detach(), torch.cat([v.reshape(-1) for v in values]))
    save_file(model.state_dict(), tmp_path / "model.safetensors")  # slices of one storage: saved as separate tensors
    loaded = load_file(tmp_path / "model.safetensors")
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_a_parameter_without_gradient_hands_over_to_a_per_tensor_adamw_with_torchs_updates():
    """torch's AdamW skips a parameter whose grad is None; from that step on the flat optimiser
    continues as a per-tensor one with the state carried over, so the trajectories stay equal."""
    skip = {3: "2.weight", 5: "0.bias"}
    options = dict(lr=1e-2, weight_decay=0.05, amsgrad=True)
    ref, flat = _model(), _model()
    ref_losses = _train(ref, torch.optim.AdamW(ref.parameters(), fused=True, **options), 8, skip)
    opt = FlatAdamW(list(flat.parameters()), **options)
    assert _train(flat, opt, 8, skip) == pytest.approx(ref_losses, rel=1e-6)
    assert not opt.flattened
    _assert_same_parameters(ref, flat)


def test_a_learning_rate_changed_through_param_groups_applies_before_and_after_the_hand_over():
    ref, flat = _model(), _model()
    ref_opt, opt = torch.optim.AdamW(ref.parameters(), fused=True, lr=1e-2), FlatAdamW(list(flat.parameters()), lr=1e-2)
    for o in (ref_opt, opt):
        o.param_groups[0]["lr"] = 5e-3
    assert _train(flat, opt, 4, {2: "4.bias"}) == pytest.approx(_train(ref, ref_opt, 4, {2: "4.bias"}), rel=1e-6)
    _assert_same_parameters(ref, flat)
    assert opt.param_groups[0]["lr"] == 5e-3 and not opt.flattened


def test_frozen_parameters_are_left_alone_and_dtypes_get_one_flat_tensor_each():
    model = _model()
    model[0].weight.requires_grad_(False)
    model[4].double()
    frozen = model[0].weight.detach().clone()
    opt = FlatAdamW(list(model.parameters()), lr=1e-2)
    assert {f.dtype for f, _ in opt.flat} == {torch.float32, torch.float64}
    assert sum(f.numel() for f, _ in opt.flat) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = torch.randn(8, 5)
    for _ in range(2):
        out = model[4](model[3](model[2](model[1](model[0](x)))).double())
        opt.zero_grad()
        out.square().mean().backward()
        opt.step()
    assert torch.equal(model[0].weight, frozen)
    assert model[4].weight.dtype == torch.float64


def test_zero_grad_without_set_to_none_zeroes_the_gradients():
    model = _model()
    opt = FlatAdamW(list(model.parameters()), lr=1e-2)
    _train(model, opt, 1)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_factory_returns_the_flat_optimizer_and_falls_back_where_fused_adamw_refuses(monkeypatch):
    model = _model()
    assert isinstance(adamw(model.parameters(), lr=1e-3), FlatAdamW)

    def refuse(*args, **kwargs):
        raise RuntimeError("fused not supported")

    monkeypatch.setattr("wsbench.flat_adamw.FlatAdamW.__init__", refuse)
    fallback = adamw(model.parameters(), lr=1e-3)
    assert type(fallback) is torch.optim.AdamW and not fallback.defaults.get("fused")
