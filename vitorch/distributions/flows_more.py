"""More learnable flows: neural autoregressive, Sylvester, polynomial, matrix-exponential
and generalized channel permutation layers (Pyro's names, arguments and parameters).

Same conventions as :mod:`vitorch.distributions.flows`: each layer is a
:class:`~vitorch.distributions.flows.TransformModule` (conditional ones a
:class:`~vitorch.distributions.flows.ConditionalTransformModule`), computes
``log|det dy/dx|`` together with the map and keeps it with the last ``(x, y)`` pair.
Parameter and buffer names are Pyro's, so state dicts load both ways.

- :class:`BlockAutoregressive` (De Cao et al., 2019) and :class:`NeuralAutoregressive`
  (Huang et al., 2018), :class:`Polynomial` (Jaini et al., 2019) and :class:`Sylvester`
  (van den Berg et al., 2018): like Pyro, no inverse beyond the cached last pair.
- :class:`MatrixExponential` (Hoogeboom et al., 2020) and
  :class:`GeneralizedChannelPermute` (the 1x1 convolution of Kingma & Dhariwal, 2018):
  linear, inverted exactly.

Where Pyro's log-determinant is only approximate the one here is exact: Pyro's
Sylvester formula assumes a determinant that the layer's map does not have (the map is
Pyro's, its log-determinant computed in full), and Pyro's matrix exponential reports
``trace(M)`` for a truncated series (here ``log|det|`` of that truncated series, whose
inverse is then the exact one). Pyro's ``1e-8`` guards inside logarithms are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.distributions.transforms import SigmoidTransform, TanhTransform, Transform
from torch.nn import functional as F

from ..nn.auto_reg_nn import AutoRegressiveNN
from ..nn.dense_nn import ConditionalAutoRegressiveNN, DenseNN
from . import constraints
from .flows import (
    ConditionalTransformModule,
    Householder,
    TransformModule,
    _check_callable,
    _check_int,
    _default_hidden,
    _FlowTransform,
)
from .transforms_extra import ELUTransform, LeakyReLUTransform

__all__ = [
    "BlockAutoregressive",
    "ConditionalGeneralizedChannelPermute",
    "ConditionalMatrixExponential",
    "ConditionalNeuralAutoregressive",
    "ConditionedGeneralizedChannelPermute",
    "ConditionedMatrixExponential",
    "GeneralizedChannelPermute",
    "MaskedBlockLinear",
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

_ACTIVATIONS: dict[str, type[Transform]] = {
    "ELU": ELUTransform,
    "LeakyReLU": LeakyReLUTransform,
    "sigmoid": SigmoidTransform,
    "tanh": TanhTransform,
}


def _activation(name: Any, who: str) -> Transform:
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def _no_inverse(who: str) -> NotImplementedError:
    return NotImplementedError(
        f"{who} has no inverse (as in Pyro): only the output of its last forward call can be "
        f"inverted, from the cache"
    )


def _check_vector(v: torch.Tensor, n: int, who: str) -> None:
    if v.dim() < 1 or v.size(-1) != n:
        raise ValueError(f"{who}: input must have shape (..., {n}), got {tuple(v.shape)}")


# -- block neural autoregressive flow ------------------------------------------------------
class MaskedBlockLinear(nn.Module):
    """A linear layer whose weight is block lower-triangular with positive diagonal blocks.

    The weight has ``dim x dim`` blocks of size ``(out_features // dim, in_features //
    dim)``: blocks above the diagonal are zero, diagonal blocks are ``exp(_weight)`` and
    each row is then rescaled to norm ``exp(_diag_weight)`` (weight normalisation). Output
    block ``i`` thus depends on input blocks ``<= i`` only, increasingly on block ``i``.

    :param in_features: input size, a multiple of ``dim``.
    :param out_features: output size, a multiple of ``dim``.
    :param dim: number of blocks (the flow's ``input_dim``).
    """

    def __init__(self, in_features: int, out_features: int, dim: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.dim = in_features, out_features, dim
        rows, cols = out_features // dim, in_features // dim
        weight = torch.zeros(out_features, in_features)
        for i in range(dim):
            block_row = torch.empty(rows, (i + 1) * cols)
            weight[i * rows : (i + 1) * rows, : (i + 1) * cols] = nn.init.xavier_uniform_(block_row)
        self._weight = nn.Parameter(weight)
        self._diag_weight = nn.Parameter(torch.rand(out_features, 1).log())
        bound = 1.0 / math.sqrt(out_features)
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        block = torch.ones(rows, cols)
        self.mask_d: torch.Tensor
        self.mask_o: torch.Tensor
        self.register_buffer("mask_d", torch.kron(torch.eye(dim), block))
        self.register_buffer("mask_o", torch.kron(torch.ones(dim, dim).tril(-1), block))

    def get_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight, and the logs of its diagonal blocks (``dim x rows x cols``)."""
        v = torch.exp(self._weight) * self.mask_d + self._weight * self.mask_o
        sq_norm = (v * v).sum(-1, keepdim=True)
        w = self._diag_weight.exp() * v / sq_norm.sqrt()
        log_w = self._diag_weight + self._weight - 0.5 * sq_norm.log()
        shape = (self.dim, self.out_features // self.dim, self.in_features // self.dim)
        return w, log_w[self.mask_d.bool()].view(shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w x + bias, log diagonal blocks of w)``."""
        w, log_blocks = self.get_weights()
        return F.linear(x, w, self.bias), log_blocks


class BlockAutoregressive(_FlowTransform, TransformModule):
    """Block neural autoregressive flow (De Cao et al., 2019).

    A network of :class:`MaskedBlockLinear` layers and increasing activations, ``input_dim``
    blocks wide: output ``i`` depends on inputs ``<= i`` and increases with input ``i``,
    so the Jacobian is lower triangular with positive diagonal, whose log is tracked
    through the layers (a log-space product of the diagonal blocks). No inverse, as in
    Pyro.

    :param input_dim: size of the vectors.
    :param hidden_factors: hidden layer ``k`` has ``hidden_factors[k] * input_dim`` units.
    :param activation: ``"ELU"``, ``"LeakyReLU"``, ``"sigmoid"`` or ``"tanh"``.
    :param residual: ``None``, ``"normal"`` (``y = x + f(x)``) or ``"gated"``
        (``y = g x + (1 - g) f(x)``, ``g = sigmoid(gate)`` learnable).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    autoregressive = True

    def __init__(
        self,
        input_dim: int,
        hidden_factors: Sequence[int] = (8, 8),
        activation: str = "tanh",
        residual: str | None = None,
    ) -> None:
        who = "BlockAutoregressive"
        input_dim = _check_int(input_dim, "input_dim", 1, who)
        if (
            isinstance(hidden_factors, (str, bytes))
            or not isinstance(hidden_factors, Sequence)
            or len(hidden_factors) == 0
            or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in hidden_factors)
        ):
            raise ValueError(
                f"{who}: hidden_factors must be a non-empty list of ints >= 1, got "
                f"{hidden_factors!r}"
            )
        factors = list(hidden_factors)
        if residual not in (None, "normal", "gated"):
            raise ValueError(f"{who}: residual must be None, 'normal' or 'gated', got {residual!r}")
        super().__init__()
        self.T = _activation(activation, who)
        self.input_dim = input_dim
        self.residual = residual
        sizes = [input_dim] + [f * input_dim for f in factors] + [input_dim]
        self.layers = nn.ModuleList(
            MaskedBlockLinear(a, b, input_dim) for a, b in zip(sizes, sizes[1:])
        )
        if residual == "gated":
            self.gate = nn.Parameter(torch.randn(1))

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_vector(x, self.input_dim, "BlockAutoregressive")
        h = x
        # log_j[..., d, j]: log of d h_{d, j} / d x_d, h_{d, j} the j-th unit of block d.
        log_j: torch.Tensor | None = None
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            pre, log_blocks = layer(h)
            if log_j is None:
                log_j = log_blocks[..., 0]
            else:
                log_j = torch.logsumexp(log_blocks + log_j.unsqueeze(-2), dim=-1)
            if k < last:
                h = self.T(pre)
                pre_blocks = pre.unflatten(-1, (self.input_dim, -1))
                log_j = log_j + self.T.log_abs_det_jacobian(pre_blocks, None)
            else:
                h = pre
        log_diag = log_j[..., 0]
        if self.residual == "normal":
            h = h + x
            log_diag = F.softplus(log_diag)
        elif self.residual == "gated":
            g = torch.sigmoid(self.gate)
            h = g * x + (1 - g) * h
            log_diag = torch.logaddexp(F.logsigmoid(self.gate), F.logsigmoid(-self.gate) + log_diag)
        return h, log_diag.expand(h.shape).sum(-1)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise _no_inverse("BlockAutoregressive")


def block_autoregressive(input_dim: int, **kwargs: Any) -> BlockAutoregressive:
    """A :class:`BlockAutoregressive` (``hidden_factors``, ``activation``, ``residual``)."""
    return BlockAutoregressive(input_dim, **kwargs)


# -- neural autoregressive flow ------------------------------------------------------------
class NeuralAutoregressive(_FlowTransform, TransformModule):
    """Deep sigmoidal flow (Huang et al., 2018): a monotone one-hidden-layer net per entry.

    ``y_i = T^-1(sum_j w_ij T(a_ij x_i + b_ij))`` where the ``hidden_units`` weights
    ``a = softplus(.) > 0``, ``w = softmax(.)`` and ``b`` come from an autoregressive
    network of the earlier coordinates and ``T`` is an increasing activation. No
    inverse, as in Pyro.

    :param autoregressive_nn: callable ``x -> (a, w, b)``, each ``(..., hidden_units,
        input_dim)``, e.g. ``AutoRegressiveNN(input_dim, hidden, param_dims=[16] * 3)``.
    :param hidden_units: the width of the per-entry net.
    :param activation: ``"ELU"``, ``"LeakyReLU"``, ``"sigmoid"`` or ``"tanh"``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    autoregressive = True

    def __init__(
        self, autoregressive_nn: Callable, hidden_units: int = 16, activation: str = "sigmoid"
    ) -> None:
        who = "NeuralAutoregressive"
        hidden_units = _check_int(hidden_units, "hidden_units", 1, who)
        activation_t = _activation(activation, who)
        super().__init__()
        self.arn = _check_callable(autoregressive_nn, "autoregressive_nn", who)
        self.hidden_units = hidden_units
        self.T = activation_t

    def _params(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.arn(x)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise ValueError(
                "NeuralAutoregressive: autoregressive_nn must return 3 tensors (a, w, b), got "
                f"{type(out).__name__}"
            )
        params = [p.unsqueeze(-2) if self.hidden_units == 1 else p for p in out]
        for p in params:
            if p.dim() < 2 or p.shape[-2:] != (self.hidden_units, x.size(-1)):
                raise ValueError(
                    f"NeuralAutoregressive: autoregressive_nn outputs must have shape "
                    f"(..., {self.hidden_units}, {x.size(-1)}), got {tuple(p.shape)}"
                )
        return params

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_raw, w_raw, b = self._params(x)
        a = F.softplus(a_raw)
        log_w = F.log_softmax(w_raw, dim=-2)
        c = a * x.unsqueeze(-2) + b
        t_c = self.T(c)
        d = (log_w.exp() * t_c).sum(-2)
        y = self.T.inv(d)
        log_a = a.clamp(min=torch.finfo(a.dtype).tiny).log()
        log_dd_dx = torch.logsumexp(log_a + log_w + self.T.log_abs_det_jacobian(c, t_c), dim=-2)
        log_dy_dd = -self.T.log_abs_det_jacobian(y, d)
        return y, (log_dd_dx + log_dy_dd).sum(-1)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise _no_inverse("NeuralAutoregressive")


class ConditionalNeuralAutoregressive(ConditionalTransformModule):
    """:class:`NeuralAutoregressive` whose network also reads a context.

    :param autoregressive_nn: callable ``(x, context=c) -> (a, w, b)``, e.g. a
        :class:`~vitorch.nn.ConditionalAutoRegressiveNN`.
    :param kwargs: ``hidden_units``, ``activation``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, autoregressive_nn: Callable, **kwargs: Any) -> None:
        super().__init__()
        self.nn = _check_callable(autoregressive_nn, "autoregressive_nn", type(self).__name__)
        self.kwargs = kwargs
        NeuralAutoregressive(autoregressive_nn, **kwargs)  # checks the keyword arguments now

    def condition(self, context: torch.Tensor) -> NeuralAutoregressive:
        """The neural autoregressive map for ``context``."""
        return NeuralAutoregressive(partial(self.nn, context=context), **self.kwargs)


def _naf_args(input_dim: Any, hidden_dims: Any, width: Any, who: str) -> tuple[int, list[int]]:
    input_dim = _check_int(input_dim, "input_dim", 1, who)
    _check_int(width, "width", 1, who)
    return input_dim, _default_hidden(hidden_dims, [3 * input_dim + 1], who)


def neural_autoregressive(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    activation: str = "sigmoid",
    width: int = 16,
) -> NeuralAutoregressive:
    """A :class:`NeuralAutoregressive` with its :class:`~vitorch.nn.AutoRegressiveNN`.

    :param input_dim: size of the vectors.
    :param hidden_dims: hidden sizes of the network (default ``[3 * input_dim + 1]``).
    :param activation: as :class:`NeuralAutoregressive`.
    :param width: ``hidden_units`` of the per-entry net.
    """
    input_dim, hidden = _naf_args(input_dim, hidden_dims, width, "neural_autoregressive")
    arn = AutoRegressiveNN(input_dim, hidden, param_dims=[width] * 3)
    return NeuralAutoregressive(arn, hidden_units=width, activation=activation)


def conditional_neural_autoregressive(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    activation: str = "sigmoid",
    width: int = 16,
) -> ConditionalNeuralAutoregressive:
    """A :class:`ConditionalNeuralAutoregressive` with its network.

    Arguments as :func:`neural_autoregressive`, plus ``context_dim``, the context's size.
    """
    who = "conditional_neural_autoregressive"
    input_dim, hidden = _naf_args(input_dim, hidden_dims, width, who)
    context_dim = _check_int(context_dim, "context_dim", 1, who)
    arn = ConditionalAutoRegressiveNN(input_dim, context_dim, hidden, param_dims=[width] * 3)
    return ConditionalNeuralAutoregressive(arn, hidden_units=width, activation=activation)


# -- Sylvester flow ------------------------------------------------------------------------
class Sylvester(Householder):
    """Sylvester flow: ``y = x + tanh(x B + b) A`` with ``A = Q R``, ``B = S Q^T``.

    ``Q`` is the product of ``count_transforms`` Householder reflections (parameter
    ``u_unnormed``), ``R``, ``S`` upper triangular with diagonals ``tanh(R_diag)``,
    ``tanh(S_diag)`` (Pyro's parameterisation and row-vector layout). Pyro reports
    ``sum log(1 + tanh' R_ii S_ii)`` as the log-determinant, which is exact only when
    ``Q`` commutes with the diagonal of ``tanh'``; here it is ``log|det(I + diag(tanh')
    A B)|``, a ``D x D`` determinant per input. No inverse, as in Pyro.

    :param input_dim: size of the vectors.
    :param count_transforms: number of reflections in ``Q``.
    """

    volume_preserving = False

    def __init__(self, input_dim: int, count_transforms: int = 1) -> None:
        super().__init__(input_dim, count_transforms)
        for name in ("R_dense", "S_dense"):
            setattr(
                self, name, nn.Parameter(torch.empty(input_dim, input_dim).uniform_(-0.01, 0.01))
            )
        for name in ("R_diag", "S_diag", "b"):
            setattr(self, name, nn.Parameter(torch.empty(input_dim).uniform_(-0.01, 0.01)))
        self.triangular_mask: torch.Tensor
        self.register_buffer("triangular_mask", torch.ones(input_dim, input_dim).triu(1))

    def Q(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The orthogonal matrix: the reflections' product, first one leftmost."""
        u = self.u_unnormed / self.u_unnormed.norm(dim=-1, keepdim=True)
        q = torch.eye(self.input_dim, dtype=u.dtype, device=u.device)
        for ui in u:
            q = q - 2 * torch.outer(q @ ui, ui)
        return q

    def R(self) -> torch.Tensor:
        """Upper triangular, diagonal ``tanh(R_diag)``."""
        return self.R_dense * self.triangular_mask + torch.diag(torch.tanh(self.R_diag))

    def S(self) -> torch.Tensor:
        """Upper triangular, diagonal ``tanh(S_diag)``."""
        return self.S_dense * self.triangular_mask + torch.diag(torch.tanh(self.S_diag))

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_vector(x, self.input_dim, "Sylvester")
        q = self.Q()
        a, b = q @ self.R(), self.S() @ q.T
        act = torch.tanh(x @ b + self.b)
        y = x + act @ a
        # dy_j/dx_i = I + B diag(tanh') A, whose determinant is that of I + diag(tanh') A B.
        jac = torch.eye(self.input_dim, dtype=x.dtype, device=x.device) + (
            (1 - act * act).unsqueeze(-1) * (a @ b)
        )
        return y, torch.linalg.slogdet(jac)[1]

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise _no_inverse("Sylvester")


def sylvester(input_dim: int, count_transforms: int | None = None) -> Sylvester:
    """A :class:`Sylvester` (default ``input_dim // 2 + 1`` reflections)."""
    if count_transforms is None:
        count_transforms = _check_int(input_dim, "input_dim", 1, "sylvester") // 2 + 1
    return Sylvester(input_dim, count_transforms=count_transforms)


# -- polynomial flow -----------------------------------------------------------------------
class Polynomial(_FlowTransform, TransformModule):
    """Sum-of-squares polynomial flow (Jaini et al., 2019).

    ``y_i = c_i + sum_k integral_0^{x_i} (sum_r a_kri t^r)^2 dt``: an increasing
    polynomial of degree ``2 count_degree + 1`` in ``x_i`` whose coefficients ``a`` come
    from an autoregressive network of the earlier coordinates, so
    ``dy_i/dx_i = sum_k (sum_r a_kri x_i^r)^2``. No inverse, as in Pyro.

    :param autoregressive_nn: callable ``x -> a`` of shape ``(..., count_sum *
        (count_degree + 1), input_dim)``.
    :param input_dim: size of the vectors (parameter ``c``).
    :param count_degree: degree of each polynomial that is squared.
    :param count_sum: number of squares summed.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    autoregressive = True

    def __init__(
        self, autoregressive_nn: Callable, input_dim: int, count_degree: int, count_sum: int
    ) -> None:
        who = "Polynomial"
        input_dim = _check_int(input_dim, "input_dim", 1, who)
        count_degree = _check_int(count_degree, "count_degree", 0, who)
        count_sum = _check_int(count_sum, "count_sum", 1, who)
        super().__init__()
        self.arn = _check_callable(autoregressive_nn, "autoregressive_nn", who)
        self.input_dim = input_dim
        self.count_degree = count_degree
        self.count_sum = count_sum
        bound = 1.0 / math.sqrt(input_dim)
        self.c = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))
        powers = torch.arange(1.0, count_degree + 2)
        # power_mask[r, s] = r + s + 1: the power of x in the integral of x^r x^s.
        power_mask = powers + torch.arange(count_degree + 1.0).unsqueeze(-1)
        self.powers: torch.Tensor
        self.power_mask: torch.Tensor
        self.mask: torch.Tensor
        self.register_buffer("powers", powers)
        self.register_buffer("power_mask", power_mask)
        self.register_buffer("mask", power_mask.reciprocal())

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_vector(x, self.input_dim, "Polynomial")
        n = self.count_degree + 1
        a = self.arn(x)
        if a.dim() == x.dim() and n * self.count_sum == 1:
            a = a.unsqueeze(-2)
        if a.dim() < 2 or a.shape[-2:] != (n * self.count_sum, self.input_dim):
            raise ValueError(
                f"Polynomial: autoregressive_nn output must have shape (..., "
                f"{n * self.count_sum}, {self.input_dim}), got {tuple(a.shape)}"
            )
        a = a.unflatten(-2, (self.count_sum, n))  # (..., sum k, degree r, input_dim)
        xe = x.unsqueeze(-2).unsqueeze(-2)  # (..., 1, 1, input_dim)
        products = a.unsqueeze(-2) * a.unsqueeze(-3)  # (..., k, r, s, input_dim)
        # Divided by power_mask, not times its reciprocal ``mask`` (kept for Pyro's state
        # dict): a reciprocal rounded in float32 stays rounded after ``.double()``.
        integral = xe.pow(self.power_mask.unsqueeze(-1)) / self.power_mask.unsqueeze(-1)
        y = self.c + (products * integral.unsqueeze(-4)).sum((-4, -3, -2))
        squares = (a * xe.pow(self.powers.unsqueeze(-1) - 1)).sum(-2)  # (..., k, input_dim)
        return y, (squares * squares).sum(-2).log().sum(-1)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise _no_inverse("Polynomial")


def polynomial(input_dim: int, hidden_dims: Sequence[int] | None = None) -> Polynomial:
    """A :class:`Polynomial` (degree 4, 3 squares) with its network.

    :param input_dim: size of the vectors.
    :param hidden_dims: hidden sizes (default ``[10 * input_dim]``).
    """
    input_dim = _check_int(input_dim, "input_dim", 1, "polynomial")
    hidden = _default_hidden(hidden_dims, [10 * input_dim], "polynomial")
    count_degree, count_sum = 4, 3
    arn = AutoRegressiveNN(input_dim, hidden, param_dims=[(count_degree + 1) * count_sum])
    return Polynomial(arn, input_dim=input_dim, count_degree=count_degree, count_sum=count_sum)


# -- matrix exponential --------------------------------------------------------------------
def _check_exp_args(iterations: Any, normalization: Any, who: str) -> int:
    iterations = _check_int(iterations, "iterations", 1, who)
    if normalization in ("weight", "spectral"):
        raise NotImplementedError(
            f"{who}: normalization={normalization!r} is not implemented (nor in Pyro); use 'none'"
        )
    if normalization != "none":
        raise ValueError(
            f"{who}: normalization must be 'none' ('weight' and 'spectral' are not "
            f"implemented), got {normalization!r}"
        )
    return iterations


class ConditionedMatrixExponential(_FlowTransform):
    """``y = E x`` with ``E = sum_{k <= iterations} M^k / k!`` (truncated ``exp(M)``).

    ``log|det|`` is that of ``E`` and the inverse solves ``E x = y``, both exact for the
    truncated series (Pyro uses ``trace(M)`` and the series of ``-M``, which agree up to
    the truncation error).

    :param weights: ``M`` (``batch + (D, D)``) or a callable returning it.
    :param iterations: number of terms after the identity.
    :param normalization: only ``"none"``, as in Pyro.
    :param bound: unused (kept for Pyro's signature).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        weights: Callable | torch.Tensor | None = None,
        iterations: int = 8,
        normalization: str = "none",
        bound: float | None = None,
    ) -> None:
        self.iterations = _check_exp_args(iterations, normalization, type(self).__name__)
        super().__init__()
        if weights is not None:
            self.weights = weights
        self.normalization = normalization
        self.bound = bound

    def _exp_matrix(self) -> torch.Tensor:
        m = self.weights() if callable(self.weights) else self.weights
        term = torch.eye(m.size(-1), dtype=m.dtype, device=m.device).expand(m.shape)
        total = term
        for k in range(1, self.iterations + 1):
            term = term @ m / k
            total = total + term
        return total

    def _ldj(self, e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ldj = torch.linalg.slogdet(e)[1]
        return ldj.expand(torch.broadcast_shapes(ldj.shape, v.shape[:-1]))

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self._exp_matrix()
        _check_vector(x, e.size(-1), type(self).__name__)
        return (e @ x.unsqueeze(-1)).squeeze(-1), self._ldj(e, x)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self._exp_matrix()
        _check_vector(y, e.size(-1), type(self).__name__)
        x = torch.linalg.solve(e, y.unsqueeze(-1)).squeeze(-1)
        return x, self._ldj(e, y)


class MatrixExponential(ConditionedMatrixExponential, TransformModule):
    """The matrix exponential flow (Hoogeboom et al., 2020): ``y = exp(M) x``, ``M`` learnt.

    :param input_dim: size of the vectors (parameter ``weights``, ``input_dim x input_dim``).
    :param iterations: terms of the series after the identity.
    :param normalization: only ``"none"``.
    :param bound: unused (Pyro's signature).
    """

    def __init__(
        self,
        input_dim: int,
        iterations: int = 8,
        normalization: str = "none",
        bound: float | None = None,
    ) -> None:
        input_dim = _check_int(input_dim, "input_dim", 1, "MatrixExponential")
        super().__init__(iterations=iterations, normalization=normalization, bound=bound)
        bound_w = 1.0 / math.sqrt(input_dim)
        self.weights = nn.Parameter(torch.empty(input_dim, input_dim).uniform_(-bound_w, bound_w))


class ConditionalMatrixExponential(ConditionalTransformModule):
    """:class:`MatrixExponential` whose ``M`` a network computes from the context.

    :param input_dim: size of the vectors.
    :param nn: callable ``context -> M`` flattened (``(..., input_dim ** 2)``).
    :param iterations, normalization, bound: as :class:`MatrixExponential`.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        input_dim: int,
        nn: Callable,
        iterations: int = 8,
        normalization: str = "none",
        bound: float | None = None,
    ) -> None:
        who = type(self).__name__
        self.input_dim = _check_int(input_dim, "input_dim", 1, who)
        self.iterations = _check_exp_args(iterations, normalization, who)
        super().__init__()
        self.nn = _check_callable(nn, "nn", who)
        self.normalization = normalization
        self.bound = bound

    def _weights(self, context: torch.Tensor) -> torch.Tensor:
        w = self.nn(context)
        return w.view(w.shape[:-1] + (self.input_dim, self.input_dim))

    def condition(self, context: torch.Tensor) -> ConditionedMatrixExponential:
        """The linear map whose ``M`` the network gives for ``context``."""
        return ConditionedMatrixExponential(
            partial(self._weights, context), self.iterations, self.normalization, self.bound
        )


def matrix_exponential(
    input_dim: int, iterations: int = 8, normalization: str = "none", bound: float | None = None
) -> MatrixExponential:
    """A :class:`MatrixExponential` (for symmetry with the other helpers)."""
    return MatrixExponential(input_dim, iterations, normalization, bound)


def conditional_matrix_exponential(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    iterations: int = 8,
    normalization: str = "none",
    bound: float | None = None,
) -> ConditionalMatrixExponential:
    """A :class:`ConditionalMatrixExponential` with a :class:`~vitorch.nn.DenseNN`.

    :param hidden_dims: hidden sizes (default ``[10 * input_dim, 10 * input_dim]``).
    """
    who = "conditional_matrix_exponential"
    input_dim = _check_int(input_dim, "input_dim", 1, who)
    context_dim = _check_int(context_dim, "context_dim", 1, who)
    hidden = _default_hidden(hidden_dims, [10 * input_dim] * 2, who)
    hypernet = DenseNN(context_dim, hidden, param_dims=[input_dim * input_dim])
    return ConditionalMatrixExponential(input_dim, hypernet, iterations, normalization, bound)


# -- generalized channel permutation -------------------------------------------------------
def _permutation_matrix(permutation: Any, channels: int, who: str) -> torch.Tensor:
    p = torch.as_tensor(permutation)
    if (
        p.dim() != 1
        or p.is_floating_point()
        or p.is_complex()
        or p.dtype == torch.bool
        or not torch.equal(torch.sort(p.long()).values, torch.arange(channels))
    ):
        raise ValueError(
            f"{who}: permutation must be a 1-D integer tensor holding each of "
            f"0 .. {channels - 1} once (channels={channels}), got {permutation!r}"
        )
    return torch.eye(channels)[p.long()]


class ConditionedGeneralizedChannelPermute(_FlowTransform):
    """An invertible 1x1 convolution: ``y[c] = sum_c' W[c, c'] x[c']`` at every pixel.

    ``W = P L U`` with ``P`` a permutation matrix, ``L`` unit lower and ``U`` upper
    triangular, both read from ``LU`` (``L`` below its diagonal, ``U`` on and above).
    Inputs are ``(..., C, H, W)``; ``log|det| = H W sum log|U_ii|``.

    :param permutation: ``P``, a ``C x C`` permutation matrix.
    :param LU: ``batch + (C, C)``.
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    bijective = True

    def __init__(
        self, permutation: torch.Tensor | None = None, LU: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if permutation is not None:
            self.permutation = permutation
        if LU is not None:
            self.LU = LU

    @property
    def U_diag(self) -> torch.Tensor:
        """The diagonal of ``U``."""
        return self.LU.diagonal(dim1=-2, dim2=-1)

    @property
    def L(self) -> torch.Tensor:
        """Unit lower triangular."""
        eye = torch.eye(self.LU.size(-1), dtype=self.LU.dtype, device=self.LU.device)
        return self.LU.tril(-1) + eye

    @property
    def U(self) -> torch.Tensor:
        """Upper triangular."""
        return self.LU.triu()

    def _check(self, v: torch.Tensor) -> None:
        c = self.LU.size(-1)
        if v.dim() < 3 or v.size(-3) != c:
            raise ValueError(
                f"{type(self).__name__}: input must have shape (..., {c}, H, W), got "
                f"{tuple(v.shape)}"
            )

    def _ldj(self, v: torch.Tensor) -> torch.Tensor:
        ldj = v.size(-2) * v.size(-1) * self.U_diag.abs().log().sum(-1)
        return ldj.expand(torch.broadcast_shapes(ldj.shape, v.shape[:-3]))

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        w = self.permutation.to(x.dtype) @ self.L @ self.U
        return torch.einsum("...ij,...jhw->...ihw", w, x), self._ldj(x)

    def _backward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y)
        z = self.permutation.to(y.dtype).T @ y.flatten(-2)
        z = torch.linalg.solve_triangular(self.L, z, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(self.U, z, upper=True)
        return x.unflatten(-1, y.shape[-2:]), self._ldj(y)


class GeneralizedChannelPermute(ConditionedGeneralizedChannelPermute, TransformModule):
    """A learnt invertible 1x1 convolution (Glow's, in Pyro's ``P L U`` form).

    ``LU`` (a parameter) starts as the LU factors of a random orthogonal matrix and
    ``permutation`` (a buffer, the ``C x C`` matrix ``P``) as their pivots' permutation,
    or the given one.

    :param channels: number of channels ``C``.
    :param permutation: optional 1-D integer tensor, a permutation of ``range(C)``.
    """

    def __init__(self, channels: int = 3, permutation: torch.Tensor | None = None) -> None:
        who = "GeneralizedChannelPermute"
        channels = _check_int(channels, "channels", 1, who)
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        lu, pivots = torch.linalg.lu_factor(q)
        if permutation is None:
            p = torch.lu_unpack(lu, pivots)[0]
        else:
            p = _permutation_matrix(permutation, channels, who)
        self.permutation: torch.Tensor
        self.register_buffer("permutation", p)
        self.LU = nn.Parameter(lu)


class ConditionalGeneralizedChannelPermute(ConditionalTransformModule):
    """:class:`GeneralizedChannelPermute` whose ``LU`` a network computes from the context.

    :param nn: callable ``context -> LU`` flattened (``(..., channels ** 2)``).
    :param channels: number of channels.
    :param permutation: 1-D integer tensor (random by default); kept as the matrix buffer
        ``permutation``.
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    bijective = True

    def __init__(
        self, nn: Callable, channels: int = 3, permutation: torch.Tensor | None = None
    ) -> None:
        who = type(self).__name__
        channels = _check_int(channels, "channels", 1, who)
        super().__init__()
        self.nn = _check_callable(nn, "nn", who)
        self.channels = channels
        if permutation is None:
            permutation = torch.randperm(channels)
        self.permutation: torch.Tensor
        self.register_buffer("permutation", _permutation_matrix(permutation, channels, who))

    def condition(self, context: torch.Tensor) -> ConditionedGeneralizedChannelPermute:
        """The 1x1 convolution whose ``LU`` the network gives for ``context``."""
        lu = self.nn(context)
        lu = lu.view(lu.shape[:-1] + (self.channels, self.channels))
        return ConditionedGeneralizedChannelPermute(self.permutation, lu)


def generalized_channel_permute(**kwargs: Any) -> GeneralizedChannelPermute:
    """A :class:`GeneralizedChannelPermute` (``channels``, ``permutation`` as keywords)."""
    return GeneralizedChannelPermute(**kwargs)


def conditional_generalized_channel_permute(
    context_dim: int, channels: int = 3, hidden_dims: Sequence[int] | None = None
) -> ConditionalGeneralizedChannelPermute:
    """A :class:`ConditionalGeneralizedChannelPermute` with a :class:`~vitorch.nn.DenseNN`.

    :param context_dim: size of the context.
    :param channels: number of channels.
    :param hidden_dims: hidden sizes (default ``[10 * channels, 10 * channels]``).
    """
    who = "conditional_generalized_channel_permute"
    context_dim = _check_int(context_dim, "context_dim", 1, who)
    channels = _check_int(channels, "channels", 1, who)
    hidden = _default_hidden(hidden_dims, [10 * channels] * 2, who)
    hypernet = DenseNN(context_dim, hidden, param_dims=[channels * channels])
    return ConditionalGeneralizedChannelPermute(hypernet, channels)
