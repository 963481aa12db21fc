"""Joint guides over the flattened latent vector: diagonal, full-rank and low-rank Normals.

All latent sites are mapped to unconstrained space and concatenated into one vector of
length ``latent_dim``. The guide draws that vector once, at an auxiliary site
``_<guide name>_latent``, and then gives each model site its slice, mapped back to the
support, as a ``Delta`` whose log-density is the log-Jacobian of that map; the guide's
log-density is therefore the density of the constrained values, and the ELBO counts the
entropy correctly.

A guide of this family says only what differs: its parameters (``_setup_params``) and its
distribution over the vector (``get_posterior``, ``get_transform``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from ...distributions import constraints
from ...distributions.avf_mvn import AVFMultivariateNormal
from ...distributions.omt_mvn import OMTMultivariateNormal
from ...distributions.torch import (
    LowRankMultivariateNormal,
    Normal,
    TransformedDistribution,
)
from ...distributions.transforms import AffineTransform, LowerCholeskyAffine
from ...nn.module import PyroParam
from ...primitives import sample
from . import dists
from .base import AutoGuide, _Latent, check_init_scale, enter_plates, subsample
from .initialization import init_to_median
from .normal import _quantile_levels

__all__ = [
    "AutoContinuous",
    "AutoDiagonalNormal",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
]


class AutoContinuous(AutoGuide):
    """Base class of the guides over the flattened unconstrained latent vector.

    :param model: the model; every latent site must have a continuous support.
    :param init_loc_fn: per-site initialization of the mean (default: prior median).
    """

    def __init__(self, model: Callable, init_loc_fn: Callable = init_to_median):
        super().__init__(model)
        self.init_loc_fn = init_loc_fn
        self.latent_dim = 0

    def _init_loc(self) -> torch.Tensor:
        """The initial values of all sites, unconstrained and flattened into one vector."""
        latents = self._latents.values()  # type: ignore[union-attr]
        if not latents:
            raise ValueError(
                f"{type(self).__name__} found no latent sample sites in the model; a model "
                f"without latent variables needs no guide (use an empty function)"
            )
        return torch.cat([latent.init.reshape(-1) for latent in latents])

    def _setup_params(self) -> None:
        init_loc = self._init_loc()
        self.latent_dim = init_loc.numel()
        self._sizes = [site.numel for site in self._latents.values()]  # type: ignore[union-attr]
        self._setup_posterior(init_loc)

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        """Create the parameters of the distribution over the latent vector."""
        raise NotImplementedError

    # -- the distribution over the vector ------------------------------------------------
    def get_base_dist(self) -> Any:
        """``Normal(0, 1)`` over the latent vector, the base of :meth:`get_transform`."""
        zeros = torch.zeros(self.latent_dim)
        return Normal(zeros, torch.ones(self.latent_dim), validate_args=False).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> Any:
        """The map from the base distribution to the posterior over the latent vector."""
        raise NotImplementedError

    def get_posterior(self, *args: Any, **kwargs: Any) -> Any:
        """The distribution over the unconstrained latent vector."""
        return TransformedDistribution(self.get_base_dist(), self.get_transform(*args, **kwargs))

    def sample_latent(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Draw the latent vector, at the auxiliary site ``_<name>_latent``."""
        return sample(
            f"_{self._pyro_name}_latent",
            self.get_posterior(*args, **kwargs),
            infer={"is_auxiliary": True},
        )

    # -- vector <-> sites ----------------------------------------------------------------
    def _unpack_latent(self, latent: torch.Tensor) -> Iterator[tuple[_Latent, torch.Tensor]]:
        """(site, unconstrained value) per site, from a vector with optional batch dims.

        Batch dims of ``latent`` (vectorized particles, the draws of ``Predictive``) are
        placed left of the site's plate dims, where the plates that made them expect them.
        """
        batch_shape = latent.shape[:-1]
        for site, piece in zip(self._latents.values(), latent.split(self._sizes, -1)):  # type: ignore[union-attr]
            shape = site.unconstrained_shape
            if batch_shape:
                shape = torch.broadcast_shapes(
                    shape, batch_shape + (1,) * site.unconstrained_event_dim
                )
            yield site, piece.reshape(shape)

    def _sample(self, plates: dict, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
        latent = self.sample_latent(*args, **kwargs)
        result = {}
        for site, unconstrained in self._unpack_latent(latent):
            value, log_density = site.constrain_with_log_density(unconstrained)
            if not site.frames:
                fn = dists.delta(value, log_density, site.event_dim)
                result[site.name] = sample(site.name, fn)
                continue
            with ExitStack() as stack:
                entered, indices = enter_plates(stack, plates, site)
                value = subsample(value, site.frames, entered, indices, site.event_dim)
                if isinstance(log_density, torch.Tensor):
                    log_density = subsample(log_density, site.frames, entered, indices, 0)
                fn = dists.delta(value, log_density, site.event_dim)
                result[site.name] = sample(site.name, fn)
        return result

    # -- summaries -----------------------------------------------------------------------
    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and marginal standard deviations of the latent vector."""
        posterior = self.get_posterior(*args, **kwargs)
        return posterior.mean, posterior.stddev

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The posterior median per site: the mean of the vector, mapped to each support."""
        self._require_setup(args, kwargs, "median")
        loc, _ = self._loc_scale(*args, **kwargs)
        return {site.name: site.constrain(u) for site, u in self._unpack_latent(loc.detach())}

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Marginal quantiles per site, stacked along a new leftmost dim."""
        self._require_setup(args, kwargs, "quantiles")
        loc, scale = self._loc_scale(*args, **kwargs)
        q = _quantile_levels(quantiles, loc).unsqueeze(-1)
        result: dict[str, list[torch.Tensor]] = {}
        for row in Normal(loc, scale).icdf(q):
            for site, u in self._unpack_latent(row):
                result.setdefault(site.name, []).append(site.constrain(u))
        return {name: torch.stack(values) for name, values in result.items()}


class AutoDiagonalNormal(AutoContinuous):
    """A Normal with diagonal covariance over the latent vector.

    Parameters: ``loc`` (``latent_dim``) and ``scale`` (``softplus_positive``).
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self, model: Callable, init_loc_fn: Callable = init_to_median, init_scale: float = 0.1
    ):
        init_scale = check_init_scale(init_scale, type(self).__name__)
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._init_scale = init_scale

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        self.loc = nn.Parameter(init_loc)
        self.scale = PyroParam(torch.full_like(init_loc, self._init_scale), self.scale_constraint)

    def get_transform(self, *args: Any, **kwargs: Any) -> Any:
        """``loc + scale * eps``."""
        return AffineTransform(self.loc, self.scale, event_dim=1)

    def get_posterior(self, *args: Any, **kwargs: Any) -> Any:
        """``Normal(loc, scale).to_event(1)``."""
        return dists.normal(self.loc, self.scale).to_event(1)


_ESTIMATORS = ("reparam", "omt", "avf")


class AutoMultivariateNormal(AutoContinuous):
    """A full-rank Normal over the latent vector, with ``L = diag(scale) @ scale_tril``.

    Parameters: ``loc``, ``scale`` (``softplus_positive``, the marginal scales' factor) and
    ``scale_tril`` (``unit_lower_cholesky``, the correlations); the covariance is ``L L^T``.

    :param estimator: how the gradient of the draw reaches ``scale_tril``: ``"reparam"``
        (the pathwise gradient), ``"omt"`` (optimal-transport gradients, see
        :class:`~vitorch.distributions.OMTMultivariateNormal`) or ``"avf"`` (a learned
        control variate, :class:`~vitorch.distributions.AVFMultivariateNormal`, whose
        weights ``control_var`` of shape ``(2, avf_rank, latent_dim)`` are a parameter
        of the guide, optimized with the others). All three have the same distribution.
    :param avf_rank: the rank ``L`` of the AVF control variate's weights.
    """

    scale_constraint = constraints.softplus_positive
    scale_tril_constraint = constraints.unit_lower_cholesky

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        *,
        estimator: str = "reparam",
        avf_rank: int = 2,
    ):
        init_scale = check_init_scale(init_scale, type(self).__name__)
        if estimator not in _ESTIMATORS:
            raise ValueError(
                f"AutoMultivariateNormal: estimator must be one of {_ESTIMATORS}, got {estimator!r}"
            )
        if isinstance(avf_rank, bool) or not isinstance(avf_rank, int) or avf_rank < 1:
            raise ValueError(
                f"AutoMultivariateNormal: avf_rank must be a positive int, got {avf_rank!r}"
            )
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._init_scale = init_scale
        self.estimator = estimator
        self.avf_rank = avf_rank

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        d = init_loc.numel()
        self.loc = nn.Parameter(init_loc)
        self.scale = PyroParam(torch.full_like(init_loc, self._init_scale), self.scale_constraint)
        self.scale_tril = PyroParam(
            torch.eye(d, dtype=init_loc.dtype, device=init_loc.device), self.scale_tril_constraint
        )
        if self.estimator == "avf":
            # Small and nonzero, so that both factors of the weights get a gradient.
            self.control_var = nn.Parameter(init_loc.new_full((2, self.avf_rank, d), 0.1))

    def get_transform(self, *args: Any, **kwargs: Any) -> Any:
        """``loc + L @ eps``."""
        return LowerCholeskyAffine(self.loc, self.scale[..., None] * self.scale_tril)

    def get_posterior(self, *args: Any, **kwargs: Any) -> Any:
        """``MultivariateNormal(loc, scale_tril=scale[..., None] * scale_tril)``."""
        scale_tril = self.scale[..., None] * self.scale_tril
        if self.estimator == "omt":
            return OMTMultivariateNormal(self.loc, scale_tril, validate_args=False)
        if self.estimator == "avf":
            return AVFMultivariateNormal(
                self.loc, scale_tril, self.control_var, validate_args=False
            )
        return dists.multivariate_normal(self.loc, scale_tril)


class AutoLowRankMultivariateNormal(AutoContinuous):
    """A Normal over the latent vector with low-rank plus diagonal covariance.

    The covariance is ``scale * (cov_factor cov_factor^T + I) * scale``: parameters ``loc``,
    ``scale`` (``softplus_positive``) and ``cov_factor`` (``latent_dim x rank``).

    :param rank: the rank of ``cov_factor``; default about ``sqrt(latent_dim)``.
    :param init_scale: the approximate initial marginal standard deviation.
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        rank: int | None = None,
    ):
        init_scale = check_init_scale(init_scale, type(self).__name__)
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(
                f"AutoLowRankMultivariateNormal: rank must be a positive int or None, got {rank!r}"
            )
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._init_scale = init_scale
        self.rank = rank

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        d = init_loc.numel()
        if self.rank is None:
            self.rank = max(1, round(math.sqrt(d)))
        self.loc = nn.Parameter(init_loc)
        # cov_factor's rows have expected squared norm 1, so the marginal variance starts
        # near scale^2 * 2; halving scale^2 makes it init_scale^2.
        self.scale = PyroParam(
            torch.full_like(init_loc, self._init_scale * 0.5**0.5), self.scale_constraint
        )
        self.cov_factor = nn.Parameter(init_loc.new_empty(d, self.rank).normal_(0, self.rank**-0.5))

    def get_transform(self, *args: Any, **kwargs: Any) -> Any:
        """``loc + chol(covariance) @ eps``."""
        posterior = self.get_posterior(*args, **kwargs)
        return LowerCholeskyAffine(posterior.loc, posterior.scale_tril)

    def get_posterior(self, *args: Any, **kwargs: Any) -> Any:
        """``LowRankMultivariateNormal(loc, scale * cov_factor, scale ** 2)``."""
        scale = self.scale
        return LowRankMultivariateNormal(
            self.loc, self.cov_factor * scale.unsqueeze(-1), scale * scale, validate_args=False
        )
