"""Neural graph encoder (after Kofinas et al., ICLR 2024, "Graph Neural Networks for Learning
Equivariant Representations of Neural Networks"), built with torch-geometric.

The input network is a graph: one node per neuron (input pixels/channels, hidden units, outputs),
one directed edge per weight (a linear weight is a 1-vector, a conv kernel its k x k entries,
zero-padded to `max_kernel`). Node features: the neuron's bias (0 for inputs), a sinusoidal
encoding of its layer, and, for neurons that are not permutable (inputs, outputs), a learned
embedding of their position. Message passing layers update nodes (mean and max of messages in both
edge directions) and edges; the readout pools nodes and edges per graph. Since hidden neurons carry
no identity, the encoder is exactly invariant to neuron permutations, and it reads any feed-forward
chain of linear/conv layers (architecture-agnostic: depth and widths may differ).

Options that follow the original code's NG-GNN (github:mkofinas/neural-graphs, PNA backbone), off by
default: `input_encoding: fourier` (random Fourier features of each weight and bias before the linear
embedding, as its GaussianEncoding), `aggregators` (it aggregates mean, min, max and std), `activation:
silu`, `dropout` (on node features after every layer but the last), `readout: output` (the output
neurons' features concatenated, its `cat` pooling of the last layer) and `head_layers` (3 there).
From its PNA layer (nn/gnn.py: PNAConv with modulate_edges, PyG's DegreeScalerAggregation; BasicGNN):
`message: film` (message = scale(e) * Linear([x_i, x_j]) + shift(e), scale and shift one linear map of the
edge features), `scalers: [identity, amplification]` (the aggregates again, times log(deg + 1) / delta, deg
the node's degree in the graph the layer runs on: both edge directions) and `residual: false` (its layers
replace node and edge features, no skip connections). delta is the mean of log(deg + 1) over the nodes of
the training graphs (the specs the encoder is built with); `scaler_degree: both` counts both directions,
as the layers aggregate, `forward` the forward in-degree only (inputs 0), which is what the original's
GNNForClassification puts in its degree histogram although, with rev_edge_features, its layers aggregate
over both directions: its amplification then scales every node's aggregate up (by 1.56 to 1.58 on the
siren 2-32-32-1, where `both` gives 0.99 to 1.005).
The rest of its layer structure (pieces in graph_layers.py): `node_update: pna` (two linear maps of [x,
aggregates], then the norm and the activation, neither after the last layer; default `mlp`: an MLP, then
the norm), `norm: graph` (LayerNorm over all nodes and features of each network, one mean and std per
network, as PyG's graph-mode LayerNorm, which the original applies to the whole batch; default `node`: over
each node's features), `edge_update: pna` (act(A e + S x_src + T x_dst), then a linear map, no norm, and no
edge update after the last layer; default `mlp`: MLP([x_src, x_dst, e]), then LayerNorm) and
`reverse_edges: features` (each weight is two edges with features of their own, the forward one embedded
from [w, 0, w], the reverse one from [0, w, w]; default `code`: one feature per weight, the two directions
told apart by learned codes added in every layer). Without them the paper preset's loss stayed at chance
where the original's fell (leaderboards/parity/neural_graph_siren_mnist_small.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError, NotApplicableError
from ..registry import METHODS
from ..weights import NetworkSpec, WeightSpace
from .base import Encoder
from ..options import AT_LEAST_ONE, Range
from .common import SpecArg, checked_specs, sinusoidal
from .graph_layers import degree, directed_edge_values

AGGREGATORS = ("mean", "max", "min", "std", "sum")
SCALERS = ("identity", "amplification")
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}


@dataclass
class GraphTemplate:
    """The graph of one architecture (the same for every network of the spec)."""

    n_nodes: int
    edge_index: Tensor  # [2, E] source (layer input neuron) -> target (layer output neuron)
    node_layer: Tensor  # [N] boundary index (0 = network input)
    node_fixed: Tensor  # [N] 1 + position for non-permutable neurons, 0 for permutable ones
    edge_layer: Tensor  # [E] weight-layer index
    edge_kind: Tensor  # [E] 0 linear, 1 conv
    bias_slots: list[tuple[int, int, str | None]]  # (first node, count, bias key) per boundary >= 1

    @property
    def n_outputs(self) -> int:
        """Neurons of the last boundary (the network's outputs): the last nodes of the graph."""
        return self.bias_slots[-1][1]

    def on(self, device: torch.device, dim: int) -> dict[str, Tensor]:
        """Device tensors of the template, with the sinusoidal layer encodings precomputed."""
        return {"edge_index": self.edge_index.to(device), "node_fixed": self.node_fixed.to(device),
                "edge_kind": self.edge_kind.to(device), "node_layer_pe": sinusoidal(self.node_layer, dim).to(device),
                "edge_layer_pe": sinusoidal(self.edge_layer, dim).to(device)}


def graph_problem(spec: NetworkSpec) -> str:
    if not spec.is_chain():
        return "the neural graph reads plain feed-forward chains (no residual or norm layers)"
    if not spec.weight_layers():
        return "the architecture has no linear or conv layers"
    owned = {x for lay in spec.weight_layers() for x in (lay.weight, lay.bias) if x}
    if any(k not in owned for k in spec.keys):
        return "parameters outside linear/conv layers"
    return ""


def build_template(spec: NetworkSpec) -> GraphTemplate:
    layers = spec.weight_layers()
    sizes = [spec.param(layers[0].weight).shape[1]] + [spec.param(lay.weight).shape[0] for lay in layers]
    groups = [layers[0].in_group] + [lay.out_group for lay in layers]
    starts = [sum(sizes[:b]) for b in range(len(sizes))]
    node_layer = torch.cat([torch.full((n,), b) for b, n in enumerate(sizes)])
    node_fixed = torch.cat([torch.zeros(n, dtype=torch.long) if g is not None else torch.arange(1, n + 1)
                            for n, g in zip(sizes, groups)])
    edges, e_layer, e_kind = [], [], []
    for lidx, lay in enumerate(layers):
        n_out, n_in = sizes[lidx + 1], sizes[lidx]
        o, i = torch.meshgrid(torch.arange(n_out), torch.arange(n_in), indexing="ij")  # row-major like W[o, i]
        edges.append(torch.stack([starts[lidx] + i.reshape(-1), starts[lidx + 1] + o.reshape(-1)]))
        e_layer.append(torch.full((n_out * n_in,), lidx))
        e_kind.append(torch.full((n_out * n_in,), int(lay.kind == "conv")))
    slots = [(starts[b + 1], sizes[b + 1], lay.bias) for b, lay in enumerate(layers)]
    return GraphTemplate(sum(sizes), torch.cat(edges, 1), node_layer, node_fixed, torch.cat(e_layer),
                         torch.cat(e_kind), slots)


class FourierFeatures(nn.Module):
    """[..., d] -> [..., 2 * n_freq]: cos and sin of 2 pi x B^T, B a fixed Gaussian [n_freq, d] of std `sigma`
    (random Fourier features, Tancik et al. 2020; the original neural-graph code's input encoding)."""

    def __init__(self, d_in: int, n_freq: int, sigma: float) -> None:
        super().__init__()
        self.register_buffer("freq", torch.randn(n_freq, d_in) * sigma)

    def forward(self, x: Tensor) -> Tensor:
        proj = 2 * math.pi * x @ self.freq.T
        return torch.cat([proj.cos(), proj.sin()], dim=-1)


def input_embedding(d_in: int, dim: int, encoding: str, n_freq: int, sigma: float) -> nn.Module:
    """The embedding of raw values (a weight's kernel entries, a bias) into `dim` features."""
    if encoding == "fourier":
        return nn.Sequential(FourierFeatures(d_in, n_freq, sigma), nn.Linear(2 * n_freq, dim))
    return nn.Linear(d_in, dim)


def node_degrees(t: GraphTemplate, direction: str = "both") -> Tensor:
    """[N] degree of each node of the template: edges into it along both directions (in + out, the graph
    the layers aggregate over), or along the forward direction only (the in-degree; 0 for inputs)."""
    deg = degree(t.edge_index[1], t.n_nodes)
    return deg + degree(t.edge_index[0], t.n_nodes) if direction == "both" else deg


def mean_log_degree(templates: list[GraphTemplate], direction: str = "both") -> float:
    """delta of the amplification scaler: mean of log(deg + 1) over all nodes of the (training) graphs."""
    return float(torch.cat([torch.log1p(node_degrees(t, direction)) for t in templates]).mean())


@METHODS.register("neural_graph")
class NeuralGraph(Encoder):
    description: ClassVar[str] = "message-passing GNN on the network-as-graph (neurons = nodes, weights = edges)"
    architecture_agnostic: ClassVar[bool] = True
    invariant: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "hidden_dim": 64, "n_layers": 4, "max_kernel": 9, "max_fixed": 1024,
        "aggregators": ["mean", "max"], "activation": "relu", "dropout": 0.0, "head_layers": 2,
        "input_encoding": "linear", "fourier_dim": 128, "fourier_sigma": 3.0,  # fourier: random Fourier features
        "readout": "pool",  # pool: mean and max of nodes, mean of edges | output: the output neurons, concatenated
        "message": "mlp",  # mlp: MLP([x_i, x_j, e]) | film: scale(e) * Linear([x_i, x_j]) + shift(e)
        "scalers": ["identity"],  # + "amplification": aggregates also times log(deg + 1) / delta (PNA)
        "scaler_degree": "both",  # delta from degrees along both directions | forward: in-degrees only
        "residual": True,  # skip connections around the node and edge updates
        "node_update": "mlp",  # mlp: MLP, then norm | pna: two linear maps, norm, activation (none after the last)
        "edge_update": "mlp",  # mlp: MLP([x_src, x_dst, e]), LayerNorm | pna: no norm, none after the last layer
        "norm": "node",  # LayerNorm of the node update over each node's features | graph: over each network's
        "reverse_edges": "code",  # code: learned direction codes | features: [w, 0, w] / [0, w, w] edge inputs
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"activation": tuple(ACTIVATIONS), "readout": ("pool", "output"),
                                                     "input_encoding": ("linear", "fourier"),
                                                     "message": ("mlp", "film"),
                                                     "scaler_degree": ("both", "forward"),
                                                     "node_update": ("mlp", "pna"), "edge_update": ("mlp", "pna"),
                                                     "norm": ("node", "graph"),
                                                     "reverse_edges": ("code", "features")}
    ranges: ClassVar[dict[str, Range]] = {"dropout": Range(0, 1, hi_open=True), "head_layers": AT_LEAST_ONE,
                                          "fourier_dim": AT_LEAST_ONE}
    tiny_config: ClassVar[dict[str, Any]] = {"hidden_dim": 8, "n_layers": 2}

    def __init__(self, spec_or_specs: SpecArg, out_dim: int, **config: Any) -> None:
        super().__init__()
        specs = checked_specs(type(self), spec_or_specs)
        self.config = c = self.parse_config(config)
        h = c["hidden_dim"]
        for key in ("hidden_dim", "max_kernel", "max_fixed"):
            if c[key] < 1:
                raise ConfigError(f"method {self.name!r}: option {key!r} must be >= 1, got {c[key]}")
        aggr, scalers = (self.distinct_names(key, allowed) for key, allowed in
                         (("aggregators", AGGREGATORS), ("scalers", SCALERS)))
        act = ACTIVATIONS[c["activation"]]
        self._templates: dict[NetworkSpec, GraphTemplate] = {}
        self._on_device: dict[tuple[NetworkSpec, torch.device], dict[str, Tensor]] = {}
        self.n_outputs = 0  # output neurons of the networks read: 0 until the specs' templates are built below
        for spec in specs:  # graphs first (no random numbers drawn), for the scalers' delta
            self.template(spec)
        from .graph_message_passing import NeuralGraphLayer  # imports torch_geometric: see there

        # delta of the amplification scaler: the training graphs are the specs the encoder is built with
        delta = mean_log_degree([self._templates[s] for s in dict.fromkeys(specs)], c["scaler_degree"]) \
            if "amplification" in scalers else 1.0
        enc = (c["input_encoding"], c["fourier_dim"], c["fourier_sigma"])
        self.node_in = input_embedding(1, h, *enc)
        self.edge_in = input_embedding(c["max_kernel"] * (3 if c["reverse_edges"] == "features" else 1), h, *enc)
        self.fixed_embedding = nn.Embedding(c["max_fixed"] + 1, h, padding_idx=0)
        self.kind_embedding = nn.Embedding(2, h)
        self.layers = nn.ModuleList(NeuralGraphLayer(h, aggr, act, c["message"], scalers, delta, c["residual"],
                                                     c["node_update"], c["edge_update"], c["norm"],
                                                     c["reverse_edges"], last=i == c["n_layers"] - 1)
                                    for i in range(c["n_layers"]))
        n_outs = sorted({self._templates[s].n_outputs for s in specs})
        if c["readout"] == "output" and len(n_outs) > 1:
            raise NotApplicableError(f"method 'neural_graph' with readout 'output' reads networks of one output "
                                     f"size; got {n_outs}")
        self.n_outputs = n_outs[0]
        dims = [self.n_outputs * h if c["readout"] == "output" else 3 * h] + [h] * (c["head_layers"] - 1)
        head: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            head += [nn.Linear(a, b), nn.ReLU()]
        self.head = nn.Sequential(*head, nn.Linear(dims[-1], out_dim))

    def distinct_names(self, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        """Option `key`: a non-empty list of distinct names from `allowed`."""
        names = tuple(self.config[key])
        if not names or any(n not in allowed for n in names) or len(set(names)) < len(names):
            raise ConfigError(f"method {self.name!r}: option {key!r} must be distinct names from "
                              f"{list(allowed)}, got {self.config[key]!r}")
        return names

    @classmethod
    def supports(cls, spec: NetworkSpec) -> tuple[bool, str]:
        why = graph_problem(spec)
        return (not why, why)

    def template(self, spec: NetworkSpec) -> GraphTemplate:
        if spec not in self._templates:
            ok, why = self.supports(spec)
            if not ok:
                raise NotApplicableError(f"method 'neural_graph' cannot read {spec.describe()}: {why}")
            t = build_template(spec)
            kmax = max(math.prod(spec.param(lay.weight).shape[2:]) for lay in spec.weight_layers())
            if kmax > self.config["max_kernel"] or int(t.node_fixed.max()) > self.config["max_fixed"]:
                raise NotApplicableError(f"method 'neural_graph': {spec.describe()} needs max_kernel >= {kmax} and "
                                         f"max_fixed >= {int(t.node_fixed.max())}")
            if self.config["readout"] == "output" and self.n_outputs and t.n_outputs != self.n_outputs:
                raise NotApplicableError(f"method 'neural_graph' with readout 'output' reads networks of "
                                         f"{self.n_outputs} outputs; {spec.describe()} has {t.n_outputs}")
            self._templates[spec] = t
        return self._templates[spec]

    def forward(self, ws: WeightSpace) -> Tensor:
        t, B, dev, h = self.template(ws.spec), len(ws), ws.device, self.config["hidden_dim"]
        N, E = t.n_nodes, t.edge_index.shape[1]
        if (ws.spec, dev) not in self._on_device:
            self._on_device[(ws.spec, dev)] = t.on(dev, h)
        d = self._on_device[(ws.spec, dev)]
        # node features: bias value + layer encoding + position embedding of fixed neurons
        bias = torch.zeros(B, N, device=dev)
        for start, count, key in t.bias_slots:
            if key:
                bias[:, start:start + count] = ws.tensors[key]
        node_static = d["node_layer_pe"] + self.fixed_embedding(d["node_fixed"])
        x = (self.node_in(bias.unsqueeze(-1)) + node_static).reshape(B * N, h)
        # edge features: kernels (1 entry for linear layers), zero-padded
        k = self.config["max_kernel"]
        parts = []
        for lay in ws.spec.weight_layers():
            w = ws.tensors[lay.weight]
            w = w.reshape(B, w.shape[1] * w.shape[2], -1)
            parts.append(nn.functional.pad(w, (0, k - w.shape[-1])))
        edge_static = d["edge_layer_pe"] + self.kind_embedding(d["edge_kind"])
        raw, template_edges = torch.cat(parts, dim=1), d["edge_index"]
        if self.config["reverse_edges"] == "features":  # both directions, each an edge of its own
            raw, edge_static = directed_edge_values(raw), edge_static.repeat(2, 1)
            template_edges = torch.cat([template_edges, template_edges.flip(0)], dim=1)
            E = 2 * E
        e = (self.edge_in(raw) + edge_static).reshape(B * E, h)
        offsets = (torch.arange(B, device=dev) * N).view(1, B, 1)
        edge_index = (template_edges.view(2, 1, E) + offsets).reshape(2, B * E)
        for i, layer in enumerate(self.layers):
            x, e = layer(x, edge_index, e, B)
            if i < len(self.layers) - 1 and self.config["dropout"] > 0:
                x = nn.functional.dropout(x, self.config["dropout"], self.training)
        if self.config["readout"] == "output":  # the last n_outputs nodes of each graph, in order
            return self.head(x.view(B, N, h)[:, N - self.n_outputs:].reshape(B, -1))
        from torch_geometric.nn import global_max_pool, global_mean_pool
        from torch_geometric.utils import scatter

        node_batch = torch.arange(B, device=dev).repeat_interleave(N)
        edge_batch = torch.arange(B, device=dev).repeat_interleave(E)
        pooled = torch.cat([global_mean_pool(x, node_batch, B), global_max_pool(x, node_batch, B),
                            scatter(e, edge_batch, dim=0, dim_size=B, reduce="mean")], dim=1)
        return self.head(pooled)
