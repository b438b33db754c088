"""scripts/official_nfn.py and scripts/nfn_layer_parity.py (the parts that need no NFN checkout), and the
options of wsbench.methods.nfn that follow the NFN repository's SIREN classifiers."""
from __future__ import annotations

import math

import pytest

import torch
from script_loader import load_script

import wsbench.builtins  # noqa: F401
from wsbench.archs import spec_for_arch
from wsbench.methods.common import random_neuron_permutation
from wsbench.methods.nfn_inputs import FourierFeatures, NeuronCodes, channel_dropout, neuron_codes
from wsbench.errors import ConfigError
from wsbench.registry import METHODS
from wsbench.runner import preset_method_config
from wsbench.weights import WeightSpace


def siren_ws(n: int, seed: int = 0) -> WeightSpace:
    spec = spec_for_arch("siren")
    g = torch.Generator().manual_seed(seed)
    return WeightSpace(spec, {p.key: torch.randn(n, *p.shape, generator=g) * 0.1 for p in spec.params})


def test_official_inputs_put_our_siren_tensors_in_the_checkouts_layout():
    off = load_script("official_nfn")
    tensors = siren_ws(3).tensors
    weights, biases = off.official_inputs(tensors)
    assert [tuple(w.shape) for w in weights] == [(3, 1, o, i) for i, o in off.SIREN_SHAPES]
    assert [tuple(b.shape) for b in biases] == [(3, 1, o) for _, o in off.SIREN_SHAPES]
    # the checkout keeps PyTorch's [out, in]: entry [n, 0, j, i] is input i -> output j
    assert torch.equal(weights[1][2, 0, 7, 5], tensors["layers.1.weight"][2, 7, 5])
    assert torch.equal(biases[2][:, 0], tensors["layers.2.bias"])
    assert off.OFFICIAL["nfn_hnp"].batch == 32 and off.OFFICIAL["nfn_np"].our_preset == "paper"


def test_layer_parity_layout_round_trip():
    par = load_script("nfn_layer_parity")
    xs = par.random_inputs((2, 4, 3, 1), 2, 5, torch.Generator().manual_seed(0))
    w, b = par.to_official(xs)
    assert tuple(w[0].shape) == (5, 2, 4, 2) and tuple(b[2].shape) == (5, 2, 1)
    assert torch.equal(par.from_official(w, b), torch.cat([x.flatten() for x in xs]))


def _jacobian(par, dims, mode, xs, seed):
    torch.manual_seed(seed)
    layer = par.our_layer(dims, mode, 1, 2).double()
    return layer, par.param_jacobian(layer, lambda m: torch.cat([y.flatten() for y in m(xs)]))


def test_least_squares_fit_finds_maps_inside_the_span_and_not_outside():
    par = load_script("nfn_layer_parity")
    dims = (2, 3, 3, 1)
    xs = par.random_inputs(dims, 1, 12, torch.Generator().manual_seed(0))
    hnp, J_hnp = _jacobian(par, dims, "hnp", xs, 0)
    np_, J_np = _jacobian(par, dims, "np", xs, 0)
    out = lambda m: torch.cat([y.flatten() for y in m(xs)]).detach()  # noqa: E731
    # J is the layer: J theta reproduces its output
    assert torch.allclose(J_hnp @ torch.cat([p.flatten() for p in hnp.parameters()]), out(hnp))
    torch.manual_seed(1)
    other_hnp, other_np = par.our_layer(dims, "hnp", 1, 2).double(), par.our_layer(dims, "np", 1, 2).double()
    assert par.fit_residual(J_hnp, out(other_hnp)) < 1e-10  # another instance of the same layer
    assert par.fit_residual(J_hnp, out(other_np)) < 1e-10  # NP maps are HNP-equivariant too
    assert par.fit_residual(J_np, out(other_hnp)) > 1e-2  # HNP maps tell input neurons apart: not NP
    assert par.span_residual(J_hnp, J_np) < 1e-10 < 1e-2 < par.span_residual(J_np, J_hnp)
    assert par.rank(J_np) < par.rank(J_hnp) <= J_hnp.shape[1]


def test_reading_names_which_layer_spans_more():
    par = load_script("nfn_layer_parity")
    row = lambda mode, a, b: {"mode": mode, "residual": {"ours_fit_to_original": a, "original_fit_to_ours": b}}  # noqa: E731
    text = par.reading([row("hnp", 1e-14, 0.1), row("np", 1e-14, 1e-13)])
    assert text == ("HNP: ours spans the original's and more (residual tolerance 1e-06). "
                    "NP: the same space of maps (residual tolerance 1e-06).")


def test_fourier_features_and_neuron_codes():
    torch.manual_seed(0)
    ff = FourierFeatures(4, 3.0)
    x = torch.randn(2, 5, 3, 1)
    y = ff(x)
    assert y.shape == (2, 5, 3, 8) and ff.factor == 8
    assert torch.allclose(y[1, 2, 0, :4], torch.sin(2 * math.pi * x[1, 2, 0, 0] * ff.freqs))
    assert torch.allclose(y[1, 2, 0, 4:], torch.cos(2 * math.pi * x[1, 2, 0, 0] * ff.freqs))
    codes = neuron_codes(2, max_freq=3.0, bands=3)  # positions -1, 1; frequencies 1, 1.25, 1.5
    assert torch.allclose(codes[1], torch.tensor([math.sin(math.pi * s) for s in (1, 1.25, 1.5)]
                                                 + [math.cos(math.pi * s) for s in (1, 1.25, 1.5)] + [1.0]), atol=1e-6)
    enc = METHODS.get("nfn_np")(spec_for_arch("siren"), 10, io_bands=3, io_max_freq=3.0)
    assert isinstance(enc.codes, NeuronCodes) and enc.codes.width == 7
    xs = enc.codes([torch.zeros(2, *(a.size for a in t.axes), 1) for t in enc.layouts])
    w0, w1, w2, b1, b2 = xs[0], xs[1], xs[2], xs[4], xs[5]  # weights 0..2, then biases 0..2
    assert w0.shape == (2, 32, 2, 8) and torch.equal(w0[0, 5, :, 1:], codes)  # input neurons, same for every row
    assert w1.abs().sum() == 0 and b1.abs().sum() == 0  # hidden tensors: zero channels
    assert torch.equal(w2[0, 0, 3, 1:], neuron_codes(1, 3.0, 3)[0]) and torch.equal(b2[0, 0, 1:], neuron_codes(1, 3.0, 3)[0])


def test_channel_dropout_drops_whole_weight_channels_per_network():
    layouts = METHODS.get("nfn_hnp")(spec_for_arch("siren"), 10).layouts
    xs = [torch.ones(4, *(a.size for a in t.axes), 16) for t in layouts]
    torch.manual_seed(0)
    out = channel_dropout(xs, layouts, 0.5, training=True)
    w1 = out[1]  # [B, 32, 32, C]: per network and channel, all 0 or all 2
    per_channel = w1.flatten(1, 2)
    assert torch.all((per_channel == 0).all(1) | (per_channel == 2).all(1))
    assert 0 < (per_channel == 0).all(1).float().mean() < 1
    b = out[4]  # a bias: entries dropped one by one
    assert ((b == 0).flatten(1, 1).float().mean(1) > 0).all() and not ((b == 0).all(1)).all()
    assert all(torch.equal(a, x) for a, x in zip(channel_dropout(xs, layouts, 0.5, training=False), xs))


def test_paper_options_and_their_symmetries():
    cfg = preset_method_config("nfn_np", "paper_narrow")
    assert cfg["channels"] == [64, 64, 64] and cfg["fourier_features"] == 128 and cfg["head_pool"] == "hnp"
    small = {**cfg, "channels": [8, 8], "fourier_features": 4, "head_dim": 16}
    ws = siren_ws(3)
    perm = ws.permute(random_neuron_permutation(ws, torch.Generator().manual_seed(2)))
    t = dict(ws.tensors)
    t["layers.0.weight"] = t["layers.0.weight"][:, :, [1, 0]]  # swap the two input coordinates
    swapped = WeightSpace(ws.spec, t)
    torch.manual_seed(0)
    paper_np = METHODS.get("nfn_np")(ws.spec, 10, **small).eval()
    plain_np = METHODS.get("nfn_np")(ws.spec, 10, channels=[8, 8], head_dim=16).eval()
    with torch.no_grad():
        out = paper_np(ws)
        assert torch.allclose(out, paper_np(perm), atol=1e-5)  # hidden neurons: invariant
        told_apart = float((out - paper_np(swapped)).abs().max())  # input neurons (codes, HNP pooling)
        blind = float((plain_np(ws) - plain_np(swapped)).abs().max())  # the default NP model: not
        assert told_apart > 1e-5 and blind < 1e-6
    head = list(paper_np.head.modules())
    assert sum(isinstance(m, torch.nn.Dropout) for m in head) == 2 and paper_np.head[-1].out_features == 10
    paper_np.train()
    assert not torch.equal(paper_np(ws), paper_np(ws))  # dropout on in training


def _layer_with_one_map(terms: str) -> tuple:
    """A DWS layer (mean pooling, DeepSets blocks) whose parameters are all zero except one block's
    kept-neuron term: its output is that one term, scaled as `terms` says."""
    from wsbench.methods.equivariant.layer import DWSLayer
    from wsbench.methods.equivariant.layout import layouts_for_spec

    layouts = layouts_for_spec(spec_for_arch("siren"))
    torch.manual_seed(0)
    layer = DWSLayer(layouts, 1, 4, reduction="mean", set_layer="ds", terms=terms)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    i, j, fam, key = next(r for r in layer.routes if r[0] != r[1])  # a block between two tensors
    term = layer.blocks[fam][key].terms[0]
    with torch.no_grad():
        term.weight.normal_()
    xs = [torch.randn(2, *(a.size for a in t.axes), 1) for t in layouts]
    alone = layer.blocks[fam][key].term_outputs(xs[i])[0]
    return layer(xs)[j], alone, len(layouts), layer.blocks[fam][key].scale


def test_sum_terms_adds_each_map_once_and_mean_divides_by_the_tensor_count():
    summed, alone, n, block_scale = _layer_with_one_map("sum")
    assert torch.allclose(summed, alone.expand_as(summed), atol=1e-6)
    averaged, alone_mean, _, _ = _layer_with_one_map("mean")
    assert torch.allclose(averaged, (alone_mean * block_scale / n).expand_as(averaged), atol=1e-6)


def test_nfn_init_bounds_each_output_tensors_maps_by_their_summed_fan_in():
    from wsbench.methods.equivariant.layer import DWSLayer
    from wsbench.methods.equivariant.layout import layouts_for_spec

    layouts = layouts_for_spec(spec_for_arch("siren"))
    torch.manual_seed(0)
    layer = DWSLayer(layouts, 3, 8, reduction="mean", set_layer="ds", terms="sum", init="nfn")
    for j in range(len(layouts)):
        maps = [m for _, dst, fam, key in layer.routes if dst == j for m in layer.blocks[fam][key].terms]
        k = layer.pooled.dsts.index(j) if j in layer.pooled.dsts else None
        fan_in = sum(m.in_features for m in maps) + (layer.pooled.linears[k].in_features if k is not None else 0)
        params = [p for m in maps for p in m.parameters()]
        params += [layer.pooled.linears[k].weight, layer.pooled.biases[k]] if k is not None else []
        values = torch.cat([p.detach().flatten() for p in params])
        bound = (1 / fan_in) ** 0.5
        assert values.abs().max() <= bound and values.abs().max() > 0.9 * bound  # uniform up to the bound
        assert abs(float(values.std()) - bound / 3 ** 0.5) < 0.1 * bound
    with pytest.raises(ValueError, match="attention"):
        DWSLayer(layouts, 3, 8, init="nfn")


def test_the_nfn_layer_scale_is_the_default_and_dwsnets_scale_an_option():
    for method in ("nfn_hnp", "nfn_np"):
        cls = METHODS.get(method)
        assert cls.version == 2 and (cls.defaults["terms"], cls.defaults["layer_init"]) == ("sum", "nfn")
        for preset in ("paper", "small_cnn_zoo", "cpu"):
            cfg = cls.parse_config(preset_method_config(method, preset))
            assert (cfg["terms"], cfg["layer_init"]) == ("sum", "nfn")
        assert cls(spec_for_arch("siren"), 10).layers[0].sum_terms
        assert not cls(spec_for_arch("siren"), 10, terms="mean", layer_init="dwsnets").layers[0].sum_terms
    with pytest.raises(ConfigError, match="terms"):
        METHODS.get("nfn_hnp")(spec_for_arch("siren"), 10, terms="max")
