"""Per-site guides: ``AutoNormal`` (mean-field Normal) and ``AutoDelta`` (MAP).

Each latent site gets its own parameters, named after the site (``guide.locs.<site>``),
and its own sample statement in the guide, inside the site's plates.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch

from ...distributions import constraints
from ...distributions.delta import Delta
from ...distributions.torch import Normal
from ...nn.module import PyroModule, PyroParam
from ...primitives import sample
from . import dists
from .base import AutoGuide, _Latent, check_init_scale, deep_setattr, enter_plates, subsample
from .initialization import init_to_feasible, init_to_median

__all__ = ["AutoNormal", "AutoDelta"]


def _quantile_levels(quantiles: Any, like: torch.Tensor) -> torch.Tensor:
    q = torch.as_tensor(quantiles, dtype=like.dtype, device=like.device)
    if q.dim() != 1 or not bool(((q > 0) & (q < 1)).all()):
        raise ValueError(
            f"quantiles must be a list of numbers strictly between 0 and 1, got {quantiles!r}"
        )
    return q


class AutoNormal(AutoGuide):
    """A mean-field guide: an independent Normal for each latent site, in unconstrained space.

    For a site with real support the guide's distribution at the site is
    ``Normal(loc, scale).to_event(n)`` itself, so ``TraceMeanField_ELBO`` uses the analytic
    KL against a Normal prior; otherwise it is that Normal pushed through
    ``biject_to(support)`` (a ``TransformedDistribution``; against a ``LogNormal`` prior
    the KL is analytic too).

    :param model: the model.
    :param init_loc_fn: per-site initialization of ``loc`` (see
        :mod:`~vitorch.infer.autoguide.initialization`).
    :param init_scale: initial ``scale`` of every site in unconstrained space (> 0).
    :param create_plates: see :class:`AutoGuide`.

    Parameters: ``guide.locs.<site>`` (real) and ``guide.scales.<site>``
    (``softplus_positive``), at the full size of subsampled plates.

    Example:
        >>> import torch, vitorch
        >>> import vitorch.distributions as dist
        >>> def model():
        ...     vitorch.sample("x", dist.Normal(0.0, 1.0))
        >>> guide = AutoNormal(model)
        >>> sorted(guide())
        ['x']
        >>> guide.scales.x
        tensor(0.1000, grad_fn=<SoftplusBackward0>)
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
    ):
        init_scale = check_init_scale(init_scale, type(self).__name__)
        super().__init__(model, create_plates=create_plates)
        self._init_scale = init_scale
        self.init_loc_fn = init_loc_fn

    def _setup_params(self) -> None:
        self.locs = PyroModule()
        self.scales = PyroModule()
        self._event_dims = {}
        for name, latent in self._latents.items():  # type: ignore[union-attr]
            event_dim = latent.unconstrained_event_dim
            self._event_dims[name] = event_dim
            init = latent.init
            deep_setattr(self.locs, name, PyroParam(init, constraints.real, event_dim))
            deep_setattr(
                self.scales,
                name,
                PyroParam(
                    torch.full_like(init, self._init_scale), self.scale_constraint, event_dim
                ),
            )

    def _get_loc_and_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (full-size, unconstrained) ``loc`` and ``scale`` of site ``name``."""
        latent = self._latents[name]  # type: ignore[index]
        return latent.get(self.locs), latent.get(self.scales)

    def _site_dist(self, latent: _Latent, loc: torch.Tensor, scale: torch.Tensor) -> Any:
        fn = dists.normal(loc, scale).to_event(latent.unconstrained_event_dim)
        if latent.is_identity:
            return fn
        # Cached transforms: log_prob of the value just drawn reuses the draw's
        # unconstrained value instead of inverting the transform.
        transforms = [t.with_cache(1) for t in latent.parts]
        return dists.Pushforward(fn, transforms, fn.batch_shape, latent.event_shape)

    def _sample(self, plates: dict, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
        result = {}
        locs, scales = self.locs, self.scales
        for name, latent in self._latents.items():  # type: ignore[union-attr]
            loc, scale = latent.get(locs), latent.get(scales)
            if not latent.frames:
                result[name] = sample(name, self._site_dist(latent, loc, scale))
                continue
            with ExitStack() as stack:
                entered, indices = enter_plates(stack, plates, latent)
                event_dim = latent.unconstrained_event_dim
                loc = subsample(loc, latent.frames, entered, indices, event_dim)
                scale = subsample(scale, latent.frames, entered, indices, event_dim)
                result[name] = sample(name, self._site_dist(latent, loc, scale))
        return result

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """``biject_to(support)(loc)`` per site, at full plate size."""
        latents = self._require_setup(args, kwargs, "median")
        return {name: latent.constrain(latent.get(self.locs)) for name, latent in latents.items()}

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per site, the quantiles of the Normal mapped to the support, stacked on dim 0.

        Example: ``guide.quantiles([0.05, 0.5, 0.95])["x"][0]`` is the 5% quantile of ``x``.
        """
        latents = self._require_setup(args, kwargs, "quantiles")
        result = {}
        for name, latent in latents.items():
            loc, scale = self._get_loc_and_scale(name)
            q = _quantile_levels(quantiles, loc).reshape((-1,) + (1,) * loc.dim())
            result[name] = latent.constrain(Normal(loc, scale).icdf(q))
        return result


class AutoDelta(AutoGuide):
    """A MAP guide: a point mass at a learned value for each latent site.

    The value is a parameter in the site's constrained space, ``guide.<site>``; the ELBO
    of a Delta guide is the log joint density, so SVI finds a mode of the posterior (in
    the constrained parametrization).

    :param model: the model.
    :param init_loc_fn: per-site initialization (default: prior median).
    :param create_plates: see :class:`AutoGuide`.
    """

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        *,
        create_plates: Callable | None = None,
    ):
        super().__init__(model, create_plates=create_plates)
        self.init_loc_fn = init_loc_fn

    def _setup_params(self) -> None:
        for name, latent in self._latents.items():  # type: ignore[union-attr]
            head = name.split(".")[0]
            if hasattr(type(self), head) or head in self.__dict__:
                raise ValueError(
                    f"AutoDelta keeps the value of site {name!r} as the attribute "
                    f"guide.{name}, but {head!r} is already an attribute of AutoDelta; "
                    f"rename the site"
                )
            value = latent.constrain(latent.init)
            deep_setattr(self, name, PyroParam(value, latent.site.fn.support, latent.event_dim))

    def _sample(self, plates: dict, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
        result = {}
        for name, latent in self._latents.items():  # type: ignore[union-attr]
            value = latent.get(self)
            if not latent.frames:
                result[name] = sample(name, Delta(value, event_dim=latent.event_dim))
                continue
            with ExitStack() as stack:
                entered, indices = enter_plates(stack, plates, latent)
                value = subsample(value, latent.frames, entered, indices, latent.event_dim)
                result[name] = sample(name, Delta(value, event_dim=latent.event_dim))
        return result

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The point estimate of each site, at full plate size."""
        latents = self._require_setup(args, kwargs, "median")
        return {name: latent.get(self).detach().clone() for name, latent in latents.items()}

    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Every quantile of a point mass is the point: the value repeated per level."""
        self._require_setup(args, kwargs, "quantiles")
        medians = self.median(*args, **kwargs)
        result = {}
        for name, value in medians.items():
            q = _quantile_levels(quantiles, value)
            result[name] = value.expand((len(q),) + value.shape).clone()
        return result
