"""Constraints on the values of distribution parameters and samples.

Everything in :mod:`torch.distributions.constraints` is re-exported unchanged,
so ``vitorch.distributions.constraints.positive`` *is* torch's ``positive``.
Three constraints are added, following Pyro's names. Each checks exactly like
an existing one but is a distinct class, because the transform registries
(:func:`~vitorch.distributions.transforms.biject_to`,
:func:`~vitorch.distributions.transforms.transform_to`) dispatch on the class
and these constraints ask for different unconstraining transforms:

- ``softplus_positive``: checks like ``positive``; maps through softplus
  instead of exp, which keeps gradients tame for scale parameters.
- ``softplus_lower_cholesky``: checks like ``lower_cholesky``; the diagonal is
  mapped through softplus instead of exp.
- ``unit_lower_cholesky``: lower-triangular matrices with ones on the
  diagonal (``event_dim == 2``).

Example:
    >>> import torch
    >>> from vitorch.distributions import constraints
    >>> bool(constraints.softplus_positive.check(torch.tensor(2.0)))
    True
    >>> bool(constraints.unit_lower_cholesky.check(torch.eye(3)))
    True
"""

from __future__ import annotations

import torch
from torch.distributions.constraints import *  # noqa: F403
from torch.distributions.constraints import (
    Constraint,
    _GreaterThan,
    _LowerCholesky,
)
from torch.distributions.constraints import (
    __all__ as _torch_constraints,
)


class _SoftplusPositive(_GreaterThan):
    """Positive reals, unconstrained through softplus rather than exp."""

    def __init__(self) -> None:
        super().__init__(lower_bound=0.0)


class _SoftplusLowerCholesky(_LowerCholesky):
    """Lower-triangular matrices with positive diagonal, unconstrained through softplus."""


class _UnitLowerCholesky(Constraint):
    """Lower-triangular matrices whose diagonal is exactly one."""

    event_dim = 2

    def check(self, value: torch.Tensor) -> torch.Tensor:
        """Return a bool tensor of the batch shape: True where ``value`` qualifies."""
        lower = (value.tril() == value).flatten(-2).min(-1).values
        ones = (value.diagonal(dim1=-2, dim2=-1) == 1).min(-1).values
        return lower & ones


softplus_positive = _SoftplusPositive()
softplus_lower_cholesky = _SoftplusLowerCholesky()
unit_lower_cholesky = _UnitLowerCholesky()

__all__ = [
    "softplus_lower_cholesky",
    "softplus_positive",
    "unit_lower_cholesky",
]
__all__.extend(_torch_constraints)
