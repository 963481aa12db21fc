"""Stein variational gradient descent: ``SVGD(model, kernel, optim, num_particles, ...)``.

SVGD moves a set of particles ``x_1 .. x_N`` (all latent sites of one model, mapped to
unconstrained space and concatenated) along

    phi(x) = 1/N sum_j [ k(x_j, x) grad log p(x_j) + grad_{x_j} k(x_j, x) ]

the direction in a kernel's function space that most decreases the KL divergence from the
particles' empirical distribution to the posterior ``p``: the first term pulls particles
towards high density, the second pushes them apart. ``log p`` is the model's log joint
density in unconstrained space (with the log-Jacobian of ``biject_to(support)``).

The model runs once per step for all particles, inside a plate ``num_particles_vectorized``
at dim ``-max_plate_nesting - 1``, so it must be vectorized. The particles are the param
``svgd_particles``: one flat vector, each site's unconstrained values (particles first) in
turn, as in Pyro. Unlike Pyro, the kernel sees each particle as one row of all its sites'
values, also for models with several latent sites.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch

from ..distributions.delta import Delta
from ..handlers.plate import PlateMessenger
from ..handlers.trace import TraceMessenger
from ..optim.optim import PyroOptim
from ..params import _PARAM_STORE
from ..primitives import param
from .autoguide.continuous import AutoContinuous
from .autoguide.initialization import init_to_sample
from .elbo import Trace_ELBO

__all__ = ["IMQSteinKernel", "RBFSteinKernel", "SVGD", "SteinKernel"]

_PARTICLES = "svgd_particles"
_MODES = ("univariate", "multivariate")


def _positive(value: Any, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
        raise ValueError(f"{who}: {name} must be a number > 0, got {value!r}")
    return float(value)


class SteinKernel(ABC):
    """Base class of the kernels :class:`SVGD` uses."""

    @abstractmethod
    def log_kernel_and_grad(self, particles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_kernel, grad)`` for ``particles`` of shape ``(N, D)``, both ``(N, N, D)``.

        The kernel is a product over dimensions: ``k(x_n, x_m) = prod_d exp(log_kernel[n,
        m, d])``, and ``grad[n, m, d]`` is the derivative of ``log_kernel[n, m, d]`` with
        respect to ``x_{n,d}`` (the bandwidth held fixed).
        """


class _MedianBandwidthKernel(SteinKernel):
    """A kernel of per-dimension squared distances scaled by the median heuristic."""

    def __init__(self, bandwidth_factor: float | None = None):
        self.bandwidth_factor = bandwidth_factor

    @property
    def bandwidth_factor(self) -> float | None:
        """Optional factor on the bandwidth (None: 1), read at every step."""
        return self._bandwidth_factor

    @bandwidth_factor.setter
    def bandwidth_factor(self, value: float | None) -> None:
        if value is not None:
            value = _positive(value, "bandwidth_factor", type(self).__name__)
        self._bandwidth_factor = value

    def _bandwidth(self, sq_dist: torch.Tensor) -> torch.Tensor:
        """Per dimension: the median squared distance over pairs, / log(N + 1), as in Liu & Wang.

        The median of an even number of pairs is the lower middle one (``torch.median``).
        """
        n = sq_dist.size(0)
        rows, cols = torch.triu_indices(n, n, offset=1, device=sq_dist.device)
        median = sq_dist[rows, cols].median(dim=0).values
        if self._bandwidth_factor is not None:
            median = self._bandwidth_factor * median
        return median / math.log(n + 1)

    def _differences(self, particles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``delta[n, m] = x_m - x_n``, its square and the bandwidth, all per dimension."""
        if particles.dim() != 2 or particles.size(0) < 2:
            raise ValueError(
                f"{type(self).__name__}.log_kernel_and_grad: particles must have shape "
                f"(num_particles >= 2, dim), got {tuple(particles.shape)}"
            )
        delta = particles.unsqueeze(0) - particles.unsqueeze(1)
        sq_dist = delta.square()
        return delta, sq_dist, self._bandwidth(sq_dist)


class RBFSteinKernel(_MedianBandwidthKernel):
    """``k(x, y) = exp(-(x - y)^2 / h)`` per dimension, ``h`` by the median heuristic.

    :param bandwidth_factor: optional factor (> 0) on the bandwidth.
    """

    @torch.no_grad()
    def log_kernel_and_grad(self, particles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`SteinKernel.log_kernel_and_grad`."""
        delta, sq_dist, h = self._differences(particles)
        return -sq_dist / h, 2.0 * delta / h


class IMQSteinKernel(_MedianBandwidthKernel):
    """``k(x, y) = (alpha + (x - y)^2 / h)^beta`` per dimension, ``h`` by the median heuristic.

    The inverse multi-quadratic kernel (Chen et al., "Stein Points") decays polynomially, so
    distant particles still feel each other, which helps with heavy tails.

    :param alpha: > 0.
    :param beta: < 0.
    :param bandwidth_factor: optional factor (> 0) on the bandwidth.
    """

    def __init__(
        self, alpha: float = 0.5, beta: float = -0.5, bandwidth_factor: float | None = None
    ):
        self.alpha = _positive(alpha, "alpha", "IMQSteinKernel")
        if isinstance(beta, bool) or not isinstance(beta, Real) or not -math.inf < beta < 0:
            raise ValueError(f"IMQSteinKernel: beta must be a number < 0, got {beta!r}")
        self.beta = float(beta)
        super().__init__(bandwidth_factor)

    @torch.no_grad()
    def log_kernel_and_grad(self, particles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`SteinKernel.log_kernel_and_grad`."""
        delta, sq_dist, h = self._differences(particles)
        base = self.alpha + sq_dist / h
        return self.beta * base.log(), (-2.0 * self.beta) * delta / (h * base)


class _SVGDGuide(AutoContinuous):
    """Point masses at the particles: the flattened latent vector is the param itself."""

    def __init__(self, model: Callable):
        super().__init__(model, init_loc_fn=init_to_sample)

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        self._initial = init_loc

    def get_posterior(self, *args: Any, **kwargs: Any) -> Delta:
        """A point mass at the current particles (log-density 0)."""
        return Delta(param(_PARTICLES, self._initial), event_dim=1)


class SVGD:
    """Stein variational gradient descent (Liu & Wang, 2016) over all latent sites of a model.

    :param model: a vectorized model with continuous latent sites only.
    :param kernel: a :class:`SteinKernel`, e.g. :class:`RBFSteinKernel`.
    :param optim: a ``vitorch.optim`` optimizer, e.g. ``vitorch.optim.Adam({"lr": 0.1})``.
    :param num_particles: number of particles (>= 2), initialized by prior draws.
    :param max_plate_nesting: how many plates the model nests (the particles take the dim
        left of them).
    :param mode: ``"univariate"`` (default): each dimension moves with its own
        one-dimensional kernel (Singhal et al., "Kernelized Complete Conditional Stein
        Discrepancy"); ``"multivariate"``: one kernel, the product over dimensions.

    ``step(*args, **kwargs)`` moves the particles once and returns, per site, the mean
    squared SVGD gradient (a convergence monitor); :meth:`get_named_particles` returns the
    particles per site, constrained, particles first. Params of the model itself (if any)
    are stepped along the gradient of the negative log joint summed over particles.

    Example:
        >>> import vitorch, vitorch.distributions as dist
        >>> from vitorch.optim import Adam
        >>> def model():
        ...     vitorch.sample("x", dist.Normal(0.0, 1.0))
        >>> svgd = SVGD(model, RBFSteinKernel(), Adam({"lr": 0.1}), 10, max_plate_nesting=0)
        >>> sorted(svgd.step())
        ['x']
        >>> svgd.get_named_particles()["x"].shape
        torch.Size([10])
    """

    def __init__(
        self,
        model: Callable,
        kernel: SteinKernel,
        optim: PyroOptim,
        num_particles: int,
        max_plate_nesting: int,
        mode: str = "univariate",
    ):
        if not callable(model):
            raise TypeError(f"SVGD: model must be callable, got {type(model).__name__}")
        if not isinstance(kernel, SteinKernel):
            raise TypeError(
                f"SVGD: kernel must be a SteinKernel such as RBFSteinKernel() or "
                f"IMQSteinKernel(), got {type(kernel).__name__}"
            )
        if not isinstance(optim, PyroOptim):
            raise TypeError(
                f"SVGD: optim must be a vitorch.optim optimizer such as "
                f"vitorch.optim.Adam({{'lr': 0.1}}), got {type(optim).__name__}"
            )
        if isinstance(num_particles, bool) or not isinstance(num_particles, int):
            raise TypeError(
                f"SVGD: num_particles must be an int >= 2, got {type(num_particles).__name__}"
            )
        if num_particles < 2:
            raise ValueError(f"SVGD: num_particles must be >= 2, got {num_particles}")
        if (
            isinstance(max_plate_nesting, bool)
            or not isinstance(max_plate_nesting, int)
            or max_plate_nesting < 0
        ):
            raise ValueError(
                f"SVGD: max_plate_nesting must be an int >= 0, got {max_plate_nesting!r}"
            )
        if mode not in _MODES:
            raise ValueError(f"SVGD: mode must be one of {_MODES}, got {mode!r}")

        def vectorized(*args: Any, **kwargs: Any) -> Any:
            with PlateMessenger(
                "num_particles_vectorized", num_particles, dim=-max_plate_nesting - 1
            ):
                return model(*args, **kwargs)

        self.model = vectorized
        self.kernel = kernel
        self.optim = optim
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.mode = mode
        self.guide = _SVGDGuide(vectorized)
        self._elbo = Trace_ELBO()
        self._widths: list[int] | None = None

    def _site_widths(self) -> list[int]:
        """Per site, its number of unconstrained values per particle (checked once)."""
        if self._widths is None:
            widths = []
            for latent in self.guide._latents.values():  # type: ignore[union-attr]
                shape = latent.unconstrained_shape
                batch_dims = len(shape) - latent.unconstrained_event_dim
                if batch_dims != self.max_plate_nesting + 1:
                    raise ValueError(
                        f"SVGD: sample site {latent.name!r} has shape {tuple(latent.shape)} "
                        f"with {batch_dims} batch dims besides the particles, more than "
                        f"max_plate_nesting={self.max_plate_nesting}; raise max_plate_nesting"
                    )
                widths.append(latent.numel // self.num_particles)
            self._widths = widths
        return self._widths

    def _as_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """The flat particle vector as ``(num_particles, dim)``, one particle per row."""
        n = self.num_particles
        sizes = [n * w for w in self._site_widths()]
        return torch.cat([piece.reshape(n, -1) for piece in flat.split(sizes)], dim=1)

    def _as_flat(self, rows: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_as_rows`."""
        return torch.cat([piece.reshape(-1) for piece in rows.split(self._site_widths(), dim=1)])

    def _stein_gradient(self, x: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
        """``-phi`` at the rows of ``x``, given the gradient of ``-log p`` at each row."""
        log_kernel, kernel_grad = self.kernel.log_kernel_and_grad(x)
        if self.mode == "multivariate":
            k = log_kernel.sum(-1).exp()
            attract = k @ grad_loss
            repel = torch.einsum("nm,nmd->nd", k, kernel_grad)
        else:
            k = log_kernel.exp()
            attract = torch.einsum("nmd,md->nd", k, grad_loss)
            repel = torch.einsum("nmd,nmd->nd", k, kernel_grad)
        return (attract + repel) / self.num_particles

    @torch.no_grad()
    def step(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Move the particles once; returns ``{site: mean squared SVGD gradient}``."""
        store = _PARAM_STORE._params
        try:
            with torch.enable_grad(), TraceMessenger(param_only=True) as tracer:
                self._elbo.loss_and_grads(self.model, self.guide, *args, **kwargs)
        except BaseException:
            # A failed step must not leave half-accumulated gradients behind.
            for p in store.values():
                p.grad = None
            raise
        params = {n: store[n] for n in tracer.trace.param_nodes if n in store}
        particles = store[_PARTICLES]
        grad = self._stein_gradient(self._as_rows(particles), self._as_rows(particles.grad))
        particles.grad = self._as_flat(grad)
        self.optim.step_named(params)
        for p in params.values():
            p.grad = None
        names = self.guide._latents  # type: ignore[union-attr]
        pieces = grad.split(self._site_widths(), dim=1)
        return {name: piece.square().mean().item() for name, piece in zip(names, pieces)}

    @torch.no_grad()
    def get_named_particles(self) -> dict[str, torch.Tensor]:
        """``{site: constrained values}``, the particles along the leftmost dim."""
        if self.guide._latents is None:
            raise ValueError("SVGD.get_named_particles() was called before the first step()")
        flat = _PARAM_STORE[_PARTICLES]
        return {
            latent.name: latent.constrain(value)
            for latent, value in self.guide._unpack_latent(flat)
        }
