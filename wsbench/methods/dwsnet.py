"""DWSNet encoder (Navon et al., ICML 2023): DWS layers between weight spaces, an invariant head.

Model (official `DWSModelForClassification`): DWSLayer(C_in -> H), then n_hidden x [BN -> ReLU ->
Dropout -> DWSLayer(H -> H)] (the last with one attention head), then ReLU -> Dropout ->
InvariantHead. Defaults are the MNIST/FMNIST INR settings: H = 32, n_hidden = 4, max reduction,
SAB set layers with 8 heads, BatchNorm on, dropout 0. Inputs: MLPs/INRs and, with kernel entries as
channels (paper App. H), small CNNs. Differences from the official code: dropout is off at eval
(the official F.dropout ignores eval mode; irrelevant at p = 0) and the W_{L-2} -> W_{L-1} block
maps to every output column (see equivariant/blocks.py).
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from ..options import AT_LEAST_ONE, Range
from ..registry import METHODS
from ..weights import WeightSpace
from .common import ChainEncoder, SpecArg, checked_specs
from .equivariant.layer import DWSLayer, InvariantHead, TensorBatchNorm, relu_dropout
from .equivariant.layout import features_from_ws, layouts_for_spec

CHOICES = {"reduction": ("max", "mean", "sum"), "set_layer": ("sab", "ds")}


@METHODS.register("dwsnet")
class DWSNet(ChainEncoder):
    description: ClassVar[str] = "Deep Weight Space Network: equivariant layers between weight spaces (Navon et al. 2023)"
    invariant: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"hidden_dim": 32, "n_hidden": 4, "reduction": "max", "set_layer": "sab",
                                          "num_heads": 8, "bn": True, "dropout": 0.0, "init_scale": 1.0,
                                          "n_out_fc": 1}
    tiny_config: ClassVar[dict[str, Any]] = {"hidden_dim": 4, "n_hidden": 1, "num_heads": 2}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = CHOICES
    ranges: ClassVar[dict[str, Range]] = {**dict.fromkeys(("hidden_dim", "num_heads", "n_out_fc"), AT_LEAST_ONE),
                                          "dropout": Range(0, 1, hi_open=True)}

    def __init__(self, spec_or_specs: SpecArg, out_dim: int, **config: Any) -> None:
        super().__init__()
        (self.spec,) = checked_specs(type(self), spec_or_specs)
        self.config = c = self.parse_config(config)
        self.layouts = layouts_for_spec(self.spec)
        H, n_hidden = c["hidden_dim"], c["n_hidden"]
        opts = dict(reduction=c["reduction"], set_layer=c["set_layer"], init_scale=c["init_scale"])
        layers = [DWSLayer(self.layouts, [t.channels for t in self.layouts], H,
                           num_heads=c["num_heads"] if n_hidden > 0 else 1, **opts)]
        for i in range(n_hidden):
            layers.append(DWSLayer(self.layouts, H, H, num_heads=c["num_heads"] if i < n_hidden - 1 else 1, **opts))
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(TensorBatchNorm(len(self.layouts), H) for _ in range(n_hidden)) if c["bn"] else None
        self.head = InvariantHead(self.layouts, H, out_dim, reduction=c["reduction"], n_fc_layers=c["n_out_fc"])

    def forward(self, ws: WeightSpace) -> Tensor:
        self.check_spec(ws)
        p = self.config["dropout"]
        xs = self.layers[0](features_from_ws(ws, self.layouts))
        for i, layer in enumerate(self.layers[1:]):
            if self.norms is not None:
                xs = self.norms[i](xs)
            xs = layer(relu_dropout(xs, p, self.training))
        return self.head(relu_dropout(xs, p, self.training))
