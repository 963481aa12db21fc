"""Stable and StableWithLogProb in vitorch.distributions.stable.

Draws are checked against known laws (alpha=2: Normal of variance 2 scale^2; alpha=1,
skew=0: Cauchy) and against scipy's levy_stable CDF at sample quantiles (binomial
tolerance), the pathwise gradient against the Normal's exact one and against finite
differences (gradcheck, same noise), and the density against scipy's logpdf.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from vitorch.distributions.stable import Stable, StableWithLogProb

F64 = torch.float64


@pytest.fixture
def levy(request):
    """scipy's levy_stable in the parameterization given by the test's ``coords``."""
    old = st.levy_stable.parameterization
    st.levy_stable.parameterization = request.param
    yield st.levy_stable
    st.levy_stable.parameterization = old


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=F64)


def _check_cdf(x: torch.Tensor, cdf, z: float = 5.0) -> None:
    """At the sample's deciles, the true CDF is within ``z`` binomial SEs of the level."""
    n = x.numel()
    q = np.linspace(0.05, 0.95, 19)
    xs = np.quantile(x.numpy(), q)
    tol = z * np.sqrt(q * (1 - q) / n)
    np.testing.assert_array_less(np.abs(cdf(xs) - q), tol)


def test_alpha_two_is_normal_with_variance_two_scale_squared():
    torch.manual_seed(0)
    loc, scale = 0.7, 1.3
    x = Stable(_t(2.0), _t(0.6), _t(scale), _t(loc)).sample((40_000,))
    _check_cdf(x, st.norm(loc, math.sqrt(2) * scale).cdf)
    n = x.numel()
    assert abs(x.mean() - loc) < 5 * math.sqrt(2 * scale**2 / n)
    var = 2 * scale**2  # se of the sample variance of a normal: var * sqrt(2/n)
    assert abs(x.var() - var) < 5 * var * math.sqrt(2 / n)
    d = Stable(_t(2.0), _t(0.6), _t(scale), _t(loc))
    assert float(d.mean) == pytest.approx(loc)
    assert float(d.variance) == pytest.approx(var)


def test_alpha_one_symmetric_is_cauchy():
    torch.manual_seed(1)
    x = Stable(_t(1.0), _t(0.0), _t(2.0), _t(-1.0)).sample((40_000,))
    _check_cdf(x, st.cauchy(-1.0, 2.0).cdf)
    assert math.isnan(float(Stable(_t(1.0), _t(0.0)).mean))
    assert math.isinf(float(Stable(_t(1.5), _t(0.0)).variance))


@pytest.mark.parametrize(
    "levy, alpha, beta, scale, loc",
    [
        ("S0", 1.5, 0.5, 1.0, 0.0),
        ("S0", 0.7, -0.8, 2.0, 1.0),
        ("S0", 1.0, 0.6, 1.0, 0.5),
        ("S0", 1.005, -0.4, 1.0, 0.0),
        ("S1", 1.5, 0.5, 1.0, 0.0),
        ("S1", 0.6, 1.0, 0.5, -1.0),
    ],
    indirect=["levy"],
)
def test_sample_quantiles_match_scipy(levy, alpha, beta, scale, loc):
    coords = "S0" if levy.parameterization == "S0" else "S"
    torch.manual_seed(2)
    d = Stable(_t(alpha), _t(beta), _t(scale), _t(loc), coords=coords)
    x = d.sample((20_000,))
    assert torch.isfinite(x).all()
    _check_cdf(x, lambda v: levy.cdf(v, alpha, beta, loc=loc, scale=scale))


def test_alpha_two_pathwise_gradient_matches_normal():
    # E[x^2] = loc^2 + 2 scale^2, so d/dloc = 2 loc and d/dscale = 4 scale exactly.
    torch.manual_seed(3)
    loc, scale = _t(0.5).requires_grad_(), _t(1.5).requires_grad_()
    n = 50_000
    x = Stable(_t(2.0), _t(0.3), scale, loc).rsample((n,))
    g = torch.stack(torch.autograd.grad(x.square().mean(), (loc, scale)))
    # Per draw, d x^2/dloc = 2x and d x^2/dscale = 2x z with z = (x - loc)/scale.
    x = x.detach()
    z = (x - 0.5) / 1.5
    se = torch.stack([(2 * x).std(), (2 * x * z).std()]) / math.sqrt(n)
    exact = _t([2 * 0.5, 4 * 1.5])
    assert torch.all((g - exact).abs() < 5 * se), (g, exact, se)


@pytest.mark.parametrize("coords", ["S0", "S"])
@pytest.mark.parametrize("alpha", [0.6, 1.004, 1.7])
def test_rsample_gradients_finite_and_match_finite_differences(alpha, coords):
    def draw(a, b, s, m):
        torch.manual_seed(4)
        return Stable(a, b, s, m, coords=coords).rsample((6,))

    params = tuple(_t(v).requires_grad_() for v in (alpha, 0.4, 1.3, 0.2))
    x = draw(*params)
    grads = torch.autograd.grad(x.sum(), params)
    assert all(torch.isfinite(g) for g in grads)
    assert torch.autograd.gradcheck(draw, params, eps=1e-6, atol=1e-4, rtol=1e-4)


def test_rsample_finite_over_parameter_grid():
    torch.manual_seed(5)
    alpha = _t([0.3, 0.9, 0.995, 1.0, 1.005, 1.2, 1.99, 2.0]).reshape(-1, 1)
    beta = _t([-1.0, -0.3, 0.0, 1.0])
    alpha = alpha.requires_grad_()
    x = Stable(alpha, beta).rsample((500,))
    assert x.shape == (500, 8, 4) and torch.isfinite(x).all()
    (g,) = torch.autograd.grad(x.clamp(-1e3, 1e3).sum(), alpha)
    assert torch.isfinite(g).all()


def test_samples_match_pyro():
    pyro = pytest.importorskip("pyro")
    for coords in ("S0", "S"):
        args = (_t([0.5, 1.5, 1.9]), _t([0.3, -0.7, 1.0]), _t(2.0), _t(0.1))
        torch.manual_seed(6)
        ours = Stable(*args, coords=coords).rsample((100,))
        torch.manual_seed(6)
        theirs = pyro.distributions.Stable(*args, coords=coords).rsample((100,))
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_shapes_expand_and_errors():
    d = Stable(_t([1.5, 0.8]), 0.2, _t([[1.0], [2.0]]))
    assert d.batch_shape == (2, 2) and d.event_shape == ()
    assert d.rsample((3,)).shape == (3, 2, 2)
    e = d.expand((4, 2, 2))
    assert type(e) is Stable and e.coords == "S0" and e.sample().shape == (4, 2, 2)
    w = StableWithLogProb(_t(1.5), _t(0.0)).expand((3,))
    assert type(w) is StableWithLogProb and w.log_prob(_t(0.0)).shape == (3,)
    # Pyro 1.9's Stable has a density too; StableWithLogProb only opts out of reparams.
    assert torch.equal(Stable(_t(1.5), _t(0.0)).log_prob(_t(0.3)), w.log_prob(_t(0.3))[0])
    with pytest.raises(ValueError, match="coords must be 'S0' or 'S', got 'S1'"):
        Stable(1.5, 0.0, coords="S1")
    with pytest.raises(ValueError, match="stability"):
        Stable(_t(2.5), _t(0.0), validate_args=True)
    with pytest.raises(ValueError, match="skew"):
        Stable(_t(1.5), _t(1.5), validate_args=True)


@pytest.mark.parametrize(
    "levy, alpha, beta",
    [
        ("S0", 1.5, 0.5),
        ("S0", 0.7, -0.3),
        ("S0", 1.9, 0.9),
        ("S0", 0.4, 1.0),
        ("S0", 1.2, 0.0),
        ("S0", 2.0, 0.5),
        ("S1", 1.3, -0.6),
        ("S1", 0.8, 0.5),
    ],
    indirect=["levy"],
)
def test_log_prob_matches_scipy(levy, alpha, beta):
    # Away from stability 1 the integral is accurate far beyond this tolerance.
    coords = "S0" if levy.parameterization == "S0" else "S"
    x = np.array([-30.0, -4.0, -1.0, -0.2, 0.0, 0.3, 1.0, 2.5, 8.0, 50.0])
    scale, loc = 1.7, 0.4
    d = StableWithLogProb(_t(alpha), _t(beta), _t(scale), _t(loc), coords=coords)
    ours = d.log_prob(_t(x)).numpy()
    ref = levy.logpdf(x, alpha, beta, loc=loc, scale=scale)
    ok = np.isfinite(ref) & (ref > -200)
    np.testing.assert_allclose(ours[ok], ref[ok], atol=1e-5, rtol=1e-5)
    assert np.all(ours[~np.isfinite(ref)] == -np.inf)


@pytest.mark.parametrize("levy", ["S0"], indirect=True)
def test_log_prob_near_stability_one(levy):
    # Inside the window |stability - 1| < 0.05 the density is interpolated linearly in
    # stability: good to 5e-3 in log-density for symmetric laws, 2e-2 for skewed ones.
    x = np.linspace(-4.0, 4.0, 9)
    for alpha, beta, tol in [
        (1.0, 0.0, 5e-3),
        (1.0, 0.6, 2e-2),
        (0.97, -0.5, 2e-2),
        (1.03, 0.3, 2e-2),
    ]:
        ours = StableWithLogProb(_t(alpha), _t(beta)).log_prob(_t(x)).numpy()
        np.testing.assert_allclose(ours, levy.logpdf(x, alpha, beta), atol=tol)
    ours = StableWithLogProb(_t(1.0), _t(0.0), _t(2.0), _t(1.0)).log_prob(_t(x)).numpy()
    np.testing.assert_allclose(ours, st.cauchy(1.0, 2.0).logpdf(x), atol=5e-3)


def test_log_prob_gradient_and_dtype():
    params = tuple(_t(v).requires_grad_() for v in (1.4, 0.3, 1.2, 0.1))
    value = _t([-1.0, 0.5, 2.0]).requires_grad_()

    def lp(a, b, s, m, v):
        return StableWithLogProb(a, b, s, m).log_prob(v)

    assert torch.autograd.gradcheck(lp, params + (value,), eps=1e-6, atol=1e-5)
    d32 = StableWithLogProb(torch.tensor(1.5), torch.tensor(0.2))
    assert d32.log_prob(torch.tensor([0.0, 1.0])).dtype == torch.float32


def test_log_prob_matches_pyro():
    pyro = pytest.importorskip("pyro")
    x = _t([-3.0, -0.5, 0.7, 4.0])
    args = (_t(1.6), _t(0.4), _t(1.5), _t(0.3))
    ours = StableWithLogProb(*args).log_prob(x)
    theirs = pyro.distributions.StableWithLogProb(*args).log_prob(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
