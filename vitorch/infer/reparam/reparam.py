"""The base class of reparameterizers, and helpers they share."""

from __future__ import annotations

from typing import Any, TypedDict

import torch

from ...distributions.delta import Delta
from ...runtime import _STACK, Message, apply_stack

__all__ = ["Reparam", "ReparamMessage", "ReparamResult"]


class ReparamMessage(TypedDict):
    """What a reparameterizer is given: the site's name, distribution and value."""

    name: str
    fn: Any
    value: torch.Tensor | None
    is_observed: bool


class ReparamResult(TypedDict):
    """What a reparameterizer returns: the site's new distribution and value."""

    fn: Any
    value: torch.Tensor | None
    is_observed: bool


class Reparam:
    """Base class of reparameterizers, used by :func:`vitorch.poutine.reparam`.

    A subclass implements :meth:`apply`. While ``apply`` runs under a decorated model,
    ``self.args_kwargs`` holds the model's ``(args, kwargs)``; otherwise it is ``None``.
    """

    args_kwargs: tuple[tuple, dict] | None = None

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Reparameterize one site.

        ``msg`` has the keys ``name``, ``fn`` (the distribution), ``value`` (an observed or
        initial value, or ``None``) and ``is_observed``. The method may sample auxiliary
        sites and returns a dict with the site's new ``fn``, ``value`` and ``is_observed``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement apply(msg)")

    # -- helpers for subclasses ------------------------------------------------------------
    @staticmethod
    def _unwrap(fn: Any) -> tuple[Any, int]:
        """Strip ``Independent`` wrappers; return the inner distribution and the event dim."""
        event_dim = len(fn.event_shape)
        while isinstance(fn, torch.distributions.Independent):
            fn = fn.base_dist
        return fn, event_dim

    @staticmethod
    def _wrap(fn: Any, event_dim: int) -> Any:
        """Reinterpret batch dims of ``fn`` as event dims until it has ``event_dim`` of them."""
        extra = event_dim - len(fn.event_shape)
        if extra < 0:
            raise ValueError(
                f"cannot give a distribution with event_shape {tuple(fn.event_shape)} an "
                f"event dim of {event_dim}"
            )
        if extra == 0:
            return fn
        from ...distributions import Independent

        return Independent(fn, extra)

    @staticmethod
    def _sample_aux(name: str, fn: Any, value: torch.Tensor | None, is_observed: bool) -> Any:
        """Sample the auxiliary site ``name``, keeping ``value`` (observed or initial).

        ``vitorch.sample(obs=...)`` always marks the site observed; an initial value of a
        latent site (set by an initialization handler) must stay latent, so that case
        builds the message by hand.
        """
        msg = Message(
            "sample", name, fn, value=value, is_observed=value is not None and is_observed
        )
        if not _STACK:  # called outside any handler (e.g. in a unit test): just draw
            if value is not None:
                return value
            return fn.rsample() if fn.has_rsample else fn.sample()
        apply_stack(msg)
        return msg.value

    @staticmethod
    def _deterministic_result(value: torch.Tensor, event_dim: int) -> ReparamResult:
        """The site as a ``deterministic`` one: an observed Delta with zero log-density."""
        return {
            "fn": Delta(value, event_dim=event_dim).mask(False),
            "value": value,
            "is_observed": True,
        }
