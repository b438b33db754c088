"""`build-zoo` and `import-zoo`: build a registered zoo from its card, or import a published zoo.

    run_bench.py build-zoo small_cnn_mnist --variant tiny
    run_bench.py build-zoo siren_mnist --device cuda          (resumes an interrupted build)
    run_bench.py import-zoo small_cnn_zoo ~/data/smallcnnzoo/mnist unterthiner_mnist
    torchrun --nproc_per_node 8 run_bench.py build-zoo siren_mnist --device cuda   (shards over 8 GPUs)

Each handler returns an exit code; user errors are raised as WsbenchError (the CLI prints one line).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu; an explicit cuda without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available (use --device cpu or auto)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return dev


def _say(args: argparse.Namespace, obj: dict, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, sort_keys=True, default=str))
    else:
        print(text)


def _register_builders() -> None:
    """The builders of the suite's cards (also imported by wsbench.builtins; repeated imports are free)."""
    from ..zoo_builders import pretrained_resnet, resnet_training, siren_inr, small_cnn  # noqa: F401


def cmd_build_zoo(args: argparse.Namespace) -> int:
    from ..registry import ZOOS

    _register_builders()
    from ..zoo import CARD_FILE, built_zoo_path
    from ..zoo_builders import build_zoo

    card = ZOOS.get(args.name)
    variant = args.variant or card.default_variant
    card.variant_config(variant)  # ConfigError naming the variants
    root = Path(args.out) if args.out else built_zoo_path(card.name, variant)
    from .. import distributed

    main = distributed.is_main()  # under torchrun, rank 0 alone prints
    if (root / CARD_FILE).exists() and not args.overwrite:
        if main:
            _say(args, {"zoo": card.name, "variant": variant, "path": str(root), "built": False},
                 f"{card.name} ({variant}) is already built at {root}; pass --overwrite to build it again")
        return 0
    device = distributed.setup(resolve_device(args.device))  # under torchrun: this rank's GPU
    quiet = getattr(args, "quiet", False) or not main
    if not quiet:
        print(f"building {card.name} ({variant}) on {device} into {root}", file=sys.stderr)
    zoo = build_zoo(card.name, variant=variant, device=device, out=root, progress=not quiet and sys.stderr.isatty(),
                    overwrite=args.overwrite, log=(lambda m: None) if quiet else None)
    if not main:
        return 0
    stats = zoo.card.recipe.get("build_stats", {})
    rate = stats.get("networks_per_s")
    _say(args, {"zoo": zoo.name, "variant": variant, "path": str(zoo.root), "members": len(zoo.members),
                "groups": zoo.groups, "build_stats": stats},
         f"built {zoo.name} ({variant}): {len(zoo.members)} members in {', '.join(zoo.groups)} at {zoo.root}"
         + (f"; {rate:.2f} networks/s on {stats.get('device')}" if rate else ""))
    return 0


def cmd_import_zoo(args: argparse.Namespace) -> int:
    from ..zoo_readers import import_zoo

    zoo = import_zoo(args.format, args.path, args.name, out=args.out, limit=args.limit, overwrite=args.overwrite)
    _say(args, {"zoo": zoo.name, "path": str(zoo.root), "members": len(zoo.members), "groups": zoo.groups},
         f"imported {args.format} from {args.path} as {zoo.name}: {len(zoo.members)} members in "
         f"{', '.join(zoo.groups)} at {zoo.root}")
    return 0


def register(subparsers) -> None:
    """Add `build-zoo` and `import-zoo` to an argparse sub-parser set."""
    b = subparsers.add_parser("build-zoo", help="build a zoo from its card (zoos/NAME.yaml); resumes an interrupted build")
    b.add_argument("name", help="zoo card name (see `list`)")
    b.add_argument("--variant", help="card variant, e.g. tiny or full (default: the card's default)")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (auto: cuda when present)")
    b.add_argument("--out", help="zoo folder to write (default: the zoo store, $WSBENCH_ZOO_DIR/NAME/VARIANT)")
    b.add_argument("--overwrite", action="store_true", help="build again even if the zoo is built already")
    b.set_defaults(handler=cmd_build_zoo)
    i = subparsers.add_parser("import-zoo", help="import a published zoo (small_cnn_zoo, dwsnets_inr, model_zoos)")
    i.add_argument("format", help="small_cnn_zoo | dwsnets_inr | model_zoos")
    i.add_argument("path", help="the published zoo's folder (or, for dwsnets_inr, its splits json)")
    i.add_argument("name", help="name of the imported zoo")
    i.add_argument("--out", help="zoo folder to write (default: the zoo store, $WSBENCH_ZOO_DIR/NAME/imported)")
    i.add_argument("--limit", type=int, help="import only the first N networks (runs for small_cnn_zoo)")
    i.add_argument("--overwrite", action="store_true", help="replace an existing imported zoo")
    i.set_defaults(handler=cmd_import_zoo)
