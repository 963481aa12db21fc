"""``escape``: leave a run of the model early, at the first site that ``escape_fn`` picks.

The chosen site is not sampled; its message travels out inside a :class:`NonlocalExit`
exception, so a caller can look at the partial trace and the site, and decide what to do
(``vitorch.poutine.queue`` uses this to enumerate discrete sites one at a time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runtime import Message, Messenger, get_stack

__all__ = ["EscapeMessenger", "NonlocalExit", "escape"]


class NonlocalExit(Exception):
    """Raised at a site chosen by :func:`escape`; ``.site`` is that site's message."""

    def __init__(self, site: Message, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.site = site

    def reset_stack(self) -> None:
        """Reset the handlers still active where the exception was caught.

        Handlers inside the catch point have already left the stack (they are context
        managers); those outside it, e.g. a ``trace`` around a ``queue``-wrapped model,
        drop what the abandoned run recorded, up to a ``block`` that hides the site.
        """
        from .block import BlockMessenger

        for handler in reversed(get_stack()):
            handler._reset()
            if isinstance(handler, BlockMessenger) and handler.hide_fn(self.site):
                break


class EscapeMessenger(Messenger):
    """Raise :class:`NonlocalExit` at the first sample site for which ``escape_fn(msg)``."""

    def __init__(self, fn: Callable | None = None, escape_fn: Callable | None = None):
        super().__init__(fn)
        if not callable(escape_fn):
            raise TypeError(
                f"escape expects escape_fn, a callable taking a site's message and returning "
                f"a bool; got {type(escape_fn).__name__}"
            )
        self.escape_fn = escape_fn

    def _pyro_sample(self, msg: Message) -> None:
        if not self.escape_fn(msg):
            return
        # Skip sampling and the handlers further out; raise once the inner ones are done.
        msg.done = True
        msg.stop = True

        def exit_here(m: Message) -> None:
            raise NonlocalExit(m)

        msg.continuation = exit_here


def escape(fn: Callable | None = None, escape_fn: Callable | None = None):
    """Run ``fn`` until a sample site with ``escape_fn(msg)`` true; raise NonlocalExit there."""
    return EscapeMessenger(fn, escape_fn=escape_fn)
