"""Bijections between unconstrained space and constrained spaces.

Everything in :mod:`torch.distributions.transforms` is re-exported, together
with torch's two registries :data:`biject_to` and :data:`transform_to`, to which
this module adds entries for vitorch's extra constraints (see
:mod:`vitorch.distributions.constraints`).

The two registries answer different questions:

- ``transform_to(c)`` is what ``param(..., constraint=c)`` uses: any map onto
  the constrained set will do, shapes are kept (a ``(n, n)`` lower-Cholesky
  parameter is stored as an unconstrained ``(n, n)`` matrix).
- ``biject_to(c)`` is what guides use to put a density on a latent variable:
  it must be a true bijection with a log-Jacobian. For triangular-matrix
  constraints the unconstrained value is therefore the *vector* of free
  entries (as torch already does for ``corr_cholesky``); use
  ``t.inverse_shape(shape)`` to find its shape.

Example:
    >>> import torch
    >>> from vitorch.distributions import constraints
    >>> from vitorch.distributions.transforms import biject_to
    >>> t = biject_to(constraints.softplus_positive)
    >>> y = t(torch.tensor([-1.0, 0.0, 3.0]))
    >>> torch.allclose(t.inv(y), torch.tensor([-1.0, 0.0, 3.0]))
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import biject_to, transform_to
from torch.distributions.transforms import *  # noqa: F403
from torch.distributions.transforms import (
    ComposeTransform,
    Transform,
)
from torch.distributions.transforms import (
    LowerCholeskyTransform as _TorchLowerCholeskyTransform,
)
from torch.distributions.transforms import (
    __all__ as _torch_transforms,
)

from . import constraints


def _softplus_inv(y: torch.Tensor) -> torch.Tensor:
    # log(exp(y) - 1) written as y + log(1 - exp(-y)): no overflow for large y,
    # and expm1 keeps precision for small y.
    return y + torch.log(-torch.expm1(-y))


def _diag(x: torch.Tensor) -> torch.Tensor:
    return x.diagonal(dim1=-2, dim2=-1)


class SoftplusTransform(Transform):
    """``y = log(1 + exp(x))``, a smooth map of the reals onto the positive reals.

    Example:
        >>> import torch
        >>> t = SoftplusTransform()
        >>> torch.allclose(t.inv(t(torch.tensor(0.5))), torch.tensor(0.5))
        True
    """

    domain = constraints.real
    codomain = constraints.softplus_positive
    bijective = True
    sign = +1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SoftplusTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return _softplus_inv(y)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log sigmoid(x)``, computed as ``-softplus(-x)`` to stay finite."""
        return -F.softplus(-x)


class LowerCholeskyTransform(_TorchLowerCholeskyTransform):
    """Torch's map ``x -> tril(x, -1) + diag(exp(diag(x)))`` plus its log-Jacobian.

    The map is a bijection between lower-triangular matrices and
    ``lower_cholesky``; the log-Jacobian is taken over the lower-triangular
    entries (the strict upper part of the input is ignored).
    """

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TorchLowerCholeskyTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of the diagonal of ``x``: only the diagonal is stretched, by ``exp``."""
        return _diag(x).sum(-1)


class SoftplusLowerCholeskyTransform(Transform):
    """``x -> tril(x, -1) + diag(softplus(diag(x)))``.

    A bijection between lower-triangular matrices and
    ``softplus_lower_cholesky``; the strict upper part of the input is ignored.

    Example:
        >>> import torch
        >>> y = SoftplusLowerCholeskyTransform()(torch.zeros(2, 2))
        >>> torch.allclose(y, torch.eye(2) * math.log(2.0))
        True
    """

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.softplus_lower_cholesky
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SoftplusLowerCholeskyTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.tril(-1) + torch.diag_embed(F.softplus(_diag(x)))

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.tril(-1) + torch.diag_embed(_softplus_inv(_diag(y)))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over the diagonal of ``log softplus'(x_ii) = -softplus(-x_ii)``."""
        return -F.softplus(-_diag(x)).sum(-1)


class UnitLowerCholeskyTransform(Transform):
    """``x -> tril(x, -1) + I``: keeps the strict lower part, sets the diagonal to one.

    A bijection (log-Jacobian zero) between strictly lower-triangular matrices
    and ``unit_lower_cholesky``; the diagonal and upper part of the input are
    ignored.

    Example:
        >>> import torch
        >>> UnitLowerCholeskyTransform()(torch.full((2, 2), 3.0))
        tensor([[1., 0.],
                [3., 1.]])
    """

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.unit_lower_cholesky
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnitLowerCholeskyTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(x.size(-1), dtype=x.dtype, device=x.device)
        return x.tril(-1) + eye

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.tril(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero, of the batch shape of ``x``."""
        return x.new_zeros(x.shape[:-2])


class CholeskyOuterProductTransform(Transform):
    """``L -> L @ L.T``, from ``lower_cholesky`` onto ``positive_definite``.

    The inverse is the Cholesky factorisation. The log-Jacobian is taken from
    the lower-triangular entries of ``L`` to those of the (symmetric) output:
    ``n log 2 + sum_i (n - i) log L_ii`` with ``i`` counted from zero.
    """

    domain = constraints.lower_cholesky
    codomain = constraints.positive_definite
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CholeskyOuterProductTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x @ x.mT

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.linalg.cholesky(y)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``n log 2 + sum_i (n - i) log L_ii`` (see the class docstring)."""
        n = x.size(-1)
        powers = torch.arange(n, 0, -1, dtype=x.dtype, device=x.device)
        return n * math.log(2.0) + (powers * _diag(x).log()).sum(-1)


class VecToTrilTransform(Transform):
    """Fills a lower-triangular ``(n, n)`` matrix, row by row, from a vector.

    With ``include_diagonal=True`` the vector has ``n (n + 1) / 2`` entries,
    otherwise ``n (n - 1) / 2`` and the diagonal is zero. Entries above the
    diagonal are zero. The log-Jacobian is zero: entries are only moved.

    Example:
        >>> import torch
        >>> VecToTrilTransform()(torch.tensor([1.0, 2.0, 3.0]))
        tensor([[1., 0.],
                [2., 3.]])
    """

    domain = constraints.real_vector
    codomain = constraints.independent(constraints.real, 2)
    bijective = True

    def __init__(self, include_diagonal: bool = True, cache_size: int = 0) -> None:
        if not isinstance(include_diagonal, bool):
            raise TypeError(
                f"include_diagonal must be a bool, got {type(include_diagonal).__name__}"
            )
        super().__init__(cache_size=cache_size)
        self.include_diagonal = include_diagonal
        self._offset = 0 if include_diagonal else -1

    def with_cache(self, cache_size: int = 1) -> VecToTrilTransform:
        """Return a copy of this transform that caches ``cache_size`` results."""
        if self._cache_size == cache_size:
            return self
        return VecToTrilTransform(self.include_diagonal, cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VecToTrilTransform)
            and other.include_diagonal == self.include_diagonal
        )

    def __hash__(self) -> int:
        return hash((type(self), self.include_diagonal))

    def _size(self, m: int) -> int:
        # m = n (n + 1) / 2 (or n (n - 1) / 2); solve the quadratic for n.
        n = (math.isqrt(8 * m + 1) - 1) // 2 + (0 if self.include_diagonal else 1)
        if n * (n + 1 + 2 * self._offset) // 2 != m:
            expected = "n(n+1)/2" if self.include_diagonal else "n(n-1)/2"
            raise ValueError(f"VecToTrilTransform: vector length {m} is not of the form {expected}")
        return n

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        n = self._size(x.size(-1))
        rows, cols = torch.tril_indices(n, n, offset=self._offset, device=x.device)
        out = x.new_zeros(x.shape[:-1] + (n, n))
        out[..., rows, cols] = x
        return out

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        n = y.size(-1)
        rows, cols = torch.tril_indices(n, n, offset=self._offset, device=y.device)
        return y[..., rows, cols]

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero, of the batch shape of ``x``."""
        return x.new_zeros(x.shape[:-1])

    def forward_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        """Shape of the matrix made from a vector of shape ``shape``."""
        if len(shape) < 1:
            raise ValueError("VecToTrilTransform needs at least one dimension")
        n = self._size(shape[-1])
        return torch.Size(tuple(shape[:-1]) + (n, n))

    def inverse_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        """Shape of the vector of free entries of a matrix of shape ``shape``."""
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise ValueError(f"VecToTrilTransform needs square matrices, got shape {tuple(shape)}")
        n = shape[-1]
        return torch.Size(tuple(shape[:-2]) + (n * (n + 1 + 2 * self._offset) // 2,))


class LowerCholeskyAffine(Transform):
    """``y = loc + scale_tril @ x`` for vectors ``x`` (``event_dim == 1``).

    Args:
        loc: shift, shape ``batch + (d,)``.
        scale_tril: lower-triangular matrix with nonzero diagonal, shape
            ``batch + (d, d)``. Batch shapes of ``loc``, ``scale_tril`` and
            the input broadcast.

    The inverse is a triangular solve; ``log|det J| = sum_i log|scale_tril_ii|``.

    Example:
        >>> import torch
        >>> scale_tril = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
        >>> t = LowerCholeskyAffine(torch.ones(2), scale_tril)
        >>> t(torch.tensor([1.0, 1.0]))
        tensor([3., 5.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, cache_size: int = 0) -> None:
        if not isinstance(loc, torch.Tensor) or loc.dim() < 1:
            raise TypeError(f"loc must be a tensor with at least 1 dimension, got {loc!r:.60}")
        if not isinstance(scale_tril, torch.Tensor) or scale_tril.dim() < 2:
            raise TypeError(
                f"scale_tril must be a tensor with at least 2 dimensions, got {scale_tril!r:.60}"
            )
        d = loc.size(-1)
        if scale_tril.shape[-2:] != (d, d):
            raise ValueError(
                f"scale_tril must have trailing shape ({d}, {d}) to match loc of "
                f"shape {tuple(loc.shape)}, got shape {tuple(scale_tril.shape)}"
            )
        super().__init__(cache_size=cache_size)
        self.loc = loc
        self.scale_tril = scale_tril

    def with_cache(self, cache_size: int = 1) -> LowerCholeskyAffine:
        """Return a copy of this transform that caches ``cache_size`` results."""
        if self._cache_size == cache_size:
            return self
        return LowerCholeskyAffine(self.loc, self.scale_tril, cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LowerCholeskyAffine)
            and other.loc is self.loc
            and other.scale_tril is self.scale_tril
        )

    def __hash__(self) -> int:
        return hash((type(self), id(self.loc), id(self.scale_tril)))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc + (self.scale_tril @ x.unsqueeze(-1)).squeeze(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        rhs = (y - self.loc).unsqueeze(-1)
        # solve_triangular does not broadcast batch dims of A against B on its
        # own, so expand both to the common batch shape first.
        batch = torch.broadcast_shapes(self.scale_tril.shape[:-2], rhs.shape[:-2])
        a = self.scale_tril.expand(batch + self.scale_tril.shape[-2:])
        b = rhs.expand(batch + rhs.shape[-2:])
        return torch.linalg.solve_triangular(a, b, upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum_i log|scale_tril_ii|``, broadcast to the batch shape of ``y``."""
        ldj = _diag(self.scale_tril).abs().log().sum(-1)
        batch = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1], ldj.shape)
        return ldj.expand(batch)

    def forward_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        """Broadcast of ``shape`` with the parameters' shapes."""
        return torch.broadcast_shapes(shape, self.loc.shape, self.scale_tril.shape[:-1])

    def inverse_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        """Broadcast of ``shape`` with the parameters' shapes."""
        return self.forward_shape(shape)


# --- registrations -----------------------------------------------------------
# Factories run on every SVI step, so they only build small stateless objects.


@biject_to.register(constraints.softplus_positive)
@transform_to.register(constraints.softplus_positive)
def _to_softplus_positive(constraint: constraints.Constraint) -> Transform:
    return SoftplusTransform()


@transform_to.register(constraints.lower_cholesky)
def _transform_to_lower_cholesky(constraint: constraints.Constraint) -> Transform:
    return LowerCholeskyTransform()


@transform_to.register(constraints.softplus_lower_cholesky)
def _transform_to_softplus_lower_cholesky(
    constraint: constraints.Constraint,
) -> Transform:
    return SoftplusLowerCholeskyTransform()


@transform_to.register(constraints.unit_lower_cholesky)
def _transform_to_unit_lower_cholesky(constraint: constraints.Constraint) -> Transform:
    return UnitLowerCholeskyTransform()


@biject_to.register(constraints.lower_cholesky)
def _biject_to_lower_cholesky(constraint: constraints.Constraint) -> Transform:
    return ComposeTransform([VecToTrilTransform(), LowerCholeskyTransform()])


@biject_to.register(constraints.softplus_lower_cholesky)
def _biject_to_softplus_lower_cholesky(
    constraint: constraints.Constraint,
) -> Transform:
    return ComposeTransform([VecToTrilTransform(), SoftplusLowerCholeskyTransform()])


@biject_to.register(constraints.unit_lower_cholesky)
def _biject_to_unit_lower_cholesky(constraint: constraints.Constraint) -> Transform:
    return ComposeTransform(
        [VecToTrilTransform(include_diagonal=False), UnitLowerCholeskyTransform()]
    )


@biject_to.register(constraints.positive_definite)
def _biject_to_positive_definite(constraint: constraints.Constraint) -> Transform:
    return ComposeTransform(
        [
            VecToTrilTransform(),
            LowerCholeskyTransform(),
            CholeskyOuterProductTransform(),
        ]
    )


__all__ = [
    "CholeskyOuterProductTransform",
    "LowerCholeskyAffine",
    "LowerCholeskyTransform",
    "SoftplusLowerCholeskyTransform",
    "SoftplusTransform",
    "UnitLowerCholeskyTransform",
    "VecToTrilTransform",
    "biject_to",
    "transform_to",
]
__all__.extend(n for n in _torch_transforms if n not in __all__)

# Last: the flow's module imports vitorch.nn, which must not be needed while the
# registrations above run.
from .affine_autoregressive import AffineAutoregressive, affine_autoregressive  # noqa: E402

__all__ += ["AffineAutoregressive", "affine_autoregressive"]

# The learnable flows (Pyro's pyro.distributions.transforms names).
from .flows import (  # noqa: E402
    AffineCoupling,
    BatchNorm,
    ComposeTransformModule,
    ConditionalAffineAutoregressive,
    ConditionalAffineCoupling,
    ConditionalHouseholder,
    ConditionalPlanar,
    ConditionalRadial,
    ConditionalSpline,
    ConditionalSplineAutoregressive,
    Householder,
    Permute,
    Planar,
    Radial,
    Spline,
    SplineAutoregressive,
    SplineCoupling,
    affine_coupling,
    batchnorm,
    conditional_affine_autoregressive,
    conditional_affine_coupling,
    conditional_householder,
    conditional_planar,
    conditional_radial,
    conditional_spline,
    conditional_spline_autoregressive,
    householder,
    iterated,
    permute,
    planar,
    radial,
    spline,
    spline_autoregressive,
    spline_coupling,
)

__all__ += [
    "AffineCoupling",
    "BatchNorm",
    "ComposeTransformModule",
    "ConditionalAffineAutoregressive",
    "ConditionalAffineCoupling",
    "ConditionalHouseholder",
    "ConditionalPlanar",
    "ConditionalRadial",
    "ConditionalSpline",
    "ConditionalSplineAutoregressive",
    "Householder",
    "Permute",
    "Planar",
    "Radial",
    "Spline",
    "SplineAutoregressive",
    "SplineCoupling",
    "affine_coupling",
    "batchnorm",
    "conditional_affine_autoregressive",
    "conditional_affine_coupling",
    "conditional_householder",
    "conditional_planar",
    "conditional_radial",
    "conditional_spline",
    "conditional_spline_autoregressive",
    "householder",
    "iterated",
    "permute",
    "planar",
    "radial",
    "spline",
    "spline_autoregressive",
    "spline_coupling",
]

# Pyro's parameter-free transforms, and the registrations for Pyro's extra constraints.
from .transforms_extra import (  # noqa: E402
    CholeskyTransform,
    CorrLCholeskyTransform,
    CorrMatrixCholeskyTransform,
    DiscreteCosineTransform,
    ELUTransform,
    HaarTransform,
    LeakyReLUTransform,
    Normalize,
    OrderedTransform,
    PositivePowerTransform,
    SimplexToOrderedTransform,
    elu,
    leaky_relu,
    register_extra_transforms,
)

register_extra_transforms()
__all__ += [
    "CholeskyTransform",
    "CorrLCholeskyTransform",
    "CorrMatrixCholeskyTransform",
    "DiscreteCosineTransform",
    "ELUTransform",
    "HaarTransform",
    "LeakyReLUTransform",
    "Normalize",
    "OrderedTransform",
    "PositivePowerTransform",
    "SimplexToOrderedTransform",
    "elu",
    "leaky_relu",
]

# The other learnable flows (neural, block autoregressive, Sylvester, ...).
from .flows_more import (  # noqa: E402
    BlockAutoregressive,
    ConditionalGeneralizedChannelPermute,
    ConditionalMatrixExponential,
    ConditionalNeuralAutoregressive,
    GeneralizedChannelPermute,
    MatrixExponential,
    NeuralAutoregressive,
    Polynomial,
    Sylvester,
    block_autoregressive,
    conditional_generalized_channel_permute,
    conditional_matrix_exponential,
    conditional_neural_autoregressive,
    generalized_channel_permute,
    matrix_exponential,
    neural_autoregressive,
    polynomial,
    sylvester,
)

__all__ += [
    "BlockAutoregressive",
    "ConditionalGeneralizedChannelPermute",
    "ConditionalMatrixExponential",
    "ConditionalNeuralAutoregressive",
    "GeneralizedChannelPermute",
    "MatrixExponential",
    "NeuralAutoregressive",
    "Polynomial",
    "Sylvester",
    "block_autoregressive",
    "conditional_generalized_channel_permute",
    "conditional_matrix_exponential",
    "conditional_neural_autoregressive",
    "generalized_channel_permute",
    "matrix_exponential",
    "neural_autoregressive",
    "polynomial",
    "sylvester",
]
