"""Lévy alpha-stable distributions: ``Stable`` and ``StableWithLogProb``.

Both draw by the Chambers-Mallows-Stuck transform of a uniform angle and an exponential,
which is differentiable in every parameter, so ``rsample`` is reparameterized. ``Stable``
has no density, as in Pyro: inference goes through reparameterization (or a
likelihood-free loss). ``StableWithLogProb`` adds a density by Nolan's one-dimensional
integral, evaluated in float64.

The default ``coords="S0"`` is Nolan's parameterization, continuous in
``(stability, skew)``; ``coords="S"`` is the classic one (scipy's ``S1``), whose location
jumps at ``stability == 1``. In both, a draw is ``loc + scale * Z`` for a standard draw
``Z`` of that parameterization.

References: J. M. Chambers, C. L. Mallows, B. W. Stuck (1976); R. Weron (1996), "On the
Chambers-Mallows-Stuck method"; J. P. Nolan (1997), "Numerical calculation of stable
densities and distribution functions".
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.distributions.utils import broadcast_all

from . import constraints
from .distribution import TorchDistribution

__all__ = ["Stable", "StableWithLogProb"]

_HALF_PI = math.pi / 2
# Within this distance of stability == 1 the general transform cancels large terms; the
# sampler interpolates linearly to the exact stability-1 transform across this window.
_SAMPLE_HOLE = 0.01
# Half-width of the window around stability == 1 where the density interpolates linearly
# between its values at the window's edges (nearer 1, skewed laws lose precision).
_DENSITY_HOLE = 0.05
# Trapezoid nodes on each side of the integrand's peak, and bisection steps to find it.
_HALF_NODES = 160
_BISECTIONS = 64


def _alpha_one_transform(skew: torch.Tensor, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """A standard stability-1 draw from ``u ~ Uniform(-pi/2, pi/2)``, ``e ~ Exponential(1)``."""
    h = _HALF_PI + skew * u
    return (h * u.tan() - skew * (_HALF_PI * e * u.cos() / h).log()) / _HALF_PI


def _general_transform(
    alpha: torch.Tensor, skew: torch.Tensor, u: torch.Tensor, e: torch.Tensor
) -> torch.Tensor:
    """A standard S0 draw for ``alpha != 1`` (Weron's form of the CMS transform, minus ``b``)."""
    b = skew * (_HALF_PI * alpha).tan()
    shift = b.atan()  # alpha * theta_0
    tilt = shift + alpha * u  # alpha * (u + theta_0)
    eps = torch.finfo(u.dtype).eps
    x1 = (
        (1 + b * b).pow(0.5 / alpha)
        * tilt.sin()
        / u.cos().pow(1 / alpha)
        * ((u - tilt).cos().clamp(min=eps) / e).pow((1 - alpha) / alpha)
    )
    return x1 - b


def _standard_s0(
    alpha: torch.Tensor, skew: torch.Tensor, u: torch.Tensor, e: torch.Tensor
) -> torch.Tensor:
    """Standard S0 draws, exact at and away from ``alpha == 1``, linear in between."""
    near = (alpha - 1).abs() < _SAMPLE_HOLE
    if not near.any():
        return _general_transform(alpha, skew, u, e)
    edge = torch.where(alpha < 1, 1 - _SAMPLE_HOLE, 1 + _SAMPLE_HOLE).to(alpha.dtype)
    far = _general_transform(torch.where(near, edge, alpha), skew, u, e)
    one = _alpha_one_transform(skew, u, e)
    weight = torch.where(near, (alpha - 1).abs() / _SAMPLE_HOLE, torch.ones_like(alpha))
    return torch.where(near, one + weight * (far - one), far)


def _s1_shift(alpha: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
    """``Z_S - Z_S0 = skew tan(pi alpha / 2)``, taken as 0 at ``alpha == 1``."""
    shift = skew * (_HALF_PI * alpha).tan()
    return torch.where(alpha == 1, torch.zeros_like(shift), shift)


def _log_v(alpha, theta0, r, s):
    """``log V`` of Nolan's integrand at angle ``theta = -theta0 + W sigmoid(s)``.

    ``W = pi/2 + theta0`` is the length of the integration range; the two distances to its
    ends, ``phi = W sigmoid(s)`` and ``psi = W sigmoid(-s)``, are both computed directly so
    that the ends (where V goes to 0 or infinity) keep full relative precision.
    """
    width = _HALF_PI + theta0
    phi = width * torch.sigmoid(s)
    psi = width * torch.sigmoid(-s)
    cos_theta = psi.sin()
    return (
        (alpha * theta0).cos().log() / (alpha - 1)
        + r * (cos_theta.log() - (alpha * phi).sin().log())
        + (theta0 + (alpha - 1) * phi).cos().log()
        - cos_theta.log()
    )


def _log_density_s1_positive(
    alpha: torch.Tensor, skew: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """``log f(z)`` of a standard S1 variable at ``z > 0``, for ``alpha`` away from 1.

    Nolan's formula: ``f(z) = alpha / (pi |alpha - 1| z) * int u exp(-u) dtheta`` with
    ``u = z**(alpha/(alpha-1)) V(theta)`` over ``theta in (-theta0, pi/2)``. ``u`` is
    monotone in ``theta``, so the integrand has one peak, at ``u = 1``: found by bisection
    in ``s`` (the logit of the position in the range), then integrated by the trapezoid
    rule in ``s``, which is exponentially accurate for this smooth, fast-decaying integrand.
    """
    theta0 = (skew * (_HALF_PI * alpha).tan()).atan() / alpha
    r = alpha / (alpha - 1)
    log_c = r * z.log()
    with torch.no_grad():
        rising = alpha < 1  # V increases along the range when alpha < 1
        lo = torch.full_like(z, -700.0)
        hi = torch.full_like(z, 700.0)
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            above = (log_c + _log_v(alpha, theta0, r, mid)) > 0
            left = above == rising  # the peak lies left of mid
            hi = torch.where(left, mid, hi)
            lo = torch.where(left, lo, mid)
        peak = (lo + hi) / 2
        # The integrand decays away from the peak at least as fast as exp(-rate |s - peak|).
        rate = torch.minimum(r.abs(), (r - 1).abs()).clamp(min=0.5)
        step = (40 / rate) / _HALF_NODES
        k = torch.arange(-_HALF_NODES, _HALF_NODES + 1, dtype=z.dtype, device=z.device)
        s = peak + step * k.reshape((-1,) + (1,) * z.dim())
    log_u = log_c + _log_v(alpha, theta0, r, s)
    log_integrand = torch.where(log_u > 700, -math.inf, log_u - log_u.clamp(max=700).exp())
    log_jacobian = (_HALF_PI + theta0).log() + F.logsigmoid(s) + F.logsigmoid(-s)
    log_integral = torch.logsumexp(log_integrand + log_jacobian, 0) + step.log()
    return (alpha / (math.pi * (alpha - 1).abs())).log() - z.log() + log_integral


def _log_density_s0_unsafe(
    alpha: torch.Tensor, skew: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """``log f(x)`` of a standard S0 variable, for ``alpha`` away from 1."""
    z = x + skew * (_HALF_PI * alpha).tan()  # the S1 value
    negative = z < 0
    skew = torch.where(negative, -skew, skew)  # f(z; alpha, skew) = f(-z; alpha, -skew)
    z = z.abs()
    # At z == 0 the integral degenerates; Nolan gives the value there in closed form.
    at_zero = z < 1e-12
    b = skew * (_HALF_PI * alpha).tan()
    log_f0 = (
        torch.lgamma(1 + 1 / alpha)
        + (b.atan() / alpha).cos().log()
        - math.log(math.pi)
        - torch.log1p(b * b) / (2 * alpha)
    )
    log_f = _log_density_s1_positive(alpha, skew, torch.where(at_zero, torch.ones_like(z), z))
    return torch.where(at_zero, log_f0, log_f)


def _log_density_s0(alpha: torch.Tensor, skew: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log f(x)`` of a standard S0 variable (float64 tensors of one shape).

    Values outside the support (one side of a totally skewed law with ``alpha < 1``), and
    tails too far out for float64, come out as ``-inf``.
    """
    # At stability 2 the law is N(0, 2) whatever the skew: exact, and sharper in the tails.
    gaussian = -0.25 * x * x - 0.5 * math.log(4 * math.pi)
    log_f = _log_density_s0_near_one(alpha, skew, x)
    return torch.where(alpha == 2, gaussian, log_f).nan_to_num(nan=-math.inf)


def _log_density_s0_near_one(
    alpha: torch.Tensor, skew: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """As :func:`_log_density_s0_unsafe`, interpolated within ``_DENSITY_HOLE`` of 1."""
    near = (alpha - 1).abs() < _DENSITY_HOLE
    if not near.any():
        return _log_density_s0_unsafe(alpha, skew, x)
    upper = _log_density_s0_unsafe(torch.where(near, 1 + _DENSITY_HOLE, alpha), skew, x)
    lower = _log_density_s0_unsafe(torch.full_like(alpha, 1 - _DENSITY_HOLE), skew, x)
    half = torch.full_like(alpha, 0.5)
    w = torch.where(near, (alpha - 1 + _DENSITY_HOLE) / (2 * _DENSITY_HOLE), half)
    mixed = torch.logaddexp(w.log() + upper, (1 - w).log() + lower)
    return torch.where(near, mixed, upper)


class Stable(TorchDistribution):
    """Lévy alpha-stable distribution ``S(stability, skew, scale, loc)``.

    Args:
        stability: the tail index ``alpha`` in ``(0, 2]`` (2 is a normal of variance
            ``2 scale**2``, 1 with ``skew == 0`` a Cauchy).
        skew: the skewness ``beta`` in ``[-1, 1]``.
        scale: positive scale (default 1).
        loc: location (default 0); in ``"S"`` coords the classic location, in ``"S0"``
            Nolan's, which equals the mode for symmetric laws and moves continuously.
        coords: ``"S0"`` (default, continuous in the parameters) or ``"S"``.
        validate_args: as for any ``torch.distributions.Distribution``.

    ``log_prob`` is computed by numerical integration (accurate but costly); models usually
    reparameterize stable sites instead, as in Pyro.

    Example:
        >>> import torch
        >>> d = Stable(torch.tensor(1.5), torch.tensor(0.3))
        >>> d.rsample((4,)).shape
        torch.Size([4])
    """

    has_rsample = True
    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "stability": constraints.interval(0, 2),
        "skew": constraints.interval(-1, 1),
        "scale": constraints.positive,
        "loc": constraints.real,
    }
    support = constraints.real

    def __init__(
        self, stability, skew, scale=1.0, loc=0.0, coords: str = "S0", validate_args=None
    ) -> None:
        if coords not in ("S0", "S"):
            raise ValueError(f"{type(self).__name__}: coords must be 'S0' or 'S', got {coords!r}")
        self.stability, self.skew, self.scale, self.loc = broadcast_all(stability, skew, scale, loc)
        self.coords = coords
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> Stable:
        """The same distribution over a larger batch shape (keeps the subclass)."""
        new = self._get_checked_instance(Stable, _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self.arg_constraints:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        new.coords = self.coords
        super(Stable, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """``loc + scale * Z``, ``Z`` the CMS transform of fresh uniform and exponential noise."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = self.loc.new_empty(shape).uniform_(-_HALF_PI, _HALF_PI)
            e = self.loc.new_empty(shape).exponential_()
            # Keep the noise off the ends, where cos(u) or e vanish.
            eps = torch.finfo(u.dtype).eps
            u.clamp_(-_HALF_PI + 2 * eps, _HALF_PI - 2 * eps)
            e.clamp_(min=torch.finfo(e.dtype).tiny)
        z = _standard_s0(self.stability, self.skew, u, e)
        if self.coords == "S":
            z = z + _s1_shift(self.stability, self.skew)
        return self.loc + self.scale * z

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(value)`` by Nolan's integral (float64 inside, returned in value's dtype).

        Computed by a trapezoid rule placed around the integrand's single peak: relative
        error about ``1e-6`` or better away from ``stability == 1``; within ``1e-3`` of it the
        density is interpolated linearly in ``stability`` (log-density error up to about
        ``5e-3`` for symmetric laws, ``2e-2`` for skewed ones). Differentiable in the value
        and every parameter, at a few hundred integrand evaluations per element.
        """
        if self._validate_args:
            self._validate_sample(value)
        dtype = torch.promote_types(value.dtype, self.loc.dtype)
        x = ((value - self.loc) / self.scale).double()
        alpha, skew, x = broadcast_all(self.stability.double(), self.skew.double(), x)
        if self.coords == "S":
            x = x - _s1_shift(alpha, skew)
        return _log_density_s0(alpha, skew, x).to(dtype) - self.scale.log()

    @property
    def mean(self) -> torch.Tensor:
        """Finite for ``stability > 1`` (NaN otherwise): ``loc`` in S, shifted in S0."""
        mean = self.loc
        if self.coords == "S0":
            mean = mean - self.scale * self.skew * (_HALF_PI * self.stability).tan()
        return mean.masked_fill(self.stability <= 1, math.nan)

    @property
    def variance(self) -> torch.Tensor:
        """``2 scale**2`` at ``stability == 2``, infinite below."""
        return (2 * self.scale * self.scale).masked_fill(self.stability < 2, math.inf)


class StableWithLogProb(Stable):
    """:class:`Stable` whose sites keep their likelihood: Pyro's reparameterizers
    (``MinimalReparam``, the stable reparams) leave this class alone, so inference uses
    :meth:`Stable.log_prob` rather than auxiliary variables."""
