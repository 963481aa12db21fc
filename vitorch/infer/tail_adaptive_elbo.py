"""``TraceTailAdaptive_ELBO``: tail-adaptive f-divergence gradients (Wang, Liu & Liu 2018).

With ``K`` vectorized particles and log weights ``log w_k = log p(x, z_k) - log q(z_k)``,
each particle gets the weight ``rho_k = F(w_k) ** beta``, where
``F(t) = #{j : w_j >= t} / K`` is the empirical tail probability of the weights and
``beta = tail_adaptive_beta`` (``-1`` by default, so the heaviest weights count most).
The surrogate loss is ``-sum_k rho_k log w_k / sum_k rho_k`` with ``rho`` held fixed; its
gradient is the paper's update. Only the gradient has a meaning: the divergence itself
is not estimated, so :meth:`loss` raises and a training step reports ``inf`` (as Pyro
does); monitor progress with another objective, e.g. ``RenyiELBO``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..params import record_params
from .elbo import Trace_ELBO, _counts, _scaled_total, _warn_missing

__all__ = ["TraceTailAdaptive_ELBO"]


def tail_adaptive_weights(log_w: torch.Tensor, beta: float) -> torch.Tensor:
    """``F(w_k) ** beta`` for the empirical tail probability ``F(t) = #{j: w_j >= t} / K``.

    ``log_w`` is 1-d, one entry per particle; the result is detached, same shape.
    """
    log_w = log_w.detach()
    k = log_w.shape[0]
    ordered, _ = torch.sort(log_w)
    # Entries strictly below w_k come before the first copy of w_k in sorted order.
    below = torch.searchsorted(ordered, log_w, side="left")
    tail = (k - below).to(log_w.dtype) / k
    return tail.pow(beta)


class TraceTailAdaptive_ELBO(Trace_ELBO):
    """Tail-adaptive f-divergence variational inference (Pyro's ``TraceTailAdaptive_ELBO``).

    :param num_particles: the number ``K`` of particles; more than one for an adaptive
        divergence (with one it is the ordinary ELBO gradient).
    :param vectorize_particles: must be True: the weights rank the particles of one
        vectorized batch.
    :param tail_adaptive_beta: the exponent ``beta`` of the tail probability (``-1``).
    :param max_plate_nesting: bound on the nesting of plates (guessed when infinite).

    Every guide site must be reparameterizable. Each particle's log weight sums its
    (scaled) log-densities over all plates.

    The particle weights follow the paper, ``rho_k = F(w_k) ** beta`` with
    ``F(t) = #{j: w_j >= t} / K``. Pyro 1.9's implementation ranks the particles by an
    inverted permutation (pyro-ppl/pyro issue #3170); vitorch uses the paper's ranks.
    """

    def __init__(
        self,
        num_particles: int = 2,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
        tail_adaptive_beta: float = -1.0,
        **kwargs: Any,
    ):
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            **kwargs,
        )
        if not vectorize_particles:
            raise NotImplementedError(
                "TraceTailAdaptive_ELBO only implemented for vectorize_particles==True "
                "(got vectorize_particles=False)"
            )
        if not isinstance(tail_adaptive_beta, (int, float)) or isinstance(tail_adaptive_beta, bool):
            raise TypeError(f"tail_adaptive_beta must be a real number, got {tail_adaptive_beta!r}")
        self.tail_adaptive_beta = float(tail_adaptive_beta)
        if num_particles == 1:
            warnings.warn(
                "For num_particles==1 TraceTailAdaptive_ELBO uses the same loss function "
                "as Trace_ELBO. Increase num_particles to get an adaptive f-divergence.",
                UserWarning,
                stacklevel=2,
            )

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """Not available: this estimator gives gradients only (as in Pyro)."""
        raise NotImplementedError("Loss method for TraceTailAdaptive_ELBO not implemented")

    def _evaluate(self, model, guide, args, kwargs, check_new_obs: bool):
        param_names: dict[str, Any] = {}
        log_w_parts = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            self._check_new_observations(model_trace, validate=check_new_obs)
            log_w_parts.append(self._log_weights(model_trace, guide_trace))
            record_params(param_names, guide_trace, model_trace)
        log_w = torch.cat(log_w_parts)
        rho = tail_adaptive_weights(log_w, self.tail_adaptive_beta)
        surrogate = (rho * log_w).sum() / rho.sum()
        return -surrogate, math.inf, param_names

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any):
        """The surrogate loss, whose gradient is the tail-adaptive update (value: surrogate)."""
        surrogate, _, _ = self._loss_and_params(model, guide, args, kwargs)
        return surrogate

    def _log_weights(self, model_trace, guide_trace) -> torch.Tensor:
        """Per-particle ``log p - log q``, shape ``(K,)`` (``(1,)`` for one particle)."""
        k = self.num_particles if self.num_particles > 1 else 1
        total: Any = 0.0
        for name, site in guide_trace.nodes.items():
            if site.type != "sample" or site.is_observed or not _counts(site):
                continue
            if not site.fn.has_rsample:
                raise NotImplementedError(
                    f"TraceTailAdaptive_ELBO: all distributions in the guide must be fully "
                    f"reparameterized; site {name!r} ({type(site.fn).__name__}) is not"
                )
            if name not in model_trace.nodes:
                _warn_missing(name, site)
        for sign, tr in ((1.0, model_trace), (-1.0, guide_trace)):
            for site in tr.nodes.values():
                if site.type != "sample" or not _counts(site):
                    continue
                if sign < 0 and site.is_observed:
                    continue
                _scaled_total(site)  # fills site.log_prob (scaled, masked)
                lp = site.log_prob
                lp = self._per_particle(lp, k) if k > 1 else lp.sum().reshape(1)
                total = total + sign * lp
        if not isinstance(total, torch.Tensor):
            total = torch.zeros(k)
        return total

    def _per_particle(self, lp: torch.Tensor, k: int) -> torch.Tensor:
        """Sum a vectorized log-density over every dim but the particle dim."""
        particle_dim = -(int(self.max_plate_nesting) + 1)
        if lp.dim() < -particle_dim or lp.shape[particle_dim] == 1:
            # A site that does not depend on the particle: the same term for each.
            return lp.sum().expand(k)
        lp = lp.movedim(particle_dim, 0)
        return lp.reshape(k, -1).sum(-1)
