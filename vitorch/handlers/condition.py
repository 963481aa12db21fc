"""``condition`` and ``substitute``: fix site values from a dict (or a trace)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runtime import Message, Messenger

__all__ = ["ConditionMessenger", "SubstituteMessenger", "condition", "substitute"]


def _as_values(data: Any, who: str) -> dict:
    if data is None:
        return {}
    if hasattr(data, "nodes"):  # a Trace
        return {name: site.value for name, site in data.nodes.items() if site.type == "sample"}
    if not hasattr(data, "get"):
        raise TypeError(
            f"{who} expects a dict of site values or a Trace, got {type(data).__name__}"
        )
    return data


class ConditionMessenger(Messenger):
    """Sample sites named in ``data`` become observed with that value."""

    def __init__(self, fn: Callable | None = None, data: Any = None):
        super().__init__(fn)
        self.data = _as_values(data, "condition")

    def _pyro_sample(self, msg: Message) -> None:
        value = self.data.get(msg.name)
        if value is not None:
            msg.value = value
            msg.is_observed = True
            msg.done = True


class SubstituteMessenger(Messenger):
    """Param (and latent sample) sites named in ``data`` take that value, not observed.

    ``substitute_fn(msg) -> value or None`` may be given instead of (or besides) ``data``.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        data: Any = None,
        substitute_fn: Callable[[Message], Any] | None = None,
    ):
        super().__init__(fn)
        self.data = _as_values(data, "substitute")
        self.substitute_fn = substitute_fn

    def _lookup(self, msg: Message) -> Any:
        value = self.data.get(msg.name)
        if value is None and self.substitute_fn is not None:
            value = self.substitute_fn(msg)
        return value

    def _pyro_param(self, msg: Message) -> None:
        value = self._lookup(msg)
        if value is not None:
            msg.value = value
            msg.done = True

    def _pyro_sample(self, msg: Message) -> None:
        if msg.is_observed:
            return
        value = self._lookup(msg)
        if value is not None:
            msg.value = value
            msg.done = True


def condition(fn: Callable | None = None, data: Any = None):
    """Observe the sample sites named in ``data`` at the given values."""
    return ConditionMessenger(fn, data=data)


def substitute(fn: Callable | None = None, data: Any = None, substitute_fn: Callable | None = None):
    """Replace param (and latent) site values by those in ``data`` or from ``substitute_fn``."""
    return SubstituteMessenger(fn, data=data, substitute_fn=substitute_fn)
