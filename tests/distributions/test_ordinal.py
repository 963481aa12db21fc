"""OrderedLogistic, LKJ, LKJCorrCholesky, Empirical and Rejector.

Probabilities are checked against sigmoid differences written out by hand, the LKJ
density against the closed-form normaliser of Lewandowski, Kurowicka and Joe (2009)
(and the known volume ``π²/2`` of the 3x3 correlation matrices), sample moments against
exact values within a few standard errors, plus shapes, ``expand`` and error messages.
"""

from __future__ import annotations

import math

import pytest
import scipy.integrate
import scipy.special
import torch

from vitorch.distributions.distribution import TorchDistributionMixin
from vitorch.distributions.ordinal import (
    LKJ,
    Empirical,
    LKJCorrCholesky,
    OrderedLogistic,
    Rejector,
)
from vitorch.distributions.torch import LKJCholesky, Uniform

F64 = torch.float64


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ----------------------------------------------------------------------- OrderedLogistic


def test_ordered_logistic_probs_are_sigmoid_differences() -> None:
    predictor = torch.tensor([[-1.0, 0.0, 2.5], [0.3, 0.3, -4.0]], dtype=F64)
    cutpoints = torch.tensor([-1.5, 0.0, 0.7, 3.0], dtype=F64)
    d = OrderedLogistic(predictor, cutpoints)
    assert d.batch_shape == (2, 3) and d.event_shape == ()
    cuts = [-math.inf, *cutpoints.tolist(), math.inf]
    for i in range(2):
        for j in range(3):
            eta = predictor[i, j].item()
            for k in range(5):
                want = _sigmoid(cuts[k + 1] - eta) - _sigmoid(cuts[k] - eta)
                got = d.log_prob(torch.tensor(float(k), dtype=F64)).exp()[i, j].item()
                assert abs(got - want) < 1e-12, (i, j, k, got, want)
    values = torch.arange(5.0, dtype=F64).reshape(5, 1, 1)
    torch.testing.assert_close(d.log_prob(values).exp().sum(0), torch.ones(2, 3, dtype=F64))
    x = d.sample((4,))
    assert x.shape == (4, 2, 3) and ((x >= 0) & (x <= 4)).all()


def test_ordered_logistic_batched_cutpoints_expand_and_errors() -> None:
    predictor = torch.tensor([0.5, -0.5], dtype=F64)
    cutpoints = torch.tensor([[[-1.0, 1.0]], [[0.0, 2.0]], [[-3.0, -2.0]]], dtype=F64)
    d = OrderedLogistic(predictor, cutpoints)
    assert d.batch_shape == (3, 2)
    assert d.predictor.shape == (3, 2) and d.cutpoints.shape == (3, 2, 2)
    want = _sigmoid(2.0 - 0.5) - _sigmoid(0.0 - 0.5)
    assert abs(d.probs[1, 0, 1].item() - want) < 1e-12
    e = d.expand((4, 3, 2))
    assert type(e) is OrderedLogistic and e.batch_shape == (4, 3, 2)
    torch.testing.assert_close(e.probs, d.probs.expand(4, 3, 2, 3))
    assert e.predictor.shape == (4, 3, 2) and e.cutpoints.shape == (4, 3, 2, 2)
    assert isinstance(d, TorchDistributionMixin)
    with pytest.raises(ValueError, match="cutpoints"):
        OrderedLogistic(predictor, torch.tensor([1.0, 0.0]))  # not increasing
    with pytest.raises(ValueError, match="cutpoints must be a tensor with at least 1 dims"):
        OrderedLogistic(predictor, torch.tensor(1.0))
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        OrderedLogistic(torch.zeros(3), torch.zeros(2, 2).cumsum(-1))


# ---------------------------------------------------------------------------------- LKJ


def _lkj_log_normalizer(d: int, eta: float) -> float:
    """``log ∫ det(C)^(η-1) dC`` (Lewandowski, Kurowicka & Joe 2009)."""
    total = 0.0
    for k in range(1, d):
        b = eta + (d - k - 1) / 2
        total += (2 * eta - 2 + d - k) * (d - k) * math.log(2)
        total += (d - k) * (2 * scipy.special.gammaln(b) - scipy.special.gammaln(2 * b))
    return total


def _random_corr(d: int, n: int) -> torch.Tensor:
    a = torch.randn(n, d, d + 2, dtype=F64)
    cov = a @ a.mT
    s = cov.diagonal(dim1=-2, dim2=-1).rsqrt()
    return cov * s.unsqueeze(-1) * s.unsqueeze(-2)


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_lkj_log_prob_equals_closed_form(dim: int) -> None:
    eta = torch.tensor([0.5, 1.0, 2.7], dtype=F64)
    d = LKJ(dim, eta)
    assert d.batch_shape == (3,) and d.event_shape == (dim, dim)
    corr = _random_corr(dim, 5).unsqueeze(1)
    lp = d.log_prob(corr)
    assert lp.shape == (5, 3)
    logdet = torch.logdet(corr)
    want = torch.stack(
        [(e - 1) * logdet[:, 0] - _lkj_log_normalizer(dim, e) for e in eta.tolist()], -1
    )
    torch.testing.assert_close(lp, want, rtol=1e-10, atol=1e-10)


def test_lkj_normalises_and_known_volume() -> None:
    # 2x2: one correlation r; integrate the density over (-1, 1).
    for eta in (0.6, 1.0, 3.0):
        d = LKJ(2, torch.tensor(eta, dtype=F64))

        def dens(r: float, d=d) -> float:
            c = torch.tensor([[1.0, r], [r, 1.0]], dtype=F64)
            return d.log_prob(c).exp().item()

        total = scipy.integrate.quad(dens, -1, 1, epsabs=1e-12)[0]
        assert abs(total - 1) < 1e-8, (eta, total)
    # The 3x3 correlation matrices fill a volume of π²/2: uniform density 2/π² at η = 1.
    c = _random_corr(3, 4)
    torch.testing.assert_close(
        LKJ(3, 1.0).log_prob(c.float()).double(),
        torch.full((4,), math.log(2 / math.pi**2), dtype=F64),
    )


@pytest.mark.parametrize("dim,eta", [(2, 0.7), (3, 1.0), (4, 2.5)])
def test_lkj_sample_moments(dim: int, eta: float) -> None:
    n = 20_000
    x = LKJ(dim, torch.tensor(eta, dtype=F64)).sample((n,))
    assert x.shape == (n, dim, dim)
    torch.testing.assert_close(x.diagonal(dim1=-2, dim2=-1), torch.ones(n, dim, dtype=F64))
    torch.testing.assert_close(x, x.mT)
    assert (torch.linalg.eigvalsh(x) > 0).all()
    i, j = torch.triu_indices(dim, dim, 1)
    off = x[:, i, j]
    # Each off-diagonal entry is 2B - 1 with B ~ Beta(a, a), a = η - 1 + dim/2: mean 0,
    # variance 1 / (2a + 1) = 1 / (2η + dim - 1).
    var = 1 / (2 * eta + dim - 1)
    assert (off.mean(0).abs() <= 5 * math.sqrt(var / n)).all()
    sq = off.square()
    se = sq.std(0) / math.sqrt(n)
    assert ((sq.mean(0) - var).abs() <= 5 * se).all(), (sq.mean(0), var)
    # E[det C] = c(η + 1) / c(η), the ratio of normalisers of det^(η-1).
    det = torch.linalg.det(x)
    want = math.exp(_lkj_log_normalizer(dim, eta + 1) - _lkj_log_normalizer(dim, eta))
    assert abs(det.mean().item() - want) <= 5 * det.std().item() / math.sqrt(n), (det.mean(), want)


def test_lkj_mean_expand_and_errors() -> None:
    d = LKJ(3, torch.tensor([1.0, 2.0], dtype=F64))
    torch.testing.assert_close(d.mean, torch.eye(3, dtype=F64).expand(2, 3, 3))
    e = d.expand((4, 2))
    assert type(e) is LKJ and e.batch_shape == (4, 2) and e.event_shape == (3, 3)
    c = _random_corr(3, 1)[0]
    torch.testing.assert_close(e.log_prob(c), d.log_prob(c).expand(4, 2))
    assert e.sample().shape == (4, 2, 3, 3)
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        LKJ(1)
    with pytest.raises(ValueError, match="concentration"):
        LKJ(3, torch.tensor(-1.0))
    with pytest.raises(ValueError):
        d.log_prob(2 * torch.eye(3, dtype=F64))  # not a correlation matrix


def test_lkj_corr_cholesky_is_deprecated_alias() -> None:
    with pytest.warns(FutureWarning, match="deprecated"):
        d = LKJCorrCholesky(3, torch.tensor([0.5, 2.0], dtype=F64))
    ref = LKJCholesky(3, torch.tensor([0.5, 2.0], dtype=F64))
    assert isinstance(d, LKJCholesky) and d.batch_shape == (2,)
    chol = torch.linalg.cholesky(_random_corr(3, 4)).unsqueeze(1)
    torch.testing.assert_close(d.log_prob(chol), ref.log_prob(chol))
    e = d.expand((3, 2))
    assert type(e) is LKJCorrCholesky and e.batch_shape == (3, 2)
    # Draws of the factor give LKJ moments: exchangeable entries, variance 1/(2η + d - 1).
    n = 20_000
    chol = d.sample((n,))
    assert chol.shape == (n, 2, 3, 3)
    corr = chol @ chol.mT
    sq = corr[..., [0, 0, 1], [1, 2, 2]].square()
    var = 1 / (2 * torch.tensor([0.5, 2.0], dtype=F64) + 2)
    se = sq.std(0) / math.sqrt(n)
    assert ((sq.mean(0) - var.unsqueeze(-1)).abs() <= 5 * se).all(), (sq.mean(0), var)


# ------------------------------------------------------------------------------ Empirical


def test_empirical_sampling_frequencies_match_weights() -> None:
    samples = torch.tensor([[-1.0, 0.0, 2.0, 5.0], [3.0, 3.0, 4.0, 7.0]], dtype=F64)
    weights = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 1.0, 0.0, 4.0]], dtype=F64)
    d = Empirical(samples, weights.log())
    assert d.batch_shape == (2,) and d.event_shape == ()
    n = 40_000
    x = d.sample((n,))
    assert x.shape == (n, 2)
    probs = weights / weights.sum(-1, keepdim=True)
    for b in range(2):
        for value in samples[b].unique():
            p = probs[b][samples[b] == value].sum()
            freq = (x[:, b] == value).to(F64).mean()
            assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12, (b, value, freq, p)
            # Repeated support points add their weights.
            value_b = torch.tensor([value, value], dtype=F64)
            assert abs(d.log_prob(value_b)[b].exp() - p) < 1e-12
    assert d.log_prob(torch.tensor([0.5, 0.5], dtype=F64)).eq(-math.inf).all()
    torch.testing.assert_close(d.mean, (probs * samples).sum(-1))
    var = (probs * (samples - d.mean.unsqueeze(-1)).square()).sum(-1)
    torch.testing.assert_close(d.variance, var)


def test_empirical_vector_events_shapes_and_expand() -> None:
    samples = torch.randn(2, 3, 10, dtype=F64)
    d = Empirical(samples, torch.zeros(2, 3, dtype=F64))
    assert d.batch_shape == (2,) and d.event_shape == (10,)
    assert d.sample_size == 6
    x = d.sample()
    assert x.shape == (2, 10)
    # Each draw is one of its batch element's stored vectors.
    assert ((x.unsqueeze(1) == samples).all(-1).any(-1)).all()
    torch.testing.assert_close(d.log_prob(x), torch.full((2,), -math.log(3), dtype=F64))
    xs = d.sample((5,))
    assert xs.shape == (5, 2, 10) and d.log_prob(xs).shape == (5, 2)
    torch.testing.assert_close(d.mean, samples.mean(1))
    torch.testing.assert_close(d.variance, samples.var(1, unbiased=False))
    assert d.enumerate_support() is samples
    e = d.expand((4, 2))
    assert type(e) is Empirical and e.batch_shape == (4, 2) and e.event_shape == (10,)
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x).expand(4, 2))
    assert e.sample().shape == (4, 2, 10)


def test_empirical_errors() -> None:
    with pytest.raises(ValueError, match="log_weights must have the leftmost shape of samples"):
        Empirical(torch.randn(4, 3), torch.zeros(3))
    d = Empirical(torch.randn(2, 3, 10), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"value must end in the event shape \(10,\)"):
        d.log_prob(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        d.log_prob(torch.zeros(3, 10))
    with pytest.raises(ValueError, match="convert the samples to a floating dtype"):
        _ = Empirical(torch.arange(4), torch.zeros(4)).mean


# ------------------------------------------------------------------------------- Rejector


def _beta21_rejector() -> Rejector:
    # Uniform proposals accepted with probability x: density 2x on (0, 1), Z = 1/2.
    propose = Uniform(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    return Rejector(propose, lambda x: x.log(), math.log(0.5))


def test_rejector_log_prob_and_sample_moments() -> None:
    d = _beta21_rejector()
    assert d.batch_shape == (3,) and d.event_shape == () and d.has_rsample
    x = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    torch.testing.assert_close(d.log_prob(x), (2 * x).log())
    n = 20_000
    draws = d.rsample((n,))
    assert draws.shape == (n, 3)
    se_mean = math.sqrt(1 / 18 / n)
    assert ((draws.mean(0) - 2 / 3).abs() <= 5 * se_mean).all()
    sq = (draws - 2 / 3).square()
    assert ((sq.mean(0) - 1 / 18).abs() <= 5 * sq.std(0) / math.sqrt(n)).all()
    assert d.sample().shape == (3,)
    # Integrates to one.
    total = scipy.integrate.quad(
        lambda t: math.exp(d.log_prob(torch.tensor(t, dtype=F64))[0]), 0, 1
    )[0]
    assert abs(total - 1) < 1e-10


def test_rejector_errors() -> None:
    with pytest.raises(TypeError, match="log_prob_accept must be callable"):
        Rejector(Uniform(0.0, 1.0), 0.5, 0.0)


def test_matches_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    predictor = torch.randn(4, dtype=F64)
    cutpoints = torch.tensor([-1.0, 0.5, 2.0], dtype=F64)
    k = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64)
    torch.testing.assert_close(
        OrderedLogistic(predictor, cutpoints).log_prob(k),
        pyro_dist.OrderedLogistic(predictor, cutpoints).log_prob(k),
    )
    eta = torch.tensor([0.5, 3.0], dtype=F64)
    c = _random_corr(4, 3).unsqueeze(1)
    torch.testing.assert_close(LKJ(4, eta).log_prob(c), pyro_dist.LKJ(4, eta).log_prob(c))
    samples = torch.tensor([1.0, 2.0, 2.0, 5.0], dtype=F64)
    logw = torch.tensor([0.1, -0.3, 0.7, 0.0], dtype=F64)
    v = torch.tensor(2.0, dtype=F64)
    ours, theirs = Empirical(samples, logw), pyro_dist.Empirical(samples, logw)
    torch.testing.assert_close(ours.log_prob(v), theirs.log_prob(v))
    torch.testing.assert_close(ours.mean, theirs.mean)
    torch.testing.assert_close(ours.variance, theirs.variance)


@pytest.mark.parametrize("dim, eta", [(3, 1.0), (4, 2.0)])
def test_lkj_cholesky_sample_has_the_lkj_moments(dim, eta):
    """vitorch's LKJCholesky samples exactly (torch 2.13's own sampler does not: 0.30 vs 0.25)."""
    from vitorch.distributions import LKJCholesky

    torch.manual_seed(0)
    n = 100_000
    chol = LKJCholesky(dim, eta).sample((n,))
    corr = chol @ chol.mT
    expected = 1 / (2 * eta + dim - 1)
    # The sample variance of an off-diagonal entry; its sd is below 0.002 at this n.
    for i in range(dim):
        for j in range(i):
            assert corr[:, i, j].var().item() == pytest.approx(expected, abs=0.006)
    assert torch.allclose(corr.diagonal(dim1=-2, dim2=-1), torch.ones(dim), atol=1e-5)
