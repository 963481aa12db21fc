"""Pyro's import path for :class:`Trace`."""

from ..handlers.trace import Trace

__all__ = ["Trace"]
