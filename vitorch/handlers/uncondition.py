"""``uncondition``: observed sites are sampled instead, their data kept in ``infer``."""

from __future__ import annotations

from collections.abc import Callable

from ..runtime import Message, Messenger

__all__ = ["UnconditionMessenger", "uncondition"]


class UnconditionMessenger(Messenger):
    """Draw every observed sample site from its distribution, ignoring the observation.

    The observation moves to ``msg.infer["obs"]`` (with ``infer["was_observed"] = True``),
    so that code downstream can still find it.
    """

    def _pyro_sample(self, msg: Message) -> None:
        if not msg.is_observed:
            return
        msg.infer = {**msg.infer, "was_observed": True, "obs": msg.value}
        msg.is_observed = False
        msg.value = None
        msg.done = False


def uncondition(fn: Callable | None = None) -> UnconditionMessenger:
    """Sample the observed sites of ``fn`` instead of conditioning on their data."""
    return UnconditionMessenger(fn)
