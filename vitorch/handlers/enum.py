"""``enum``: parallel enumeration of discrete sample sites.

A latent sample site marked ``infer={"enumerate": "parallel"}`` is not drawn: its value is
the whole support of its distribution, laid out along a fresh tensor dim to the left of
every plate dim. The k-th such site of a run uses dim ``first_available_dim - k``, so
every later site that depends on it broadcasts over its support without any change to the
model code. ``TraceEnum_ELBO`` then sums those dims out of the joint density exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..runtime import Message, Messenger

__all__ = ["EnumMessenger", "enum"]


class EnumMessenger(Messenger):
    """Give each latent site marked for parallel enumeration its support, in a new dim.

    ``first_available_dim`` is the rightmost dim free for enumeration, usually
    ``-(max_plate_nesting + 1)``. The dim a site was given is recorded on it as
    ``msg.infer["_enumerate_dim"]``.
    """

    def __init__(self, fn: Callable | None = None, first_available_dim: int | None = None):
        super().__init__(fn)
        if first_available_dim is not None and (
            isinstance(first_available_dim, bool)
            or not isinstance(first_available_dim, int)
            or first_available_dim >= 0
        ):
            raise ValueError(
                f"enum: first_available_dim must be a negative int (such as "
                f"-(max_plate_nesting + 1)), got {first_available_dim!r}"
            )
        self.first_available_dim = first_available_dim
        self._next_dim = first_available_dim

    def __enter__(self) -> EnumMessenger:
        # Each run of the model allocates its enumeration dims afresh.
        self._next_dim = self.first_available_dim
        return super().__enter__()  # type: ignore[return-value]

    def _pyro_sample(self, msg: Message) -> None:
        if msg.done or msg.is_observed or msg.value is not None:
            return
        strategy = msg.infer.get("enumerate")
        if strategy is None:
            return
        if strategy != "parallel":
            raise NotImplementedError(
                f"sample site {msg.name!r}: infer['enumerate']={strategy!r} is not supported; "
                f"vitorch enumerates only with 'parallel'"
            )
        fn = msg.fn
        if not getattr(fn, "has_enumerate_support", False):
            raise ValueError(
                f"sample site {msg.name!r} is marked for enumeration, but its distribution "
                f"{type(fn).__name__} has no finite support to enumerate; expected a discrete "
                f"distribution such as Categorical or Bernoulli"
            )
        if self._next_dim is None:
            raise ValueError(
                f"sample site {msg.name!r} is marked for parallel enumeration, but enum was "
                f"given no first_available_dim; pass first_available_dim=-(max_plate_nesting + 1)"
            )
        dim = self._next_dim
        batch_dims = len(fn.batch_shape)
        if batch_dims > -dim - 1:
            raise ValueError(
                f"sample site {msg.name!r}: its batch_shape {tuple(fn.batch_shape)} reaches "
                f"dim {-batch_dims}, which overlaps the enumeration dim {dim}; increase "
                f"max_plate_nesting to at least {batch_dims}"
            )
        self._next_dim = dim - 1
        support = fn.enumerate_support(expand=bool(msg.infer.get("expand", False)))
        size = support.shape[0]
        # Support values sit at `dim`; the size-1 (or expanded) batch dims follow.
        shape = (size,) + (1,) * (-dim - 1 - batch_dims) + tuple(support.shape[1:])
        msg.value = support.reshape(torch.Size(shape))
        msg.done = True
        # A new dict: the user's infer= dict may be shared between runs.
        msg.infer = {**msg.infer, "_enumerate_dim": dim}


def enum(fn: Callable | None = None, first_available_dim: int | None = None) -> EnumMessenger:
    """Enumerate the sites of ``fn`` marked ``infer={"enumerate": "parallel"}`` in parallel."""
    return EnumMessenger(fn, first_available_dim=first_available_dim)
