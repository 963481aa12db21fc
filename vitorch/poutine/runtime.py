"""Pyro's import path for the interpreter pieces, and what a model may ask of its context."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..handlers.plate import PlateMessenger
from ..handlers.scale import MaskMessenger
from ..runtime import (
    CondIndepStackFrame,
    Message,
    Messenger,
    am_i_wrapped,
    apply_stack,
    effectful,
    get_stack,
)

__all__ = [
    "CondIndepStackFrame",
    "Message",
    "am_i_wrapped",
    "apply_stack",
    "effectful",
    "get_mask",
    "get_plates",
    "get_stack",
    "unwrap",
]


def get_mask() -> bool | torch.Tensor | None:
    """The combined mask of the enclosing ``mask`` handlers (None when there are none).

    Lets a model skip work whose result would be masked out anyway::

        if vitorch.poutine.get_mask() is not False:
            vitorch.factor("expensive", my_expensive_log_density())
    """
    msg = Message("inspect", None, None)
    for handler in reversed(get_stack()):  # innermost first, as a message meets them
        if isinstance(handler, MaskMessenger):
            handler._pyro_sample(msg)
    return msg.mask


def get_plates() -> tuple[CondIndepStackFrame, ...]:
    """The frames of the enclosing plates, outermost first (as in a site's cond_indep_stack)."""
    return tuple(
        h._frame for h in get_stack() if isinstance(h, PlateMessenger) and h._frame is not None
    )


def unwrap(fn: Callable) -> Callable:
    """The function inside any number of handler wrappers (``trace(block(model))`` -> model)."""
    while isinstance(fn, Messenger) and fn.fn is not None:
        fn = fn.fn
    return fn
