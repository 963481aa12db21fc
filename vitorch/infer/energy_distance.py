"""``EnergyDistance``: a likelihood-free objective, the posterior predictive energy distance.

With ``K`` particles ``Z_k ~ q`` and posterior predictive draws ``X_k ~ p(x | Z_k)`` of
every observed site (the model runs under ``uncondition``), and the data ``x`` (all
observed sites flattened into one vector, each entry weighted by its site's scale and
mask), the loss is

    mean_k ||X_k - x||^beta - 1/2 mean_{i > j} ||X_i - X_j||^beta - prior_scale * log_prior

(Szekely & Rizzo 2003; Gneiting & Raftery 2007). The first two terms estimate the
energy distance between the predictive and the data up to a constant; it is a strictly
proper scoring rule for ``0 < beta < 2`` when ``E ||X||^beta`` is finite, and it never
evaluates the likelihood's density, so the likelihood needs only ``rsample``.
``log_prior`` is, as in Pyro, the model's latent log-density summed over the ``K``
particles (not averaged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..handlers.block import BlockMessenger
from ..handlers.plate import PlateMessenger
from ..handlers.replay import ReplayMessenger
from ..handlers.trace import Trace, TraceMessenger
from ..handlers.uncondition import UnconditionMessenger
from .elbo import _counts, _scaled_total

__all__ = ["EnergyDistance"]


def _squared_distance(x: torch.Tensor, y: torch.Tensor, scale: Any, mask: Any) -> torch.Tensor:
    """Per-pair ``sum_b scale_b * mask_b * ||x_b - y_b||^2`` for ``(n, batch, event)`` inputs."""
    per_item = ((x - y) ** 2).sum(-1)  # (n, batch)
    if isinstance(scale, torch.Tensor) or (scale != 1):
        per_item = per_item * scale
    if mask is not None and mask is not True:
        per_item = torch.where(torch.as_tensor(mask), per_item, per_item.new_zeros(()))
    return per_item.sum(-1)


class EnergyDistance:
    """The posterior predictive energy distance with an optional prior term (Pyro's
    ``EnergyDistance``); call it as ``loss = energy(model, guide, *args, **kwargs)``.

    :param beta: the exponent, in the open interval ``(0, 2)``; use a small one for
        heavy-tailed data (``beta < 1`` for Cauchy).
    :param prior_scale: the weight (>= 0) of the prior term. Model parameters are
        trained only when it is positive; at 0 no log-density is evaluated at all.
    :param num_particles: the number ``K`` (>= 2) of vectorized particles.
    :param max_plate_nesting: bound on the nesting of the model's plates (guessed by one
        run when infinite); the particles use dim ``-(max_plate_nesting + 1)``.

    It needs a fully reparameterized guide and observed sites whose distributions have
    ``rsample``; the model's latent sites may be of any kind. It is a loss callable,
    not an ELBO: ``SVI(model, guide, optim, loss=EnergyDistance())`` backpropagates it.
    """

    def __init__(
        self,
        beta: float = 1.0,
        prior_scale: float = 0.0,
        num_particles: int = 2,
        max_plate_nesting: float = math.inf,
    ):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 2:
            raise ValueError(
                f"EnergyDistance: beta must be in the open interval (0, 2), got {beta!r}"
            )
        if (
            isinstance(prior_scale, bool)
            or not isinstance(prior_scale, (int, float))
            or not prior_scale >= 0
        ):
            raise ValueError(
                f"EnergyDistance: prior_scale must be a number >= 0, got {prior_scale!r}"
            )
        if (
            isinstance(num_particles, bool)
            or not isinstance(num_particles, int)
            or num_particles < 2
        ):
            raise ValueError(
                f"EnergyDistance: num_particles must be an int >= 2 (the entropy term needs "
                f"pairs of particles), got {num_particles!r}"
            )
        if max_plate_nesting != math.inf and (
            isinstance(max_plate_nesting, bool)
            or not isinstance(max_plate_nesting, int)
            or max_plate_nesting < 0
        ):
            raise ValueError(
                f"EnergyDistance: max_plate_nesting must be a non-negative int or inf, "
                f"got {max_plate_nesting!r}"
            )
        self.beta = beta
        self.prior_scale = prior_scale
        self.num_particles = num_particles
        self.vectorize_particles = True
        self.max_plate_nesting = max_plate_nesting

    def _pow(self, squared: torch.Tensor) -> torch.Tensor:
        return squared.sqrt() if self.beta == 1 else squared.pow(self.beta / 2)

    def _guess_max_plate_nesting(self, model: Callable, guide: Callable, args, kwargs) -> None:
        with BlockMessenger():
            guide_trace = TraceMessenger(guide).get_trace(*args, **kwargs)
            model_trace = TraceMessenger(ReplayMessenger(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
        self.max_plate_nesting = max(
            (
                -frame.dim
                for tr in (guide_trace, model_trace)
                for site in tr.nodes.values()
                if site.type == "sample"
                for frame in site.cond_indep_stack
                if frame.dim is not None
            ),
            default=0,
        )

    def _get_traces(self, model: Callable, guide: Callable, args, kwargs) -> tuple[Trace, Trace]:
        """(guide trace, model trace) of ``K`` vectorized particles; the model's observed
        sites hold posterior predictive draws (their data in ``infer["obs"]``)."""
        if self.max_plate_nesting == math.inf:
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        dim = -(int(self.max_plate_nesting) + 1)
        with PlateMessenger("num_particles_vectorized", self.num_particles, dim=dim):
            guide_trace = TraceMessenger(guide).get_trace(*args, **kwargs)
            model_trace = TraceMessenger(
                UnconditionMessenger(ReplayMessenger(model, trace=guide_trace))
            ).get_trace(*args, **kwargs)
        for name, site in guide_trace.nodes.items():
            if site.type == "sample" and _counts(site) and not site.fn.has_rsample:
                raise ValueError(
                    f"EnergyDistance requires a fully reparameterized guide: guide site "
                    f"{name!r} ({type(site.fn).__name__}) has no rsample"
                )
        for name, site in model_trace.nodes.items():
            if site.type == "sample" and site.infer.get("was_observed", False):
                site.is_observed = True
                if not site.fn.has_rsample:
                    raise ValueError(
                        f"EnergyDistance requires reparameterized likelihoods: observed site "
                        f"{name!r} ({type(site.fn).__name__}) has no rsample"
                    )
        return guide_trace, model_trace

    def __call__(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The loss as a tensor whose gradient is an unbiased estimate of the loss's."""
        _, model_trace = self._get_traces(model, guide, args, kwargs)
        k = self.num_particles
        observed = [
            (name, site)
            for name, site in model_trace.nodes.items()
            if site.type == "sample" and site.is_observed and _counts(site)
        ]
        if not observed:
            raise ValueError(
                "EnergyDistance found no observed sites in the model: it compares the "
                "posterior predictive with observations (sample(..., obs=data))"
            )
        pairs = torch.ones(k, k).tril(-1).nonzero()  # every (i, j) with i > j
        squared_error: Any = 0.0
        squared_spread: Any = 0.0
        for name, site in observed:
            data = torch.as_tensor(site.infer["obs"])
            event_dim = len(site.fn.event_shape)
            batch_shape = data.shape[: data.dim() - event_dim]
            n_batch = batch_shape.numel()
            n_event = data.shape[data.dim() - event_dim :].numel()
            sample = site.value
            if sample.numel() != k * n_batch * n_event:
                raise ValueError(
                    f"EnergyDistance: observed site {name!r}: the predictive draws have shape "
                    f"{tuple(sample.shape)}, which is not {k} particles of the data's shape "
                    f"{tuple(data.shape)}; give the observations the site's full batch shape"
                )
            scale, mask = site.scale, site.mask
            if isinstance(scale, torch.Tensor) and scale.dim() > 0:
                scale = scale.expand(batch_shape).reshape(-1)
            if isinstance(mask, torch.Tensor) and mask.dim() > 0:
                mask = mask.expand(batch_shape).reshape(-1)
            data = data.reshape(1, n_batch, n_event)
            sample = sample.reshape(k, n_batch, n_event)
            squared_error = squared_error + _squared_distance(sample, data, scale, mask)
            squared_spread = squared_spread + _squared_distance(
                sample[pairs[:, 0]], sample[pairs[:, 1]], scale, mask
            )
        energy = self._pow(squared_error).mean() - 0.5 * self._pow(squared_spread).mean()
        if self.prior_scale == 0:
            return energy
        log_prior: Any = 0.0
        for site in model_trace.nodes.values():
            if site.type == "sample" and not site.is_observed and _counts(site):
                log_prior = log_prior + _scaled_total(site)
        return energy - self.prior_scale * log_prior

    def loss(self, *args: Any, **kwargs: Any) -> float:
        """Not available, as in Pyro: the objective is defined by its surrogate only; call
        the object itself for the loss tensor."""
        raise NotImplementedError(
            "EnergyDistance implements only the surrogate loss: call energy(model, guide, *args)"
        )
