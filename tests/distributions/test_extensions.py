"""Tests for vitorch's additions to torch.distributions.

Constraints, transforms (round trips, log-Jacobians against autograd), Delta,
MaskedDistribution and the extra KL divergences (against closed forms written
out here, or Monte Carlo).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

import vitorch.distributions as dist
from vitorch.distributions import constraints, transforms
from vitorch.distributions.kl import kl_divergence
from vitorch.distributions.transforms import biject_to, transform_to


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _tril_vec(m: torch.Tensor, offset: int = 0) -> torch.Tensor:
    n = m.size(-1)
    rows, cols = torch.tril_indices(n, n, offset=offset)
    return m[..., rows, cols]


def _gauss_kl(m0, s0, m1, s1) -> torch.Tensor:
    """KL(N(m0, s0) || N(m1, s1)) for full covariances, written out directly."""
    k = m0.size(-1)
    s1_inv = torch.linalg.inv(s1)
    diff = (m1 - m0).unsqueeze(-1)
    return 0.5 * (
        (s1_inv @ s0).diagonal(dim1=-2, dim2=-1).sum(-1)
        + (diff.mT @ s1_inv @ diff).squeeze(-1).squeeze(-1)
        - k
        + torch.logdet(s1)
        - torch.logdet(s0)
    )


def _normal_kl(m0, s0, m1, s1) -> torch.Tensor:
    return torch.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5


# --------------------------------------------------------------------------- constraints


def test_torch_constraints_are_reexported_unchanged() -> None:
    for name in torch.distributions.constraints.__all__:
        assert getattr(constraints, name) is getattr(torch.distributions.constraints, name)
    for name in ["softplus_positive", "softplus_lower_cholesky", "unit_lower_cholesky"]:
        assert name in constraints.__all__


def test_softplus_positive_checks_like_positive() -> None:
    x = torch.tensor([-1.0, 0.0, 1e-8, 3.0, float("inf")])
    assert torch.equal(constraints.softplus_positive.check(x), constraints.positive.check(x))
    assert constraints.softplus_positive.event_dim == 0
    assert type(constraints.softplus_positive) is not type(constraints.positive)


def test_softplus_lower_cholesky_checks_like_lower_cholesky() -> None:
    good = torch.tensor([[1.0, 0.0], [-2.0, 0.5]])
    zero_diag = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])
    upper = torch.tensor([[1.0, 0.3], [-2.0, 0.5]])
    x = torch.stack([good, zero_diag, upper])
    expected = constraints.lower_cholesky.check(x)
    assert expected.tolist() == [True, False, False]
    assert torch.equal(constraints.softplus_lower_cholesky.check(x), expected)
    assert constraints.softplus_lower_cholesky.event_dim == 2


def test_unit_lower_cholesky_check() -> None:
    c = constraints.unit_lower_cholesky
    assert c.event_dim == 2
    good = torch.tensor([[1.0, 0.0, 0.0], [4.0, 1.0, 0.0], [-1.0, 2.0, 1.0]])
    diag2 = good.clone()
    diag2[1, 1] = 2.0
    upper = good.clone()
    upper[0, 2] = 0.1
    result = c.check(torch.stack([good, diag2, upper, torch.eye(3)]))
    assert result.shape == (4,)
    assert result.tolist() == [True, False, False, True]


# --------------------------------------------------------------------------- transforms

# (constraint, unconstrained input shape, how to read the free coordinates of y)
_ELEMENTWISE = [
    constraints.real,
    constraints.positive,
    constraints.softplus_positive,
    constraints.unit_interval,
    constraints.interval(-2.0, 3.0),
    constraints.greater_than(1.5),
]


@pytest.mark.parametrize("constraint", _ELEMENTWISE, ids=lambda c: repr(c))
def test_elementwise_biject_to_round_trip_and_log_det(constraint) -> None:
    t = biject_to(constraint)
    x = torch.randn(5, dtype=torch.float64) * 2
    y = t(x)
    assert constraint.check(y).all()
    torch.testing.assert_close(t.inv(y), x)
    jac = jacobian(t, x)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), jac.diagonal().abs().log())
    assert constraint.check(transform_to(constraint)(x)).all()


def _free_coords(constraint, y: torch.Tensor) -> torch.Tensor:
    """The coordinates in which the constrained value has a density."""
    if constraint is constraints.simplex:
        return y[..., :-1]
    if constraint in (constraints.unit_lower_cholesky, constraints.corr_cholesky):
        return _tril_vec(y, offset=-1)
    # lower_cholesky-like (lower triangle) and positive_definite (symmetric,
    # so its lower triangle determines it).
    return _tril_vec(y)


_MATRIX_LIKE = [
    (constraints.simplex, 3),
    (constraints.lower_cholesky, 6),
    (constraints.softplus_lower_cholesky, 6),
    (constraints.unit_lower_cholesky, 3),
    (constraints.positive_definite, 6),
    (constraints.corr_cholesky, 3),
]


@pytest.mark.parametrize("constraint,size", _MATRIX_LIKE, ids=lambda c: type(c).__name__.strip("_"))
def test_vector_biject_to_round_trip_and_log_det(constraint, size) -> None:
    t = biject_to(constraint)
    x = torch.randn(2, size, dtype=torch.float64)
    y = t(x)
    assert y.shape[:1] == (2,)
    assert constraint.check(y).all()
    assert t.forward_shape(x.shape) == y.shape
    assert t.inverse_shape(y.shape) == x.shape
    torch.testing.assert_close(t.inv(y), x)
    ldj = t.log_abs_det_jacobian(x, y)
    assert ldj.shape == (2,)
    for i in range(2):
        jac = jacobian(lambda v: _free_coords(constraint, t(v)), x[i])
        assert jac.shape == (size, size)
        torch.testing.assert_close(ldj[i], torch.linalg.slogdet(jac)[1])


def test_independent_real_biject_to() -> None:
    c = constraints.independent(constraints.real, 2)
    t = biject_to(c)
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(t(x), x)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, x), torch.zeros(4))


@pytest.mark.parametrize(
    "constraint,transform_type",
    [
        (constraints.lower_cholesky, transforms.LowerCholeskyTransform),
        (
            constraints.softplus_lower_cholesky,
            transforms.SoftplusLowerCholeskyTransform,
        ),
        (constraints.unit_lower_cholesky, transforms.UnitLowerCholeskyTransform),
        (constraints.softplus_positive, transforms.SoftplusTransform),
    ],
)
def test_transform_to_keeps_shape(constraint, transform_type) -> None:
    t = transform_to(constraint)
    assert isinstance(t, transform_type)
    x = torch.randn(4, 3, 3) if constraint.event_dim == 2 else torch.randn(4, 3)
    y = t(x)
    assert y.shape == x.shape
    assert constraint.check(y).all()
    # The inverse recovers the free part (the upper part of x is ignored).
    torch.testing.assert_close(t(t.inv(y)), y)


def test_softplus_lower_cholesky_transform_values_and_log_det() -> None:
    t = transforms.SoftplusLowerCholeskyTransform()
    x = torch.randn(3, 3, dtype=torch.float64)
    y = t(x)
    expected = x.tril(-1) + torch.diag(torch.log1p(torch.exp(x.diagonal())))
    torch.testing.assert_close(y, expected)
    jac = jacobian(lambda m: _tril_vec(t(m)), x)
    jac = _tril_vec(jac.reshape(6, 3, 3))  # derivative w.r.t. lower entries only
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), torch.linalg.slogdet(jac)[1])


def test_unit_lower_cholesky_transform_values() -> None:
    t = transforms.UnitLowerCholeskyTransform()
    x = torch.randn(2, 3, 3)
    y = t(x)
    torch.testing.assert_close(y, x.tril(-1) + torch.eye(3))
    torch.testing.assert_close(t.inv(y), x.tril(-1))
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), torch.zeros(2))


def test_softplus_transform_is_stable_at_extremes() -> None:
    t = transforms.SoftplusTransform()
    x = torch.tensor([-60.0, -20.0, 0.0, 20.0, 80.0], dtype=torch.float64)
    y = t(x)
    expected = torch.tensor([math.log1p(math.exp(v)) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(t.inv(y), x)
    # log sigmoid(x), finite even where sigmoid underflows in float32.
    x32 = torch.tensor([-200.0, 0.0, 200.0])
    ldj = t.log_abs_det_jacobian(x32, t(x32))
    torch.testing.assert_close(ldj, torch.tensor([-200.0, -math.log(2.0), 0.0]))
    small = torch.tensor([1e-30, 1e-10])
    assert torch.isfinite(t.inv(small)).all()
    torch.testing.assert_close(t(t.inv(small)), small)


def test_lower_cholesky_affine_batched() -> None:
    loc = torch.randn(2, 1, 3, dtype=torch.float64)
    scale_tril = torch.randn(4, 3, 3, dtype=torch.float64).tril()
    scale_tril = scale_tril + 3 * torch.eye(3, dtype=torch.float64)
    t = transforms.LowerCholeskyAffine(loc, scale_tril)
    x = torch.randn(5, 1, 1, 3, dtype=torch.float64)
    y = t(x)
    assert y.shape == (5, 2, 4, 3)
    assert t.forward_shape(x.shape) == y.shape
    expected = loc + torch.einsum("bij,...j->...bi", scale_tril, x[:, 0, 0])[:, None]
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(t.inv(y), x.expand(5, 2, 4, 3))
    ldj = t.log_abs_det_jacobian(x, y)
    assert ldj.shape == (5, 2, 4)
    jac = jacobian(lambda v: t(v)[0, 1], x[0, 0, 0])  # uses scale_tril[1]
    torch.testing.assert_close(ldj[0, 0, 1], torch.linalg.slogdet(jac)[1])


def test_lower_cholesky_affine_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="scale_tril"):
        transforms.LowerCholeskyAffine(torch.zeros(3), torch.eye(2))
    with pytest.raises(TypeError, match="loc"):
        transforms.LowerCholeskyAffine(1.0, torch.eye(2))


def test_vec_to_tril_rejects_bad_length() -> None:
    with pytest.raises(ValueError, match="vector length 4"):
        transforms.VecToTrilTransform()(torch.zeros(4))


# --------------------------------------------------------------------------- Delta


def test_delta_shapes_and_log_prob() -> None:
    v = torch.randn(4, 2, 3)
    d = dist.Delta(v, log_density=torch.full((4,), 0.25), event_dim=2)
    assert d.batch_shape == (4,)
    assert d.event_shape == (2, 3)
    x = v.clone()
    x[1, 0, 2] += 1.0
    lp = d.log_prob(x)
    assert lp.shape == (4,)
    assert lp.tolist() == [0.25, -math.inf, 0.25, 0.25]
    assert d.support.check(v).all()
    torch.testing.assert_close(d.mean, v)
    torch.testing.assert_close(d.variance, torch.zeros_like(v))


def test_delta_rsample_passes_gradients_to_v() -> None:
    v = torch.tensor([1.0, -2.0], requires_grad=True)
    d = dist.Delta(v)
    assert d.has_rsample
    s = d.rsample((3,))
    assert s.shape == (3, 2)
    torch.testing.assert_close(s, v.detach().expand(3, 2))
    (s * torch.tensor([1.0, 2.0])).sum().backward()
    torch.testing.assert_close(v.grad, torch.tensor([3.0, 6.0]))


def test_delta_log_density_gradient_and_expand() -> None:
    log_density = torch.tensor(0.7, requires_grad=True)
    d = dist.Delta(torch.tensor([1.0, 2.0]), log_density=log_density, event_dim=1)
    e = d.expand((5,))
    assert e.batch_shape == (5,)
    lp = e.log_prob(torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(lp, torch.full((5,), 0.7))
    lp.sum().backward()
    torch.testing.assert_close(log_density.grad, torch.tensor(5.0))
    assert d.expand_by((2, 3)).batch_shape == (2, 3)


def test_delta_rejects_bad_event_dim() -> None:
    with pytest.raises(ValueError, match="event_dim"):
        dist.Delta(torch.zeros(2), event_dim=2)
    with pytest.raises(TypeError, match="v must be a tensor"):
        dist.Delta([1.0, 2.0])


# --------------------------------------------------------------------------- Masked


def test_masked_log_prob_values_and_shapes() -> None:
    base = dist.Normal(torch.randn(3), torch.rand(3) + 0.5)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    d = base.mask(mask)
    assert isinstance(d, dist.MaskedDistribution)
    assert d.batch_shape == (2, 3)
    x = torch.randn(4, 2, 3)
    lp = d.log_prob(x)
    assert lp.shape == (4, 2, 3)
    torch.testing.assert_close(lp, torch.where(mask, base.log_prob(x), 0.0))
    assert d.sample((7,)).shape == (7, 2, 3)
    assert d.rsample().shape == (2, 3) and d.has_rsample
    assert d.expand((5, 2, 3)).batch_shape == (5, 2, 3)
    torch.testing.assert_close(base.mask(True).log_prob(x[0]), base.log_prob(x[0]))
    zeros = base.mask(False).log_prob(x)
    torch.testing.assert_close(zeros, torch.zeros(4, 2, 3))


def test_masked_nan_values_do_not_leak_into_value_or_gradient() -> None:
    loc = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    mask = torch.tensor([True, False, True])
    x = torch.tensor([1.0, float("nan"), 0.0])
    lp = dist.Normal(loc, 1.0).mask(mask).log_prob(x)
    assert torch.isfinite(lp).all() and lp[1] == 0
    lp.sum().backward()
    torch.testing.assert_close(loc.grad, torch.tensor([0.5, 0.0, -2.0]))


def test_masked_minus_inf_does_not_leak_into_gradient() -> None:
    # A Delta scores -inf off its point; a Normal with a -inf entry would too.
    v = torch.tensor([1.0, 2.0])
    log_density = torch.tensor([0.3, 0.4], requires_grad=True)
    d = dist.Delta(v, log_density=log_density).mask(torch.tensor([True, False]))
    lp = d.log_prob(torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(lp, torch.tensor([0.3, 0.0]))
    lp.sum().backward()
    torch.testing.assert_close(log_density.grad, torch.tensor([1.0, 0.0]))
    # Out-of-support value in a masked-out entry, validation off.
    rate = torch.tensor([1.0, 2.0], requires_grad=True)
    g = dist.Gamma(rate, 1.0, validate_args=False).mask(torch.tensor([True, False]))
    lp = g.log_prob(torch.tensor([2.0, -1.0]))
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(rate.grad).all() and rate.grad[1] == 0


def test_masked_rejects_bad_masks() -> None:
    base = dist.Normal(torch.zeros(3), 1.0)
    with pytest.raises(TypeError, match="bool"):
        base.mask(torch.tensor([1j, 0j, 1j]))  # real masks are taken as mask.bool(), as in Pyro
    with pytest.raises(TypeError, match="bool"):
        base.mask("yes")
    with pytest.raises(ValueError, match="broadcast"):
        base.mask(torch.tensor([True, False]))


# --------------------------------------------------------------------------- KL


def test_kl_normal_normal_and_mvn_mvn() -> None:
    m0, s0 = torch.randn(4), torch.rand(4) + 0.2
    m1, s1 = torch.randn(4), torch.rand(4) + 0.2
    kl = kl_divergence(dist.Normal(m0, s0), dist.Normal(m1, s1))
    torch.testing.assert_close(kl, _normal_kl(m0, s0, m1, s1))

    a = torch.randn(2, 3, 3, dtype=torch.float64)
    cov0 = a @ a.mT + torch.eye(3, dtype=torch.float64)
    b = torch.randn(3, 3, dtype=torch.float64)
    cov1 = b @ b.T + torch.eye(3, dtype=torch.float64)
    mu0 = torch.randn(2, 3, dtype=torch.float64)
    mu1 = torch.randn(3, dtype=torch.float64)
    p = dist.MultivariateNormal(mu0, covariance_matrix=cov0)
    q = dist.MultivariateNormal(mu1, scale_tril=torch.linalg.cholesky(cov1))
    torch.testing.assert_close(kl_divergence(p, q), _gauss_kl(mu0, cov0, mu1, cov1))


def test_kl_delta_vs_any() -> None:
    v = torch.randn(2, 3)
    p = dist.Delta(v, log_density=torch.tensor([0.1, -0.2]), event_dim=1)
    loc, scale = torch.randn(3), torch.rand(3) + 0.5
    q = dist.Normal(loc, scale).to_event(1)
    expected = torch.tensor([0.1, -0.2]) - (
        -((v - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    torch.testing.assert_close(kl_divergence(p, q), expected)
    # Against a masked q the Delta's KL is masked too.
    masked = kl_divergence(p, q.mask(torch.tensor([False, True])))
    torch.testing.assert_close(masked, torch.tensor([0.0, expected[1].item()]))


def test_kl_masked() -> None:
    m0, s0 = torch.randn(3), torch.rand(3) + 0.2
    m1, s1 = torch.randn(3), torch.rand(3) + 0.2
    p, q = dist.Normal(m0, s0), dist.Normal(m1, s1)
    full = _normal_kl(m0, s0, m1, s1)
    mp = torch.tensor([True, False, True])
    mq = torch.tensor([True, True, False])
    torch.testing.assert_close(kl_divergence(p.mask(mp), q), torch.where(mp, full, 0.0))
    torch.testing.assert_close(kl_divergence(p, q.mask(mq)), torch.where(mq, full, 0.0))
    torch.testing.assert_close(
        kl_divergence(p.mask(mp), q.mask(mq)), torch.where(mp & mq, full, 0.0)
    )
    torch.testing.assert_close(kl_divergence(p.mask(False), q), torch.zeros(3))
    torch.testing.assert_close(kl_divergence(p.mask(True), q.mask(mq)), torch.where(mq, full, 0.0))


def test_kl_independent_with_different_nesting() -> None:
    m0, s0 = torch.randn(5, 3, 4), torch.rand(5, 3, 4) + 0.2
    m1, s1 = torch.randn(5, 3, 4), torch.rand(5, 3, 4) + 0.2
    expected = _normal_kl(m0, s0, m1, s1).sum((-1, -2))
    p = dist.Normal(m0, s0).to_event(2)
    q = dist.Normal(m1, s1).to_event(1).to_event(1)
    torch.testing.assert_close(kl_divergence(p, q), expected)
    expected_rev = _normal_kl(m1, s1, m0, s0).sum((-1, -2))
    torch.testing.assert_close(kl_divergence(q, p), expected_rev)
    # Plain torch pairing with equal nesting still works.
    torch.testing.assert_close(kl_divergence(p, dist.Normal(m1, s1).to_event(2)), expected)


def test_kl_independent_normal_vs_normal() -> None:
    m0, s0 = torch.randn(2, 3), torch.rand(2, 3) + 0.2
    m1, s1 = torch.randn(2, 3), torch.rand(2, 3) + 0.2
    expected = _normal_kl(m0, s0, m1, s1).sum(-1)
    p = dist.Normal(m0, s0).to_event(1)
    torch.testing.assert_close(kl_divergence(p, dist.Normal(m1, s1)), expected)
    expected_rev = _normal_kl(m1, s1, m0, s0).sum(-1)
    torch.testing.assert_close(kl_divergence(dist.Normal(m1, s1), p), expected_rev)


def test_kl_mvn_vs_diagonal_normal() -> None:
    a = torch.randn(3, 3, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(3, dtype=torch.float64)
    mu = torch.randn(3, dtype=torch.float64)
    loc = torch.randn(3, dtype=torch.float64)
    scale = torch.rand(3, dtype=torch.float64) + 0.5
    mvn = dist.MultivariateNormal(mu, covariance_matrix=cov)
    diag = dist.Normal(loc, scale).to_event(1)
    torch.testing.assert_close(
        kl_divergence(mvn, diag), _gauss_kl(mu, cov, loc, torch.diag(scale**2))
    )
    torch.testing.assert_close(
        kl_divergence(diag, mvn), _gauss_kl(loc, torch.diag(scale**2), mu, cov)
    )


def test_kl_mvn_vs_diagonal_normal_monte_carlo() -> None:
    # Independent check of the registered pair by sampling: E_p[log p - log q].
    a = torch.randn(2, 2, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(2, dtype=torch.float64)
    p = dist.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)
    q = dist.Normal(
        torch.ones(2, dtype=torch.float64), torch.full((2,), 1.5, dtype=torch.float64)
    ).to_event(1)
    x = p.sample((200_000,))
    terms = p.log_prob(x) - q.log_prob(x)
    stderr = terms.std() / math.sqrt(len(terms))
    assert abs(terms.mean() - kl_divergence(p, q)) < 4 * stderr
