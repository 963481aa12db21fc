"""``Trace_MMD``: the ELBO with its KL term replaced by a maximum mean discrepancy (MMD-VAE).

The loss (Zhao et al., InfoVAE) is

    -E_q [log p(x | z)] + mmd_scale * MMD^2(q(z), p(z))

For each latent site the guide samples, ``MMD^2`` is estimated from the ``K`` guide draws
``z_k ~ q`` and ``K`` independent draws ``z'_k ~ p(z)`` of the model's prior (one more
run of the model) by the V-statistic

    mean_ij k(z_i, z_j) + mean_ij k(z'_i, z'_j) - 2 mean_ij k(z_i, z'_j)

(diagonal terms included), each draw flattened into a vector: only the particle dim
is a sample dim. ``-E_q [log p(x | z)]`` is the average over the particles of the
log-density of every model site that is not such a latent (observed sites, and latent
sites the guide does not sample). Every MMD site must be reparameterized in both the
model and the guide.

Pyro takes its kernels from ``pyro.contrib.gp.kernels``; here any callable
``kernel(X, Z) -> Gram matrix`` of two ``(n, d)`` tensors works, and :class:`RBF` is a
small squared-exponential kernel of that form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..handlers.plate import PlateMessenger
from ..handlers.trace import Trace, TraceMessenger
from ..params import record_params
from .elbo import ELBO, _counts, _nonfinite_error, _scaled_total

__all__ = ["RBF", "Trace_MMD"]


class RBF:
    """The squared-exponential kernel ``variance * exp(-||x - z||^2 / (2 lengthscale^2))``,
    with the call signature of Pyro's ``pyro.contrib.gp.kernels.RBF``: ``kernel(X, Z=None)``
    for ``(n, input_dim)`` tensors (1-d inputs are one column) gives the ``(n, m)`` Gram
    matrix (``Z=None`` means ``Z = X``). Its hyperparameters are fixed numbers.
    """

    def __init__(self, input_dim: int, variance: float = 1.0, lengthscale: float = 1.0):
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"RBF: input_dim must be a positive int, got {input_dim!r}")
        for name, value in (("variance", variance), ("lengthscale", lengthscale)):
            if not float(value) > 0:
                raise ValueError(f"RBF: {name} must be positive, got {value!r}")
        self.input_dim = input_dim
        self.variance = float(variance)
        self.lengthscale = float(lengthscale)

    def __call__(self, X: torch.Tensor, Z: torch.Tensor | None = None) -> torch.Tensor:
        X = X.unsqueeze(-1) if X.dim() == 1 else X
        Z = X if Z is None else (Z.unsqueeze(-1) if Z.dim() == 1 else Z)
        if X.shape[-1] != self.input_dim or Z.shape[-1] != self.input_dim:
            raise ValueError(
                f"RBF: inputs must have {self.input_dim} columns (input_dim), got shapes "
                f"{tuple(X.shape)} and {tuple(Z.shape)}"
            )
        # Differences, not the expanded ||x||^2 - 2 x.z + ||z||^2, which loses precision
        # (and can turn negative) for nearby points.
        squared = ((X.unsqueeze(-2) - Z.unsqueeze(-3)) ** 2).sum(-1)
        return self.variance * torch.exp(-0.5 * squared / self.lengthscale**2)


def _mmd(x: torch.Tensor, y: torch.Tensor, kernel: Callable) -> torch.Tensor:
    """The V-statistic estimate of ``MMD^2`` between the rows of ``x`` and of ``y``."""
    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def _per_name(value: Any, what: str, check: Callable[[Any], bool], expected: str) -> Any:
    """``value`` as a name -> setting mapping: a dict as given, else one setting for all."""
    if isinstance(value, Mapping):
        for name, v in value.items():
            if not check(v):
                raise TypeError(f"Trace_MMD: {what}[{name!r}] must be {expected}, got {v!r}")
        return dict(value)
    if not check(value):
        raise TypeError(
            f"Trace_MMD: {what} must be {expected} or a dict of them by site name, got {value!r}"
        )
    return value


class Trace_MMD(ELBO):
    """The MMD-VAE objective (Pyro's ``Trace_MMD``).

    :param kernel: a callable ``kernel(X, Z) -> Gram matrix`` (such as :class:`RBF` or a
        ``pyro.contrib.gp`` kernel), or a dict of them by latent site name. A kernel that
        is an ``nn.Module`` gets ``requires_grad_(False)``: its hyperparameters are not
        trained, as in Pyro.
    :param mmd_scale: the weight of the MMD terms, a number or a dict by site name.
    :param num_particles: the number ``K`` of particles; the MMD estimate is noisy for
        small ``K`` (default 10).
    :param max_plate_nesting: bound on the nesting of plates (guessed when infinite).
    :param vectorize_particles: draw the particles in one vectorized run (default).
    :param strict_enumeration_warning: accepted for compatibility with Pyro.
    """

    def __init__(
        self,
        kernel: Callable | Mapping[str, Callable],
        mmd_scale: float | Mapping[str, float] = 1,
        num_particles: int = 10,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
        strict_enumeration_warning: bool = True,
        ignore_jit_warnings: bool = False,
        retain_graph: bool | None = None,
    ):
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            strict_enumeration_warning=strict_enumeration_warning,
            retain_graph=retain_graph,
        )
        self.kernel = kernel
        self.mmd_scale = mmd_scale

    @property
    def kernel(self) -> Callable | dict[str, Callable]:
        return self._kernel

    @kernel.setter
    def kernel(self, kernel: Callable | Mapping[str, Callable]) -> None:
        kernel = _per_name(kernel, "kernel", callable, "a callable kernel(X, Z)")
        for k in kernel.values() if isinstance(kernel, dict) else (kernel,):
            if isinstance(k, torch.nn.Module):
                k.requires_grad_(False)
        self._kernel = kernel

    @property
    def mmd_scale(self) -> float | dict[str, float]:
        return self._mmd_scale

    @mmd_scale.setter
    def mmd_scale(self, mmd_scale: float | Mapping[str, float]) -> None:
        def is_number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        self._mmd_scale = _per_name(mmd_scale, "mmd_scale", is_number, "a number")

    def _setting(self, setting: Any, name: str, what: str) -> Any:
        if not isinstance(setting, dict):
            return setting
        if name not in setting:
            raise ValueError(
                f"Trace_MMD: {what} has no entry for the latent site {name!r} "
                f"(it has {sorted(setting)})"
            )
        return setting[name]

    def _prior_trace(self, model: Callable, args, kwargs) -> Trace:
        """One more run of the model, for draws of its latent sites independent of the guide."""
        tracer = TraceMessenger(model)
        if self.vectorize_particles and self.num_particles > 1:
            dim = -(int(self.max_plate_nesting) + 1)
            with PlateMessenger("num_particles_vectorized", self.num_particles, dim=dim):
                return tracer.get_trace(*args, **kwargs)
        return tracer.get_trace(*args, **kwargs)

    def _flatten(self, value: torch.Tensor, event_dim: int) -> torch.Tensor:
        """``(particles, everything else)``: one row per particle of this trace."""
        if not (self.vectorize_particles and self.num_particles > 1):
            return value.reshape(1, -1)
        dim = -(int(self.max_plate_nesting) + 1) - event_dim
        if value.dim() < -dim:
            raise ValueError(
                f"Trace_MMD: a latent draw of shape {tuple(value.shape)} has no particle dim "
                f"{dim}; is max_plate_nesting={self.max_plate_nesting} too large?"
            )
        return value.movedim(dim, 0).reshape(value.shape[dim], -1)

    def _evaluate(self, model, guide, args, kwargs, check_new_obs: bool):
        guide_draws: dict[str, list[torch.Tensor]] = {}
        prior_draws: dict[str, list[torch.Tensor]] = {}
        found: dict[str, Any] = {}
        traces = []
        log_lik: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            self._check_new_observations(model_trace, validate=check_new_obs)
            prior_trace = self._prior_trace(model, args, kwargs)
            record_params(found, guide_trace, model_trace, prior_trace)
            traces.append((model_trace, guide_trace))
            particle: Any = 0.0
            for name, site in model_trace.nodes.items():
                if site.type != "sample" or not _counts(site):
                    continue
                guide_site = guide_trace.nodes.get(name)
                if site.is_observed or guide_site is None:
                    particle = particle + _scaled_total(site)
                    continue
                prior_site = prior_trace.nodes[name]
                for role, s in (("model", prior_site), ("guide", guide_site)):
                    if not s.fn.has_rsample:
                        raise ValueError(
                            f"Trace_MMD: the {role}'s site {name!r} "
                            f"({type(s.fn).__name__}) is not reparameterizable"
                        )
                event_dim = len(prior_site.fn.event_shape)
                prior_draws.setdefault(name, []).append(self._flatten(prior_site.value, event_dim))
                guide_draws.setdefault(name, []).append(self._flatten(guide_site.value, event_dim))
            log_lik = log_lik + particle / self.num_particles
        penalty: Any = 0.0
        for name, draws in guide_draws.items():
            kernel = self._setting(self._kernel, name, "kernel")
            scale = self._setting(self._mmd_scale, name, "mmd_scale")
            mmd = _mmd(torch.cat(prior_draws[name]), torch.cat(draws), kernel)
            penalty = penalty + scale * mmd
        loss = torch.as_tensor(penalty - log_lik)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise _nonfinite_error(loss_value, traces)
        return loss, loss_value, found
