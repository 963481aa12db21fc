"""``ProjectedNormalReparam``: a ``ProjectedNormal`` latent as a normalized Normal draw."""

from __future__ import annotations

import torch

from ...distributions import Normal, ProjectedNormal
from ...distributions.transforms import Normalize
from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["ProjectedNormalReparam"]


class ProjectedNormalReparam(Reparam):
    """Sample ``{name}_normal ~ Normal(0, 1)`` (one vector per event) and return the site
    as the direction of ``concentration + {name}_normal``, which is ``ProjectedNormal``.

    The auxiliary site has no parameters, so the geometry seen by inference is simple.
    Latent sites only.
    """

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample ``{name}_normal`` and return the site as its normalized shift."""
        name = msg["name"]
        value = msg["value"]
        if msg["is_observed"]:
            raise NotImplementedError(
                f"ProjectedNormalReparam at site {name!r}: observed sites are not supported"
            )
        fn, event_dim = self._unwrap(msg["fn"])
        if not isinstance(fn, ProjectedNormal):
            raise ValueError(
                f"ProjectedNormalReparam at site {name!r}: expected a ProjectedNormal "
                f"(optionally wrapped in Independent), got {type(fn).__name__}"
            )
        c = fn.concentration
        # An initial value on the sphere has many preimages; this one maps back onto it.
        x = None if value is None else value - c
        x = self._sample_aux(
            f"{name}_normal",
            self._wrap(Normal(torch.zeros_like(c), 1.0).to_event(1), event_dim),
            x,
            False,
        )
        if value is None:
            value = Normalize()(x + c)
        return self._deterministic_result(value, event_dim)
