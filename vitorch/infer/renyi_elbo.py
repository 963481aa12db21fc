"""``RenyiELBO``: the Renyi alpha-divergence bound (Li & Turner 2016).

With ``K`` particles ``z_k ~ q`` and importance weights ``w_k = p(x, z_k) / q(z_k)``, the
bound is ``1 / (1 - alpha) * log(1/K sum_k w_k ** (1 - alpha))``. ``alpha = 0`` is the
importance-weighted (IWAE) bound of Burda et al.; as ``alpha -> 1`` it tends to the ELBO
(use ``Trace_ELBO`` there). For ``alpha >= 0`` it is a lower bound of ``log p(x)``, and
for ``alpha = 0`` it increases with ``K``.

A particle's log weight sums every site's log-density over the plates that not all
sites share; plates shared by every site (every site local to one data item) stay
separate, so each item gets its own bound, which is tighter and still valid because
both model and guide factorize over those plates.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..handlers.trace import Trace
from ..params import record_params
from .elbo import ELBO, _counts, _nonfinite_error, _scaled_total, _warn_missing

__all__ = ["RenyiELBO"]

_PARTICLE_PLATE = "num_particles_vectorized"


def _frames(site: Any) -> set[tuple[str, int]]:
    return {
        (f.name, f.dim)
        for f in site.cond_indep_stack
        if f.dim is not None and f.name != _PARTICLE_PLATE
    }


def _reduce(value: torch.Tensor, keep: set[int], ndim: int) -> torch.Tensor:
    """Sum ``value`` over every dim not in ``keep``; return it with exactly ``ndim`` dims."""
    dims = [d for d in range(-value.dim(), 0) if d not in keep]
    if dims:
        value = value.sum(dims, keepdim=True)
    if ndim == 0:
        return value.reshape(())
    if value.dim() > ndim:
        # The leading dims were summed to size 1 (they are not kept), so this drops them.
        return value.reshape(value.shape[value.dim() - ndim :])
    return value.reshape((1,) * (ndim - value.dim()) + tuple(value.shape))


class RenyiELBO(ELBO):
    """The Renyi alpha-divergence bound (Pyro's ``RenyiELBO``); ``alpha=0`` is the IWAE bound.

    :param alpha: the order of the divergence; any real number except 1. For
        ``alpha >= 0`` the objective is a lower bound of the log evidence.
    :param num_particles: the number ``K`` of importance samples (default 2).
    :param max_plate_nesting: bound on the nesting of plates (guessed when infinite).
    :param vectorize_particles: draw the ``K`` particles in one vectorized run.
    :param strict_enumeration_warning: accepted for compatibility with Pyro.

    The gradient is, for reparameterized guide sites, the pathwise gradient of the
    ``K``-sample bound: ``sum_k wbar_k grad log w_k`` with self-normalized weights
    ``wbar_k`` proportional to ``w_k ** (1 - alpha)``. A guide site that cannot be
    reparameterized adds a score-function term (the detached bound times
    ``grad log q`` of every particle's draws), which keeps the gradient an unbiased
    estimate of the bound's gradient. (Pyro uses a cheaper self-normalized term there,
    ``wbar_k * alpha / (1 - alpha) * grad log q_k``, which is only consistent as
    ``K`` grows.)
    """

    def __init__(
        self,
        alpha: float = 0,
        num_particles: int = 2,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = False,
        strict_enumeration_warning: bool = True,
    ):
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or math.isnan(alpha):
            raise TypeError(f"RenyiELBO: alpha must be a real number, got {alpha!r}")
        if alpha == 1:
            raise ValueError(
                "RenyiELBO: alpha must not be 1 (got alpha=1); the alpha -> 1 limit is the "
                "ordinary ELBO: use Trace_ELBO for it."
            )
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            strict_enumeration_warning=strict_enumeration_warning,
        )
        self.alpha = float(alpha)

    # The bound is not a sum over particles, so the base class's averaging is not used.
    def _evaluate(self, model, guide, args, kwargs, check_new_obs: bool):
        vectorized = self.vectorize_particles and self.num_particles > 1
        particles = []
        param_names: dict[str, Any] = {}
        traces = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            self._check_new_observations(model_trace, validate=check_new_obs)
            particles.append(self._log_weight(model_trace, guide_trace, vectorized))
            record_params(param_names, guide_trace, model_trace)
            traces.append((model_trace, guide_trace))

        if vectorized:
            log_w, log_q_nonreparam = particles[0]
        else:
            log_w = torch.stack([torch.as_tensor(p[0]) for p in particles])
            nonreparam = [p[1] for p in particles]
            log_q_nonreparam = (
                None
                if all(q is None for q in nonreparam)
                else torch.stack(
                    [torch.zeros_like(log_w[0]) if q is None else q for q in nonreparam]
                )
            )
        scale = 1.0 - self.alpha
        k = log_w.shape[0]
        scaled = scale * log_w
        # log (1/K sum_k w_k^(1-alpha)), per item of the plates every site shares.
        log_mean = torch.logsumexp(scaled, dim=0) - math.log(k)
        bound = log_mean / scale
        value = bound.detach().sum()
        loss_value = -float(value)
        if not math.isfinite(loss_value):
            raise _nonfinite_error(loss_value, traces)
        if not log_w.requires_grad and log_q_nonreparam is None:
            return -value, loss_value, param_names
        # Pathwise part: sum_k wbar_k * log w_k with detached self-normalized weights.
        weights = torch.softmax(scaled.detach(), dim=0)
        surrogate = (weights * log_w).sum()
        if log_q_nonreparam is not None:
            # Score function: the bound (a function of all K draws) times the score of
            # each draw; the bound is detached, so only the score carries gradient.
            surrogate = surrogate + (bound.detach().unsqueeze(0) * log_q_nonreparam).sum()
        return -surrogate, loss_value, param_names

    def _log_weight(
        self, model_trace: Trace, guide_trace: Trace, vectorized: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log w, summed log q of non-reparameterized draws) of one particle or batch.

        Both have the particle dim first (when vectorized) followed by one dim per
        plate that every site shares.
        """
        sites = []
        for site in model_trace.nodes.values():
            if site.type == "sample" and _counts(site):
                sites.append((1.0, site, False))
        for name, site in guide_trace.nodes.items():
            if site.type == "sample" and not site.is_observed and _counts(site):
                if name not in model_trace.nodes:
                    _warn_missing(name, site)
                sites.append((-1.0, site, not site.fn.has_rsample))
        frame_sets = [_frames(site) for _, site, _ in sites]
        common = set.intersection(*frame_sets) if frame_sets else set()
        keep = {dim for _, dim in common}
        ndim = max((-d for d in keep), default=0)
        if vectorized:
            particle_dim = -(int(self.max_plate_nesting) + 1)
            keep.add(particle_dim)
            ndim = -particle_dim
        log_w: Any = 0.0
        log_q: Any = None
        for sign, site, is_nonreparam in sites:
            _scaled_total(site)  # fills site.log_prob (scaled, masked), as other ELBOs do
            term = _reduce(site.log_prob, keep, ndim)
            log_w = log_w + sign * term
            if is_nonreparam:
                # The score is log q of the draw, unscaled and unmasked: the draw shapes
                # every downstream site whether or not its own term counts.
                score = _reduce(site.fn.log_prob(site.value), keep, ndim)
                log_q = score if log_q is None else log_q + score
        if not isinstance(log_w, torch.Tensor):  # no sample sites at all
            log_w = torch.zeros((1,) * ndim)
        if vectorized and log_w.shape[0] != self.num_particles:
            log_w = log_w.expand((self.num_particles,) + tuple(log_w.shape[1:]))
        if vectorized and log_q is not None and log_q.shape[0] != self.num_particles:
            log_q = log_q.expand((self.num_particles,) + tuple(log_q.shape[1:]))
        return log_w, log_q
