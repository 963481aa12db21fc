"""SVGD and its Stein kernels against formulas written out by hand and exact posteriors.

The kernels' values and gradients are checked against the formulas (the median-heuristic
bandwidth computed from a plain sorted list) and against autograd in float64. One SVGD step
with SGD at learning rate 1 moves each particle by exactly ``phi(x)``, which is compared to
``phi`` computed particle by particle from its definition, for a Gaussian target with two
latent sites (so a particle is a row of both sites' values). The fitted particles are
compared with posteriors known in closed form: a 2-D Gaussian, the conjugate Bayesian
linear regression of ``_regression`` and a Gamma-Poisson model (a positive latent, moved in
log space, where a missing log-Jacobian would shift the particles measurably).

Tolerances for the fits: the learning rate decays, so the particles settle on SVGD's fixed
point, which is deterministic, not a set of random draws; as a yardstick, 100 independent
draws estimate a mean to within 0.1 posterior sd and a variance to within sqrt(2 / 100) =
14% (one standard error), and the fits must do at least that well: means within 0.05 sd,
variances within 14%, correlations within 0.03. SVGD's fixed point under-disperses for
finite N (multivariate mode, 100 particles, plain median heuristic: variances ~20% low in
2-D, ~45% in 3-D); a wider bandwidth (``bandwidth_factor=5``) brings that to ~5% and ~10%,
and those fits must not over-disperse by more than 5% either.
"""

from __future__ import annotations

import math

import pytest
import torch
from _regression import exact_posterior, regression, regression_data

import vitorch
import vitorch.distributions as dist
from vitorch.infer.svgd import SVGD, IMQSteinKernel, RBFSteinKernel, SteinKernel
from vitorch.optim import SGD, Adam, ClippedAdam

ALPHA, BETA = 0.7, -0.6


def hand_bandwidth(x: torch.Tensor, factor: float = 1.0) -> list[float]:
    """Per dim: the lower median of the squared pairwise distances, times factor, / log(N+1)."""
    n, d = x.shape
    out = []
    for k in range(d):
        sq = sorted(float(x[i, k] - x[j, k]) ** 2 for i in range(n) for j in range(i + 1, n))
        out.append(factor * sq[(len(sq) - 1) // 2] / math.log(n + 1))
    return out


def hand_log_k(kind: str, a, b, h):
    """Log of the one-dimensional kernel between coordinates ``a`` and ``b``."""
    r2 = (a - b) ** 2 / h
    if kind == "rbf":
        return -r2
    log = torch.log if isinstance(r2, torch.Tensor) else math.log
    return BETA * log(ALPHA + r2)


def hand_dlog_k_da(kind: str, a: float, b: float, h: float) -> float:
    """d/da of :func:`hand_log_k` (bandwidth fixed)."""
    if kind == "rbf":
        return -2 * (a - b) / h
    return BETA * 2 * (a - b) / h / (ALPHA + (a - b) ** 2 / h)


def make_kernel(kind: str, factor: float | None = None) -> SteinKernel:
    if kind == "rbf":
        return RBFSteinKernel(bandwidth_factor=factor)
    return IMQSteinKernel(alpha=ALPHA, beta=BETA, bandwidth_factor=factor)


# -- (1) kernels -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rbf", "imq"])
@pytest.mark.parametrize("n, factor", [(5, None), (7, 2.5)])
def test_kernel_values_and_gradients_match_formulas_and_autograd(kind, n, factor) -> None:
    # n = 5 gives an even number of pairs (10): the bandwidth takes the lower middle one.
    x = torch.randn(n, 3, dtype=torch.float64)
    log_kernel, grad = make_kernel(kind, factor).log_kernel_and_grad(x)
    assert log_kernel.shape == grad.shape == (n, n, 3)
    h = hand_bandwidth(x, 1.0 if factor is None else factor)
    for i in range(n):
        for j in range(n):
            for d in range(3):
                a, b = float(x[i, d]), float(x[j, d])
                assert log_kernel[i, j, d].item() == pytest.approx(
                    hand_log_k(kind, a, b, h[d]), rel=1e-12, abs=1e-14
                )
                assert grad[i, j, d].item() == pytest.approx(
                    hand_dlog_k_da(kind, a, b, h[d]), rel=1e-12, abs=1e-14
                )
    # grad[n, m, d] is d log k(x_n, x_m) / d x_{n, d}, by autograd of the log kernel.
    a = x.clone().requires_grad_(True)
    hs = torch.tensor(h, dtype=torch.float64)
    for m in range(n):
        (auto,) = torch.autograd.grad(hand_log_k(kind, a, x[m], hs).sum(), a)
        torch.testing.assert_close(grad[:, m, :], auto, rtol=1e-12, atol=1e-14)


def test_kernel_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"bandwidth_factor must be a number > 0, got 0"):
        RBFSteinKernel(bandwidth_factor=0)
    kernel = RBFSteinKernel()
    with pytest.raises(ValueError, match=r"bandwidth_factor must be a number > 0, got -1"):
        kernel.bandwidth_factor = -1.0
    with pytest.raises(ValueError, match=r"IMQSteinKernel: alpha must be a number > 0, got 0"):
        IMQSteinKernel(alpha=0.0)
    with pytest.raises(ValueError, match=r"IMQSteinKernel: beta must be a number < 0, got 0.5"):
        IMQSteinKernel(beta=0.5)
    with pytest.raises(ValueError, match=r"particles must have shape .*got \(1, 2\)"):
        kernel.log_kernel_and_grad(torch.zeros(1, 2))


# -- (2) one SVGD step is phi(x) -----------------------------------------------------------

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)
M_Y, S_Y = 0.5, 0.7


def two_site_gaussian() -> None:
    vitorch.sample("x", dist.MultivariateNormal(MU, COV))
    vitorch.sample("y", dist.Normal(torch.tensor(M_Y, dtype=torch.float64), S_Y))


def hand_phi(x: torch.Tensor, kind: str, mode: str) -> torch.Tensor:
    """phi(x_i) = mean_j [k(x_j, x_i) grad log p(x_j) + grad_{x_j} k(x_j, x_i)], row by row."""
    n, dim = x.shape
    precision = torch.linalg.inv(COV)
    h = hand_bandwidth(x)
    phi = torch.zeros(n, dim, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            g = torch.cat([-precision @ (x[j, :2] - MU), -(x[j, 2:] - M_Y) / S_Y**2])
            a, b = x[j].tolist(), x[i].tolist()
            k = [math.exp(hand_log_k(kind, a[d], b[d], h[d])) for d in range(dim)]
            dk = [k[d] * hand_dlog_k_da(kind, a[d], b[d], h[d]) for d in range(dim)]
            for d in range(dim):
                if mode == "multivariate":
                    others = math.prod(k[e] for e in range(dim) if e != d)
                    phi[i, d] += math.prod(k) * g[d] + others * dk[d]
                else:
                    phi[i, d] += k[d] * g[d] + dk[d]
    return phi / n


@pytest.mark.parametrize("mode", ["univariate", "multivariate"])
@pytest.mark.parametrize("kind", ["rbf", "imq"])
def test_one_step_moves_each_particle_by_phi(kind, mode) -> None:
    n = 6
    rows = torch.randn(n, 3, dtype=torch.float64) * 1.5
    # The param holds each site's values in turn, particles first: x (n, 2), then y (n,).
    flat = torch.cat([rows[:, :2].reshape(-1), rows[:, 2]])
    vitorch.param("svgd_particles", flat.clone())
    svgd = SVGD(two_site_gaussian, make_kernel(kind), SGD({"lr": 1.0}), n, 0, mode=mode)
    out = svgd.step()
    phi = hand_phi(rows, kind, mode)
    moved = vitorch.param("svgd_particles").detach() - flat
    torch.testing.assert_close(moved, torch.cat([phi[:, :2].reshape(-1), phi[:, 2]]))
    assert out.keys() == {"x", "y"}
    assert out["x"] == pytest.approx(phi[:, :2].square().mean().item(), rel=1e-10)
    assert out["y"] == pytest.approx(phi[:, 2].square().mean().item(), rel=1e-10)
    named = svgd.get_named_particles()
    torch.testing.assert_close(named["x"], (rows + phi)[:, :2])
    torch.testing.assert_close(named["y"], (rows + phi)[:, 2])


# -- (3) fits against exact posteriors -----------------------------------------------------


def fit(svgd: SVGD, steps: int, *args) -> dict[str, torch.Tensor]:
    for _ in range(steps):
        svgd.step(*args)
    return svgd.get_named_particles()


def decaying_adam(lr: float, steps: int, final: float = 0.05) -> ClippedAdam:
    return ClippedAdam({"lr": lr, "lrd": final ** (1 / steps)})


def moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.double()
    return z.mean(0), torch.cov(z.T, correction=0)


def test_multivariate_mode_fits_a_correlated_2d_gaussian() -> None:
    mu, cov = MU.float(), COV.float()

    def model() -> None:
        vitorch.sample("x", dist.MultivariateNormal(mu, cov))

    kernel = RBFSteinKernel(bandwidth_factor=5.0)
    svgd = SVGD(model, kernel, decaying_adam(0.1, 500), 100, 0, mode="multivariate")
    x = fit(svgd, 500)["x"]
    assert x.shape == (100, 2)
    mean, found = moments(x)
    sd = COV.diagonal().sqrt()
    assert ((mean - MU) / sd).abs().max() < 0.05, mean
    ratio = found.diagonal() / COV.diagonal()
    assert ((ratio > 0.85) & (ratio < 1.05)).all(), found
    corr = found[0, 1] / found.diagonal().prod().sqrt()
    assert abs(corr - COV[0, 1] / sd.prod()) < 0.03, found


def test_univariate_mode_fits_the_marginals_of_independent_coordinates() -> None:
    # With independent coordinates, univariate SVGD is one 1-D SVGD per coordinate.
    mu, sd = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])

    def model() -> None:
        vitorch.sample("x", dist.Normal(mu, sd).to_event(1))

    svgd = SVGD(model, RBFSteinKernel(), decaying_adam(0.1, 500), 100, 0)
    x = fit(svgd, 500)["x"]
    assert ((x.mean(0) - mu) / sd).abs().max() < 0.05, x.mean(0)
    ratio = x.var(0, unbiased=False) / sd**2
    assert ((ratio > 0.86) & (ratio < 1.14)).all(), ratio


def test_two_site_regression_posterior_with_plates_and_observations() -> None:
    # Sites w (2) and b, a data plate (max_plate_nesting=1): a 3-D posterior with
    # correlation -0.9 between w1 and w2, which a mix-up of sites across rows would break.
    X, y = regression_data()
    mean, cov = exact_posterior(X, y)
    kernel = RBFSteinKernel(bandwidth_factor=5.0)
    svgd = SVGD(regression, kernel, decaying_adam(0.2, 500), 100, 1, mode="multivariate")
    particles = fit(svgd, 500, X, y)
    assert particles["w"].shape == (100, 1, 2) and particles["b"].shape == (100, 1)
    z = torch.cat([particles["w"].reshape(100, 2), particles["b"]], 1)
    found_mean, found = moments(z)
    sd = cov.diagonal().sqrt()
    assert ((found_mean - mean) / sd).abs().max() < 0.05, found_mean
    ratio = found.diagonal() / cov.diagonal()
    assert ((ratio > 0.85) & (ratio < 1.05)).all(), ratio
    corr = found / torch.outer(found.diagonal().sqrt(), found.diagonal().sqrt())
    assert (corr - cov / torch.outer(sd, sd)).abs().max() < 0.03, corr


# -- (4) a constrained latent ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rbf", "imq"])
def test_positive_latent_moves_in_log_space_with_the_jacobian(kind) -> None:
    # Gamma(2, 1) prior, Poisson counts: the posterior is Gamma(a, b) with a = 2 + sum,
    # b = 1 + n, so log(lam) has mean digamma(a) - log(b) and variance trigamma(a).
    counts = torch.tensor([3.0, 5.0, 2.0, 4.0, 6.0])

    def model() -> None:
        lam = vitorch.sample("lam", dist.Gamma(2.0, 1.0))
        with vitorch.plate("data", 5):
            vitorch.sample("k", dist.Poisson(lam), obs=counts)

    a, b = torch.tensor(2.0 + 20.0, dtype=torch.float64), 6.0
    svgd = SVGD(model, make_kernel(kind), decaying_adam(0.1, 500), 100, 1)
    lam = fit(svgd, 500)["lam"]
    assert lam.shape == (100, 1)
    assert bool((lam > 0).all())
    log_lam = lam.double().log()
    sd = torch.polygamma(1, a).sqrt()
    # Without the log-Jacobian the mean of log(lam) would be digamma(a - 1) - log(b):
    # 1 / 21 lower, 0.22 sd.
    assert abs((log_lam.mean() - (torch.digamma(a) - math.log(b))) / sd) < 0.05
    assert 0.86 < log_lam.var(unbiased=False) / sd**2 < 1.14


# -- (5) errors --------------------------------------------------------------------------------


def model_x() -> None:
    vitorch.sample("x", dist.Normal(0.0, 1.0))


def test_constructor_rejects_bad_arguments() -> None:
    k, opt = RBFSteinKernel(), Adam({"lr": 0.1})
    with pytest.raises(ValueError, match=r"num_particles must be >= 2, got 1"):
        SVGD(model_x, k, opt, 1, 0)
    with pytest.raises(TypeError, match=r"num_particles must be an int >= 2, got float"):
        SVGD(model_x, k, opt, 2.5, 0)
    with pytest.raises(ValueError, match=r"mode must be one of .*'univariate'.*got 'joint'"):
        SVGD(model_x, k, opt, 10, 0, mode="joint")
    with pytest.raises(TypeError, match=r"kernel must be a SteinKernel .*got str"):
        SVGD(model_x, "rbf", opt, 10, 0)
    with pytest.raises(TypeError, match=r"optim must be a vitorch.optim optimizer .*got type"):
        SVGD(model_x, k, torch.optim.Adam, 10, 0)
    with pytest.raises(ValueError, match=r"max_plate_nesting must be an int >= 0, got -1"):
        SVGD(model_x, k, opt, 10, -1)
    with pytest.raises(TypeError, match=r"model must be callable, got int"):
        SVGD(3, k, opt, 10, 0)


def test_usage_errors_name_the_problem() -> None:
    svgd = SVGD(model_x, RBFSteinKernel(), Adam({"lr": 0.1}), 10, 0)
    with pytest.raises(ValueError, match=r"get_named_particles\(\) was called before"):
        svgd.get_named_particles()

    def too_deep() -> None:
        # Batch shape (3, 1) outside any plate: the particles (dim -1) land right of it.
        vitorch.sample("z", dist.Normal(torch.zeros(3, 1), 1.0))

    svgd = SVGD(too_deep, RBFSteinKernel(), Adam({"lr": 0.1}), 10, 0)
    with pytest.raises(ValueError, match=r"site 'z', invalid log_prob shape.*got \[3, 10\]"):
        svgd.step()


# -- Pyro cross-check --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["univariate", "multivariate"])
@pytest.mark.parametrize("kind", ["rbf", "imq"])
def test_first_steps_match_pyro(kind, mode) -> None:
    pyro = pytest.importorskip("pyro")
    pdist = pytest.importorskip("pyro.distributions")
    pinfer = pytest.importorskip("pyro.infer")
    poptim = pytest.importorskip("pyro.optim")

    mu, cov = MU.float(), COV.float()
    init = torch.randn(8 * 2) * 2

    def pyro_model() -> None:
        pyro.sample("x", pdist.MultivariateNormal(mu, cov))

    def model() -> None:
        vitorch.sample("x", dist.MultivariateNormal(mu, cov))

    if kind == "rbf":
        pk = pinfer.RBFSteinKernel(bandwidth_factor=1.5)
    else:
        pk = pinfer.IMQSteinKernel(alpha=ALPHA, beta=BETA, bandwidth_factor=1.5)
    pyro.clear_param_store()
    pyro.param("svgd_particles", init.clone())
    theirs = pinfer.SVGD(pyro_model, pk, poptim.Adam({"lr": 0.2}), 8, 0, mode=mode)
    vitorch.param("svgd_particles", init.clone())
    ours = SVGD(model, make_kernel(kind, 1.5), Adam({"lr": 0.2}), 8, 0, mode=mode)
    try:
        for _ in range(3):
            expected, found = theirs.step(), ours.step()
            assert found == pytest.approx(expected, rel=1e-4)
        torch.testing.assert_close(
            ours.get_named_particles()["x"], theirs.get_named_particles()["x"].detach()
        )
    finally:
        pyro.clear_param_store()
