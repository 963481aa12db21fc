"""The families in vitorch.distributions.families.

Densities are checked against SciPy, closed forms or numerical integration (and
normalisation); moments against closed forms and samples; the NaN-masked normals
against the marginal over the observed entries computed by hand; the mixtures'
``rsample`` gradients against the exact gradient of a closed-form expectation and
against finite differences of the quantile map they differentiate. Pyro is used
only for cross-checks, behind ``importorskip``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats as st
import torch

from vitorch.distributions.distribution import TorchDistributionMixin
from vitorch.distributions.extra import AsymmetricLaplace
from vitorch.distributions.families import (
    ExtendedBetaBinomial,
    ExtendedBinomial,
    GaussianScaleMixture,
    LogNormalNegativeBinomial,
    MixtureOfDiagNormals,
    MixtureOfDiagNormalsSharedCovariance,
    NanMaskedMultivariateNormal,
    NanMaskedNormal,
    SkewLogistic,
    SoftAsymmetricLaplace,
)
from vitorch.distributions.torch import Normal

F64 = torch.float64
NAN = math.nan


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _check_moments(d, n: int = 40_000, z: float = 5.0) -> None:
    """Sample mean/variance within ``z`` standard errors of ``d.mean`` / ``d.variance``."""
    x = d.sample((n,)).to(F64)
    m_hat = x.mean(0)
    assert torch.all((m_hat - d.mean).abs() <= z * (d.variance / n).sqrt()), (m_hat, d.mean)
    sq = (x - m_hat).square()
    se_var = (sq.var(0) / n).sqrt()
    assert torch.all((sq.mean(0) - d.variance).abs() <= z * se_var), (sq.mean(0), d.variance)


def _check_expand(d, batch_shape: tuple[int, ...], value: torch.Tensor) -> None:
    e = d.expand(batch_shape)
    assert type(e) is type(d)
    assert e.batch_shape == batch_shape and e.event_shape == d.event_shape
    assert e.sample().shape == torch.Size(batch_shape) + d.event_shape
    torch.testing.assert_close(e.log_prob(value), d.log_prob(value).expand(batch_shape))
    assert isinstance(d, TorchDistributionMixin)


def _quad(f, lo: float = -np.inf, hi: float = np.inf) -> float:
    return scipy.integrate.quad(f, lo, hi, epsabs=1e-12, epsrel=1e-10, limit=200)[0]


# --------------------------------------------------------------------------- SkewLogistic


@pytest.mark.parametrize("asym", [0.3, 1.0, 4.0])
def test_skew_logistic_matches_scipy_genlogistic(asym: float) -> None:
    loc, scale = 0.5, 2.0
    d = SkewLogistic(_t(loc), _t(scale), _t(asym))
    ref = st.genlogistic(asym, loc=loc, scale=scale)
    x = torch.linspace(-20, 30, 41, dtype=F64)
    np.testing.assert_allclose(d.log_prob(x).numpy(), ref.logpdf(x.numpy()), rtol=1e-10)
    np.testing.assert_allclose(d.cdf(x).numpy(), ref.cdf(x.numpy()), rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(d.mean.item(), ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(d.variance.item(), ref.var(), rtol=1e-8)  # SciPy integrates
    u = _t(1e-12, 0.1, 0.5, 0.9, 1 - 1e-12)
    torch.testing.assert_close(d.cdf(d.icdf(u)), u, rtol=1e-9, atol=0)
    assert math.isclose(_quad(lambda v: d.log_prob(_t(v)).exp().item()), 1.0, rel_tol=1e-9)
    _check_moments(d)


def test_skew_logistic_rsample_gradient_is_implicit_cdf_derivative() -> None:
    # With u fixed, z = F^{-1}(u; a), so dz/da = -(dF/da) / p(z).
    torch.manual_seed(0)
    a = _t(2.5).requires_grad_()
    d = SkewLogistic(_t(0.3), _t(1.7), a)
    z = d.rsample((5,))
    (grad,) = torch.autograd.grad(z.sum(), a)
    zd = z.detach()
    a2 = a.detach().clone().requires_grad_()
    cdf = SkewLogistic(_t(0.3), _t(1.7), a2).cdf(zd)
    dF = torch.stack([torch.autograd.grad(c, a2, retain_graph=True)[0] for c in cdf])
    p = SkewLogistic(_t(0.3), _t(1.7), a.detach()).log_prob(zd).exp()
    torch.testing.assert_close(grad, (-dF / p).sum().reshape(1), rtol=1e-8, atol=1e-10)


def test_skew_logistic_shapes_and_errors() -> None:
    d = SkewLogistic(torch.zeros(3, dtype=F64), 1.0)
    assert d.batch_shape == (3,)
    torch.testing.assert_close(d.asymmetry, torch.ones(3, dtype=F64))
    _check_expand(d, (2, 3), _t(0.7))
    with pytest.raises(ValueError, match="scale"):
        SkewLogistic(_t(0.0), _t(-1.0))
    with pytest.raises(ValueError, match="asymmetry"):
        SkewLogistic(_t(0.0), _t(1.0), _t(0.0))


# --------------------------------------------------------------------------- SoftAsymmetricLaplace


@pytest.mark.parametrize("asym,soft", [(1.0, 1.0), (0.5, 0.3), (2.0, 2.0)])
def test_soft_asymmetric_laplace_is_the_convolution(asym: float, soft: float) -> None:
    loc, scale = -0.4, 1.3
    d = SoftAsymmetricLaplace(_t(loc), _t(scale), _t(asym), _t(soft))
    left, right, s = scale * asym, scale / asym, scale * soft

    def laplace(a: float) -> float:
        return math.exp(-abs(a) / (left if a < 0 else right)) / (left + right)

    for x in (-6.0, -1.0, -0.4, 0.0, 2.5, 9.0):
        want = _quad(lambda a, x=x: laplace(a) * st.norm.pdf(x - loc - a, scale=s), -np.inf, 0)
        want += _quad(lambda a, x=x: laplace(a) * st.norm.pdf(x - loc - a, scale=s), 0, np.inf)
        assert math.isclose(d.log_prob(_t(x)).item(), math.log(want), rel_tol=1e-8)
    pdf = lambda v, k=0: v**k * d.log_prob(_t(v)).exp().item()  # noqa: E731
    assert math.isclose(_quad(pdf), 1.0, rel_tol=1e-9)
    assert math.isclose(_quad(lambda v: pdf(v, 1)), d.mean.item(), rel_tol=1e-8, abs_tol=1e-9)
    second = _quad(lambda v: pdf(v, 2))
    assert math.isclose(second - d.mean.item() ** 2, d.variance.item(), rel_tol=1e-8)
    _check_moments(d)


def test_soft_asymmetric_laplace_far_tails_and_limit() -> None:
    d = SoftAsymmetricLaplace(_t(0.0), _t(1.0), _t(2.0), _t(0.5))
    lp = d.log_prob(_t(-400.0, 400.0))
    assert torch.isfinite(lp).all()
    # Far out only the exponential tail matters: slopes are 1/left and -1/right.
    slope = d.log_prob(_t(-301.0, 301.0)) - d.log_prob(_t(-300.0, 300.0))
    torch.testing.assert_close(slope, _t(-1 / 2.0, -2.0), rtol=1e-6, atol=0)
    sharp = SoftAsymmetricLaplace(_t(0.0), _t(1.0), _t(2.0), _t(1e-4))
    x = _t(-3.0, -1.0, 0.5, 2.0)
    lap = AsymmetricLaplace(_t(0.0), _t(1.0), _t(2.0))
    torch.testing.assert_close(sharp.log_prob(x), lap.log_prob(x), rtol=1e-5, atol=1e-5)


def test_soft_asymmetric_laplace_shapes_and_errors() -> None:
    d = SoftAsymmetricLaplace(torch.zeros(2, 1, dtype=F64), torch.ones(3, dtype=F64))
    assert d.batch_shape == (2, 3)
    assert d.rsample((4,)).shape == (4, 2, 3)
    _check_expand(d, (5, 2, 3), _t(0.2))
    with pytest.raises(ValueError, match="softness"):
        SoftAsymmetricLaplace(_t(0.0), _t(1.0), _t(1.0), _t(-1.0))


# --------------------------------------------------------------------------- Extended counts


def test_extended_binomial_matches_scipy_and_masks() -> None:
    n = _t(6.0, 0.0, -2.0).unsqueeze(-1)
    p = 0.3
    d = ExtendedBinomial(n, probs=_t(p))
    k = torch.arange(-3.0, 9.0, dtype=F64)
    lp = d.log_prob(k)
    assert lp.shape == (3, 12)
    for i, ni in enumerate((6, 0, -2)):
        want = st.binom(max(ni, 0), p).logpmf(k.numpy()) if ni >= 0 else np.full(12, -np.inf)
        np.testing.assert_allclose(lp[i].numpy(), want, rtol=1e-10)
    dl = ExtendedBinomial(n, logits=torch.logit(_t(p)))
    torch.testing.assert_close(dl.log_prob(k), lp)
    logits = _t(0.2).requires_grad_()
    ExtendedBinomial(_t(3.0), logits=logits).log_prob(k).clamp(min=-1e3).sum().backward()
    assert torch.isfinite(logits.grad)
    assert bool(d.support.check(_t(-5.0))) and not bool(d.support.check(_t(0.5)))
    with pytest.raises(ValueError, match="total_count"):
        ExtendedBinomial(_t(2.5), probs=_t(0.5))


def test_extended_beta_binomial_matches_scipy_and_masks() -> None:
    a, b = _t(0.7), _t(2.5)
    n = _t(7.0, -1.0).unsqueeze(-1)
    d = ExtendedBetaBinomial(a, b, n)
    k = torch.arange(-2.0, 10.0, dtype=F64)
    lp = d.log_prob(k)
    np.testing.assert_allclose(
        lp[0].numpy(), st.betabinom(7, 0.7, 2.5).logpmf(k.numpy()), rtol=1e-10
    )
    assert torch.all(lp[1] == -math.inf)
    conc = _t(1.5).requires_grad_()
    ExtendedBetaBinomial(conc, b, _t(4.0)).log_prob(k).clamp(min=-1e3).sum().backward()
    assert torch.isfinite(conc.grad)
    _check_expand(ExtendedBetaBinomial(a, b, _t(5.0)), (3,), _t(2.0))
    with pytest.raises(ValueError, match="concentration1"):
        ExtendedBetaBinomial(-a, b, _t(3.0))


def test_extended_cross_check_with_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    n = _t(5.0, -1.0, 3.0).unsqueeze(-1)
    k = torch.arange(0.0, 6.0, dtype=F64)
    ours = ExtendedBinomial(n, probs=_t(0.35)).log_prob(k)
    theirs = pyro_dist.ExtendedBinomial(n, probs=_t(0.35)).log_prob(k)
    torch.testing.assert_close(ours, theirs)
    ours = ExtendedBetaBinomial(_t(1.2), _t(0.8), n).log_prob(k)
    theirs = pyro_dist.ExtendedBetaBinomial(_t(1.2), _t(0.8), n).log_prob(k)
    torch.testing.assert_close(ours, theirs)


# --------------------------------------------------------------------------- LogNormalNegativeBinomial


def _lnnb_pmf_by_integration(k: int, nu: float, ell: float, sigma: float) -> float:
    def integrand(e: float) -> float:
        p = 1 / (1 + math.exp(-(ell + e)))  # torch's NegativeBinomial success probability
        return st.norm.pdf(e, scale=sigma) * st.nbinom.pmf(k, nu, 1 - p)

    return _quad(integrand, -12 * sigma, 12 * sigma)


def test_lnnb_log_prob_is_the_normal_mixture() -> None:
    nu, ell, sigma = 2.5, -0.3, 0.7
    k = torch.arange(0.0, 12.0, dtype=F64)
    want = np.log([_lnnb_pmf_by_integration(int(i), nu, ell, sigma) for i in k])
    fine = LogNormalNegativeBinomial(_t(nu), _t(ell), _t(sigma), num_quad_points=48)
    np.testing.assert_allclose(fine.log_prob(k).numpy(), want, rtol=1e-9)
    coarse = LogNormalNegativeBinomial(_t(nu), _t(ell), _t(sigma))
    np.testing.assert_allclose(coarse.log_prob(k).numpy(), want, rtol=1e-3)


def test_lnnb_normalises_and_moments() -> None:
    d = LogNormalNegativeBinomial(_t(3.0, 1.2), _t(-1.0, 0.2), _t(0.4, 0.6), num_quad_points=48)
    k = torch.arange(0.0, 3000.0, dtype=F64).unsqueeze(-1)
    p = d.log_prob(k).exp()
    torch.testing.assert_close(p.sum(0), torch.ones(2, dtype=F64))
    torch.testing.assert_close((k * p).sum(0), d.mean, rtol=1e-8, atol=0)
    second = (k.square() * p).sum(0)
    torch.testing.assert_close(second - d.mean**2, d.variance, rtol=1e-7, atol=0)
    torch.manual_seed(1)
    _check_moments(d, n=60_000)


def test_lnnb_shapes_and_errors() -> None:
    d = LogNormalNegativeBinomial(_t(2.0), torch.zeros(3, dtype=F64), _t(0.5))
    assert d.batch_shape == (3,) and d.quad_points.shape == (8,)
    _check_expand(d, (2, 3), _t(4.0))
    assert d.expand((2, 3)).num_quad_points == 8
    with pytest.raises(ValueError, match="num_quad_points must be a positive int, got 0"):
        LogNormalNegativeBinomial(_t(2.0), _t(0.0), _t(0.5), num_quad_points=0)
    with pytest.raises(ValueError, match="multiplicative_noise_scale"):
        LogNormalNegativeBinomial(_t(2.0), _t(0.0), _t(-0.5))


def test_lnnb_cross_check_with_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    args = (_t(2.0, 5.0), _t(0.3, -2.0), _t(0.5, 1.1))
    k = torch.arange(0.0, 20.0, dtype=F64).unsqueeze(-1)
    ours = LogNormalNegativeBinomial(*args, num_quad_points=10)
    theirs = pyro_dist.LogNormalNegativeBinomial(*args, num_quad_points=10)
    torch.testing.assert_close(ours.log_prob(k), theirs.log_prob(k))
    torch.testing.assert_close(ours.variance, theirs.variance)


# --------------------------------------------------------------------------- NaN-masked normals


def test_nan_masked_normal_zeroes_missing_entries() -> None:
    loc = _t(0.0, 1.0, -2.0, 0.5).requires_grad_()
    scale = _t(1.0, 0.5, 2.0, 3.0)
    data = _t(0.5, NAN, 0.9, math.inf)
    lp = NanMaskedNormal(loc, scale).log_prob(data)
    want = st.norm(loc.detach().numpy(), scale.numpy()).logpdf(_t(0.5, 0, 0.9, 0).numpy())
    want[[1, 3]] = 0.0
    np.testing.assert_allclose(lp.detach().numpy(), want, rtol=1e-12)
    lp.sum().backward()
    assert loc.grad[1] == 0 and loc.grad[3] == 0 and torch.isfinite(loc.grad).all()
    full = _t(0.5, 0.1, 0.9, 2.0)
    torch.testing.assert_close(
        NanMaskedNormal(loc, scale).log_prob(full), Normal(loc, scale).log_prob(full)
    )
    # The value may have fewer dims than the batch.
    assert NanMaskedNormal(loc.detach().expand(3, 4), scale).log_prob(data).shape == (3, 4)
    assert type(NanMaskedNormal(loc.detach(), scale).expand((2, 4))) is NanMaskedNormal


def test_nan_masked_mvn_equals_hand_marginals() -> None:
    torch.manual_seed(0)
    p = 4
    a = torch.randn(2, p, p, dtype=F64)
    cov = a @ a.mT + 0.5 * torch.eye(p, dtype=F64)
    loc = torch.randn(2, p, dtype=F64)
    data = torch.randn(5, 2, p, dtype=F64)
    masks = torch.rand(5, 2, p) < 0.4
    masks[0, 0] = True  # every entry missing
    masks[1, 1] = False  # none missing
    data[masks] = NAN
    lp = NanMaskedMultivariateNormal(loc, cov).log_prob(data)
    assert lp.shape == (5, 2)
    wide = NanMaskedMultivariateNormal(loc, cov).expand((5, 2))
    assert type(wide) is NanMaskedMultivariateNormal
    torch.testing.assert_close(wide.log_prob(data), lp)
    for i in range(5):
        for b in range(2):
            obs = ~masks[i, b]
            if not obs.any():
                want = 0.0
            else:
                sub = cov[b][obs][:, obs].numpy()
                want = st.multivariate_normal(loc[b][obs].numpy(), sub).logpdf(
                    data[i, b][obs].numpy()
                )
            assert math.isclose(lp[i, b].item(), want, rel_tol=1e-10, abs_tol=1e-12)


def test_nan_masked_mvn_gradients_match_marginal() -> None:
    tril = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.5, 0.2, 1.5]], dtype=F64)
    loc = _t(0.1, -0.2, 0.3)
    value = _t(0.4, NAN, -1.0)
    tril1, loc1 = tril.clone().requires_grad_(), loc.clone().requires_grad_()
    NanMaskedMultivariateNormal(loc1, scale_tril=tril1).log_prob(value).backward()
    tril2, loc2 = tril.clone().requires_grad_(), loc.clone().requires_grad_()
    cov = tril2 @ tril2.T
    keep = torch.tensor([0, 2])
    marginal = torch.distributions.MultivariateNormal(loc2[keep], cov[keep][:, keep])
    marginal.log_prob(value[keep]).backward()
    torch.testing.assert_close(loc1.grad, loc2.grad)
    torch.testing.assert_close(tril1.grad, tril2.grad)
    assert loc1.grad[1] == 0


def test_nan_masked_cross_check_with_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    cov = _t(2.0, 0.3, 0.1, 0.3, 1.0, -0.2, 0.1, -0.2, 1.5).reshape(3, 3)
    loc = _t(0.0, 1.0, -1.0)
    data = torch.tensor(
        [[0.1, 0.2, 3.4], [0.5, 0.1, NAN], [0.6, NAN, NAN], [NAN, 0.5, NAN], [NAN] * 3],
        dtype=F64,
    )
    torch.testing.assert_close(
        NanMaskedMultivariateNormal(loc, cov).log_prob(data),
        pyro_dist.NanMaskedMultivariateNormal(loc, cov).log_prob(data),
    )
    torch.testing.assert_close(
        NanMaskedNormal(loc, 2.0).log_prob(data),
        pyro_dist.NanMaskedNormal(loc, torch.full((3,), 2.0, dtype=F64)).log_prob(data),
    )


# --------------------------------------------------------------------------- diagonal mixtures


def _mixture_params(seed: int, k: int = 3, d: int = 3):
    g = torch.Generator().manual_seed(seed)
    locs = torch.randn(k, d, generator=g, dtype=F64) * 1.5
    scales = torch.rand(k, d, generator=g, dtype=F64) + 0.4
    logits = torch.randn(k, generator=g, dtype=F64)
    return locs, scales, logits


def _mixture_from(kind: str, locs, scales, logits):
    """(distribution, component locs (K, D), component scales (K, D))."""
    if kind == "diag":
        return MixtureOfDiagNormals(locs, scales, logits), locs, scales
    if kind == "shared":
        d = MixtureOfDiagNormalsSharedCovariance(locs, scales[0], logits)
        return d, locs, scales[0].expand_as(locs)
    d = GaussianScaleMixture(scales[0], logits, scales[:, 1])
    return d, torch.zeros_like(locs), scales[:, 1:2] * scales[0]


def _hand_mixture_log_prob(x, locs, scales, logits) -> np.ndarray:
    comp = st.norm(locs.numpy(), scales.numpy()).logpdf(x.numpy()[..., None, :]).sum(-1)
    logw = logits.numpy() - scipy.special.logsumexp(logits.numpy())
    return scipy.special.logsumexp(logw + comp, axis=-1)


KINDS = ["diag", "shared", "gsm"]


@pytest.mark.parametrize("kind", KINDS)
def test_mixture_log_prob_and_moments(kind: str) -> None:
    torch.manual_seed(0)
    d, locs, scales = _mixture_from(kind, *_mixture_params(3))
    logits = d.component_logits
    x = torch.randn(7, 3, dtype=F64) * 3
    np.testing.assert_allclose(
        d.log_prob(x).numpy(), _hand_mixture_log_prob(x, locs, scales, logits), rtol=1e-12
    )
    probs = torch.softmax(logits, -1).unsqueeze(-1)
    mean = (probs * locs).sum(0)
    torch.testing.assert_close(d.mean, mean)
    torch.testing.assert_close(d.variance, (probs * (scales**2 + locs**2)).sum(0) - mean**2)
    _check_moments(d)


def test_mixture_one_dim_normalises() -> None:
    locs, scales, logits = _mixture_params(5, d=1)
    d = MixtureOfDiagNormals(locs, scales, logits)
    assert math.isclose(_quad(lambda v: d.log_prob(_t(v)).exp().item()), 1.0, rel_tol=1e-10)


def _exact_quadratic_expectation(probs, locs, scales, a, b):
    """E[a.z + z' B z] for the mixture: E z_i z_j = sum_k pi_k (mu_ki mu_kj + d_ij s_ki^2)."""
    mean = (probs.unsqueeze(-1) * locs).sum(-2)
    outer = locs.unsqueeze(-1) * locs.unsqueeze(-2) + torch.diag_embed(scales**2)
    second = (probs[..., None, None] * outer).sum(-3)
    return (a * mean).sum() + (b * second).sum()


@pytest.mark.parametrize("kind", KINDS)
def test_mixture_rsample_gradient_of_quadratic_expectation(kind: str) -> None:
    torch.manual_seed(1)
    raw = [p.clone().requires_grad_() for p in _mixture_params(11)]
    a = _t(0.5, -1.0, 2.0)
    b = torch.tensor([[1.0, 0.6, 0.0], [0.6, -0.5, 0.4], [0.0, 0.4, 0.8]], dtype=F64)
    d, locs, scales = _mixture_from(kind, *raw)
    exact = torch.autograd.grad(
        _exact_quadratic_expectation(torch.softmax(raw[2], -1), locs, scales, a, b),
        raw,
        materialize_grads=True,  # GSM never uses locs
    )
    batches = []
    for _ in range(20):
        z = _mixture_from(kind, *raw)[0].rsample((2000,))
        f = (z * a).sum(-1) + torch.einsum("ni,ij,nj->n", z, b, z)
        grads = torch.autograd.grad(f.mean(), raw, materialize_grads=True)
        batches.append(torch.cat([g.flatten() for g in grads]))
    est = torch.stack(batches)
    se = est.std(0) / math.sqrt(len(batches))
    want = torch.cat([g.flatten() for g in exact])
    used = want != 0  # e.g. GSM has no locs: their gradient is exactly zero
    assert torch.all((est.mean(0) - want).abs() <= 5 * se + 1e-12), (est.mean(0), want)
    assert torch.all(se[used] < 0.1 * want.abs().max())  # the check has power
    assert want[-3:].abs().max() > 0.1  # logits matter, and a naive draw would miss them


def _cond_cdf(z_prev, zi, i, locs, scales, logits):
    """P(Z_i <= zi | Z_<i = z_prev) for a diagonal mixture (any leading batch dims)."""
    log_w = logits.log_softmax(-1)
    for j in range(i):
        comp = torch.distributions.Normal(locs[..., j], scales[..., j])
        log_w = log_w + comp.log_prob(z_prev[..., j : j + 1])
    w = torch.softmax(log_w, -1)
    return (w * torch.special.ndtr((zi.unsqueeze(-1) - locs[..., i]) / scales[..., i])).sum(-1)


def _quantile_map(u, locs, scales, logits):
    """Inverse Rosenblatt map by bisection: z_i = F_i^{-1}(u_i | z_<i)."""
    z = torch.zeros(locs.shape[:-2] + (locs.size(-1),), dtype=F64)
    for i in range(locs.size(-1)):
        lo = torch.full(z.shape[:-1], -60.0, dtype=F64)
        hi = -lo
        for _ in range(110):
            mid = 0.5 * (lo + hi)
            below = _cond_cdf(z, mid, i, locs, scales, logits) < u[i]
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        z[..., i] = 0.5 * (lo + hi)
    return z


def test_mixture_rsample_gradient_is_exact_quantile_derivative() -> None:
    torch.manual_seed(2)
    locs, scales, logits = (p.requires_grad_() for p in _mixture_params(4, k=3, d=2))
    z = MixtureOfDiagNormals(locs, scales, logits).rsample()
    jac = torch.stack(
        [
            torch.cat(
                [
                    g.flatten()
                    for g in torch.autograd.grad(z[c], (locs, scales, logits), retain_graph=True)
                ]
            )
            for c in range(2)
        ]
    )
    theta = torch.cat([locs.detach().flatten(), scales.detach().flatten(), logits.detach()])
    zd = z.detach()
    u = [
        _cond_cdf(zd, zd[0], 0, locs.detach(), scales.detach(), logits.detach()),
        _cond_cdf(zd, zd[1], 1, locs.detach(), scales.detach(), logits.detach()),
    ]
    h = 1e-5
    steps = torch.eye(theta.numel(), dtype=F64) * h
    thetas = torch.cat([theta + steps, theta - steps])
    z_pm = _quantile_map(
        u, thetas[:, :6].reshape(-1, 3, 2), thetas[:, 6:12].reshape(-1, 3, 2), thetas[:, 12:]
    )
    fd = (z_pm[: theta.numel()] - z_pm[theta.numel() :]) / (2 * h)
    torch.testing.assert_close(jac, fd.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_mixture_shapes_expand_and_batches(kind: str) -> None:
    locs, scales, logits = _mixture_params(6)
    d, _, _ = _mixture_from(kind, locs, scales, logits)
    assert d.batch_shape == () and d.event_shape == (3,)
    assert d.rsample((4, 2)).shape == (4, 2, 3)
    _check_expand(d, (2, 5), torch.zeros(3, dtype=F64))
    e = d.expand((2,))
    x = torch.randn(4, 2, 3, dtype=F64)
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x))
    # A real batch: the log_prob of each batch element is its own mixture's.
    batched = MixtureOfDiagNormals(torch.stack([locs, -locs]), scales, logits)
    assert batched.batch_shape == (2,)
    torch.testing.assert_close(
        batched.log_prob(x)[:, 1], MixtureOfDiagNormals(-locs, scales, logits).log_prob(x[:, 1])
    )


def test_mixture_errors() -> None:
    locs, scales, logits = _mixture_params(7)
    with pytest.raises(
        ValueError, match=r"locs must be a tensor of shape \(\.\.\., K, D\), got shape \(3,\)"
    ):
        MixtureOfDiagNormals(locs[0], scales, logits)
    with pytest.raises(ValueError, match=r"coord_scale must end in \(K, D\)=\(3, 3\)"):
        MixtureOfDiagNormals(locs, scales[:, :2], logits)
    with pytest.raises(ValueError, match="component_logits must end in K=3"):
        MixtureOfDiagNormalsSharedCovariance(locs, scales[0], logits[:2])
    with pytest.raises(ValueError, match="coord_scale must end in D=3"):
        MixtureOfDiagNormalsSharedCovariance(locs, scales[0, :2], logits)
    with pytest.raises(ValueError, match="component_scale must end in K=3"):
        GaussianScaleMixture(scales[0], logits, scales[0, :2])
    with pytest.raises(ValueError, match="coord_scale"):
        MixtureOfDiagNormals(locs, -scales, logits)


def test_mixture_cross_check_with_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    locs, scales, logits = _mixture_params(8)
    x = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(
        MixtureOfDiagNormals(locs, scales, logits).log_prob(x),
        pyro_dist.MixtureOfDiagNormals(locs, scales, logits).log_prob(x),
    )
    torch.testing.assert_close(
        MixtureOfDiagNormalsSharedCovariance(locs, scales[0], logits).log_prob(x),
        pyro_dist.MixtureOfDiagNormalsSharedCovariance(locs, scales[0], logits).log_prob(x),
    )
    gsm = pyro_dist.GaussianScaleMixture(scales[0], logits, scales[:, 1])
    ours = GaussianScaleMixture(scales[0], logits, scales[:, 1]).log_prob(x)
    torch.testing.assert_close(ours, torch.stack([gsm.log_prob(row) for row in x]))


def test_skew_and_soft_cross_check_with_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    x = torch.linspace(-10, 10, 21, dtype=F64)
    args = (_t(0.5), _t(2.0), _t(0.4))
    torch.testing.assert_close(
        SkewLogistic(*args).log_prob(x), pyro_dist.SkewLogistic(*args).log_prob(x)
    )
    args4 = args + (_t(0.7),)
    torch.testing.assert_close(
        SoftAsymmetricLaplace(*args4).log_prob(x),
        pyro_dist.SoftAsymmetricLaplace(*args4).log_prob(x),
    )
    torch.testing.assert_close(
        SoftAsymmetricLaplace(*args4).variance, pyro_dist.SoftAsymmetricLaplace(*args4).variance
    )
