"""Pyro's ``TruncatedPolyaGamma``, ``GroupedNormalNormal`` and ``ExpandedDistribution``.

- ``TruncatedPolyaGamma``: the Polya-Gamma ``PG(1, 0)`` law cut at 2.5, with the density's
  alternating series summed to a fixed number of terms (for data augmentation in HMC).
- ``GroupedNormalNormal``: the likelihood of grouped observations after integrating out
  each group's normal mean, in closed form.
- ``ExpandedDistribution``: any distribution over a larger batch shape, with independent
  draws along the new dims.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution
from torch.distributions.utils import broadcast_all

from . import constraints
from .distribution import TorchDistribution
from .torch import Normal
from .util import broadcast_shape

__all__ = ["ExpandedDistribution", "GroupedNormalNormal", "TruncatedPolyaGamma"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class TruncatedPolyaGamma(TorchDistribution):
    """``PolyaGamma(1, 0)`` truncated to ``(0, 2.5)``.

    ``log_prob`` sums the first ``num_log_prob_terms`` terms of the alternating series
    ``p(x) = sum_n (-1)**n (2n + 1) exp(-(2n + 1)**2 / (8x)) / sqrt(2 pi x**3)``, which is
    accurate to about six decimals on the support (the mass beyond 2.5 is about ``1e-5``
    and is not renormalized). ``sample`` is only a rough draw, for initialization: the
    first ``num_gamma_variates`` terms of the series ``sum_k E_k / (2 pi**2 (k - 1/2)**2)``
    with ``E_k ~ Exponential(1)``, clamped to the support.

    Args:
        prototype: any tensor; draws and densities take its dtype and device.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    truncation_point = 2.5
    num_log_prob_terms = 7
    num_gamma_variates = 8

    arg_constraints: dict = {}
    support = constraints.interval(0.0, truncation_point)
    has_rsample = False

    def __init__(self, prototype: torch.Tensor, validate_args: bool | None = None) -> None:
        if not isinstance(prototype, torch.Tensor):
            raise TypeError(
                f"TruncatedPolyaGamma: prototype must be a tensor, got {type(prototype).__name__}"
            )
        self.prototype = prototype
        super().__init__(torch.Size(), torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> TruncatedPolyaGamma:
        new = self._get_checked_instance(TruncatedPolyaGamma, _instance)
        new.prototype = self.prototype
        super(TruncatedPolyaGamma, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """A rough draw: the truncated gamma series, clamped to ``(0, 2.5]``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        k = torch.arange(self.num_gamma_variates, dtype=self.prototype.dtype)
        denom = (k + 0.5).square().mul(2 * math.pi**2).to(self.prototype.device)
        with torch.no_grad():
            e = self.prototype.new_empty(shape + (self.num_gamma_variates,)).exponential_()
            return (e / denom).sum(-1).clamp(max=self.truncation_point)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log of the truncated alternating series at ``value``."""
        if self._validate_args:
            self._validate_sample(value)
        n = torch.arange(self.num_log_prob_terms, dtype=value.dtype, device=value.device)
        odd = 2 * n + 1
        x = value.unsqueeze(-1)
        log_terms = odd.log() - 0.125 * odd.square() / x
        positive = torch.logsumexp(log_terms[..., 0::2], -1)
        negative = torch.logsumexp(log_terms[..., 1::2], -1)
        # log(P - N) = log P + log(1 - exp(N - P)), without forming P - N.
        series = positive + torch.log1p(-torch.exp(negative - positive))
        log_p = series - 1.5 * value.log() - _HALF_LOG_2PI
        return log_p.expand(broadcast_shape(self.batch_shape, log_p.shape))


class GroupedNormalNormal(TorchDistribution):
    """Grouped normal observations with each group's normal mean integrated out.

    Observation ``i`` is ``y_i ~ Normal(m_g, obs_scale_i)`` with ``g = group_idx[i]`` and
    ``m_g ~ Normal(prior_loc_g, prior_scale_g)``. ``log_prob(y)`` is the log marginal
    likelihood of all observations: per group, a multivariate normal with covariance
    ``diag(obs_scale**2) + prior_scale**2 * 11'``, evaluated by Sherman-Morrison in
    ``O(num_data)``. It returns a scalar (the batch and event shapes are empty, as in Pyro).

    Args:
        prior_loc: ``(num_groups,)`` prior means of the group means (or a scalar).
        prior_scale: ``(num_groups,)`` prior scales, positive (or a scalar).
        obs_scale: ``(num_data,)`` observation noise scales, positive (or a scalar).
        group_idx: ``(num_data,)`` long tensor, the group of each observation.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints = {
        "prior_loc": constraints.real,
        "prior_scale": constraints.positive,
        "obs_scale": constraints.positive,
    }
    support = constraints.real

    def __init__(
        self,
        prior_loc: torch.Tensor,
        prior_scale: torch.Tensor,
        obs_scale: torch.Tensor,
        group_idx: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        for name, t in (("prior_loc", prior_loc), ("prior_scale", prior_scale)):
            if not isinstance(t, torch.Tensor) or t.dim() > 1:
                raise ValueError(
                    f"GroupedNormalNormal: {name} must be a 0- or 1-dim tensor, got "
                    f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
                )
        if not isinstance(obs_scale, torch.Tensor) or obs_scale.dim() > 1:
            raise ValueError(
                "GroupedNormalNormal: obs_scale must be a 0- or 1-dim tensor, got "
                f"{tuple(obs_scale.shape) if isinstance(obs_scale, torch.Tensor) else obs_scale!r}"
            )
        if (
            not isinstance(group_idx, torch.Tensor)
            or group_idx.dtype != torch.long
            or group_idx.dim() != 1
        ):
            got = (
                f"dtype {group_idx.dtype}, shape {tuple(group_idx.shape)}"
                if isinstance(group_idx, torch.Tensor)
                else type(group_idx).__name__
            )
            raise ValueError(
                f"GroupedNormalNormal: group_idx must be a 1-dim long tensor, got {got}"
            )
        prior_loc, prior_scale = broadcast_all(prior_loc, prior_scale)
        self.prior_loc = prior_loc.reshape(-1)
        self.prior_scale = prior_scale.reshape(-1)
        self.num_groups = self.prior_loc.size(0)
        if group_idx.numel() and (
            group_idx.min().item() < 0 or group_idx.max().item() >= self.num_groups
        ):
            raise ValueError(
                f"GroupedNormalNormal: group_idx must lie in [0, {self.num_groups - 1}] "
                f"(prior_loc has {self.num_groups} groups), got values in "
                f"[{group_idx.min().item()}, {group_idx.max().item()}]"
            )
        self.obs_scale = obs_scale.expand(group_idx.shape)
        self.group_idx = group_idx
        self.num_data_per_batch = self._group_sum(torch.ones_like(self.obs_scale))
        super().__init__(torch.Size(), validate_args=validate_args)

    def _group_sum(self, per_datum: torch.Tensor) -> torch.Tensor:
        """Sum ``per_datum`` within each group: shape ``(num_groups,)``."""
        out = per_datum.new_zeros(self.num_groups)
        return out.index_add(0, self.group_idx, per_datum)

    def expand(self, batch_shape, _instance=None):
        raise NotImplementedError("GroupedNormalNormal has no batch dims to expand")

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError("GroupedNormalNormal does not implement sample")

    def _check_value(self, value: torch.Tensor, method: str) -> None:
        if value.shape != self.group_idx.shape:
            raise ValueError(
                f"GroupedNormalNormal.{method}: value must have group_idx's shape "
                f"{tuple(self.group_idx.shape)}, got {tuple(value.shape)}"
            )

    def get_posterior(self, value: torch.Tensor) -> Normal:
        """The posterior ``Normal`` over the ``num_groups`` group means given ``value``."""
        self._check_value(value, "get_posterior")
        obs_precision = self.obs_scale.pow(-2)
        precision = self.prior_scale.pow(-2) + self._group_sum(obs_precision)
        weighted = self._group_sum(value * obs_precision) + self.prior_loc * self.prior_scale.pow(
            -2
        )
        return Normal(weighted / precision, precision.rsqrt())

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log marginal likelihood of all observations (a scalar)."""
        if self._validate_args:
            self._validate_sample(value)
        self._check_value(value, "log_prob")
        obs_precision = self.obs_scale.pow(-2)
        prior_var = self.prior_scale.square()
        # Per group: Sigma = D + v 11', D = diag(obs_scale^2), v = prior_scale^2.
        # log det Sigma = log det D + log(1 + v sum 1/D);
        # r' Sigma^-1 r = r' D^-1 r - v (sum r/D)^2 / (1 + v sum 1/D).
        shrink = 1 + prior_var * self._group_sum(obs_precision)
        resid = value - self.prior_loc[self.group_idx]
        weighted = resid * obs_precision
        group_weighted = self._group_sum(weighted)
        quad = (resid * weighted).sum() - (prior_var * group_weighted.square() / shrink).sum()
        log_det = 2 * self.obs_scale.log().sum() + shrink.log().sum()
        return -0.5 * (quad + log_det) - value.numel() * _HALF_LOG_2PI


def _expansion(base_shape: torch.Size, batch_shape: torch.Size) -> tuple[int, list[int]]:
    """Check that ``base_shape`` expands to ``batch_shape``; return the number of new
    leading dims and the positions (in ``batch_shape``) of size-1 base dims that grow."""
    new_dims = len(batch_shape) - len(base_shape)
    if new_dims < 0 or any(
        b not in (1, s) for b, s in zip(base_shape, batch_shape[new_dims:], strict=True)
    ):
        raise ValueError(
            f"ExpandedDistribution: batch_shape {tuple(batch_shape)} does not expand the "
            f"base batch_shape {tuple(base_shape)}"
        )
    grown = [
        new_dims + i
        for i, (b, s) in enumerate(zip(base_shape, batch_shape[new_dims:], strict=True))
        if b == 1 and s != 1
    ]
    return new_dims, grown


class ExpandedDistribution(TorchDistribution):
    """``base_dist`` over a larger ``batch_shape``: new leading dims, or size-1 dims grown.

    Draws along the added or grown dims are independent (not copies). ``log_prob`` is the
    base's, broadcast to the batch shape.

    Args:
        base_dist: any distribution.
        batch_shape: a shape that ``base_dist.batch_shape`` broadcasts to.
    """

    arg_constraints: dict = {}

    def __init__(self, base_dist: Distribution, batch_shape=torch.Size()) -> None:
        if not isinstance(base_dist, Distribution):
            raise TypeError(
                "ExpandedDistribution: base_dist must be a Distribution, got "
                f"{type(base_dist).__name__}"
            )
        batch_shape = torch.Size(batch_shape)
        self._new_dims, self._grown = _expansion(base_dist.batch_shape, batch_shape)
        self.base_dist = base_dist
        super().__init__(batch_shape, base_dist.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None) -> ExpandedDistribution:
        """A new ``ExpandedDistribution`` of the same base (this one's shape cannot shrink)."""
        batch_shape = torch.Size(batch_shape)
        _expansion(self.batch_shape, batch_shape)
        return ExpandedDistribution(self.base_dist, batch_shape)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_rsample

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_enumerate_support

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base_dist.support

    def _draw(self, draw, sample_shape) -> torch.Tensor:
        """Draw the new and grown dims as extra sample dims, then move the grown ones into
        the base's size-1 slots."""
        sample_shape = torch.Size(sample_shape)
        extra = self.batch_shape[: self._new_dims] + torch.Size(
            self.batch_shape[i] for i in self._grown
        )
        x = draw(sample_shape + extra)
        lead = len(sample_shape)
        for j, pos in enumerate(self._grown):
            x = x.transpose(lead + self._new_dims + j, lead + len(extra) + pos - self._new_dims)
        return x.reshape(sample_shape + self.batch_shape + self.event_shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._draw(self.base_dist.sample, sample_shape)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._draw(self.base_dist.rsample, sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = broadcast_shape(self.batch_shape, value.shape[: value.dim() - self.event_dim])
        return self.base_dist.log_prob(value).expand(shape)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        values = self.base_dist.enumerate_support(expand=False)
        values = values.reshape(values.shape[:1] + (1,) * len(self.batch_shape) + self.event_shape)
        if expand:
            values = values.expand(values.shape[:1] + self.batch_shape + self.event_shape)
        return values

    @property
    def mean(self) -> torch.Tensor:
        return self.base_dist.mean.expand(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> torch.Tensor:
        return self.base_dist.variance.expand(self.batch_shape + self.event_shape)
