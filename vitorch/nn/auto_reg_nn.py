"""Masked autoregressive networks (MADE) for inverse autoregressive flows.

:class:`AutoRegressiveNN` is a multilayer perceptron whose weight matrices are multiplied
by fixed 0/1 masks, so that output ``i`` is a function of the inputs that come *before*
``i`` in an ordering of the coordinates (the ``permutation``) and of nothing else. Its
Jacobian is therefore strictly triangular once rows and columns are put in that order,
which is what makes the log-determinant of an autoregressive flow a plain sum.

The masks follow Germain et al., "MADE: Masked Autoencoder for Distribution Estimation"
(arXiv:1502.03509): every unit gets a *degree*. Input coordinate ``j`` has degree
``k + 1`` where ``k`` is its position in the ordering, hidden units have degrees in
``1 .. input_dim - 1``; a hidden unit sees the units of the layer below whose degree is at
most its own, and output ``i`` sees the units whose degree is *strictly* below the degree
of input ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["AutoRegressiveNN", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask`` on every call.

    :param in_features: size of the input.
    :param out_features: size of the output.
    :param mask: ``(out_features, in_features)`` tensor of zeros and ones; kept as a buffer
        (``mask``), so it moves with ``.to(...)`` and is saved in ``state_dict``.
    :param bias: whether the layer has a bias (never masked: it depends on no input).
    """

    def __init__(
        self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True
    ) -> None:
        super().__init__(in_features, out_features, bias)
        if mask.shape != (out_features, in_features):
            raise ValueError(
                f"MaskedLinear: mask must have shape ({out_features}, {in_features}), got "
                f"{tuple(mask.shape)}"
            )
        self.register_buffer("mask", mask.to(self.weight.dtype).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ (weight * mask).T + bias``."""
        return F.linear(x, self.weight * self.mask, self.bias)


def _check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"AutoRegressiveNN: {name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_int_list(value: object, name: str, minimum: int, what: str) -> list[int]:
    """``value`` as a non-empty list of ints ``>= minimum``; ``what`` explains the bound."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(
            f"AutoRegressiveNN: {name} must be a non-empty list of ints, got {value!r}"
        )
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(
                f"AutoRegressiveNN: every entry of {name} must be an int >= {minimum} "
                f"({what}), got {list(value)!r}"
            )
    return list(value)


def _check_permutation(permutation: object, input_dim: int) -> torch.Tensor:
    if permutation is None:
        # A random ordering per network: stacked flows then mix the coordinates.
        return torch.randperm(input_dim)
    p = torch.as_tensor(permutation)
    if (
        p.dim() != 1
        or p.numel() != input_dim
        or p.is_floating_point()
        or p.is_complex()
        or not torch.equal(torch.sort(p.long()).values, torch.arange(input_dim))
    ):
        raise ValueError(
            f"AutoRegressiveNN: permutation must be a 1-D integer tensor holding each of "
            f"0 .. {input_dim - 1} once (input_dim={input_dim}), got {permutation!r}"
        )
    return p.long().clone()


def _hidden_degrees(input_dim: int, hidden_dim: int) -> torch.Tensor:
    """Degrees of one hidden layer: ``1 .. input_dim - 1`` dealt out in turn.

    Dealing in turn (rather than in blocks) keeps every degree equally represented, so no
    output is starved of hidden units. With ``input_dim == 1`` there is no admissible
    degree; degree 0 units see no input and feed the (then constant) outputs.
    """
    if input_dim == 1:
        return torch.zeros(hidden_dim, dtype=torch.long)
    return torch.arange(hidden_dim) % (input_dim - 1) + 1


class AutoRegressiveNN(nn.Module):
    """A MADE network: outputs whose entry ``i`` depends only on inputs earlier in the order.

    For an input of shape ``batch + (input_dim,)`` the network returns, for each entry
    ``p`` of ``param_dims``, a tensor of shape ``batch + (input_dim,)`` when every entry of
    ``param_dims`` is 1, and ``batch + (p, input_dim)`` otherwise. It returns that tensor
    alone when ``param_dims`` has a single entry and a tuple of them otherwise (the default
    ``[1, 1]`` gives ``(mean, log_scale)`` for
    :class:`~vitorch.distributions.transforms.AffineAutoregressive`).

    Entry ``i`` of every output depends only on the inputs ``j`` with
    ``order[j] < order[i]``, where ``order`` inverts ``permutation``: ``permutation[0]`` is
    the first coordinate (its outputs are constants), ``permutation[1]`` the second, etc.

    :param input_dim: size of the input vector (``>= 1``).
    :param hidden_dims: sizes of the hidden layers, each ``>= input_dim`` so that every
        output can be connected.
    :param param_dims: number of outputs per coordinate for each parameter.
    :param permutation: the order of the coordinates, a permutation of
        ``range(input_dim)``; random (``torch.randperm``) by default.
    :param skip_connections: add a masked linear map from the input straight to the output.
    :param nonlinearity: activation between layers (none after the last).

    Example:
        >>> import torch
        >>> arn = AutoRegressiveNN(3, [10], permutation=torch.tensor([2, 0, 1]))
        >>> mean, log_scale = arn(torch.randn(5, 3))
        >>> mean.shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        param_dims: Sequence[int] = (1, 1),
        permutation: torch.Tensor | None = None,
        skip_connections: bool = False,
        nonlinearity: nn.Module | None = None,
    ) -> None:
        super().__init__()
        input_dim = _check_positive_int(input_dim, "input_dim")
        hidden_dims = _check_int_list(
            hidden_dims,
            "hidden_dims",
            input_dim,
            f"a hidden layer narrower than input_dim={input_dim} cannot connect every output",
        )
        param_dims = _check_int_list(param_dims, "param_dims", 1, "outputs per coordinate")
        if not isinstance(skip_connections, bool):
            raise TypeError(
                f"AutoRegressiveNN: skip_connections must be a bool, got {skip_connections!r}"
            )
        if nonlinearity is None:
            nonlinearity = nn.ReLU()
        if not callable(nonlinearity):
            raise TypeError(
                f"AutoRegressiveNN: nonlinearity must be a callable (an nn.Module such as "
                f"nn.ReLU()), got {type(nonlinearity).__name__}"
            )
        self.input_dim = input_dim
        self.hidden_dims = hidden_dims
        self.param_dims = param_dims
        self.count_params = len(param_dims)
        self.output_multiplier = sum(param_dims)
        self.all_ones = all(p == 1 for p in param_dims)
        ends = torch.tensor(param_dims).cumsum(0).tolist()
        self.param_slices = [slice(e - p, e) for p, e in zip(param_dims, ends)]

        self.permutation: torch.Tensor
        self.register_buffer("permutation", _check_permutation(permutation, input_dim))
        masks, mask_skip = self._masks()
        sizes = [input_dim, *hidden_dims, input_dim * self.output_multiplier]
        self.layers = nn.ModuleList(
            MaskedLinear(n_in, n_out, mask) for n_in, n_out, mask in zip(sizes, sizes[1:], masks)
        )
        self.skip_layer: MaskedLinear | None = None
        if skip_connections:
            self.skip_layer = MaskedLinear(input_dim, sizes[-1], mask_skip, bias=False)
        self.f = nonlinearity

    def _masks(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The masks of the layers (``out x in``) and of the skip connection."""
        dtype = torch.get_default_dtype()
        in_degree = torch.empty(self.input_dim, dtype=torch.long)
        in_degree[self.permutation] = torch.arange(1, self.input_dim + 1)
        # Output o is parameter o // input_dim of coordinate o % input_dim.
        out_degree = in_degree.repeat(self.output_multiplier)
        degrees = [in_degree] + [_hidden_degrees(self.input_dim, h) for h in self.hidden_dims]
        masks = [
            (d_out[:, None] >= d_in[None, :]).to(dtype) for d_in, d_out in zip(degrees, degrees[1:])
        ]
        masks.append((out_degree[:, None] > degrees[-1][None, :]).to(dtype))
        mask_skip = (out_degree[:, None] > in_degree[None, :]).to(dtype)
        return masks, mask_skip

    def get_permutation(self) -> torch.Tensor:
        """The order of the coordinates: ``permutation[k]`` is the ``k``-th one."""
        return self.permutation

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The parameters for each coordinate (see the class docstring for shapes)."""
        if x.dim() < 1 or x.size(-1) != self.input_dim:
            raise ValueError(
                f"AutoRegressiveNN: input must have shape (..., {self.input_dim}), got "
                f"{tuple(x.shape)}"
            )
        h = x
        for layer in self.layers[:-1]:
            h = self.f(layer(h))
        h = self.layers[-1](h)
        if self.skip_layer is not None:
            h = h + self.skip_layer(x)
        if self.output_multiplier == 1:
            return h
        h = h.reshape(x.shape[:-1] + (self.output_multiplier, self.input_dim))
        if self.count_params == 1:
            return h
        if self.all_ones:
            return tuple(h.unbind(-2))
        return tuple(h[..., s, :] for s in self.param_slices)
