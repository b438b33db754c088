"""Name -> factory registries for methods, zoos, tasks and architectures.

One name, one meaning: the registry name is the name in the CLI, in configs, in result records
and on the leaderboard. Unknown names raise UnknownNameError with the closest registered names.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def closest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Registered names closest to `name` (for did-you-mean messages)."""
    return difflib.get_close_matches(name, choices, n=n, cutoff=0.4)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._broken: dict[str, Exception] = {}  # entries that failed to load: the error, raised on get

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@METHODS.register("nern")` on a class or factory. A class with a `name`
        attribute (methods) gets the registered name: it is written once, here."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if isinstance(obj, type) and hasattr(obj, "name"):  # a class that carries its name: set it here, once
                own = obj.__dict__.get("name")
                if own not in (None, "", name):
                    raise ValueError(f"{self.kind} class {obj.__name__} is named {own!r} but registered as {name!r}")
                obj.name = name  # type: ignore[attr-defined]
            self._entries[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def add_broken(self, name: str, error: Exception) -> None:
        """An entry that failed to load (e.g. a zoo card with a typo): its error is raised when it is
        asked for by name, and every other entry stays usable."""
        self._broken[name] = error

    def broken(self) -> dict[str, Exception]:
        _load_builtins()
        return dict(self._broken)

    def get(self, name: str) -> T:
        _load_builtins()
        if name in self._broken:
            raise self._broken[name]
        if name not in self._entries:
            names = sorted(self._entries)
            hint = closest(name, names)
            msg = f"unknown {self.kind} {name!r}"
            msg += f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            msg += f" (known: {', '.join(names)})"
            raise UnknownNameError(msg)
        return self._entries[name]

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


METHODS: Registry = Registry("method")
TASKS: Registry = Registry("task")
ZOOS: Registry = Registry("zoo")
ARCHS: Registry = Registry("architecture")

_loaded = False


CATALOGUES = ("wsbench.builtins",)  # modules whose imports fill the registries, by name
PLUGIN_GROUP = "wsbench.plugins"  # entry points of other packages: more methods, tasks, zoos, architectures


def _load_builtins() -> None:
    """Import the catalogue modules (the suite's own, then installed plugins) once, lazily: they are
    named, not imported here, so the registry sits below everything it lists."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    from importlib.metadata import entry_points

    for name in CATALOGUES:
        importlib.import_module(name)
    for ep in entry_points(group=PLUGIN_GROUP):
        ep.load()
