"""NeRN's config: every key, its default and its validation (ConfigError naming the key).

Defaults follow the official code's measured behaviour (maorash/NeRN @5017576, ResNet20 h180
crossfilter) wherever it and the paper's text differ; the paper's reading of each such choice is
kept as a documented option:

| key | official (default) | paper text / other options |
|---|---|---|
| coordinates | raw integer (l, f, c) | local (l/L, f/F_l, c/C_l), global |
| rec_loss | rmse (`L2Loss`) | mse |
| gradient_centralization | true (Ranger centres every >= 2-D gradient whatever `use_gc` says) | false |
| fmd_aliasing | auto = on for CIFAR ResNets (bn1, sum, sum per block) | false: (bn1, bn2, sum) |
| one_by_one | cosine (1x1 kernels grouped by sign) | l2 |
"""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...options import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, is_number, parse_options
from .embeddings import COORDINATES, EMBEDDINGS
from .losses import KD_LOSSES, REC_LOSSES
from .optim import OPTIMIZERS
from .orderings import ONE_BY_ONE_RULES, ORDERINGS
from .sampling import KERNEL_SAMPLINGS, NOISES

DEFAULTS: dict[str, Any] = {
    # predictor and its input
    "hidden": 180,
    "n_layers": 5,
    "embedding": "positional",  # positional | learned | random (ablations)
    "levels": 40,  # K: 6K = 240 input values
    "base": 0.76,  # smooth embeddings; 1.25 = non-smooth ablation
    "coordinates": "raw",  # official: raw integer (l, f, c); "local" (l/L, f/F, c/C) / "global" = paper-text readings
    "ordering": "crossfilter",  # none | crossfilter | infilter
    "one_by_one": "cosine",  # 1x1 kernels: official cosine (= sign); "l2" = the paper's text
    # losses
    "rec_loss": "rmse",  # official L2Loss (sqrt of the all-weight MSE); "mse" = ablation
    "rmse_scale": "sampled",  # steps without KD/FMD, RMSE loss: the all-weight RMSE that scales the
    # sampled gradient is an unbiased estimate from the step's own sampled kernels ("sampled", no extra
    # cost, no staleness), or comes from a full prediction every `rmse_refresh_every` steps ("refresh")
    "rmse_refresh_every": 10,  # 1 = a full prediction every step: exactly the official gradient
    "kd_loss": "stable_kl",  # official StableKLDivLoss form of KL(teacher||student); "kl" exact
    "kd_weight": 1e-4,  # beta (ResNet20 official)
    "fmd_weight": 1e-4,  # alpha
    "fmd_aliasing": "auto",  # official in-place quirk (BN2 map = residual sum); auto = on for resnet_cifar
    "loss_warmup": 0,  # iterations with alpha = beta = 0 (ResNet56 official: 10000)
    # batches
    "iterations": 68600,  # 350 epochs x 196 batches of 256
    "image_batch": 256,
    "weights_batch": 4096,
    "kernel_sampling": "mixed",  # official 80% uniform / 20% norm-weighted; "uniform"
    "weighted_fraction": 0.2,
    "augment": True,  # CIFAR pad-4 random crop + horizontal flip
    "data": "task",  # task images, or "noise" (data-free, paper sec. 4.4)
    "noise": "gaussian",  # paper N(0,1); "uniform" = official HEAD U[-2, 2)
    "train_limit": None,  # use only the first n training images (CPU presets)
    # optimiser and schedule
    "optimizer": "ranger",  # ranger (RAdam + Lookahead) | adam (AdamW)
    "lr": 5e-3,
    "lr_min": 1e-6,
    "betas": [0.5, 0.999],
    "eps": 1e-5,
    "weight_decay": 1e-3,
    "lookahead_k": 6,
    "lookahead_alpha": 0.5,
    "gradient_centralization": True,  # official Ranger: every >= 2-D gradient minus its row mean
    # model selection (validation split carved from the training set; never the test set)
    "selection": "val",  # val | last
    "eval_every": 2000,
    "val_limit": None,
    "eval_batch": 1000,
    # meta-compression: one reconstruction variant per predictor sparsity
    "prune_sparsities": [0.0, 0.25, 0.5, 0.75],
    # checkpointing (needs ctx.workdir) and logging
    "checkpoint_every": 2000,
    "log_every": 1000,
    # speed switches ("auto": on for cuda, off on cpu)
    "fold_bn": True,
    "channels_last": True,  # NHWC activations: 2-3x faster convolutions on CPU
    "tf32": "auto",
    "bf16": False,
    "compile": False,  # or true / a torch.compile mode, e.g. "reduce-overhead" (CUDA graphs)
    "ordering_memory_mb": None,
    "description": "",
}

# keys that change nothing in the result: a resumed run may differ in them
NON_RESULT_KEYS = {"eval_batch", "checkpoint_every", "log_every", "description", "ordering_memory_mb"}
# keys renamed or removed, with what to write instead
RENAMED = {"normalization": "coordinates (raw | local | global)"}

CHOICES = {
    "embedding": EMBEDDINGS, "coordinates": COORDINATES, "ordering": ORDERINGS, "one_by_one": ONE_BY_ONE_RULES,
    "rec_loss": REC_LOSSES, "kd_loss": KD_LOSSES, "kernel_sampling": KERNEL_SAMPLINGS, "data": ("task", "noise"),
    "noise": NOISES, "optimizer": OPTIMIZERS, "selection": ("val", "last"), "rmse_scale": ("refresh", "sampled"),
}
POS_INTS = ("hidden", "levels", "iterations", "image_batch", "weights_batch", "eval_every", "eval_batch",
            "checkpoint_every", "log_every", "lookahead_k", "rmse_refresh_every")
NULLABLE_POS_INTS = ("train_limit", "val_limit", "ordering_memory_mb")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTO_BOOLS = ("channels_last", "tf32", "fmd_aliasing")
RANGES = {**dict.fromkeys(POS_INTS + NULLABLE_POS_INTS, AT_LEAST_ONE),
          **dict.fromkeys(("kd_weight", "fmd_weight", "lr_min", "eps", "weight_decay", "loss_warmup"), NON_NEGATIVE),
          **dict.fromkeys(("lr", "base"), POSITIVE), "n_layers": Range(2),
          **dict.fromkeys(("weighted_fraction", "lookahead_alpha"), Range(0, 1))}


def _err(key: str, msg: str, value: Any) -> ConfigError:
    return ConfigError(f"nern: option {key!r} {msg}, got {value!r}")


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with `config` by the one option rule (types from DEFAULTS, CHOICES, RANGES),
    then the checks that span keys or lists; raises ConfigError naming the key."""
    for old, new in RENAMED.items():
        if old in config:
            raise ConfigError(f"nern: config key {old!r} was replaced by {new}")
    cfg = parse_options("nern", config, DEFAULTS, choices=CHOICES, ranges=RANGES,
                        untyped=("compile",) + AUTO_BOOLS)
    for key in NULLABLE_POS_INTS:
        if cfg[key] is not None and (not isinstance(cfg[key], int) or isinstance(cfg[key], bool)):
            raise _err(key, "must be a positive integer or null", cfg[key])
    if cfg["lr_min"] > cfg["lr"]:
        raise _err("lr_min", f"must not exceed lr ({cfg['lr']})", cfg["lr_min"])
    b = cfg["betas"]
    if not isinstance(b, (list, tuple)) or len(b) != 2 or not all(is_number(x) and 0 <= x < 1 for x in b):
        raise _err("betas", "must be two numbers in [0, 1)", b)
    cfg["betas"] = [float(x) for x in b]
    if not (isinstance(cfg["compile"], bool) or cfg["compile"] in COMPILE_MODES):
        raise _err("compile", f"must be true, false or a torch.compile mode {list(COMPILE_MODES)}", cfg["compile"])
    for key in AUTO_BOOLS:
        if not (isinstance(cfg[key], bool) or cfg[key] == "auto"):
            raise _err(key, "must be true, false or 'auto'", cfg[key])
    sp = cfg["prune_sparsities"]
    if not isinstance(sp, (list, tuple)) or not sp or not all(is_number(s) and 0 <= s < 1 for s in sp):
        raise _err("prune_sparsities", "must be a non-empty list of numbers in [0, 1)", sp)
    if len(set(float(s) for s in sp)) != len(sp):
        raise _err("prune_sparsities", "must not repeat a value", sp)
    cfg["prune_sparsities"] = [float(s) for s in sp]
    if cfg["data"] == "noise" and cfg["kd_weight"] == 0 and cfg["fmd_weight"] == 0:
        raise ConfigError("nern: data 'noise' only matters with kd_weight or fmd_weight > 0")
    return cfg


def resolve_auto(value: Any, device_type: str) -> bool:
    return (device_type == "cuda") if value == "auto" else bool(value)
