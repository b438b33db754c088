"""The original neural-graph INR classifier (NG-GNN: PNA backbone), imported from a checkout of
github:mkofinas/neural-graphs (never copied); the checkout's path comes from WSBENCH_OFFICIAL_NEURAL_GRAPHS.

    WSBENCH_OFFICIAL_NEURAL_GRAPHS=/path/to/neural-graphs python scripts/encoder_parity.py --method neural_graph

The model is built from the checkout's classes with the values of its MNIST-INR run written out here
(experiments/inr_classification: configs/model/pna.yaml with the overrides of scripts/mnist_cls_pna.sh),
not through hydra. What the checkout imports and this environment lacks or moved:
- `hydra` is used only for `hydra.utils.instantiate` of the config dicts; when it is not installed, a stub
  with a plain instantiate (import `_target_`, call it with the other keys, keyword arguments winning) is
  put in sys.modules;
- `torch_geometric.utils.trim_to_layer` is a function in recent PyG (the class lives in
  `torch_geometric.utils._trim_to_layer`); a module of that name is put in sys.modules when the import fails;
- `rff` (random-fourier-features-pytorch) is the model's input encoding, so it is required, never stubbed.
And one speed patch: the checkout's `nn.gnn.to_pyg_batch` builds a PyG Batch from one Data per network, whose
backward costs O(batch^2) (30 s a step at batch 128 on 2 cores); `fast_pyg_batch` returns the same tensors in
the same order with whole-batch indexing (scripts/neural_graph_graphs.py checks that they agree).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable

import torch

from official_dwsnets import official_inputs
from official_model import Official, Tensors, checkout_modules

# the MNIST-INR SIREN's neurons per layer: 2 inputs, 32, 32, 1 output
LAYER_LAYOUT = [2, 32, 32, 1]

# configs/model/pna.yaml and scripts/mnist_cls_pna.sh (dropout 0.2, reverse-edge features on)
PNA_MNIST = {"d_hid": 32, "n_layers": 4, "aggregators": ["mean", "min", "max", "std"],
             "scalers": ["identity", "amplification"], "dropout": 0.2, "norm": "layernorm", "act": "silu",
             "rev_edge_features": True, "sin_emb_dim": 128, "inp_factor": 3.0}


def _instantiate(cfg: dict, **kwargs: Any) -> Any:
    """hydra.utils.instantiate for a flat config dict (the only use the checkout's model code makes)."""
    module, _, name = cfg["_target_"].rpartition(".")
    args = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return getattr(importlib.import_module(module), name)(**{**args, **kwargs})


def _shim_imports() -> None:
    try:
        import hydra  # noqa: F401
    except ImportError:
        hydra = types.ModuleType("hydra")
        hydra.utils = types.SimpleNamespace(instantiate=_instantiate)
        sys.modules["hydra"] = hydra
    try:
        importlib.import_module("torch_geometric.utils.trim_to_layer")
    except ImportError:
        from torch_geometric.utils._trim_to_layer import TrimToLayer
        sys.modules["torch_geometric.utils.trim_to_layer"] = types.SimpleNamespace(TrimToLayer=TrimToLayer)
    try:
        import rff  # noqa: F401
    except ImportError as e:
        raise SystemExit("official_neural_graphs: the original model needs `rff` "
                         "(pip install --no-deps random-fourier-features-pytorch)") from e


def fast_pyg_batch(node_features: torch.Tensor, edge_features: torch.Tensor,
                   edge_index: torch.Tensor) -> types.SimpleNamespace:
    """What `Batch.from_data_list` of the checkout's `to_pyg_batch` gives its caller, without the per-network loop:
    nodes [B*N, d], edges offset by N per network, edge_attr [B*E, d] read from the dense [B, N, N, d] features."""
    B, N = node_features.shape[:2]
    E = edge_index.shape[1]
    offsets = (torch.arange(B, device=edge_index.device) * N).view(1, B, 1)
    return types.SimpleNamespace(
        x=node_features.reshape(B * N, -1), edge_index=(edge_index.view(2, 1, E) + offsets).reshape(2, B * E),
        edge_attr=edge_features[:, edge_index[0], edge_index[1]].reshape(B * E, -1), num_graphs=B,
        batch=torch.arange(B, device=edge_index.device).repeat_interleave(N))


def pna_config(n_classes: int = 10, layout: list[int] | None = None) -> dict[str, Any]:
    """GNNForClassification's keyword arguments at the MNIST-INR NG-GNN settings (config dicts for
    its graph constructor and PNA backbone; no statistics: inputs come normalised per layer)."""
    c = PNA_MNIST
    h = c["d_hid"]
    return {
        "d_hid": h, "d_out": n_classes, "layer_layout": list(layout or LAYER_LAYOUT),
        "rev_edge_features": c["rev_edge_features"], "pooling_method": "cat", "pooling_layer_idx": "last",
        "graph_constructor": {
            "_target_": "nn.graph_constructor.GraphConstructor", "d_in": 1, "d_edge_in": 1, "zero_out_bias": False,
            "zero_out_weights": False, "sin_emb": True, "sin_emb_dim": c["sin_emb_dim"], "use_pos_embed": True,
            "input_layers": 1, "inp_factor": c["inp_factor"], "num_probe_features": 0, "inr_model": None,
            "stats": None},
        "gnn_backbone": {
            "_target_": "nn.gnn.PNA", "in_channels": h, "hidden_channels": h, "out_channels": h,
            "num_layers": c["n_layers"], "aggregators": list(c["aggregators"]), "scalers": list(c["scalers"]),
            "edge_dim": h, "dropout": c["dropout"], "norm": c["norm"], "act": c["act"], "deg": None,
            "update_edge_attr": True, "modulate_edges": True, "gating_edges": False, "final_edge_update": False},
    }


def checkout_module(path: str, name: str) -> types.ModuleType:
    """Module `name` of the checkout's top-level package `nn` (imports shimmed as the module docstring says)."""
    _shim_imports()
    return checkout_modules(path, name)[0]


def official_pna(path: str, n_classes: int = 10) -> torch.nn.Module:
    """The checkout's GNNForClassification (NG-GNN) at the MNIST-INR settings, with `fast_pyg_batch`."""
    gnn = checkout_module(path, "nn.gnn")
    gnn.to_pyg_batch = fast_pyg_batch
    return gnn.GNNForClassification(**pna_config(n_classes))


def layer_normaliser(train: Tensors) -> Callable[[Tensors], Tensors]:
    """One mean and std per tensor of the training INRs (torch.std's unbiased estimate), as the
    original's compute_mnist_statistics.py and the per-layer (w - mean) / std of its graph constructor."""
    mean = {k: t.mean() for k, t in train.items()}
    std = {k: t.std().clamp_min(1e-8) for k, t in train.items()}
    return lambda tensors: {k: ((t - mean[k]) / std[k]).float() for k, t in tensors.items()}


class ClippedAdamW(torch.optim.AdamW):
    """AdamW whose step first clips the gradients' global norm (the original trainer clips at 10)."""

    def __init__(self, params, max_norm: float = 10.0, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.max_norm = max_norm

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        return super().step(closure)


def official_optimizer(params) -> torch.optim.Optimizer:
    """configs/base.yaml: AdamW lr 1e-3, weight decay 5e-4, amsgrad; gradient norm clipped at 10.
    Its 1000-step linear warm-up is left out (a parity run is 300 steps)."""
    return ClippedAdamW(params, max_norm=10.0, lr=1e-3, weight_decay=5e-4, amsgrad=True)


OFFICIAL = {"neural_graph": Official(
    repo="mkofinas/neural-graphs", env="WSBENCH_OFFICIAL_NEURAL_GRAPHS",
    build=lambda path, spec, n_classes: official_pna(path, n_classes), inputs=official_inputs,
    optimizer=official_optimizer, our_preset="paper", normaliser=layer_normaliser, batch=128,
    settings="the original NG-GNN (PNA backbone) at its MNIST-INR settings (hidden 32, 4 layers, mean/min/max/std "
             "aggregation with identity and amplification scalers, FiLM edge modulation, edge updates, LayerNorm, "
             "SiLU, dropout 0.2, reverse-edge features, random Fourier input features (128, sigma 3), learned "
             "position embeddings, readout of the output neuron) against our `paper` preset; per-layer "
             "normalisation from the training INRs; AdamW lr 1e-3, amsgrad, weight decay 5e-4, gradient norm "
             "clipped at 10, batch 128, no warm-up (the original warms up over 1000 steps); no augmentation.")}
