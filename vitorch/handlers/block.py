"""``block``: hide sites from the handlers outside this one."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..runtime import Message, Messenger

__all__ = ["BlockMessenger", "block"]


def _as_set(names: Iterable[str] | None, arg: str) -> frozenset:
    if names is None:
        return frozenset()
    if isinstance(names, str):
        raise TypeError(f"block: {arg} expects a list of names, got the string {names!r}")
    return frozenset(names)


class BlockMessenger(Messenger):
    """Stop messages chosen by name or type from reaching outer handlers.

    ``hide_fn(msg) -> bool`` decides directly; else ``expose_fn``; else a site is hidden
    when it is listed in ``hide``/``hide_types``, exposed when listed in
    ``expose``/``expose_types``, and otherwise hidden unless ``expose_all``.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        hide_fn: Callable[[Message], bool] | None = None,
        expose_fn: Callable[[Message], bool] | None = None,
        hide_all: bool = True,
        expose_all: bool = False,
        hide: Iterable[str] | None = None,
        expose: Iterable[str] | None = None,
        hide_types: Iterable[str] | None = None,
        expose_types: Iterable[str] | None = None,
    ):
        super().__init__(fn)
        if hide_fn is not None and expose_fn is not None:
            raise ValueError("block: give hide_fn or expose_fn, not both")
        hide_s, expose_s = _as_set(hide, "hide"), _as_set(expose, "expose")
        hide_t, expose_t = _as_set(hide_types, "hide_types"), _as_set(expose_types, "expose_types")
        if hide_fn is not None:
            self.hide_fn = hide_fn
        elif expose_fn is not None:
            self.hide_fn = lambda msg: not expose_fn(msg)
        else:
            default_hidden = hide_all and not expose_all
            if hide_s or hide_t:
                # Listing what to hide means: hide that, expose the rest.
                default_hidden = False

            def hide_fn(msg: Message) -> bool:
                if msg.name in hide_s or msg.type in hide_t:
                    return True
                if msg.name in expose_s or msg.type in expose_t:
                    return False
                return default_hidden

            self.hide_fn = hide_fn

    def _process_message(self, msg: Message) -> None:
        if self.hide_fn(msg):
            msg.stop = True


def block(fn: Callable | None = None, **kwargs):
    """Hide sites of ``fn`` from outer handlers (all of them by default)."""
    return BlockMessenger(fn, **kwargs)
