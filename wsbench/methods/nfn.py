"""Neural functionals (Zhou et al., NeurIPS 2023, "Permutation Equivariant Neural Functionals").

Linear equivariant layers with mean pooling (no attention), ReLU between layers, an invariant
mean-pooling head and an MLP. Two symmetry groups:
- `nfn_hnp`: hidden neurons permutable (the true symmetry; the same linear space as DWSNets' layers);
- `nfn_np`: every neuron permutable, inputs and outputs too (a larger group than the networks'
  symmetry, so far fewer parameters, but blind to reordering input pixels/channels).
Both reuse the DWSNet blocks (every linear equivariant map between the labelled tensors); NP
relabels the non-permutable input/output axes as permutable groups of their own. Conv kernel
entries are channels. Default sizes (hidden 64, 3 layers, head 64) are ours; the preset
`small_cnn_zoo` is the NFN repository's accuracy predictor (widths 16, 16, 5; head 2 x 1,000), the
preset `paper` its MNIST SIREN classifier (options below; see nfn_inputs.py).

Options of the NFN repository's SIREN classifiers, all off by default:
- fourier_features k, fourier_scale s: Gaussian Fourier features (k frequencies of scale s) of every
  entry before the first layer;
- io_bands b, io_max_freq f: sinusoidal codes of the network's input and output neurons as extra
  channels (the NP classifier's; with them NP tells input neurons apart);
- channel_dropout: `dropout` drops whole channels of weight tensors (the original's feature dropout);
- head_dropout: dropout after each ReLU of the head;
- head_pool "hnp": for nfn_np, pool as HNP does (input and output neurons kept as features), as the
  original's NP classifier; "symmetry" (default) pools every axis its symmetry permutes;
- terms, layer_init: the layers' scale. The defaults "sum", "nfn" are the NFN repository's (terms summed,
  each output's maps drawn from U(+-sqrt(1/fan-in)); see equivariant/layer.py); "mean", "dwsnets" is
  DWSNets' scale, the same maps, which under Adam learn far slower than the original's (version 1 of these
  methods: leaderboards/parity/nfn_hnp_siren_mnist_small.md measured both).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import METHODS
from ..weights import WeightSpace
from .equivariant.layer import DWSLayer, InvariantHead, relu_dropout
from .equivariant.layout import Axis, TensorLayout, features_from_ws, layouts_for_spec
from .nfn_inputs import FourierFeatures, NeuronCodes, channel_dropout
from .common import ChainEncoder, SpecArg, checked_specs


def np_layouts(layouts: list[TensorLayout]) -> list[TensorLayout]:
    """Give every non-permutable neuron axis a permutation group of its own (NP symmetry)."""
    out = []
    for t in layouts:
        axes = []
        for k, a in enumerate(t.axes):
            if a.group is None:  # the network's inputs (axis 1 of the first weight) or outputs (axis 0)
                name = "np_in" if (t.kind == "weight" and k == 1) else "np_out"
                axes.append(Axis(name, a.size))
            else:
                axes.append(a)
        out.append(replace(t, axes=tuple(axes)))
    return out


class NeuralFunctional(ChainEncoder):
    symmetry: ClassVar[str] = "hnp"
    invariant: ClassVar[bool] = True
    version: ClassVar[int] = 2  # 2: the NFN repository's layer scale by default (1: DWSNets' averaged terms and init)
    # channels: per-layer widths (overrides hidden_dim x n_layers; the NFN repository's accuracy predictor uses
    # [16, 16, 5]); head_layers: Linear layers of head_dim before the output layer (that predictor: 2 of 1,000)
    defaults: ClassVar[dict[str, Any]] = {"hidden_dim": 64, "n_layers": 3, "head_dim": 64, "head_layers": 1,
                                          "channels": None, "dropout": 0.0, "channel_dropout": False,
                                          "head_dropout": 0.0, "head_pool": "symmetry", "fourier_features": 0,
                                          "fourier_scale": 10.0, "io_bands": 0, "io_max_freq": 10.0, "terms": "sum",
                                          "layer_init": "nfn"}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"head_pool": ("symmetry", "hnp"), "terms": ("mean", "sum"),
                                                     "layer_init": ("dwsnets", "nfn")}
    tiny_config: ClassVar[dict[str, Any]] = {"hidden_dim": 16, "n_layers": 2, "head_dim": 16}

    def __init__(self, spec_or_specs: SpecArg, out_dim: int, **config: Any) -> None:
        super().__init__()
        (self.spec,) = checked_specs(type(self), spec_or_specs)
        self.config = c = self.parse_config(config)
        for key in ("hidden_dim", "n_layers", "head_dim", "head_layers"):
            if c[key] < 1:
                raise ConfigError(f"method {self.name!r}: option {key!r} must be >= 1, got {c[key]}")
        widths = self.layer_widths(c)
        self.layouts = layouts_for_spec(self.spec)
        inner = np_layouts(self.layouts) if self.symmetry == "np" else self.layouts
        self.fourier = FourierFeatures(c["fourier_features"], c["fourier_scale"]) if c["fourier_features"] else None
        self.codes = NeuronCodes(self.layouts, c["io_max_freq"], c["io_bands"]) if c["io_bands"] else None
        prev: int | list[int] = [t.channels * (self.fourier.factor if self.fourier else 1)
                                 + (self.codes.width if self.codes else 0) for t in inner]
        layers = []
        for width in widths:
            layers.append(DWSLayer(inner, prev, width, reduction="mean", set_layer="ds", terms=c["terms"],
                                   init=c["layer_init"]))
            prev = width
        self.layers = nn.ModuleList(layers)
        p = c["head_dropout"]
        self.head = nn.Sequential(InvariantHead(inner if c["head_pool"] == "symmetry" else self.layouts, widths[-1],
                                                c["head_dim"], reduction="mean", n_fc_layers=c["head_layers"], dropout=p),
                                  nn.ReLU(), *([nn.Dropout(p)] if p > 0 else []), nn.Linear(c["head_dim"], out_dim))

    def layer_widths(self, c: dict[str, Any]) -> list[int]:
        if c["channels"] is None:
            return [c["hidden_dim"]] * c["n_layers"]
        widths = c["channels"]
        if (not isinstance(widths, list) or not widths
                or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)):
            raise ConfigError(f"method {self.name!r}: option 'channels' must be a non-empty list of widths >= 1, "
                              f"got {widths!r}")
        return list(widths)

    def forward(self, ws: WeightSpace) -> Tensor:
        self.check_spec(ws)
        xs = features_from_ws(ws, self.layouts)
        if self.fourier is not None:
            xs = [self.fourier(x) for x in xs]
        if self.codes is not None:
            xs = self.codes(xs)
        for i, layer in enumerate(self.layers):
            xs = layer(xs if i == 0 else self.activate(xs))
        return self.head(self.activate(xs))

    def activate(self, xs: list[Tensor]) -> list[Tensor]:
        """ReLU, then dropout (of single entries, or of weight channels with channel_dropout)."""
        c = self.config
        if not c["channel_dropout"]:
            return relu_dropout(xs, c["dropout"], self.training)
        return channel_dropout(relu_dropout(xs, 0.0, False), self.layouts, c["dropout"], self.training)


@METHODS.register("nfn_hnp")
class NFNHNP(NeuralFunctional):
    description: ClassVar[str] = "neural functional, hidden-neuron permutation (HNP) equivariant layers (Zhou et al.)"
    symmetry: ClassVar[str] = "hnp"


@METHODS.register("nfn_np")
class NFNNP(NeuralFunctional):
    description: ClassVar[str] = "neural functional, all-neuron permutation (NP) equivariant layers (Zhou et al.)"
    symmetry: ClassVar[str] = "np"
    intended_invariances: ClassVar[frozenset[str]] = frozenset({"input_permutation"})
