"""``queue``: run a model once per complete assignment of its discrete sites.

The queue holds partial traces. Each call takes one, replays it, and runs the model until
the first discrete site the partial trace does not fix; there it escapes, puts back one
extended trace per value of that site (``extend_fn``), and tries the next partial trace.
A call returns as soon as one trace runs to the end, so successive calls walk through
every assignment (breadth- or depth-first, depending on the queue's order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .escape import NonlocalExit, escape
from .replay import replay
from .trace import trace

__all__ = ["queue"]


def queue(
    fn: Callable | None = None,
    queue: Any = None,
    max_tries: int | None = None,
    extend_fn: Callable | None = None,
    escape_fn: Callable | None = None,
    num_samples: int | None = None,
):
    """Wrap ``fn`` so that each call completes one partial trace taken from ``queue``.

    :param queue: a ``queue.Queue`` (or anything with ``get``, ``put`` and ``empty``)
        seeded with at least one trace, usually an empty ``vitorch.poutine.Trace()``.
    :param max_tries: partial traces one call may try before giving up (default 10**6).
    :param extend_fn: ``extend_fn(trace, site, num_samples=...)`` -> traces extending
        ``trace`` by values of ``site`` (default: every value of its support).
    :param escape_fn: ``escape_fn(trace, msg)`` -> whether to stop at ``msg`` (default: a
        latent site with enumerable support that ``trace`` does not fix).
    :param num_samples: passed to ``extend_fn`` (-1 or None: no limit).
    """
    from ..poutine.util import discrete_escape, enum_extend

    if queue is None or not all(hasattr(queue, m) for m in ("get", "put", "empty")):
        raise TypeError(
            f"queue expects queue=, an object with get/put/empty such as queue.Queue(); "
            f"got {type(queue).__name__}"
        )
    max_tries = int(1e6) if max_tries is None else max_tries
    extend_fn = enum_extend if extend_fn is None else extend_fn
    escape_fn = discrete_escape if escape_fn is None else escape_fn
    num_samples = -1 if num_samples is None else num_samples

    def wrap(model: Callable) -> Callable:
        @functools.wraps(model)
        def run(*args: Any, **kwargs: Any) -> Any:
            for _ in range(max_tries):
                if queue.empty():
                    raise ValueError(
                        "queue: the queue is empty; seed it with a trace (e.g. "
                        "q.put(vitorch.poutine.Trace())) and do not call the model more "
                        "times than there are assignments"
                    )
                partial = queue.get()
                traced = trace(
                    escape(
                        replay(model, trace=partial),
                        escape_fn=functools.partial(escape_fn, partial),
                    )
                )
                try:
                    return traced(*args, **kwargs)
                except NonlocalExit as exit_:
                    exit_.reset_stack()
                    for extended in extend_fn(
                        traced.trace.copy(), exit_.site, num_samples=num_samples
                    ):
                        queue.put(extended)
            raise ValueError(f"queue: max_tries ({max_tries}) exceeded")

        return run

    return wrap(fn) if fn is not None else wrap
