"""``markov``: mark a Markov chain (``for t in vitorch.markov(range(T))``) so that
enumeration can recycle tensor dims along it.

Each entry of a ``markov`` context is one step of the chain. A sample site records, in
``msg.infer["_markov_scope"]``, the names of the sites of the last ``history`` steps and
of its own step (those it may depend on), and in ``msg.infer["_markov_depth"]`` how many
``markov`` contexts enclose it. :class:`vitorch.handlers.enum.EnumMessenger` reads these:
a site enumerated inside the chain may reuse the dim of any variable out of its scope,
so a chain of any length needs only ``history + 1`` enumeration dims.

The iterator form keeps every step's context open until the loop ends (step ``t`` is
nested ``t`` deep), which is how a step sees the ones before it. With ``keep=True`` a
step's sites stay visible after the step's context exits, so sibling branches of a
recursive ``markov`` function may depend on each other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

from ..runtime import Message, Messenger

__all__ = ["MarkovMessenger", "markov"]


class MarkovMessenger(Messenger):
    """The context of one step of a Markov chain (``history`` steps of dependence).

    The handler may be entered again while it is active (the next step of a chain, or a
    recursive call): it stays on the handler stack once and counts its nesting level.
    """

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
        if not isinstance(keep, bool):
            raise TypeError(f"markov: keep must be True or False, got {keep!r}")
        super().__init__(fn)
        self.history = history
        self.keep = keep
        self.dim = dim
        self.name = name
        self._refs = 0  # how many of this handler's contexts are open
        self._pos = -1  # the current step, counted from the outermost open context
        self._steps: list[set[str]] = []  # the site names of each open (or kept) step

    def __enter__(self) -> MarkovMessenger:
        self._pos += 1
        if len(self._steps) <= self._pos:
            self._steps.append(set())
        self._refs += 1
        if self._refs == 1:
            super().__enter__()
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if not self.keep:
            self._steps.pop()
        self._pos -= 1
        self._refs -= 1
        if self._refs == 0:
            self._steps.clear()  # a new run starts with no steps
            super().__exit__(exc_type, exc_value, traceback)

    def generator(self, iterable: Iterable) -> Iterator:
        with ExitStack() as stack:
            for item in iterable:
                stack.enter_context(self)
                yield item

    def _pyro_sample(self, msg: Message) -> None:
        if msg.done or getattr(msg.fn, "_is_subsample", False):
            return
        scope = Counter(msg.infer.get("_markov_scope", ()))
        for pos in range(max(0, self._pos - self.history), self._pos + 1):
            scope.update(self._steps[pos])
        # A new dict: the user's infer= dict may be shared between sites and runs.
        msg.infer = {
            **msg.infer,
            "_markov_scope": scope,
            "_markov_depth": 1 + msg.infer.get("_markov_depth", 0),
        }
        self._steps[self._pos].add(msg.name)


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
