"""Normalizing flows with learnable parameters, and flows conditioned on a context.

A flow layer is both a ``torch.distributions.Transform`` and an ``nn.Module``
(:class:`TransformModule`): put it in a
:class:`~vitorch.distributions.TransformedDistribution` to get a density, and register it
with ``vitorch.module(name, layer)`` (or make it an attribute of a ``PyroModule``) so SVI
trains its parameters. A conditional layer (:class:`ConditionalTransformModule`) holds a
network of a context; ``condition(context)`` gives the plain transform for that context,
and :class:`ConditionalTransformedDistribution` does the same for a whole flow.

Every layer here computes ``log|det dy/dx|`` together with the map, in either direction,
and keeps it with the last ``(x, y)`` pair: scoring a draw just made, or a value just
inverted, costs no second pass.

Layers (Pyro's names and constructor arguments; lowercase helpers build the networks):

- :class:`AffineCoupling`, :class:`ConditionalAffineCoupling`: RealNVP coupling (Dinh et
  al., 2017); cheap both ways.
- :class:`Spline`, :class:`ConditionalSpline`: elementwise monotone rational splines on
  ``[-bound, bound]``, identity outside; ``order="quadratic"`` is the rational-quadratic
  spline of Durkan et al. (2019), ``order="linear"`` (Pyro's default) the rational-linear
  one of Dolatabadi et al. (2020).
- :class:`SplineCoupling`, :class:`SplineAutoregressive`,
  :class:`ConditionalSplineAutoregressive`: splines whose bins come from a network of
  the other (earlier) coordinates.
- :class:`Planar`, :class:`Radial` (Rezende & Mohamed, 2015) and their conditional forms:
  their inverses have no closed form in Pyro, here they are computed (planar: a 1-D root
  found by bisection; radial: a quadratic).
- :class:`Householder`, :class:`ConditionalHouseholder`, :class:`BatchNorm`,
  :class:`Permute`, :class:`ConditionalAffineAutoregressive`; :func:`iterated` stacks
  copies of a layer.
"""

from __future__ import annotations

import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution
from torch.distributions.transforms import ComposeTransform, Transform
from torch.distributions.utils import _sum_rightmost
from torch.nn import functional as F

from ..nn.auto_reg_nn import AutoRegressiveNN
from ..nn.dense_nn import ConditionalAutoRegressiveNN, ConditionalDenseNN, DenseNN
from . import constraints
from .affine_autoregressive import AffineAutoregressive, _clamp_keep_gradient
from .torch import TransformedDistribution

__all__ = [
    "AffineCoupling",
    "BatchNorm",
    "ComposeTransformModule",
    "ConditionalAffineAutoregressive",
    "ConditionalAffineCoupling",
    "ConditionalComposeTransformModule",
    "ConditionalDistribution",
    "ConditionalHouseholder",
    "ConditionalPlanar",
    "ConditionalRadial",
    "ConditionalSpline",
    "ConditionalSplineAutoregressive",
    "ConditionalTransform",
    "ConditionalTransformModule",
    "ConditionalTransformedDistribution",
    "ConditionedPlanar",
    "ConditionedRadial",
    "ConditionedSpline",
    "Householder",
    "Permute",
    "Planar",
    "Radial",
    "Spline",
    "SplineAutoregressive",
    "SplineCoupling",
    "TransformModule",
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


# -- argument checks ---------------------------------------------------------------------
def _check_int(value: Any, name: str, minimum: int, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{who}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_positive(value: Any, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{who}: {name} must be a positive number, got {value!r}")
    return float(value)


def _check_callable(value: Any, name: str, who: str) -> Callable:
    if not callable(value):
        raise TypeError(f"{who}: {name} must be callable (a network), got {type(value).__name__}")
    return value


def _check_order(order: Any, who: str) -> str:
    if order not in ("linear", "quadratic"):
        raise ValueError(f"{who}: order must be 'linear' or 'quadratic', got {order!r}")
    return order


def _check_dim(dim: Any, who: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim >= 0:
        raise ValueError(
            f"{who}: dim must be a negative int (the event has -dim dims), got {dim!r}"
        )
    return dim


def _default_hidden(hidden_dims: Any, default: list[int], who: str) -> list[int]:
    if hidden_dims is None:
        return default
    if (
        isinstance(hidden_dims, (str, bytes))
        or not isinstance(hidden_dims, Sequence)
        or len(hidden_dims) == 0
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden_dims)
    ):
        raise ValueError(
            f"{who}: hidden_dims must be None or a non-empty list of ints >= 1, got {hidden_dims!r}"
        )
    return list(hidden_dims)


# -- base classes --------------------------------------------------------------------------
class TransformModule(Transform, nn.Module):
    """A ``Transform`` with learnable parameters: also an ``nn.Module``.

    Subclass this (rather than ``Transform``) so that ``vitorch.module``, a ``PyroModule``
    attribute or ``nn.ModuleList`` finds the transform's parameters.
    """

    # Transform compares by identity through __eq__, which leaves the class unhashable;
    # modules must be hashable (named_modules keeps them in a set).
    def __hash__(self) -> int:
        return id(self)

    def __getstate__(self) -> dict:
        # Cached tensors may carry autograd history, which neither pickle nor deepcopy take.
        state = nn.Module.__getstate__(self)
        state["_inv"] = None
        if "_cached_x_y" in state:
            state["_cached_x_y"] = (None, None)
        if "_cached_ldj" in state:
            state["_cached_ldj"] = None
        return state


class ComposeTransformModule(ComposeTransform, nn.ModuleList):
    """A ``ComposeTransform`` whose parts that are modules are also its ``nn.ModuleList``.

    Registering the composition registers every part's parameters (named ``<k>.<...>``).
    """

    def __init__(self, parts: Sequence[Transform], cache_size: int = 0) -> None:
        parts = list(parts)
        for k, part in enumerate(parts):
            if not isinstance(part, Transform):
                raise TypeError(
                    f"ComposeTransformModule: parts[{k}] must be a Transform, got "
                    f"{type(part).__name__}"
                )
        super().__init__(parts, cache_size=cache_size)
        for part in parts:
            if isinstance(part, nn.Module):
                self.append(part)

    def __hash__(self) -> int:
        return id(self)

    def clear_cache(self) -> None:
        """Forget the cached pairs of every part that caches."""
        if self._cache_size:
            self._cached_x_y = None, None
        for part in self.parts:
            if hasattr(part, "clear_cache"):
                part.clear_cache()

    def with_cache(self, cache_size: int = 1) -> ComposeTransformModule:
        """The same parts composed with the given cache size."""
        if cache_size == self._cache_size:
            return self
        return ComposeTransformModule(self.parts, cache_size=cache_size)

    def __getstate__(self) -> dict:
        state = nn.Module.__getstate__(self)
        state["_inv"] = None
        if "_cached_x_y" in state:
            state["_cached_x_y"] = (None, None)
        return state


class ConditionalDistribution(ABC):
    """A family of distributions indexed by a context: ``condition(context)`` picks one."""

    @abstractmethod
    def condition(self, context: torch.Tensor) -> Distribution:
        """The distribution for ``context``."""


class ConditionalTransform(ABC):
    """A family of transforms indexed by a context: ``condition(context)`` picks one."""

    @abstractmethod
    def condition(self, context: torch.Tensor) -> Transform:
        """The transform for ``context``."""


class ConditionalTransformModule(ConditionalTransform, nn.Module):
    """A :class:`ConditionalTransform` with learnable parameters (its context network)."""

    def __hash__(self) -> int:
        return id(self)

    @property
    def inv(self) -> ConditionalTransformModule:
        """The family of inverses: ``inv.condition(c)`` is ``condition(c).inv``."""
        return _ConditionalInverse(self)


class _ConditionalInverse(ConditionalTransformModule):
    def __init__(self, transform: ConditionalTransformModule) -> None:
        super().__init__()
        self._transform = transform

    @property
    def inv(self) -> ConditionalTransformModule:
        return self._transform

    def condition(self, context: torch.Tensor) -> Transform:
        return self._transform.condition(context).inv


class _ConstantConditionalTransform(ConditionalTransform):
    """A transform that ignores the context."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def condition(self, context: torch.Tensor) -> Transform:
        return self.transform


class _ConstantConditionalDistribution(ConditionalDistribution):
    """A distribution that ignores the context."""

    def __init__(self, base_dist: Distribution) -> None:
        self.base_dist = base_dist

    def condition(self, context: torch.Tensor) -> Distribution:
        return self.base_dist


def _as_conditional_transforms(transforms: Any, who: str) -> list[ConditionalTransform]:
    if isinstance(transforms, (Transform, ConditionalTransform)):
        transforms = [transforms]
    if not isinstance(transforms, Sequence):
        raise TypeError(
            f"{who}: transforms must be a list of Transforms or ConditionalTransforms, got "
            f"{type(transforms).__name__}"
        )
    result: list[ConditionalTransform] = []
    for k, t in enumerate(transforms):
        if isinstance(t, ConditionalTransform):
            result.append(t)
        elif isinstance(t, Transform):
            result.append(_ConstantConditionalTransform(t))
        else:
            raise TypeError(
                f"{who}: transforms[{k}] must be a Transform or a ConditionalTransform, got "
                f"{type(t).__name__}"
            )
    return result


class ConditionalComposeTransformModule(ConditionalTransformModule, nn.ModuleList):
    """Conditional transforms (and plain ones) applied in turn, under one context.

    :param transforms: the parts, each a ``ConditionalTransform`` or a ``Transform``.
    :param cache_size: cache size of the composed transform ``condition`` returns (0 or 1).
    """

    def __init__(self, transforms: Sequence[Any], cache_size: int = 0) -> None:
        super().__init__()
        self.transforms = _as_conditional_transforms(transforms, type(self).__name__)
        if cache_size not in (0, 1):
            raise ValueError(
                f"ConditionalComposeTransformModule: cache_size must be 0 or 1, got {cache_size!r}"
            )
        self._cache_size = cache_size
        for t in transforms:
            if isinstance(t, nn.Module):
                self.append(t)

    def condition(self, context: torch.Tensor) -> ComposeTransformModule:
        """Every part conditioned on ``context``, composed."""
        parts = [t.condition(context) for t in self.transforms]
        return ComposeTransformModule(parts).with_cache(self._cache_size)


class ConditionalTransformedDistribution(ConditionalDistribution):
    """A base distribution pushed through transforms, some of which read a context.

    ``condition(context)`` returns the
    :class:`~vitorch.distributions.TransformedDistribution` of the base (conditioned
    itself if it is a :class:`ConditionalDistribution`) through every transform
    conditioned on ``context``.

    :param base_dist: a ``Distribution`` or a :class:`ConditionalDistribution`.
    :param transforms: ``Transform`` and :class:`ConditionalTransform` objects, in order.
    """

    def __init__(self, base_dist: Distribution | ConditionalDistribution, transforms: Any):
        if isinstance(base_dist, ConditionalDistribution):
            self.base_dist: ConditionalDistribution = base_dist
        elif isinstance(base_dist, Distribution):
            self.base_dist = _ConstantConditionalDistribution(base_dist)
        else:
            raise TypeError(
                f"ConditionalTransformedDistribution: base_dist must be a Distribution or a "
                f"ConditionalDistribution, got {type(base_dist).__name__}"
            )
        self.transforms = _as_conditional_transforms(
            transforms, "ConditionalTransformedDistribution"
        )

    def condition(self, context: torch.Tensor) -> TransformedDistribution:
        """The distribution for ``context``."""
        base = self.base_dist.condition(context)
        return TransformedDistribution(base, [t.condition(context) for t in self.transforms])

    def clear_cache(self) -> None:
        """Nothing to clear (kept for Pyro's API)."""


class _FlowTransform(Transform):
    """A bijection that computes ``log|det dy/dx|`` together with the map, both ways.

    Subclasses define ``_forward(x) -> (y, ldj)`` and ``_backward(y) -> (x, ldj)``, the
    log-Jacobian being that of the forward map at ``x`` in both. The last pair and its
    log-Jacobian are kept, so ``log_abs_det_jacobian`` of that pair is free.
    """

    def __init__(self) -> None:
        super().__init__(cache_size=1)
        self._cached_ldj: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def with_cache(self, cache_size: int = 1) -> _FlowTransform:
        """This transform: it always caches its last pair (``cache_size=1``)."""
        if cache_size != 1:
            raise ValueError(
                f"{type(self).__name__} always caches one (x, y) pair; got "
                f"cache_size={cache_size!r}"
            )
        return self

    def clear_cache(self) -> None:
        """Forget the last pair: needed when the parameters changed but inputs are reused.

        A training loop that scores the same data tensor every step must call this (or
        the distribution's ``clear_cache``) after each optimizer step, else the cached
        pair of the previous step answers.
        """
        self._cached_x_y = None, None
        self._cached_ldj = None

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y, ldj = self._forward(x)
        self._cached_ldj = (x, y, ldj)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x, ldj = self._backward(y)
        self._cached_ldj = (x, y, ldj)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log|det dy/dx|``: cached when ``(x, y)`` is the last pair, else recomputed."""
        cached = self._cached_ldj
        if cached is not None and cached[0] is x and cached[1] is y:
            return cached[2]
        return self._forward(x)[1]


# -- affine coupling -----------------------------------------------------------------------
class AffineCoupling(_FlowTransform, TransformModule):
    """RealNVP's coupling layer: ``y1 = x1``, ``y2 = mean(x1) + exp(log_scale(x1)) * x2``.

    ``x1`` is the first ``split_dim`` entries along ``dim`` and ``x2`` the rest; the
    network sees ``x1`` (flattened over the event dims right of ``dim``) and returns mean
    and log-scale of ``x2``'s size. Forward and inverse are one network call each, and
    ``log|det| = sum(log_scale)``.

    :param split_dim: number of entries passed through unchanged (``>= 1``).
    :param hypernet: callable ``x1 -> (mean, log_scale)``, e.g. a
        :class:`~vitorch.nn.DenseNN`.
    :param dim: negative; the event has ``-dim`` dims and the split is along ``dim``.
    :param log_scale_min_clip: lower clamp of the log-scale.
    :param log_scale_max_clip: upper clamp of the log-scale.
    """

    bijective = True

    def __init__(
        self,
        split_dim: int,
        hypernet: Callable,
        *,
        dim: int = -1,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
    ) -> None:
        who = type(self).__name__
        self.split_dim = _check_int(split_dim, "split_dim", 1, who)
        self.dim = _check_dim(dim, who)
        if not log_scale_min_clip < log_scale_max_clip:
            raise ValueError(
                f"{who}: log_scale_min_clip must be below log_scale_max_clip, got "
                f"{log_scale_min_clip!r} and {log_scale_max_clip!r}"
            )
        super().__init__()
        self.nn = _check_callable(hypernet, "hypernet", who)
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, -self.dim)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, -self.dim)

    def _split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if v.dim() < -self.dim:
            raise ValueError(
                f"{type(self).__name__}: input must have at least {-self.dim} dims, got "
                f"shape {tuple(v.shape)}"
            )
        n = v.size(self.dim)
        if not self.split_dim < n:
            raise ValueError(
                f"{type(self).__name__}: split_dim={self.split_dim} must be below the size "
                f"{n} of the input along dim={self.dim}"
            )
        return v.split([self.split_dim, n - self.split_dim], dim=self.dim)

    def _mean_log_scale(
        self, x1: torch.Tensor, shape2: torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self.nn(x1.reshape(x1.shape[: x1.dim() + self.dim] + (-1,)))
        event_shape = shape2[len(shape2) + self.dim :]
        mean = mean.reshape(mean.shape[:-1] + event_shape)
        log_scale = log_scale.reshape(log_scale.shape[:-1] + event_shape)
        log_scale = _clamp_keep_gradient(
            log_scale, self.log_scale_min_clip, self.log_scale_max_clip
        )
        return mean, log_scale

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = self._split(x)
        mean, log_scale = self._mean_log_scale(x1, x2.shape)
        y2 = mean + torch.exp(log_scale) * x2
        x1 = x1.expand(y2.shape[: y2.dim() + self.dim] + x1.shape[x1.dim() + self.dim :])
        return torch.cat([x1, y2], dim=self.dim), _sum_rightmost(log_scale, -self.dim)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1, y2 = self._split(y)
        mean, log_scale = self._mean_log_scale(y1, y2.shape)
        x2 = (y2 - mean) * torch.exp(-log_scale)
        y1 = y1.expand(x2.shape[: x2.dim() + self.dim] + y1.shape[y1.dim() + self.dim :])
        return torch.cat([y1, x2], dim=self.dim), _sum_rightmost(log_scale, -self.dim)


class ConditionalAffineCoupling(ConditionalTransformModule):
    """:class:`AffineCoupling` whose network also reads a context.

    :param split_dim: as :class:`AffineCoupling`.
    :param hypernet: callable ``(x1, context=c) -> (mean, log_scale)``, e.g. a
        :class:`~vitorch.nn.ConditionalDenseNN`.
    :param kwargs: ``dim``, ``log_scale_min_clip``, ``log_scale_max_clip``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, split_dim: int, hypernet: Callable, **kwargs: Any) -> None:
        super().__init__()
        self.split_dim = _check_int(split_dim, "split_dim", 1, type(self).__name__)
        self.nn = _check_callable(hypernet, "hypernet", type(self).__name__)
        self.kwargs = kwargs
        AffineCoupling(split_dim, hypernet, **kwargs)  # checks the keyword arguments now

    def condition(self, context: torch.Tensor) -> AffineCoupling:
        """The coupling layer for ``context``."""
        return AffineCoupling(self.split_dim, partial(self.nn, context=context), **self.kwargs)


def _coupling_sizes(input_dim: Any, split_dim: Any, dim: int, who: str) -> tuple[int, int, int]:
    """``(split_dim, size along dim, entries per slice along dim)`` of a coupling layer."""
    dim = _check_dim(dim, who)
    if isinstance(input_dim, int) and not isinstance(input_dim, bool) and dim == -1:
        event_shape = [_check_int(input_dim, "input_dim", 2, who)]
    elif isinstance(input_dim, Sequence) and len(input_dim) == -dim:
        event_shape = [_check_int(n, "every entry of input_dim", 1, who) for n in input_dim]
    else:
        raise ValueError(
            f"{who}: input_dim must be an int (dim=-1) or an event shape of length "
            f"-dim={-dim}, got {input_dim!r}"
        )
    n = event_shape[dim]
    extra = math.prod(event_shape[len(event_shape) + dim + 1 :])
    if split_dim is None:
        split_dim = n // 2
    if isinstance(split_dim, bool) or not isinstance(split_dim, int) or not 0 < split_dim < n:
        raise ValueError(f"{who}: split_dim must be an int in [1, {n - 1}], got {split_dim!r}")
    return split_dim, n, extra


def affine_coupling(
    input_dim: int | Sequence[int],
    hidden_dims: Sequence[int] | None = None,
    split_dim: int | None = None,
    dim: int = -1,
    **kwargs: Any,
) -> AffineCoupling:
    """An :class:`AffineCoupling` with its :class:`~vitorch.nn.DenseNN`.

    :param input_dim: size of the vectors, or the event shape when ``dim < -1``.
    :param hidden_dims: hidden sizes (default ``[10 * input_dim]``).
    :param split_dim: entries passed through (default half of the size along ``dim``).
    :param dim: negative; the dim to split along.
    :param kwargs: ``log_scale_min_clip``, ``log_scale_max_clip``.
    """
    split_dim, n, extra = _coupling_sizes(input_dim, split_dim, dim, "affine_coupling")
    hidden = _default_hidden(hidden_dims, [10 * n * extra], "affine_coupling")
    out = (n - split_dim) * extra
    hypernet = DenseNN(split_dim * extra, hidden, [out, out])
    return AffineCoupling(split_dim, hypernet, dim=dim, **kwargs)


def conditional_affine_coupling(
    input_dim: int | Sequence[int],
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    split_dim: int | None = None,
    dim: int = -1,
    **kwargs: Any,
) -> ConditionalAffineCoupling:
    """A :class:`ConditionalAffineCoupling` with its :class:`~vitorch.nn.ConditionalDenseNN`.

    Arguments as :func:`affine_coupling`, plus ``context_dim``, the size of the context.
    """
    who = "conditional_affine_coupling"
    split_dim, n, extra = _coupling_sizes(input_dim, split_dim, dim, who)
    context_dim = _check_int(context_dim, "context_dim", 1, who)
    hidden = _default_hidden(hidden_dims, [10 * n * extra], who)
    out = (n - split_dim) * extra
    hypernet = ConditionalDenseNN(split_dim * extra, context_dim, hidden, [out, out])
    return ConditionalAffineCoupling(split_dim, hypernet, dim=dim, **kwargs)


# -- rational splines ----------------------------------------------------------------------
# Floors on bin sizes, knot derivatives and the linear spline's lambda, as in Pyro, so
# that parameters trained there give the same map here.
_MIN_BIN_SIZE = 1e-3
_MIN_DERIVATIVE = 1e-3
_MIN_LAMBDA = 0.025


def _knots(fractions: torch.Tensor, bound: float) -> torch.Tensor:
    """Knot positions on ``[-bound, bound]`` from bin fractions summing to one."""
    count = fractions.size(-1)
    fractions = _MIN_BIN_SIZE + (1.0 - _MIN_BIN_SIZE * count) * fractions
    knots = 2.0 * bound * F.pad(fractions.cumsum(-1), (1, 0)) - bound
    # Rounding leaves the last cumulative sum a hair off one; pin both ends.
    knots[..., 0] = -bound
    knots[..., -1] = bound
    return knots


def _pick(params: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``params[..., index]`` per element, broadcasting the batch shapes of both."""
    shape = torch.broadcast_shapes(params.shape[:-1], index.shape[:-1])
    return params.expand(shape + params.shape[-1:]).gather(-1, index.expand(shape + (1,)))[..., 0]


def _rational_spline(
    v: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    lambdas: torch.Tensor | None,
    bound: float,
    inverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The monotone spline (or its inverse) at ``v``, and ``log dy/dx`` elementwise.

    ``widths`` and ``heights`` (``(..., n, K)``) are bin fractions summing to one,
    ``derivatives`` (``(..., n, K - 1)``) the positive slopes at the inner knots, and
    ``lambdas`` (``(..., n, K)`` in ``(0, 1)``, or ``None`` for the rational-quadratic
    spline) where each rational-linear bin switches between its two pieces. Outside the
    box the map is the identity with log-slope zero.
    """
    xk = _knots(widths, bound)
    yk = _knots(heights, bound)
    slopes = F.pad(derivatives + _MIN_DERIVATIVE, (1, 1), value=1.0 - _MIN_DERIVATIVE)
    inside = (v >= -bound) & (v <= bound)
    # Clamped, the formulas stay finite outside the box (where their result is discarded),
    # so no NaN leaks into the gradient.
    u = v.clamp(-bound, bound)
    edges = yk if inverse else xk
    index = (u.unsqueeze(-1) >= edges[..., 1:-1]).sum(-1, keepdim=True)
    x0, y0 = _pick(xk[..., :-1], index), _pick(yk[..., :-1], index)
    w = _pick(xk[..., 1:] - xk[..., :-1], index)
    h = _pick(yk[..., 1:] - yk[..., :-1], index)
    d0, d1 = _pick(slopes[..., :-1], index), _pick(slopes[..., 1:], index)
    s = h / w
    if lambdas is None:
        # Durkan et al. (2019), eqs. 4-6 and their appendix A for the inverse.
        c = d0 + d1 - 2 * s
        if inverse:
            dy = u - y0
            a = h * (s - d0) + dy * c
            b = h * d0 - dy * c
            disc = (b * b + 4 * a * s * dy).clamp(min=0)
            t = 2 * s * dy / (b + disc.sqrt())
        else:
            t = (u - x0) / w
        tt = t * (1 - t)
        den = s + c * tt
        log_slope = (
            2 * s.log() + (d1 * t * t + 2 * s * tt + d0 * (1 - t) ** 2).log() - 2 * den.log()
        )
        out = x0 + t * w if inverse else y0 + h * (s * t * t + d0 * tt) / den
    else:
        # Dolatabadi et al. (2020): each bin is two rational-linear pieces, meeting at
        # theta = lam with value yc, with weights 1, wc, wb at its left, middle, right.
        lam = _pick((1 - 2 * _MIN_LAMBDA) * lambdas + _MIN_LAMBDA, index)
        wb = (d0 / d1).sqrt()
        wc = (lam * d0 + (1 - lam) * wb * d1) / s
        ya, yb = y0, y0 + h
        yc = ((1 - lam) * ya + lam * wb * yb) / ((1 - lam) + lam * wb)
        if inverse:
            left = u <= yc
            # Each piece's formula is only evaluated where it applies (else at yc, where
            # both are finite), so the discarded one cannot give a NaN gradient.
            ul, ur = torch.where(left, u, yc), torch.where(left, yc, u)
            t_left = lam * (ya - ul) / ((wc - 1) * ul + ya - wc * yc)
            t_right = ((wc - lam * wb) * ur + lam * wb * yb - wc * yc) / (
                (wc - wb) * ur + wb * yb - wc * yc
            )
            t = torch.where(left, t_left, t_right)
        else:
            t = (u - x0) / w
        left = t <= lam
        tl, tr = torch.where(left, t, lam), torch.where(left, lam, t)
        den_left = (lam - tl) + wc * tl
        den_right = wc * (1 - tr) + wb * (tr - lam)
        num_left = ya * (lam - tl) + wc * yc * tl
        num_right = wc * yc * (1 - tr) + wb * yb * (tr - lam)
        slope_left = (lam * wc * (yc - ya)).log() - 2 * den_left.log()
        slope_right = (wb * wc * (1 - lam) * (yb - yc)).log() - 2 * den_right.log()
        log_slope = torch.where(left, slope_left, slope_right) - w.log()
        if inverse:
            out = x0 + t * w
        else:
            out = torch.where(left, num_left / den_left, num_right / den_right)
    return torch.where(inside, out, v), torch.where(inside, log_slope, torch.zeros_like(v))


def _spline_params(
    raw: Sequence[torch.Tensor], order: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Unconstrained ``(widths, heights, derivatives[, lambdas])`` -> spline parameters."""
    w, h, d = F.softmax(raw[0], dim=-1), F.softmax(raw[1], dim=-1), F.softplus(raw[2])
    lam = torch.sigmoid(raw[3]) if order == "linear" else None
    return w, h, d, lam


def _check_spline_args(
    input_dim: Any, count_bins: Any, bound: Any, order: Any, who: str
) -> tuple[int, int, float, str]:
    input_dim = _check_int(input_dim, "input_dim", 1, who)
    count_bins = _check_int(count_bins, "count_bins", 2, who)
    if count_bins * _MIN_BIN_SIZE >= 1:
        raise ValueError(
            f"{who}: count_bins must be below {round(1 / _MIN_BIN_SIZE)} (each bin is at "
            f"least {_MIN_BIN_SIZE} of the box), got {count_bins}"
        )
    return input_dim, count_bins, _check_positive(bound, "bound", who), _check_order(order, who)


class ConditionedSpline(_FlowTransform):
    """The elementwise spline of given (or computed) parameters; see :class:`Spline`.

    :param params: ``(widths, heights, derivatives, lambdas)`` (``lambdas`` ``None`` for
        ``order="quadratic"``), constrained, or a callable returning them.
    :param bound: half-width ``K`` of the box ``[-K, K]``.
    :param order: ``"linear"`` or ``"quadratic"``.
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True

    def __init__(
        self, params: Callable | Sequence | None = None, bound: float = 3.0, order: str = "linear"
    ) -> None:
        super().__init__()
        self._param_source = params
        self.bound = _check_positive(bound, "bound", type(self).__name__)
        self.order = _check_order(order, type(self).__name__)

    def _params(self) -> Sequence:
        source = self._param_source
        return source() if callable(source) else source  # type: ignore[return-value]

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _rational_spline(x, *self._params(), bound=self.bound, inverse=False)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _rational_spline(y, *self._params(), bound=self.bound, inverse=True)


class Spline(ConditionedSpline, TransformModule):
    """Elementwise monotone rational spline on ``[-bound, bound]``, identity outside.

    Each of the ``input_dim`` coordinates has its own spline of ``count_bins`` bins,
    whose widths, heights and knot slopes (and, for ``order="linear"``, the point where
    each bin switches between its two rational-linear pieces) are parameters. Slopes at
    the box's edges are one, so the map is smooth enough to stack. Inverse and
    log-Jacobian are closed-form, as cheap as the forward map.

    :param input_dim: number of coordinates.
    :param count_bins: number of bins (``>= 2``).
    :param bound: half-width ``K`` of the box ``[-K, K]``.
    :param order: ``"linear"`` (Pyro's default) or ``"quadratic"``.

    Parameters: ``unnormalized_widths``, ``unnormalized_heights`` (``input_dim x
    count_bins``), ``unnormalized_derivatives`` (``input_dim x (count_bins - 1)``) and,
    for ``"linear"``, ``unnormalized_lambdas`` (Pyro's names and initialisation).
    """

    def __init__(
        self, input_dim: int, count_bins: int = 8, bound: float = 3.0, order: str = "linear"
    ) -> None:
        input_dim, count_bins, bound, order = _check_spline_args(
            input_dim, count_bins, bound, order, "Spline"
        )
        super().__init__(None, bound=bound, order=order)
        self.input_dim = input_dim
        self.count_bins = count_bins
        self.unnormalized_widths = nn.Parameter(torch.randn(input_dim, count_bins))
        self.unnormalized_heights = nn.Parameter(torch.randn(input_dim, count_bins))
        self.unnormalized_derivatives = nn.Parameter(torch.randn(input_dim, count_bins - 1))
        if order == "linear":
            self.unnormalized_lambdas = nn.Parameter(torch.rand(input_dim, count_bins))

    def _params(self) -> Sequence:
        raw = [self.unnormalized_widths, self.unnormalized_heights, self.unnormalized_derivatives]
        if self.order == "linear":
            raw.append(self.unnormalized_lambdas)
        return _spline_params(raw, self.order)


class ConditionalSpline(ConditionalTransformModule):
    """:class:`Spline` whose parameters are the output of a network of the context.

    :param nn: callable ``context -> (widths, heights, derivatives[, lambdas])``,
        unconstrained, each of shape ``batch + (input_dim * n,)`` (a
        :class:`~vitorch.nn.DenseNN`) or ``batch + (n, input_dim)`` (an
        :class:`~vitorch.nn.AutoRegressiveNN`), ``n`` being ``count_bins`` (``count_bins
        - 1`` for derivatives); lambdas only for ``order="linear"``.
    :param input_dim: number of coordinates.
    :param count_bins: number of bins.
    :param bound: half-width of the box.
    :param order: ``"linear"`` or ``"quadratic"``.
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True

    def __init__(
        self,
        nn: Callable,
        input_dim: int,
        count_bins: int,
        bound: float = 3.0,
        order: str = "linear",
    ) -> None:
        input_dim, count_bins, bound, order = _check_spline_args(
            input_dim, count_bins, bound, order, "ConditionalSpline"
        )
        super().__init__()
        self.nn = _check_callable(nn, "nn", "ConditionalSpline")
        self.input_dim = input_dim
        self.count_bins = count_bins
        self.bound = bound
        self.order = order

    def _params(self, context: torch.Tensor) -> Sequence:
        raw = self.nn(context)
        expected = 4 if self.order == "linear" else 3
        if not isinstance(raw, (tuple, list)) or len(raw) != expected:
            raise ValueError(
                f"ConditionalSpline: nn must return {expected} tensors for "
                f"order={self.order!r}, got {type(raw).__name__}"
                + (f" of length {len(raw)}" if isinstance(raw, (tuple, list)) else "")
            )
        d, k = self.input_dim, self.count_bins
        flat = raw[0].size(-1) == d * k
        shaped = []
        for p, n in zip(raw, [k, k, k - 1, k]):
            if flat and p.size(-1) == d * n:
                shaped.append(p.reshape(p.shape[:-1] + (d, n)))
            elif not flat and p.dim() >= 2 and p.shape[-2:] == (n, d):
                shaped.append(p.transpose(-1, -2))
            else:
                raise ValueError(
                    f"ConditionalSpline: nn output of shape {tuple(p.shape)} is neither "
                    f"(..., {d * n}) nor (..., {n}, {d}) (input_dim={d}, count_bins={k})"
                )
        return _spline_params(shaped, self.order)

    def condition(self, context: torch.Tensor) -> ConditionedSpline:
        """The spline whose parameters the network gives for ``context``."""
        return ConditionedSpline(partial(self._params, context), bound=self.bound, order=self.order)


def spline(
    input_dim: int, count_bins: int = 8, bound: float = 3.0, order: str = "linear"
) -> Spline:
    """A :class:`Spline` (for symmetry with the other helpers)."""
    return Spline(input_dim, count_bins=count_bins, bound=bound, order=order)


def _spline_param_dims(n: int, count_bins: int, order: str) -> list[int]:
    dims = [n * count_bins, n * count_bins, n * (count_bins - 1)]
    return dims + [n * count_bins] if order == "linear" else dims


def conditional_spline(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "linear",
) -> ConditionalSpline:
    """A :class:`ConditionalSpline` with a :class:`~vitorch.nn.DenseNN` of the context.

    :param input_dim: number of coordinates.
    :param context_dim: size of the context.
    :param hidden_dims: hidden sizes (default ``[10 * input_dim, 10 * input_dim]``).
    :param count_bins: number of bins.
    :param bound: half-width of the box.
    :param order: ``"linear"`` or ``"quadratic"``.
    """
    who = "conditional_spline"
    input_dim, count_bins, bound, order = _check_spline_args(
        input_dim, count_bins, bound, order, who
    )
    context_dim = _check_int(context_dim, "context_dim", 1, who)
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, who)
    hypernet = DenseNN(context_dim, hidden, _spline_param_dims(input_dim, count_bins, order))
    return ConditionalSpline(hypernet, input_dim, count_bins, bound=bound, order=order)


class SplineCoupling(_FlowTransform, TransformModule):
    """Coupling with splines: ``y1 = g(x1)``, ``y2 = h_{x1}(x2)``.

    ``x1`` (the first ``split_dim`` entries) goes through an elementwise :class:`Spline`
    ``g`` (unless ``identity``); ``x2`` through a spline whose parameters a network
    computes from ``x1``. Both directions take one network call.

    :param input_dim: size of the vectors.
    :param split_dim: size of ``x1`` (``1 <= split_dim < input_dim``).
    :param hypernet: callable ``x1 -> (widths, heights, derivatives[, lambdas])`` for
        the ``input_dim - split_dim`` coordinates of ``x2`` (layout as
        :class:`ConditionalSpline`).
    :param count_bins: bins per spline.
    :param bound: half-width of the box.
    :param order: ``"linear"`` or ``"quadratic"``.
    :param identity: leave ``x1`` unchanged instead of passing it through ``g``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        input_dim: int,
        split_dim: int,
        hypernet: Callable,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "linear",
        identity: bool = False,
    ) -> None:
        input_dim = _check_int(input_dim, "input_dim", 2, "SplineCoupling")
        if isinstance(split_dim, bool) or not isinstance(split_dim, int):
            raise ValueError(f"SplineCoupling: split_dim must be an int, got {split_dim!r}")
        if not 0 < split_dim < input_dim:
            raise ValueError(
                f"SplineCoupling: split_dim must be in [1, {input_dim - 1}] "
                f"(input_dim={input_dim}), got {split_dim}"
            )
        super().__init__()
        self.input_dim = input_dim
        self.split_dim = split_dim
        self.identity = bool(identity)
        self.lower_spline = Spline(split_dim, count_bins, bound, order)
        self.upper_spline = ConditionalSpline(
            hypernet, input_dim - split_dim, count_bins, bound, order
        )

    def _check(self, v: torch.Tensor) -> None:
        if v.dim() < 1 or v.size(-1) != self.input_dim:
            raise ValueError(
                f"SplineCoupling: input must have shape (..., {self.input_dim}), got "
                f"{tuple(v.shape)}"
            )

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x1, x2 = x[..., : self.split_dim], x[..., self.split_dim :]
        up = self.upper_spline
        y2, ldj2 = _rational_spline(x2, *up._params(x1), bound=up.bound, inverse=False)
        y1, ldj1 = x1, x1.new_zeros(())
        if not self.identity:
            y1, ldj1 = self.lower_spline._forward(x1)
        y1 = y1.expand(y2.shape[:-1] + y1.shape[-1:])
        return torch.cat([y1, y2], dim=-1), ldj1.sum(-1) + ldj2.sum(-1)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y)
        y1, y2 = y[..., : self.split_dim], y[..., self.split_dim :]
        x1, ldj1 = y1, y1.new_zeros(())
        if not self.identity:
            x1, ldj1 = self.lower_spline._backward(y1)
        up = self.upper_spline
        x2, ldj2 = _rational_spline(y2, *up._params(x1), bound=up.bound, inverse=True)
        x1 = x1.expand(x2.shape[:-1] + x1.shape[-1:])
        return torch.cat([x1, x2], dim=-1), ldj1.sum(-1) + ldj2.sum(-1)


def spline_coupling(
    input_dim: int,
    split_dim: int | None = None,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "linear",
) -> SplineCoupling:
    """A :class:`SplineCoupling` with its :class:`~vitorch.nn.DenseNN`.

    :param input_dim: size of the vectors (``>= 2``).
    :param split_dim: size of the half passed to the network (default ``input_dim // 2``).
    :param hidden_dims: hidden sizes (default ``[10 * input_dim, 10 * input_dim]``).
    :param count_bins: bins per spline.
    :param bound: half-width of the box.
    :param order: ``"linear"`` (Pyro's only choice here) or ``"quadratic"``.
    """
    split_dim, input_dim, _ = _coupling_sizes(input_dim, split_dim, -1, "spline_coupling")
    _, count_bins, bound, order = _check_spline_args(
        input_dim, count_bins, bound, order, "spline_coupling"
    )
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, "spline_coupling")
    param_dims = _spline_param_dims(input_dim - split_dim, count_bins, order)
    hypernet = DenseNN(split_dim, hidden, param_dims)
    return SplineCoupling(input_dim, split_dim, hypernet, count_bins, bound, order)


class SplineAutoregressive(_FlowTransform, TransformModule):
    """Elementwise splines whose parameters for coordinate ``i`` depend on earlier ones.

    The bins of coordinate ``i`` come from an autoregressive network of the coordinates
    before ``i`` in its order, so the Jacobian is triangular and the log-determinant the
    sum of the spline log-slopes. Sampling is one network call; the inverse takes
    ``input_dim`` calls (coordinate ``k`` of the order is exact after ``k + 1``).

    :param input_dim: size of the vectors.
    :param autoregressive_nn: an :class:`~vitorch.nn.AutoRegressiveNN` with ``param_dims``
        ``[count_bins, count_bins, count_bins - 1]`` (plus ``count_bins`` for
        ``order="linear"``).
    :param count_bins: bins per spline.
    :param bound: half-width of the box.
    :param order: ``"linear"`` or ``"quadratic"``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    autoregressive = True

    def __init__(
        self,
        input_dim: int,
        autoregressive_nn: Callable,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "linear",
    ) -> None:
        super().__init__()
        self.arn = _check_callable(autoregressive_nn, "autoregressive_nn", "SplineAutoregressive")
        self.spline = ConditionalSpline(autoregressive_nn, input_dim, count_bins, bound, order)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, ldj = _rational_spline(
            x, *self.spline._params(x), bound=self.spline.bound, inverse=False
        )
        return y, ldj.sum(-1)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The last pass reads an x exact in every coordinate that any output depends on,
        # so its log-slopes are those of the true x.
        x = torch.zeros_like(y)
        for _ in range(y.size(-1)):
            x, ldj = _rational_spline(
                y, *self.spline._params(x), bound=self.spline.bound, inverse=True
            )
        return x, ldj.sum(-1)


def spline_autoregressive(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "linear",
) -> SplineAutoregressive:
    """A :class:`SplineAutoregressive` with its :class:`~vitorch.nn.AutoRegressiveNN`.

    :param input_dim: size of the vectors.
    :param hidden_dims: hidden sizes (default ``[10 * input_dim, 10 * input_dim]``).
    :param count_bins: bins per spline.
    :param bound: half-width of the box.
    :param order: ``"linear"`` or ``"quadratic"``.
    """
    who = "spline_autoregressive"
    input_dim, count_bins, bound, order = _check_spline_args(
        input_dim, count_bins, bound, order, who
    )
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, who)
    param_dims = _spline_param_dims(1, count_bins, order)
    arn = AutoRegressiveNN(input_dim, hidden, param_dims=param_dims)
    return SplineAutoregressive(input_dim, arn, count_bins, bound, order)


class ConditionalSplineAutoregressive(ConditionalTransformModule):
    """:class:`SplineAutoregressive` whose network also reads a context.

    :param input_dim: size of the vectors.
    :param autoregressive_nn: callable ``(x, context=c) -> (widths, heights,
        derivatives[, lambdas])``, autoregressive in ``x`` (e.g. a
        :class:`~vitorch.nn.ConditionalAutoRegressiveNN`).
    :param kwargs: ``count_bins``, ``bound``, ``order``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, autoregressive_nn: Callable, **kwargs: Any) -> None:
        super().__init__()
        self.input_dim = _check_int(input_dim, "input_dim", 1, type(self).__name__)
        self.nn = _check_callable(autoregressive_nn, "autoregressive_nn", type(self).__name__)
        self.kwargs = kwargs

    def condition(self, context: torch.Tensor) -> SplineAutoregressive:
        """The autoregressive spline for ``context``."""
        return SplineAutoregressive(
            self.input_dim, partial(self.nn, context=context), **self.kwargs
        )


def conditional_spline_autoregressive(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "linear",
) -> ConditionalSplineAutoregressive:
    """A :class:`ConditionalSplineAutoregressive` with its network.

    Arguments as :func:`spline_autoregressive`, plus ``context_dim``, the context's size.
    """
    who = "conditional_spline_autoregressive"
    input_dim, count_bins, bound, order = _check_spline_args(
        input_dim, count_bins, bound, order, who
    )
    context_dim = _check_int(context_dim, "context_dim", 1, who)
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, who)
    arn = ConditionalAutoRegressiveNN(
        input_dim, context_dim, hidden, param_dims=_spline_param_dims(1, count_bins, order)
    )
    return ConditionalSplineAutoregressive(
        input_dim, arn, count_bins=count_bins, bound=bound, order=order
    )


# -- planar and radial flows ---------------------------------------------------------------
class ConditionedPlanar(_FlowTransform):
    """``y = x + u_hat * tanh(w . x + b)`` for given parameters; see :class:`Planar`.

    :param params: ``(bias, u, w)`` (shapes ``batch + (1,)``, ``batch + (D,)``,
        ``batch + (D,)``) or a callable returning them.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    # Bisection halves the bracket each step: 64 steps take any float64 bracket to
    # rounding level, and one Newton step then gives the gradient.
    _bisection_steps = 64

    def __init__(self, params: Callable | Sequence | None = None) -> None:
        super().__init__()
        self._param_source = params

    def _params(self) -> Sequence:
        source = self._param_source
        return source() if callable(source) else source  # type: ignore[return-value]

    @staticmethod
    def u_hat(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``u`` moved along ``w`` until ``w . u_hat > -1``: the map is then invertible."""
        wu = (w * u).sum(-1, keepdim=True)
        return u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bias, u, w = self._params()
        u_hat = self.u_hat(u, w)
        act = torch.tanh((w * x).sum(-1, keepdim=True) + bias)
        y = x + u_hat * act
        ldj = (1 + (1 - act * act) * (w * u_hat).sum(-1, keepdim=True)).abs().log()
        return y, ldj[..., 0]

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # With a = w . x: w . y = a + c tanh(a + b), c = w . u_hat > -1, increasing in a;
        # its root lies within |c| of w . y. Then x = y - u_hat tanh(a + b).
        bias, u, w = self._params()
        u_hat = self.u_hat(u, w)
        c = (w * u_hat).sum(-1, keepdim=True)
        target = (w * y).sum(-1, keepdim=True)
        with torch.no_grad():
            lo, hi = target - c.abs(), target + c.abs()
            lo, hi = torch.broadcast_tensors(lo, hi)
            for _ in range(self._bisection_steps):
                mid = (lo + hi) / 2
                above = mid + c * torch.tanh(mid + bias) > target
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            a = (lo + hi) / 2
        act = torch.tanh(a + bias)
        a = a - (a + c * act - target) / (1 + c * (1 - act * act))
        act = torch.tanh(a + bias)
        x = y - u_hat * act
        ldj = (1 + (1 - act * act) * c).abs().log()
        return x, ldj[..., 0]


class Planar(ConditionedPlanar, TransformModule):
    """The planar flow of Rezende & Mohamed (2015): ``y = x + u_hat * tanh(w . x + b)``.

    ``u_hat`` is ``u`` adjusted so that ``w . u_hat > -1``, which makes the map a
    bijection; ``log|det| = log|1 + (1 - tanh^2) w . u_hat|``. Pyro has no inverse for
    it; here the inverse solves a 1-D monotone equation by bisection.

    :param input_dim: size of the vectors. Parameters ``bias`` (1), ``u``, ``w``
        (``input_dim``), Pyro's names and initialisation.
    """

    def __init__(self, input_dim: int) -> None:
        input_dim = _check_int(input_dim, "input_dim", 1, "Planar")
        super().__init__()
        self.input_dim = input_dim
        self.bias = nn.Parameter(torch.zeros(1))
        bound = 1.0 / math.sqrt(input_dim)
        self.u = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))

    def _params(self) -> Sequence:
        return self.bias, self.u, self.w


class ConditionalPlanar(ConditionalTransformModule):
    """:class:`Planar` whose ``(bias, u, w)`` a network computes from the context.

    :param nn: callable ``context -> (bias, u, w)``, e.g. ``DenseNN(context_dim, hidden,
        param_dims=[1, input_dim, input_dim])``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, nn: Callable) -> None:
        super().__init__()
        self.nn = _check_callable(nn, "nn", "ConditionalPlanar")

    def condition(self, context: torch.Tensor) -> ConditionedPlanar:
        """The planar map whose parameters the network gives for ``context``."""
        return ConditionedPlanar(partial(self.nn, context))


def planar(input_dim: int) -> Planar:
    """A :class:`Planar` (for symmetry with the other helpers)."""
    return Planar(input_dim)


def conditional_planar(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None
) -> ConditionalPlanar:
    """A :class:`ConditionalPlanar` with a :class:`~vitorch.nn.DenseNN` of the context.

    :param input_dim: size of the vectors.
    :param context_dim: size of the context.
    :param hidden_dims: hidden sizes (default ``[10 * input_dim, 10 * input_dim]``).
    """
    input_dim = _check_int(input_dim, "input_dim", 1, "conditional_planar")
    context_dim = _check_int(context_dim, "context_dim", 1, "conditional_planar")
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, "conditional_planar")
    return ConditionalPlanar(DenseNN(context_dim, hidden, [1, input_dim, input_dim]))


class ConditionedRadial(_FlowTransform):
    """``y = x + beta h(r) (x - x0)``, ``h(r) = 1 / (alpha + r)``; see :class:`Radial`.

    :param params: ``(x0, alpha_prime, beta_prime)`` (shapes ``batch + (D,)``,
        ``batch + (1,)``, ``batch + (1,)``) or a callable returning them.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params: Callable | Sequence | None = None) -> None:
        super().__init__()
        self._param_source = params

    def _params(self) -> Sequence:
        source = self._param_source
        return source() if callable(source) else source  # type: ignore[return-value]

    def _alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0, alpha_prime, beta_prime = self._params()
        alpha = F.softplus(alpha_prime)
        # beta > -alpha keeps the map invertible.
        return x0, alpha, F.softplus(beta_prime) - alpha

    @staticmethod
    def _ldj(dim: int, r: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        beta_h = beta / (alpha + r)
        # Radial stretch 1 + beta h + beta h' r, tangential 1 + beta h (dim - 1 times).
        radial = 1 + beta_h - beta * r / (alpha + r) ** 2
        return ((dim - 1) * torch.log1p(beta_h) + radial.log())[..., 0]

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0, alpha, beta = self._alpha_beta()
        diff = x - x0
        r = diff.norm(dim=-1, keepdim=True)
        y = x + beta / (alpha + r) * diff
        return y, self._ldj(x0.size(-1), r, alpha, beta)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # |y - x0| = rho = r (1 + beta / (alpha + r)), i.e.
        # r^2 + (alpha + beta - rho) r - alpha rho = 0, whose positive root is r; the
        # two forms below avoid cancellation for either sign of alpha + beta - rho.
        x0, alpha, beta = self._alpha_beta()
        diff = y - x0
        rho = diff.norm(dim=-1, keepdim=True)
        b = alpha + beta - rho
        root = (b * b + 4 * alpha * rho).sqrt()
        bp, bn = b.clamp(min=0), b.clamp(max=0)
        rp = 2 * alpha * rho / (bp + (bp * bp + 4 * alpha * rho).sqrt())
        r = torch.where(b >= 0, rp, (root - bn) / 2)
        x = x0 + diff / (1 + beta / (alpha + r))
        return x, self._ldj(x0.size(-1), r, alpha, beta)


class Radial(ConditionedRadial, TransformModule):
    """The radial flow of Rezende & Mohamed (2015): contracts or expands around ``x0``.

    ``y = x + beta / (alpha + r) * (x - x0)`` with ``r = |x - x0|``,
    ``alpha = softplus(alpha_prime) > 0`` and ``beta = softplus(beta_prime) - alpha``.
    Pyro has no inverse for it; here it is closed-form (a quadratic in ``r``).

    :param input_dim: size of the vectors. Parameters ``x0`` (``input_dim``),
        ``alpha_prime``, ``beta_prime`` (1), Pyro's names and initialisation.
    """

    def __init__(self, input_dim: int) -> None:
        input_dim = _check_int(input_dim, "input_dim", 1, "Radial")
        super().__init__()
        self.input_dim = input_dim
        bound = 1.0 / math.sqrt(input_dim)
        self.x0 = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))
        self.alpha_prime = nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        self.beta_prime = nn.Parameter(torch.empty(1).uniform_(-bound, bound))

    def _params(self) -> Sequence:
        return self.x0, self.alpha_prime, self.beta_prime


class ConditionalRadial(ConditionalTransformModule):
    """:class:`Radial` whose ``(x0, alpha_prime, beta_prime)`` come from the context.

    :param nn: callable ``context -> (x0, alpha_prime, beta_prime)``, e.g.
        ``DenseNN(context_dim, hidden, param_dims=[input_dim, 1, 1])``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, nn: Callable) -> None:
        super().__init__()
        self.nn = _check_callable(nn, "nn", "ConditionalRadial")

    def condition(self, context: torch.Tensor) -> ConditionedRadial:
        """The radial map whose parameters the network gives for ``context``."""
        return ConditionedRadial(partial(self.nn, context))


def radial(input_dim: int) -> Radial:
    """A :class:`Radial` (for symmetry with the other helpers)."""
    return Radial(input_dim)


def conditional_radial(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None
) -> ConditionalRadial:
    """A :class:`ConditionalRadial` with a :class:`~vitorch.nn.DenseNN` of the context.

    :param input_dim: size of the vectors.
    :param context_dim: size of the context.
    :param hidden_dims: hidden sizes (default ``[10 * input_dim, 10 * input_dim]``).
    """
    input_dim = _check_int(input_dim, "input_dim", 1, "conditional_radial")
    context_dim = _check_int(context_dim, "context_dim", 1, "conditional_radial")
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, "conditional_radial")
    return ConditionalRadial(DenseNN(context_dim, hidden, [input_dim, 1, 1]))


# -- Householder reflections ---------------------------------------------------------------
def _check_count_transforms(count: Any, input_dim: int, who: str) -> int:
    count = _check_int(count, "count_transforms", 1, who)
    if count > input_dim:
        warnings.warn(
            f"{who}: count_transforms={count} exceeds input_dim={input_dim}; "
            f"{input_dim} reflections already give every orthogonal map",
            stacklevel=3,
        )
    return count


class _ConditionedHouseholder(_FlowTransform):
    """Reflections across the hyperplanes normal to the rows of ``u`` (volume-preserving)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    volume_preserving = True

    def __init__(self, u_unnormed: Callable | torch.Tensor | None = None) -> None:
        super().__init__()
        self._u_source = u_unnormed

    def _u_unnormed(self) -> torch.Tensor:
        source = self._u_source
        return source() if callable(source) else source  # type: ignore[return-value]

    def _reflect(self, v: torch.Tensor, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        u = self._u_unnormed()
        u = u / u.norm(dim=-1, keepdim=True)
        order = range(u.size(-2) - 1, -1, -1) if reverse else range(u.size(-2))
        for i in order:
            ui = u[..., i, :]
            v = v - 2 * (ui * v).sum(-1, keepdim=True) * ui
        return v, v.new_zeros(v.shape[:-1])

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._reflect(x, reverse=False)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._reflect(y, reverse=True)


class Householder(_ConditionedHouseholder, TransformModule):
    """``count_transforms`` Householder reflections: a learnable orthogonal map.

    :param input_dim: size of the vectors.
    :param count_transforms: number of reflections (parameter ``u_unnormed``,
        ``count_transforms x input_dim``).
    """

    def __init__(self, input_dim: int, count_transforms: int = 1) -> None:
        input_dim = _check_int(input_dim, "input_dim", 1, "Householder")
        count = _check_count_transforms(count_transforms, input_dim, "Householder")
        super().__init__()
        self.input_dim = input_dim
        bound = 1.0 / math.sqrt(input_dim)
        self.u_unnormed = nn.Parameter(torch.empty(count, input_dim).uniform_(-bound, bound))

    def _u_unnormed(self) -> torch.Tensor:
        return self.u_unnormed


class ConditionalHouseholder(ConditionalTransformModule):
    """:class:`Householder` whose reflection vectors a network computes from the context.

    :param input_dim: size of the vectors.
    :param nn: callable ``context -> u`` (one reflection) or a tuple of ``u``'s.
    :param count_transforms: number of reflections.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, nn: Callable, count_transforms: int = 1) -> None:
        input_dim = _check_int(input_dim, "input_dim", 1, "ConditionalHouseholder")
        count = _check_count_transforms(count_transforms, input_dim, "ConditionalHouseholder")
        super().__init__()
        self.nn = _check_callable(nn, "nn", "ConditionalHouseholder")
        self.input_dim = input_dim
        self.count_transforms = count

    def _u(self, context: torch.Tensor) -> torch.Tensor:
        out = self.nn(context)
        return out.unsqueeze(-2) if self.count_transforms == 1 else torch.stack(out, dim=-2)

    def condition(self, context: torch.Tensor) -> Transform:
        """The reflections the network gives for ``context``."""
        return _ConditionedHouseholder(partial(self._u, context))


def householder(input_dim: int, count_transforms: int | None = None) -> Householder:
    """A :class:`Householder` (default ``input_dim // 2 + 1`` reflections)."""
    if count_transforms is None:
        count_transforms = _check_int(input_dim, "input_dim", 1, "householder") // 2 + 1
    return Householder(input_dim, count_transforms=count_transforms)


def conditional_householder(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    count_transforms: int = 1,
) -> ConditionalHouseholder:
    """A :class:`ConditionalHouseholder` with a :class:`~vitorch.nn.DenseNN` of the context."""
    input_dim = _check_int(input_dim, "input_dim", 1, "conditional_householder")
    context_dim = _check_int(context_dim, "context_dim", 1, "conditional_householder")
    count = _check_int(count_transforms, "count_transforms", 1, "conditional_householder")
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, "conditional_householder")
    hypernet = DenseNN(context_dim, hidden, [input_dim] * count)
    return ConditionalHouseholder(input_dim, hypernet, count)


# -- batch normalisation and permutations --------------------------------------------------
class BatchNorm(TransformModule):
    """Batch normalisation as a flow layer (Dinh et al., 2017), elementwise.

    The *inverse* normalises: ``x = (y - mean) / sqrt(var + eps) * gamma + beta``, with
    the batch's statistics (over dim 0) in training mode, which also update the moving
    averages, and the moving averages in eval mode. The forward map undoes it with the
    moving averages. The log-Jacobian treats the statistics as constants (as Pyro does);
    in training mode it uses the batch variance of ``y``.

    :param input_dim: number of coordinates.
    :param momentum: weight of the new batch in the moving averages.
    :param epsilon: added to the variance.
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True

    def __init__(self, input_dim: int, momentum: float = 0.1, epsilon: float = 1e-5) -> None:
        input_dim = _check_int(input_dim, "input_dim", 1, "BatchNorm")
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not (0 <= momentum <= 1)
        ):
            raise ValueError(f"BatchNorm: momentum must be a number in [0, 1], got {momentum!r}")
        super().__init__()
        self.input_dim = input_dim
        self.momentum = float(momentum)
        self.epsilon = _check_positive(epsilon, "epsilon", "BatchNorm")
        self.gamma = nn.Parameter(torch.ones(input_dim))
        self.beta = nn.Parameter(torch.zeros(input_dim))
        self.register_buffer("moving_mean", torch.zeros(input_dim))
        self.register_buffer("moving_variance", torch.ones(input_dim))

    @property
    def constrained_gamma(self) -> torch.Tensor:
        """``relu(gamma) + 1e-6``: the positive scale."""
        return F.relu(self.gamma) + 1e-6

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        sd = torch.sqrt(self.moving_variance + self.epsilon)
        return (x - self.beta) / self.constrained_gamma * sd + self.moving_mean

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, var = y.mean(0), y.var(0)
            with torch.no_grad():
                self.moving_mean.mul_(1 - self.momentum).add_(mean * self.momentum)
                self.moving_variance.mul_(1 - self.momentum).add_(var * self.momentum)
        else:
            mean, var = self.moving_mean, self.moving_variance
        return (y - mean) * self.constrained_gamma / torch.sqrt(var + self.epsilon) + self.beta

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise ``log(sd / gamma)``, ``sd`` as described in the class docstring."""
        var = torch.var(y, dim=0, keepdim=True) if self.training else self.moving_variance
        ldj = 0.5 * torch.log(var + self.epsilon) - self.constrained_gamma.log()
        return ldj.expand(torch.broadcast_shapes(ldj.shape, x.shape))


def batchnorm(input_dim: int, **kwargs: Any) -> BatchNorm:
    """A :class:`BatchNorm` (``momentum``, ``epsilon`` as keywords)."""
    return BatchNorm(input_dim, **kwargs)


class Permute(Transform):
    """Reorders the entries along ``dim``: ``y = x.index_select(dim, permutation)``.

    Volume-preserving (log-Jacobian zero); put between coupling or autoregressive layers
    so that every coordinate gets transformed.

    :param permutation: a 1-D integer tensor holding each of ``0 .. n - 1`` once.
    :param dim: negative; the event has ``-dim`` dims.
    :param cache_size: 0 or 1.
    """

    bijective = True
    volume_preserving = True

    def __init__(self, permutation: torch.Tensor, *, dim: int = -1, cache_size: int = 1) -> None:
        p = torch.as_tensor(permutation)
        if (
            p.dim() != 1
            or p.is_floating_point()
            or p.is_complex()
            or p.dtype == torch.bool
            or not torch.equal(torch.sort(p.long()).values, torch.arange(p.numel()))
        ):
            raise ValueError(
                f"Permute: permutation must be a 1-D integer tensor holding each of "
                f"0 .. n - 1 once, got {permutation!r}"
            )
        self.dim = _check_dim(dim, "Permute")
        super().__init__(cache_size=cache_size)
        self.permutation = p.long()
        self.inv_permutation = torch.empty_like(self.permutation)
        self.inv_permutation[self.permutation] = torch.arange(p.numel())

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, -self.dim)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, -self.dim)

    def _check(self, v: torch.Tensor) -> None:
        if v.dim() < -self.dim or v.size(self.dim) != self.permutation.numel():
            raise ValueError(
                f"Permute: input must have size {self.permutation.numel()} along dim="
                f"{self.dim}, got shape {tuple(v.shape)}"
            )

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x.index_select(self.dim, self.permutation.to(x.device))

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y)
        return y.index_select(self.dim, self.inv_permutation.to(y.device))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero, of the batch shape of ``x``."""
        return x.new_zeros(x.shape[: x.dim() + self.dim])

    def __getstate__(self) -> dict:
        # The cached pair may carry autograd history, which neither pickle nor deepcopy take.
        state = super().__getstate__()
        if "_cached_x_y" in state:
            state["_cached_x_y"] = (None, None)
        return state

    def clear_cache(self) -> None:
        """Forget the cached pair."""
        if self._cache_size:
            self._cached_x_y = None, None

    def with_cache(self, cache_size: int = 1) -> Permute:
        """The same permutation with the given cache size."""
        if self._cache_size == cache_size:
            return self
        return Permute(self.permutation, dim=self.dim, cache_size=cache_size)


def permute(
    input_dim: int | Sequence[int], permutation: torch.Tensor | None = None, dim: int = -1
) -> Permute:
    """A :class:`Permute`, random (``torch.randperm``) unless ``permutation`` is given.

    :param input_dim: size along ``dim``, or the event shape (of length ``-dim``).
    """
    dim = _check_dim(dim, "permute")
    if isinstance(input_dim, int) and not isinstance(input_dim, bool) and dim == -1:
        n = _check_int(input_dim, "input_dim", 1, "permute")
    elif isinstance(input_dim, Sequence) and len(input_dim) == -dim:
        n = _check_int(input_dim[dim], "input_dim[dim]", 1, "permute")
    else:
        raise ValueError(
            f"permute: input_dim must be an int (dim=-1) or an event shape of length "
            f"-dim={-dim}, got {input_dim!r}"
        )
    if permutation is None:
        permutation = torch.randperm(n)
    return Permute(permutation, dim=dim)


# -- conditional affine autoregressive -----------------------------------------------------
class ConditionalAffineAutoregressive(ConditionalTransformModule):
    """:class:`~vitorch.distributions.transforms.AffineAutoregressive` given a context.

    :param autoregressive_nn: callable ``(x, context=c) -> (mean, log_scale)``,
        autoregressive in ``x`` in the order of its ``permutation`` attribute (e.g. a
        :class:`~vitorch.nn.ConditionalAutoRegressiveNN`).
    :param kwargs: ``log_scale_min_clip``, ``log_scale_max_clip``, ``sigmoid_bias``,
        ``stable``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, autoregressive_nn: Callable, **kwargs: Any) -> None:
        super().__init__()
        self.nn = _check_callable(autoregressive_nn, "autoregressive_nn", type(self).__name__)
        self.kwargs = kwargs
        self.condition(torch.zeros(()))  # checks the network and keyword arguments now

    def condition(self, context: torch.Tensor) -> AffineAutoregressive:
        """The affine autoregressive map for ``context``."""
        arn = partial(self.nn, context=context)
        arn.permutation = getattr(self.nn, "permutation", None)  # type: ignore[attr-defined]
        return AffineAutoregressive(arn, **self.kwargs)


def conditional_affine_autoregressive(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> ConditionalAffineAutoregressive:
    """A :class:`ConditionalAffineAutoregressive` with its network.

    :param input_dim: size of the vectors.
    :param context_dim: size of the context.
    :param hidden_dims: hidden sizes (default ``[10 * input_dim]``).
    :param kwargs: passed to the transform.
    """
    who = "conditional_affine_autoregressive"
    input_dim = _check_int(input_dim, "input_dim", 1, who)
    context_dim = _check_int(context_dim, "context_dim", 1, who)
    hidden = _default_hidden(hidden_dims, [10 * input_dim], who)
    arn = ConditionalAutoRegressiveNN(input_dim, context_dim, hidden)
    return ConditionalAffineAutoregressive(arn, **kwargs)


def iterated(repeats: int, base_fn: Callable, *args: Any, **kwargs: Any) -> ComposeTransformModule:
    """``repeats`` transforms made by ``base_fn(*args, **kwargs)``, composed in order."""
    repeats = _check_int(repeats, "repeats", 1, "iterated")
    return ComposeTransformModule([base_fn(*args, **kwargs) for _ in range(repeats)])
