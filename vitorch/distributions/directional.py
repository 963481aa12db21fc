"""Distributions of directions and angles: on the sphere and on the torus.

``VonMises3D`` and ``ProjectedNormal`` live on the unit sphere (values are unit vectors
in Cartesian coordinates); ``SineBivariateVonMises`` is a pair of dependent angles on the
2-torus, and ``SineSkewed`` breaks the point symmetry of any torus distribution. Names,
signatures and shapes follow Pyro.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import torch
from torch.distributions import Distribution
from torch.distributions.utils import broadcast_all, lazy_property

from . import constraints
from .distribution import TorchDistribution
from .torch import VonMises
from .util import broadcast_shape

__all__ = ["ProjectedNormal", "SineBivariateVonMises", "SineSkewed", "VonMises3D"]

_Shape = torch.Size | tuple[int, ...] | list[int]


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` along the last dim; a zero vector maps to the first basis vector."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    zero = norm == 0
    first = torch.zeros_like(x)
    first[..., 0] = 1
    return torch.where(zero, first, x / torch.where(zero, torch.ones_like(norm), norm))


def _check_vector(cls: str, name: str, x, size: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or (size and x.size(-1) != size):
        want = f"rightmost dim {size}" if size else "at least one dim"
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{cls}: {name} must be a tensor with {want}, got {got}")


# --------------------------------------------------------------------------------------
# On the sphere
# --------------------------------------------------------------------------------------


class VonMises3D(TorchDistribution):
    """The von Mises-Fisher distribution on the 2-sphere: ``p(x) ∝ exp(concentration · x)``.

    The direction of ``concentration`` is the mode and its norm ``κ`` the concentration;
    the density with respect to surface area is ``κ / (4π sinh κ) exp(concentration · x)``.

    Args:
        concentration: the combined mode-and-concentration vector, rightmost dim 3.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration": constraints.real
    }
    support = constraints.sphere

    def __init__(self, concentration: torch.Tensor, validate_args: bool | None = None) -> None:
        _check_vector("VonMises3D", "concentration", concentration, 3)
        self.concentration = concentration
        super().__init__(concentration.shape[:-1], concentration.shape[-1:], validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> VonMises3D:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(VonMises3D, _instance)
        batch_shape = torch.Size(batch_shape)
        new.concentration = self.concentration.expand(batch_shape + (3,))
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _log_normalizer(self) -> torch.Tensor:
        """``log(κ / (4π sinh κ))``, with its limit ``-log 4π`` at ``κ = 0``."""
        kappa = torch.linalg.vector_norm(self.concentration, dim=-1)
        small = kappa < 1e-3
        safe = torch.where(small, torch.ones_like(kappa), kappa)
        # log(κ / sinh κ) = log(2κ) - κ - log(1 - e^{-2κ}); its series is -κ²/6 + O(κ⁴).
        exact = (2 * safe).log() - safe - torch.log(-torch.expm1(-2 * safe))
        return torch.where(small, -kappa.square() / 6, exact) - math.log(4 * math.pi)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``concentration · value + log(κ / (4π sinh κ))``."""
        if self._validate_args:
            self._validate_sample(value)
        return (self.concentration * value).sum(-1) + self._log_normalizer()

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Wood's exact method: the cosine to the mode by inverse cdf, a uniform azimuth."""
        shape = self._extended_shape(sample_shape)
        conc = self.concentration.detach()
        with torch.no_grad():
            kappa = torch.linalg.vector_norm(conc, dim=-1).expand(shape[:-1])
            u = torch.rand(shape[:-1], dtype=conc.dtype, device=conc.device)
            small = kappa < 1e-6
            safe = torch.where(small, torch.ones_like(kappa), kappa)
            # The cdf of w = cos(angle to the mode) is (e^{κw} - e^{-κ}) / (2 sinh κ).
            w = 1 + torch.log1p((1 - u) * torch.expm1(-2 * safe)) / safe
            w = torch.where(small, 2 * u - 1, w).clamp(-1, 1)
            theta = 2 * math.pi * torch.rand_like(u)
            r = (1 - w.square()).sqrt()
            x = torch.stack([r * theta.cos(), r * theta.sin(), w], dim=-1)
            # Reflect the north pole onto the mode (the law is symmetric about its axis).
            axis = -_unit(conc).expand(shape).clone()
            axis[..., 2] += 1
            size2 = axis.square().sum(-1, keepdim=True)
            coef = torch.where(size2 > 0, 2 * (axis * x).sum(-1, keepdim=True) / size2, 0.0)
            return x - coef * axis


def _ray_moment(order: int, t: torch.Tensor) -> torch.Tensor:
    """``∫_0^∞ r^order φ(r - t) dr`` for the standard normal density ``φ``.

    With ``M_0 = Φ(t)`` and ``M_1 = t Φ(t) + φ(t)``, integrating by parts gives
    ``M_n = t M_{n-1} + (n - 1) M_{n-2}``.
    """
    cdf = 0.5 * torch.erfc(-t / math.sqrt(2))
    pdf = torch.exp(-0.5 * t.square()) / math.sqrt(2 * math.pi)
    prev, cur = cdf, t * cdf + pdf
    if order == 0:
        return prev
    for n in range(2, order + 1):
        prev, cur = cur, t * cur + (n - 1) * prev
    return cur


class ProjectedNormal(TorchDistribution):
    """The direction ``x / |x|`` of an isotropic normal ``x ~ N(concentration, I)``.

    Qualitatively like the von Mises-Fisher family, but reparameterizable: ``rsample``
    draws the normal and normalises it. The density on the unit sphere ``S^{d-1}`` is
    ``(2π)^{-(d-1)/2} exp(-(|c|² - t²) / 2) ∫_0^∞ r^{d-1} φ(r - t) dr`` with
    ``t = c · x``, for any dimension ``d >= 2`` (Pyro implements ``d`` in 2..4).

    Args:
        concentration: the mean of the normal; its direction is the mode, its norm the
            concentration.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration": constraints.real_vector
    }
    support = constraints.sphere
    has_rsample = True

    def __init__(self, concentration: torch.Tensor, *, validate_args: bool | None = None) -> None:
        _check_vector("ProjectedNormal", "concentration", concentration)
        self.concentration = concentration
        super().__init__(concentration.shape[:-1], concentration.shape[-1:], validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> ProjectedNormal:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(ProjectedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.concentration = self.concentration.expand(batch_shape + self.event_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        """The direction of ``concentration`` (the centroid on the sphere)."""
        return _unit(self.concentration)

    @property
    def mode(self) -> torch.Tensor:
        """The direction of ``concentration``."""
        return _unit(self.concentration)

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Normalise ``concentration + ε``, ``ε ~ N(0, I)``; gradients reach the parameter."""
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.concentration.dtype, device=self.concentration.device)
        return _unit(self.concentration + eps)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Integrate the normal along the ray through ``value`` (see the class docstring)."""
        if self._validate_args:
            if value.shape[-1:] != self.event_shape:
                raise ValueError(
                    f"ProjectedNormal: value must end in {tuple(self.event_shape)}, got "
                    f"shape {tuple(value.shape)}"
                )
            self._validate_sample(value)
        dim = self.event_shape[0]
        c = self.concentration
        t = (c * value).sum(-1)
        perp = (c.square().sum(-1) - t.square()).clamp(min=0)
        along = _ray_moment(dim - 1, t).clamp(min=torch.finfo(t.dtype).tiny).log()
        return along - 0.5 * perp - 0.5 * (dim - 1) * math.log(2 * math.pi)


# --------------------------------------------------------------------------------------
# On the torus
# --------------------------------------------------------------------------------------


def _log_i0(x: torch.Tensor) -> torch.Tensor:
    """``log I_0(x)`` for ``x >= 0`` without overflow."""
    return torch.special.i0e(x).log() + x


class SineBivariateVonMises(TorchDistribution):
    """Two dependent angles ``(φ, ψ)`` on the torus (the sine model of Singh et al. 2002).

    ``p(φ, ψ) = exp(κ₁ cos(φ - μ₁) + κ₂ cos(ψ - μ₂) + ρ sin(φ - μ₁) sin(ψ - μ₂)) / C``.

    Integrating ``ψ`` out leaves ``2π I₀(s(φ))`` with ``s(φ)² = κ₂² + ρ² sin²(φ - μ₁)``,
    so ``C`` is a one-dimensional integral of a smooth periodic function, computed by the
    trapezoidal rule (exponentially accurate here). Sampling draws ``φ`` from that
    marginal by rejection under a piecewise-constant envelope, then ``ψ`` from its
    conditional, a von Mises. The density is unimodal while ``ρ² < κ₁ κ₂``.

    Args:
        phi_loc: ``μ₁``, the location of the first angle.
        psi_loc: ``μ₂``, the location of the second angle.
        phi_concentration: ``κ₁``, positive.
        psi_concentration: ``κ₂``, positive.
        correlation: ``ρ``.
        weighted_correlation: alternatively ``w`` with ``ρ = w sqrt(κ₁ κ₂)``; ``|w| < 1``
            keeps the density unimodal. Give exactly one of the two.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "phi_loc": constraints.real,
        "psi_loc": constraints.real,
        "phi_concentration": constraints.positive,
        "psi_concentration": constraints.positive,
        "correlation": constraints.real,
    }
    support = constraints.independent(constraints.real, 1)
    max_sample_iter = 1000

    def __init__(
        self,
        phi_loc: torch.Tensor | float,
        psi_loc: torch.Tensor | float,
        phi_concentration: torch.Tensor | float,
        psi_concentration: torch.Tensor | float,
        correlation: torch.Tensor | float | None = None,
        weighted_correlation: torch.Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if (correlation is None) == (weighted_correlation is None):
            raise ValueError(
                "SineBivariateVonMises: give exactly one of correlation and "
                f"weighted_correlation, got correlation={correlation!r}, "
                f"weighted_correlation={weighted_correlation!r}"
            )
        if weighted_correlation is not None:
            k1, k2 = broadcast_all(phi_concentration, psi_concentration)
            correlation = weighted_correlation * (k1 * k2).sqrt()
        params = broadcast_all(phi_loc, psi_loc, phi_concentration, psi_concentration, correlation)
        (
            self.phi_loc,
            self.psi_loc,
            self.phi_concentration,
            self.psi_concentration,
            self.correlation,
        ) = params
        super().__init__(params[0].shape, torch.Size([2]), validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> SineBivariateVonMises:
        """The same distribution over a larger batch shape (the normalizer is reused)."""
        new = self._get_checked_instance(SineBivariateVonMises, _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self.arg_constraints:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        if "norm_const" in self.__dict__:
            new.norm_const = self.norm_const.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _phi_marginal(self, phi: torch.Tensor, flat: bool = False) -> torch.Tensor:
        """``log[exp(κ₁ cos φ) I₀(s(φ))]`` at angles ``phi`` relative to ``μ₁``.

        ``phi`` has the batch shape plus one dim on the right, or with ``flat`` the batch
        flattened into one dim on the left (and no gradient: the sampler's case).
        """
        params = (self.phi_concentration, self.psi_concentration, self.correlation)
        if flat:
            params = tuple(p.detach().reshape(-1) for p in params)
        k1, k2, rho = (p.unsqueeze(-1) for p in params)
        s = (k2.square() + (rho * phi.sin()).square()).sqrt()
        return k1 * phi.cos() + _log_i0(s)

    def _grid_size(self, per_unit: float) -> int:
        """Grid points for the marginal: the integrand's width scales as ``1/sqrt(κ)``."""
        scale = self.phi_concentration + self.psi_concentration + self.correlation.abs()
        return 64 + math.ceil(per_unit * math.sqrt(float(scale.detach().max())))

    @lazy_property
    def norm_const(self) -> torch.Tensor:
        """``log C``, by the trapezoidal rule over the ``φ`` marginal."""
        n = self._grid_size(12.0)
        ref = self.phi_concentration
        phi = torch.arange(n, dtype=ref.dtype, device=ref.device) * (2 * math.pi / n)
        log_f = self._phi_marginal(phi)
        return log_f.logsumexp(-1) + math.log(2 * math.pi * 2 * math.pi / n)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The sine-model density at ``value[..., 0] = φ``, ``value[..., 1] = ψ``."""
        if self._validate_args:
            self._validate_sample(value)
        dphi = value[..., 0] - self.phi_loc
        dpsi = value[..., 1] - self.psi_loc
        return (
            self.phi_concentration * dphi.cos()
            + self.psi_concentration * dpsi.cos()
            + self.correlation * dphi.sin() * dpsi.sin()
            - self.norm_const
        )

    @property
    def mean(self) -> torch.Tensor:
        """The locations ``(μ₁, μ₂)`` (Pyro's convention)."""
        return torch.stack((self.phi_loc, self.psi_loc), dim=-1)

    def _sample_phi(self, count: int) -> torch.Tensor:
        """``count`` draws of ``φ - μ₁`` per batch element, shape ``(B, count)``.

        The envelope is constant on each grid cell: the larger end value of the log
        marginal plus half the cell width times a bound on its slope there,
        ``κ₁ |sin φ| + min(|ρ|, ρ² |sin φ| / κ₂)``, so it lies above the marginal.
        """
        n = self._grid_size(16 * math.pi)
        k1 = self.phi_concentration.detach().reshape(-1, 1)
        k2 = self.psi_concentration.detach().reshape(-1, 1)
        rho = self.correlation.detach().abs().reshape(-1, 1)
        h = 2 * math.pi / n
        edges = torch.arange(n + 1, dtype=k1.dtype, device=k1.device) * h - math.pi
        log_f = self._phi_marginal(edges, flat=True)
        mid_sin = ((edges[:-1] + h / 2).sin().abs() + h / 2).clamp(max=1)
        slope = k1 * mid_sin + torch.minimum(rho, rho.square() * mid_sin / k2)
        log_env = torch.maximum(log_f[:, :-1], log_f[:, 1:]) + slope * (h / 2)
        cell_probs = (log_env - log_env.amax(-1, keepdim=True)).exp()

        batch = k1.size(0)
        out = torch.empty(batch, count, dtype=k1.dtype, device=k1.device)
        filled = torch.zeros(batch, dtype=torch.long, device=k1.device)
        rows = torch.arange(batch, device=k1.device).unsqueeze(-1)
        for _ in range(self.max_sample_iter):
            need = count - filled
            if not bool((need > 0).any()):
                return out
            draws = 2 * int(need.max()) + 16
            cell = torch.multinomial(cell_probs, draws, replacement=True)
            phi = edges[cell] + h * torch.rand(batch, draws, dtype=k1.dtype, device=k1.device)
            log_ratio = self._phi_marginal(phi, flat=True) - log_env.gather(-1, cell)
            accept = torch.rand_like(phi).log() < log_ratio
            slot = filled.unsqueeze(-1) + accept.long().cumsum(-1) - 1
            keep = accept & (slot < count)
            out[rows.expand_as(keep)[keep], slot[keep]] = phi[keep]
            filled = filled + keep.sum(-1)
        raise ValueError(
            "SineBivariateVonMises.sample: rejection sampling did not finish within "
            f"max_sample_iter={self.max_sample_iter} rounds"
        )

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """``φ`` from its marginal, then ``ψ | φ ~ VonMises(μ₂ + atan2(ρ sin φ', κ₂), s(φ'))``,
        both wrapped to ``[-π, π)``."""
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            dphi = self._sample_phi(max(sample_shape.numel(), 1))  # (B, n)
            dphi = dphi.T.reshape(sample_shape + self.batch_shape)
            k2, rho = self.psi_concentration.detach(), self.correlation.detach()
            sin_phi = dphi.sin()
            conc = (k2.square() + (rho * sin_phi).square()).sqrt()
            shift = torch.atan2(rho * sin_phi, k2)
            dpsi = VonMises(shift, conc, validate_args=False).sample()
            angles = torch.stack((dphi + self.phi_loc, dpsi + self.psi_loc), dim=-1)
            return torch.remainder(angles + math.pi, 2 * math.pi) - math.pi


class SineSkewed(TorchDistribution):
    """Sine-skewing of a symmetric distribution on the d-torus (Ameijeiras-Alonso & Ley).

    ``p(x) = base(x) (1 + Σ_i λ_i sin(x_i - μ_i))`` with ``μ`` the base's mean (its centre
    of symmetry) and skewness ``λ``; for ``Σ |λ_i| <= 1`` this is a density with the same
    normaliser. A draw takes a base draw ``y`` and keeps it with probability
    ``(1 + Σ λ_i sin(y_i - μ_i)) / 2``, else reflects it to ``2μ - y``.

    Args:
        base_dist: a distribution on the torus, event shape ``(d,)`` (e.g.
            :class:`SineBivariateVonMises`, or ``VonMises(...).to_event(1)``).
        skewness: ``λ``, rightmost dim ``d``, entries in ``[-1, 1]`` with ``Σ |λ_i| <= 1``.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "skewness": constraints.independent(constraints.interval(-1.0, 1.0), 1)
    }
    support = constraints.independent(constraints.real, 1)

    def __init__(
        self,
        base_dist: Distribution,
        skewness: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(base_dist, Distribution):
            raise TypeError(
                "SineSkewed: base_dist must be a torch Distribution, got "
                f"{type(base_dist).__name__}"
            )
        _check_vector("SineSkewed", "skewness", skewness)
        if base_dist.event_shape != skewness.shape[-1:]:
            raise ValueError(
                "SineSkewed: skewness must have one entry per torus dim: base_dist.event_shape "
                f"is {tuple(base_dist.event_shape)}, skewness has shape {tuple(skewness.shape)}"
            )
        if bool((skewness.abs().sum(-1) > 1).any()):
            warnings.warn(
                "SineSkewed: the total skewness sum(|skewness|) exceeds 1; the density is "
                "negative somewhere",
                UserWarning,
                stacklevel=2,
            )
        batch_shape = broadcast_shape(base_dist.batch_shape, skewness.shape[:-1])
        event_shape = skewness.shape[-1:]
        self.skewness = skewness.expand(batch_shape + event_shape)
        self.base_dist = base_dist.expand(batch_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> SineSkewed:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(SineSkewed, _instance)
        batch_shape = torch.Size(batch_shape)
        new.base_dist = self.base_dist.expand(batch_shape)
        new.skewness = self.skewness.expand(batch_shape + self.event_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _skew(self, value: torch.Tensor) -> torch.Tensor:
        return (self.skewness * (value - self.base_dist.mean).sin()).sum(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``base.log_prob(x) + log(1 + Σ λ_i sin(x_i - μ_i))``."""
        if self._validate_args:
            self._validate_sample(value)
        return self.base_dist.log_prob(value) + torch.log1p(self._skew(value))

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """A base draw, kept or reflected about the base mean (see the class docstring)."""
        with torch.no_grad():
            y = self.base_dist.sample(sample_shape)
            u = torch.rand(y.shape[:-1], dtype=y.dtype, device=y.device)
            keep = (2 * u <= 1 + self._skew(y)).unsqueeze(-1)
            x = torch.where(keep, y, 2 * self.base_dist.mean - y)
            return torch.remainder(x + math.pi, 2 * math.pi) - math.pi
