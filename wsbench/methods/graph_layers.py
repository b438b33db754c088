"""Pieces of the neural graph encoder (wsbench/methods/graph.py) that follow the original NG-GNN's PNA
backbone (github:mkofinas/neural-graphs, nn/gnn.py and nn/graph_constructor.py), used by its options
`norm: graph`, `node_update: pna`, `edge_update: pna` and `reverse_edges: features`."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def degree(index: Tensor, n_nodes: int, dtype: torch.dtype | None = None) -> Tensor:
    """[n_nodes] how often each node appears in `index` (an edge_index row): torch_geometric.utils.degree's
    values, without importing torch_geometric (see graph_message_passing.py)."""
    return torch.bincount(index, minlength=n_nodes).to(dtype or torch.get_default_dtype())


class GraphLayerNorm(nn.Module):
    """LayerNorm over all nodes and features of each graph: one mean and one (biased) std per graph, then a
    learned scale and shift per channel, as PyG's LayerNorm in its default 'graph' mode. Unlike a per-node
    LayerNorm it keeps the nodes' relative scales. The original calls it without a batch vector, so its
    statistics are those of the whole batch of networks; here they are each network's own, which keeps the
    encoder's output for a network independent of the rest of the batch."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, n_graphs: int) -> Tensor:
        """x: [n_graphs * nodes, dim], the nodes of each graph contiguous and equally many per graph."""
        g = x.reshape(n_graphs, -1)
        g = g - g.mean(dim=1, keepdim=True)
        g = g / (g.std(dim=1, unbiased=False, keepdim=True) + self.eps)
        return g.view_as(x) * self.weight + self.bias


class PNAEdgeUpdate(nn.Module):
    """e <- W act(A e + S x_src + T x_dst): three linear maps (each with its own bias, each initialised for
    its own fan-in, unlike one linear map of [x_src, x_dst, e]), the activation, a linear map; no norm."""

    def __init__(self, dim: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.lin_e, self.lin_src, self.lin_dst = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.act = act()
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, edge_index: Tensor, e: Tensor) -> Tensor:
        src, dst = edge_index
        return self.out(self.act(self.lin_e(e) + self.lin_src(x)[src] + self.lin_dst(x)[dst]))


def pna_node_update(n_in: int, dim: int) -> nn.Sequential:
    """The PNA layer's node update: a linear map of [x, aggregates] and a second linear map, no activation
    between them (the norm and the activation follow in the layer, after every layer but the last)."""
    return nn.Sequential(nn.Linear(n_in, dim), nn.Linear(dim, dim))


def directed_edge_values(w: Tensor) -> Tensor:
    """[B, E, k] edge values -> [B, 2E, 3k]: the forward edges' [w, 0, w] then the reverse edges' [0, w, w]
    (the original's reverse-edge features: the value of the edge, of the edge against it, and their sum)."""
    zero = torch.zeros_like(w)
    return torch.cat([torch.cat([w, zero, w], dim=-1), torch.cat([zero, w, w], dim=-1)], dim=1)
