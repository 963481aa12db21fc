"""Straight-through relaxed distributions and the masked two-component mixture.

``RelaxedBernoulliStraightThrough`` and ``RelaxedOneHotCategoricalStraightThrough`` draw
a relaxed (Gumbel-softmax) sample, return its rounding (exact 0/1, or exactly one-hot)
and pass gradients through as if the relaxed sample had been returned. ``log_prob`` of
such a draw scores the relaxed sample it came from.

``MaskedMixture`` picks, element by element of the batch, one of two distributions.
"""

from __future__ import annotations

import copy

import torch
from torch.distributions import Distribution
from torch.distributions.utils import clamp_probs

from . import constraints
from .distribution import TorchDistribution
from .torch import RelaxedBernoulli, RelaxedOneHotCategorical
from .util import broadcast_shape

__all__ = [
    "MaskedConstraint",
    "MaskedMixture",
    "RelaxedBernoulliStraightThrough",
    "RelaxedOneHotCategoricalStraightThrough",
]


class _StraightThrough(torch.autograd.Function):
    """Forward: round ``soft`` (to 0/1, or to a one-hot vector); backward: identity."""

    @staticmethod
    def forward(ctx, soft: torch.Tensor, one_hot: bool) -> torch.Tensor:
        if one_hot:
            index = soft.argmax(-1, keepdim=True)
            return torch.zeros_like(soft).scatter_(-1, index, 1.0)
        return soft.round()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _quantize(soft: torch.Tensor, one_hot: bool) -> torch.Tensor:
    """The rounded draw, remembering ``soft`` so that ``log_prob`` can score it."""
    soft = clamp_probs(soft)
    hard = _StraightThrough.apply(soft, one_hot)
    hard._unquantize = soft
    return hard


class RelaxedBernoulliStraightThrough(RelaxedBernoulli):
    """``RelaxedBernoulli`` whose ``rsample`` returns exact 0/1 with straight-through gradients.

    Args:
        temperature: the relaxation temperature, positive.
        probs: success probability (or ``logits``, its log-odds; give exactly one).
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    def expand(self, batch_shape, _instance=None) -> RelaxedBernoulliStraightThrough:
        new = self._get_checked_instance(RelaxedBernoulliStraightThrough, _instance)
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """A relaxed draw rounded to 0/1; its gradient is the relaxed draw's."""
        return _quantize(super().rsample(sample_shape), one_hot=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Relaxed log-density of the relaxed draw behind ``value`` (or of ``value``)."""
        return super().log_prob(getattr(value, "_unquantize", value))


class RelaxedOneHotCategoricalStraightThrough(RelaxedOneHotCategorical):
    """``RelaxedOneHotCategorical`` whose ``rsample`` is one-hot, with straight-through gradients.

    Args:
        temperature: the relaxation temperature, positive.
        probs: event probabilities (or ``logits``; give exactly one).
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    def expand(self, batch_shape, _instance=None) -> RelaxedOneHotCategoricalStraightThrough:
        new = self._get_checked_instance(RelaxedOneHotCategoricalStraightThrough, _instance)
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """A relaxed draw turned one-hot at its argmax; its gradient is the relaxed draw's."""
        return _quantize(super().rsample(sample_shape), one_hot=True)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Relaxed log-density of the relaxed draw behind ``value`` (or of ``value``)."""
        return super().log_prob(getattr(value, "_unquantize", value))


class MaskedConstraint(constraints.Constraint):
    """``constraint1`` where ``mask`` is True, ``constraint0`` elsewhere."""

    def __init__(
        self,
        mask: torch.Tensor,
        constraint0: constraints.Constraint,
        constraint1: constraints.Constraint,
    ) -> None:
        self.mask = mask
        self.constraint0 = constraint0
        self.constraint1 = constraint1
        self.event_dim = constraint0.event_dim
        self.is_discrete = constraint0.is_discrete and constraint1.is_discrete
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, self.constraint1.check(value), self.constraint0.check(value))


def _own_copy(d: Distribution, batch_shape: torch.Size) -> Distribution:
    """``d`` over ``batch_shape``, as an object of its own (its validation flag is ours to set)."""
    return d.expand(batch_shape) if d.batch_shape != batch_shape else copy.copy(d)


class MaskedMixture(TorchDistribution):
    """``component1`` where ``mask`` is True and ``component0`` where it is False.

    The mask is known (often itself drawn, or enumerated, elsewhere in the model); the
    two components must share an event shape and broadcast with the mask to the batch.

    Args:
        mask: a bool tensor over (a shape broadcasting to) the batch.
        component0: the distribution where ``mask`` is False.
        component1: the distribution where ``mask`` is True.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: dict = {}

    def __init__(
        self,
        mask: torch.Tensor,
        component0: Distribution,
        component1: Distribution,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"MaskedMixture: mask must be a bool tensor, got {got}")
        for name, comp in (("component0", component0), ("component1", component1)):
            if not isinstance(comp, Distribution):
                raise TypeError(
                    f"MaskedMixture: {name} must be a Distribution, got {type(comp).__name__}"
                )
        if component0.event_shape != component1.event_shape:
            raise ValueError(
                "MaskedMixture: component0 and component1 must share an event_shape, got "
                f"{tuple(component0.event_shape)} and {tuple(component1.event_shape)}"
            )
        batch_shape = broadcast_shape(mask.shape, component0.batch_shape, component1.batch_shape)
        self.mask = mask.expand(batch_shape)
        # Each component sees values drawn from the other too, so only the mixture validates.
        self.component0 = _own_copy(component0, batch_shape)
        self.component1 = _own_copy(component1, batch_shape)
        self.component0._validate_args = False
        self.component1._validate_args = False
        super().__init__(batch_shape, component0.event_shape, validate_args=validate_args)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.component0.has_rsample and self.component1.has_rsample

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """The common support, or the two supports interleaved by the mask."""
        if self.component0.support is self.component1.support:
            return self.component0.support
        return MaskedConstraint(self.mask, self.component0.support, self.component1.support)

    def expand(self, batch_shape, _instance=None) -> MaskedMixture:
        batch_shape = torch.Size(batch_shape)
        new = MaskedMixture(
            self.mask.expand(batch_shape),
            self.component0.expand(batch_shape),
            self.component1.expand(batch_shape),
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new

    def _event_mask(self, shape: torch.Size) -> torch.Tensor:
        return self.mask.reshape(self.mask.shape + (1,) * self.event_dim).expand(shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Draws of both components, kept where the mask selects each."""
        shape = self.shape(torch.Size(sample_shape))
        return torch.where(
            self._event_mask(shape),
            self.component1.sample(sample_shape),
            self.component0.sample(sample_shape),
        )

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Reparameterized draws of both components, kept where the mask selects each."""
        shape = self.shape(torch.Size(sample_shape))
        return torch.where(
            self._event_mask(shape),
            self.component1.rsample(sample_shape),
            self.component0.rsample(sample_shape),
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The selected component's ``log_prob`` at each batch element."""
        shape = broadcast_shape(value.shape, self.batch_shape + self.event_shape)
        value = value.expand(shape)
        if self._validate_args:
            self._validate_sample(value)
        mask = self.mask.expand(shape[: len(shape) - self.event_dim])
        return torch.where(mask, self.component1.log_prob(value), self.component0.log_prob(value))

    @property
    def mean(self) -> torch.Tensor:
        mean0, mean1 = self.component0.mean, self.component1.mean
        return torch.where(self._event_mask(mean0.shape), mean1, mean0)

    @property
    def variance(self) -> torch.Tensor:
        var0, var1 = self.component0.variance, self.component1.variance
        return torch.where(self._event_mask(var0.shape), var1, var0)
