"""The options of wsbench/methods/graph.py that follow the original NG-GNN's PNA backbone (norm: graph,
node_update: pna, edge_update: pna, reverse_edges: features; wsbench/methods/graph_layers.py)."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.nn.norm import LayerNorm as PygLayerNorm

import wsbench.methods.graph  # noqa: F401  (registration)
from wsbench.archs import spec_for_arch
from wsbench.errors import ConfigError
from wsbench.methods.graph_message_passing import NeuralGraphLayer
from wsbench.methods import graph_layers
from wsbench.methods.graph_layers import GraphLayerNorm, PNAEdgeUpdate, directed_edge_values
from wsbench.registry import METHODS
from wsbench.runner import preset_method_config
from wsbench.weights import WeightSpace

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SIREN = spec_for_arch("siren")  # 2 -> 32 -> 32 -> 1
CNN = spec_for_arch("small_cnn", in_channels=2, channels=3, n_conv=2, num_classes=3)
PNA = {"node_update": "pna", "edge_update": "pna", "norm": "graph", "reverse_edges": "features"}
EDGES = torch.tensor([[0, 0, 1], [1, 2, 3]])  # a tiny graph of 4 nodes


def random_ws(spec, n: int, seed: int = 0) -> WeightSpace:
    g = torch.Generator().manual_seed(seed)
    return WeightSpace(spec, {p.key: torch.randn(n, *p.shape, generator=g) for p in spec.params})


def graph_model(spec=SIREN, seed: int = 0, **config):
    torch.manual_seed(seed)
    return METHODS.get("neural_graph")(spec, 3, **{"hidden_dim": 8, "n_layers": 2, **config})


def test_graph_layer_norm_is_pyg_graph_mode_per_network():
    torch.manual_seed(0)
    norm = GraphLayerNorm(4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    pyg = PygLayerNorm(4, mode="graph")
    pyg.load_state_dict(norm.state_dict())
    x = torch.randn(2 * 5, 4) * torch.tensor([1.0, 10.0]).repeat_interleave(5)[:, None]  # two graphs of 5 nodes
    out = norm(x, 2)
    for g in range(2):  # each network as PyG normalises a batch of one graph
        assert torch.allclose(out[5 * g:5 * (g + 1)], pyg(x[5 * g:5 * (g + 1)]), atol=1e-5)
    x2 = x.clone()
    x2[:5] *= 3.0  # one network's scale does not reach the other's output, nor its own
    assert torch.allclose(norm(x2, 2), out, atol=1e-5)
    plain = GraphLayerNorm(4)(x, 2)
    assert torch.allclose(plain.view(2, -1).std(1, unbiased=False), torch.ones(2), atol=1e-4)
    x3 = x.clone()
    x3[0] *= 4.0  # unlike a per-node LayerNorm, a node's scale relative to the others survives
    y3 = GraphLayerNorm(4)(x3, 2)
    assert y3[0].norm() > 2 * y3[1:5].norm(dim=1).mean()


def test_pna_node_update_is_two_linear_maps_then_norm_and_activation_but_not_after_the_last_layer():
    torch.manual_seed(0)
    kw = {"act": torch.nn.SiLU, "node_update": "pna", "norm": "graph", "residual": False}
    mid, last = NeuralGraphLayer(4, **kw), NeuralGraphLayer(4, **kw, last=True)
    assert [type(m) for m in mid.node_mlp] == [torch.nn.Linear, torch.nn.Linear]
    x, e = torch.randn(4, 4), torch.randn(3, 4)
    assert last.node_norm is None  # nor its parameters
    for layer in (mid, last):
        seen = []
        layer.node_mlp.register_forward_hook(lambda mod, inp, out: seen.append(out))
        x1, _ = layer(x, EDGES, e)
        want = seen[0] if layer is last else torch.nn.functional.silu(layer.node_norm(seen[0], 1))
        assert torch.allclose(x1, want, atol=1e-6)


def test_pna_edge_update_sums_three_linear_maps_has_no_norm_and_is_skipped_after_the_last_layer():
    torch.manual_seed(0)
    mid = NeuralGraphLayer(4, edge_update="pna", residual=False)
    last = NeuralGraphLayer(4, edge_update="pna", residual=False, last=True)
    assert isinstance(mid.edge_mlp, PNAEdgeUpdate) and mid.edge_norm is None
    assert last.edge_mlp is None and not any(k.startswith(("edge_mlp", "edge_norm")) for k in last.state_dict())
    x, e = torch.randn(4, 4), torch.randn(3, 4)
    x1, e1 = mid(x, EDGES, e)
    u = mid.edge_mlp
    want = u.out(torch.relu(u.lin_e(e) + u.lin_src(x1)[EDGES[0]] + u.lin_dst(x1)[EDGES[1]]))
    assert torch.allclose(e1, want, atol=1e-6)
    assert torch.equal(last(x, EDGES, e)[1], e)  # the edges pass the last layer unchanged


def test_reverse_edge_features_give_each_direction_its_own_edge():
    w = torch.arange(1.0, 7.0).view(1, 3, 2)  # one network, 3 edges, kernels of 2 entries
    v = directed_edge_values(w)
    assert v.shape == (1, 6, 6)
    assert torch.equal(v[0, 1], torch.tensor([3.0, 4.0, 0.0, 0.0, 3.0, 4.0]))  # forward: [w, 0, w]
    assert torch.equal(v[0, 4], torch.tensor([0.0, 0.0, 3.0, 4.0, 3.0, 4.0]))  # reverse: [0, w, w]
    m = graph_model(reverse_edges="features", input_encoding="fourier", fourier_dim=6)
    assert m.edge_in[0].freq.shape == (6, 27) and not any("direction" in k for k in m.state_dict())
    n_edges = []
    m.layers[0].register_forward_pre_hook(lambda mod, args: n_edges.append((args[1].shape[1], args[2].shape[0])))
    with torch.no_grad():
        m(random_ws(SIREN, 2))
    E = 2 * 32 + 32 * 32 + 32
    assert n_edges[0] == (2 * 2 * E, 2 * 2 * E)  # both directions of every weight, for each of 2 networks


@pytest.mark.parametrize("readout", ["pool", "output"])
@pytest.mark.parametrize("spec", [SIREN, CNN], ids=["siren", "cnn"])
def test_pna_options_keep_permutation_invariance_and_batch_independence(spec, readout):
    m = graph_model(spec, readout=readout, message="film", scalers=["identity", "amplification"], residual=False,
                    activation="silu", **PNA).eval()
    ws = random_ws(spec, 4)
    perm = ws.permute(ws.random_permutation(torch.Generator().manual_seed(2)))
    with torch.no_grad():
        out, out_p, other, one = m(ws), m(perm), m(ws[[1, 2, 3, 0]]), m(ws[0:1])
    assert torch.allclose(out, out_p, atol=1e-5)
    assert torch.allclose(one[0], out[0], atol=1e-5)  # graph norm statistics are each network's own
    assert torch.allclose(other[3], out[0], atol=1e-5)
    assert (out - other).abs().max() > 1e-3


@pytest.mark.parametrize("option", sorted(PNA))
def test_each_option_alone_runs_and_changes_the_model(option):
    ws = random_ws(SIREN, 2)
    with torch.no_grad():
        out = graph_model(**{option: PNA[option]})(ws)
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        assert not torch.allclose(out, graph_model()(ws))


def test_default_options_keep_the_model():
    explicit = graph_model(node_update="mlp", edge_update="mlp", norm="node", reverse_edges="code")
    default = graph_model()
    assert list(explicit.state_dict()) == list(default.state_dict())
    assert sum(p.numel() for p in default.parameters()) == 10267  # as before the options existed
    assert all(layer.direction is not None and layer.edge_norm is not None for layer in default.layers)
    ws = random_ws(SIREN, 3)
    with torch.no_grad():
        out = default.eval()(ws)
        assert torch.equal(explicit.eval()(ws), out)
    before = torch.tensor([[-0.3880, 0.0206, -0.1254], [-0.3958, 0.0291, -0.1336], [-0.3919, 0.0257, -0.1275]])
    assert torch.allclose(out, before, atol=1e-4)  # the output of the model before these options, seed 0


def test_paper_preset_turns_the_pna_options_on():
    cfg = preset_method_config("neural_graph", "paper")
    assert {k: cfg[k] for k in PNA} == PNA
    torch.manual_seed(0)
    m = METHODS.get("neural_graph")(SIREN, 10, **cfg)
    assert m.layers[-1].edge_mlp is None and m.layers[-1].node_norm is None
    assert all(isinstance(x.node_norm, GraphLayerNorm) for x in m.layers[:-1])
    with torch.no_grad():
        assert m(random_ws(SIREN, 2)).shape == (2, 10)


@pytest.mark.parametrize("bad", [{"node_update": "gru"}, {"edge_update": "none"}, {"norm": "batch"},
                                 {"norm": None}, {"reverse_edges": True}, {"reverse_edges": "both"}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        graph_model(**bad)


@pytest.mark.parametrize("spec", [SIREN, CNN], ids=["siren", "small_cnn"])
def test_node_degrees_are_torch_geometrics_degrees(spec):
    from torch_geometric.utils import degree

    from wsbench.methods.graph import build_template, node_degrees

    t = build_template(spec)
    forward = degree(t.edge_index[1], t.n_nodes)
    assert torch.equal(node_degrees(t, "forward"), forward)
    assert torch.equal(node_degrees(t, "both"), forward + degree(t.edge_index[0], t.n_nodes))
    both = torch.cat([t.edge_index, t.edge_index.flip(0)], dim=1)[1]  # what the amplification scaler counts
    assert torch.equal(graph_layers.degree(both, t.n_nodes, torch.float64), degree(both, t.n_nodes, dtype=torch.float64))
