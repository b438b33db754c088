"""The two capabilities a method can declare: Reconstructor and Encoder.

A Reconstructor fits ONE network and returns its reconstructed weights and the size of the
representation. An Encoder is a torch Module mapping a WeightSpace batch to features.
Tasks check the capability (declared, never guessed) and report "not applicable" otherwise.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor, nn

from ..options import NON_NEGATIVE, Range, parse_options


@dataclass
class RunContext:
    """Where and how a method runs; handed to every method by the task."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    workdir: Path | None = None  # for checkpoints (resume); None = no checkpointing
    progress: bool = True  # progress bars (off in CI / when not a terminal)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))

    def generator(self, offset: int = 0) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed * 1_000_003 + offset)
        return g


@dataclass
class ReconstructionTarget:
    """One network to reconstruct: its architecture, its weights and what it was trained on."""

    member_id: str
    arch: str  # registry name in wsbench.archs, e.g. "resnet_cifar"
    arch_kwargs: dict[str, Any]
    state_dict: dict[str, Tensor]  # full state dict (params + buffers), CPU float32
    dataset: str  # wsbench.data dataset name the network was trained on, e.g. "cifar10"

    @functools.cached_property
    def spec(self) -> Any:
        """The architecture's NetworkSpec: its layers (kind, weight and bias keys) and permutation
        groups, so that reconstructors and the task find conv layers from it, not by key heuristics."""
        from ..archs import spec_for_arch

        return spec_for_arch(self.arch, **self.arch_kwargs)

    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """A fresh module of the target's architecture holding the target's weights, eval mode."""
        from ..archs import build_arch

        model = build_arch(self.arch, **self.arch_kwargs)
        model.load_state_dict(self.state_dict, strict=False)
        return model.to(device).eval()


@dataclass
class Reconstruction:
    """What a Reconstructor returns.

    `state_dict` has the same keys and shapes as the target's. `n_params`/`n_bytes` count the
    whole representation needed to rebuild the network (e.g. NeRN's predictor + kept BN/FC
    tensors + permutation indices). `variants` holds further reconstructions of the same fit
    (e.g. NeRN's predictor pruned to several sparsities), keyed by a label; the task scores each.
    """

    state_dict: dict[str, Tensor]
    n_params: int
    n_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, "Reconstruction"] = field(default_factory=dict)


class Method:
    """Common base: a name (set by the registry: `@METHODS.register("x")`), a capability, a version."""

    name: ClassVar[str] = ""
    capability: ClassVar[str] = ""  # "reconstructor" | "encoder"
    description: ClassVar[str] = ""
    # Bump when a change alters what the method computes for the same config: the version is part of
    # the run key (from 2 on), so older records are not taken for a run of today's code.
    version: ClassVar[int] = 1
    architecture_agnostic: ClassVar[bool] = False  # reads networks of several architectures in one model


class Reconstructor(Method):
    capability: ClassVar[str] = "reconstructor"

    def __init__(self, **config: Any) -> None:
        self.config = config

    def reconstruct(self, target: ReconstructionTarget, ctx: RunContext) -> Reconstruction:
        raise NotImplementedError

    @classmethod
    def supports(cls, spec: Any) -> tuple[bool, str]:
        """(True, "") if this method can reconstruct networks of `spec`, else (False, reason)."""
        return True, ""


def symmetry_problem(spec: Any) -> str:
    """Why an invariant encoder must not read `spec` ("" when it may): hidden layers, no groups."""
    if len(spec.weight_layers()) >= 2 and not spec.group_sizes:
        return (f"{spec.describe()} has hidden layers but declares no neuron-permutation groups; an encoder that "
                f"claims invariance would run with no symmetry (declare it: wsbench.archs.symmetry)")
    return ""


class Encoder(nn.Module, Method):
    """Maps a WeightSpace batch to a feature tensor [B, out_dim]."""

    capability: ClassVar[str] = "encoder"
    invariant: ClassVar[bool] = False  # claims invariance under the spec's neuron permutations
    # further transformations the encoder is meant to be invariant to (checked by the generic tests):
    # "input_permutation", "layer_shuffle", "untied_permutation", ...
    intended_invariances: ClassVar[frozenset[str]] = frozenset()
    defaults: ClassVar[dict[str, Any]] = {}  # every config key and its default (types follow them)
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    ranges: ClassVar[dict[str, Range]] = {}  # numbers not listed must be >= 0 (sizes, rates, counts)
    tiny_config: ClassVar[dict[str, Any]] = {}  # a small model for tests and benchmarks

    def augment(self, ws: Any, generator: torch.Generator | None = None) -> Any:
        """Training-time augmentation of a normalised batch (a WeightSpace); none by default."""
        return ws

    def auxiliary_loss(self, ws: Any, out: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """A loss added to the task's during training (e.g. SNE's invariance regulariser); none by default."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every encoder's `supports` also applies the symmetry rule: an encoder that claims
        invariance refuses a network whose architecture declares no permutation groups (it would
        otherwise run with no symmetry at all, silently)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("supports")
        if own is None or getattr(own, "__wrapped_by_symmetry__", False):
            return
        reads = own.__func__

        def supports(klass: type, spec: Any) -> tuple[bool, str]:
            ok, why = reads(klass, spec)
            if ok and klass.invariant:
                why = symmetry_problem(spec)
                ok = not why
            return ok, why

        supports.__doc__, supports.__wrapped_by_symmetry__ = reads.__doc__, True  # type: ignore[attr-defined]
        wrapped = classmethod(supports)
        wrapped.__wrapped_by_symmetry__ = True  # type: ignore[attr-defined]
        cls.supports = wrapped  # type: ignore[method-assign]

    @classmethod
    def parse_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """`defaults` overridden by `config`, checked by the one option rule (wsbench.options); the
        runner calls it before any data is loaded."""
        numbers = [k for k, v in cls.defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return parse_options(f"method {cls.name!r}", config, cls.defaults, choices=cls.choices,
                             ranges={**dict.fromkeys(numbers, NON_NEGATIVE), **cls.ranges})

    @classmethod
    def supports(cls, spec: Any) -> tuple[bool, str]:
        """(True, "") if this encoder can read networks of `spec`, else (False, reason)."""
        raise NotImplementedError
