"""Pyro's parameter-free transforms, and the constraints they map onto.

Transforms (Pyro's names, ``pyro.distributions.transforms``): the activation
bijections :class:`ELUTransform` and :class:`LeakyReLUTransform`, the ordering
maps :class:`OrderedTransform` and :class:`SimplexToOrderedTransform`, the odd
power :class:`PositivePowerTransform`, the Cholesky maps
:class:`CholeskyTransform`, :class:`CorrMatrixCholeskyTransform` and the
deprecated alias :class:`CorrLCholeskyTransform`, the orthonormal
:class:`DiscreteCosineTransform` and :class:`HaarTransform`, and the projection
:class:`Normalize` onto the unit sphere.

Constraints (Pyro's names, ``pyro.distributions.constraints``): ``integer``,
``ordered_vector``, ``positive_ordered_vector``, ``sphere``, ``corr_matrix``
and the deprecated alias ``corr_cholesky_constraint``. This module imports
only torch, so :mod:`vitorch.distributions.constraints` can re-export them.

:func:`register_extra_transforms` adds the matching ``biject_to`` /
``transform_to`` entries; it is meant to run once, when the package loads.

Example:
    >>> import torch
    >>> t = OrderedTransform()
    >>> y = t(torch.tensor([0.0, 0.0, 1.0]))
    >>> bool(ordered_vector.check(y))
    True
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, biject_to, transform_to
from torch.distributions import constraints as _c
from torch.distributions.transforms import (
    ComposeTransform,
    CorrCholeskyTransform,
    ExpTransform,
    Transform,
)

from .constraints import corr_matrix, ordered_vector, positive_ordered_vector, sphere

__all__ = [
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
    "register_extra_transforms",
]

_Shape = torch.Size | tuple[int, ...]


# --------------------------------------------------------------------------------------
# Elementwise bijections
# --------------------------------------------------------------------------------------


class ELUTransform(Transform):
    """``y = elu(x)``: identity on the positives, ``exp(x) - 1`` on the negatives.

    The codomain is ``(-1, inf)`` (Pyro declares ``positive``, which is too narrow).
    """

    domain = _c.real
    codomain = _c.greater_than(-1.0)
    bijective = True
    sign = +1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ELUTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        # Clamp before log1p so the unused branch has no NaN gradient.
        return torch.where(y > 0, y, torch.log1p(y.clamp(max=0)))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``min(x, 0)``: the slope is ``exp(x)`` left of zero and one right of it."""
        return x.clamp(max=0)


def elu() -> ELUTransform:
    """Pyro's helper: an :class:`ELUTransform`."""
    return ELUTransform()


_LEAKY_SLOPE = 0.01


class LeakyReLUTransform(Transform):
    """``y = leaky_relu(x)`` with torch's default negative slope ``0.01``."""

    domain = _c.real
    codomain = _c.real
    bijective = True
    sign = +1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LeakyReLUTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, _LEAKY_SLOPE)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(y, 1 / _LEAKY_SLOPE)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log 0.01`` left of zero, ``0`` elsewhere."""
        return (x < 0).to(x.dtype) * math.log(_LEAKY_SLOPE)


def leaky_relu() -> LeakyReLUTransform:
    """Pyro's helper: a :class:`LeakyReLUTransform`."""
    return LeakyReLUTransform()


class PositivePowerTransform(Transform):
    """``y = sign(x) |x|**exponent`` for ``exponent > 0``: an increasing bijection of the reals.

    Unlike torch's ``PowerTransform`` (positive reals only) the sign is kept. The
    Jacobian is zero or infinite at the origin.

    Args:
        exponent: positive number or tensor (broadcasts against the input).
        cache_size: as for any ``Transform``.
        validate_args: check ``exponent > 0`` (default: the distributions' global flag).
    """

    domain = _c.real
    codomain = _c.real
    bijective = True
    sign = +1

    def __init__(
        self,
        exponent: torch.Tensor | float,
        *,
        cache_size: int = 0,
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real | torch.Tensor):
            raise TypeError(
                f"PositivePowerTransform: exponent must be a number or a tensor, got "
                f"{type(exponent).__name__}"
            )
        super().__init__(cache_size=cache_size)
        exponent = torch.as_tensor(float(exponent) if isinstance(exponent, int) else exponent)
        if validate_args is None:
            validate_args = Distribution._validate_args
        if validate_args and not bool((exponent > 0).all()):
            raise ValueError(f"PositivePowerTransform: exponent must be > 0, got {exponent}")
        self.exponent = exponent

    def with_cache(self, cache_size: int = 1) -> PositivePowerTransform:
        """Return a copy of this transform that caches ``cache_size`` results."""
        if self._cache_size == cache_size:
            return self
        return PositivePowerTransform(self.exponent, cache_size=cache_size, validate_args=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PositivePowerTransform) and bool(
            torch.equal(self.exponent, other.exponent)
        )

    def __hash__(self) -> int:
        return hash(type(self))  # equality compares tensor values

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs().pow(self.exponent) * x.sign()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.abs().pow(self.exponent.reciprocal()) * y.sign()

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log exponent + (exponent - 1) log|x|``."""
        return self.exponent.log() + (self.exponent - 1) * x.abs().log()

    def forward_shape(self, shape: _Shape) -> torch.Size:
        """Broadcast of ``shape`` with the exponent's shape."""
        return torch.broadcast_shapes(shape, self.exponent.shape)

    def inverse_shape(self, shape: _Shape) -> torch.Size:
        """Broadcast of ``shape`` with the exponent's shape."""
        return torch.broadcast_shapes(shape, self.exponent.shape)


# --------------------------------------------------------------------------------------
# Ordered vectors
# --------------------------------------------------------------------------------------


class OrderedTransform(Transform):
    """Real vector to increasing vector: ``y_0 = x_0``, ``y_i = y_{i-1} + exp(x_i)``."""

    domain = _c.real_vector
    codomain = ordered_vector
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderedTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., :1], x[..., 1:].exp()], dim=-1).cumsum(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[..., :1], (y[..., 1:] - y[..., :-1]).log()], dim=-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum_{i >= 1} x_i`` (the Jacobian is triangular with diagonal ``1, exp(x_i)``)."""
        return x[..., 1:].sum(-1)


class SimplexToOrderedTransform(Transform):
    """Simplex of ``K`` probabilities to ``K - 1`` increasing cutpoints.

    ``y_i = anchor_point + logit(p_0 + ... + p_i)`` for ``i < K - 1``: the cutpoints
    at which a logistic centred at ``anchor_point`` puts the given category masses
    (as for ordinal regression priors). The Jacobian is taken with respect to the
    first ``K - 1`` probabilities, as the Dirichlet density is.

    Args:
        anchor_point: the logistic's centre, a number or a tensor broadcasting
            against the batch shape (default ``0``).
    """

    domain = _c.simplex
    codomain = ordered_vector
    bijective = True

    def __init__(self, anchor_point: torch.Tensor | float | None = None, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.anchor_point = torch.as_tensor(0.0 if anchor_point is None else anchor_point)

    def with_cache(self, cache_size: int = 1) -> SimplexToOrderedTransform:
        """Return a copy of this transform that caches ``cache_size`` results."""
        if self._cache_size == cache_size:
            return self
        return SimplexToOrderedTransform(self.anchor_point, cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SimplexToOrderedTransform) and bool(
            torch.equal(self.anchor_point, other.anchor_point)
        )

    def __hash__(self) -> int:
        return hash(type(self))  # equality compares tensor values

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x[..., :-1].cumsum(-1)) + self.anchor_point.unsqueeze(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(y - self.anchor_point.unsqueeze(-1))
        s = F.pad(s, (1, 0), value=0.0)
        return torch.cat([s[..., 1:] - s[..., :-1], 1 - s[..., -1:]], dim=-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``-sum log sigmoid'(y - anchor)``; the cumulative sum has unit determinant.

        Pyro evaluates this at ``y`` rather than ``y - anchor``, which differs when the
        anchor is not zero.
        """
        t = y - self.anchor_point.unsqueeze(-1)
        return (F.softplus(t) + F.softplus(-t)).sum(-1)

    def forward_shape(self, shape: _Shape) -> torch.Size:
        """One entry fewer in the last dim."""
        return torch.Size(tuple(shape[:-1]) + (shape[-1] - 1,))

    def inverse_shape(self, shape: _Shape) -> torch.Size:
        """One entry more in the last dim."""
        return torch.Size(tuple(shape[:-1]) + (shape[-1] + 1,))


# --------------------------------------------------------------------------------------
# Cholesky factors
# --------------------------------------------------------------------------------------


class CholeskyTransform(Transform):
    """Positive-definite matrix to its lower Cholesky factor; the inverse is ``L @ L.T``.

    The log-Jacobian counts the lower-triangular entries of the (symmetric) input:
    ``-(n log 2 + sum_i (n - i) log L_ii)`` with ``i`` from zero.
    """

    domain = _c.positive_definite
    codomain = _c.lower_cholesky
    bijective = True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.cholesky(x)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y @ y.mT

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        n = x.size(-1)
        powers = torch.arange(n, 0, -1, dtype=x.dtype, device=x.device)
        return -n * math.log(2.0) - (powers * y.diagonal(dim1=-2, dim2=-1).log()).sum(-1)


class CorrMatrixCholeskyTransform(CholeskyTransform):
    """Correlation matrix to its Cholesky factor (rows of unit norm).

    The log-Jacobian is taken from the strictly-lower entries of the input to those
    of the factor: ``-sum_i (n - 1 - i) log L_ii``.
    """

    domain = corr_matrix
    codomain = _c.corr_cholesky

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        n = x.size(-1)
        powers = torch.arange(n - 1, -1, -1, dtype=x.dtype, device=x.device)
        return -(powers * y.diagonal(dim1=-2, dim2=-1).log()).sum(-1)


class CorrLCholeskyTransform(CorrCholeskyTransform):
    """Pyro's deprecated name for torch's ``CorrCholeskyTransform`` (identical map)."""

    def __init__(self, cache_size: int = 0) -> None:
        warnings.warn(
            "CorrLCholeskyTransform is deprecated in favor of CorrCholeskyTransform",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(cache_size=cache_size)

    def with_cache(self, cache_size: int = 1) -> CorrCholeskyTransform:
        """A cached ``CorrCholeskyTransform`` (the same map)."""
        if self._cache_size == cache_size:
            return self
        return CorrCholeskyTransform(cache_size=cache_size)


# --------------------------------------------------------------------------------------
# Orthonormal transforms along one dim
# --------------------------------------------------------------------------------------


def _check_dim(cls: str, dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim >= 0:
        raise ValueError(f"{cls}: dim must be a negative int (counted from the right), got {dim!r}")
    return dim


def _dct_perm(n: int, device: torch.device) -> torch.Tensor:
    """Even indices, then odd ones reversed: the reordering that makes DCT-II an FFT."""
    return torch.cat(
        [torch.arange(0, n, 2, device=device), torch.arange(1, n, 2, device=device).flip(0)]
    )


def _dct_scale(n: int, x: torch.Tensor) -> torch.Tensor:
    """Orthonormal scaling of the DCT-II coefficients: ``sqrt(1/n)`` then ``sqrt(2/n)``."""
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=x.dtype, device=x.device)
    scale[0] = math.sqrt(1.0 / n)
    return scale


def _dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dim (scipy's ``dct(x, norm="ortho")``)."""
    n = x.size(-1)
    v = x.index_select(-1, _dct_perm(n, x.device))
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    twiddle = torch.polar(torch.ones_like(k), k * (-math.pi / (2 * n)))
    return (torch.fft.fft(v) * twiddle).real * _dct_scale(n, x)


def _idct(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_dct` (orthonormal DCT-III)."""
    n = y.size(-1)
    c = y / _dct_scale(n, y)
    # With the unscaled coefficients c, FFT(v)_k = e^{i pi k / 2n} (c_k - i c_{n-k}), c_n = 0.
    c_rev = F.pad(c[..., 1:].flip(-1), (1, 0))
    k = torch.arange(n, dtype=y.dtype, device=y.device)
    twiddle = torch.polar(torch.ones_like(k), k * (math.pi / (2 * n)))
    v = torch.fft.ifft(twiddle * torch.complex(c, -c_rev)).real
    return v.index_select(-1, torch.argsort(_dct_perm(n, y.device)))


class _OrthonormalAlongDim(Transform):
    """An orthonormal (volume-preserving) map of the last ``-dim`` dims, along ``dim``.

    Subclasses give ``_key()``, their constructor's arguments before ``cache_size``; equality,
    hashing, ``with_cache``, the constraints, the zero log-Jacobian and the shapes follow.
    """

    bijective = True
    dim: int

    def _key(self) -> tuple:
        raise NotImplementedError

    def with_cache(self, cache_size: int = 1) -> Transform:
        """Return a copy of this transform that caches ``cache_size`` results."""
        if self._cache_size == cache_size:
            return self
        return type(self)(*self._key(), cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash((type(self), *self._key()))

    @_c.dependent_property(is_discrete=False)
    def domain(self) -> _c.Constraint:
        return _c.independent(_c.real, -self.dim)

    @_c.dependent_property(is_discrete=False)
    def codomain(self) -> _c.Constraint:
        return _c.independent(_c.real, -self.dim)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero: the map preserves volume."""
        return x.new_zeros(x.shape[: self.dim])

    def forward_shape(self, shape: _Shape) -> torch.Size:
        """Unchanged (at least ``-dim`` dims are needed)."""
        if len(shape) < -self.dim:
            raise ValueError(
                f"{type(self).__name__}(dim={self.dim}): shape {tuple(shape)} has too few dims"
            )
        return torch.Size(shape)

    inverse_shape = forward_shape


class DiscreteCosineTransform(_OrthonormalAlongDim):
    """Orthonormal DCT-II along ``dim`` (``|det J| = 1``), with optional spectral weighting.

    Args:
        dim: the (negative) dim to transform; the event is everything from it rightwards.
        smooth: coefficient ``k`` is multiplied by ``(k + 1/2)**smooth``, normalised to
            geometric mean one: ``0`` whitens white noise, ``1`` Brownian noise.
        cache_size: as for any ``Transform``.
    """

    def __init__(self, dim: int = -1, smooth: float = 0.0, cache_size: int = 0) -> None:
        self.dim = _check_dim("DiscreteCosineTransform", dim)
        if isinstance(smooth, bool) or not isinstance(smooth, numbers.Real):
            raise TypeError(
                f"DiscreteCosineTransform: smooth must be a real number, got {smooth!r}"
            )
        self.smooth = float(smooth)
        super().__init__(cache_size=cache_size)

    def _key(self) -> tuple:
        return (self.dim, self.smooth)

    def _weight(self, y: torch.Tensor) -> torch.Tensor:
        n = y.size(-1)
        log_freq = torch.log(torch.arange(n, dtype=y.dtype, device=y.device) + 0.5)
        return torch.exp(self.smooth * (log_freq - log_freq.mean()))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y = _dct(x.movedim(self.dim, -1))
        if self.smooth:
            y = y * self._weight(y)
        return y.movedim(-1, self.dim)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = y.movedim(self.dim, -1)
        if self.smooth:
            y = y / self._weight(y)
        return _idct(y).movedim(-1, self.dim)

    # log|det J| = 0: orthonormal, and the weights have geometric mean one.


_ROOT_HALF = math.sqrt(0.5)


def _haar(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Haar transform along the last dim: ``[coarse..., details, leftover]``."""
    half = x.size(-1) // 2
    even, odd = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
    lo, hi = (even + odd) * _ROOT_HALF, (even - odd) * _ROOT_HALF
    if half >= 2:
        lo = _haar(lo)
    return torch.cat([lo, hi, x[..., 2 * half :]], dim=-1)


def _ihaar(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_haar`."""
    half = y.size(-1) // 2
    lo, hi = y[..., :half], y[..., half : 2 * half]
    if half >= 2:
        lo = _ihaar(lo)
    pairs = torch.stack([(lo + hi) * _ROOT_HALF, (lo - hi) * _ROOT_HALF], dim=-1)
    return torch.cat([pairs.flatten(-2), y[..., 2 * half :]], dim=-1)


class HaarTransform(_OrthonormalAlongDim):
    """Orthonormal discrete Haar transform along ``dim`` (``|det J| = 1``).

    Lengths that are not powers of two get Pyro's block structure: pairs are
    averaged and differenced, the odd element left over is kept, and the
    averages are transformed again.

    Args:
        dim: the (negative) dim to transform; the event is everything from it rightwards.
        flip: reverse the dim before transforming.
        cache_size: as for any ``Transform``.
    """

    def __init__(self, dim: int = -1, flip: bool = False, cache_size: int = 0) -> None:
        self.dim = _check_dim("HaarTransform", dim)
        self.flip = bool(flip)
        super().__init__(cache_size=cache_size)

    def _key(self) -> tuple:
        return (self.dim, self.flip)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(self.dim, -1)
        if self.flip:
            x = x.flip(-1)
        return _haar(x).movedim(-1, self.dim)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = _ihaar(y.movedim(self.dim, -1))
        if self.flip:
            x = x.flip(-1)
        return x.movedim(-1, self.dim)


# --------------------------------------------------------------------------------------
# Projection onto the sphere
# --------------------------------------------------------------------------------------


class Normalize(Transform):
    """``x / ||x||_p``, onto the unit sphere; the zero vector goes to ``[1, 0, ..., 0]``.

    Not a bijection: the "inverse" returns its input unchanged (a point on the sphere
    is one of its own preimages), which is what ``transform_to(sphere)`` needs.

    Args:
        p: the norm's order, a non-negative number.
        cache_size: as for any ``Transform``.
    """

    domain = _c.real_vector
    codomain = sphere
    bijective = False

    def __init__(self, p: float = 2, cache_size: int = 0) -> None:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or p < 0:
            raise ValueError(f"Normalize: p must be a non-negative number, got {p!r}")
        self.p = p
        super().__init__(cache_size=cache_size)

    def with_cache(self, cache_size: int = 1) -> Normalize:
        """Return a copy of this transform that caches ``cache_size`` results."""
        if self._cache_size == cache_size:
            return self
        return Normalize(self.p, cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.p == self.p

    def __hash__(self) -> int:
        return hash((type(self), self.p))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, ord=self.p, dim=-1, keepdim=True)
        y = x / norm.clamp(min=torch.finfo(x.dtype).tiny)
        first = torch.zeros_like(x)
        first[..., 0] = 1
        return torch.where((x == 0).all(-1, keepdim=True), first, y)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y


# --------------------------------------------------------------------------------------
# Registrations
# --------------------------------------------------------------------------------------


def _to_sphere(constraint: _c.Constraint) -> Transform:
    return Normalize()


def _to_corr_matrix(constraint: _c.Constraint) -> Transform:
    return ComposeTransform([CorrCholeskyTransform(), CorrMatrixCholeskyTransform().inv])


def _to_ordered_vector(constraint: _c.Constraint) -> Transform:
    return OrderedTransform()


def _to_positive_ordered_vector(constraint: _c.Constraint) -> Transform:
    return ComposeTransform([OrderedTransform(), ExpTransform()])


def register_extra_transforms() -> None:
    """Add Pyro's ``biject_to`` / ``transform_to`` entries for this module's constraints.

    ``sphere`` gets ``transform_to`` only (:class:`Normalize` is not a bijection);
    ``corr_matrix``, ``ordered_vector`` and ``positive_ordered_vector`` get both.
    Registering again replaces the same entries, so repeated calls are harmless.
    """
    transform_to.register(sphere, _to_sphere)
    for registry in (biject_to, transform_to):
        registry.register(corr_matrix, _to_corr_matrix)
        registry.register(ordered_vector, _to_ordered_vector)
        registry.register(positive_ordered_vector, _to_positive_ordered_vector)
