"""Normalizing-flow layers against autograd, exact inverses and densities known exactly.

Every layer's ``log_abs_det_jacobian`` is compared with ``log|det|`` of the Jacobian that
autograd computes in float64 (elementwise layers: the Jacobian must also be diagonal), on
inputs that reach both inside and outside a spline's box. Inverses are checked both ways
on fresh tensors (so no cache answers). Densities of flows are checked by numerical
integration over a grid (they must integrate to one, which needs inverse and
log-Jacobian to agree) and against the change of variables written out by hand. Pyro
cross-checks (same parameters -> same values) skip when pyro-ppl is absent.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import vitorch
import vitorch.distributions as dist
from vitorch.distributions.flows import (
    AffineCoupling,
    BatchNorm,
    ComposeTransformModule,
    ConditionalComposeTransformModule,
    ConditionalSpline,
    ConditionalTransformedDistribution,
    ConditionalTransformModule,
    Householder,
    Permute,
    Planar,
    Radial,
    Spline,
    SplineCoupling,
    TransformModule,
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
from vitorch.nn.dense_nn import ConditionalAutoRegressiveNN, ConditionalDenseNN, DenseNN

D = 4
C = 3  # context size
DOUBLE = torch.float64


def _perturb(module: nn.Module, scale: float = 0.5) -> None:
    """Move every parameter away from its (often near-identity) initial value.

    Weight matrices move by ``scale / sqrt(fan_in)``, so a network's outputs move by about
    ``scale`` whatever its width: enough for a clearly nonlinear map, not so much that
    the splines' bins collapse to their minimum size (where inverses lose digits).
    """
    with torch.no_grad():
        for p in module.parameters():
            step = scale / math.sqrt(p.shape[-1]) if p.dim() == 2 else scale
            p.add_(step * torch.randn_like(p))


def _context() -> torch.Tensor:
    return torch.randn(C, dtype=DOUBLE)


def _conditioned(make):
    """A factory conditioning a conditional layer (moved to float64) on a fixed context."""

    def build():
        cond = make().double()
        _perturb(cond)
        return cond.condition(_context())

    return build


def _plain(make):
    def build():
        t = make().double()
        _perturb(t)
        return t

    return build


def _batchnorm_eval():
    bn = BatchNorm(D).double()
    with torch.no_grad():
        bn.gamma.uniform_(0.5, 2.0)
        bn.beta.normal_()
        bn.moving_mean.normal_()
        bn.moving_variance.uniform_(0.5, 2.0)
    return bn.eval()


# (name, factory, event_dim): every bijective layer, in float64.
LAYERS = [
    ("affine_coupling", _plain(lambda: affine_coupling(D)), 1),
    ("affine_coupling_split1", _plain(lambda: affine_coupling(D, split_dim=1)), 1),
    ("spline_linear", _plain(lambda: spline(D, count_bins=5)), 0),
    ("spline_quadratic", _plain(lambda: spline(D, count_bins=5, order="quadratic")), 0),
    ("spline_coupling", _plain(lambda: spline_coupling(D, count_bins=5)), 1),
    (
        "spline_coupling_quadratic_identity",
        _plain(
            lambda: SplineCoupling(
                D, 1, DenseNN(1, [8], [3 * 5, 3 * 5, 3 * 4]), 5, 3.0, "quadratic", identity=True
            )
        ),
        1,
    ),
    ("spline_autoregressive", _plain(lambda: spline_autoregressive(D, count_bins=5)), 1),
    (
        "spline_autoregressive_quadratic",
        _plain(lambda: spline_autoregressive(D, [12], count_bins=4, order="quadratic")),
        1,
    ),
    ("planar", _plain(lambda: planar(D)), 1),
    ("radial", _plain(lambda: radial(D)), 1),
    ("householder", _plain(lambda: householder(D, count_transforms=3)), 1),
    ("permute", lambda: permute(D), 1),
    ("batchnorm_eval", _batchnorm_eval, 0),
    ("conditional_affine_coupling", _conditioned(lambda: conditional_affine_coupling(D, C)), 1),
    ("conditional_spline", _conditioned(lambda: conditional_spline(D, C, count_bins=5)), 0),
    (
        "conditional_spline_quadratic",
        _conditioned(lambda: conditional_spline(D, C, [16], count_bins=5, order="quadratic")),
        0,
    ),
    ("conditional_planar", _conditioned(lambda: conditional_planar(D, C)), 1),
    ("conditional_radial", _conditioned(lambda: conditional_radial(D, C)), 1),
    (
        "conditional_householder",
        _conditioned(lambda: conditional_householder(D, C, count_transforms=2)),
        1,
    ),
    (
        "conditional_spline_autoregressive",
        _conditioned(lambda: conditional_spline_autoregressive(D, C, [12], count_bins=4)),
        1,
    ),
    (
        "conditional_affine_autoregressive",
        _conditioned(lambda: conditional_affine_autoregressive(D, C)),
        1,
    ),
]
IDS = [name for name, _, _ in LAYERS]


def _inputs(n: int = 6) -> torch.Tensor:
    # Scale 2.5: about a quarter of the entries fall outside the splines' box [-3, 3].
    return 2.5 * torch.randn(n, D, dtype=DOUBLE)


@pytest.mark.parametrize("name,make,event_dim", LAYERS, ids=IDS)
def test_log_abs_det_jacobian_is_log_det_of_the_autograd_jacobian(name, make, event_dim):
    torch.manual_seed(1)
    t = make()
    assert t.domain.event_dim == event_dim == t.codomain.event_dim
    x = _inputs()
    y = t(x)
    ldj = t.log_abs_det_jacobian(x, y)
    if event_dim == 0:
        assert ldj.shape == x.shape
        ldj = ldj.sum(-1)
    assert ldj.shape == x.shape[:-1]
    # Recomputed from a fresh tensor (no cached pair) it is the same.
    x2 = x.clone()
    torch.testing.assert_close(t.log_abs_det_jacobian(x2, t(x2)), t.log_abs_det_jacobian(x, y))
    for row, expected in zip(x, ldj):
        jac = torch.autograd.functional.jacobian(lambda v: t(v), row.clone())
        if event_dim == 0:
            off = jac - torch.diag_embed(jac.diagonal())
            assert bool((off == 0).all())
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(expected, logabsdet, rtol=1e-9, atol=1e-9)


def test_inputs_reach_both_sides_of_the_spline_box():
    torch.manual_seed(1)
    x = _inputs()
    inside = x.abs() <= 3.0
    assert bool(inside.any()) and bool((~inside).any())


@pytest.mark.parametrize("name,make,event_dim", LAYERS, ids=IDS)
def test_inverse_both_ways_and_log_det_through_the_inverse(name, make, event_dim):
    torch.manual_seed(2)
    t = make()
    x = _inputs(50)
    y = t(x)
    x_back = t.inv(y.clone())
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    # The log-Jacobian the inverse cached is that of the forward map at x.
    y2 = y.clone()
    x2 = t.inv(y2)
    torch.testing.assert_close(t.log_abs_det_jacobian(x2, y2), t.log_abs_det_jacobian(x, y))
    y_new = _inputs(50)
    torch.testing.assert_close(t(t.inv(y_new).clone()), y_new, rtol=1e-9, atol=1e-9)


def test_spline_is_the_identity_outside_its_box_and_maps_the_box_onto_itself():
    torch.manual_seed(3)
    for order in ["linear", "quadratic"]:
        t = Spline(2, count_bins=6, bound=2.0, order=order).double()
        x = torch.tensor([[-5.0, 7.0], [-2.0, 2.0], [-2.0001, 2.0001]], dtype=DOUBLE)
        y = t(x)
        torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
        assert bool((t.log_abs_det_jacobian(x, y)[0] == 0).all())
        grid = torch.linspace(-2, 2, 1001, dtype=DOUBLE).unsqueeze(-1).expand(-1, 2)
        out = t(grid)
        assert bool((out.diff(dim=0) > 0).all())  # strictly increasing


# -- densities --------------------------------------------------------------------------
def _trapezoid_1d(fn, low: float, high: float, n: int) -> float:
    grid = torch.linspace(low, high, n, dtype=DOUBLE)
    return torch.trapezoid(fn(grid.unsqueeze(-1)).exp(), grid).item()


@pytest.mark.parametrize("order", ["linear", "quadratic"])
def test_spline_flow_density_integrates_to_one(order):
    torch.manual_seed(4)
    t = Spline(1, count_bins=6, order=order).double()
    _perturb(t, 1.0)
    flow = dist.TransformedDistribution(dist.Normal(torch.zeros(1, dtype=DOUBLE), 1.0), [t])
    # The density has kinks only at knots; 200001 points make the rule exact to ~1e-8.
    total = _trapezoid_1d(lambda v: flow.log_prob(v)[..., 0], -12.0, 12.0, 200_001)
    assert abs(total - 1) < 1e-6


@pytest.mark.parametrize(
    "make",
    [
        lambda: spline_coupling(2, count_bins=5),
        lambda: affine_coupling(2),
        lambda: planar(2),
        lambda: radial(2),
        lambda: spline_autoregressive(2, [8], count_bins=4),
    ],
    ids=["spline_coupling", "affine_coupling", "planar", "radial", "spline_autoregressive"],
)
def test_two_dimensional_flow_density_integrates_to_one(make):
    torch.manual_seed(5)
    t = make().double()
    _perturb(t, 0.3)
    base = dist.Normal(torch.zeros(2, dtype=DOUBLE), 1.0).to_event(1)
    flow = dist.TransformedDistribution(base, [t])
    n = 481
    g = torch.linspace(-8.0, 8.0, n, dtype=DOUBLE)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)
    dens = flow.log_prob(grid.reshape(-1, 2)).exp().reshape(n, n)
    total = torch.trapezoid(torch.trapezoid(dens, g), g).item()
    # Mass beyond the grid is below 1e-6 for these mild flows; the rule's error was below
    # 5e-4 (checked against a 1601-point grid).
    # Small log-Jacobian errors are the business of the exact Jacobian test above; this
    # one catches a density that is wrong as a whole (a missed term, a wrong inverse).
    assert abs(total - 1) < 2e-3, total


def test_affine_coupling_density_is_the_change_of_variables_by_hand():
    class Net(nn.Module):
        def forward(self, x1):
            log_scale = 0.3 * x1[..., :1] - 0.1 * x1[..., 1:]
            return 2.0 * x1.sum(-1, keepdim=True).expand(-1, 3), log_scale.expand(-1, 3)

    t = AffineCoupling(2, Net())
    base = dist.Normal(torch.zeros(5, dtype=DOUBLE), 1.0).to_event(1)
    flow = dist.TransformedDistribution(base, [t])
    y = torch.randn(7, 5, dtype=DOUBLE)
    y1, y2 = y[:, :2], y[:, 2:]
    mean = 2.0 * y1.sum(-1, keepdim=True)
    log_scale = 0.3 * y1[:, :1] - 0.1 * y1[:, 1:2]
    x2 = (y2 - mean) / log_scale.exp()
    expected = (
        torch.distributions.Normal(0.0, 1.0).log_prob(torch.cat([y1, x2], -1)).sum(-1)
        - 3 * log_scale[:, 0]
    )
    torch.testing.assert_close(flow.log_prob(y), expected)


def test_affine_coupling_along_dim_minus_two_splits_rows():
    torch.manual_seed(6)
    t = affine_coupling((4, 3), dim=-2).double()
    _perturb(t)
    x = torch.randn(5, 4, 3, dtype=DOUBLE)
    y = t(x)
    torch.testing.assert_close(y[:, :2], x[:, :2])
    assert t.log_abs_det_jacobian(x, y).shape == (5,)
    jac = torch.autograd.functional.jacobian(lambda v: t(v), x[0].clone()).reshape(12, 12)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y)[0], torch.linalg.slogdet(jac)[1])
    torch.testing.assert_close(t.inv(y.clone()), x)


def test_batchnorm_inverse_normalizes_the_batch_in_training_mode():
    torch.manual_seed(7)
    bn = batchnorm(3, momentum=0.5)
    y = 3.0 + 2.0 * torch.randn(200, 3)
    x = bn.inv(y)
    torch.testing.assert_close(x.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.var(0), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(bn.moving_mean, 0.5 * y.mean(0))
    torch.testing.assert_close(bn.moving_variance, 0.5 + 0.5 * y.var(0))
    expected = 0.5 * torch.log(y.var(0) + bn.epsilon) - torch.log(torch.tensor(1.0 + 1e-6))
    torch.testing.assert_close(bn.log_abs_det_jacobian(x, y)[0], expected)


# -- modules and parameters -------------------------------------------------------------
def test_vitorch_module_registers_the_flow_parameters_with_pyro_names():
    torch.manual_seed(8)
    layers = nn.ModuleList([spline_coupling(D), householder(D), affine_coupling(D), planar(D)])
    vitorch.module("flow", layers)
    store = vitorch.get_param_store()
    named = dict(layers.named_parameters())
    assert set(store.keys()) == {f"flow$$${k}" for k in named}
    for k, p in named.items():
        assert store[f"flow$$${k}"] is p
    assert "flow$$$0.lower_spline.unnormalized_lambdas" in store
    assert "flow$$$0.upper_spline.nn.layers.2.bias" in store
    assert "flow$$$1.u_unnormed" in store
    assert "flow$$$2.nn.layers.0.weight" in store
    assert {"flow$$$3.u", "flow$$$3.w", "flow$$$3.bias"} <= set(store.keys())


def test_every_parameter_gets_a_gradient_from_the_flow_log_prob():
    torch.manual_seed(9)
    flow = iterated(2, spline_coupling, D)
    layers = [flow, Planar(D), Radial(D), Householder(D, 2), spline_autoregressive(D)]
    base = dist.Normal(torch.zeros(D), 1.0).to_event(1)
    fd = dist.TransformedDistribution(base, layers)
    fd.rsample((16,)).pow(2).sum().backward()  # sampling path
    x = torch.randn(16, D)
    fd2 = dist.TransformedDistribution(base, [flow, layers[4]])
    (-fd2.log_prob(x).mean()).backward()  # scoring path (no planar/radial: sampling only)
    for module in layers:
        for name, p in module.named_parameters():
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_tutorial_training_loop_with_clear_cache_scores_afresh_each_step():
    # Pyro's density-estimation tutorial scores one data tensor every step; after each
    # optimizer step the caches must be cleared so the new parameters are used.
    torch.manual_seed(18)
    base = dist.Normal(torch.zeros(2), torch.ones(2))
    flow = ComposeTransformModule([spline_coupling(2, count_bins=8), permute(2)])
    flow_dist = dist.TransformedDistribution(base, [flow])
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.05)
    data = torch.randn(64, 2) * 0.5 + 1.0
    for _ in range(3):
        optimizer.zero_grad()
        loss = -flow_dist.log_prob(data).mean()
        loss.backward()
        optimizer.step()
        flow.clear_cache()
        # The value scored next from the same tensor is that of the new parameters.
        torch.testing.assert_close(flow_dist.log_prob(data), flow_dist.log_prob(data.clone()))
        flow.clear_cache()


def test_compose_transform_module_holds_the_parts_and_deepcopies():
    torch.manual_seed(10)
    parts = [spline(D), permute(D), affine_coupling(D)]
    t = ComposeTransformModule(parts)
    assert isinstance(t, TransformModule) or isinstance(t, nn.Module)
    assert len(list(t.parameters())) == len(list(parts[0].parameters())) + len(
        list(parts[2].parameters())
    )
    x = torch.randn(3, D)
    y = t(x)
    clone = copy.deepcopy(t)
    torch.testing.assert_close(clone(x.clone()), y)
    assert hash(t) != hash(clone)


# -- conditional flows --------------------------------------------------------------------
def test_conditional_flow_shapes_and_dependence_on_the_context():
    torch.manual_seed(11)
    base = dist.Normal(torch.zeros(2), torch.ones(2))
    cond = ConditionalTransformedDistribution(
        base, [conditional_spline(2, C, count_bins=4), conditional_affine_coupling(2, C)]
    )
    ctx = torch.randn(5, C)
    d = cond.condition(ctx)
    assert d.sample(torch.Size([5])).shape == (5, 2)
    x = torch.randn(5, 2)
    lp = d.log_prob(x)
    assert lp.shape == (5,)
    # Row i of a batched context gives what conditioning on that row alone gives.
    for i in range(5):
        torch.testing.assert_close(cond.condition(ctx[i]).log_prob(x[i]), lp[i])
    # Another context changes every density.
    other = cond.condition(ctx + 1.0).log_prob(x)
    assert bool(((other - lp).abs() > 1e-4).all())
    # An unbatched context broadcasts over the values.
    assert cond.condition(ctx[0]).log_prob(x).shape == (5,)


def test_conditional_inverse_and_compose():
    torch.manual_seed(12)
    layer = conditional_planar(3, C)
    stack = ConditionalComposeTransformModule(
        [conditional_radial(3, C), Permute(torch.tensor([2, 0, 1])), layer]
    )
    assert isinstance(stack, ConditionalTransformModule)
    assert len(list(stack.parameters())) == 2 * len(list(layer.parameters()))
    ctx = torch.randn(C, dtype=DOUBLE)
    stack = stack.double()
    t = stack.condition(ctx)
    x = torch.randn(4, 3, dtype=DOUBLE)
    torch.testing.assert_close(stack.inv.condition(ctx)(t(x).clone()), x)
    assert stack.inv.inv is stack


def test_conditional_spline_reads_autoregressive_and_dense_layouts_alike():
    torch.manual_seed(13)
    k, d = 4, 3
    dense = DenseNN(C, [8], [d * k, d * k, d * (k - 1), d * k])
    raw = dense(torch.randn(C))
    stacked = [r.reshape(d, -1).T for r in raw]  # (n, d) as an AutoRegressiveNN gives
    a = ConditionalSpline(lambda c: raw, d, k)._params(None)
    b = ConditionalSpline(lambda c: stacked, d, k)._params(None)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


# -- networks -------------------------------------------------------------------------------
def test_dense_nn_is_the_plain_mlp_split_into_parameters():
    torch.manual_seed(14)
    net = ConditionalDenseNN(3, 2, [5, 6], param_dims=[1, 3, 2], nonlinearity=nn.Tanh())
    x, ctx = torch.randn(4, 3), torch.randn(2)
    a, b, c = net(x, context=ctx)
    h = torch.cat([ctx.expand(4, 2), x], -1)
    for layer in net.layers[:-1]:
        h = torch.tanh(h @ layer.weight.T + layer.bias)
    out = h @ net.layers[-1].weight.T + net.layers[-1].bias
    torch.testing.assert_close(torch.cat([a, b, c], -1), out)
    assert (a.shape, b.shape, c.shape) == ((4, 1), (4, 3), (4, 2))
    single = DenseNN(3, [5], param_dims=[7])
    assert single(x).shape == (4, 7)


def test_conditional_autoregressive_nn_is_autoregressive_in_x_and_reads_the_context():
    torch.manual_seed(15)
    perm = torch.tensor([2, 0, 3, 1])
    net = ConditionalAutoRegressiveNN(4, 2, [12, 12], permutation=perm, nonlinearity=nn.Tanh())
    net = net.double()
    x, ctx = torch.randn(4, dtype=DOUBLE), torch.randn(2, dtype=DOUBLE)
    jac_x = torch.autograd.functional.jacobian(lambda v: net(v, ctx)[0], x)[perm][:, perm]
    strict = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    assert bool((jac_x[~strict] == 0).all()) and bool((jac_x[strict] != 0).all())
    jac_c = torch.autograd.functional.jacobian(lambda c: net(x, c)[1], ctx)
    assert bool((jac_c != 0).all())


# -- argument errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (
            lambda: spline(3, order="cubic"),
            ValueError,
            r"order must be 'linear' or 'quadratic', got 'cubic'",
        ),
        (lambda: spline(0), ValueError, r"Spline: input_dim must be an int >= 1, got 0"),
        (lambda: spline(2, count_bins=1), ValueError, r"count_bins must be an int >= 2, got 1"),
        (lambda: spline(2, bound=-1.0), ValueError, r"bound must be a positive number, got -1.0"),
        (lambda: spline_coupling(1), ValueError, r"input_dim must be an int >= 2, got 1"),
        (
            lambda: spline_coupling(4, split_dim=4),
            ValueError,
            r"split_dim must be an int in \[1, 3\], got 4",
        ),
        (lambda: affine_coupling(4, dim=0), ValueError, r"dim must be a negative int"),
        (
            lambda: affine_coupling((4, 3)),
            ValueError,
            r"input_dim must be an int \(dim=-1\) or an event shape of length -dim=1",
        ),
        (lambda: AffineCoupling(2, "net"), TypeError, r"hypernet must be callable"),
        (
            lambda: Permute(torch.tensor([0, 0, 1])),
            ValueError,
            r"holding each of 0 \.\. n - 1 once",
        ),
        (lambda: Householder(3, 0), ValueError, r"count_transforms must be an int >= 1, got 0"),
        (lambda: conditional_spline(3, 0), ValueError, r"context_dim must be an int >= 1, got 0"),
        (
            lambda: DenseNN(3, []),
            ValueError,
            r"hidden_dims must be a non-empty list of ints >= 1, got \[\]",
        ),
        (
            lambda: ConditionalTransformedDistribution("base", []),
            TypeError,
            r"base_dist must be a Distribution",
        ),
        (lambda: iterated(0, planar, 2), ValueError, r"repeats must be an int >= 1, got 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_input_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"split_dim=3 must be below the size 3"):
        AffineCoupling(3, DenseNN(3, [4], [1, 1]))(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\), got \(5, 3\)"):
        DenseNN(2, [4])(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 2\), got \(4,\)"):
        ConditionalDenseNN(3, 2, [4])(torch.randn(3), torch.randn(4))
    with pytest.raises(ValueError, match=r"nn must return 4 tensors for order='linear'"):
        ConditionalSpline(DenseNN(2, [4], [1, 1, 1]), 3, 4).condition(torch.randn(2))(
            torch.randn(3)
        )
    with pytest.raises(ValueError, match=r"input must have shape \(\.\.\., 4\), got \(2, 5\)"):
        spline_coupling(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"cache_size"):
        spline(2).with_cache(0)
    with pytest.warns(UserWarning, match="count_transforms=5 exceeds input_dim=2"):
        Householder(2, 5)


# -- Pyro cross-checks ----------------------------------------------------------------------
def _pyro_pairs(T):
    """(vitorch layer, Pyro layer with the same constructor arguments) pairs."""
    PT = T
    return [
        (spline(D, count_bins=5), PT.spline(D, count_bins=5)),
        (spline(D, count_bins=5, order="quadratic"), PT.spline(D, count_bins=5, order="quadratic")),
        (spline_coupling(D, count_bins=5), PT.spline_coupling(D, count_bins=5)),
        (affine_coupling(D), PT.affine_coupling(D)),
        (planar(D), PT.planar(D)),
        (radial(D), PT.radial(D)),
        (householder(D, 2), PT.householder(D, 2)),
        (spline_autoregressive(D, count_bins=5), PT.spline_autoregressive(D, count_bins=5)),
    ]


def test_pyro_cross_check_same_parameters_same_density():
    pyro = pytest.importorskip("pyro")
    import pyro.distributions.transforms as PT

    torch.manual_seed(16)
    base = dist.Normal(torch.zeros(D, dtype=DOUBLE), 1.0).to_event(1)
    pbase = pyro.distributions.Normal(torch.zeros(D, dtype=DOUBLE), 1.0).to_event(1)
    for ours, theirs in _pyro_pairs(PT):
        ours, theirs = ours.double(), theirs.double()
        _perturb(ours)
        theirs.load_state_dict(ours.state_dict())
        x = 2.0 * torch.randn(20, D, dtype=DOUBLE)
        torch.testing.assert_close(ours(x), theirs(x))
        ldj_ours = ours.log_abs_det_jacobian(x, ours(x))
        ldj_theirs = theirs.log_abs_det_jacobian(x, theirs(x))
        torch.testing.assert_close(ldj_ours, ldj_theirs)
        if not isinstance(ours, (Planar, Radial)):  # Pyro has no inverse for these
            y = dist.TransformedDistribution(base, [ours]).sample((20,))
            lp = dist.TransformedDistribution(base, [ours]).log_prob(y.clone())
            plp = pyro.distributions.TransformedDistribution(pbase, [theirs]).log_prob(y.clone())
            torch.testing.assert_close(lp, plp)


def test_pyro_cross_check_conditional_layers():
    pyro = pytest.importorskip("pyro")
    import pyro.distributions.transforms as PT

    torch.manual_seed(17)
    ctx = torch.randn(5, C)
    pairs = [
        (conditional_spline(D, C, count_bins=4), PT.conditional_spline(D, C, count_bins=4)),
        (conditional_affine_coupling(D, C), PT.conditional_affine_coupling(D, C)),
        (conditional_planar(D, C), PT.conditional_planar(D, C)),
        (conditional_radial(D, C), PT.conditional_radial(D, C)),
        # The masks and the order are buffers: loading them makes the networks the same.
        (conditional_affine_autoregressive(D, C), PT.conditional_affine_autoregressive(D, C)),
        (
            conditional_spline_autoregressive(D, C, count_bins=4),
            PT.conditional_spline_autoregressive(D, C, count_bins=4),
        ),
    ]
    for ours, theirs in pairs:
        _perturb(ours)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(5, D)
        a, b = ours.condition(ctx), theirs.condition(ctx)
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            a.log_abs_det_jacobian(x, a(x)), b.log_abs_det_jacobian(x, b(x)), rtol=1e-5, atol=1e-5
        )
    del pyro


def test_transformed_distribution_clear_cache_after_a_parameter_change():
    """Pyro's tutorial loop calls flow_dist.clear_cache() after each optimizer step."""
    import vitorch.distributions as dist
    import vitorch.distributions.transforms as T

    torch.manual_seed(0)
    flow = T.spline_coupling(2, count_bins=8)
    flow_dist = dist.TransformedDistribution(dist.Normal(torch.zeros(2), torch.ones(2)), [flow])
    y = flow_dist.sample((4,))  # cached: y -> the x it came from
    before = flow_dist.log_prob(y)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3)
    flow_dist.clear_cache()
    after = flow_dist.log_prob(y)
    fresh = dist.TransformedDistribution(
        dist.Normal(torch.zeros(2), torch.ones(2)), [T.spline_coupling(2, count_bins=8)]
    )
    fresh.transforms[0].load_state_dict(flow.state_dict())
    assert not torch.allclose(after, before)
    assert torch.allclose(after, fresh.log_prob(y.clone()), atol=1e-5)
