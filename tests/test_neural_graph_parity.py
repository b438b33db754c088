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
from wsbench.runner import RESERVED, load_preset
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
    cfg = {k: v for k, v in load_preset("neural_graph", "paper").items() if k not in RESERVED}
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
