"""Generic tests over every registered encoder (timm-style), plus encoder-specific checks (the DWS
layer's own: tests/test_dws_layer.py).

For each encoder and each small spec it supports: batch sizes 1 and N agree; invariance under
random neuron permutations when the encoder claims it; a probe outside the symmetry group (an
untied permutation, a shuffle inside one tensor, a permutation of the input pixels/channels)
changes the output unless the encoder declares that invariance intended (then it must hold);
a short training run lowers the loss; bad config keys fail clearly. Architecture-agnostic
encoders also run on two different specs with one model.
"""
from __future__ import annotations

import math

import pytest
import torch

import wsbench.methods.deepsets  # noqa: F401  (registration; until wsbench/builtins.py imports these)
import wsbench.methods.dwsnet  # noqa: F401
import wsbench.methods.graph  # noqa: F401
import wsbench.methods.mlp  # noqa: F401
import wsbench.methods.nfn  # noqa: F401
import wsbench.methods.sne  # noqa: F401
import wsbench.methods.stat_features  # noqa: F401
from wsbench.archs import build_arch
from wsbench.errors import ConfigError, NotApplicableError
from wsbench.methods.graph import build_template
from wsbench.methods.common import canonical_permutation
from wsbench.methods.sne import chunk_plan
from wsbench.registry import METHODS
from wsbench.archs import spec_for_arch
from wsbench.weights import WeightSpace
from encoder_specs import SPECS, random_ws, spec_of

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


ENCODERS = [n for n in METHODS.names() if METHODS.get(n).capability == "encoder"]
PROBES = ("untied_permutation", "layer_shuffle", "input_permutation")


def make(name: str, specs, out_dim: int = 2, seed: int = 0):
    cls = METHODS.get(name)
    torch.manual_seed(seed)
    return cls(specs, out_dim, **cls.tiny_config)


def cases():
    return [(n, s) for n in ENCODERS for s in SPECS if METHODS.get(n).supports(spec_of(s))[0]]


def probe(ws: WeightSpace, kind: str) -> WeightSpace:
    """A transformation outside the neuron-permutation group (same for every network)."""
    lay = ws.spec.weight_layers()
    t = dict(ws.tensors)
    g = torch.Generator().manual_seed(1)
    if kind == "untied_permutation":  # rows of the first layer only: bias and next layer not permuted
        w = t[lay[0].weight]
        t[lay[0].weight] = w[:, torch.randperm(w.shape[1], generator=g)]
    elif kind == "layer_shuffle":  # every entry of the second weight tensor to a random place
        w = t[lay[1].weight]
        t[lay[1].weight] = w.reshape(len(ws), -1)[:, torch.randperm(w[0].numel(), generator=g)].reshape(w.shape)
    else:  # input pixels / channels of the first layer
        w = t[lay[0].weight]
        t[lay[0].weight] = w[:, :, torch.tensor([1, 0] + list(range(2, w.shape[2])))]
    return WeightSpace(ws.spec, t)


@pytest.mark.parametrize("name,spec_key", cases())
def test_batch_sizes_one_and_n(name, spec_key):
    enc = make(name, spec_of(spec_key)).eval()
    ws = random_ws(spec_key, 5)
    with torch.no_grad():
        out_n, out_1 = enc(ws), enc(ws[0:1])
    assert out_n.shape == (5, 2) and out_1.shape == (1, 2)
    assert torch.isfinite(out_n).all()
    assert torch.allclose(out_1[0], out_n[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,spec_key", cases())
def test_neuron_permutation_invariance(name, spec_key):
    cls = METHODS.get(name)
    enc = make(name, spec_of(spec_key)).eval()
    ws = random_ws(spec_key, 4)
    perms = ws.random_permutation(torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, out_p, other = enc(ws), enc(ws.permute(perms)), enc(ws[[1, 2, 3, 0]])
    spread = (out - other).abs().max()
    diff = (out - out_p).abs().max()
    if cls.invariant:
        assert diff <= 1e-5 * max(1.0, float(out.abs().max())), f"{name} is not invariant: {diff}"
    else:  # no built-in invariance claimed: permuted copies are (slightly) different inputs to it
        assert diff > 1e-7 * spread, f"{name} claims no invariance but is invariant"


@pytest.mark.parametrize("kind", PROBES)
@pytest.mark.parametrize("name,spec_key", cases())
def test_transformations_outside_the_group(name, spec_key, kind):
    cls = METHODS.get(name)
    enc = make(name, spec_of(spec_key)).eval()
    ws = random_ws(spec_key, 4)
    with torch.no_grad():
        out, out_t, other = enc(ws), enc(probe(ws, kind)), enc(ws[[1, 2, 3, 0]])
    diff, spread = float((out - out_t).abs().max()), float((out - other).abs().max())
    if kind in cls.intended_invariances:
        assert diff <= 1e-5 * max(1.0, float(out.abs().max()))
    else:
        assert diff > 1e-3 * spread, f"{name} is blind to {kind} ({diff:.2e} vs spread {spread:.2e})"


@pytest.mark.parametrize("name,spec_key", cases())
def test_short_training_lowers_the_loss(name, spec_key):
    enc = make(name, spec_of(spec_key), out_dim=1).train()
    ws = random_ws(spec_key, 12)
    y = torch.randn(12, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(enc(ws)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", ENCODERS)
def test_config_errors_name_the_key(name):
    spec = spec_of("mlp")
    with pytest.raises(ConfigError, match="hidden_dimm"):
        METHODS.get(name)(spec, 1, hidden_dimm=3)
    with pytest.raises(ConfigError, match="hidden_dim"):
        METHODS.get(name)(spec, 1, hidden_dim="wide")


@pytest.mark.parametrize("name", ENCODERS)
def test_two_specs_in_one_model(name):
    cls = METHODS.get(name)
    specs = [spec_of("mlp"), spec_of("cnn")]
    if not cls.architecture_agnostic:
        with pytest.raises(NotApplicableError, match="one architecture"):
            make(name, specs)
        return
    enc = make(name, specs).eval()
    for key in SPECS:
        ws = random_ws(key, 3)
        with torch.no_grad():
            out = enc(ws)
            out_p = enc(ws.permute(ws.random_permutation(torch.Generator().manual_seed(0))))
        assert out.shape == (3, 2) and torch.isfinite(out).all()
        if cls.invariant:
            assert torch.allclose(out, out_p, atol=1e-5)


# ----------------------------------------------------------------------------- layer-level checks


def test_dwsnet_paper_config_parameter_count():
    """MNIST-INR settings give the 552,650 parameters counted from the official code (fact sheet)."""
    enc = METHODS.get("dwsnet")(spec_for_arch("siren"), 10)
    assert sum(p.numel() for p in enc.parameters()) == 552_650


def test_sne_chunks_cover_every_entry_once():
    spec = spec_of("cnn")
    plan = chunk_plan(spec, 4)
    idx = plan.index[plan.index >= 0]
    assert sorted(idx.tolist()) == list(range(sum(math.prod(p.shape) for p in spec.params)))
    assert plan.n_layers == 3 and int(plan.layer_type[0]) == 1 and int(plan.layer_type[-1]) == 0


def test_sne_logit_invariance_regulariser_trains_invariance():
    enc = make("sne", spec_of("mlp"), out_dim=2)
    enc.config["invariance_weight"] = 1.0
    ws = random_ws("mlp", 6)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(10):
        loss = enc.auxiliary_loss(ws, enc(ws), g)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0 and float(loss) < first


def test_neural_graph_edges_follow_weight_layout():
    spec = spec_of("mlp")  # 2 -> 5 -> 4 -> 3
    t = build_template(spec)
    assert t.n_nodes == 14 and t.edge_index.shape == (2, 10 + 20 + 12)
    # edge k of layer 0 carries W[o, i] with k = o * 2 + i: from input node i to hidden node 2 + o
    assert t.edge_index[:, 2 * 3 + 1].tolist() == [1, 2 + 3]
    assert t.node_fixed.tolist()[:2] == [1, 2] and t.node_fixed.tolist()[-3:] == [1, 2, 3]
    assert t.node_fixed[2:11].eq(0).all()


def test_canonical_alignment_maps_an_orbit_to_one_point():
    ws = random_ws("cnn", 3)
    a = ws.permute(canonical_permutation(ws))
    p = ws.permute(ws.random_permutation(torch.Generator().manual_seed(5)))
    b = p.permute(canonical_permutation(p))
    assert torch.allclose(a.flat(), b.flat())


def test_permutation_augmentation_preserves_every_network_function():
    from wsbench.weights import batched_forward

    arch, kw = SPECS["mlp"]
    enc = make("mlp_permaug", spec_of("mlp"))
    ws = random_ws("mlp", 4)
    aug = enc.augment(ws, torch.Generator().manual_seed(0))
    x = torch.randn(7, 2)
    model = build_arch(arch, **kw)
    assert not torch.allclose(aug.flat(), ws.flat())
    assert torch.allclose(batched_forward(model, aug, x), batched_forward(model, ws, x), atol=1e-5)


def _scaled_ws(key: str, n: int) -> WeightSpace:
    """Networks whose entries have very different scales (per-entry statistics then differ per neuron)."""
    ws = random_ws(key, n)
    g = torch.Generator().manual_seed(3)
    return WeightSpace(ws.spec, {k: t * (0.1 + 3 * torch.rand(t.shape[1:], generator=g)) + torch.randn(t.shape[1:], generator=g)
                                 for k, t in ws.tensors.items()})


@pytest.mark.parametrize("name,spec_key", [c for c in cases() if METHODS.get(c[0]).invariant])
def test_invariance_survives_the_normalisation_the_task_applies(name, spec_key):
    """The whole input path (normaliser fitted on a zoo -> normalise -> encode): an invariant encoder
    stays invariant under neuron permutations with the normalisation `auto` gives it."""
    from wsbench.tasks.encoder_training import WeightNormalizer, resolve_normalize

    mode = resolve_normalize("auto", METHODS.get(name))
    assert mode == "symmetric"
    enc = make(name, spec_of(spec_key)).eval()
    zoo = _scaled_ws(spec_key, 12)
    norm = WeightNormalizer.fit(zoo, mode)
    perms = zoo.random_permutation(torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, out_p = enc(norm(zoo)), enc(norm(zoo.permute(perms)))
    assert (out - out_p).abs().max() <= 1e-5 * max(1.0, float(out.abs().max())), name


def test_per_entry_normalisation_breaks_invariance_and_symmetric_keeps_close_to_it():
    """Why `entry` (DWSNets' official) is not the default for invariant encoders, and what
    `symmetric` keeps of it: per-tensor-position statistics, shared along permutable axes."""
    from wsbench.tasks.encoder_training import WeightNormalizer

    zoo = _scaled_ws("mlp", 12)
    perms = zoo.random_permutation(torch.Generator().manual_seed(0))
    entry, sym = WeightNormalizer.fit(zoo, "entry"), WeightNormalizer.fit(zoo, "symmetric")
    w = zoo.spec.weight_layers()[1].weight  # a hidden layer: both axes permutable
    permuted_then = sym(zoo.permute(perms)).tensors[w]
    assert torch.allclose(permuted_then, sym(zoo).permute(perms).tensors[w], atol=1e-6)  # commutes
    assert not torch.allclose(entry(zoo.permute(perms)).tensors[w], entry(zoo).permute(perms).tensors[w], atol=1e-3)
    first = zoo.spec.weight_layers()[0].weight  # input axis not permutable: its statistics stay per input
    assert sym.mean[first].shape == (1, zoo.tensors[first].shape[2])
    with pytest.raises(ConfigError, match="normalisation"):
        WeightNormalizer.fit(zoo, "auto")


def test_nfn_per_layer_widths_and_deep_head_follow_the_official_accuracy_predictor():
    """The NFN repository's predict_gen model on the published small CNN: HNP layers of 16, 16, 5
    channels, pooled over hidden neurons (input and output neurons kept: 130 features at 5 channels),
    then Linear(130, 1000), ReLU, Linear(1000, 1000), ReLU, Linear(1000, 1)."""
    from wsbench.runner import load_preset

    preset = {k: v for k, v in load_preset("nfn_hnp", "small_cnn_zoo").items() if k not in ("description", "task")}
    spec = spec_for_arch("small_cnn", in_channels=1, num_classes=10, channels=16, n_conv=3, padding=0)
    enc = METHODS.get("nfn_hnp")(spec, 1, **preset)
    assert [layer.c_out for layer in enc.layers] == [16, 16, 5]
    linears = [m for m in enc.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(130, 1000), (1000, 1000), (1000, 1)]
    small = METHODS.get("nfn_hnp")(spec_of("cnn"), 2, channels=[4, 3], head_dim=6, head_layers=2).eval()
    ws = random_ws("cnn", 3)
    with torch.no_grad():
        out, out_p = small(ws), small(ws.permute(ws.random_permutation(torch.Generator().manual_seed(2))))
    assert torch.allclose(out, out_p, atol=1e-5)
    with pytest.raises(ConfigError, match="channels"):
        METHODS.get("nfn_hnp")(spec_of("cnn"), 2, channels=[])


def test_deepsets_types_every_tensor_and_pools_within_tensors_only():
    from wsbench.methods.deepsets import TENSOR_TYPES, tensor_types

    spec = spec_of("cnn")  # 2 convs, fc
    conv, lin, bias = TENSOR_TYPES["conv"], TENSOR_TYPES["linear"], TENSOR_TYPES["bias"]
    assert tensor_types(spec) == [conv, bias, conv, bias, lin, bias]
    enc = make("deepsets", spec).eval()
    ws = random_ws("cnn", 3)
    t = {k: v.clone() for k, v in ws.tensors.items()}
    w0, w1 = t["convs.0.weight"].clone(), t["convs.1.weight"].clone()
    t["convs.0.weight"].view(3, -1)[:, 0], t["convs.1.weight"].view(3, -1)[:, 0] = w1.view(3, -1)[:, 0], w0.view(3, -1)[:, 0]
    with torch.no_grad():  # one entry moved to another tensor: the sets change
        assert not torch.allclose(enc(ws), enc(WeightSpace(ws.spec, t)), atol=1e-6)
