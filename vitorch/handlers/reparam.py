"""``reparam``: replace chosen sample sites by auxiliary sites and a deterministic map."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..runtime import Message, Messenger, get_stack

if TYPE_CHECKING:
    from ..infer.reparam.reparam import Reparam

__all__ = ["ReparamMessenger", "reparam"]


def _init_messengers_outside(me: Messenger) -> list[Messenger]:
    """The ``InitMessenger`` handlers further out than ``me``, innermost first."""
    # Imported here: the autoguide package imports the handlers, not the other way round.
    from ..infer.autoguide.initialization import InitMessenger

    stack = get_stack()
    try:
        mine = stack.index(me)
    except ValueError:
        return []
    return [m for m in reversed(stack[:mine]) if isinstance(m, InitMessenger)]


class ReparamMessenger(Messenger):
    """Reparameterize sample sites, each into auxiliary sample sites and a deterministic map.

    ``config`` is a dict from site name to a :class:`~vitorch.infer.reparam.Reparam`, or a
    callable taking the site's message and returning a ``Reparam`` or ``None`` (leave the
    site alone). The chosen reparameterizer's ``apply`` samples its auxiliary sites (say
    ``theta_decentered``) and returns a new distribution and value for the site; the site
    then becomes an observed, zero-density ``Delta`` at that value, so that the joint
    density lives in the auxiliary sites while the program downstream sees the same value.

    Used as a decorator (``reparam(model, config)``) the model's arguments are made
    available to reparameterizers as ``reparam.args_kwargs`` while ``apply`` runs.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        config: Mapping[str, Reparam] | Callable[[Message], Reparam | None] | None = None,
    ):
        if config is None and isinstance(fn, Mapping):
            # Pyro's ReparamMessenger takes the config as its first argument.
            fn, config = None, fn
        if not isinstance(config, Mapping) and not callable(config):
            raise TypeError(
                f"reparam: config must be a dict of site name -> Reparam, or a callable "
                f"taking a site and returning a Reparam or None, got {type(config).__name__}"
            )
        super().__init__(fn)
        self.config = config
        self._args_kwargs: tuple[tuple, dict] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            return super().__call__(*args, **kwargs)
        # Remember the arguments for reparameterizers that look at them; nested calls
        # restore the outer arguments on the way out.
        saved = self._args_kwargs
        self._args_kwargs = (args, kwargs)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._args_kwargs = saved

    def _pyro_sample(self, msg: Message) -> None:
        if getattr(msg.fn, "_is_subsample", False):
            return
        if isinstance(self.config, Mapping):
            reparam = self.config.get(msg.name)
        else:
            reparam = self.config(msg)
        if reparam is None:
            return
        if not hasattr(reparam, "apply"):
            raise TypeError(
                f"reparam: the reparameterizer for site {msg.name!r} must be a Reparam "
                f"(with an apply method), got {type(reparam).__name__}"
            )

        # An initialization handler outside this one would only see the reparameterized
        # site, which then already has its value; let it set the original site's value
        # first, so that the reparameterizer carries the initial value over to its
        # auxiliary sites. Initialization never overwrites a value, so running it again
        # later on the same message is harmless.
        if msg.value is None and not msg.is_observed:
            for m in _init_messengers_outside(self):
                m._process_message(msg)

        old_value = msg.value
        reparam.args_kwargs = self._args_kwargs
        try:
            result = reparam.apply(
                {
                    "name": msg.name,
                    "fn": msg.fn,
                    "value": msg.value,
                    "is_observed": msg.is_observed,
                }
            )
        finally:
            reparam.args_kwargs = None

        value = result["value"]
        if (
            isinstance(value, torch.Tensor)
            and isinstance(old_value, torch.Tensor)
            and value is not old_value
            and value.shape != old_value.shape
        ):
            raise ValueError(
                f"reparam: {type(reparam).__name__} changed the shape of site {msg.name!r} "
                f"from {tuple(old_value.shape)} to {tuple(value.shape)}"
            )
        msg.fn = result["fn"]
        msg.value = value
        msg.is_observed = result["is_observed"]


def reparam(
    fn: Callable | None = None,
    config: Mapping[str, Reparam] | Callable[[Message], Reparam | None] | None = None,
) -> ReparamMessenger:
    """Reparameterize the sample sites selected by ``config`` (see :class:`ReparamMessenger`)."""
    return ReparamMessenger(fn, config=config)
