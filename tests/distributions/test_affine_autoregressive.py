"""AutoRegressiveNN and AffineAutoregressive against autograd and closed forms.

The autoregressive property is checked on the Jacobian that autograd computes, not on the
masks: put in the network's order it must be strictly lower triangular, and every entry
below the diagonal must be reachable (else the flow could not represent correlations).
The transform's inverse and log-determinant are compared with the forward map and with
``slogdet`` of its autograd Jacobian in float64; a network made linear gives an exactly
Gaussian flow, whose density is compared with ``MultivariateNormal``.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import vitorch.distributions as dist
from vitorch.distributions.affine_autoregressive import (
    AffineAutoregressive,
    affine_autoregressive,
)
from vitorch.nn.auto_reg_nn import AutoRegressiveNN

D = 5
PERMUTATIONS = [
    torch.arange(D),
    torch.arange(D).flip(0),
    torch.tensor([3, 0, 4, 2, 1]),
]


def _outputs(arn: AutoRegressiveNN, x: torch.Tensor) -> torch.Tensor:
    """All outputs of ``arn`` stacked as ``(n_outputs, input_dim)``."""
    out = arn(x)
    if isinstance(out, torch.Tensor):
        out = (out,)
    return torch.cat([o.reshape(-1, arn.input_dim) for o in out])


def _jacobian_in_order(arn: AutoRegressiveNN, x: torch.Tensor) -> torch.Tensor:
    """``d output[p, i] / d x[j]`` with ``i`` and ``j`` put in the network's order."""
    jac = torch.autograd.functional.jacobian(lambda v: _outputs(arn, v), x)
    perm = arn.permutation
    return jac[:, perm][:, :, perm]


# -- AutoRegressiveNN ----------------------------------------------------------------------
@pytest.mark.parametrize("permutation", PERMUTATIONS, ids=["identity", "reversed", "mixed"])
@pytest.mark.parametrize("skip_connections", [False, True])
@pytest.mark.parametrize("hidden_dims", [[D], [2 * D + 3, 3 * D]])
@pytest.mark.parametrize("param_dims", [[1, 1], [1], [2, 3]])
def test_arn_jacobian_is_strictly_lower_triangular_in_its_order(
    permutation, skip_connections, hidden_dims, param_dims
) -> None:
    torch.manual_seed(0)
    # tanh has no flat pieces, so every connection the masks allow shows in the Jacobian.
    arn = AutoRegressiveNN(
        D,
        hidden_dims,
        param_dims=param_dims,
        permutation=permutation,
        skip_connections=skip_connections,
        nonlinearity=nn.Tanh(),
    ).double()
    assert torch.equal(arn.get_permutation(), permutation)
    jac = _jacobian_in_order(arn, torch.randn(D, dtype=torch.double))
    assert jac.shape == (sum(param_dims), D, D)
    strict_lower = torch.ones(D, D, dtype=torch.bool).tril(-1)
    assert bool((jac[:, ~strict_lower] == 0).all())
    assert bool((jac[:, strict_lower] != 0).all())


@pytest.mark.parametrize("permutation", PERMUTATIONS, ids=["identity", "reversed", "mixed"])
def test_arn_with_relu_never_breaks_the_order(permutation) -> None:
    torch.manual_seed(1)
    arn = AutoRegressiveNN(D, [3 * D + 1, 2 * D], permutation=permutation, skip_connections=True)
    arn = arn.double()
    strict_lower = torch.ones(D, D, dtype=torch.bool).tril(-1)
    for _ in range(5):
        jac = _jacobian_in_order(arn, 2 * torch.randn(D, dtype=torch.double))
        assert bool((jac[:, ~strict_lower] == 0).all())


def test_arn_default_permutation_is_random_and_a_buffer() -> None:
    torch.manual_seed(0)
    perms = {tuple(AutoRegressiveNN(6, [6]).permutation.tolist()) for _ in range(5)}
    assert len(perms) > 1
    for p in perms:
        assert sorted(p) == list(range(6))
    arn = AutoRegressiveNN(4, [8])
    assert "permutation" in dict(arn.named_buffers())
    assert arn.permutation.dtype == torch.long


@pytest.mark.parametrize(
    "param_dims, shapes",
    [
        ([1, 1], [(7, 4), (7, 4)]),
        ([1], [(7, 4)]),
        ([3], [(7, 3, 4)]),
        ([1, 5, 3], [(7, 1, 4), (7, 5, 4), (7, 3, 4)]),
        ([1, 1, 1], [(7, 4), (7, 4), (7, 4)]),
    ],
)
def test_arn_output_shapes_follow_param_dims(param_dims, shapes) -> None:
    arn = AutoRegressiveNN(4, [9], param_dims=param_dims)
    out = arn(torch.randn(7, 4))
    if len(param_dims) == 1:
        assert isinstance(out, torch.Tensor)
        out = (out,)
    else:
        assert isinstance(out, tuple)
    assert [tuple(o.shape) for o in out] == shapes


def test_arn_accepts_any_batch_shape() -> None:
    arn = AutoRegressiveNN(3, [10])
    mean, log_scale = arn(torch.randn(2, 5, 3))
    assert mean.shape == log_scale.shape == (2, 5, 3)
    mean, _ = arn(torch.randn(3))
    assert mean.shape == (3,)


def test_arn_of_one_dim_has_constant_outputs() -> None:
    arn = AutoRegressiveNN(1, [4])
    a, b = arn(torch.tensor([[0.0], [5.0]]))
    assert torch.equal(a[0], a[1]) and torch.equal(b[0], b[1])


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(input_dim=0, hidden_dims=[4]), "input_dim"),
        (dict(input_dim=2.0, hidden_dims=[4]), "input_dim"),
        (dict(input_dim=True, hidden_dims=[4]), "input_dim"),
        (dict(input_dim=3, hidden_dims=[]), "hidden_dims"),
        (dict(input_dim=3, hidden_dims=8), "hidden_dims"),
        (dict(input_dim=3, hidden_dims=[2]), "hidden_dims"),
        (dict(input_dim=3, hidden_dims=[8, 2]), "hidden_dims"),
        (dict(input_dim=3, hidden_dims=[4.5]), "hidden_dims"),
        (dict(input_dim=3, hidden_dims=[4], param_dims=[]), "param_dims"),
        (dict(input_dim=3, hidden_dims=[4], param_dims=[1, 0]), "param_dims"),
        (dict(input_dim=3, hidden_dims=[4], param_dims=[1.0]), "param_dims"),
        (dict(input_dim=3, hidden_dims=[4], permutation=torch.tensor([0, 1])), "permutation"),
        (dict(input_dim=3, hidden_dims=[4], permutation=torch.tensor([0, 1, 1])), "permutation"),
        (dict(input_dim=3, hidden_dims=[4], permutation=torch.tensor([0.0, 1, 2])), "permutation"),
    ],
)
def test_arn_bad_arguments_are_named(kwargs, argument) -> None:
    with pytest.raises(ValueError, match=argument):
        AutoRegressiveNN(**kwargs)


def test_arn_bad_input_shape_is_reported() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        AutoRegressiveNN(3, [4])(torch.randn(2, 4))


# -- AffineAutoregressive ------------------------------------------------------------------
def _transform(stable: bool, permutation=None, seed: int = 0) -> AffineAutoregressive:
    torch.manual_seed(seed)
    arn = AutoRegressiveNN(D, [16, 16], permutation=permutation, skip_connections=True)
    return AffineAutoregressive(arn, stable=stable).double()


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("batch_shape", [(), (6,), (2, 3)])
def test_inverse_undoes_forward_without_the_cache(stable, batch_shape) -> None:
    t = _transform(stable, PERMUTATIONS[2])
    x = torch.randn(batch_shape + (D,), dtype=torch.double)
    y = t(x)
    assert y.shape == x.shape
    # A copy of y misses the identity cache, so this is the sequential inverse.
    x_back = t.inv(y.clone())
    assert x_back is not x
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-12)
    # ... and the forward map undoes an inverse of an arbitrary point.
    y2 = torch.randn(batch_shape + (D,), dtype=torch.double)
    torch.testing.assert_close(t(t.inv(y2).clone()), y2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("permutation", PERMUTATIONS, ids=["identity", "reversed", "mixed"])
def test_log_abs_det_jacobian_matches_autograd(stable, permutation) -> None:
    t = _transform(stable, permutation)
    xs = torch.randn(4, D, dtype=torch.double)
    ys = t(xs)
    ldj_cached = t.log_abs_det_jacobian(xs, ys)
    ldj_fresh = t.log_abs_det_jacobian(xs.clone(), ys.clone())
    assert ldj_cached.shape == (4,)
    for x, expected_cached, expected_fresh in zip(xs, ldj_cached, ldj_fresh):
        jac = torch.autograd.functional.jacobian(t._call, x)
        # In the network's order the Jacobian is triangular with the scales on the diagonal.
        in_order = jac[permutation][:, permutation]
        assert bool((in_order.triu(1) == 0).all())
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign > 0
        torch.testing.assert_close(expected_cached, logdet, rtol=0, atol=1e-12)
        torch.testing.assert_close(expected_fresh, logdet, rtol=0, atol=1e-12)


@pytest.mark.parametrize("stable", [False, True])
def test_cached_log_scales_answer_only_their_own_pair(stable) -> None:
    t = _transform(stable)
    x1, x2 = torch.randn(2, D, dtype=torch.double)
    y1 = t(x1)
    y2 = t(x2)  # the cache now holds the pair (x2, y2)
    for x, y in ((x1, y1), (x2, y2), (x1, y1)):
        logdet = torch.linalg.slogdet(torch.autograd.functional.jacobian(t._call, x))[1]
        torch.testing.assert_close(t.log_abs_det_jacobian(x, y), logdet, rtol=0, atol=1e-12)


def test_log_scale_is_clamped_but_keeps_its_gradient() -> None:
    torch.manual_seed(0)
    arn = AutoRegressiveNN(3, [6], permutation=torch.arange(3))
    with torch.no_grad():
        arn.layers[-1].bias[3:].fill_(10.0)  # raw log-scales far above the clip
        arn.layers[-1].weight.zero_()
    t = AffineAutoregressive(arn, log_scale_max_clip=2.5)
    x = torch.randn(3)
    y = t(x)
    mean = arn.layers[-1].bias[:3]
    torch.testing.assert_close(y, mean + torch.exp(torch.tensor(2.5)) * x)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), torch.tensor(7.5))
    t.log_abs_det_jacobian(x, y).backward()
    assert torch.equal(arn.layers[-1].bias.grad[3:], torch.ones(3))


def _linear_flow(stable: bool) -> tuple[AffineAutoregressive, torch.Tensor, torch.Tensor]:
    """An IAF that is exactly affine, ``y = a + L x``, with its ``a`` and ``L``."""
    torch.manual_seed(3)
    arn = AutoRegressiveNN(
        D, [12], permutation=PERMUTATIONS[2], skip_connections=True, nonlinearity=nn.Identity()
    )
    arn = arn.double()
    with torch.no_grad():
        # The second output (log-scale or logit) becomes a constant: no weights into it.
        arn.layers[-1].weight[D:].zero_()
        arn.skip_layer.weight[D:].zero_()
        arn.layers[-1].bias[D:].uniform_(-0.5, 0.5)
    t = AffineAutoregressive(arn, stable=stable).double()
    x0 = torch.zeros(D, dtype=torch.double)
    a = t._call(x0)
    L = torch.autograd.functional.jacobian(t._call, x0)
    return t, a, L


@pytest.mark.parametrize("stable", [False, True])
def test_linear_flow_of_a_normal_is_the_exact_multivariate_normal(stable) -> None:
    t, a, L = _linear_flow(stable)
    base = dist.Normal(torch.zeros(D, dtype=torch.double), 1.0).to_event(1)
    flow = dist.TransformedDistribution(base, [t])
    exact = dist.MultivariateNormal(a.detach(), scale_tril=None, covariance_matrix=L @ L.T)
    y = flow.sample((50,))
    with torch.no_grad():
        torch.testing.assert_close(flow.log_prob(y), exact.log_prob(y), rtol=0, atol=1e-10)
        # Values it did not draw go through the sequential inverse: same density.
        z = exact.sample((50,))
        torch.testing.assert_close(flow.log_prob(z), exact.log_prob(z), rtol=0, atol=1e-10)


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("num_flows", [1, 2])
def test_log_prob_of_own_draws_is_consistent_and_uses_the_cache(stable, num_flows) -> None:
    torch.manual_seed(0)
    flows = [
        AffineAutoregressive(AutoRegressiveNN(D, [3 * D + 1]), stable=stable).double()
        for _ in range(num_flows)
    ]
    calls = [_count_calls(f.arn) for f in flows]
    base = dist.Normal(torch.zeros(D, dtype=torch.double), 1.0).to_event(1)
    flow = dist.TransformedDistribution(base, flows)
    y = flow.rsample((8,))
    assert [c[0] for c in calls] == [1] * num_flows
    lp = flow.log_prob(y)
    assert [c[0] for c in calls] == [1] * num_flows  # scored from the cache
    assert lp.shape == (8,)
    # By hand: invert the layers one by one, without any cache, and subtract log-dets.
    with torch.no_grad():
        value = y.clone()
        expected = torch.zeros(8, dtype=torch.double)
        for f in reversed(flows):
            x = f._inverse(value.clone())
            expected = expected - f.log_abs_det_jacobian(x.clone(), value.clone())
            value = x
        expected = expected + base.log_prob(value)
    torch.testing.assert_close(lp.detach(), expected, rtol=0, atol=1e-10)
    # A value that was not drawn costs input_dim network calls per layer.
    before = [c[0] for c in calls]
    torch.testing.assert_close(flow.log_prob(y.clone()).detach(), expected, rtol=0, atol=1e-10)
    assert [c[0] - b for c, b in zip(calls, before)] == [D] * num_flows


def test_transform_is_a_module_with_the_networks_parameters() -> None:
    t = affine_autoregressive(4)
    assert isinstance(t, nn.Module)
    assert t.event_dim == 1 and t.bijective
    names = {name for name, _ in t.named_parameters()}
    assert names == {f"arn.layers.{i}.{w}" for i in (0, 1) for w in ("weight", "bias")}
    # Pyro's default width, 3 * input_dim + 1.
    assert t.arn.layers[0].out_features == 13
    assert t.arn.hidden_dims == [13]
    assert hash(t) == hash(t) and t == t and t != affine_autoregressive(4)


def test_helper_passes_its_arguments_on() -> None:
    t = affine_autoregressive(3, [7, 8], stable=True, sigmoid_bias=1.5, log_scale_min_clip=-2.0)
    assert t.arn.hidden_dims == [7, 8]
    assert t.stable and t.sigmoid_bias == 1.5 and t.log_scale_min_clip == -2.0
    with pytest.raises(ValueError, match="input_dim"):
        affine_autoregressive(0)
    with pytest.raises(ValueError, match="hidden_dims"):
        affine_autoregressive(3, [2])
    with pytest.raises(TypeError, match="unexpected keyword"):
        affine_autoregressive(3, bogus=1)


def test_transform_bad_arguments_are_named() -> None:
    arn = AutoRegressiveNN(3, [4])
    with pytest.raises(TypeError, match="autoregressive_nn"):
        AffineAutoregressive("not a network")
    with pytest.raises(TypeError, match="permutation"):
        AffineAutoregressive(lambda x: (x, x))
    with pytest.raises(ValueError, match="log_scale_min_clip"):
        AffineAutoregressive(arn, log_scale_min_clip=3.0, log_scale_max_clip=-5.0)
    with pytest.raises(TypeError, match="stable"):
        AffineAutoregressive(arn, stable="yes")
    with pytest.raises(TypeError, match="sigmoid_bias"):
        AffineAutoregressive(arn, sigmoid_bias=None)


def test_transform_copies_and_pickles_after_a_draw() -> None:
    t = affine_autoregressive(3)
    x = torch.randn(3)
    y = t(x)  # the cache now holds tensors with autograd history
    y.sum().backward()
    for clone in (copy.deepcopy(t), pickle.loads(pickle.dumps(t))):
        z = torch.randn(3)
        torch.testing.assert_close(clone(z), t(z))
        torch.testing.assert_close(clone.inv(clone(z).clone()), z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stable", [False, True])
def test_same_map_as_pyros_transform_on_pyros_network(stable) -> None:
    pyro_nn = pytest.importorskip("pyro.nn")
    pyro_transforms = pytest.importorskip("pyro.distributions.transforms")
    torch.manual_seed(0)
    # float32: Pyro's inverse starts from zeros of the default dtype.
    arn = pyro_nn.AutoRegressiveNN(D, [16], permutation=PERMUTATIONS[2])
    with torch.no_grad():
        # Push some raw log-scales past the clip, so that the clamping is compared too.
        arn.layers[-1].bias[D:].mul_(20.0)
    ours = AffineAutoregressive(arn, log_scale_max_clip=1.0, stable=stable)
    theirs = pyro_transforms.AffineAutoregressive(arn, log_scale_max_clip=1.0, stable=stable)
    x = torch.randn(7, D)
    y = ours(x)
    torch.testing.assert_close(y, theirs(x))
    torch.testing.assert_close(
        ours.log_abs_det_jacobian(x, y), theirs.log_abs_det_jacobian(x, theirs(x))
    )
    y2 = torch.randn(7, D)
    torch.testing.assert_close(ours.inv(y2), theirs.inv(y2))
