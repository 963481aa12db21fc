"""More of Pyro's distribution families, with Pyro's names, signatures and shapes.

- Skewed smooth real-line families: :class:`SkewLogistic` and
  :class:`SoftAsymmetricLaplace` (a Gaussian-smoothed asymmetric Laplace).
- Counts: :class:`ExtendedBinomial` and :class:`ExtendedBetaBinomial` (every
  integer is in the logical support; values outside ``[0, total_count]`` score
  ``-inf``, and ``total_count`` may be negative) and
  :class:`LogNormalNegativeBinomial` (a negative binomial with normal noise on
  its logits, scored by Gauss-Hermite quadrature).
- Missing data: :class:`NanMaskedNormal` and :class:`NanMaskedMultivariateNormal`
  treat NaN entries of the observed value as missing and marginalize them out.
- Gaussian mixtures with diagonal covariances and reparameterized draws:
  :class:`MixtureOfDiagNormals`, :class:`MixtureOfDiagNormalsSharedCovariance`
  and :class:`GaussianScaleMixture`.

About the mixtures' ``rsample``: Pyro differentiates a mixture draw with a
custom backward pass. Here the draw is differentiated implicitly through the
Rosenblatt transform instead: coordinate ``i`` of a draw is the quantile
``F_i^{-1}(u_i | z_<i)`` of its conditional distribution given the coordinates
before it (a mixture of normals whose weights are the component posteriors
given ``z_<i``), so holding ``u`` fixed, ``dz_i = -(dF_i + sum_j dF_i/dz_j dz_j)
/ p_i(z_i | z_<i)``. The forward value is an ordinary ancestral draw; the
gradient is the exact pathwise derivative of that quantile map, so
``grad E[f(z)]`` is estimated without bias for smooth ``f``. The cost is a loop
over the ``D`` coordinates of ``O(K)`` work each.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions.utils import broadcast_all, lazy_property

from . import constraints
from .distribution import TorchDistribution
from .extra import BetaBinomial, _LocScale
from .torch import Binomial, Categorical, MultivariateNormal, NegativeBinomial, Normal
from .util import broadcast_shape

__all__ = [
    "ExtendedBetaBinomial",
    "ExtendedBinomial",
    "GaussianScaleMixture",
    "LogNormalNegativeBinomial",
    "MixtureOfDiagNormals",
    "MixtureOfDiagNormalsSharedCovariance",
    "NanMaskedMultivariateNormal",
    "NanMaskedNormal",
    "SkewLogistic",
    "SoftAsymmetricLaplace",
]

_Shape = torch.Size | tuple[int, ...] | list[int]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_EULER_GAMMA = 0.5772156649015329  # -digamma(1)


# --------------------------------------------------------------------------------------
# Skewed real-line families
# --------------------------------------------------------------------------------------


class SkewLogistic(_LocScale):
    """Type I generalized logistic: ``cdf(x) = sigmoid(z)**asymmetry``, ``z = (x - loc) / scale``.

    Smooth and log-concave with exponential tails; skews right for ``asymmetry > 1``,
    left for ``asymmetry < 1``, and is the logistic at ``asymmetry = 1``.

    Args:
        loc: location.
        scale: scale, positive.
        asymmetry: the cdf's exponent, positive (default ``1``).
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "asymmetry": constraints.positive,
    }
    _params = ("loc", "scale", "asymmetry")

    def __init__(
        self,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        asymmetry: torch.Tensor | float = 1.0,
        *,
        validate_args: bool | None = None,
    ) -> None:
        self._set_params((loc, scale, asymmetry), validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log a - z + (a + 1) log sigmoid(z) - log scale``."""
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        a = self.asymmetry
        return a.log() - z + (a + 1) * F.logsigmoid(z) - self.scale.log()

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        """``sigmoid(z)**asymmetry``."""
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return torch.exp(self.asymmetry * F.logsigmoid(z))

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """``loc + scale * logit(u**(1/a))``, in log space so ``u`` near one stays finite."""
        t = value.log() / self.asymmetry
        return self.loc + self.scale * (t - torch.log(-torch.expm1(t)))

    @property
    def mean(self) -> torch.Tensor:
        """``loc + scale (digamma(a) - digamma(1))``."""
        return self.loc + self.scale * (torch.digamma(self.asymmetry) + _EULER_GAMMA)

    @property
    def variance(self) -> torch.Tensor:
        """``scale**2 (trigamma(a) + pi**2 / 6)``."""
        return self.scale**2 * (torch.polygamma(1, self.asymmetry) + math.pi**2 / 6)


def _log_erfc(x: torch.Tensor) -> torch.Tensor:
    """``log erfc(x)``, finite far into the right tail (``erfc(x) = 2 Phi(-x sqrt 2)``)."""
    return math.log(2.0) + torch.special.log_ndtr(-math.sqrt(2.0) * x)


class SoftAsymmetricLaplace(_LocScale):
    """An asymmetric Laplace convolved with a normal: ``loc + scale * (softness * n - a * u + v / a)``
    with ``n ~ N(0, 1)`` and standard exponentials ``u, v`` (``a`` is ``asymmetry``).

    Its density is smooth with exponential tails of scales ``scale * asymmetry`` (left)
    and ``scale / asymmetry`` (right); as ``softness -> 0`` it tends to
    :class:`~vitorch.distributions.extra.AsymmetricLaplace`.

    Args:
        loc: location.
        scale: geometric mean of the two tail scales, positive.
        asymmetry: square root of the left/right tail-scale ratio, positive (default ``1``).
        softness: the normal's scale relative to ``scale``, positive (default ``1``).
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "asymmetry": constraints.positive,
        "softness": constraints.positive,
    }
    _params = ("loc", "scale", "asymmetry", "softness")

    def __init__(
        self,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        asymmetry: torch.Tensor | float = 1.0,
        softness: torch.Tensor | float = 1.0,
        *,
        validate_args: bool | None = None,
    ) -> None:
        self._set_params((loc, scale, asymmetry, softness), validate_args)

    @property
    def left_scale(self) -> torch.Tensor:
        """``scale * asymmetry``."""
        return self.scale * self.asymmetry

    @property
    def right_scale(self) -> torch.Tensor:
        """``scale / asymmetry``."""
        return self.scale / self.asymmetry

    @property
    def soft_scale(self) -> torch.Tensor:
        """``scale * softness``, the normal's scale."""
        return self.scale * self.softness

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The convolution in closed form, one term per side of the Laplace.

        In standard units ``x = (value - loc) / scale``, with ``L = a``, ``R = 1 / a``
        and ``S = softness``, each side integrates a normal against an exponential:
        ``left = exp(x / L + S²/(2L²)) erfc((L x + S²) / (√2 L S)) / 2`` and
        ``right = exp(-x / R + S²/(2R²)) erfc((S² - R x) / (√2 R S)) / 2``; the density
        is ``(left + right) / ((L + R) scale)``.
        """
        if self._validate_args:
            self._validate_sample(value)
        x = (value - self.loc) / self.scale
        big_l, big_r, s = self.asymmetry, self.asymmetry.reciprocal(), self.softness
        s2 = s * s
        root2_s = math.sqrt(2.0) * s
        left = x / big_l + s2 / (2 * big_l**2) + _log_erfc((big_l * x + s2) / (big_l * root2_s))
        right = -x / big_r + s2 / (2 * big_r**2) + _log_erfc((s2 - big_r * x) / (big_r * root2_s))
        return (
            torch.logaddexp(left, right) - math.log(2.0) - (big_l + big_r).log() - self.scale.log()
        )

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """``loc + soft_scale * n - left_scale * u + right_scale * v``."""
        shape = self._extended_shape(sample_shape)
        n = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        e = torch.empty((2,) + shape, dtype=self.loc.dtype, device=self.loc.device).exponential_()
        return self.loc + self.soft_scale * n - self.left_scale * e[0] + self.right_scale * e[1]

    @property
    def mean(self) -> torch.Tensor:
        """``loc + right_scale - left_scale``."""
        return self.loc + self.right_scale - self.left_scale

    @property
    def variance(self) -> torch.Tensor:
        """``left_scale**2 + right_scale**2 + soft_scale**2`` (three independent terms)."""
        return self.left_scale**2 + self.right_scale**2 + self.soft_scale**2


# --------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------


def _out_of_range(value: torch.Tensor, total_count: torch.Tensor) -> torch.Tensor:
    return (value < 0) | (value > total_count)


class ExtendedBinomial(Binomial):
    """A binomial whose logical support is every integer, and whose ``total_count``
    may be any integer.

    Values outside ``[0, total_count]`` (all values when ``total_count < 0``) score
    ``-inf`` instead of failing validation, which lets models with data-dependent
    counts run unchanged. Arguments are those of
    :class:`~vitorch.distributions.Binomial`.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "total_count": constraints.integer,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.integer

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The binomial log-pmf on ``[0, total_count]``, ``-inf`` elsewhere."""
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        invalid = _out_of_range(value, self.total_count)
        n = self.total_count.clamp(min=0)
        k = torch.where(invalid, 0, value)
        log_choose = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
        # k log p + (n - k) log(1 - p) = k * logits - n * softplus(logits).
        result = log_choose + k * logits - n * F.softplus(logits)
        return result.masked_fill(invalid, -math.inf)


class ExtendedBetaBinomial(BetaBinomial):
    """A beta-binomial whose logical support is every integer, and whose ``total_count``
    may be any integer.

    Values outside ``[0, total_count]`` score ``-inf``. Arguments are those of
    :class:`~vitorch.distributions.extra.BetaBinomial`.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "total_count": constraints.integer,
    }
    support = constraints.integer

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The beta-binomial log-pmf on ``[0, total_count]``, ``-inf`` elsewhere."""
        if self._validate_args:
            self._validate_sample(value)
        a, b = self.concentration1, self.concentration0
        invalid = _out_of_range(value, self.total_count)
        n = self.total_count.clamp(min=0)
        k = torch.where(invalid, 0, value)
        log_choose = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
        log_beta_ratio = (
            torch.lgamma(k + a)
            + torch.lgamma(n - k + b)
            - torch.lgamma(n + a + b)
            - torch.lgamma(a)
            - torch.lgamma(b)
            + torch.lgamma(a + b)
        )
        return (log_choose + log_beta_ratio).masked_fill(invalid, -math.inf)


@functools.lru_cache(maxsize=32)
def _hermite_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log-weights of the ``n``-point Gauss-Hermite rule for ``E f(N(0, 1))``."""
    nodes, weights = np.polynomial.hermite.hermgauss(n)
    return nodes * math.sqrt(2.0), np.log(weights) - 0.5 * math.log(math.pi)


class LogNormalNegativeBinomial(TorchDistribution):
    """A negative binomial whose logits carry normal noise:
    ``p(y) = ∫ N(e | 0, σ) NB(y | total_count, logits + e) de``.

    ``log_prob`` evaluates the integral with ``num_quad_points``-point Gauss-Hermite
    quadrature (exact as the number of points grows; 8 is Pyro's default). ``sample``
    draws the noise, then the count, so it follows the exact mixture.
    ``mean = total_count * exp(logits + σ²/2)`` and
    ``variance = mean + (exp(σ²) (1 + 1/total_count) - 1) mean²``.

    Args:
        total_count: the negative binomial's ``total_count``, non-negative.
        logits: the negative binomial's logits before the noise.
        multiplicative_noise_scale: ``σ``, the noise's scale, positive.
        num_quad_points: quadrature points for ``log_prob``, a positive int.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "total_count": constraints.greater_than_eq(0),
        "logits": constraints.real,
        "multiplicative_noise_scale": constraints.positive,
    }
    support = constraints.nonnegative_integer

    def __init__(
        self,
        total_count: torch.Tensor | float,
        logits: torch.Tensor | float,
        multiplicative_noise_scale: torch.Tensor | float,
        *,
        num_quad_points: int = 8,
        validate_args: bool | None = None,
    ) -> None:
        if (
            isinstance(num_quad_points, bool)
            or not isinstance(num_quad_points, numbers.Integral)
            or num_quad_points < 1
        ):
            raise ValueError(
                "LogNormalNegativeBinomial: num_quad_points must be a positive int, got "
                f"{num_quad_points!r}"
            )
        total_count, logits, noise = broadcast_all(total_count, logits, multiplicative_noise_scale)
        self.total_count = total_count
        self.logits = logits
        self.multiplicative_noise_scale = noise
        self.num_quad_points = int(num_quad_points)
        nodes, log_weights = _hermite_rule(self.num_quad_points)
        # torch.tensor copies: the cached arrays must not be shared with callers.
        self.quad_points = torch.tensor(nodes, dtype=logits.dtype, device=logits.device)
        self.log_weights = torch.tensor(log_weights, dtype=logits.dtype, device=logits.device)
        self.nb_dist = NegativeBinomial(
            total_count=total_count.unsqueeze(-1),
            logits=logits.unsqueeze(-1) + noise.unsqueeze(-1) * self.quad_points,
            validate_args=False,
        )
        super().__init__(logits.shape, validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> LogNormalNegativeBinomial:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(LogNormalNegativeBinomial, _instance)
        batch_shape = torch.Size(batch_shape)
        LogNormalNegativeBinomial.__init__(
            new,
            self.total_count.expand(batch_shape),
            self.logits.expand(batch_shape),
            self.multiplicative_noise_scale.expand(batch_shape),
            num_quad_points=self.num_quad_points,
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``logsumexp_q(log w_q + log NB(value | total_count, logits + σ t_q))``."""
        if self._validate_args:
            self._validate_sample(value)
        nb = self.nb_dist.log_prob(value.unsqueeze(-1))
        return torch.logsumexp(self.log_weights + nb, dim=-1)

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Normal noise on the logits, then a negative-binomial count."""
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            noise = torch.randn(shape, dtype=self.logits.dtype, device=self.logits.device)
            logits = self.logits + self.multiplicative_noise_scale * noise
            return NegativeBinomial(
                self.total_count.expand(shape), logits=logits, validate_args=False
            ).sample()

    @property
    def mean(self) -> torch.Tensor:
        """``total_count * exp(logits + σ²/2)``."""
        return torch.exp(
            self.logits + self.total_count.log() + 0.5 * self.multiplicative_noise_scale**2
        )

    @property
    def variance(self) -> torch.Tensor:
        """``mean + (exp(σ²) (1 + 1/total_count) - 1) mean²``."""
        m = self.mean
        kappa = torch.exp(self.multiplicative_noise_scale**2) * (1 + 1 / self.total_count) - 1
        return m + kappa * m**2


# --------------------------------------------------------------------------------------
# Missing data
# --------------------------------------------------------------------------------------


class NanMaskedNormal(Normal):
    """A :class:`~vitorch.distributions.Normal` whose ``log_prob`` is zero at NaN entries.

    Non-finite entries of the value count as missing: each scalar is its own event, so
    marginalizing a missing one leaves nothing. Arguments are those of ``Normal``.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``Normal.log_prob`` where ``value`` is finite, ``0`` where it is not."""
        observed = value.isfinite()
        if bool(observed.all()):
            return super().log_prob(value)
        filled = torch.where(observed, value, self.loc)
        return torch.where(observed, super().log_prob(filled), 0.0)


class NanMaskedMultivariateNormal(MultivariateNormal):
    """A :class:`~vitorch.distributions.MultivariateNormal` that marginalizes NaN entries.

    ``log_prob`` of a vector with missing (non-finite) entries is the log-density of the
    observed entries under their marginal normal; a vector with none observed scores
    zero. Arguments are those of ``MultivariateNormal``.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The marginal log-density of each vector's finite entries.

        All rows at once: a missing coordinate's row and column of the covariance
        are replaced by those of the identity and its residual by zero. That
        covariance's Cholesky factor is block-diagonal (up to a permutation) over
        observed and missing coordinates, so the missing block adds exactly
        ``-log(2π)/2`` per coordinate, which is left out.
        """
        observed = value.isfinite()
        if bool(observed.all()):
            return super().log_prob(value)
        filled = torch.where(observed, value, self.loc)
        if self._validate_args:
            self._validate_sample(filled)
        observed = observed.expand(filled.shape)
        diff = torch.where(observed, filled - self.loc, 0.0)
        both = observed.unsqueeze(-1) & observed.unsqueeze(-2)
        eye = torch.eye(diff.size(-1), dtype=diff.dtype, device=diff.device)
        cov = torch.where(both, self.covariance_matrix, eye)
        chol = torch.linalg.cholesky(cov)
        white = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
        half_log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        n_observed = observed.sum(-1).to(diff.dtype)
        return -0.5 * white.square().sum(-1) - half_log_det - _HALF_LOG_2PI * n_observed


# --------------------------------------------------------------------------------------
# Diagonal Gaussian mixtures
# --------------------------------------------------------------------------------------


def _require_tensor(cls: str, name: str, value, min_dim: int, layout: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() < min_dim:
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
        raise ValueError(f"{cls}: {name} must be a tensor of shape {layout}, got {got}")
    return value


def _log_normal_std(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x.square() - _HALF_LOG_2PI


class _DiagNormalMixture(TorchDistribution):
    """Shared code for mixtures of ``K`` diagonal normals in ``D`` dims.

    Subclasses set ``_locs`` and ``_scales`` (broadcasting to ``batch + (K, D)``) and
    ``component_logits`` (``batch + (K,)``), then call :meth:`_finish_init`.
    """

    support = constraints.real_vector
    has_rsample = True
    _locs: torch.Tensor
    _scales: torch.Tensor
    component_logits: torch.Tensor

    def _finish_init(self, batch_shape: torch.Size, dim: int, validate_args) -> None:
        self.dim = dim
        self.categorical = Categorical(
            logits=self.component_logits.expand(batch_shape + self.component_logits.shape[-1:]),
            validate_args=False,
        )
        super().__init__(batch_shape, torch.Size((dim,)), validate_args=validate_args)

    @lazy_property
    def probs(self) -> torch.Tensor:
        """The mixture weights, ``softmax(component_logits)``."""
        return self.categorical.probs

    def _log_weights(self) -> torch.Tensor:
        return self.component_logits.log_softmax(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``logsumexp_k(log π_k + Σ_i log N(value_i | loc_ki, scale_ki))``."""
        if self._validate_args:
            self._validate_sample(value)
        z = (value.unsqueeze(-2) - self._locs) / self._scales
        component = (_log_normal_std(z) - self._scales.log()).sum(-1)
        return torch.logsumexp(self._log_weights() + component, dim=-1)

    def _draw(self, sample_shape: _Shape) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        which = self.categorical.sample(torch.Size(sample_shape))
        index = which.unsqueeze(-1).unsqueeze(-1).expand(shape[:-1] + (1, self.dim))
        k = self.component_logits.size(-1)
        params = [p.expand(shape[:-1] + (k, self.dim)) for p in (self._locs, self._scales)]
        locs, scales = (p.gather(-2, index).squeeze(-2) for p in params)
        return locs + scales * torch.randn(shape, dtype=locs.dtype, device=locs.device)

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """A component, then a draw from its normal."""
        with torch.no_grad():
            return self._draw(sample_shape)

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """A draw whose gradient is the implicit (Rosenblatt) pathwise derivative.

        See the module docstring. The value equals that of :meth:`sample`.
        """
        z = self.sample(sample_shape)
        params = (self._locs, self._scales, self.component_logits)
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return z
        locs, scales = self._locs, self._scales
        log_w = self._log_weights()
        coords = []
        for i in range(self.dim):
            loc_i, scale_i = locs[..., i], scales[..., i]
            w = log_w.log_softmax(-1)
            x = (z[..., i : i + 1] - loc_i) / scale_i
            cdf = (w.exp() * torch.special.ndtr(x)).sum(-1)
            sf = (w.exp() * torch.special.ndtr(-x)).sum(-1)
            # Same derivative either way; the smaller of the two keeps it precise.
            t = torch.where(cdf < 0.5, cdf, -sf)
            log_density = torch.logsumexp(w + _log_normal_std(x) - scale_i.log(), dim=-1)
            z_i = z[..., i] - (t - t.detach()) / log_density.detach().exp()
            coords.append(z_i)
            if i + 1 < self.dim:
                x_i = (z_i.unsqueeze(-1) - loc_i) / scale_i
                log_w = log_w + _log_normal_std(x_i) - scale_i.log()
        return torch.stack(coords, dim=-1)

    @property
    def mean(self) -> torch.Tensor:
        """``Σ_k π_k loc_k``."""
        return (
            (self.probs.unsqueeze(-1) * self._locs).sum(-2).expand(self.batch_shape + (self.dim,))
        )

    @property
    def variance(self) -> torch.Tensor:
        """``Σ_k π_k (scale_k² + loc_k²) - mean²``."""
        second = (self.probs.unsqueeze(-1) * (self._scales**2 + self._locs**2)).sum(-2)
        return (second - self.mean**2).expand(self.batch_shape + (self.dim,))


class MixtureOfDiagNormals(_DiagNormalMixture):
    """A mixture of ``K`` normals in ``D`` dims, each with its own mean and diagonal scale.

    Args:
        locs: component means, shape ``batch + (K, D)``.
        coord_scale: component scales, positive, shape ``batch + (K, D)`` (broadcasts
            against ``locs``).
        component_logits: mixture logits, shape ``batch + (K,)``.
        validate_args: as for any ``torch.distributions.Distribution``.

    ``rsample`` is reparameterized (see the module docstring); unlike Pyro's, ``D = 1``
    is allowed.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "locs": constraints.real,
        "coord_scale": constraints.positive,
        "component_logits": constraints.real,
    }

    def __init__(
        self,
        locs: torch.Tensor,
        coord_scale: torch.Tensor,
        component_logits: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        cls = type(self).__name__
        _require_tensor(cls, "locs", locs, 2, "(..., K, D)")
        _require_tensor(cls, "coord_scale", coord_scale, 2, "(..., K, D)")
        _require_tensor(cls, "component_logits", component_logits, 1, "(..., K)")
        k = locs.size(-2)
        if component_logits.size(-1) != k:
            raise ValueError(
                f"{cls}: component_logits must end in K={k} (locs has shape "
                f"{tuple(locs.shape)}), got shape {tuple(component_logits.shape)}"
            )
        event = locs.shape[-2:]
        if any(c not in (1, e) for c, e in zip(coord_scale.shape[-2:], event)):
            raise ValueError(
                f"{cls}: coord_scale must end in (K, D)={tuple(event)} like locs, got shape "
                f"{tuple(coord_scale.shape)}"
            )
        batch_shape = broadcast_shape(
            locs.shape[:-2], coord_scale.shape[:-2], component_logits.shape[:-1]
        )
        self.locs = locs.expand(batch_shape + event)
        self.coord_scale = coord_scale.expand(batch_shape + event)
        self.component_logits = component_logits.expand(batch_shape + (k,))
        self._locs, self._scales = self.locs, self.coord_scale
        self._finish_init(batch_shape, event[-1], validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> MixtureOfDiagNormals:
        """The same mixture over a larger batch shape."""
        new = self._get_checked_instance(MixtureOfDiagNormals, _instance)
        batch_shape = torch.Size(batch_shape)
        MixtureOfDiagNormals.__init__(
            new,
            self.locs.expand(batch_shape + self.locs.shape[-2:]),
            self.coord_scale.expand(batch_shape + self.coord_scale.shape[-2:]),
            self.component_logits.expand(batch_shape + self.component_logits.shape[-1:]),
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new


class MixtureOfDiagNormalsSharedCovariance(_DiagNormalMixture):
    """A mixture of ``K`` normals in ``D`` dims with their own means and one shared
    diagonal scale.

    Args:
        locs: component means, shape ``batch + (K, D)``.
        coord_scale: the shared scale, positive, shape ``batch + (D,)``.
        component_logits: mixture logits, shape ``batch + (K,)``.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "locs": constraints.real,
        "coord_scale": constraints.positive,
        "component_logits": constraints.real,
    }

    def __init__(
        self,
        locs: torch.Tensor,
        coord_scale: torch.Tensor,
        component_logits: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        cls = type(self).__name__
        _require_tensor(cls, "locs", locs, 2, "(..., K, D)")
        _require_tensor(cls, "coord_scale", coord_scale, 1, "(..., D)")
        _require_tensor(cls, "component_logits", component_logits, 1, "(..., K)")
        k, d = locs.shape[-2:]
        if coord_scale.size(-1) != d:
            raise ValueError(
                f"{cls}: coord_scale must end in D={d} (locs has shape {tuple(locs.shape)}), "
                f"got shape {tuple(coord_scale.shape)}"
            )
        if component_logits.size(-1) != k:
            raise ValueError(
                f"{cls}: component_logits must end in K={k} (locs has shape "
                f"{tuple(locs.shape)}), got shape {tuple(component_logits.shape)}"
            )
        batch_shape = broadcast_shape(
            locs.shape[:-2], coord_scale.shape[:-1], component_logits.shape[:-1]
        )
        self.locs = locs.expand(batch_shape + (k, d))
        self.coord_scale = coord_scale.expand(batch_shape + (d,))
        self.component_logits = component_logits.expand(batch_shape + (k,))
        self._locs, self._scales = self.locs, self.coord_scale.unsqueeze(-2)
        self._finish_init(batch_shape, d, validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> MixtureOfDiagNormalsSharedCovariance:
        """The same mixture over a larger batch shape."""
        new = self._get_checked_instance(MixtureOfDiagNormalsSharedCovariance, _instance)
        batch_shape = torch.Size(batch_shape)
        MixtureOfDiagNormalsSharedCovariance.__init__(
            new,
            self.locs.expand(batch_shape + self.locs.shape[-2:]),
            self.coord_scale.expand(batch_shape + self.coord_scale.shape[-1:]),
            self.component_logits.expand(batch_shape + self.component_logits.shape[-1:]),
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new


class GaussianScaleMixture(_DiagNormalMixture):
    """A mixture of ``K`` zero-mean normals in ``D`` dims; component ``k`` has the scales
    ``component_scale[k] * coord_scale``.

    Args:
        coord_scale: per-coordinate scales, positive, shape ``batch + (D,)``.
        component_logits: mixture logits, shape ``batch + (K,)``.
        component_scale: per-component scale factors, positive, shape ``batch + (K,)``.
        validate_args: as for any ``torch.distributions.Distribution``.

    Pyro's version takes unbatched parameters and ``D >= 2`` only; both restrictions
    are lifted here.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "coord_scale": constraints.positive,
        "component_logits": constraints.real,
        "component_scale": constraints.positive,
    }

    def __init__(
        self,
        coord_scale: torch.Tensor,
        component_logits: torch.Tensor,
        component_scale: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        cls = type(self).__name__
        _require_tensor(cls, "coord_scale", coord_scale, 1, "(..., D)")
        _require_tensor(cls, "component_logits", component_logits, 1, "(..., K)")
        _require_tensor(cls, "component_scale", component_scale, 1, "(..., K)")
        k, d = component_logits.size(-1), coord_scale.size(-1)
        if component_scale.size(-1) != k:
            raise ValueError(
                f"{cls}: component_scale must end in K={k} like component_logits, got shape "
                f"{tuple(component_scale.shape)}"
            )
        batch_shape = broadcast_shape(
            coord_scale.shape[:-1], component_logits.shape[:-1], component_scale.shape[:-1]
        )
        self.coord_scale = coord_scale.expand(batch_shape + (d,))
        self.component_logits = component_logits.expand(batch_shape + (k,))
        self.component_scale = component_scale.expand(batch_shape + (k,))
        self._scales = self.component_scale.unsqueeze(-1) * self.coord_scale.unsqueeze(-2)
        self._locs = torch.zeros_like(self._scales)
        self._finish_init(batch_shape, d, validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> GaussianScaleMixture:
        """The same mixture over a larger batch shape."""
        new = self._get_checked_instance(GaussianScaleMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        GaussianScaleMixture.__init__(
            new,
            self.coord_scale.expand(batch_shape + self.coord_scale.shape[-1:]),
            self.component_logits.expand(batch_shape + self.component_logits.shape[-1:]),
            self.component_scale.expand(batch_shape + self.component_scale.shape[-1:]),
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new
