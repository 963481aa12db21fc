"""Plain dense networks that output the parameters of a flow layer.

:class:`DenseNN` maps an input to one or more parameter tensors (a coupling layer's shift
and log-scale, a conditional spline's bin sizes); :class:`ConditionalDenseNN` also reads a
context vector, concatenated in front of the input, which is how conditional flows depend
on what they are conditioned on. :class:`ConditionalAutoRegressiveNN` is the masked
autoregressive network with such a context input. The layer names (``layers.<k>``) and
the output layouts are Pyro's, so state dicts move between the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .auto_reg_nn import AutoRegressiveNN, MaskedLinear

__all__ = ["ConditionalAutoRegressiveNN", "ConditionalDenseNN", "DenseNN"]


def _check_int(value: object, name: str, minimum: int, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{who}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_int_list(value: object, name: str, who: str) -> list[int]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) == 0
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ValueError(f"{who}: {name} must be a non-empty list of ints >= 1, got {value!r}")
    return list(value)


class ConditionalDenseNN(nn.Module):
    """A multilayer perceptron of ``cat([context, x])`` split into parameter tensors.

    The output has ``sum(param_dims)`` entries per input row. With a single entry in
    ``param_dims`` it is returned whole (shape ``batch + (param_dims[0],)``); otherwise
    it is returned as a tuple, entry ``k`` of shape ``batch + (param_dims[k],)`` (a size-1
    last dim for ``param_dims[k] == 1``). The batch shapes of ``x`` and ``context``
    broadcast.

    :param input_dim: size of ``x`` (``>= 0``; ``0`` leaves only the context).
    :param context_dim: size of the context (``>= 0``).
    :param hidden_dims: sizes of the hidden layers (non-empty).
    :param param_dims: sizes of the parameter tensors returned (default ``[1, 1]``).
    :param nonlinearity: activation between layers, none after the last (default ReLU).

    Example:
        >>> import torch
        >>> net = ConditionalDenseNN(3, 2, [16], param_dims=[1, 3])
        >>> a, b = net(torch.randn(5, 3), context=torch.randn(5, 2))
        >>> a.shape, b.shape
        (torch.Size([5, 1]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        nonlinearity: nn.Module | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        self.input_dim = _check_int(input_dim, "input_dim", 0, who)
        self.context_dim = _check_int(context_dim, "context_dim", 0, who)
        if self.input_dim + self.context_dim == 0:
            raise ValueError(f"{who}: input_dim and context_dim cannot both be 0")
        self.hidden_dims = _check_int_list(hidden_dims, "hidden_dims", who)
        self.param_dims = _check_int_list(param_dims, "param_dims", who)
        if nonlinearity is None:
            nonlinearity = nn.ReLU()
        if not callable(nonlinearity):
            raise TypeError(
                f"{who}: nonlinearity must be callable (e.g. nn.ReLU()), got "
                f"{type(nonlinearity).__name__}"
            )
        self.count_params = len(self.param_dims)
        self.output_multiplier = sum(self.param_dims)
        ends = torch.tensor(self.param_dims).cumsum(0).tolist()
        self.param_slices = [slice(e - p, e) for p, e in zip(self.param_dims, ends)]
        sizes = [self.input_dim + self.context_dim, *self.hidden_dims, self.output_multiplier]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.f = nonlinearity

    def forward(
        self, x: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The parameters for ``x`` given ``context`` (see the class docstring)."""
        who = type(self).__name__
        if x.dim() < 1 or x.size(-1) != self.input_dim:
            raise ValueError(
                f"{who}: x must have shape (..., {self.input_dim}), got {tuple(x.shape)}"
            )
        if context.dim() < 1 or context.size(-1) != self.context_dim:
            raise ValueError(
                f"{who}: context must have shape (..., {self.context_dim}), got "
                f"{tuple(context.shape)}"
            )
        batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        h = torch.cat(
            [context.expand(batch + (self.context_dim,)), x.expand(batch + (self.input_dim,))],
            dim=-1,
        )
        return self._forward(h)

    def _forward(self, h: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        for layer in self.layers[:-1]:
            h = self.f(layer(h))
        h = self.layers[-1](h)
        if self.count_params == 1:
            return h
        return tuple(h[..., s] for s in self.param_slices)


class DenseNN(ConditionalDenseNN):
    """A multilayer perceptron of ``x`` split into parameter tensors (no context).

    Outputs as :class:`ConditionalDenseNN`.

    :param input_dim: size of ``x`` (``>= 1``).
    :param hidden_dims: sizes of the hidden layers (non-empty).
    :param param_dims: sizes of the parameter tensors returned (default ``[1, 1]``).
    :param nonlinearity: activation between layers, none after the last (default ReLU).

    Example:
        >>> import torch
        >>> mean, log_scale = DenseNN(2, [8], param_dims=[3, 3])(torch.randn(4, 2))
        >>> mean.shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        nonlinearity: nn.Module | None = None,
    ) -> None:
        _check_int(input_dim, "input_dim", 1, "DenseNN")
        super().__init__(input_dim, 0, hidden_dims, param_dims, nonlinearity)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # type: ignore[override]
        """The parameters for ``x`` (see the class docstring)."""
        if x.dim() < 1 or x.size(-1) != self.input_dim:
            raise ValueError(
                f"DenseNN: x must have shape (..., {self.input_dim}), got {tuple(x.shape)}"
            )
        return self._forward(x)


class ConditionalAutoRegressiveNN(AutoRegressiveNN):
    """An :class:`~vitorch.nn.AutoRegressiveNN` that also reads a context vector.

    The context is concatenated in front of the input; every hidden unit of the first
    layer (and, with ``skip_connections``, every output) may read all of it, so outputs
    stay autoregressive in ``x`` while every output depends on the context (the masks
    are those of Pyro's network). Output shapes as
    ``AutoRegressiveNN``; the batch shapes of ``x`` and ``context`` broadcast.

    :param input_dim: size of ``x``.
    :param context_dim: size of the context (``>= 1``).
    :param hidden_dims: hidden sizes, each ``>= input_dim``.
    :param param_dims: outputs per coordinate for each parameter (default ``[1, 1]``).
    :param permutation: order of the coordinates (random by default).
    :param skip_connections: add a masked linear map from the inputs to the outputs.
    :param nonlinearity: activation between layers (default ReLU).

    Example:
        >>> import torch
        >>> net = ConditionalAutoRegressiveNN(3, 2, [8])
        >>> mean, log_scale = net(torch.randn(5, 3), context=torch.randn(2))
        >>> mean.shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        permutation: torch.Tensor | None = None,
        skip_connections: bool = False,
        nonlinearity: nn.Module | None = None,
    ) -> None:
        context_dim = _check_int(context_dim, "context_dim", 1, "ConditionalAutoRegressiveNN")
        super().__init__(
            input_dim, hidden_dims, param_dims, permutation, skip_connections, nonlinearity
        )
        self.context_dim = context_dim
        # Widen the layers that read the input by context columns that are never masked.
        first = self.layers[0]
        mask = torch.cat(
            [torch.ones_like(first.mask[:, :1]).expand(-1, context_dim), first.mask], 1
        )
        self.layers[0] = MaskedLinear(context_dim + self.input_dim, first.out_features, mask)
        if self.skip_layer is not None:
            skip = self.skip_layer
            mask = torch.cat(
                [torch.ones_like(skip.mask[:, :1]).expand(-1, context_dim), skip.mask], 1
            )
            self.skip_layer = MaskedLinear(
                context_dim + self.input_dim, skip.out_features, mask, bias=False
            )

    def _masks(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The masks over ``x``; hidden degrees run from 0, not 1 as without a context.

        A degree-0 hidden unit reads no coordinate of ``x``, only the context (its
        columns are added afterwards, unmasked), and feeds every output: so even the
        first coordinate's parameters depend on the context.
        """
        dtype = torch.get_default_dtype()
        in_degree = torch.empty(self.input_dim, dtype=torch.long)
        in_degree[self.permutation] = torch.arange(1, self.input_dim + 1)
        out_degree = in_degree.repeat(self.output_multiplier)
        degrees = [in_degree] + [torch.arange(h) % self.input_dim for h in self.hidden_dims]
        masks = [
            (d_out[:, None] >= d_in[None, :]).to(dtype) for d_in, d_out in zip(degrees, degrees[1:])
        ]
        masks.append((out_degree[:, None] > degrees[-1][None, :]).to(dtype))
        return masks, (out_degree[:, None] > in_degree[None, :]).to(dtype)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The parameters for each coordinate of ``x`` given ``context``."""
        who = "ConditionalAutoRegressiveNN"
        if x.dim() < 1 or x.size(-1) != self.input_dim:
            raise ValueError(
                f"{who}: x must have shape (..., {self.input_dim}), got {tuple(x.shape)}"
            )
        if context.dim() < 1 or context.size(-1) != self.context_dim:
            raise ValueError(
                f"{who}: context must have shape (..., {self.context_dim}), got "
                f"{tuple(context.shape)}"
            )
        batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        inputs = torch.cat(
            [context.expand(batch + (self.context_dim,)), x.expand(batch + (self.input_dim,))],
            dim=-1,
        )
        h = inputs
        for layer in self.layers[:-1]:
            h = self.f(layer(h))
        h = self.layers[-1](h)
        if self.skip_layer is not None:
            h = h + self.skip_layer(inputs)
        if self.output_multiplier == 1:
            return h
        h = h.reshape(batch + (self.output_multiplier, self.input_dim))
        if self.count_params == 1:
            return h
        if self.all_ones:
            return tuple(h.unbind(-2))
        return tuple(h[..., s, :] for s in self.param_slices)
