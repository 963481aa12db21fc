"""AutoLaplaceApproximation against Hessians and posteriors known independently.

Bayesian linear regression with known noise has a Gaussian posterior, so the Laplace
approximation is exact there: the fitted point must be the posterior mean and the
covariance the inverse of the closed-form precision. For a model with a positive latent
(a Gamma-distributed noise scale), the approximation lives in unconstrained space: the
test writes the log density of ``(m, log s)`` by hand (with the log-Jacobian), finds its
mode by Newton's method and its Hessian by autograd on that hand-written function, and the
guide must agree with both.
"""

from __future__ import annotations

import math

import pytest
import torch
from _regression import exact_posterior as _exact_posterior
from _regression import regression
from _regression import regression_data as _regression_data

import vitorch
import vitorch.distributions as dist
from vitorch.handlers import mask, trace
from vitorch.infer import SVI, Predictive, Trace_ELBO
from vitorch.infer.autoguide import AutoMultivariateNormal
from vitorch.infer.autoguide.laplace import AutoLaplaceApproximation


def fit(model, guide, steps: int, *args, lr: float = 0.05, final: float = 0.01) -> None:
    """``steps`` SVI steps, the learning rate decaying from ``lr`` to ``lr * final``."""
    optim = vitorch.optim.ClippedAdam({"lr": lr, "lrd": final ** (1 / steps)})
    svi = SVI(model, guide, optim, Trace_ELBO())
    for _ in range(steps):
        svi.step(*args)


# -- Bayesian linear regression: the Laplace approximation is the exact posterior ---------


def _assert_close_cov(found: torch.Tensor, cov: torch.Tensor, rtol: float) -> None:
    # Relative to the largest entry: the off-diagonal entries can be near zero.
    err = (found.double() - cov).abs().max() / cov.abs().max()
    assert err < rtol, (found, cov)


def test_fitted_laplace_approximation_is_the_exact_gaussian_posterior() -> None:
    X, y = _regression_data()
    mean, cov = _exact_posterior(X, y)
    delta = AutoLaplaceApproximation(regression)
    fit(regression, delta, 500, X, y)
    # The loss is deterministic, so the fitted point is the mode to optimizer precision.
    err = (delta.loc.detach().double() - mean) / cov.diagonal().sqrt()
    assert err.abs().max() < 1e-4, (delta.loc, mean)
    guide = delta.laplace_approximation(X, y)
    assert isinstance(guide, AutoMultivariateNormal)
    posterior = guide.get_posterior()
    assert torch.equal(posterior.mean.detach(), delta.loc.detach())
    _assert_close_cov(posterior.covariance_matrix.detach(), cov, 1e-5)


def test_covariance_at_the_exact_mode() -> None:
    X, y = _regression_data()
    mean, cov = _exact_posterior(X, y)
    delta = AutoLaplaceApproximation(regression)
    delta(X, y)
    with torch.no_grad():
        delta.loc.copy_(mean)
    guide = delta.laplace_approximation(X, y)
    found = guide.get_posterior().covariance_matrix.detach().double()
    assert ((found - cov) / cov).abs().max() < 1e-5, (found, cov)
    # L = diag(scale) @ unit lower triangular, as AutoMultivariateNormal parametrizes it.
    scale_tril = guide.scale_tril.detach()
    assert torch.equal(scale_tril.diagonal(), torch.ones(3))
    assert torch.equal(scale_tril.triu(1), torch.zeros(3, 3))
    chol = torch.linalg.cholesky(cov)
    assert torch.allclose(guide.scale.detach().double(), chol.diagonal(), rtol=1e-5)


# -- a positive latent: the approximation is in unconstrained space -----------------------
M, ALPHA, RATE = 12, 3.0, 2.0


def _scale_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return 1.0 + 0.7 * torch.randn(M, generator=g)


def scale_model(data: torch.Tensor) -> None:
    m = vitorch.sample("m", dist.Normal(0.0, 2.0))
    s = vitorch.sample("s", dist.Gamma(ALPHA, RATE))
    with vitorch.plate("data", M):
        vitorch.sample("obs", dist.Normal(m, s), obs=data)


def _neg_log_density(u: torch.Tensor, data: torch.Tensor, jacobian: bool = True) -> torch.Tensor:
    """``-log p(data, m, s = exp(v))`` (minus ``v``, the log-Jacobian), by hand."""
    m, v = u[0], u[1]
    s = v.exp()
    log_p = -0.5 * (m / 2.0) ** 2 - math.log(2.0 * math.sqrt(2 * math.pi))
    log_p = log_p + ALPHA * math.log(RATE) - math.lgamma(ALPHA) + (ALPHA - 1) * v - RATE * s
    resid = data.double() - m
    log_p = log_p + (-0.5 * (resid / s) ** 2 - v - 0.5 * math.log(2 * math.pi)).sum()
    return -(log_p + v) if jacobian else -log_p


def _hessian(u: torch.Tensor, data: torch.Tensor, jacobian: bool = True) -> torch.Tensor:
    return torch.autograd.functional.hessian(lambda t: _neg_log_density(t, data, jacobian), u)


def _mode(data: torch.Tensor, jacobian: bool = True) -> torch.Tensor:
    """Newton's method from the data's mean and log standard deviation."""
    u = torch.stack([data.mean(), data.std().log()]).double()
    for _ in range(50):
        grad = torch.autograd.functional.jacobian(lambda t: _neg_log_density(t, data, jacobian), u)
        u = u - torch.linalg.solve(_hessian(u, data, jacobian), grad)
    return u


def test_hessian_is_that_of_the_unconstrained_log_density() -> None:
    data = _scale_data()
    delta = AutoLaplaceApproximation(scale_model)
    delta(data)
    # Away from the mode, where the Hessian changes with the point and the Jacobian term
    # matters through exp(v) in the likelihood.
    u = torch.tensor([0.4, -0.2], dtype=torch.double)
    with torch.no_grad():
        delta.loc.copy_(u)
    guide = delta.laplace_approximation(data)
    expected = torch.linalg.inv(_hessian(u, data))
    found = guide.get_posterior().covariance_matrix.detach().double()
    assert ((found - expected).abs() / expected.abs().max()).max() < 1e-5, (found, expected)


def test_fit_finds_the_unconstrained_mode_and_its_curvature() -> None:
    data = _scale_data()
    mode = _mode(data)
    # The mode of (m, log s) differs from the log of the mode of (m, s) (the log-Jacobian
    # term), by far more than the tolerance below.
    assert abs(_mode(data, jacobian=False)[1] - mode[1]) > 0.02
    delta = AutoLaplaceApproximation(scale_model)
    fit(scale_model, delta, 800, data)
    assert torch.allclose(delta.loc.detach().double(), mode, atol=1e-4), (delta.loc, mode)
    guide = delta.laplace_approximation(data)
    expected = torch.linalg.inv(_hessian(mode, data))
    found = guide.get_posterior().covariance_matrix.detach().double()
    # At a fitted (not exact) mode: the Hessian varies with the point to first order.
    assert ((found - expected).abs() / expected.abs().max()).max() < 1e-3, (found, expected)


# -- the returned guide -------------------------------------------------------------------
def test_returned_guide_is_ready_to_use() -> None:
    data = _scale_data()
    mode = _mode(data)
    cov = torch.linalg.inv(_hessian(mode, data))
    delta = AutoLaplaceApproximation(scale_model)
    delta(data)
    with torch.no_grad():
        delta.loc.copy_(mode)
    guide = delta.laplace_approximation(data)

    median = guide.median()
    assert torch.allclose(median["m"].double(), mode[0], rtol=1e-6)
    assert torch.allclose(median["s"].double(), mode[1].exp(), rtol=1e-6)
    # The Laplace guide's own summaries are the point.
    assert torch.equal(delta.median()["s"], median["s"])
    point_quantiles = delta.quantiles([0.1, 0.9])
    assert torch.equal(point_quantiles["s"], median["s"].expand(2))

    # Marginal quantiles of log s are those of a Normal with the Laplace variance.
    q = guide.quantiles([0.1587, 0.5, 0.8413])["s"].double().log()
    sd = cov[1, 1].sqrt()
    assert torch.allclose(q, mode[1] + sd * torch.tensor([-1.0, 0.0, 1.0]).double(), atol=1e-3)

    draw = guide(data)
    assert draw["m"].shape == () and draw["s"].shape == () and draw["s"] > 0
    samples = Predictive(scale_model, guide=guide, num_samples=4000, parallel=True)(data)
    # Scalar sites keep a dim for the model's one plate, as in Pyro.
    assert samples["m"].shape == (4000, 1) and samples["s"].shape == (4000, 1)
    assert samples["obs"].shape == (4000, M)
    u = torch.cat([samples["m"], samples["s"].log()], -1).double()
    # 4000 draws: the empirical covariance is within ~3% (a few standard errors) of cov.
    empirical = torch.cov(u.T)
    assert ((empirical - cov).abs() / cov.diagonal().max()).max() < 0.08, (empirical, cov)
    assert ((u.mean(0) - mode) / cov.diagonal().sqrt()).abs().max() < 0.1


def test_returned_guide_params_have_their_own_names_and_survive_stale_store_entries() -> None:
    X, y = _regression_data()
    mean, cov = _exact_posterior(X, y)
    # An earlier AutoMultivariateNormal left entries of the same names and shapes.
    earlier = AutoMultivariateNormal(regression)
    trace(earlier).get_trace(X, y)  # under a handler, as in SVI: every param is registered
    store = vitorch.get_param_store()
    stale = store["AutoMultivariateNormal.scale"].detach().clone()

    delta = AutoLaplaceApproximation(regression)
    trace(delta).get_trace(X, y)
    with torch.no_grad():
        delta.loc.copy_(mean)
    before = store["AutoLaplaceApproximation.loc"].detach().clone()
    guide = delta.laplace_approximation(X, y)
    assert guide is not earlier
    assert torch.equal(store["AutoLaplaceApproximation.loc"], before)
    assert not torch.allclose(store["AutoMultivariateNormal.scale"], stale)
    for _ in range(2):  # calling the guide must not bring the stale values back
        guide(X, y)
        found = guide.get_posterior().covariance_matrix.detach().double()
        assert ((found - cov) / cov).abs().max() < 1e-5
    assert torch.equal(store["AutoMultivariateNormal.loc"].detach(), guide.loc.detach())

    # It trains on like any AutoMultivariateNormal (its params reach the optimizer).
    fit(regression, guide, 3, X, y, lr=0.01)
    assert not torch.equal(guide.loc.detach(), mean.float())


# -- errors -------------------------------------------------------------------------------
def test_laplace_approximation_before_the_guide_has_run() -> None:
    delta = AutoLaplaceApproximation(scale_model)
    with pytest.raises(ValueError, match=r"AutoLaplaceApproximation\.laplace_approximation"):
        delta.laplace_approximation()


def cauchy_model() -> None:
    vitorch.sample("x", dist.Cauchy(0.0, 1.0))


def test_not_at_a_mode_is_a_clear_error() -> None:
    delta = AutoLaplaceApproximation(cauchy_model)
    delta()
    # -log p = log(1 + x^2) + c has second derivative 2 (1 - x^2) / (1 + x^2)^2 < 0 at 3.
    with torch.no_grad():
        delta.loc.fill_(3.0)
    with pytest.raises(ValueError, match="AutoLaplaceApproximation.*not positive definite"):
        delta.laplace_approximation()
    # At the mode it works, and gives the curvature 2.
    with torch.no_grad():
        delta.loc.fill_(0.0)
    guide = delta.laplace_approximation()
    assert torch.allclose(guide.get_posterior().covariance_matrix, torch.tensor([[0.5]]))


def flat_model(data: torch.Tensor) -> None:
    x = vitorch.sample("x", dist.Normal(0.0, 1.0))
    with mask(mask=False):  # z has no prior term, and the data do not involve it
        vitorch.sample("z", dist.Normal(0.0, 1.0))
    vitorch.sample("obs", dist.Normal(x, 1.0), obs=data)


def test_flat_direction_is_a_clear_error() -> None:
    data = torch.tensor(0.5)
    delta = AutoLaplaceApproximation(flat_model)
    fit(flat_model, delta, 5, data)
    with pytest.raises(ValueError, match="not positive definite.*flat"):
        delta.laplace_approximation(data)
