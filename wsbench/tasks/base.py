"""What every task is: a versioned scorer that picks splits from a zoo, runs a method and returns
metrics it declares once (`Task.metrics`: direction, headline). A method that cannot do a task is
reported "not applicable" (a record with status not_applicable and the reason), never a crash."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..methods.base import Method, RunContext
from ..zoo import Zoo


@dataclass(frozen=True)
class Metric:
    """A score a task reports, declared once on the task."""

    higher_is_better: bool
    headline: bool = False  # one of the numbers the task is read by
    description: str = ""


@dataclass
class TaskResult:
    """One scored outcome; the runner turns each into a ResultRecord (metric directions from the task)."""

    metrics: dict[str, float]
    split: str
    n_train: int
    n_eval: int
    n_params: int | None = None
    method_config: dict[str, Any] = field(default_factory=dict)  # effective config (e.g. incl. a variant)
    extra: dict[str, Any] = field(default_factory=dict)  # diagnostics: per-layer errors, curves, timings...
    member: str | None = None  # the network scored (reconstruction)
    variant: str | None = None  # which of the run's reconstructions (e.g. a budget or a pruning level)


class Task:
    name: ClassVar[str] = ""
    version: ClassVar[int] = 1  # bump whenever the scoring changes
    # every metric the task reports; a reported name may add "_<test set>" to a declared one
    # (reconstruction: acc_recon_cifar10_exact)
    metrics: ClassVar[dict[str, Metric]] = {}
    description: ClassVar[str] = ""
    capability: ClassVar[str] = ""  # the method capability it needs: "reconstructor" | "encoder"
    zoo_kinds: ClassVar[tuple[str, ...]] = ()  # card kinds it can score ("cnn", "resnet", "inr")

    def __init__(self, **config: Any) -> None:
        self.config = config

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """Every task option and its default (what a run's task config overrides)."""
        return {}

    @classmethod
    def metric(cls, name: str) -> Metric:
        """The declaration of a reported metric (ValueError for one the task does not declare)."""
        if name in cls.metrics:
            return cls.metrics[name]
        for base in sorted(cls.metrics, key=len, reverse=True):
            if name.startswith(base + "_"):
                return cls.metrics[base]
        raise ValueError(f"task {cls.name!r} reports metric {name!r} but declares only {sorted(cls.metrics)}")

    @classmethod
    def directions(cls, names: Any) -> dict[str, bool]:
        """higher_is_better of each reported metric, from the declarations."""
        return {n: cls.metric(n).higher_is_better for n in names}

    def applicable(self, method_cls: type[Method], zoo: Zoo) -> tuple[bool, str]:
        """(True, "") or (False, why): checked before anything runs."""
        if method_cls.capability != self.capability:
            return False, (f"method {method_cls.name!r} is a {method_cls.capability}; task {self.name!r} "
                           f"needs a {self.capability}")
        if self.zoo_kinds and zoo.card.kind not in self.zoo_kinds:
            return False, f"task {self.name!r} scores {'/'.join(self.zoo_kinds)} zoos; {zoo.name} is a {zoo.card.kind} zoo"
        return True, ""

    def reads_every_network(self, method_cls: type[Method], zoo: Zoo) -> tuple[bool, str]:
        """(True, "") or (False, why) when the method can do the task but cannot read some network it
        would be scored on (an unseen architecture): the run then records "not applicable" with the
        reason, so the leaderboard shows it, instead of failing."""
        return True, ""

    def run(self, method_cls: type[Method], method_config: dict[str, Any], zoo: Zoo,
            ctx: RunContext) -> list[TaskResult]:
        raise NotImplementedError
