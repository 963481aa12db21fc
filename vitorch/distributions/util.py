"""Shape helpers shared by the distributions and the inference code."""

from __future__ import annotations

import torch

__all__ = ["sum_rightmost", "broadcast_shape"]


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
