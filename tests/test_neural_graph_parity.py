"""scripts/official_neural_graphs.py (the parts that need no checkout of the original code) and the options of
wsbench/methods/graph.py that follow the original NG-GNN."""
from __future__ import annotations

import math

import pytest
import torch
from script_loader import load_script
from torch_geometric.data import Batch, Data

import wsbench.methods.graph  # noqa: F401  (registration)
from wsbench.archs import spec_for_arch
from wsbench.errors import ConfigError, NotApplicableError
from wsbench.methods.graph import FourierFeatures, build_template
from wsbench.registry import METHODS
from wsbench.runner import preset_method_config
from wsbench.weights import WeightSpace

SIREN = spec_for_arch("siren")  # 2 -> 32 -> 32 -> 1


def siren_ws(n: int, seed: int = 0) -> WeightSpace:
    g = torch.Generator().manual_seed(seed)
    return WeightSpace(SIREN, {p.key: torch.randn(n, *p.shape, generator=g) for p in SIREN.params})


def graph_model(seed: int = 0, out_dim: int = 3, **config):
    torch.manual_seed(seed)
    return METHODS.get("neural_graph")(SIREN, out_dim, **{"hidden_dim": 8, "n_layers": 2, **config})


def test_official_inputs_and_layout_match_our_siren():
    off = load_script("official_neural_graphs")
    ws = siren_ws(3)
    weights, biases = off.official_inputs(ws.tensors)
    assert [tuple(w.shape) for w in weights] == [(3, 2, 32, 1), (3, 32, 32, 1), (3, 32, 1, 1)]
    assert torch.equal(weights[1][2, 5, 7, 0], ws.tensors["layers.1.weight"][2, 7, 5])  # input 5 -> output 7
    assert torch.equal(biases[2][:, :, 0], ws.tensors["layers.2.bias"])
    assert off.LAYER_LAYOUT == [2, 32, 32, 1] and build_template(SIREN).n_nodes == sum(off.LAYER_LAYOUT)


def test_fast_pyg_batch_gives_what_a_batch_of_one_graph_per_network_gives():
    off = load_script("official_neural_graphs")
    g = torch.Generator().manual_seed(1)
    x, e = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 4, 2, generator=g)
    ei = torch.tensor([[0, 0, 1, 2, 3], [2, 3, 2, 1, 0]])
    slow = Batch.from_data_list([Data(x=x[i], edge_index=ei, edge_attr=e[i, ei[0], ei[1]]) for i in range(3)])
    fast = off.fast_pyg_batch(x, e, ei)
    for key in ("x", "edge_index", "edge_attr", "batch"):
        assert torch.equal(getattr(fast, key), getattr(slow, key)), key
    assert fast.num_graphs == 3


def test_layer_normaliser_uses_one_mean_and_unbiased_std_per_tensor():
    off = load_script("official_neural_graphs")
    train = {"w": torch.tensor([[1.0, 3.0], [5.0, 7.0]]), "c": torch.full((2, 2), 4.0)}
    out = off.layer_normaliser(train)({"w": torch.tensor([[4.0, 4.0 + math.sqrt(20 / 3)]]), "c": torch.ones(1, 2)})
    assert torch.allclose(out["w"], torch.tensor([[0.0, 1.0]]))  # mean 4, unbiased std sqrt(20 / 3)
    assert torch.allclose(out["c"], torch.full((1, 2), -3e8))  # a constant tensor: std clamped at 1e-8


def test_optimizer_clips_the_gradient_norm_at_10_before_the_adamw_step():
    off = load_script("official_neural_graphs")
    p = torch.nn.Parameter(torch.zeros(4))
    opt = off.official_optimizer([p])
    p.grad = torch.tensor([30.0, 40.0, 0.0, 0.0])  # norm 50
    opt.step()
    assert torch.allclose(p.grad, torch.tensor([6.0, 8.0, 0.0, 0.0]))
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 5e-4 and opt.defaults["amsgrad"]


def test_stub_instantiate_and_the_mnist_pna_config():
    off = load_script("official_neural_graphs")
    lin = off._instantiate({"_target_": "torch.nn.Linear", "_recursive_": False, "in_features": 3,
                            "out_features": 9}, out_features=4)  # keyword arguments win, as in hydra
    assert isinstance(lin, torch.nn.Linear) and lin.weight.shape == (4, 3)
    cfg = off.pna_config(10)
    gnn, gc = cfg["gnn_backbone"], cfg["graph_constructor"]
    assert cfg["d_hid"] == 32 and gnn["num_layers"] == 4 and gnn["dropout"] == 0.2 and cfg["rev_edge_features"]
    assert gnn["aggregators"] == ["mean", "min", "max", "std"] and gnn["modulate_edges"] and gnn["deg"] is None
    assert gc["sin_emb"] and gc["sin_emb_dim"] == 128 and gc["inp_factor"] == 3.0 and gc["stats"] is None
    assert off.OFFICIAL["neural_graph"].batch == 128 and off.OFFICIAL["neural_graph"].our_preset == "paper"


def test_paper_preset_builds_our_model_at_the_original_settings():
    cfg = preset_method_config("neural_graph", "paper")
    off = load_script("official_neural_graphs").PNA_MNIST
    assert (cfg["hidden_dim"], cfg["n_layers"], cfg["dropout"]) == (off["d_hid"], off["n_layers"], off["dropout"])
    assert cfg["aggregators"] == off["aggregators"] and cfg["fourier_sigma"] == off["inp_factor"]
    torch.manual_seed(0)
    model = METHODS.get("neural_graph")(SIREN, 10, **cfg)
    assert [m.in_features for m in model.head if isinstance(m, torch.nn.Linear)] == [32, 32, 32]  # 1 output node
    assert model(siren_ws(2)).shape == (2, 10)


def test_fourier_features_are_cos_and_sin_of_fixed_gaussian_frequencies():
    torch.manual_seed(0)
    f = FourierFeatures(2, 500, sigma=3.0)
    x = torch.tensor([[0.1, -0.2]])
    proj = 2 * math.pi * x @ f.freq.T
    assert torch.allclose(f(x), torch.cat([proj.cos(), proj.sin()], dim=1))
    assert abs(float(f.freq.std()) - 3.0) < 0.2 and "freq" in f.state_dict() and not list(f.parameters())


def test_fourier_input_encoding_embeds_weights_and_biases_through_the_features():
    m = graph_model(input_encoding="fourier", fourier_dim=6)
    assert isinstance(m.edge_in[0], FourierFeatures) and m.edge_in[0].freq.shape == (6, 9)  # max_kernel 9
    assert m.node_in[1].in_features == 12
    ws = siren_ws(2)
    assert torch.isfinite(m(ws)).all()


def test_output_readout_reads_only_the_output_neurons_and_stays_invariant():
    m = graph_model(readout="output", aggregators=["mean", "min", "max", "std"], activation="silu",
                    head_layers=3).eval()
    assert m.n_outputs == 1 and m.head[0].in_features == 8
    assert sum(isinstance(x, torch.nn.Linear) for x in m.head) == 3
    assert m.layers[0].node_mlp[0].in_features == 5 * 8 and isinstance(m.layers[0].node_mlp[1], torch.nn.SiLU)
    ws = siren_ws(3)
    perm = ws.permute(ws.random_permutation(torch.Generator().manual_seed(2)))
    with torch.no_grad():
        assert torch.allclose(m(ws), m(perm), atol=1e-5)
        x_seen = []  # the head's input: the features of the one output node
        m.head.register_forward_pre_hook(lambda mod, inp: x_seen.append(inp[0]))
        m(ws)
    assert x_seen[0].shape == (3, 8)


def test_output_readout_refuses_networks_of_another_output_size():
    other = spec_for_arch("mlp", widths=[2, 5, 3])
    with pytest.raises(NotApplicableError, match="one output size"):
        METHODS.get("neural_graph")([SIREN, other], 3, hidden_dim=8, n_layers=1, readout="output")
    m = graph_model(readout="output")
    with pytest.raises(NotApplicableError, match="1 outputs"):
        m.template(other)
    assert graph_model().template(other).n_outputs == 3  # the pooled readout reads any output size


def test_dropout_acts_in_training_only_and_default_options_keep_the_model():
    m = graph_model(dropout=0.5)
    ws = siren_ws(2)
    m.train()
    assert not torch.allclose(m(ws), m(ws))
    m.eval()
    assert torch.equal(m(ws), m(ws))
    default = graph_model()
    assert sorted(k for k in default.state_dict() if k.startswith("head")) == \
        ["head.0.bias", "head.0.weight", "head.2.bias", "head.2.weight"]
    assert default.head[0].in_features == 3 * 8 and default.layers[0].node_mlp[0].in_features == 3 * 8


@pytest.mark.parametrize("bad", [{"aggregators": ["mean", "median"]}, {"aggregators": []},
                                 {"aggregators": ["max", "max"]}, {"readout": "cls"}, {"activation": "gelu"},
                                 {"dropout": 1.0}, {"head_layers": 0}, {"input_encoding": "sin"}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        graph_model(**bad)


# --- the PNA-layer options (message: film, scalers, scaler_degree, residual) -------------------------------

from torch_geometric.nn.aggr import DegreeScalerAggregation, MultiAggregation  # noqa: E402

from wsbench.methods.graph import mean_log_degree, node_degrees  # noqa: E402
from wsbench.methods.graph_message_passing import NeuralGraphLayer  # noqa: E402

PNA_OPTIONS = {"message": "film", "scalers": ["identity", "amplification"], "residual": False}


def degree_histogram(degrees: torch.Tensor) -> torch.Tensor:
    """PyG's `deg` argument: how many nodes have each degree."""
    return torch.bincount(degrees.long())


def test_film_message_is_edge_scale_times_a_linear_map_of_the_nodes_plus_edge_shift():
    m = graph_model(message="film")
    layer = m.layers[0]
    assert not hasattr(layer, "message_mlp")
    assert (layer.film_edge.in_features, layer.film_edge.out_features) == (8, 16)
    assert (layer.message_lin.in_features, layer.message_lin.out_features) == (16, 8)
    g = torch.Generator().manual_seed(0)
    x_i, x_j, e = (torch.randn(5, 8, generator=g) for _ in range(3))
    scale, shift = layer.film_edge(e).chunk(2, dim=1)
    want = scale * layer.message_lin(torch.cat([x_i, x_j], dim=1)) + shift
    assert torch.allclose(layer.message(x_i, x_j, e), want)
    with torch.no_grad():  # a constant edge map: scale 2, shift 0.5 whatever the edge
        layer.film_edge.weight.zero_()
        layer.film_edge.bias.copy_(torch.cat([torch.full((8,), 2.0), torch.full((8,), 0.5)]))
    lin = layer.message_lin(torch.cat([x_i, x_j], dim=1))
    assert torch.allclose(layer.message(x_i, x_j, e), 2 * lin + 0.5)
    assert torch.allclose(layer.message(x_i, x_j, e + 7), 2 * lin + 0.5)  # the edge acts through FiLM only
    ws = siren_ws(2)
    with torch.no_grad():
        assert not torch.allclose(graph_model(message="film")(ws), graph_model()(ws))


def test_amplification_scales_the_aggregates_by_log_degree_over_delta_on_a_tiny_graph():
    torch.manual_seed(0)
    layer = NeuralGraphLayer(4, ("mean", "max"), scalers=("identity", "amplification"), log_deg_mean=2.0)
    assert layer.node_mlp[0].in_features == (1 + 2 * 2) * 4 and float(layer.log_deg_mean) == 2.0
    edge_index = torch.tensor([[0, 0, 1], [1, 2, 3]])  # both directions: degrees 2, 2, 1, 1
    x, e = torch.randn(4, 4), torch.randn(3, 4)
    seen = []
    layer.node_mlp.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    layer(x, edge_index, e)
    agg = seen[0][:, 4:]  # [x, identity (mean, max), amplification (mean, max)]
    factor = torch.log(torch.tensor([3.0, 3.0, 2.0, 2.0])) / 2.0
    assert torch.allclose(agg[:, 8:], agg[:, :8] * factor[:, None])
    assert not torch.allclose(agg[:, 8:], agg[:, :8])


def test_our_scalers_compute_what_pyg_degree_scaler_aggregation_computes():
    t = build_template(SIREN)
    both = torch.cat([t.edge_index, t.edge_index.flip(0)], dim=1)
    pyg = DegreeScalerAggregation(["mean", "max"], ["identity", "amplification"],
                                  degree_histogram(node_degrees(t, "both")))
    assert math.isclose(pyg.init_avg_deg_log, mean_log_degree([t], "both"), rel_tol=1e-6)
    layer = NeuralGraphLayer(3, ("mean", "max"), scalers=("identity", "amplification"),
                             log_deg_mean=pyg.init_avg_deg_log)
    msgs = torch.randn(both.shape[1], 3, generator=torch.Generator().manual_seed(0))
    ours = layer.scale(MultiAggregation(["mean", "max"])(msgs, both[1], dim_size=t.n_nodes), both[1])
    assert torch.allclose(ours, pyg(msgs, both[1], dim_size=t.n_nodes), atol=1e-6)


def test_scaler_degree_forward_gives_the_original_delta_from_forward_in_degrees():
    """The original's GNNForClassification histogram: for the layout [2, 32, 32, 1], 2 nodes of in-degree 0,
    32 of in-degree 2 and 33 of in-degree 32 (reverse edges not counted)."""
    hist = torch.zeros(33, dtype=torch.long)
    hist[0], hist[2], hist[32] = 2, 32, 33
    original = DegreeScalerAggregation("mean", ["identity", "amplification"], hist).init_avg_deg_log
    assert torch.equal(degree_histogram(node_degrees(build_template(SIREN), "forward")), hist)
    fwd = graph_model(scalers=["identity", "amplification"], scaler_degree="forward")
    both = graph_model(scalers=["identity", "amplification"])
    assert math.isclose(float(fwd.layers[1].log_deg_mean), original, rel_tol=1e-6)  # 2.2469
    assert math.isclose(float(both.layers[1].log_deg_mean), mean_log_degree([build_template(SIREN)]), rel_tol=1e-6)
    assert float(both.layers[0].log_deg_mean) > 3.5 > 2.3 > original  # both directions: degrees 32 to 35
    assert "layers.0.log_deg_mean" in fwd.state_dict()
    with torch.no_grad():
        assert not torch.allclose(fwd(siren_ws(2)), both(siren_ws(2)))


def test_residual_false_replaces_node_and_edge_features_by_their_updates():
    torch.manual_seed(0)
    with_skip, without = NeuralGraphLayer(4), NeuralGraphLayer(4, residual=False)
    without.load_state_dict(with_skip.state_dict())
    with torch.no_grad():
        for layer in (with_skip, without):  # updates that are exactly zero
            for mlp in (layer.node_mlp, layer.edge_mlp):
                mlp[-1].weight.zero_()
                mlp[-1].bias.zero_()
            layer.node_norm.bias.fill_(0.25)
            layer.edge_norm.bias.fill_(-0.5)
    x, e, edge_index = torch.randn(4, 4), torch.randn(3, 4), torch.tensor([[0, 0, 1], [1, 2, 3]])
    x1, e1 = with_skip(x, edge_index, e)
    x0, e0 = without(x, edge_index, e)
    assert torch.allclose(x1, with_skip.node_norm(x)) and torch.allclose(e1, with_skip.edge_norm(e))
    assert torch.equal(x0, torch.full((4, 4), 0.25)) and torch.equal(e0, torch.full((3, 4), -0.5))


@pytest.mark.parametrize("readout", ["pool", "output"])
@pytest.mark.parametrize("arch,kwargs", [("siren", {}), ("small_cnn", {"in_channels": 2, "channels": 3, "n_conv": 2,
                                                                      "num_classes": 3})])
def test_pna_options_keep_permutation_invariance_and_batch_independence(arch, kwargs, readout):
    spec = spec_for_arch(arch, **kwargs)
    torch.manual_seed(0)
    m = METHODS.get("neural_graph")(spec, 3, hidden_dim=8, n_layers=2, readout=readout,
                                    scaler_degree="forward", **PNA_OPTIONS).eval()
    g = torch.Generator().manual_seed(0)
    ws = WeightSpace(spec, {p.key: torch.randn(4, *p.shape, generator=g) for p in spec.params})
    perm = ws.permute(ws.random_permutation(torch.Generator().manual_seed(2)))
    with torch.no_grad():
        out, out_p, other, one = m(ws), m(perm), m(ws[[1, 2, 3, 0]]), m(ws[0:1])
    assert torch.allclose(out, out_p, atol=1e-5)
    assert torch.allclose(one[0], out[0], atol=1e-5)  # degrees of a batch of graphs = those of each graph
    assert (out - other).abs().max() > 1e-3  # the networks themselves are told apart


def test_default_pna_options_keep_the_model():
    explicit = graph_model(message="mlp", scalers=["identity"], scaler_degree="forward", residual=True)
    default = graph_model()
    assert list(explicit.state_dict()) == list(default.state_dict())
    assert not any("film" in k or "message_lin" in k or "log_deg_mean" in k for k in default.state_dict())
    assert default.layers[0].node_mlp[0].in_features == 3 * 8 and default.layers[0].residual
    ws = siren_ws(3)
    with torch.no_grad():
        assert torch.equal(explicit(ws), default(ws))  # scaler_degree has no effect without amplification


def test_paper_preset_follows_the_original_pna_layer():
    cfg = preset_method_config("neural_graph", "paper")
    off = load_script("official_neural_graphs").PNA_MNIST
    assert cfg["scalers"] == off["scalers"] and cfg["message"] == "film" and cfg["residual"] is False
    assert cfg["scaler_degree"] == "forward"  # the original's histogram of forward in-degrees
    torch.manual_seed(0)
    model = METHODS.get("neural_graph")(SIREN, 10, **cfg)
    layer = model.layers[0]
    assert hasattr(layer, "film_edge") and not layer.residual and layer.node_mlp[0].in_features == (1 + 4 * 2) * 32
    assert math.isclose(float(layer.log_deg_mean), 2.24687, rel_tol=1e-5)


@pytest.mark.parametrize("bad", [{"message": "gru"}, {"scalers": []}, {"scalers": ["identity", "identity"]},
                                 {"scalers": ["attenuation"]}, {"scalers": "identity"}, {"scaler_degree": "in"},
                                 {"residual": "no"}, {"residual": 0}])
def test_bad_pna_options_are_refused(bad):
    with pytest.raises(ConfigError):
        graph_model(**bad)
