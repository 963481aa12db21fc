"""Directional distributions: on the sphere (VonMises3D, ProjectedNormal) and the torus
(SineBivariateVonMises, SineSkewed).

Densities are checked against closed forms written out here (or SciPy quadrature along
a ray), for normalisation by quadrature on the sphere or torus (Gauss-Legendre in the
polar cosine, periodic trapezoid in angles), and samplers against moments computed by
the same quadrature, within a few standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import torch

from vitorch.distributions.directional import (
    ProjectedNormal,
    SineBivariateVonMises,
    SineSkewed,
    VonMises3D,
)
from vitorch.distributions.distribution import TorchDistributionMixin
from vitorch.distributions.torch import VonMises

F64 = torch.float64


def _sphere_grid(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature points on the 2-sphere and their area weights (summing to 4π)."""
    w, gw = np.polynomial.legendre.leggauss(n)
    phi = np.arange(2 * n) * (np.pi / n)
    W, P = np.meshgrid(w, phi, indexing="ij")
    r = np.sqrt(1 - W**2)
    pts = np.stack([r * np.cos(P), r * np.sin(P), W], -1).reshape(-1, 3)
    weights = np.repeat(gw, 2 * n) * (np.pi / n)
    return torch.tensor(pts, dtype=F64), torch.tensor(weights, dtype=F64)


def _circle_grid(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    theta = torch.arange(n, dtype=F64) * (2 * math.pi / n) - math.pi
    return theta, torch.full((n,), 2 * math.pi / n, dtype=F64)


def _torus_grid(n: int = 256) -> tuple[torch.Tensor, float]:
    theta, _ = _circle_grid(n)
    a, b = torch.meshgrid(theta, theta, indexing="ij")
    return torch.stack([a, b], -1).reshape(-1, 2), (2 * math.pi / n) ** 2


def _check_expand(d, batch_shape: tuple[int, ...], value: torch.Tensor) -> None:
    e = d.expand(batch_shape)
    assert type(e) is type(d)
    assert e.batch_shape == batch_shape and e.event_shape == d.event_shape
    assert e.sample().shape == torch.Size(batch_shape) + d.event_shape
    torch.testing.assert_close(e.log_prob(value), d.log_prob(value).expand(batch_shape))
    assert isinstance(d, TorchDistributionMixin)


# --------------------------------------------------------------------------- VonMises3D


CONC3 = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [1.0, 2.0, -2.0], [0.0, 0.0, 40.0]])


def test_von_mises_3d_log_prob_closed_form_and_normalises() -> None:
    conc = CONC3.to(F64)
    d = VonMises3D(conc)
    assert d.batch_shape == (4,) and d.event_shape == (3,)
    pts, weights = _sphere_grid()
    lp = d.log_prob(pts.unsqueeze(-2))
    kappa = conc.norm(dim=-1).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(kappa > 0, kappa / (4 * np.pi * np.sinh(kappa)), 1 / (4 * np.pi))
    want = np.log(norm) + pts.numpy() @ conc.numpy().T
    np.testing.assert_allclose(lp.numpy(), want, rtol=1e-12, atol=1e-12)
    total = (lp.exp() * weights.unsqueeze(-1)).sum(0)
    torch.testing.assert_close(total, torch.ones(4, dtype=F64))
    # Near zero concentration the series branch agrees with the exact formula.
    tiny = VonMises3D(torch.tensor([0.0, 0.0, 2e-3], dtype=F64))
    x = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    torch.testing.assert_close(
        tiny.log_prob(x), torch.tensor(2e-3 / math.sinh(2e-3) / (4 * math.pi), dtype=F64).log()
    )


def test_von_mises_3d_sample_mean_resultant_and_shapes() -> None:
    conc = CONC3.to(F64)
    n = 20_000
    x = VonMises3D(conc).sample((n,))
    assert x.shape == (n, 4, 3)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(n, 4, dtype=F64))
    kappa = conc.norm(dim=-1)
    mode = torch.nn.functional.normalize(conc, dim=-1)
    mode[0] = torch.tensor([0.0, 0.0, 1.0])  # any axis for the uniform case
    cos = (x * mode).sum(-1)
    # E[cos] = coth κ - 1/κ (0 for κ = 0), and the mean lies along the mode.
    want = torch.where(kappa > 0, 1 / torch.tanh(kappa) - 1 / kappa, torch.zeros_like(kappa))
    se = cos.std(0) / math.sqrt(n)
    assert ((cos.mean(0) - want).abs() <= 5 * se + 1e-12).all(), (cos.mean(0), want)
    perp = x - cos.unsqueeze(-1) * mode
    assert (perp.mean(0).norm(dim=-1) < 0.03).all()


def test_von_mises_3d_expand_and_errors() -> None:
    d = VonMises3D(CONC3[2].to(F64))
    _check_expand(d, (2, 3), torch.tensor([0.0, 0.6, 0.8], dtype=F64))
    with pytest.raises(ValueError, match=r"concentration must be a tensor with rightmost dim 3"):
        VonMises3D(torch.zeros(2))
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([1.0, 1.0, 0.0], dtype=F64))  # not a unit vector


# ----------------------------------------------------------------------- ProjectedNormal


def _projected_normal_by_quad(c: np.ndarray, u: np.ndarray) -> float:
    """The density at ``u``: the normal ``N(c, I)`` integrated along the ray through ``u``."""
    d = c.shape[-1]

    def integrand(r: float) -> float:
        return r ** (d - 1) * np.exp(-0.5 * np.sum((r * u - c) ** 2)) / (2 * np.pi) ** (d / 2)

    return scipy.integrate.quad(integrand, 0, np.inf, epsabs=1e-14, epsrel=1e-12)[0]


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_projected_normal_log_prob_matches_ray_integral(dim: int) -> None:
    torch.manual_seed(dim)
    conc = torch.randn(3, dim, dtype=F64) * torch.tensor([[0.2], [1.0], [3.0]], dtype=F64)
    u = torch.nn.functional.normalize(torch.randn(4, 3, dim, dtype=F64), dim=-1)
    lp = ProjectedNormal(conc).log_prob(u)
    assert lp.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            want = math.log(_projected_normal_by_quad(conc[j].numpy(), u[i, j].numpy()))
            assert abs(lp[i, j].item() - want) < 1e-9, (dim, i, j, lp[i, j].item(), want)


def test_projected_normal_normalises_on_circle_and_sphere() -> None:
    conc2 = torch.tensor([[0.0, 0.0], [0.5, -1.0], [4.0, 1.0]], dtype=F64)
    theta, w = _circle_grid()
    pts = torch.stack([theta.cos(), theta.sin()], -1).unsqueeze(-2)
    total = (ProjectedNormal(conc2).log_prob(pts).exp() * w.unsqueeze(-1)).sum(0)
    torch.testing.assert_close(total, torch.ones(3, dtype=F64))
    conc3 = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [0.0, 3.0, 3.0]], dtype=F64)
    pts, w = _sphere_grid()
    total = (ProjectedNormal(conc3).log_prob(pts.unsqueeze(-2)).exp() * w.unsqueeze(-1)).sum(0)
    torch.testing.assert_close(total, torch.ones(3, dtype=F64))


def test_projected_normal_rsample_moments_and_gradient() -> None:
    conc = torch.tensor([0.8, -0.6], dtype=F64)
    d = ProjectedNormal(conc)
    n = 40_000
    x = d.rsample((n,))
    assert x.shape == (n, 2)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(n, dtype=F64))
    theta, w = _circle_grid()
    pts = torch.stack([theta.cos(), theta.sin()], -1)
    want = (d.log_prob(pts).exp().unsqueeze(-1) * pts * w.unsqueeze(-1)).sum(0)
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - want).abs() <= 5 * se).all(), (x.mean(0), want)
    torch.testing.assert_close(d.mean, conc / conc.norm())
    torch.testing.assert_close(d.mode, conc / conc.norm())

    def draw(c: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)
        return ProjectedNormal(c).rsample((5,))

    assert torch.autograd.gradcheck(draw, (conc.clone().requires_grad_(),))


def test_projected_normal_expand_and_errors() -> None:
    d = ProjectedNormal(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]], dtype=F64))
    _check_expand(d, (3, 2), torch.tensor([0.0, 0.6, 0.8], dtype=F64))
    with pytest.raises(ValueError, match="concentration must be a tensor with at least one dim"):
        ProjectedNormal(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"value must end in \(3,\)"):
        d.log_prob(torch.tensor([1.0, 0.0], dtype=F64))


# ------------------------------------------------------------------ SineBivariateVonMises


def _series_log_normalizer(k1: float, k2: float, rho: float, terms: int = 80) -> float:
    """Singh et al.'s series ``C = 4π² Σ_m C(2m, m) (ρ²/(4 κ₁ κ₂))^m I_m(κ₁) I_m(κ₂)``,
    with exponentially scaled Bessel functions so large concentrations do not overflow."""
    m = np.arange(terms)
    log_terms = (
        scipy.special.gammaln(2 * m + 1)
        - 2 * scipy.special.gammaln(m + 1)
        + m * np.log(rho**2 / (4 * k1 * k2))
        + np.log(scipy.special.ive(m, k1))
        + np.log(scipy.special.ive(m, k2))
    )
    return 2 * math.log(2 * math.pi) + k1 + k2 + scipy.special.logsumexp(log_terms)


SBVM_PARAMS = [(1.0, 2.0, 0.5), (4.0, 3.0, -2.0), (0.3, 5.0, 3.0), (500.0, 300.0, 100.0)]


@pytest.mark.parametrize("k1,k2,rho", SBVM_PARAMS)
def test_sine_bivariate_normalizer_equals_series(k1: float, k2: float, rho: float) -> None:
    k1_, k2_, rho_ = (torch.tensor(v, dtype=F64) for v in (k1, k2, rho))
    d = SineBivariateVonMises(0.3, -1.0, k1_, k2_, rho_)
    assert d.batch_shape == () and d.event_shape == (2,)
    want = _series_log_normalizer(k1, k2, rho)
    assert abs(d.norm_const.item() - want) < 1e-9 * max(1.0, abs(want))


def test_sine_bivariate_density_closed_form_and_normalises() -> None:
    k1, k2, rho = (
        torch.tensor(v, dtype=F64) for v in ([1.0, 4.0, 0.3], [2.0, 3.0, 5.0], [0.5, -2.0, 3.0])
    )
    mu1, mu2 = torch.tensor([0.3, -2.0, 3.0], dtype=F64), torch.tensor(-1.0, dtype=F64)
    d = SineBivariateVonMises(mu1, mu2, k1, k2, rho)
    assert d.batch_shape == (3,)
    pts, cell = _torus_grid()
    lp = d.log_prob(pts.unsqueeze(-2))
    a, b = pts[:, :1] - mu1, pts[:, 1:] - mu2
    series = torch.tensor(
        [_series_log_normalizer(*p) for p in zip(k1.tolist(), k2.tolist(), rho.tolist())], dtype=F64
    )
    want = k1 * a.cos() + k2 * b.cos() + rho * a.sin() * b.sin() - series
    torch.testing.assert_close(lp, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lp.exp().sum(0) * cell, torch.ones(3, dtype=F64))


@pytest.mark.parametrize("k1,k2,rho", [(1.0, 2.0, 1.5), (10.0, 0.5, 20.0), (0.1, 0.1, 5.0)])
def test_sine_bivariate_sample_moments(k1: float, k2: float, rho: float) -> None:
    mu1, mu2 = 2.8, -1.0  # near the wrap-around point
    d = SineBivariateVonMises(mu1, mu2, k1, k2, rho)
    n = 20_000
    x = d.sample((n,))
    assert x.shape == (n, 2)
    assert (x >= -math.pi).all() and (x < math.pi).all()
    pts, cell = _torus_grid()
    dens = d.log_prob(pts).exp() * cell

    def stats(v: torch.Tensor) -> torch.Tensor:
        a, b = v[..., 0] - mu1, v[..., 1] - mu2
        return torch.stack([a.cos(), b.cos(), a.sin() * b.sin(), a.sin()], -1)

    want = (dens.unsqueeze(-1) * stats(pts)).sum(0)
    s = stats(x)
    se = s.std(0) / math.sqrt(n)
    assert ((s.mean(0) - want).abs() <= 5 * se + 1e-9).all(), (s.mean(0), want)


def test_sine_bivariate_log_prob_gradcheck() -> None:
    value = torch.tensor([[0.3, 0.1], [-2.0, 2.5]], dtype=F64)

    def f(k1: torch.Tensor, k2: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        return SineBivariateVonMises(0.2, -0.4, k1, k2, rho).log_prob(value)

    params = (
        torch.tensor([2.0, 30.0], dtype=F64),
        torch.tensor(3.0, dtype=F64),
        torch.tensor(-1.5, dtype=F64),
    )
    assert torch.autograd.gradcheck(f, tuple(p.requires_grad_() for p in params))


def test_sine_bivariate_weighted_correlation_batch_sample_expand_and_errors() -> None:
    k1 = torch.tensor([1.0, 5.0], dtype=F64)
    d = SineBivariateVonMises(
        torch.zeros(2, dtype=F64), 0.5, k1, 2.0, weighted_correlation=torch.tensor(0.5, dtype=F64)
    )
    torch.testing.assert_close(d.correlation, 0.5 * (k1 * 2.0).sqrt())
    assert d.sample((7,)).shape == (7, 2, 2)
    torch.testing.assert_close(d.mean, torch.tensor([[0.0, 0.5], [0.0, 0.5]], dtype=F64))
    _check_expand(d, (3, 2), torch.tensor([0.1, -0.2], dtype=F64))
    with pytest.raises(ValueError, match="exactly one of correlation and weighted_correlation"):
        SineBivariateVonMises(0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of correlation and weighted_correlation"):
        SineBivariateVonMises(0.0, 0.0, 1.0, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="phi_concentration"):
        SineBivariateVonMises(0.0, 0.0, -1.0, 1.0, 0.5)


# --------------------------------------------------------------------------- SineSkewed


def test_sine_skewed_bivariate_log_prob_normalises_and_samples() -> None:
    base = SineBivariateVonMises(
        torch.tensor(1.0, dtype=F64), torch.tensor(-2.5, dtype=F64), 2.0, 3.0, 1.0
    )
    skew = torch.tensor([0.3, -0.5], dtype=F64)
    d = SineSkewed(base, skew)
    assert d.batch_shape == () and d.event_shape == (2,)
    pts, cell = _torus_grid()
    lp = d.log_prob(pts)
    by_hand = base.log_prob(pts) + torch.log(
        1 + 0.3 * torch.sin(pts[:, 0] - 1.0) - 0.5 * torch.sin(pts[:, 1] + 2.5)
    )
    torch.testing.assert_close(lp, by_hand)
    torch.testing.assert_close(lp.exp().sum() * cell, torch.tensor(1.0, dtype=F64))
    n = 20_000
    x = d.sample((n,))
    assert x.shape == (n, 2) and (x.abs() <= math.pi).all()
    s = torch.sin(x - base.mean)
    want = (lp.exp().unsqueeze(-1) * torch.sin(pts - base.mean) * cell).sum(0)
    se = s.std(0) / math.sqrt(n)
    assert ((s.mean(0) - want).abs() <= 5 * se).all(), (s.mean(0), want)


def test_sine_skewed_von_mises_circle_and_batch() -> None:
    loc = torch.tensor([[0.5], [-3.0]], dtype=F64)
    base = VonMises(loc, torch.tensor([[2.0], [0.7]], dtype=F64)).to_event(1)
    skew = torch.tensor([[0.9], [-0.4]], dtype=F64)
    d = SineSkewed(base, skew)
    assert d.batch_shape == (2,) and d.event_shape == (1,)
    theta, w = _circle_grid()
    lp = d.log_prob(theta.reshape(-1, 1, 1))
    assert lp.shape == (512, 2)
    torch.testing.assert_close((lp.exp() * w.unsqueeze(-1)).sum(0), torch.ones(2, dtype=F64))
    want = (lp.exp() * torch.sin(theta.unsqueeze(-1) - loc[:, 0]) * w.unsqueeze(-1)).sum(0)
    n = 20_000
    s = torch.sin(d.sample((n,))[..., 0] - loc[:, 0])
    se = s.std(0) / math.sqrt(n)
    assert ((s.mean(0) - want).abs() <= 5 * se).all()
    _check_expand(d, (3, 2), torch.tensor([0.2], dtype=F64))


def test_sine_skewed_errors_and_warning() -> None:
    base = SineBivariateVonMises(0.0, 0.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"base_dist.event_shape is \(2,\)"):
        SineSkewed(base, torch.zeros(3))
    with pytest.raises(TypeError, match="base_dist"):
        SineSkewed("vonmises", torch.zeros(2))
    with pytest.warns(UserWarning, match="exceeds 1"):
        SineSkewed(base, torch.tensor([0.8, 0.8]))
    with pytest.raises(ValueError, match="skewness"), pytest.warns(UserWarning):
        SineSkewed(base, torch.tensor([1.5, 0.0]))


def test_matches_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    conc = torch.tensor([[1.0, -2.0, 0.5], [0.1, 0.2, 0.3]], dtype=F64)
    x = torch.nn.functional.normalize(torch.randn(4, 2, 3, dtype=F64), dim=-1)
    torch.testing.assert_close(VonMises3D(conc).log_prob(x), pyro_dist.VonMises3D(conc).log_prob(x))
    for dim in (2, 3, 4):
        c = torch.randn(2, dim, dtype=F64)
        u = torch.nn.functional.normalize(torch.randn(4, 2, dim, dtype=F64), dim=-1)
        torch.testing.assert_close(
            ProjectedNormal(c).log_prob(u), pyro_dist.ProjectedNormal(c).log_prob(u)
        )
    args = (
        torch.tensor([0.1, 2.0], dtype=F64),
        -0.5,
        torch.tensor([3.0, 5000.0], dtype=F64),
        2.0,
        1.5,
    )
    ours, theirs = SineBivariateVonMises(*args), pyro_dist.SineBivariateVonMises(*args)
    v = torch.tensor([[0.3, -0.2]], dtype=F64)
    torch.testing.assert_close(ours.log_prob(v), theirs.log_prob(v))
    skew = torch.tensor([0.2, -0.3], dtype=F64)
    torch.testing.assert_close(
        SineSkewed(ours, skew).log_prob(v), pyro_dist.SineSkewed(theirs, skew).log_prob(v)
    )
