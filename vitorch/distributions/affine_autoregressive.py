"""The affine autoregressive transform of inverse autoregressive flows (IAF).

``y = mean(x) + exp(log_scale(x)) * x``, where ``mean`` and ``log_scale`` come from an
autoregressive network (:class:`~vitorch.nn.AutoRegressiveNN`): entry ``i`` of both
depends only on the entries of ``x`` before ``i`` in the network's order. The Jacobian
``dy/dx`` is then triangular in that order with diagonal ``exp(log_scale)``, so

- the forward map (sampling, in a flow over a base distribution) is one network call;
- ``log|det dy/dx| = sum(log_scale)``;
- the inverse needs ``input_dim`` network calls, one per coordinate of the order.

A flow is therefore cheap to sample and to score *on its own samples* (the transform
remembers the last pair ``(x, y)`` and the log-scales it computed), and slow to score
arbitrary values. Reference: Kingma et al., "Improving Variational Inference with Inverse
Autoregressive Flow" (arXiv:1606.04934).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions.transforms import Transform
from torch.nn import functional as F

from ..nn.auto_reg_nn import AutoRegressiveNN
from . import constraints

__all__ = ["AffineAutoregressive", "affine_autoregressive"]


def _clamp_keep_gradient(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    # The value is clamped but the gradient is that of the identity, so a log-scale that
    # wanders past the bounds still gets pulled back by the loss.
    return x + (x.clamp(low, high) - x).detach()


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"AffineAutoregressive: {name} must be a number, got {value!r}")
    return float(value)


class AffineAutoregressive(Transform, nn.Module):
    """The bijection of inverse autoregressive flow, ``y = mean(x) + exp(log_scale(x)) * x``.

    It is both a ``torch.distributions.Transform`` (event_dim 1, on ``real_vector``) and an
    ``nn.Module``, so the network's weights are parameters of whatever module holds it; use
    it inside :class:`~vitorch.distributions.TransformedDistribution`.

    With ``stable=True`` the map is ``y = s * x + (1 - s) * mean(x)`` with
    ``s = sigmoid(logit(x) + sigmoid_bias)``, the variant Kingma et al. propose: its scales
    lie in ``(0, 1)``, easier to optimize, but each layer can only shrink its input.

    The transform caches its last ``(x, y)`` pair (``cache_size=1``) and the log-scales of
    that pair: scoring the draw just made costs nothing more; scoring any other value runs
    the sequential inverse (``input_dim`` network calls).

    :param autoregressive_nn: a callable returning ``(mean, log_scale)`` (or
        ``(mean, logit)`` when ``stable``) of the input's shape, autoregressive in the order
        of its ``permutation`` attribute (a 1-D tensor), e.g. an ``AutoRegressiveNN``.
    :param log_scale_min_clip: lower clamp of ``log_scale`` (not with ``stable``).
    :param log_scale_max_clip: upper clamp of ``log_scale`` (not with ``stable``).
    :param sigmoid_bias: added to the logit when ``stable``; positive values start the
        scales near 1.
    :param stable: use the gated (``sigmoid``) variant above.

    Example:
        >>> import torch
        >>> from vitorch.nn.auto_reg_nn import AutoRegressiveNN
        >>> t = AffineAutoregressive(AutoRegressiveNN(4, [16]))
        >>> x = torch.randn(3, 4)
        >>> y = t(x)
        >>> t.inv(y) is x  # the cached pair
        True
        >>> t.log_abs_det_jacobian(x, y).shape
        torch.Size([3])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1
    autoregressive = True

    def __init__(
        self,
        autoregressive_nn: Callable,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
        sigmoid_bias: float = 2.0,
        stable: bool = False,
    ) -> None:
        if not callable(autoregressive_nn):
            raise TypeError(
                f"AffineAutoregressive: autoregressive_nn must be callable (an "
                f"AutoRegressiveNN), got {type(autoregressive_nn).__name__}"
            )
        permutation = getattr(autoregressive_nn, "permutation", None)
        if not isinstance(permutation, torch.Tensor) or permutation.dim() != 1:
            raise TypeError(
                "AffineAutoregressive: autoregressive_nn must have a 1-D tensor attribute "
                "`permutation` (its order of the coordinates), as AutoRegressiveNN does"
            )
        low = _check_number(log_scale_min_clip, "log_scale_min_clip")
        high = _check_number(log_scale_max_clip, "log_scale_max_clip")
        if not low < high:
            raise ValueError(
                f"AffineAutoregressive: log_scale_min_clip must be below log_scale_max_clip, "
                f"got {low} and {high}"
            )
        if not isinstance(stable, bool):
            raise TypeError(f"AffineAutoregressive: stable must be a bool, got {stable!r}")
        super().__init__(cache_size=1)
        self.arn = autoregressive_nn
        self.log_scale_min_clip = low
        self.log_scale_max_clip = high
        self.sigmoid_bias = _check_number(sigmoid_bias, "sigmoid_bias")
        self.stable = stable
        # (x, y, log_scale) of the last map computed in either direction; matched by
        # identity, like torch's own (x, y) cache.
        self._cached_log_scale: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # Transform defines __eq__ (identity), which would leave the class unhashable; modules
    # must be hashable (named_modules keeps them in a set).
    def __hash__(self) -> int:
        return id(self)

    def with_cache(self, cache_size: int = 1) -> AffineAutoregressive:
        """This transform: it always caches its last pair (``cache_size=1``)."""
        if cache_size != 1:
            raise ValueError(
                f"AffineAutoregressive always caches one (x, y) pair; got cache_size={cache_size}"
            )
        return self

    # -- the map ----------------------------------------------------------------------------
    def _shift_log_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(shift, scale, log_scale)`` with ``y = shift + scale * x``, from one network call."""
        mean, raw = self.arn(x)
        if self.stable:
            logit = raw + self.sigmoid_bias
            scale = torch.sigmoid(logit)
            return (1 - scale) * mean, scale, F.logsigmoid(logit)
        log_scale = _clamp_keep_gradient(raw, self.log_scale_min_clip, self.log_scale_max_clip)
        return mean, torch.exp(log_scale), log_scale

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        shift, scale, log_scale = self._shift_log_scale(x)
        y = shift + scale * x
        self._cached_log_scale = (x, y, log_scale)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        # x = (y - shift(x)) / scale(x) where shift and scale at coordinate i read only the
        # coordinates before i in the order. Iterating x <- (y - shift(x)) / scale(x) from
        # x = 0 makes the k-th coordinate of the order exact after k + 1 passes, so
        # input_dim passes give x exactly. The last pass reads an x whose only inexact
        # entry is the last one of the order, which no output depends on: its log-scales
        # are those of the true x.
        x = torch.zeros_like(y)
        for _ in range(y.size(-1) - 1):
            shift, scale, _ = self._shift_log_scale(x)
            x = (y - shift) / scale
        shift, scale, log_scale = self._shift_log_scale(x)
        x = (y - shift) / scale
        self._cached_log_scale = (x, y, log_scale)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum(log_scale(x))`` over the last dim: cached when ``(x, y)`` was the last pair."""
        cached = self._cached_log_scale
        if cached is not None and cached[0] is x and cached[1] is y:
            log_scale = cached[2]
        else:
            log_scale = self._shift_log_scale(x)[2]
        return log_scale.sum(-1)

    def __getstate__(self) -> dict:
        # Cached tensors may carry autograd history, which neither pickle nor deepcopy take.
        state = nn.Module.__getstate__(self)
        state["_inv"] = None
        state["_cached_x_y"] = (None, None)
        state["_cached_log_scale"] = None
        return state


def affine_autoregressive(
    input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> AffineAutoregressive:
    """An :class:`AffineAutoregressive` over vectors of size ``input_dim``, network included.

    :param input_dim: size of the vectors.
    :param hidden_dims: hidden layer sizes of the :class:`~vitorch.nn.AutoRegressiveNN`
        (default ``[3 * input_dim + 1]``); its order is random.
    :param kwargs: ``log_scale_min_clip``, ``log_scale_max_clip``, ``sigmoid_bias``,
        ``stable``, passed to :class:`AffineAutoregressive`.
    """
    if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
        raise ValueError(f"affine_autoregressive: input_dim must be an int >= 1, got {input_dim!r}")
    if hidden_dims is None:
        hidden_dims = [3 * input_dim + 1]
    return AffineAutoregressive(AutoRegressiveNN(input_dim, hidden_dims), **kwargs)
