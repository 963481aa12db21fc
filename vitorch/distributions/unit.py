"""``Unit``: an empty-valued distribution whose log-density is a given tensor (for ``factor``)."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from .distribution import TorchDistribution

__all__ = ["Unit"]


class Unit(TorchDistribution):
    """A distribution over the empty tensor with ``log_prob = log_factor``."""

    arg_constraints = {"log_factor": constraints.real}
    support = constraints.real

    def __init__(self, log_factor, *, has_rsample: bool = True, validate_args=None):
        log_factor = torch.as_tensor(log_factor)
        self.log_factor = log_factor
        self._has_rsample = has_rsample
        super().__init__(log_factor.shape, torch.Size((0,)), validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        # factor(..., has_rsample=False) marks a term whose gradient needs the score function.
        return self._has_rsample

    def expand(self, batch_shape, _instance=None):
        return Unit(self.log_factor.expand(batch_shape), has_rsample=self._has_rsample)

    def rsample(self, sample_shape=torch.Size()):
        return self.log_factor.new_empty(torch.Size(sample_shape) + self.batch_shape + (0,))

    sample = rsample

    def log_prob(self, value):
        return self.log_factor.expand(value.shape[:-1]) if value.dim() > 1 else self.log_factor
