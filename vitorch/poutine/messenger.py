"""Pyro's import path for the handler base class."""

from ..runtime import Messenger

__all__ = ["Messenger"]
