"""Helpers at Pyro's path ``pyro.util`` that user code imports."""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .handlers.seed import get_rng_state, set_rng_seed, set_rng_state

__all__ = [
    "get_rng_state",
    "ignore_jit_warnings",
    "optional",
    "set_rng_seed",
    "set_rng_state",
    "warn_if_inf",
    "warn_if_nan",
]


@contextlib.contextmanager
def ignore_jit_warnings(filter: list | None = None) -> Iterator[None]:  # noqa: A002 - Pyro's name
    """Silence ``torch.jit.TracerWarning`` (and the extra ``(category, message)`` or category
    filters given), as Pyro's helper of the same name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for item in filter or ():
            if isinstance(item, tuple):
                category, message = item
                warnings.filterwarnings("ignore", category=category, message=message)
            else:
                warnings.filterwarnings("ignore", category=item)
        yield


def _warn_if(value: Any, bad: Any, what: str, msg: str) -> Any:
    tensor = value if isinstance(value, torch.Tensor) else None
    if tensor is not None and tensor.requires_grad and torch.is_grad_enabled():
        # Also check the gradient when it arrives.
        tensor.register_hook(lambda g: _warn_if(g, bad, what, f"{msg} (gradient)"))
    if tensor is not None:
        found = bool(bad(tensor.detach()).any())
    elif isinstance(value, numbers.Number):
        found = bool(bad(torch.tensor(float(value))))
    else:
        raise TypeError(f"expected a tensor or a number, got {type(value).__name__}")
    if found:
        warnings.warn(f"Encountered {what}{': ' + msg if msg else ''}", UserWarning, stacklevel=3)
    return value


def warn_if_nan(
    value: Any, msg: str = "", *, filename: str | None = None, lineno: int | None = None
) -> Any:
    """Warn if ``value`` (or, later, its gradient) holds a NaN; returns ``value``."""
    return _warn_if(value, torch.isnan, "NaN", msg)


def warn_if_inf(
    value: Any,
    msg: str = "",
    allow_posinf: bool = False,
    allow_neginf: bool = False,
    *,
    filename: str | None = None,
    lineno: int | None = None,
) -> Any:
    """Warn if ``value`` (or, later, its gradient) holds a disallowed infinity."""

    def bad(t: torch.Tensor) -> torch.Tensor:
        flags = torch.zeros_like(t, dtype=torch.bool)
        if not allow_posinf:
            flags = flags | (t == float("inf"))
        if not allow_neginf:
            flags = flags | (t == float("-inf"))
        return flags

    return _warn_if(value, bad, "+/-inf", msg)


@contextlib.contextmanager
def optional(context_manager: Any, condition: bool) -> Iterator[None]:
    """Enter ``context_manager`` only if ``condition`` holds."""
    if condition:
        with context_manager:
            yield
    else:
        yield
