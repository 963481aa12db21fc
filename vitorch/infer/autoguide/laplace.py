"""The Laplace approximation: a MAP point over the latent vector, then a Gaussian around it.

:class:`AutoLaplaceApproximation` is a point mass at ``loc`` over the flattened
unconstrained latent vector. Its sites get the log-Jacobians of the maps to their supports,
as in every :class:`~vitorch.infer.autoguide.AutoContinuous` guide, so the ELBO of this
guide is ``log p(x, z(u)) + log|det dz/du|``: the log joint density of the *unconstrained*
vector ``u``, and SVI finds its mode. :meth:`~AutoLaplaceApproximation.laplace_approximation`
then returns the Normal whose mean is that mode and whose precision is the Hessian of the
negative log density there, as an :class:`~vitorch.infer.autoguide.AutoMultivariateNormal`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributions import transform_to

from ...handlers.block import BlockMessenger
from ..elbo import Trace_ELBO
from . import dists
from .continuous import AutoContinuous, AutoMultivariateNormal
from .normal import _quantile_levels

__all__ = ["AutoLaplaceApproximation"]


class AutoLaplaceApproximation(AutoContinuous):
    """A MAP guide over the unconstrained latent vector, turned into a Gaussian afterwards.

    Usage::

        delta_guide = AutoLaplaceApproximation(model)
        svi = SVI(model, delta_guide, optim, Trace_ELBO())
        ...  # fit: delta_guide.loc converges to the mode in unconstrained space
        guide = delta_guide.laplace_approximation(*args)  # an AutoMultivariateNormal

    Parameter: ``loc`` (``latent_dim``), the point. The mode is that of the density of the
    unconstrained vector, which includes the log-Jacobians of ``biject_to(support)``: for a
    positive site that is the mode of ``log x`` under the posterior, not the log of the
    mode of ``x``.

    :param model: the model; every latent site must have a continuous support.
    :param init_loc_fn: per-site initialization of ``loc`` (default: prior median).
    """

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        self.loc = nn.Parameter(init_loc)

    def get_posterior(self, *args: Any, **kwargs: Any) -> Any:
        """``Delta(loc)`` over the latent vector (``event_dim`` 1)."""
        # The self-scoring Delta returns loc itself as its draw, so gradients reach loc
        # without going through an expand, and scores it 0 without a comparison.
        return dists.delta(self.loc, 0.0, 1)

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Every quantile of a point mass is the point: the median repeated per level."""
        self._require_setup(args, kwargs, "quantiles")
        result = {}
        for name, value in self.median(*args, **kwargs).items():
            q = _quantile_levels(quantiles, value)
            result[name] = value.expand((len(q),) + value.shape).clone()
        return result

    def _neg_log_density_hessian(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The Hessian in ``loc`` of the Trace_ELBO loss of (model, this guide).

        With a point-mass guide the loss is deterministic, ``-log p(x, z(loc)) -
        log|det dz/du|(loc)``, the negative log density of the unconstrained vector.
        """
        loc = self.loc
        d = loc.numel()
        with torch.enable_grad():
            loss = Trace_ELBO().differentiable_loss(self.model, self, *args, **kwargs)
            (grad,) = torch.autograd.grad(loss, loc, create_graph=True)
            rows = []
            for i in range(d):
                gi = grad[i]
                if not gi.requires_grad:
                    # The loss is at most linear in loc: this row is zero.
                    rows.append(torch.zeros_like(loc))
                    continue
                (row,) = torch.autograd.grad(gi, loc, retain_graph=True, allow_unused=True)
                rows.append(torch.zeros_like(loc) if row is None else row)
        hessian = torch.stack(rows).detach()
        # Autograd's two orders of differentiation round differently.
        return (hessian + hessian.T) / 2

    def laplace_approximation(self, *args: Any, **kwargs: Any) -> AutoMultivariateNormal:
        """The Gaussian approximation at the current ``loc``, as a ready-to-use guide.

        Returns a new :class:`~vitorch.infer.autoguide.AutoMultivariateNormal` for the same
        model, set up with these arguments, whose ``loc`` is this guide's ``loc`` and
        whose covariance is ``H^{-1}``, where ``H`` is the Hessian at ``loc`` of the negative
        log joint density of the unconstrained latent vector. Its parameters live in the
        param store under its own names (``AutoMultivariateNormal.loc`` ...).

        Call it after fitting, with the model's arguments (all the data: a subsampled
        plate makes ``H`` a random estimate).

        :raises ValueError: if the guide has not run yet and no arguments are given, or if
            ``H`` is not positive definite (``loc`` is not at a mode, or the density is flat
            in some direction).
        """
        self._require_setup(args, kwargs, "laplace_approximation")
        who = f"{type(self).__name__}.laplace_approximation"
        hessian = self._neg_log_density_hessian(args, kwargs)
        if not bool(torch.isfinite(hessian).all()):
            raise ValueError(
                f"{who}: the Hessian of the negative log density at loc has non-finite "
                f"entries; loc = {self.loc.detach()}"
            )
        # Factor and invert in double precision: H can be ill-conditioned (strongly
        # correlated latents) and its inverse is what the caller reads.
        h64 = hessian.double()
        chol_h, info = torch.linalg.cholesky_ex(h64)
        if int(info) != 0:
            eigenvalues = torch.linalg.eigvalsh(h64)
            raise ValueError(
                f"{who}: the Hessian of the negative log density at loc is not positive "
                f"definite (eigenvalues {eigenvalues.tolist()}), so it is not the precision "
                f"of a Gaussian: loc is not at a local mode of the posterior in "
                f"unconstrained space (fit the guide to convergence first), or the posterior "
                f"is flat in some direction (a latent the data and prior do not determine)"
            )
        cov = torch.cholesky_inverse(chol_h)
        scale_tril, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:  # only when H is positive definite but numerically singular
            raise ValueError(
                f"{who}: the Hessian of the negative log density at loc is numerically "
                f"singular (eigenvalues {torch.linalg.eigvalsh(h64).tolist()}); the posterior "
                f"is (nearly) flat in some direction"
            )
        dtype = self.loc.dtype
        diag = scale_tril.diagonal()
        scale = diag.to(dtype)
        unit_tril = (scale_tril / diag[:, None]).to(dtype)
        loc = self.loc.detach().clone()

        guide = AutoMultivariateNormal(self.model, init_loc_fn=self.init_loc_fn)
        guide._setup_prototype(*args, **kwargs)
        # Register the new guide's parameters in the param store now, so that a stale
        # entry under the same names (an earlier AutoMultivariateNormal) is adopted here,
        # before the Laplace values overwrite it, rather than on the first call.
        with BlockMessenger():
            guide.get_posterior()
        with torch.no_grad():
            guide.loc.copy_(loc)
            guide.scale_unconstrained.copy_(transform_to(guide.scale_constraint).inv(scale))
            guide.scale_tril_unconstrained.copy_(
                transform_to(guide.scale_tril_constraint).inv(unit_tril)
            )
        return guide
