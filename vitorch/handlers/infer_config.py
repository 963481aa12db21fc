"""``infer_config``: add per-site inference settings from a function of the site."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..runtime import Message, Messenger

__all__ = ["InferConfigMessenger", "infer_config"]


class InferConfigMessenger(Messenger):
    """Update each sample and param site's ``infer`` dict with ``config_fn(site)``."""

    def __init__(
        self,
        fn: Callable | None = None,
        config_fn: Callable[[Message], Mapping[str, Any]] | None = None,
    ):
        super().__init__(fn)
        if not callable(config_fn):
            raise TypeError(
                f"infer_config expects config_fn, a callable site -> dict, got "
                f"{type(config_fn).__name__}"
            )
        self.config_fn = config_fn

    def _configure(self, msg: Message) -> None:
        config = self.config_fn(msg)
        if not isinstance(config, Mapping):
            raise TypeError(
                f"infer_config: config_fn must return a dict for site {msg.name!r}, got "
                f"{type(config).__name__}"
            )
        # A new dict: the user's own infer= dict is not written to.
        msg.infer = {**msg.infer, **config}

    def _pyro_sample(self, msg: Message) -> None:
        self._configure(msg)

    def _pyro_param(self, msg: Message) -> None:
        self._configure(msg)


def infer_config(
    fn: Callable | None = None, config_fn: Callable[[Message], Mapping[str, Any]] | None = None
) -> InferConfigMessenger:
    """Set ``infer`` options at the sites of ``fn`` from ``config_fn(site)``."""
    return InferConfigMessenger(fn, config_fn=config_fn)
