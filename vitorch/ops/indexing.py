"""``Vindex``: indexing that broadcasts like arithmetic, for enumerated and batched indices.

``Vindex(x)[..., i, j]`` picks ``x[..., i, j]`` elementwise where the index tensors and the
leading (batch) dims of ``x`` broadcast against each other, the way enumerated values
(which carry extra dims on the left) need. Slices keep their dims and go to the right::

    x.shape == (B, I, J, K);  i.shape == (N, 1, 1);  j.shape == (M, 1)
    Vindex(x)[..., i, :, j].shape == broadcast((B,), (N, 1, 1), (M, 1)) + (J,)
                                  == (N, M, B, J)
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Vindex", "vindex"]


def vindex(tensor: torch.Tensor, args: Any) -> torch.Tensor:
    """``tensor[args]`` with the index tensors broadcast together (ints, tensors, slices).

    With a leading ``...``, ``args`` index the rightmost dims and ``tensor``'s other
    (leftmost) dims broadcast with the index tensors; without it they index from the left
    and the dims left out on the right are kept, as in Pyro."""
    if not isinstance(args, tuple):
        args = (args,)
    leading_ellipsis = bool(args) and args[0] is Ellipsis
    if leading_ellipsis:
        args = args[1:]
    if any(a is Ellipsis for a in args):
        raise ValueError("Vindex: only a leading ... is supported, as in Pyro")
    if len(args) > tensor.dim():
        raise ValueError(f"Vindex: {len(args)} indices for a tensor of shape {tuple(tensor.shape)}")
    if not leading_ellipsis:
        # Without ``...`` the indices start at the left, as in ordinary indexing; the dims
        # they leave out on the right are kept whole.
        args = args + (slice(None),) * (tensor.dim() - len(args))
    batch_dims = tensor.dim() - len(args)
    n_slices = sum(isinstance(a, slice) for a in args)
    device = tensor.device
    indices: list[torch.Tensor] = []
    seen_slices = 0
    for position, arg in enumerate(args):
        size = tensor.shape[batch_dims + position]
        if isinstance(arg, slice):
            # Each slice becomes its own dim on the right, in order.
            idx = torch.arange(size, device=device)[arg]
            trailing = n_slices - 1 - seen_slices
            indices.append(idx.reshape((-1,) + (1,) * trailing))
            seen_slices += 1
        else:
            idx = torch.as_tensor(arg, device=device)
            if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise TypeError(
                    f"Vindex: index {position} must hold integers, got dtype {idx.dtype}"
                )
            indices.append(idx.reshape(idx.shape + (1,) * n_slices))
    # The leftmost dims of tensor take part in the broadcast like one more index each.
    batch_indices = []
    for d in range(batch_dims):
        shape = (tensor.shape[d],) + (1,) * (batch_dims - 1 - d) + (1,) * n_slices
        batch_indices.append(torch.arange(tensor.shape[d], device=device).reshape(shape))
    return tensor[tuple(batch_indices + indices)]


class Vindex:
    """``Vindex(tensor)[args]``: see :func:`vindex`."""

    def __init__(self, tensor: torch.Tensor):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"Vindex expects a tensor, got {type(tensor).__name__}")
        self._tensor = tensor

    def __getitem__(self, args: Any) -> torch.Tensor:
        return vindex(self._tensor, args)
