"""The Pyro-only distributions in vitorch.distributions.extra.

Each family is checked against SciPy (or a closed form written out here), for
normalisation, for sample moments against ``mean``/``variance`` (tolerance from the
standard error), for batch/event shapes and ``expand``, for ``ValueError`` on invalid
parameters, and against Pyro's class when pyro is installed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats as st
import torch

from vitorch.distributions import constraints
from vitorch.distributions.distribution import TorchDistributionMixin
from vitorch.distributions.extra import (
    AffineBeta,
    AsymmetricLaplace,
    BetaBinomial,
    DirichletMultinomial,
    FoldedDistribution,
    GammaPoisson,
    ImproperUniform,
    Logistic,
    MultivariateStudentT,
    SoftLaplace,
    ZeroInflatedDistribution,
    ZeroInflatedNegativeBinomial,
    ZeroInflatedPoisson,
)
from vitorch.distributions.torch import Normal, Poisson

F64 = torch.float64


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _check_moments(d, n: int = 40_000, z: float = 5.0) -> None:
    """Sample mean/variance per batch element within ``z`` standard errors of the formulas."""
    x = d.sample((n,)).to(F64)
    mean, var = d.mean, d.variance
    m_hat = x.mean(0)
    se_mean = (var / n).sqrt()
    assert torch.all((m_hat - mean).abs() <= z * se_mean), (m_hat, mean)
    sq = (x - m_hat).square()
    v_hat = sq.mean(0)
    se_var = (sq.var(0) / n).sqrt()
    assert torch.all((v_hat - var).abs() <= z * se_var), (v_hat, var)


def _check_expand(d, batch_shape: tuple[int, ...], value: torch.Tensor) -> None:
    """``expand`` keeps the class and broadcasts ``log_prob``; ``expand_by``/``to_event`` work."""
    e = d.expand(batch_shape)
    assert type(e) is type(d)
    assert e.batch_shape == torch.Size(batch_shape)
    assert e.event_shape == d.event_shape
    assert e.sample().shape == torch.Size(batch_shape) + d.event_shape
    lp = e.log_prob(value)
    assert lp.shape == torch.Size(batch_shape)
    torch.testing.assert_close(lp, d.log_prob(value).expand(batch_shape))
    assert isinstance(d, TorchDistributionMixin)
    assert d.expand_by((2,)).batch_shape == (2,) + d.batch_shape
    if d.batch_shape:
        assert d.to_event(1).event_shape == d.batch_shape[-1:] + d.event_shape


# --------------------------------------------------------------------------- zero-inflated


RATE = _t(0.5, 2.0, 7.0)
GATE = _t(0.0, 0.3, 0.8)


def _zip_pmf(k: np.ndarray, rate: float, gate: float) -> np.ndarray:
    return gate * (k == 0) + (1 - gate) * st.poisson(rate).pmf(k)


@pytest.mark.parametrize("by_logits", [False, True])
def test_zip_log_prob_matches_scipy_mixture(by_logits: bool) -> None:
    gate = GATE.clamp(1e-6, 1)  # logit(0) is -inf: keep the logits finite
    kw = {"gate_logits": torch.logit(gate)} if by_logits else {"gate": gate}
    d = ZeroInflatedPoisson(RATE, **kw)
    k = torch.arange(0.0, 30.0, dtype=F64).unsqueeze(-1)
    lp = d.log_prob(k)
    assert lp.shape == (30, 3)
    for i in range(3):
        want = np.log(_zip_pmf(k[:, 0].numpy(), RATE[i].item(), gate[i].item()))
        np.testing.assert_allclose(lp[:, i].numpy(), want, rtol=1e-10, atol=1e-12)


def test_zip_normalises_and_moments() -> None:
    d = ZeroInflatedPoisson(RATE, gate=GATE)
    k = torch.arange(0.0, 200.0, dtype=F64).unsqueeze(-1)
    torch.testing.assert_close(d.log_prob(k).exp().sum(0), torch.ones(3, dtype=F64))
    p = d.log_prob(k).exp()
    torch.testing.assert_close(d.mean, (k * p).sum(0))
    torch.testing.assert_close(d.variance, (k.square() * p).sum(0) - d.mean.square())
    _check_moments(d)
    assert d.support is constraints.nonnegative_integer
    torch.testing.assert_close(d.rate, RATE)


def test_zero_inflated_generic_equals_zip_and_expands() -> None:
    base = Poisson(RATE)
    d = ZeroInflatedDistribution(base, gate=torch.tensor(0.25, dtype=F64))
    z = ZeroInflatedPoisson(RATE, gate=torch.tensor(0.25, dtype=F64))
    k = torch.arange(0.0, 10.0, dtype=F64).unsqueeze(-1)
    torch.testing.assert_close(d.log_prob(k), z.log_prob(k))
    assert d.batch_shape == (3,)
    _check_expand(d, (4, 3), torch.tensor(1.0, dtype=F64))
    _check_expand(z, (2, 3), torch.tensor(0.0, dtype=F64))
    zl = ZeroInflatedPoisson(RATE, gate_logits=torch.zeros(3, dtype=F64))
    _check_expand(zl, (2, 3), torch.tensor(0.0, dtype=F64))
    torch.testing.assert_close(zl.gate, torch.full((3,), 0.5, dtype=F64))


def test_zinb_log_prob_matches_scipy() -> None:
    total, probs, gate = _t(1.5, 4.0), _t(0.3, 0.8), _t(0.2, 0.6)
    d = ZeroInflatedNegativeBinomial(total, probs=probs, gate=gate)
    k = torch.arange(0.0, 400.0, dtype=F64).unsqueeze(-1)
    lp = d.log_prob(k)
    for i in range(2):
        # torch counts successes with probability probs; SciPy's nbinom takes the other p.
        nb = st.nbinom(total[i].item(), 1 - probs[i].item()).pmf(k[:, 0].numpy())
        want = gate[i].item() * (k[:, 0].numpy() == 0) + (1 - gate[i].item()) * nb
        np.testing.assert_allclose(lp[:, i].exp().numpy(), want, rtol=1e-9, atol=1e-300)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(2, dtype=F64))
    dl = ZeroInflatedNegativeBinomial(total, logits=torch.logit(probs), gate=gate)
    torch.testing.assert_close(dl.log_prob(k[:50]), lp[:50])
    torch.testing.assert_close(dl.probs, probs)
    _check_moments(d)
    _check_expand(d, (3, 2), torch.tensor(2.0, dtype=F64))


def test_zero_inflated_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of gate and gate_logits"):
        ZeroInflatedPoisson(RATE)
    with pytest.raises(ValueError, match="exactly one of gate and gate_logits"):
        ZeroInflatedPoisson(RATE, gate=GATE, gate_logits=GATE)
    with pytest.raises(ValueError, match="gate"):
        ZeroInflatedPoisson(RATE, gate=_t(0.5, 1.5, 0.1))
    with pytest.raises(ValueError, match="rate"):
        ZeroInflatedPoisson(_t(1.0, -1.0, 2.0), gate=GATE)
    with pytest.raises(ValueError, match="total_count"):
        ZeroInflatedNegativeBinomial(_t(-1.0), probs=_t(0.5), gate=_t(0.1))
    with pytest.raises(ValueError, match="exactly one of probs and logits"):
        ZeroInflatedNegativeBinomial(_t(1.0), gate=_t(0.1))
    with pytest.raises(ValueError, match="event_shape"):
        ZeroInflatedDistribution(Normal(torch.zeros(2), 1.0).to_event(1), gate=_t(0.1))
    with pytest.raises(TypeError, match="base_dist"):
        ZeroInflatedDistribution("poisson", gate=_t(0.1))
    with pytest.raises(ValueError, match="value"):
        ZeroInflatedPoisson(RATE, gate=GATE).log_prob(torch.tensor(1.5, dtype=F64))


# --------------------------------------------------------------------------- conjugate


def test_gamma_poisson_matches_scipy_nbinom() -> None:
    conc, rate = _t(0.7, 3.0, 10.0), _t(0.5, 1.0, 4.0)
    d = GammaPoisson(conc, rate)
    k = torch.arange(0.0, 300.0, dtype=F64).unsqueeze(-1)
    lp = d.log_prob(k)
    for i in range(3):
        a, b = conc[i].item(), rate[i].item()
        want = st.nbinom(a, b / (1 + b)).logpmf(k[:, 0].numpy())
        np.testing.assert_allclose(lp[:, i].numpy(), want, rtol=1e-10)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(3, dtype=F64))
    _check_moments(d)
    _check_expand(d, (2, 3), torch.tensor(3.0, dtype=F64))
    with pytest.raises(ValueError, match="rate"):
        GammaPoisson(conc, -rate)
    with pytest.raises(ValueError, match="concentration"):
        GammaPoisson(-conc, rate)


def test_beta_binomial_matches_scipy() -> None:
    a, b, n = _t(0.5, 2.0, 5.0), _t(1.5, 2.0, 0.7), _t(10.0, 4.0, 25.0)
    d = BetaBinomial(a, b, n)
    k = torch.arange(0.0, 26.0, dtype=F64).unsqueeze(-1)
    for i in range(3):
        kk = k[: int(n[i]) + 1]
        lp = BetaBinomial(a[i], b[i], n[i]).log_prob(kk[:, 0])
        want = st.betabinom(int(n[i]), a[i].item(), b[i].item()).logpmf(kk[:, 0].numpy())
        np.testing.assert_allclose(lp.numpy(), want, rtol=1e-10)
        assert math.isclose(lp.exp().sum().item(), 1.0, rel_tol=1e-10)
    torch.testing.assert_close(
        d.mean,
        torch.tensor([st.betabinom(int(n[i]), a[i], b[i]).mean() for i in range(3)], dtype=F64),
    )
    torch.testing.assert_close(
        d.variance,
        torch.tensor([st.betabinom(int(n[i]), a[i], b[i]).var() for i in range(3)], dtype=F64),
    )
    _check_moments(d)
    _check_expand(d, (4, 3), torch.tensor(2.0, dtype=F64))
    # default total_count is one trial: a Bernoulli with p = a / (a + b)
    one = BetaBinomial(_t(2.0), _t(3.0))
    torch.testing.assert_close(one.log_prob(_t(1.0)), torch.log(_t(0.4)))
    sup = BetaBinomial(_t(2.0, 1.0), _t(3.0, 1.0), 3).enumerate_support()
    assert sup.shape == (4, 2)
    assert sup[:, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="total_count"):
        BetaBinomial(a, b, _t(2.5, 1.0, 1.0))
    with pytest.raises(ValueError, match="concentration1"):
        BetaBinomial(-a, b, n)
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.tensor(11.0, dtype=F64).expand(3))


def _compositions(n: int, k: int):
    """All non-negative integer vectors of length ``k`` summing to ``n``."""
    for cuts in itertools.combinations(range(n + k - 1), k - 1):
        bounds = (-1, *cuts, n + k - 1)
        yield [bounds[j + 1] - bounds[j] - 1 for j in range(k)]


def test_dirichlet_multinomial_matches_scipy_and_normalises() -> None:
    alpha = torch.tensor([[0.5, 1.0, 2.0], [3.0, 0.2, 1.1]], dtype=F64)
    n = 6
    d = DirichletMultinomial(alpha, total_count=n)
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    xs = torch.tensor(list(_compositions(n, 3)), dtype=F64)  # (28, 3)
    lp = d.log_prob(xs.unsqueeze(1))
    assert lp.shape == (len(xs), 2)
    for i in range(2):
        want = st.dirichlet_multinomial(alpha[i].numpy(), n).logpmf(xs.numpy())
        np.testing.assert_allclose(lp[:, i].numpy(), want, rtol=1e-10)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(2, dtype=F64))
    sparse = DirichletMultinomial(alpha, total_count=n, is_sparse=True)
    torch.testing.assert_close(sparse.log_prob(xs.unsqueeze(1)), lp)
    p = lp.exp().unsqueeze(-1)
    mean = (p * xs.unsqueeze(1)).sum(0)
    torch.testing.assert_close(d.mean, mean)
    torch.testing.assert_close(d.variance, (p * (xs.unsqueeze(1) - mean).square()).sum(0))
    _check_moments(d, n=20_000)
    _check_expand(d, (3, 2), torch.tensor([2.0, 2.0, 2.0], dtype=F64))
    # torch's (and Pyro's) multinomial support bounds the sum by total_count
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.tensor([2.0, 4.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.tensor([2.0, -1.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="concentration"):
        DirichletMultinomial(-alpha, total_count=n)


def test_dirichlet_multinomial_uneven_total_count_samples() -> None:
    alpha = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    total = _t(0.0, 3.0, 10.0)
    d = DirichletMultinomial(alpha, total_count=total)
    assert d.batch_shape == (3,)
    x = d.sample((20_000,))
    assert x.shape == (20_000, 3, 3)
    assert torch.equal(x.sum(-1), total.expand(20_000, 3))
    assert bool(d.support.check(x).all())
    _check_moments(DirichletMultinomial(alpha, total_count=total[1:]), n=20_000)


# --------------------------------------------------------------------------- multivariate t


def _mvt() -> MultivariateStudentT:
    loc = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=F64)
    L = torch.tensor([[1.2, 0.0], [-0.4, 0.7]], dtype=F64)
    return MultivariateStudentT(_t(3.0, 6.5), loc, L)


def test_multivariate_student_t_matches_scipy() -> None:
    d = _mvt()
    assert d.batch_shape == (2,) and d.event_shape == (2,)
    x = torch.randn(5, 1, 2, dtype=F64) * 2
    lp = d.log_prob(x)
    assert lp.shape == (5, 2)
    L = d._unbroadcasted_scale_tril
    for i in range(2):
        ref = st.multivariate_t(d.loc[i].numpy(), (L @ L.T).numpy(), df=d.df[i].item())
        np.testing.assert_allclose(lp[:, i].numpy(), ref.logpdf(x[:, 0].numpy()), rtol=1e-10)
    # normalisation on a 2D grid, for the heavier-tailed batch element with df = 6.5
    g = torch.linspace(-40, 40, 801, dtype=F64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    dens = d.log_prob(torch.stack([xx, yy], -1).unsqueeze(-2))[..., 1].exp()
    total = torch.trapezoid(torch.trapezoid(dens, g, dim=1), g)
    assert abs(total.item() - 1) < 1e-3
    torch.testing.assert_close(d.variance[1], torch.diagonal(L @ L.T) * 6.5 / 4.5)
    v = MultivariateStudentT(_t(0.5, 1.5, 3.0), torch.zeros(2, dtype=F64), L).variance
    assert torch.isnan(v[0]).all() and torch.isinf(v[1]).all() and torch.isfinite(v[2]).all()


def test_multivariate_student_t_sampling_and_shapes() -> None:
    loc = _t(1.0, -2.0)
    L = torch.tensor([[1.0, 0.0], [0.6, 0.5]], dtype=F64)
    d = MultivariateStudentT(_t(7.0), loc, L)
    x = d.rsample((100_000,))
    assert x.shape == (100_000, 1, 2)
    cov = L @ L.T * 7.0 / 5.0
    se = (torch.diagonal(cov) / x.shape[0]).sqrt()
    assert torch.all((x.mean(0)[0] - loc).abs() < 5 * se)
    emp = torch.cov(x[:, 0].T)
    # df = 7 has a finite fourth moment; 5% is many standard errors at this draw count
    torch.testing.assert_close(emp, cov, rtol=0.05, atol=0.02)
    loc.requires_grad_(True)
    g = torch.autograd.grad(MultivariateStudentT(_t(7.0), loc, L).rsample((4,)).sum(), loc)[0]
    torch.testing.assert_close(g, torch.full((2,), 4.0, dtype=F64))
    _check_expand(d, (3,), _t(0.3, 0.1))
    with pytest.raises(ValueError, match="scale_tril"):
        MultivariateStudentT(_t(3.0), loc, torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="scale_tril"):
        MultivariateStudentT(_t(3.0), loc, -torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="df"):
        MultivariateStudentT(_t(-1.0), loc, L)


# --------------------------------------------------------------------------- improper uniform


def test_improper_uniform() -> None:
    d = ImproperUniform(constraints.positive, (3,), (2,))
    assert d.batch_shape == (3,) and d.event_shape == (2,)
    lp = d.log_prob(torch.ones(5, 1, 2))
    assert lp.shape == (5, 3) and torch.equal(lp, torch.zeros(5, 3))
    assert d.support is constraints.positive
    with pytest.raises(NotImplementedError):
        d.sample()
    e = d.expand((4, 3))
    assert type(e) is ImproperUniform and e.batch_shape == (4, 3)
    assert e.support is constraints.positive
    assert e.log_prob(torch.ones(2)).shape == (4, 3)
    with pytest.raises(ValueError, match="value"):
        d.log_prob(-torch.ones(2))
    with pytest.raises(TypeError, match="support"):
        ImproperUniform("positive", (), ())


# --------------------------------------------------------------------------- real line

LOC, SCALE = _t(-1.0, 0.0, 2.5), _t(0.5, 1.0, 3.0)
GRID = torch.linspace(-200, 200, 400_001, dtype=F64).unsqueeze(-1)


def _check_real_line(d, scipy_logpdf=None) -> None:
    x = torch.linspace(-6, 6, 41, dtype=F64).unsqueeze(-1)
    lp = d.log_prob(x)
    if scipy_logpdf is not None:
        for i in range(3):
            np.testing.assert_allclose(
                lp[:, i].numpy(), scipy_logpdf(i, x[:, 0].numpy()), rtol=1e-10
            )
    dens = d.log_prob(GRID).exp()
    torch.testing.assert_close(
        torch.trapezoid(dens, GRID, dim=0), torch.ones(3, dtype=F64), rtol=0, atol=1e-6
    )
    mean = torch.trapezoid(dens * GRID, GRID, dim=0)
    torch.testing.assert_close(d.mean, mean, rtol=0, atol=1e-5)
    var = torch.trapezoid(dens * (GRID - mean).square(), GRID, dim=0)
    torch.testing.assert_close(d.variance, var, rtol=1e-5, atol=1e-5)
    _check_moments(d)
    assert d.has_rsample
    _check_expand(d, (2, 3), torch.tensor(0.7, dtype=F64))


def test_logistic() -> None:
    d = Logistic(LOC, SCALE)
    _check_real_line(d, lambda i, x: st.logistic(LOC[i].item(), SCALE[i].item()).logpdf(x))
    x = _t(-3.0, 0.1, 4.0)
    torch.testing.assert_close(
        d.cdf(x), torch.tensor(st.logistic.cdf(x.numpy(), LOC.numpy(), SCALE.numpy()))
    )
    torch.testing.assert_close(d.icdf(d.cdf(x)), x)
    torch.testing.assert_close(
        d.entropy(), torch.tensor(st.logistic.entropy(LOC.numpy(), SCALE.numpy()))
    )
    with pytest.raises(ValueError, match="scale"):
        Logistic(0.0, -1.0)


def test_asymmetric_laplace() -> None:
    asym = _t(0.5, 1.0, 2.0)
    d = AsymmetricLaplace(LOC, SCALE, asym)
    _check_real_line(
        d,
        lambda i, x: st.laplace_asymmetric(asym[i].item(), LOC[i].item(), SCALE[i].item()).logpdf(
            x
        ),
    )
    torch.testing.assert_close(d.left_scale, SCALE * asym)
    with pytest.raises(ValueError, match="asymmetry"):
        AsymmetricLaplace(0.0, 1.0, 0.0)


def test_soft_laplace() -> None:
    d = SoftLaplace(LOC, SCALE)

    def closed(i: int, x: np.ndarray) -> np.ndarray:
        z = (x - LOC[i].item()) / SCALE[i].item()
        return math.log(2 / math.pi) - math.log(SCALE[i].item()) - np.logaddexp(z, -z)

    _check_real_line(d, closed)
    x = _t(-3.0, 0.1, 4.0)
    for i in range(3):
        want, _ = scipy.integrate.quad(
            lambda t, i=i: math.exp(closed(i, np.array(t))), -np.inf, x[i].item()
        )
        assert math.isclose(d.cdf(x)[i].item(), want, rel_tol=1e-8)
    torch.testing.assert_close(d.icdf(d.cdf(x)), x)
    with pytest.raises(ValueError, match="scale"):
        SoftLaplace(0.0, 0.0)


# --------------------------------------------------------------------------- transformed


def test_folded_normal_matches_scipy() -> None:
    mu, sigma = _t(0.0, 1.0, -2.0), _t(1.0, 0.5, 2.0)
    d = FoldedDistribution(Normal(mu, sigma))
    x = torch.linspace(0.01, 8, 50, dtype=F64).unsqueeze(-1)
    lp = d.log_prob(x)
    for i in range(3):
        ref = st.foldnorm(abs(mu[i].item()) / sigma[i].item(), scale=sigma[i].item())
        np.testing.assert_allclose(lp[:, i].numpy(), ref.logpdf(x[:, 0].numpy()), rtol=1e-10)
    g = torch.linspace(1e-9, 40, 200_001, dtype=F64).unsqueeze(-1)
    torch.testing.assert_close(
        torch.trapezoid(d.log_prob(g).exp(), g, dim=0), torch.ones(3, dtype=F64), rtol=0, atol=1e-6
    )
    s = d.sample((20_000,))
    assert s.shape == (20_000, 3) and bool((s >= 0).all())
    means = torch.tensor(
        [
            st.foldnorm(abs(mu[i].item()) / sigma[i].item(), scale=sigma[i].item()).mean()
            for i in range(3)
        ],
        dtype=F64,
    )
    assert torch.all((s.mean(0) - means).abs() < 5 * s.std(0) / math.sqrt(20_000))
    e = d.expand((2, 3))
    assert type(e) is FoldedDistribution and e.batch_shape == (2, 3)
    torch.testing.assert_close(e.log_prob(_t(0.5)), d.log_prob(_t(0.5)).expand(2, 3))
    with pytest.raises(ValueError, match="event_shape"):
        FoldedDistribution(Normal(torch.zeros(2), 1.0).to_event(1))
    with pytest.raises(ValueError, match="value"):
        d.log_prob(_t(-1.0))


def test_affine_beta_matches_scipy() -> None:
    a, b, loc, scale = _t(0.8, 2.0, 5.0), _t(1.5, 2.0, 0.9), _t(-1.0, 0.0, 3.0), _t(2.0, 0.5, 10.0)
    d = AffineBeta(a, b, loc, scale)
    assert d.batch_shape == (3,)
    u = torch.linspace(0.01, 0.99, 30, dtype=F64).unsqueeze(-1)
    x = loc + scale * u
    lp = d.log_prob(x)
    for i in range(3):
        ref = st.beta(a[i].item(), b[i].item(), loc=loc[i].item(), scale=scale[i].item())
        np.testing.assert_allclose(lp[:, i].numpy(), ref.logpdf(x[:, i].numpy()), rtol=1e-9)
    torch.testing.assert_close(d.low, loc)
    torch.testing.assert_close(d.high, loc + scale)
    _check_moments(d)
    s = d.rsample((1000,))
    assert bool(((s > loc) & (s < loc + scale)).all())
    assert d.has_rsample
    _check_expand(d, (2, 3), loc + 0.5 * scale)
    with pytest.raises(ValueError, match="scale"):
        AffineBeta(a, b, loc, -scale)
    with pytest.raises(ValueError, match="value"):
        d.log_prob(loc - 0.1)


# --------------------------------------------------------------------------- pyro cross-check


def test_log_prob_agrees_with_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    loc2 = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=F64)
    L = torch.tensor([[1.2, 0.0], [-0.4, 0.7]], dtype=F64)
    alpha = torch.tensor([[0.5, 1.0, 2.0], [3.0, 0.2, 1.1]], dtype=F64)
    k = torch.arange(0.0, 8.0, dtype=F64).unsqueeze(-1)
    xr = torch.linspace(-4, 4, 9, dtype=F64).unsqueeze(-1)
    cases = [
        ("ZeroInflatedPoisson", (RATE,), {"gate": GATE}, k),
        ("ZeroInflatedPoisson", (RATE,), {"gate_logits": _t(-1.0, 0.0, 2.0)}, k),
        (
            "ZeroInflatedNegativeBinomial",
            (_t(2.0, 3.0, 0.5),),
            {"probs": _t(0.2, 0.5, 0.9), "gate": GATE},
            k,
        ),
        ("GammaPoisson", (_t(0.7, 3.0, 10.0), _t(0.5, 1.0, 4.0)), {}, k),
        ("BetaBinomial", (_t(0.5, 2.0, 5.0), _t(1.5, 2.0, 0.7), _t(10.0, 8.0, 25.0)), {}, k),
        (
            "DirichletMultinomial",
            (alpha, 4),
            {},
            torch.tensor([[1.0, 1.0, 2.0], [4.0, 0.0, 0.0]], dtype=F64),
        ),
        ("MultivariateStudentT", (_t(3.0, 6.5), loc2, L), {}, torch.randn(4, 1, 2, dtype=F64)),
        ("Logistic", (LOC, SCALE), {}, xr),
        ("AsymmetricLaplace", (LOC, SCALE, _t(0.5, 1.0, 2.0)), {}, xr),
        ("SoftLaplace", (LOC, SCALE), {}, xr),
        (
            "AffineBeta",
            (_t(0.8, 2.0, 5.0), _t(1.5, 2.0, 0.9), _t(-1.0, 0.0, 3.0), _t(20.0, 10.0, 10.0)),
            {},
            _t(0.5, 1.0, 4.0),
        ),
    ]
    import vitorch.distributions.extra as extra

    for name, args, kwargs, value in cases:
        ours = getattr(extra, name)(*args, **kwargs).log_prob(value)
        theirs = getattr(pyro_dist, name)(*args, **kwargs).log_prob(value)
        torch.testing.assert_close(ours, theirs, msg=name)
        ours_e = getattr(extra, name)(*args, **kwargs)
        assert ours_e.batch_shape == getattr(pyro_dist, name)(*args, **kwargs).batch_shape
    mu, sigma = _t(0.0, 1.0, -2.0), _t(1.0, 0.5, 2.0)
    x = _t(0.3, 1.0, 2.5)
    torch.testing.assert_close(
        FoldedDistribution(Normal(mu, sigma)).log_prob(x),
        pyro_dist.FoldedDistribution(pyro_dist.Normal(mu, sigma)).log_prob(x),
    )
