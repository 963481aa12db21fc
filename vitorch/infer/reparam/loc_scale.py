"""``LocScaleReparam``: (partial) decentering of location-scale latent variables."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch.distributions import constraints

from ...distributions.stable import Stable
from ...primitives import param
from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["LocScaleReparam"]

# Families where X = loc + scale * Z with Z free of loc and scale; only these can be
# decentered. (LogNormal has loc/scale parameters too, but they are not of this kind.)
_LOC_SCALE_FAMILIES = (
    torch.distributions.Normal,
    torch.distributions.StudentT,
    torch.distributions.Cauchy,
    torch.distributions.Laplace,
    torch.distributions.Gumbel,
    Stable,  # in its S0 coordinates, where loc and scale are a location and a scale
)


class LocScaleReparam(Reparam):
    """Decenter a location-scale latent site (Gorinova, Moore and Hoffman, 2019).

    A site ``x ~ D(loc, scale)`` becomes an auxiliary site
    ``{name}_decentered``: ``y ~ D(c * loc, scale ** c)`` and the deterministic
    ``x = loc + scale ** (1 - c) * (y - c * loc)``, which has the same distribution as
    before. ``c = 1`` leaves the site as it is (centered); ``c = 0`` is the fully
    decentered (non-centered) form ``x = loc + scale * y`` with ``y ~ D(0, 1)``.

    :param centered: ``c``, a number or tensor in ``[0, 1]``; ``None`` (default) learns it
        as the parameter ``{name}_centered`` (one entry per event element, starting at 0.5).
    :param shape_params: names of the other parameters copied unchanged to the decentered
        distribution (e.g. ``("df",)`` for ``StudentT``); by default all of the
        distribution's parameters other than ``loc`` and ``scale``.

    Supported families: Normal, StudentT, Cauchy, Laplace, Gumbel and Stable (S0), possibly wrapped in
    ``Independent`` (``.to_event(...)``).
    """

    def __init__(
        self,
        centered: float | torch.Tensor | None = None,
        shape_params: Sequence[str] | None = None,
    ) -> None:
        if centered is not None:
            if isinstance(centered, bool) or not isinstance(centered, (numbers.Real, torch.Tensor)):
                raise TypeError(
                    f"LocScaleReparam: centered must be None, a number or a tensor in [0, 1], "
                    f"got {type(centered).__name__}"
                )
            bad = (
                not 0 <= centered <= 1
                if isinstance(centered, numbers.Real)
                else not bool(((centered >= 0) & (centered <= 1)).all())
            )
            if bad:
                raise ValueError(f"LocScaleReparam: centered must lie in [0, 1], got {centered}")
        if shape_params is not None:
            if isinstance(shape_params, str) or not all(isinstance(k, str) for k in shape_params):
                raise TypeError(
                    f"LocScaleReparam: shape_params must be a list or tuple of parameter "
                    f"names, got {shape_params!r}"
                )
            shape_params = tuple(shape_params)
        self.centered = centered
        self.shape_params = shape_params

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample ``{name}_decentered`` and return the site as a deterministic function of it."""
        name = msg["name"]
        fn = msg["fn"]
        value = msg["value"]
        is_observed = msg["is_observed"]

        centered = self.centered
        if isinstance(centered, numbers.Real) and centered == 1:
            return {"fn": fn, "value": value, "is_observed": is_observed}

        event_shape = fn.event_shape
        base, event_dim = self._unwrap(fn)
        if not isinstance(base, _LOC_SCALE_FAMILIES):
            raise ValueError(
                f"LocScaleReparam at site {name!r}: expected a location-scale distribution "
                f"({', '.join(c.__name__ for c in _LOC_SCALE_FAMILIES)}, optionally "
                f"wrapped in Independent), got {type(base).__name__}"
            )

        if isinstance(base, Stable) and base.coords != "S0":
            raise ValueError(
                f"LocScaleReparam at site {name!r}: a Stable must use coords='S0' (its loc "
                f"is a location there), got coords={base.coords!r}"
            )
        shape_params = self.shape_params
        if shape_params is None:
            shape_params = tuple(k for k in base.arg_constraints if k not in ("loc", "scale"))
        params = {}
        for key in shape_params:
            if not hasattr(base, key):
                raise ValueError(
                    f"LocScaleReparam at site {name!r}: shape_params names {key!r}, which "
                    f"{type(base).__name__} does not have"
                )
            params[key] = getattr(base, key)

        loc, scale = base.loc, base.scale
        if centered is None:
            centered = param(
                f"{name}_centered",
                lambda: loc.new_full(event_shape, 0.5),
                constraint=constraints.unit_interval,
            )
        params["loc"] = loc * centered
        params["scale"] = scale**centered
        decentered_fn = self._wrap(type(base)(**params), event_dim)

        # A value that is already there (observed, or an initial value) is carried over to
        # the auxiliary site by inverting the map, differentiably.
        decentered_value = None
        if value is not None:
            decentered_value = (value - loc) * scale ** (centered - 1) + centered * loc
        decentered_value = self._sample_aux(
            f"{name}_decentered", decentered_fn, decentered_value, is_observed
        )
        if value is None:
            value = loc + scale ** (1 - centered) * (decentered_value - centered * loc)
        return self._deterministic_result(value, event_dim)
