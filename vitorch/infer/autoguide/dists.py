"""The distributions a guide builds at every step, built for the hot path.

A guide makes its site distributions from its own parameters, whose shapes agree by
construction, once per site per step. torch's constructors re-broadcast and (with
validation on) re-check the arguments every time, and ``TransformedDistribution`` composes
its transforms and walks their domains at every construction; these builders skip that
work and give the same distributions (the same classes, so ``kl_divergence`` and
``isinstance`` see what they expect).

The Normals and the Delta also score their own draw cheaply (the Delta: its
``log_density``, with no comparison). A draw is ``z = loc + L @ eps`` with ``eps``
standard normal, so ``log q(z) = -|eps|^2 / 2 - log|det L| - d log(2 pi) / 2`` exactly, for
every value of the parameters: the value and the gradient (the pathwise gradient through
``z`` included) of that expression are those of the general formula, without its solve
and its larger autograd graph. Any other value gets the general formula.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributions import Distribution
from torch.distributions.utils import _standard_normal

from ...distributions.delta import Delta
from ...distributions.torch import MultivariateNormal, Normal, TransformedDistribution

__all__ = ["Pushforward", "delta", "multivariate_normal", "normal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _SelfScoringMultivariateNormal(MultivariateNormal):
    """A MultivariateNormal that remembers the noise of its last draw."""

    _draw: tuple[torch.Tensor, torch.Tensor] | None = None

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + (self._unbroadcasted_scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        self._draw = (value, eps)
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        draw = self._draw
        if draw is not None and value is draw[0]:
            log_det = self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            d = self._event_shape[0]
            return -0.5 * draw[1].square().sum(-1) - log_det - d * _HALF_LOG_2PI
        return super().log_prob(value)


def normal(loc: torch.Tensor, scale: torch.Tensor) -> Normal:
    """``Normal(loc, scale)`` for two tensors of one shape (``Normal`` scores its own
    draws from their noise already)."""
    fn = Normal.__new__(Normal)
    fn.loc = loc
    fn.scale = scale
    Distribution.__init__(fn, loc.shape, validate_args=False)
    return fn


def multivariate_normal(loc: torch.Tensor, scale_tril: torch.Tensor) -> MultivariateNormal:
    """``MultivariateNormal(loc, scale_tril=scale_tril)``; ``scale_tril`` is lower
    triangular with a positive diagonal and the batch shape of ``loc``."""
    fn = _SelfScoringMultivariateNormal.__new__(_SelfScoringMultivariateNormal)
    fn.loc = loc
    fn._unbroadcasted_scale_tril = scale_tril
    Distribution.__init__(fn, loc.shape[:-1], loc.shape[-1:], validate_args=False)
    return fn


class _SelfScoringDelta(Delta):
    """A Delta whose log-density at its own point is ``log_density``, without comparing."""

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        if not sample_shape:
            return self.v
        return super().rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value is self.v:
            return self.log_density
        return super().log_prob(value)


def delta(value: torch.Tensor, log_density: Any, event_dim: int) -> Delta:
    """``Delta(value, log_density, event_dim)``; ``log_density`` is 0.0 or a tensor of the
    batch shape (``value``'s shape less its rightmost ``event_dim`` dims)."""
    batch_shape = value.shape[: value.dim() - event_dim]
    if not isinstance(log_density, torch.Tensor):
        log_density = value.new_zeros(()).expand(batch_shape)
    fn = _SelfScoringDelta.__new__(_SelfScoringDelta)
    fn.v = value
    fn.log_density = log_density
    event_shape = value.shape[value.dim() - event_dim :]
    Distribution.__init__(fn, batch_shape, event_shape, validate_args=False)
    return fn


class Pushforward(TransformedDistribution):
    """A ``TransformedDistribution`` whose shapes the guide worked out once, at setup.

    The transforms keep the batch shape of ``base``; ``event_shape`` is the site's.
    """

    def __init__(
        self, base: Any, transforms: list, batch_shape: torch.Size, event_shape: torch.Size
    ):
        self.base_dist = base
        self.transforms = transforms
        Distribution.__init__(self, batch_shape, event_shape, validate_args=False)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Pushforward:
        """The same distribution over a larger batch (plates, vectorized particles)."""
        new = self._get_checked_instance(Pushforward, _instance)
        return super().expand(batch_shape, _instance=new)
