"""The DWS layer (wsbench/methods/equivariant/): equivariance, its batched blocks and cached pools against
each block on its own, the term sums, and max pooling as the official torch.max."""
from __future__ import annotations

import pytest
import torch

from encoder_specs import SPECS, random_ws, spec_of
from wsbench.methods.equivariant.layer import DWSLayer
from wsbench.methods.equivariant.layout import features_from_ws, layouts_for_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _permute_features(xs, layouts, perms):
    out = []
    for x, t in zip(xs, layouts):
        for i, a in enumerate(t.axes):
            if a.group is not None:
                x = x.index_select(1 + i, perms[a.group])
        out.append(x)
    return out


@pytest.mark.parametrize("set_layer", ["sab", "ds"])
@pytest.mark.parametrize("spec_key", list(SPECS))
def test_dws_layer_is_equivariant(spec_key, set_layer):
    """Weight->weight (and every other block): L(g x) = g L(x) for random neuron permutations g."""
    spec = spec_of(spec_key)
    layouts = layouts_for_spec(spec)
    torch.manual_seed(0)
    layer = DWSLayer(layouts, [t.channels for t in layouts], 6, set_layer=set_layer, num_heads=2).eval()
    ws = random_ws(spec_key, 3)
    perms = ws.random_permutation(torch.Generator().manual_seed(2), batched=False)
    xs = features_from_ws(ws, layouts)
    with torch.no_grad():
        lhs = layer(features_from_ws(ws.permute(perms), layouts))
        rhs = _permute_features(layer(xs), layouts, perms)
        untied = layer(_permute_features(xs[:1], layouts[:1], perms) + xs[1:])
    for a, b in zip(lhs, rhs):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(untied, rhs))  # a half permutation is not


def test_pooled_blocks_equal_one_linear_per_block():
    """The batched no-shared-group blocks compute exactly sum_i Lin_ij(pool(x_i)) per destination."""
    from wsbench.methods.equivariant.blocks import PairBlock

    spec = spec_of("cnn")
    layouts = layouts_for_spec(spec)
    torch.manual_seed(0)
    layer = DWSLayer(layouts, [t.channels for t in layouts], 5, num_heads=1)
    xs = features_from_ws(random_ws("cnn", 2), layouts)
    pooled = layer.pooled
    got = pooled(xs)
    for j, lin, bias in zip(pooled.dsts, pooled.linears, pooled.biases):
        start, want = 0, 0
        for k, i in enumerate(pooled.sources[j]):
            f = pooled.f_in[i]
            block = PairBlock(layouts[i].axes, layouts[j].axes, layouts[i].channels, 5)
            with torch.no_grad():
                block.terms[0].weight.copy_(lin.weight[:, start:start + f])
                block.terms[0].bias.copy_(bias[k])
            start += f
            want = want + block(xs[i])
        assert torch.allclose(got[j], want, atol=1e-6)
    assert len(pooled.dsts) == len(layouts) and len(layer.routes) < len(layouts) ** 2


@pytest.mark.parametrize("spec_key", ["mlp", "cnn"])
def test_dws_layer_equals_the_plain_sum_of_its_blocks(spec_key):
    """The layer pools each tensor once per set of axes and sums terms by shape before broadcasting;
    the result must be the plain sum over blocks (each block on its own input), divided by the count."""
    spec = spec_of(spec_key)
    layouts = layouts_for_spec(spec)
    torch.manual_seed(0)
    layer = DWSLayer(layouts, [t.channels for t in layouts], 6, num_heads=2)
    xs = features_from_ws(random_ws(spec_key, 3), layouts)
    got = layer(xs)
    want = [torch.zeros(3, *(a.size for a in t.axes), 6) for t in layouts]
    for j, h in layer.pooled(xs).items():
        want[j] = want[j] + h
    for i, j, fam, key in layer.routes:
        want[j] = want[j] + layer.blocks[fam][key](xs[i])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w / len(layouts), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec_key", ["mlp", "cnn"])
def test_dws_layer_gradients_with_tied_maxima_are_torch_max_per_block(spec_key, monkeypatch):
    """With ties (ReLU zeros, whole zero slices), the layer's cached and composed max pools give each
    block's own torch.max pooling: the same values and, to the last bit of float64, the same gradients."""
    from wsbench.methods.equivariant import blocks

    spec = spec_of(spec_key)
    layouts = layouts_for_spec(spec)
    torch.manual_seed(0)
    layer = DWSLayer(layouts, [t.channels for t in layouts], 6, num_heads=2).double()
    xs = [torch.relu(x.double()) for x in features_from_ws(random_ws(spec_key, 3), layouts)]
    for x in xs:
        x[:, :1] = 0.0  # a zero slice along the first axis: every pool over it ties
    w = [torch.randn(3, *(a.size for a in t.axes), 6, dtype=torch.float64) for t in layouts]

    def grads(fn):
        leaves = [x.clone().requires_grad_(True) for x in xs]
        outs = fn(leaves)
        torch.autograd.backward([(o * wi).sum() for o, wi in zip(outs, w)])
        return [o.detach() for o in outs], [x.grad for x in leaves]

    def per_block(leaves):
        want = [torch.zeros(3, *(a.size for a in t.axes), 6, dtype=torch.float64) for t in layouts]
        for j, h in layer.pooled(leaves).items():
            want[j] = want[j] + h
        for i, j, fam, key in layer.routes:
            want[j] = want[j] + layer.blocks[fam][key](leaves[i])
        return [t / len(layouts) for t in want]

    got, got_grads = grads(layer)
    monkeypatch.setattr(blocks, "max_first", lambda x, dim: x.max(dim=dim).values)  # torch.max, flattened axes
    want, want_grads = grads(per_block)
    for g, h in zip(got + got_grads, want + want_grads):
        torch.testing.assert_close(g, h, rtol=1e-12, atol=1e-12)


def test_sum_terms_equals_the_plain_sum():
    from wsbench.methods.equivariant.blocks import sum_terms

    g = torch.Generator().manual_seed(0)
    shapes = [(2, 4, 5, 3), (2, 4, 1, 3), (2, 1, 5, 3), (2, 1, 1, 3), (2, 4, 1, 3), (2, 1, 1, 3)]
    for subset in ([0, 1, 2, 3, 4, 5], [1, 2], [3, 5, 1], [2], [0]):
        terms = [(torch.randn(shapes[k], generator=g), 0.5 + k) for k in subset]
        want = sum(t * s for t, s in terms)
        torch.testing.assert_close(sum_terms(terms), want, rtol=1e-6, atol=1e-6)


def test_sum_terms_adds_at_full_size_only_what_fits_into_no_smaller_sum():
    """A DWS output tensor's terms: one full-size, row-broadcast, column-broadcast and channel-only ones.
    The channel-only sum goes into a smaller sum, so two full-size additions remain; a scale of 1 is no
    multiplication."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from wsbench.methods.equivariant.blocks import sum_terms

    full = (2, 4, 5, 3)

    class FullSizeOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and tuple(out.shape) == full:
                self.ops.append(func.__name__)
            return out

    g = torch.Generator().manual_seed(0)
    shapes = [full, (2, 4, 1, 3), (2, 1, 5, 3), (2, 1, 1, 3), (2, 1, 1, 3)]
    terms = [(torch.randn(s, generator=g), 1.0) for s in shapes]
    with FullSizeOps() as mode:
        got = sum_terms(terms)
    torch.testing.assert_close(got, sum(t for t, _ in terms), rtol=1e-6, atol=1e-6)
    assert [op.split(".")[0] for op in mode.ops] == ["add", "add"]


def test_max_pooling_is_the_official_torch_max_over_flattened_axes():
    """Values as amax; the gradient goes to one entry per output (torch.max over one axis, as the
    official DWSNets code pools), not split over ties."""
    from wsbench.methods.equivariant.blocks import reduce

    x = torch.zeros(2, 3, 4, 5, requires_grad=True)  # all tied
    out = reduce(x, [1, 2], "max")
    torch.testing.assert_close(out, x.amax(dim=(1, 2)))
    out.sum().backward()
    assert x.grad.sum().item() == 2 * 5 and x.grad.max().item() == 1.0
    y = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(reduce(y, [1, 3], "max"), y.amax(dim=(1, 3)))  # non-adjacent axes
    torch.testing.assert_close(reduce(y, [2], "max"), y.amax(dim=2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_set_blocks_run_together_with_each_blocks_own_values_and_gradients(dtype):
    """The layer runs its set-attention blocks of equal sizes as one batch (one product for every block's
    q, k, v, one attention call, one product for fc_o); values and gradients (inputs and every parameter)
    equal those of each block on its own. float32 goes through the fused CPU kernel where it is built,
    float64 through the plain attention ops."""
    from wsbench.archs import spec_for_arch
    from wsbench.weights import WeightSpace

    spec = spec_for_arch("siren")  # the DWSNet paper's INRs: 16 set blocks per layer
    layouts = layouts_for_spec(spec)
    torch.manual_seed(0)
    layer = DWSLayer(layouts, [t.channels for t in layouts], 8, num_heads=4).to(dtype)
    assert sum(map(len, layer.set_classes)) >= 12 and len(layer.set_classes) >= 2
    g = torch.Generator().manual_seed(1)
    ws = WeightSpace(spec, {p.key: torch.randn(3, *p.shape, generator=g, dtype=dtype) for p in spec.params})
    xs = features_from_ws(ws, layouts)
    w = [torch.randn(3, *(a.size for a in t.axes), 8, generator=g, dtype=dtype) for t in layouts]

    def run(together: bool) -> list[torch.Tensor]:
        layer.batch_set_blocks = together
        layer.zero_grad(set_to_none=True)
        leaves = [x.clone().requires_grad_(True) for x in xs]
        outs = layer(leaves)
        torch.autograd.backward([(o * wi).sum() for o, wi in zip(outs, w)])
        return [o.detach() for o in outs] + [x.grad for x in leaves] + [p.grad for p in layer.parameters()]

    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, want in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(got, want, **tol)
