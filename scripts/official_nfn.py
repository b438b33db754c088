"""The original NFN INR classifiers, imported from a checkout of github:AllanYangZhou/nfn (never copied).

Used by scripts/encoder_parity.py (learning curves) and scripts/nfn_layer_parity.py (layer spans); the
checkout's path comes from WSBENCH_OFFICIAL_NFN.

The checkout classifies SIRENs with experiments/models.InvariantNFN, configured by
experiments/classify_siren_configs/nfnet/*.yaml; its MNIST configs are `inv_ff_mnist` (HNP) and
`inv_ff_io_mnist` (NP). Both: Gaussian Fourier features of every weight and bias (128 frequencies,
scale 3, so 256 channels), three equivariant layers of 512 channels each followed by ReLU and channel
dropout 0.1, HNP pooling (the NP one too: the head's default pool), an MLP head 1000-1000-10 with
dropout 0.1; no weight normalisation (normalize: false). The NP one adds the sinusoidal codes of the
input and output neurons (3 bands, max frequency 3, no layer codes) after the Fourier features. Its
trainer (experiments/classify_siren.py, main.yaml, opt/adam.yaml): Adam lr 1e-4, batch 32, a linear
warmup over 10,000 steps (left out here: a parity run of a few hundred steps would train at lr ~0).
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from official_model import SIREN_SHAPES, Official, checkout_import

Tensors = dict[str, torch.Tensor]

# nfnet/inv_ff.yaml hchannels: 512 x 3. WSBENCH_NFN_WIDTH=64 builds both models at 64 channels (our preset
# paper_narrow) for CPU parity runs: at 512 one step of batch 32 takes ~10 s on 2 CPU cores
WIDTH = int(os.environ.get("WSBENCH_NFN_WIDTH", "512"))
if WIDTH not in (512, 64):
    raise SystemExit(f"official_nfn: WSBENCH_NFN_WIDTH must be 512 (the paper's) or 64 (preset paper_narrow), got {WIDTH}")
HIDDEN = (WIDTH,) * 3
PRESET = "paper" if WIDTH == 512 else "paper_narrow"
FOURIER = {"mapping_size": 128, "scale": 3}  # inp_enc_cls/gaussian.yaml, scale from inv_ff*_mnist.yaml
IO_CODES = {"max_freq": 3, "num_bands": 3, "enc_layers": False}  # pos_enc_cls/sin.yaml + inv_ff_io_mnist.yaml
DROPOUT = 0.1  # feature_dropout and head_cls.dropout of inv_ff*_mnist.yaml
HEAD = 1000  # head_cls/mlp.yaml h_size (MlpHead default)


def official_spec(path: str, shapes: tuple[tuple[int, int], ...] = SIREN_SHAPES):
    """The checkout's NetworkSpec of an MLP of `shapes` ((in, out) per layer), every dimension set as its
    trainer does (network_spec_from_wsfeat(..., set_all_dims=True))."""
    ArraySpec, NetworkSpec = checkout_import(path, "nfn.common.data.ArraySpec", "nfn.common.NetworkSpec")
    return NetworkSpec([ArraySpec((o, i)) for i, o in shapes], [ArraySpec((o,)) for _, o in shapes])


def official_classifier(path: str, mode: str, n_classes: int = 10,
                        shapes: tuple[tuple[int, int], ...] = SIREN_SHAPES) -> torch.nn.Module:
    """InvariantNFN at the checkout's MNIST settings (mode "HNP": inv_ff_mnist, "NP": inv_ff_io_mnist)."""
    # experiments.models imports perceiver_pytorch from the checkout's experiments/perceiver-pytorch
    InvariantNFN, MlpHead, Fourier, IOCodes = checkout_import(
        path, "experiments.models.InvariantNFN", "experiments.models.MlpHead",
        "nfn.layers.GaussianFourierFeatureTransform", "nfn.layers.IOSinusoidalEncoding",
        extra_paths=[f"{path}/experiments/perceiver-pytorch"])

    def head(spec, channels, append_stats):
        return MlpHead(spec, channels, append_stats, num_out=n_classes, h_size=HEAD, dropout=DROPOUT)

    def fourier(spec, channels):
        return Fourier(spec, channels, **FOURIER)

    def io_codes(spec):
        return IOCodes(spec, **IO_CODES)

    return InvariantNFN(official_spec(path, shapes), hchannels=list(HIDDEN), head_cls=head, mode=mode,
                        feature_dropout=DROPOUT, normalize=False, inp_enc_cls=fourier,
                        pos_enc_cls=io_codes if mode == "NP" else None)


def official_features(path: str) -> Callable[[Tensors], object]:
    """official_inputs wrapped in the checkout's WeightSpaceFeatures."""
    (WeightSpaceFeatures,) = checkout_import(path, "nfn.common.WeightSpaceFeatures")
    return lambda tensors: WeightSpaceFeatures(*official_inputs(tensors))


def official_inputs(tensors: Tensors, n_layers: int = len(SIREN_SHAPES)) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Our MLP tensors (layers.i.weight [B, out, in], layers.i.bias [B, out]) in the checkout's layout
    (its SirenDataset + state_dict_to_tensors + a channel axis): weights [B, 1, out, in], biases [B, 1, out]."""
    return ([tensors[f"layers.{i}.weight"].unsqueeze(1) for i in range(n_layers)],
            [tensors[f"layers.{i}.bias"].unsqueeze(1) for i in range(n_layers)])


def _adam(params) -> torch.optim.Optimizer:
    """classify_siren_configs/opt/adam.yaml: Adam, lr 1e-4 (no weight decay)."""
    return torch.optim.Adam(params, lr=1e-4)


def _no_normalisation(train: Tensors) -> Callable[[Tensors], Tensors]:
    """The classifier's normalize: false: raw weights."""
    return lambda tensors: {k: t.float() for k, t in tensors.items()}


_WSF: dict[str, Callable[[Tensors], object]] = {}


def _inputs(tensors: Tensors):
    path = os.environ["WSBENCH_OFFICIAL_NFN"]
    if path not in _WSF:
        _WSF[path] = official_features(path)
    return _WSF[path](tensors)


_COMMON = ("Gaussian Fourier features of every entry (128 frequencies, scale 3), "
           + (f"3 layers of {WIDTH} channels (the original's 512 narrowed for CPU), " if WIDTH != 512 else "3 layers of 512 channels, ")
           + "ReLU, channel "
           "dropout 0.1, HNP pooling, MLP head 1000-1000-classes with dropout 0.1; no weight normalisation; Adam lr 1e-4, "
           "batch 32, without the original's 10,000-step linear warmup; no augmentation.")

OFFICIAL = {
    "nfn_hnp": Official(
        repo="AllanYangZhou/nfn", env="WSBENCH_OFFICIAL_NFN",
        build=lambda path, spec, n_classes: official_classifier(path, "HNP", n_classes), inputs=_inputs,
        optimizer=_adam, our_preset=PRESET, normaliser=_no_normalisation, batch=32,
        command_env=("WSBENCH_NFN_WIDTH",),
        settings="both at the original's MNIST SIREN classifier (nfnet=inv_ff_mnist): HNP layers; " + _COMMON),
    "nfn_np": Official(
        repo="AllanYangZhou/nfn", env="WSBENCH_OFFICIAL_NFN",
        build=lambda path, spec, n_classes: official_classifier(path, "NP", n_classes), inputs=_inputs,
        optimizer=_adam, our_preset=PRESET, normaliser=_no_normalisation, batch=32,
        command_env=("WSBENCH_NFN_WIDTH",),
        settings="both at the original's MNIST SIREN classifier (nfnet=inv_ff_io_mnist): NP layers after sinusoidal codes "
                 "of the input and output neurons (3 bands, max frequency 3); " + _COMMON),
}
