"""``broadcast``: expand each sample site's distribution to the shape of its plates.

vitorch's plates already expand the distributions of the sites inside them, so this
handler matters for distributions that reach it un-expanded: sites inside plates whose
effects were applied by an outer handler, or models written for Pyro's old ``iarange``
idiom that wrap themselves in ``poutine.broadcast``. Sizes of 1 grow to the plate's size;
any other mismatch is an error that names the site, the plate and both sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..runtime import Message, Messenger

__all__ = ["BroadcastMessenger", "broadcast"]


def broadcast_batch_shape(msg: Message) -> torch.Size:
    """The batch shape the site's plates call for, keeping the distribution's other sizes."""
    actual = msg.fn.batch_shape
    # None marks a size that the plates leave free (1 in the distribution, or no dim yet).
    target: list[int | None] = [None if size == 1 else size for size in actual]
    for frame in msg.cond_indep_stack:
        if frame.dim is None or frame.size == -1:
            continue
        if -frame.dim > len(target):
            target = [None] * (-frame.dim - len(target)) + target
        have = target[frame.dim]
        if have is not None and have != frame.size:
            raise ValueError(
                f"sample site {msg.name!r}: batch_shape {tuple(actual)} has size {have} at "
                f"dim {frame.dim}, but plate {frame.name!r} there has size {frame.size}; "
                f"expected {frame.size} or 1 at that dim"
            )
        target[frame.dim] = frame.size
    n = len(target)
    return torch.Size(
        size if size is not None else (actual[i - n] if n - i <= len(actual) else 1)
        for i, size in enumerate(target)
    )


class BroadcastMessenger(Messenger):
    """Expand every sample site's distribution to the batch shape of its enclosing plates."""

    def _pyro_sample(self, msg: Message) -> None:
        if msg.done or getattr(msg.fn, "_is_subsample", False):
            return
        shape = broadcast_batch_shape(msg)
        if shape != msg.fn.batch_shape:
            msg.fn = msg.fn.expand(shape)


def broadcast(fn: Callable | None = None):
    """Run ``fn`` with every sample site broadcast to the shape of its plates."""
    return BroadcastMessenger(fn)
