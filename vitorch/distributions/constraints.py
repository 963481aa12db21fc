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

And Pyro's constraints that torch lacks: ``integer``, ``ordered_vector``,
``positive_ordered_vector``, ``sphere``, ``corr_matrix`` (and ``corr_cholesky_constraint``,
Pyro's old name for ``corr_cholesky``).

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


class _Integer(Constraint):
    """Whole numbers of any sign."""

    is_discrete = True

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return value % 1 == 0


class _OrderedVector(Constraint):
    """Real vectors strictly increasing along the last dim."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        if value.dim() == 0:
            return torch.tensor(False, device=value.device)
        return (value[..., 1:] > value[..., :-1]).all(-1)


class _PositiveOrderedVector(_OrderedVector):
    """Positive real vectors strictly increasing along the last dim."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return super().check(value) & (value > 0).all(-1)


class _Sphere(Constraint):
    """Vectors of unit Euclidean norm along the last dim (to ``100 eps sqrt(d)``)."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        tol = 100 * torch.finfo(value.dtype).eps * value.size(-1) ** 0.5
        return (torch.linalg.vector_norm(value, dim=-1) - 1).abs() < tol


class _CorrMatrix(Constraint):
    """Symmetric positive-definite matrices with unit diagonal (to ``1e-6``)."""

    event_dim = 2

    def check(self, value: torch.Tensor) -> torch.Tensor:
        unit = ((value.diagonal(dim1=-2, dim2=-1) - 1).abs() < 1e-6).all(-1)
        return positive_definite.check(value) & unit  # noqa: F405


softplus_positive = _SoftplusPositive()
softplus_lower_cholesky = _SoftplusLowerCholesky()
unit_lower_cholesky = _UnitLowerCholesky()
integer = _Integer()
ordered_vector = _OrderedVector()
positive_ordered_vector = _PositiveOrderedVector()
sphere = _Sphere()
corr_matrix = _CorrMatrix()
corr_cholesky_constraint = corr_cholesky  # noqa: F405  (Pyro's deprecated alias)

__all__ = [
    "corr_cholesky_constraint",
    "corr_matrix",
    "integer",
    "ordered_vector",
    "positive_ordered_vector",
    "softplus_lower_cholesky",
    "softplus_positive",
    "sphere",
    "unit_lower_cholesky",
]
__all__.extend(_torch_constraints)
