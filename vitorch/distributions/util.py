"""Shape helpers shared by the distributions and the inference code."""

from __future__ import annotations

import torch

__all__ = ["broadcast_shape", "is_identically_zero", "sum_rightmost"]


def sum_rightmost(value: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum out the ``dim`` rightmost dims of ``value`` (a no-op for ``dim == 0``)."""
    if dim == 0 or not isinstance(value, torch.Tensor):
        return value
    return value.reshape(value.shape[: value.dim() - dim] + (-1,)).sum(-1)


def broadcast_shape(*shapes) -> torch.Size:
    """Broadcast shapes, with an error that lists them when they do not broadcast."""
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(
            "shapes do not broadcast: " + ", ".join(str(tuple(s)) for s in shapes)
        ) from None


def is_identically_zero(x) -> bool:
    """True when ``x`` is the number 0 (Pyro's check for an absent log-density term).

    A tensor is never treated as identically zero, even one holding zeros: only the
    literal number says the term was skipped.
    """
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == 0
