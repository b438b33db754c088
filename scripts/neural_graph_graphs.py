#!/usr/bin/env python
"""Do we build the graph of a SIREN that the original neural-graph code builds? Same INRs, no training.

    WSBENCH_OFFICIAL_NEURAL_GRAPHS=/path/to/neural-graphs WSBENCH_DATA_DIR=../shared/data \
        python scripts/neural_graph_graphs.py [--zoo siren_mnist --variant small --n 16] \
        [--out leaderboards/parity/neural_graph_graphs]   # writes <out>.json and <out>.md

On `n` INRs of the zoo's test split: the checkout's graph (nn.graph_constructor.batch_to_graphs: biases as node
features and a dense [N, N] weight matrix, read along nn.gnn.nn_to_edge_index) against ours (build_template, and
the edge and node values NeuralGraph.forward reads); the two directions of message passing; the degrees its PNA
scalers normalise by; and official_neural_graphs.fast_pyg_batch against the checkout's to_pyg_batch.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import official_neural_graphs as ong  # noqa: E402

from wsbench.files import print_and_write_report  # noqa: E402
from wsbench.methods.graph import GraphTemplate, build_template  # noqa: E402
from wsbench.weights import NetworkSpec  # noqa: E402

Tensors = dict[str, torch.Tensor]


def our_values(t: GraphTemplate, spec: NetworkSpec, tensors: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    """Per network, the bias of every node (0 for inputs) [B, N] and the weight on every edge [B, E], in the
    template's order (as NeuralGraph.forward lays them out for a linear network)."""
    B = next(iter(tensors.values())).shape[0]
    bias = torch.zeros(B, t.n_nodes)
    for start, count, key in t.bias_slots:
        if key:
            bias[:, start:start + count] = tensors[key]
    edges = torch.cat([tensors[lay.weight].reshape(B, -1) for lay in spec.weight_layers()], dim=1)
    return bias, edges


def compare(path: str, spec: NetworkSpec, tensors: Tensors) -> dict:
    gc, gnn = ong.checkout_module(path, "nn.graph_constructor"), ong.checkout_module(path, "nn.gnn")
    to_pyg_batch = gnn.to_pyg_batch  # the checkout's, before official_pna patches it
    weights, biases = ong.official_inputs(tensors)
    node_f, edge_f = gc.batch_to_graphs(weights, biases)  # [B, N, 1], [B, N, N, 1]
    their_ei = gnn.nn_to_edge_index(ong.LAYER_LAYOUT, "cpu")
    t = build_template(spec)
    bias, ours = our_values(t, spec, tensors)
    N = t.n_nodes
    our_key, their_key = t.edge_index[0] * N + t.edge_index[1], their_ei[0] * N + their_ei[1]
    same_set = torch.equal(our_key.sort().values, their_key.sort().values)
    # theirs in our order: position of each of our (src, dst) pairs in their list
    perm = their_key.argsort()[torch.searchsorted(their_key.sort().values, our_key)]
    theirs_in_our_order = edge_f[:, their_ei[0], their_ei[1], 0][:, perm]
    dense_nonzero = int((edge_f[0, ..., 0] != 0).sum())
    # message passing in both directions: their edge list with rev_edge_features, ours in NeuralGraphLayer
    their_both = torch.cat([their_ei, their_ei.flip(0)], dim=1)
    our_both = torch.cat([t.edge_index, t.edge_index.flip(0)], dim=1)
    indeg = torch.bincount(our_both[1], minlength=N).float()
    model = ong.official_pna(path, 10)
    # DegreeScalerAggregation's normalisers (buffers avg_deg_lin, avg_deg_log in recent PyG)
    avg_deg = {k.removeprefix("avg_deg_"): v for k, v in model.gnn.convs[0].aggr_module.named_buffers()}
    # the speed patch: same Batch tensors as the checkout's per-network loop
    g = torch.Generator().manual_seed(0)
    xb, eb = torch.randn(3, N, 5, generator=g), torch.randn(3, N, N, 5, generator=g)
    slow, fast = to_pyg_batch(xb, eb, their_both), ong.fast_pyg_batch(xb, eb, their_both)
    return {
        "networks": int(node_f.shape[0]), "nodes": {"ours": N, "original": int(node_f.shape[1])},
        "edges": {"ours": int(t.edge_index.shape[1]), "original": int(their_ei.shape[1]),
                  "original_dense_nonzero": dense_nonzero},
        "same_edge_set": same_set, "same_edge_order": torch.equal(t.edge_index, their_ei),
        "edge_value_max_abs_diff": float((ours - theirs_in_our_order).abs().max()),
        "node_bias_max_abs_diff": float((bias - node_f[..., 0]).abs().max()),
        "same_two_direction_edge_list_up_to_order": torch.equal(
            (our_both[0] * N + our_both[1]).sort().values, (their_both[0] * N + their_both[1]).sort().values),
        "in_degree_two_directions": {"min": float(indeg.min()), "max": float(indeg.max()), "mean": float(indeg.mean())},
        "pna_avg_deg": {k: float(v) for k, v in avg_deg.items()},
        "pna_avg_deg_of_the_real_graph": {"lin": float(indeg.mean()), "log": float((indeg + 1).log().mean())},
        "fast_pyg_batch_equal": all(torch.equal(getattr(slow, k), getattr(fast, k))
                                    for k in ("x", "edge_index", "edge_attr", "batch")),
    }


def markdown(res: dict) -> str:
    r = res["result"]
    return "\n".join([
        f"# neural_graph: our graph of a SIREN against the original code's ({res['repo']})", "",
        f"`{res['command']}` ({res['date']}). {r['networks']} INRs of {res['zoo']} (test split), raw weights.", "",
        "| check | ours | original |", "|---|---:|---:|",
        f"| nodes | {r['nodes']['ours']} | {r['nodes']['original']} |",
        f"| edges (one direction) | {r['edges']['ours']} | {r['edges']['original']} "
        f"(nonzero entries of its dense matrix: {r['edges']['original_dense_nonzero']}) |",
        f"| two-direction in-degree, mean (PNA's `avg_deg` lin) | {r['in_degree_two_directions']['mean']:.2f} | "
        f"{r['pna_avg_deg']['lin']:.2f} |",
        f"| mean log(in-degree + 1) (PNA's `avg_deg` log) | {r['pna_avg_deg_of_the_real_graph']['log']:.3f} | "
        f"{r['pna_avg_deg']['log']:.3f} |", "",
        f"- Same edge set: {r['same_edge_set']}; same order: {r['same_edge_order']} (within a layer ours runs "
        "output-major as W[out, in] is stored, the original input-major); edge values in our order, max |diff| "
        f"{r['edge_value_max_abs_diff']:.1e}; node biases (0 on inputs), max |diff| {r['node_bias_max_abs_diff']:.1e}.",
        f"- Message passing in both directions over the same edge list (up to order): "
        f"{r['same_two_direction_edge_list_up_to_order']}. The original tells the directions apart by its edge "
        "features ([w, 0, w] forward, [0, w, w] backward, `rev_edge_features`), ours by a learned direction code "
        "added to the edge features.",
        "- The original PNA's degree scalers normalise by `avg_deg` from a histogram of forward in-degrees only "
        "(2 inputs: 0, layer 1: 2, ...), while it passes messages both ways: the row above compares it with the "
        "graph it runs on.",
        f"- `fast_pyg_batch` (our speed patch of its `to_pyg_batch`) gives the same Batch tensors: "
        f"{r['fast_pyg_batch_equal']}.", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default="siren_mnist")
    ap.add_argument("--variant", default="small")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    a = ap.parse_args(argv)
    path = os.environ.get("WSBENCH_OFFICIAL_NEURAL_GRAPHS")
    if not path:
        raise SystemExit("neural_graph_graphs: set WSBENCH_OFFICIAL_NEURAL_GRAPHS to a checkout of "
                         "github:mkofinas/neural-graphs")
    from wsbench.zoo_store import open_zoo

    zoo = open_zoo(a.zoo, variant=a.variant)
    ws = zoo.weights(zoo.split("test").head(a.n))
    res = {"repo": "mkofinas/neural-graphs", "zoo": f"{a.zoo} [{a.variant}]", "date": time.strftime("%Y-%m-%d"),
           "command": "python scripts/neural_graph_graphs.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "result": compare(path, ws.spec, {k: v.float() for k, v in ws.tensors.items()})}
    return print_and_write_report(a.out, res, markdown(res))


if __name__ == "__main__":
    raise SystemExit(main())
