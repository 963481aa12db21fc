"""``TransformReparam``: sample a transformed distribution's base and push it through."""

from __future__ import annotations

import torch

from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["TransformReparam"]


class TransformReparam(Reparam):
    """Reparameterize a ``TransformedDistribution`` site through its base distribution.

    The base is sampled at ``{name}_base`` and the site becomes the deterministic image of
    that draw under the transforms. Useful when the posterior is simpler in the base space.
    The site's distribution may be wrapped in ``Independent`` (``.to_event(...)``).
    """

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample ``{name}_base`` and return the site as its transformed image."""
        name = msg["name"]
        fn, event_dim = self._unwrap(msg["fn"])
        value = msg["value"]
        if not isinstance(fn, torch.distributions.TransformedDistribution):
            raise ValueError(
                f"TransformReparam at site {name!r}: expected a TransformedDistribution "
                f"(optionally wrapped in Independent), got {type(fn).__name__}"
            )

        value_base = value
        if value is not None:
            for t in reversed(fn.transforms):
                value_base = t.inv(value_base)

        # Each transform may change how many rightmost dims form one event.
        base_event_dim = event_dim
        for t in reversed(fn.transforms):
            base_event_dim += t.domain.event_dim - t.codomain.event_dim
        value_base = self._sample_aux(
            f"{name}_base",
            self._wrap(fn.base_dist, base_event_dim),
            value_base,
            msg["is_observed"],
        )

        if value is None:
            value = value_base
            for t in fn.transforms:
                value = t(value)
        return self._deterministic_result(value, event_dim)
