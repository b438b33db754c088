"""The neural graph encoder's message-passing layer (torch-geometric's MessagePassing).

Apart from wsbench/methods/graph.py, which imports it when an encoder is built: importing torch_geometric
takes about 3 s on this 2-core machine (it loads torch._dynamo), which every `run_bench.py` process, whatever
its method, would otherwise pay when the built-in methods register.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ..errors import ConfigError
from .graph_layers import GraphLayerNorm, PNAEdgeUpdate, degree, pna_node_update


class NeuralGraphLayer(MessagePassing):
    """Node update from aggregates (mean and max by default) of messages along both edge directions;
    then edge update.

    message "mlp": MLP([x_i, x_j, e]); "film": scale(e) * Linear([x_i, x_j]) + shift(e). scalers: the
    aggregates once per scaler ("amplification": times log(deg + 1) / log_deg_mean, deg the node's degree
    in the graph the layer runs on). residual: x <- norm(x + update) (else norm(update)), edges alike.
    node_update, edge_update, norm, reverse_edges: as the encoder's options of those names (module docstring);
    `last` marks the last layer, after which "pna" updates apply no norm or activation and no edge update."""

    def __init__(self, dim: int, aggregators: tuple[str, ...] = ("mean", "max"),
                 act: type[nn.Module] = nn.ReLU, message: str = "mlp", scalers: tuple[str, ...] = ("identity",),
                 log_deg_mean: float = 1.0, residual: bool = True, node_update: str = "mlp",
                 edge_update: str = "mlp", norm: str = "node", reverse_edges: str = "code", last: bool = False) -> None:
        super().__init__(aggr=list(aggregators))
        n_in = (1 + len(aggregators) * len(scalers)) * dim
        self.film = message == "film"
        if self.film:
            self.film_edge = nn.Linear(dim, 2 * dim)  # edge features -> (scale, shift)
            self.message_lin = nn.Linear(2 * dim, dim)
        else:
            self.message_mlp = nn.Sequential(nn.Linear(3 * dim, dim), act(), nn.Linear(dim, dim))
        self.pna_nodes, self.last = node_update == "pna", last
        self.node_mlp = pna_node_update(n_in, dim) if self.pna_nodes else \
            nn.Sequential(nn.Linear(n_in, dim), act(), nn.Linear(dim, dim))
        # edge_update "pna": no edge norm, and no edge update at all after the last layer
        self.edge_mlp: nn.Module | None = (None if last else PNAEdgeUpdate(dim, act)) if edge_update == "pna" else \
            nn.Sequential(nn.Linear(3 * dim, dim), act(), nn.Linear(dim, dim))
        # the PNA backbone has no norm after its last layer
        self.node_norm: nn.Module | None = None if self.pna_nodes and last else \
            GraphLayerNorm(dim) if norm == "graph" else nn.LayerNorm(dim)
        self.edge_norm = nn.LayerNorm(dim) if edge_update == "mlp" else None
        self.act = act() if self.pna_nodes else None
        # reverse_edges "features": the edges come in both directions, each with its own features
        self.direction = nn.Parameter(torch.randn(2, dim) * 0.02) if reverse_edges == "code" else None
        self.scalers, self.residual = tuple(scalers), residual
        if "amplification" in self.scalers:
            if not log_deg_mean > 0:
                raise ConfigError(f"amplification scaler: the mean log degree must be > 0, got {log_deg_mean}")
            self.register_buffer("log_deg_mean", torch.tensor(float(log_deg_mean)))

    def scale(self, agg: Tensor, index: Tensor) -> Tensor:
        """The aggregates once per scaler, concatenated (PNA's degree scalers)."""
        if self.scalers == ("identity",):
            return agg
        deg = degree(index, agg.shape[0], dtype=agg.dtype).unsqueeze(1)
        return torch.cat([agg if s == "identity" else agg * (torch.log1p(deg) / self.log_deg_mean)
                          for s in self.scalers], dim=1)

    def forward(self, x: Tensor, edge_index: Tensor, e: Tensor, n_graphs: int = 1) -> tuple[Tensor, Tensor]:
        """x [n_graphs * N, dim]; edge_index and e: the edges (with reverse_edges "features" both directions,
        each its own row of e; else the forward edges, the reverse ones added here with the direction codes)."""
        if self.direction is not None:
            both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
            e2 = torch.cat([e + self.direction[0], e + self.direction[1]], dim=0)
        else:
            both, e2 = edge_index, e
        agg = self.scale(self.propagate(both, x=x, e=e2), both[1])
        x = self.skip(x, self.node_mlp(torch.cat([x, agg], dim=1)))
        if not self.pna_nodes:
            x = self.normed(x, n_graphs)
        elif not self.last:  # the PNA backbone: norm, then activation, after every layer but the last
            x = self.act(self.normed(x, n_graphs))
        if self.edge_mlp is None:
            return x, e
        update = self.edge_mlp(x, edge_index, e) if isinstance(self.edge_mlp, PNAEdgeUpdate) else \
            self.edge_mlp(torch.cat([x[edge_index[0]], x[edge_index[1]], e], dim=1))
        e = self.skip(e, update)
        return x, (self.edge_norm(e) if self.edge_norm is not None else e)

    def normed(self, x: Tensor, n_graphs: int) -> Tensor:
        return self.node_norm(x, n_graphs) if isinstance(self.node_norm, GraphLayerNorm) else self.node_norm(x)

    def skip(self, old: Tensor, update: Tensor) -> Tensor:
        return old + update if self.residual else update

    def message(self, x_i: Tensor, x_j: Tensor, e: Tensor) -> Tensor:
        if self.film:
            scale, shift = self.film_edge(e).chunk(2, dim=1)
            return scale * self.message_lin(torch.cat([x_i, x_j], dim=1)) + shift
        return self.message_mlp(torch.cat([x_i, x_j, e], dim=1))
