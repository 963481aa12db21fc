"""``AutoNormalizingFlow``: a standard Normal pushed through a flow the user chooses.

The guide's distribution over the flattened unconstrained latent vector (see
:class:`~vitorch.infer.autoguide.AutoContinuous`) is ``Normal(0, I)`` mapped by the
transform that ``init_transform_fn(latent_dim)`` builds on the first call, e.g.
``partial(T.iterated, 2, T.spline_coupling)``. A transform that is an ``nn.Module``
(every :class:`~vitorch.distributions.flows.TransformModule`) becomes the guide's
submodule ``transform``, so its parameters are the guide's (in the param store as
``AutoNormalizingFlow.transform$$$...``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributions.transforms import ComposeTransform, Transform
from torch.quasirandom import SobolEngine

from ...distributions.torch import Normal, TransformedDistribution
from .continuous import AutoContinuous
from .initialization import init_to_feasible
from .normal import _quantile_levels

__all__ = ["AutoNormalizingFlow"]


class AutoNormalizingFlow(AutoContinuous):
    """A guide over the latent vector: ``flow(eps)``, ``eps ~ Normal(0, I)``.

    Usage::

        init = partial(T.iterated, 2, T.spline_coupling)   # or any latent_dim -> Transform
        guide = AutoNormalizingFlow(model, init)
        svi = SVI(model, guide, optim, Trace_ELBO())

    The flow must map onto the whole space and, to fit a posterior located away from the
    origin, be able to shift (couplings, autoregressive layers and splines can; a lone
    :class:`~vitorch.distributions.transforms.Planar` hardly). As in Pyro there is no
    separate ``loc``, and the guide does not depend on the model's arguments.

    :meth:`median` and :meth:`quantiles` are the empirical marginal quantiles of 4096
    draws made from a fixed scrambled Sobol sequence (deterministic).

    :param model: the model; every latent site must have a continuous support.
    :param init_transform_fn: callable ``latent_dim -> Transform`` (a ``TransformModule``
        when the flow has parameters).
    """

    num_summary_draws = 4096

    def __init__(self, model: Callable, init_transform_fn: Callable[[int], Transform]) -> None:
        if not callable(init_transform_fn):
            raise TypeError(
                f"AutoNormalizingFlow: init_transform_fn must be a callable latent_dim -> "
                f"Transform, got {type(init_transform_fn).__name__}"
            )
        super().__init__(model, init_loc_fn=init_to_feasible)
        self._init_transform_fn = init_transform_fn

    def _make_transform(self, latent_dim: int) -> Transform:
        """The flow for a latent vector of ``latent_dim`` (subclasses build their own)."""
        return self._init_transform_fn(latent_dim)

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        d = init_loc.numel()
        transform = self._make_transform(d)
        if not isinstance(transform, Transform):
            raise TypeError(
                f"{type(self).__name__}: init_transform_fn({d}) must return a Transform, got "
                f"{type(transform).__name__}"
            )
        if isinstance(transform, nn.Module):
            transform.to(dtype=init_loc.dtype, device=init_loc.device)
        self.transform = transform
        self._dtype, self._device = init_loc.dtype, init_loc.device

    # -- the distribution over the vector ------------------------------------------------
    def get_base_dist(self) -> Any:
        """``Normal(0, 1)`` over the latent vector, of the model's dtype and device."""
        zeros = torch.zeros(self.latent_dim, dtype=self._dtype, device=self._device)
        return Normal(zeros, torch.ones_like(zeros), validate_args=False).to_event(1)

    def _parts(self) -> list[Transform]:
        # A composition is handed over as its parts: the distribution then walks the
        # layers itself and each layer's cache answers the log-density of a fresh draw.
        t = self.transform
        return list(t.parts) if isinstance(t, ComposeTransform) else [t]

    def get_transform(self, *args: Any, **kwargs: Any) -> Any:
        """The flow built by ``init_transform_fn``."""
        return self.transform

    def get_posterior(self, *args: Any, **kwargs: Any) -> Any:
        """``TransformedDistribution(Normal(0, I), flow)``."""
        return TransformedDistribution(self.get_base_dist(), self._parts())

    # -- summaries -----------------------------------------------------------------------
    def _summary_draws(self) -> torch.Tensor:
        """``num_summary_draws`` draws of the vector from a fixed quasi-random sequence."""
        n, d = self.num_summary_draws, self.latent_dim
        if d <= SobolEngine.MAXDIM:
            u = SobolEngine(d, scramble=True, seed=0).draw(n, dtype=torch.float64)
            # A scrambled point may sit on the edge of the cube, where icdf is infinite.
            u = u.clamp(1e-10, 1 - 1e-10).to(dtype=self._dtype, device=self._device)
            x = Normal(torch.zeros_like(u), 1.0).icdf(u)
        else:
            g = torch.Generator(device=self._device).manual_seed(0)
            x = torch.randn((n, d), generator=g, dtype=self._dtype, device=self._device)
        for t in self._parts():
            x = t(x)
        return x

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The marginal medians of the vector (estimated, see the class doc), per site."""
        self._require_setup(args, kwargs, "median")
        med = self._summary_draws().quantile(0.5, dim=0)
        return {site.name: site.constrain(u) for site, u in self._unpack_latent(med)}

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Marginal quantiles (estimated, see the class doc) per site, along a new dim 0."""
        self._require_setup(args, kwargs, "quantiles")
        draws = self._summary_draws()
        q = _quantile_levels(quantiles, draws)
        result: dict[str, list[torch.Tensor]] = {}
        for row in draws.quantile(q, dim=0):
            for site, u in self._unpack_latent(row):
                result.setdefault(site.name, []).append(site.constrain(u))
        return {name: torch.stack(values) for name, values in result.items()}

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and marginal standard deviations of the vector, estimated from the draws."""
        with torch.no_grad():
            draws = self._summary_draws()
        return draws.mean(0), draws.std(0)
