"""The flows of ``flows_more`` against autograd, exact inverses, closed forms and Pyro.

Every layer's ``log_abs_det_jacobian`` is compared with ``log|det|`` of the Jacobian that
autograd computes in float64 (autoregressive layers: the Jacobian must also be triangular
in their order). The linear layers' inverses are checked on fresh tensors (so no cache
answers); the others must refuse a fresh tensor and invert their last output. Densities
of flows must integrate to one over a grid. Pyro cross-checks (state dicts loaded both
ways, then same outputs) skip when pyro-ppl is absent.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vitorch.distributions as dist
from vitorch.distributions.flows_more import (
    BlockAutoregressive,
    ConditionalGeneralizedChannelPermute,
    ConditionalMatrixExponential,
    ConditionalNeuralAutoregressive,
    ConditionedGeneralizedChannelPermute,
    ConditionedMatrixExponential,
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

D = 3
C = 2  # context size
DOUBLE = torch.float64


def _perturb(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """Move the parameters away from their (often near-identity) initial values."""
    with torch.no_grad():
        for p in module.parameters():
            step = scale / math.sqrt(p.shape[-1]) if p.dim() == 2 else scale
            p.add_(step * torch.randn_like(p))
    return module


class _Conditioned(nn.Module):
    """A conditional layer made plain by a fixed context (float64)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.context = torch.randn(C, dtype=DOUBLE)

    def __call__(self, *args):  # type: ignore[override]
        return self.layer.condition(self.context)


def _make(name: str):
    """``(transform, event shape, autoregressive order or None)`` in float64."""
    torch.manual_seed(hash(name) % 1000)
    if name.startswith("bnaf"):
        _, act, res = name.split("-")
        t = BlockAutoregressive(D, [2, 3], activation=act, residual=None if res == "x" else res)
        return _perturb(t).double(), (D,), torch.arange(D)
    if name.startswith("naf"):
        act = name.split("-")[1]
        t = _perturb(neural_autoregressive(D, activation=act, width=4)).double()
        return t, (D,), t.arn.permutation
    if name == "cond-naf":
        layer = _perturb(conditional_neural_autoregressive(D, C, width=4)).double()
        return _Conditioned(layer)(), (D,), layer.nn.permutation
    if name == "polynomial":
        t = _perturb(polynomial(D), 0.1).double()
        return t, (D,), t.arn.permutation
    if name == "sylvester":
        return _perturb(Sylvester(D, 2), 1.0).double(), (D,), None
    if name == "matrix-exp":
        return _perturb(MatrixExponential(D, iterations=3)).double(), (D,), None
    if name == "cond-matrix-exp":
        layer = _perturb(conditional_matrix_exponential(D, C, iterations=4)).double()
        return _Conditioned(layer)(), (D,), None
    if name == "gcp":
        return _perturb(GeneralizedChannelPermute(3)).double(), (3, 2, 2), None
    if name == "cond-gcp":
        layer = _perturb(conditional_generalized_channel_permute(C, channels=3)).double()
        return _Conditioned(layer)(), (3, 1, 2), None
    raise KeyError(name)


NAMES = [
    "bnaf-tanh-x",
    "bnaf-sigmoid-normal",
    "bnaf-ELU-gated",
    "bnaf-LeakyReLU-x",
    "naf-sigmoid",
    "naf-tanh",
    "naf-ELU",
    "naf-LeakyReLU",
    "cond-naf",
    "polynomial",
    "sylvester",
    "matrix-exp",
    "cond-matrix-exp",
    "gcp",
    "cond-gcp",
]
LINEAR = ["matrix-exp", "cond-matrix-exp", "gcp", "cond-gcp"]


@pytest.mark.parametrize("name", NAMES)
def test_log_abs_det_jacobian_is_log_det_of_the_autograd_jacobian(name):
    t, shape, order = _make(name)
    x = torch.randn((4,) + shape, dtype=DOUBLE)
    y = t(x)
    assert y.shape == x.shape
    ldj = t.log_abs_det_jacobian(x, y)
    assert ldj.shape == (4,)
    # Recomputed for a fresh pair, too.
    torch.testing.assert_close(t.log_abs_det_jacobian(x.clone(), y.clone()), ldj)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(
            lambda v: t(v.reshape(shape)).reshape(-1), x[i].reshape(-1)
        )
        expected = torch.linalg.slogdet(jac)[1]
        if order is not None:  # output k of the order reads inputs <= k only
            ordered = jac[order][:, order]
            assert torch.equal(ordered.triu(1), torch.zeros_like(ordered))
            assert (ordered.diagonal() > 0).all()
            # Exact for a triangular matrix (LU pivoting loses digits when the entries
            # below the diagonal dwarf it).
            expected = ordered.diagonal().log().sum()
        torch.testing.assert_close(ldj[i], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_layers_invert_fresh_tensors_exactly(name):
    t, shape, _ = _make(name)
    x = torch.randn((5,) + shape, dtype=DOUBLE)
    y = t(x)
    x_back = t.inv(y.clone())
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t(x_back.clone()), y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        t.inv.log_abs_det_jacobian(y.clone(), x_back), -t.log_abs_det_jacobian(x, y)
    )


@pytest.mark.parametrize("name", [n for n in NAMES if n not in LINEAR])
def test_layers_without_inverse_invert_only_their_last_output(name):
    t, shape, _ = _make(name)
    x = torch.randn((2,) + shape, dtype=DOUBLE)
    y = t(x)
    assert t.inv(y) is x
    with pytest.raises(NotImplementedError, match="has no inverse"):
        t.inv(y.clone())


def test_matrix_exponential_is_the_truncated_series_and_converges_to_matrix_exp():
    torch.manual_seed(0)
    t = MatrixExponential(D, iterations=2).double()
    m = t.weights.detach()
    x = torch.randn(4, D, dtype=DOUBLE)
    e = torch.eye(D, dtype=DOUBLE) + m + m @ m / 2
    torch.testing.assert_close(t(x), x @ e.T)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, t(x)), torch.logdet(e).expand(4))
    t30 = MatrixExponential(D, iterations=30).double()
    t30.load_state_dict(t.state_dict())
    torch.testing.assert_close(t30(x), x @ torch.linalg.matrix_exp(m).T)
    torch.testing.assert_close(t30.log_abs_det_jacobian(x, t30(x)), m.trace().expand(4))


def test_conditioned_matrix_exponential_takes_a_batch_of_matrices():
    m = torch.stack([torch.diag(torch.tensor([0.5, -1.0])), torch.tensor([[0, 1.0], [-1.0, 0]])])
    t = ConditionedMatrixExponential(m.double(), iterations=40)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=DOUBLE)
    y = t(x)
    rotation = torch.tensor([[math.cos(1), math.sin(1)], [-math.sin(1), math.cos(1)]], dtype=DOUBLE)
    scale = torch.tensor([math.exp(0.5), math.exp(-1)], dtype=DOUBLE)
    expected = torch.stack([x[0] * scale, rotation @ x[1]])
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), torch.tensor([-0.5, 0.0]).double())


def test_generalized_channel_permute_is_a_1x1_convolution_with_weight_plu():
    lu = torch.tensor([[2.0, 1.0, -1.0], [0.5, -3.0, 2.0], [1.0, -2.0, 0.5]], dtype=DOUBLE)
    perm = torch.tensor([2, 0, 1])
    t = ConditionedGeneralizedChannelPermute(torch.eye(3, dtype=DOUBLE)[perm], lu)
    low = torch.tensor([[1.0, 0, 0], [0.5, 1, 0], [1, -2, 1]], dtype=DOUBLE)
    up = torch.tensor([[2.0, 1, -1], [0, -3, 2], [0, 0, 0.5]], dtype=DOUBLE)
    w = torch.eye(3, dtype=DOUBLE)[perm] @ low @ up
    x = torch.randn(2, 3, 4, 5, dtype=DOUBLE)
    y = t(x)
    torch.testing.assert_close(y, (x.permute(0, 2, 3, 1) @ w.T).permute(0, 3, 1, 2))
    torch.testing.assert_close(
        t.log_abs_det_jacobian(x, y), torch.full((2,), 20 * math.log(3.0), dtype=DOUBLE)
    )
    # Given permutation: the buffer is its matrix.
    g = GeneralizedChannelPermute(channels=3, permutation=perm)
    torch.testing.assert_close(g.permutation, torch.eye(3)[perm])


def test_neural_autoregressive_with_one_unit_and_sigmoid_is_affine():
    a, b = torch.tensor([[0.3, -1.2]], dtype=DOUBLE), torch.tensor([[0.7, 2.0]], dtype=DOUBLE)

    def arn(x):
        return a, torch.zeros_like(a), b

    t = NeuralAutoregressive(arn, hidden_units=1)
    x = torch.randn(5, 2, dtype=DOUBLE)
    scale = torch.nn.functional.softplus(a)
    torch.testing.assert_close(t(x), scale * x + b)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, t(x)), scale.log().sum().expand(5))


def test_polynomial_of_degree_zero_is_affine_with_slope_sum_of_squares():
    coefs = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=DOUBLE)  # (count_sum, input_dim)
    t = Polynomial(lambda x: coefs, input_dim=2, count_degree=0, count_sum=2).double()
    x = torch.randn(5, 2, dtype=DOUBLE)
    slope = (coefs**2).sum(0)
    torch.testing.assert_close(t(x), t.c + slope * x)
    # Degree 1, one square: y = c + a0^2 x + a0 a1 x^2 + a1^2 x^3 / 3.
    a = torch.tensor([[0.5], [-2.0]], dtype=DOUBLE)
    t1 = Polynomial(lambda x: a, input_dim=1, count_degree=1, count_sum=1).double()
    x = torch.linspace(-2, 2, 7, dtype=DOUBLE).unsqueeze(-1)
    expected = t1.c + 0.25 * x - 1.0 * x**2 + 4.0 * x**3 / 3
    torch.testing.assert_close(t1(x), expected)
    torch.testing.assert_close(t1.log_abs_det_jacobian(x, t1(x)), ((0.5 - 2 * x) ** 2).log()[:, 0])


def _integral_over_image(t, x_grid: torch.Tensor) -> float:
    """``int p_Y(y) dy`` on the image of a fine grid of a monotone 1-D flow."""
    base = dist.Normal(torch.zeros(1, dtype=DOUBLE), torch.ones(1, dtype=DOUBLE)).to_event(1)
    flow = dist.TransformedDistribution(base, [t])
    y = t(x_grid)
    density = flow.log_prob(y).exp()
    return torch.trapezoid(density, y[:, 0]).item()


@pytest.mark.parametrize(
    "make",
    [
        lambda: BlockAutoregressive(1, [4], residual="gated"),
        lambda: neural_autoregressive(1, activation="tanh"),
        lambda: polynomial(1),
        lambda: sylvester(1),
    ],
)
def test_one_dimensional_flow_density_integrates_to_one(make):
    torch.manual_seed(1)
    t = _perturb(make(), 0.2).double()
    x = torch.linspace(-9, 9, 40001, dtype=DOUBLE).unsqueeze(-1)
    assert _integral_over_image(t, x) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("which", ["matrix-exp", "gcp"])
def test_two_dimensional_linear_flow_density_integrates_to_one(which):
    torch.manual_seed(2)
    if which == "matrix-exp":
        t, shape = _perturb(MatrixExponential(2, iterations=5)).double(), (2,)
    else:
        t, shape = _perturb(GeneralizedChannelPermute(2)).double(), (2, 1, 1)
    base = dist.Normal(torch.zeros(shape, dtype=DOUBLE), 1.0).to_event(len(shape))
    flow = dist.TransformedDistribution(base, [t])
    g = torch.linspace(-15, 15, 301, dtype=DOUBLE)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape((-1,) + shape)
    density = flow.log_prob(grid).exp().reshape(301, 301)
    step = (g[1] - g[0]).item()
    assert density.sum().item() * step**2 == pytest.approx(1.0, abs=1e-6)


def test_conditional_layers_batch_over_contexts_and_depend_on_them():
    torch.manual_seed(3)
    context = torch.randn(4, C)
    x = torch.randn(4, D)
    for layer in [
        conditional_neural_autoregressive(D, C),
        conditional_matrix_exponential(D, C),
    ]:
        t = layer.condition(context)
        y = t(x)
        assert y.shape == (4, D) and t.log_abs_det_jacobian(x, y).shape == (4,)
        # Row i uses context i alone.
        torch.testing.assert_close(y[1], layer.condition(context[1])(x[1]), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(y, layer.condition(context.flip(0))(x))
    gcp = conditional_generalized_channel_permute(C, channels=2)
    x = torch.randn(4, 2, 3, 3)
    t = gcp.condition(context)
    y = t(x)
    assert t.log_abs_det_jacobian(x, y).shape == (4,)
    torch.testing.assert_close(t.inv(y.clone()), x, rtol=1e-4, atol=1e-4)


def test_every_parameter_gets_a_gradient_from_the_flow_log_prob():
    torch.manual_seed(4)
    for t in [
        block_autoregressive(D, residual="gated"),
        neural_autoregressive(D),
        polynomial(D),
        sylvester(D),
        matrix_exponential(D),
    ]:
        base = dist.Normal(torch.zeros(D), torch.ones(D)).to_event(1)
        flow = dist.TransformedDistribution(base, [t])
        target = dist.Normal(torch.ones(D), 2.0).to_event(1)
        y = flow.rsample((8,))
        (flow.log_prob(y) - target.log_prob(y)).sum().backward()  # a KL estimate
        for name, p in t.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (type(t).__name__, name)


def test_state_dict_names_are_pyros():
    torch.manual_seed(5)
    assert set(BlockAutoregressive(2, [2], residual="gated").state_dict()) == {
        "gate",
        *(
            f"layers.{k}.{n}"
            for k in range(2)
            for n in ("_weight", "_diag_weight", "bias", "mask_d", "mask_o")
        ),
    }
    assert set(Sylvester(2).state_dict()) == {
        "u_unnormed",
        "R_dense",
        "S_dense",
        "R_diag",
        "S_diag",
        "b",
        "triangular_mask",
    }
    assert {"c", "powers", "power_mask", "mask"} <= set(polynomial(2).state_dict())
    assert set(matrix_exponential(2).state_dict()) == {"weights"}
    assert set(generalized_channel_permute(channels=2).state_dict()) == {"permutation", "LU"}
    assert isinstance(sylvester(4), Sylvester) and sylvester(4).u_unnormed.shape == (3, 4)


def test_domains_and_event_dims():
    assert BlockAutoregressive(2).domain.event_dim == 1
    assert neural_autoregressive(2).codomain.event_dim == 1
    assert GeneralizedChannelPermute().domain.event_dim == 3
    assert ConditionalGeneralizedChannelPermute(lambda c: c, 2).codomain.event_dim == 3
    assert MatrixExponential(2).bijective and not Sylvester(2).volume_preserving


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: BlockAutoregressive(2, hidden_factors=[0]), ValueError, "hidden_factors"),
        (lambda: BlockAutoregressive(2, activation="relu"), ValueError, "activation must be"),
        (lambda: BlockAutoregressive(2, residual="skip"), ValueError, "residual must be"),
        (lambda: BlockAutoregressive(0), ValueError, "input_dim must be an int >= 1, got 0"),
        (lambda: NeuralAutoregressive(3), TypeError, "autoregressive_nn must be callable"),
        (lambda: neural_autoregressive(2, width=0), ValueError, "width must be"),
        (lambda: ConditionalNeuralAutoregressive(abs, activation="x"), ValueError, "activation"),
        (lambda: MatrixExponential(2, iterations=0), ValueError, "iterations must be"),
        (lambda: MatrixExponential(2, normalization="spectral"), NotImplementedError, "spectral"),
        (lambda: MatrixExponential(2, normalization="l2"), ValueError, "normalization must be"),
        (lambda: ConditionalMatrixExponential(2, None), TypeError, "nn must be callable"),
        (lambda: conditional_matrix_exponential(2, 0), ValueError, "context_dim"),
        (
            lambda: GeneralizedChannelPermute(3, permutation=torch.tensor([0, 0, 1])),
            ValueError,
            "permutation must be",
        ),
        (lambda: Polynomial(abs, 2, count_degree=-1, count_sum=1), ValueError, "count_degree"),
        (lambda: sylvester(2.5), ValueError, "input_dim"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_input_shapes_raise_clear_errors():
    with pytest.raises(
        ValueError, match=r"BlockAutoregressive: input must have shape \(\.\.\., 3\)"
    ):
        BlockAutoregressive(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"Sylvester: input must have shape"):
        Sylvester(3)(torch.randn(2))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        GeneralizedChannelPermute(3)(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="MatrixExponential: input must have shape"):
        MatrixExponential(3)(torch.randn(5, 2))
    with pytest.raises(ValueError, match="must return 3 tensors"):
        NeuralAutoregressive(lambda x: x)(torch.randn(2, 3))


# -- Pyro cross-checks ---------------------------------------------------------------------
def _same_parameters(ours: nn.Module, theirs: nn.Module) -> None:
    """Perturbed Pyro parameters into ours, and back (both loads strict)."""
    _perturb(theirs)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


def test_pyro_cross_check_same_parameters_same_outputs():
    pyro = pytest.importorskip("pyro")
    T = pyro.distributions.transforms
    torch.manual_seed(6)
    pairs = [
        (BlockAutoregressive(D, [2, 2], "tanh", "gated"), T.BlockAutoregressive(D, [2, 2], "tanh", "gated")),
        (block_autoregressive(D, residual="normal"), T.block_autoregressive(D, residual="normal")),
        (neural_autoregressive(D, activation="ELU", width=3), T.neural_autoregressive(D, activation="ELU", width=3)),
        (neural_autoregressive(D), T.neural_autoregressive(D)),
        (polynomial(D), T.polynomial(D)),
        (matrix_exponential(D, iterations=25), T.matrix_exponential(D, iterations=25)),
        (Sylvester(1, 1), T.Sylvester(1, 1)),
    ]  # fmt: skip
    for ours, theirs in pairs:
        _same_parameters(ours, theirs)
        ours.double(), theirs.double()
        x = torch.randn(6, ours.input_dim if hasattr(ours, "input_dim") else D, dtype=DOUBLE)
        y_ours, y_theirs = ours(x), theirs(x)
        torch.testing.assert_close(y_ours, y_theirs, rtol=1e-6, atol=1e-6)
        # Pyro's ldj keeps 1e-8 guards inside logs (and trace(M) for the truncated series).
        torch.testing.assert_close(
            ours.log_abs_det_jacobian(x, y_ours),
            theirs.log_abs_det_jacobian(x, y_theirs).expand(6),
            rtol=1e-6,
            atol=1e-6,
        )
    # Sylvester with several reflections: same map (float32: Pyro's Q is float32 only).
    ours, theirs = Sylvester(4, 3), T.Sylvester(4, 3)
    _same_parameters(ours, theirs)
    x = torch.randn(5, 4)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    # Linear layers: same inverse too.
    ours, theirs = (
        generalized_channel_permute(channels=3),
        T.generalized_channel_permute(channels=3),
    )
    _same_parameters(ours, theirs)
    x = torch.randn(2, 3, 4, 4, dtype=DOUBLE)
    ours.double(), theirs.double()
    torch.testing.assert_close(ours(x), theirs(x))
    y = torch.randn(2, 3, 4, 4, dtype=DOUBLE)
    torch.testing.assert_close(ours.inv(y), theirs.inv(y))
    torch.testing.assert_close(ours.log_abs_det_jacobian(x, y), theirs.log_abs_det_jacobian(x, y))
    ours, theirs = matrix_exponential(D, iterations=25), T.matrix_exponential(D, iterations=25)
    _same_parameters(ours, theirs)
    y = torch.randn(3, D)
    torch.testing.assert_close(ours.inv(y), theirs.inv(y), rtol=1e-5, atol=1e-5)


def test_pyro_cross_check_conditional_layers():
    pyro = pytest.importorskip("pyro")
    T = pyro.distributions.transforms
    torch.manual_seed(7)
    context = torch.randn(5, C, dtype=DOUBLE)
    pairs = [
        (conditional_neural_autoregressive(D, C, width=4), T.conditional_neural_autoregressive(D, C, width=4), (D,)),
        (conditional_matrix_exponential(D, C, iterations=25), T.conditional_matrix_exponential(D, C, iterations=25), (D,)),
        (conditional_generalized_channel_permute(C, 2), T.conditional_generalized_channel_permute(C, 2), (2, 3, 3)),
    ]  # fmt: skip
    for ours, theirs, shape in pairs:
        _same_parameters(ours, theirs)
        ours.double(), theirs.double()
        ctx = context[0] if len(shape) == 3 else context  # Pyro's LU must be unbatched there
        x = torch.randn((5,) + shape, dtype=DOUBLE)
        t_ours, t_theirs = ours.condition(ctx), theirs.condition(ctx)
        y_ours, y_theirs = t_ours(x), t_theirs(x)
        torch.testing.assert_close(y_ours, y_theirs, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(
            t_ours.log_abs_det_jacobian(x, y_ours),
            t_theirs.log_abs_det_jacobian(x, y_theirs).expand(5),
            rtol=1e-6,
            atol=1e-6,
        )
