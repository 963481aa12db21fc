"""``equalize``: give every site whose name matches one value, the first such site's."""

from __future__ import annotations

import re
from collections.abc import Callable

from ..runtime import Message, Messenger

__all__ = ["EqualizeMessenger", "equalize"]


class EqualizeMessenger(Messenger):
    """Sites of ``type`` whose names fully match one of ``sites`` (regular expressions)
    take the value of the first of them that runs.

    With ``keep_dist=False`` the later sites become point masses that add nothing to the
    log-density; with ``keep_dist=True`` they keep their distribution and are scored as
    observed at the shared value, which conditions the model on the sites being equal.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        sites: str | list[str] | None = None,
        type: str = "sample",
        keep_dist: bool = False,
    ):
        super().__init__(fn)
        if isinstance(sites, str):
            sites = [sites]
        if (
            not isinstance(sites, (list, tuple))
            or not sites
            or not all(isinstance(s, str) for s in sites)
        ):
            raise TypeError(
                f"equalize expects sites, a name pattern or a non-empty list of them, got {sites!r}"
            )
        self.patterns = [re.compile(s) for s in sites]
        self.type = type
        self.keep_dist = keep_dist
        self.value = None

    def __enter__(self) -> EqualizeMessenger:
        self.value = None  # one shared value per run
        return super().__enter__()  # type: ignore[return-value]

    def _matches(self, msg: Message) -> bool:
        return msg.type == self.type and any(p.fullmatch(msg.name) for p in self.patterns)

    def _process_message(self, msg: Message) -> None:
        if self.value is None or not self._matches(msg):
            return
        msg.value = self.value
        if msg.type == "sample":
            msg.is_observed = True
            if not self.keep_dist:
                from ..distributions import Delta

                msg.infer = {"_deterministic": True}
                event_dim = len(getattr(msg.fn, "event_shape", ()))
                msg.fn = Delta(self.value, event_dim=event_dim).mask(False)

    def _postprocess_message(self, msg: Message) -> None:
        if self.value is None and self._matches(msg):
            self.value = msg.value


def equalize(
    fn: Callable | None = None,
    sites: str | list[str] | None = None,
    type: str = "sample",
    keep_dist: bool = False,
):
    """Make the ``type`` sites matching ``sites`` share the value of the first one."""
    return EqualizeMessenger(fn, sites=sites, type=type, keep_dist=keep_dist)
