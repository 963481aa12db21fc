"""``markov``: mark a Markov chain (``for t in vitorch.markov(range(T))``).

In Pyro the marker lets enumeration recycle tensor dims along the chain. vitorch's
``TraceEnum_ELBO`` gives each enumerated variable its own dim and sums a chain out one
variable at a time (linear in its length), so here the marker only has to be accepted in
its three forms: an iterator over ``range``-like input, a context manager, a decorator.
Without dim recycling a chain is limited by torch's 64 tensor dims: at most about
``64 - max_plate_nesting`` enumerated variables in one run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..runtime import Messenger

__all__ = ["MarkovMessenger", "markov"]


class MarkovMessenger(Messenger):
    """The context of one step of a Markov chain (``history`` steps of dependence)."""

    def __init__(
        self,
        fn: Callable | None = None,
        history: int = 1,
        keep: bool = False,
        dim: int | None = None,
        name: str | None = None,
    ):
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(f"markov: history must be a non-negative int, got {history!r}")
        super().__init__(fn)
        self.history = history
        self.keep = keep
        self.dim = dim
        self.name = name

    def generator(self, iterable: Iterable) -> Iterator:
        for item in iterable:
            with self:
                yield item


def markov(
    fn: Any = None,
    history: int = 1,
    keep: bool = False,
    dim: int | None = None,
    name: str | None = None,
) -> Any:
    """``markov(range(T))`` iterates inside a Markov context; ``markov()`` is a context
    manager; ``markov(fn)`` wraps a function (Pyro's three forms)."""
    if fn is not None and not callable(fn):
        if isinstance(fn, Iterable):
            return MarkovMessenger(history=history, keep=keep, dim=dim, name=name).generator(fn)
        raise TypeError(
            f"markov expects an iterable, a callable or nothing, got {type(fn).__name__}"
        )
    return MarkovMessenger(fn, history=history, keep=keep, dim=dim, name=name)
