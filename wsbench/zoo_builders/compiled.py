"""A function under torch.compile that falls back to running eagerly.

The builders' hot loops are long chains of elementwise work (counter-based hashing, SIREN
gradients) that eager PyTorch runs as one pass over memory per operation; compiled, each chain is
one loop. Compiling needs a C++ compiler on the CPU (Triton on a GPU) and a torch whose compiler
handles the function; where it fails, the same maths runs eagerly, with one warning per process.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable


class CompiledOrEager:
    """`compiled(*args)` runs `fn` under torch.compile (compiled lazily, once per process) until a
    compile or run fails; from then on `fn` runs eagerly."""

    def __init__(self, fn: Callable[..., Any], what: str, recompile_limit: int | None = None, **compile_kwargs: Any) -> None:
        """`recompile_limit`: how many compiled versions (shapes, constants) dynamo keeps for `fn` before it runs
        eagerly (torch's default, 8, when None): raise it for static shapes (dynamic=False) of many layers."""
        self.fn, self.what = fn, what
        self.recompile_limit = recompile_limit
        self.compile_kwargs = compile_kwargs
        self._compiled: Callable[..., Any] | None = None
        self.failure: str | None = None

    @property
    def usable(self) -> bool:
        """Whether calls still try the compiled function."""
        return self.failure is None

    def __call__(self, *args: Any) -> Any:
        if self.failure is None:
            try:
                import torch

                if self._compiled is None:
                    self._compiled = torch.compile(self.fn, **self.compile_kwargs)
                if self.recompile_limit is None:
                    return self._compiled(*args)
                with torch._dynamo.config.patch(recompile_limit=self.recompile_limit):
                    return self._compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure falls back to the same maths eagerly
                self.note_failure(error)
        return self.fn(*args)

    def note_failure(self, error: BaseException) -> None:
        self.failure = f"{type(error).__name__}: {error}"
        warnings.warn(f"torch.compile of {self.what} failed ({type(error).__name__}); it runs eagerly from now on "
                      "(same results, slower)", RuntimeWarning, stacklevel=3)
