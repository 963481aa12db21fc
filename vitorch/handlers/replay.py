"""``replay``: reuse the values of a recorded trace (how the model sees the guide's draws)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runtime import Message, Messenger

__all__ = ["ReplayMessenger", "replay"]


class ReplayMessenger(Messenger):
    """Latent sample sites take the value recorded in ``trace``; params take ``params[name]``."""

    def __init__(self, fn: Callable | None = None, trace: Any = None, params: dict | None = None):
        super().__init__(fn)
        if trace is None and params is None:
            raise ValueError("replay needs a trace= or params= to replay")
        self.nodes = trace.nodes if trace is not None else None
        self.params = params

    def _pyro_sample(self, msg: Message) -> None:
        if self.nodes is None or msg.is_observed:
            return
        guide_site = self.nodes.get(msg.name)
        if guide_site is None:
            return
        if guide_site.type != "sample" or guide_site.is_observed:
            raise ValueError(
                f"replay: site {msg.name!r} is latent here but {'observed' if guide_site.is_observed else guide_site.type} "
                f"in the replayed trace; it must be sampled there"
            )
        msg.value = guide_site.value
        msg.infer = guide_site.infer
        msg.done = True

    def _pyro_param(self, msg: Message) -> None:
        if self.params is not None and msg.name in self.params:
            msg.value = self.params[msg.name]
            msg.done = True


def replay(fn: Callable | None = None, trace: Any = None, params: dict | None = None):
    """Run ``fn`` with its latent sites set to the values in ``trace`` (and params from ``params``)."""
    return ReplayMessenger(fn, trace=trace, params=params)
