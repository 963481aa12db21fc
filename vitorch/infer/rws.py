"""``ReweightedWakeSleep``: reweighted wake-sleep (Bornschein & Bengio 2015; Le et al. 2019).

With ``K`` draws ``z_k ~ q(z)`` whose values are detached (no pathwise gradients) and
log weights ``log w_k = log p_theta(x, z_k) - log q(z_k)``:

- wake-theta: ``-log(1/K sum_k w_k)``, the IWAE bound, trains the model's parameters;
  its gradient is ``-sum_k wbar_k grad log p_theta(x, z_k)`` with self-normalized
  weights ``wbar_k``;
- wake-phi: ``-sum_k wbar_k log q_phi(z_k)`` (weights detached), a self-normalized
  estimate of ``KL(p(z | x) || q)`` up to a constant, trains the guide;
- sleep-phi: ``-1/S sum_s log q_phi(z_s | x_s)`` over ``S`` joint draws
  ``(z_s, x_s) ~ p``, the compiled-inference objective, also trains the guide. The guide
  gets the sampled observations as the keyword argument ``observations`` (a dict by
  site name), so it must accept that keyword.

The guide's loss mixes the two: ``insomnia * wake_phi + (1 - insomnia) * sleep_phi``.
Both losses are returned as a pair ``(wake_theta_loss, phi_loss)``, as in Pyro, and
``SVI.step`` returns that pair of floats.
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
from ..params import record_params
from .elbo import ELBO, _counts, _nonfinite_error, _scaled_total

__all__ = ["ReweightedWakeSleep"]

# Pyro reports this stand-in for the wake-theta loss when it is not computed (pure sleep
# mode with a model without parameters); kept so that logged losses read the same.
_NOT_COMPUTED = 100.0


def _per_particle(log_prob: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """Sum ``log_prob`` over every dim right of the particle dim ``dim``; shape ``(k,)``."""
    if log_prob.dim() < -dim:  # the site does not vary over the particles
        return log_prob.sum().expand(k)
    if dim < -1:
        log_prob = log_prob.sum(list(range(dim + 1, 0)))
    return log_prob.reshape(-1).expand(k)


def _plate_depth(*traces: Trace) -> int:
    return max(
        (
            -frame.dim
            for tr in traces
            for site in tr.nodes.values()
            if site.type == "sample"
            for frame in site.cond_indep_stack
            if frame.dim is not None
        ),
        default=0,
    )


def _observations(model_trace: Trace) -> dict[str, Any]:
    """The sampled values of the model's (unconditioned) observed sites, marked observed again."""
    observations = {}
    for name, site in model_trace.nodes.items():
        if site.type == "sample" and site.infer.get("was_observed", False):
            site.is_observed = True
            observations[name] = site.value
    return observations


def matched_guide_trace(
    model_trace: Trace, guide: Callable, args: tuple, kwargs: dict[str, Any]
) -> Trace:
    """Trace ``guide`` at the latent values of ``model_trace``, a trace of the model run
    under ``uncondition``; the guide gets the sampled observations as ``observations=``."""
    guide_kwargs = {**kwargs, "observations": _observations(model_trace)}
    tracer = TraceMessenger()
    with tracer, ReplayMessenger(trace=model_trace):
        guide(*args, **guide_kwargs)
    return tracer.trace


def _latent_log_q(guide_trace: Trace) -> Any:
    return guide_trace.log_prob_sum(lambda name, site: not site.is_observed and _counts(site))


class ReweightedWakeSleep(ELBO):
    """Reweighted wake-sleep (Pyro's ``ReweightedWakeSleep``).

    :param num_particles: the number ``K`` of guide draws of the wake phases (at least
        2: the weights are self-normalized).
    :param insomnia: in ``[0, 1]``, the weight of wake-phi in the guide's loss (the
        rest goes to sleep-phi). 1 (default) is pure wake-phi, 0 is pure sleep-phi.
    :param model_has_params: when False and ``insomnia`` is 0, the wake phase is skipped
        and the wake-theta loss is Pyro's placeholder 100.0.
    :param num_sleep_particles: the number ``S`` of joint draws of sleep-phi (default
        ``num_particles``).
    :param vectorize_particles: draw the particles in one vectorized run.
    :param max_plate_nesting: bound on the nesting of plates (guessed when infinite).
    :param strict_enumeration_warning: accepted for compatibility with Pyro.

    :meth:`loss` returns the pair ``(wake_theta_loss, phi_loss)`` as 0-d tensors,
    :meth:`loss_and_grads` as floats after backpropagating their sum (the model's
    parameters get the wake-theta gradient and the guide's the phi gradient, since each
    loss depends on one side only).
    """

    def __init__(
        self,
        num_particles: int = 2,
        insomnia: float = 1.0,
        model_has_params: bool = True,
        num_sleep_particles: int | None = None,
        vectorize_particles: bool = True,
        max_plate_nesting: float = math.inf,
        strict_enumeration_warning: bool = True,
    ):
        if (
            isinstance(num_particles, bool)
            or not isinstance(num_particles, int)
            or num_particles < 2
        ):
            raise ValueError(
                f"ReweightedWakeSleep: num_particles must be an int >= 2 (the importance "
                f"weights are self-normalized over the particles), got {num_particles!r}"
            )
        if (
            isinstance(insomnia, bool)
            or not isinstance(insomnia, (int, float))
            or not 0 <= insomnia <= 1
        ):
            raise ValueError(f"ReweightedWakeSleep: insomnia must be in [0, 1], got {insomnia!r}")
        if num_sleep_particles is not None and (
            isinstance(num_sleep_particles, bool)
            or not isinstance(num_sleep_particles, int)
            or num_sleep_particles < 1
        ):
            raise ValueError(
                f"ReweightedWakeSleep: num_sleep_particles must be a positive int or None, "
                f"got {num_sleep_particles!r}"
            )
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            strict_enumeration_warning=strict_enumeration_warning,
        )
        self.insomnia = float(insomnia)
        self.model_has_params = model_has_params
        self.num_sleep_particles = (
            num_particles if num_sleep_particles is None else num_sleep_particles
        )

    @staticmethod
    def _trace_pair(model: Callable, guide: Callable, args, kwargs) -> tuple[Trace, Trace]:
        # The guide's draws are detached before the model sees them: wake phases use
        # score-type gradients only, never pathwise ones.
        guide_tracer = TraceMessenger()
        with guide_tracer:
            guide(*args, **kwargs)
        guide_trace = guide_tracer.trace.detach_()
        model_tracer = TraceMessenger()
        with model_tracer, ReplayMessenger(trace=guide_trace):
            model(*args, **kwargs)
        return guide_trace, model_tracer.trace

    # -- the two phases ----------------------------------------------------------------------
    def _wake(self, model, guide, args, kwargs, check_new_obs, found, traces):
        """(wake-theta loss, wake-phi loss) from ``K`` guide draws."""
        vectorized = self.vectorize_particles
        k = self.num_particles
        log_ps, log_qs = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            self._check_new_observations(model_trace, validate=check_new_obs)
            record_params(found, guide_trace, model_trace)
            traces.append((model_trace, guide_trace))
            dim = -(int(self.max_plate_nesting) + 1) if vectorized else 0
            log_p: Any = 0.0
            log_q: Any = 0.0
            for site in model_trace.nodes.values():
                if site.type == "sample" and _counts(site):
                    total = _scaled_total(site)
                    log_p = log_p + (_per_particle(site.log_prob, dim, k) if vectorized else total)
            for site in guide_trace.nodes.values():
                if site.type == "sample" and not site.is_observed and _counts(site):
                    total = _scaled_total(site)
                    log_q = log_q + (_per_particle(site.log_prob, dim, k) if vectorized else total)
            log_ps.append(torch.as_tensor(log_p))
            log_qs.append(torch.as_tensor(log_q))
        log_p = log_ps[0] if vectorized else torch.stack(log_ps)
        log_q = log_qs[0] if vectorized else torch.stack(log_qs)
        log_p, log_q = torch.broadcast_tensors(log_p, log_q)
        log_w = log_p - log_q.detach()
        log_total = torch.logsumexp(log_w, 0)
        wake_theta = -(log_total - math.log(k))
        weights = (log_w - log_total).exp().detach()
        wake_phi = -(weights * log_q).sum()
        return wake_theta, wake_phi

    def _sleep(self, model, guide, args, kwargs, found, traces) -> torch.Tensor:
        """Sleep-phi loss: ``-1/S sum_s log q(z_s | x_s)`` over joint draws of the model."""
        s = self.num_sleep_particles
        unconditioned = UnconditionMessenger(model)
        vectorized = self.vectorize_particles and s > 1
        if vectorized and self.max_plate_nesting == math.inf:
            with BlockMessenger():
                model_trace = TraceMessenger(unconditioned).get_trace(*args, **kwargs)
                guide_trace = matched_guide_trace(model_trace, guide, args, kwargs)
            self.max_plate_nesting = _plate_depth(model_trace, guide_trace)
        log_q: Any = 0.0
        for _ in range(1 if vectorized else s):
            tracer = TraceMessenger(unconditioned)
            if vectorized:
                dim = -(int(self.max_plate_nesting) + 1)
                with PlateMessenger("num_sleep_particles_vectorized", s, dim=dim):
                    model_trace = tracer.get_trace(*args, **kwargs).detach_()
                    guide_trace = matched_guide_trace(model_trace, guide, args, kwargs)
            else:
                model_trace = tracer.get_trace(*args, **kwargs).detach_()
                guide_trace = matched_guide_trace(model_trace, guide, args, kwargs)
            record_params(found, guide_trace, model_trace)
            traces.append((model_trace, guide_trace))
            log_q = log_q + _latent_log_q(guide_trace)
        return -torch.as_tensor(log_q) / s

    def _losses(self, model, guide, args, kwargs, check_new_obs: bool = False):
        """(wake-theta loss, phi loss, params found, traces), the losses as 0-d tensors."""
        found: dict[str, Any] = {}
        traces: list = []
        wake_theta: torch.Tensor = torch.tensor(_NOT_COMPUTED)
        if self.model_has_params or self.insomnia > 0:
            wake_theta, wake_phi = self._wake(
                model, guide, args, kwargs, check_new_obs, found, traces
            )
        if self.insomnia < 1:
            sleep_phi = self._sleep(model, guide, args, kwargs, found, traces)
        if self.insomnia == 1:
            phi = wake_phi
        elif self.insomnia == 0:
            phi = sleep_phi
        else:
            phi = self.insomnia * wake_phi + (1 - self.insomnia) * sleep_phi
        for value in (wake_theta, phi):
            if not math.isfinite(float(value.detach())):
                raise _nonfinite_error(float(value.detach()), traces)
        return wake_theta, phi, found

    # -- entry points ----------------------------------------------------------------------
    def _evaluate(self, model, guide, args, kwargs, check_new_obs: bool):
        # The value slot holds the pair of floats: SVI.step returns it as Pyro's does.
        wake_theta, phi, found = self._losses(model, guide, args, kwargs, check_new_obs)
        return wake_theta + phi, (float(wake_theta.detach()), float(phi.detach())), found

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any):
        """``(wake_theta_loss, phi_loss)`` as 0-d tensors, without gradients."""
        with torch.no_grad():
            wake_theta, phi, _ = self._losses(model, guide, args, kwargs)
        return wake_theta, phi

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any):
        """Backpropagate both losses; return ``(wake_theta_loss, phi_loss)`` as floats."""
        total, value, _ = self._loss_and_params(model, guide, args, kwargs)
        if total.requires_grad:
            total.backward(retain_graph=self.retain_graph)
        return value

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "ReweightedWakeSleep has two losses (wake-theta and phi), not one "
            "differentiable loss: use loss_and_grads or SVI"
        )
