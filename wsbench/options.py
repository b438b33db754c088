"""One rule for checking option mappings (method configs, task options): unknown keys are refused
with the closest known one, each value is checked against the type of its default (an int default
takes integers only, a float default any finite number, `1e-3` written without a dot included, a
bool default true/false only), against its choices and its range; every error names the key."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ConfigError

_FLOAT_WITHOUT_DOT = re.compile(r"[-+]?\d+[eE][-+]?\d+")


@dataclass(frozen=True)
class Range:
    """Allowed interval of a number option; open ends exclude the bound."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, x: float) -> bool:
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))

    def describe(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


NON_NEGATIVE = Range(0)
POSITIVE = Range(0, lo_open=True)
AT_LEAST_ONE = Range(1)


def yaml11_float(value: Any) -> Any:
    """YAML 1.1 reads 1e-3 (no dot) as a string; a number is meant."""
    return float(value) if isinstance(value, str) and _FLOAT_WITHOUT_DOT.fullmatch(value.strip()) else value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _typed(owner: str, key: str, value: Any, default: Any, nullable: bool) -> Any:
    """`value` converted to the type of `default` (None: any finite value), or ConfigError."""
    if value is None and (nullable or default is None):
        return None
    value = yaml11_float(value)
    if default is None:
        ok, want = not (isinstance(value, float) and not math.isfinite(value)), "a finite value"
    elif isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif _is_int(default):
        ok, want = _is_int(value), "an integer"
    elif isinstance(default, float):
        ok, want = is_number(value) and math.isfinite(value), "a finite number"
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, want = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, Mapping):
        ok, want = isinstance(value, Mapping), "a mapping"
    else:
        ok, want = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise ConfigError(f"{owner}: option {key!r} must be {want}" + (" or null" if nullable else "")
                          + f", got {value!r}")
    return value


def parse_options(owner: str, given: Mapping[str, Any], defaults: Mapping[str, Any], *,
                  choices: Mapping[str, Sequence[Any]] | None = None,
                  ranges: Mapping[str, Range] | None = None,
                  nullable: Sequence[str] = (), untyped: Sequence[str] = ()) -> dict[str, Any]:
    """`defaults` overridden by `given`, every given value checked; `owner` starts each error line
    ("method 'mlp'", "task 'property_prediction'"). `untyped` keys take any finite value (their
    owner checks them: e.g. one column name or a list of them)."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{owner}: options must be a mapping of key: value, got {type(given).__name__}")
    unknown = sorted(set(given) - set(defaults), key=str)
    if unknown:
        from .registry import closest

        hint = closest(str(unknown[0]), [str(k) for k in defaults])
        raise ConfigError(f"{owner}: unknown option(s) {unknown}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                          + f" (allowed: {sorted(defaults)})")
    out = dict(defaults)
    for key, value in given.items():
        out[key] = _typed(owner, key, value, None if key in untyped else defaults[key], key in nullable)
    for key, allowed in (choices or {}).items():
        if out[key] not in allowed:
            raise ConfigError(f"{owner}: option {key!r} must be one of {list(allowed)}, got {out[key]!r}")
    for key, rng in (ranges or {}).items():
        if out[key] is not None and is_number(out[key]) and not rng.contains(out[key]):
            raise ConfigError(f"{owner}: option {key!r} must be {rng.describe()}, got {out[key]!r}")
    return out
