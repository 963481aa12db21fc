"""AutoGaussian (dense backend) against Gaussian posteriors known exactly.

For a linear-Gaussian model the posterior is Gaussian and its precision has the sparsity
of the model's moral graph, which is exactly the family of AutoGaussian: SVI must find the
posterior's mean and covariance. The exact posteriors come from closed forms (the models of
``test_autoguide_structured``, Bayesian linear regression) or, for the model with crossed
plates, from the Hessian of the log joint (constant for a Gaussian, so exact). Fits use
800 steps of 16 vectorized particles with a decaying learning rate; the tolerances are
those of the other autoguide tests (a tenth of a posterior sd for means, 5% for sds, 0.06
for correlations), about twice the largest error seen over several seeds. The density of
a draw, the dense Gaussian of the model's own factors, and the dense Gaussian against
Pyro's for the same parameters are checked exactly.
"""

from __future__ import annotations

import pytest
import torch
from _regression import exact_posterior as regression_posterior
from _regression import regression, regression_data
from test_autoguide_structured import (
    X_H,
    D,
    chain,
    chain_posterior,
    check_gaussian,
    fit,
    hierarchical,
    hierarchical_posterior,
)

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.infer.autoguide.gaussian import AutoGaussian, AutoGaussianDense


def implied_gaussian(guide: AutoGaussian, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the flat unconstrained values: ``aux * scale + loc``."""
    posterior = guide.get_posterior()
    scale = torch.cat([getattr(guide.scales, n).reshape(-1) for n in names]).double().detach()
    loc = torch.cat([getattr(guide.locs, n).reshape(-1) for n in names]).double().detach()
    mean = posterior.mean.double().detach() * scale + loc
    cov = posterior.covariance_matrix.double().detach() * scale[:, None] * scale
    return mean, cov


def crossed(data: torch.Tensor) -> None:
    # u has plates i (dim -2) and j (dim -1); the observation only j, so the observation's
    # factor breaks plate i, left of the plate it keeps. (Not safe for vectorized particles:
    # u.sum(-2) would put the particle dim where plate i was.)
    a = vitorch.sample("a", dist.Normal(0.0, 1.0))
    with vitorch.plate("j", 3, dim=-1):
        with vitorch.plate("i", 2, dim=-2):
            u = vitorch.sample("u", dist.Normal(a, 0.8))
        vitorch.sample("d", dist.Normal(u.sum(-2), 0.5), obs=data)


CROSSED_DATA = torch.tensor([1.0, -0.5, 2.0])


def crossed_posterior() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of (a, u) from the log joint's Hessian and gradient at 0."""

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        a, u = z[0], z[1:].reshape(2, 3)
        lp = dist.Normal(0.0, 1.0).log_prob(a) + dist.Normal(a, 0.8).log_prob(u).sum()
        return lp + dist.Normal(u.sum(0), 0.5).log_prob(CROSSED_DATA.double()).sum()

    zero = torch.zeros(7, dtype=torch.double)
    precision = -torch.autograd.functional.hessian(log_joint, zero)
    grad = torch.autograd.functional.jacobian(log_joint, zero)
    cov = torch.linalg.inv(precision)
    return cov @ grad, cov


# -- exact posteriors -------------------------------------------------------------------------


def test_chain_reaches_the_exact_posterior() -> None:
    mean, cov = chain_posterior()
    guide = AutoGaussian(chain)
    fit(chain, guide, 800, torch.tensor(D))
    check_gaussian(*implied_gaussian(guide, ["x", "y"]), mean, cov)
    median = guide.median()
    found = implied_gaussian(guide, ["x", "y"])[0]
    assert torch.allclose(torch.stack([median["x"], median["y"]]).double(), found, atol=1e-6)


def test_local_latents_in_a_plate_reach_the_exact_posterior() -> None:
    mean, cov = hierarchical_posterior()
    guide = AutoGaussian(hierarchical)
    fit(hierarchical, guide, 800, X_H)
    # One factor per plate element: z_i couples with mu only.
    assert guide.prec_sqrts.z.shape == (3, 2, 1)
    check_gaussian(*implied_gaussian(guide, ["mu", "z"]), mean, cov)


def test_regression_with_a_broken_data_plate_reaches_the_exact_posterior() -> None:
    X, y = regression_data()
    mean, cov = regression_posterior(X, y)
    guide = AutoGaussian(regression)
    fit(regression, guide, 800, X, y)
    # The observations' factor couples (w, b): the data plate is broken, rank min(30, 3).
    assert guide.prec_sqrts.y.shape == (3, 3)
    check_gaussian(*implied_gaussian(guide, ["w", "b"]), mean, cov)


def test_the_models_own_factors_give_the_exact_posterior_with_crossed_plates() -> None:
    # Each site of a linear-Gaussian model contributes -(v.z - c)^2 / 2 to the log joint:
    # exactly an AutoGaussian factor with prec_sqrt = v and white_vec = c. Setting them so
    # (scales 1, locs 0) must give the exact posterior; the observation's factor breaks
    # plate i, left of the plate j it keeps, so this checks where the entries land.
    guide = AutoGaussian(crossed)
    guide(CROSSED_DATA)
    assert guide.prec_sqrts.u.shape == (2, 3, 2, 1)  # per (i, j): (u[i, j], a)
    assert guide.prec_sqrts.d.shape == (3, 2, 1)  # per j: (u[0, j], u[1, j])
    guide.prec_sqrts.a = torch.ones(1, 1)
    guide.prec_sqrts.u = torch.tensor([[1.0], [-1.0]]).expand(2, 3, 2, 1) / 0.8
    guide.prec_sqrts.d = torch.full((3, 2, 1), 1 / 0.5)
    guide.white_vecs.a = torch.zeros(1)
    guide.white_vecs.u = torch.zeros(2, 3, 1)
    guide.white_vecs.d = (CROSSED_DATA / 0.5).reshape(3, 1)
    guide.scales.a = torch.tensor(1.0)
    guide.scales.u = torch.ones(2, 3)
    guide.locs.a = torch.tensor(0.0)
    guide.locs.u = torch.zeros(2, 3)
    mean, cov = crossed_posterior()
    found_mean, found_cov = implied_gaussian(guide, ["a", "u"])
    assert torch.allclose(found_mean, mean, atol=1e-5)
    assert torch.allclose(found_cov, cov, atol=1e-5)
    median = guide.median()
    assert torch.allclose(median["u"].double(), mean[1:].reshape(2, 3), atol=1e-5)


# -- the guide's density ----------------------------------------------------------------------


def constrained(data: torch.Tensor) -> None:
    s = vitorch.sample("s", dist.LogNormal(0.0, 1.0))
    with vitorch.plate("p", 2):
        u = vitorch.sample("u", dist.Normal(0.0, s).expand([2, 3]).to_event(1))
    vitorch.sample("obs", dist.Normal(u.sum(), 1.0), obs=data)


def test_guide_density_is_the_gaussian_with_the_change_of_variables() -> None:
    guide = AutoGaussian(constrained, init_scale=0.5)
    data = torch.tensor(0.3)
    guide(data)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    tr = handlers.trace(guide).get_trace(data)
    s, u = tr.nodes["s"]["value"], tr.nodes["u"]["value"]
    assert u.shape == (2, 3)
    mean, cov = implied_gaussian(guide, ["s", "u"])
    flat = torch.cat([s.log().reshape(1), u.reshape(-1)]).double()
    expected = dist.MultivariateNormal(mean, cov).log_prob(flat) - s.log().double()
    # The latent vector's own site is auxiliary; the sites' Deltas carry the rest.
    assert tr.nodes["_AutoGaussianDense_latent"]["infer"]["is_auxiliary"]
    assert torch.allclose(tr.log_prob_sum().double(), expected, atol=1e-4)


# -- against Pyro -----------------------------------------------------------------------------


def test_parameters_and_dense_gaussian_match_pyro() -> None:
    pyro = pytest.importorskip("pyro")
    from pyro.infer.autoguide import AutoGaussian as PyroAutoGaussian

    def pyro_crossed(data):
        a = pyro.sample("a", pyro.distributions.Normal(0.0, 1.0))
        with pyro.plate("j", 3, dim=-1):
            with pyro.plate("i", 2, dim=-2):
                u = pyro.sample("u", pyro.distributions.Normal(a, 0.8))
            pyro.sample("d", pyro.distributions.Normal(u.sum(-2), 0.5), obs=data)

    guide = AutoGaussian(crossed)
    guide(CROSSED_DATA)
    pyro.clear_param_store()
    pyro_guide = PyroAutoGaussian(pyro_crossed)
    pyro_guide(CROSSED_DATA)
    ours, theirs = vitorch.get_param_store(), pyro.get_param_store()
    assert {k: ours[k].shape for k in ours.keys()} == {k: theirs[k].shape for k in theirs.keys()}
    # Same parameters, same dense Gaussian: the factors land in the same places.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name in ["white_vecs", "prec_sqrts"]:
            for site in ["a", "u", "d"]:
                value = getattr(getattr(guide, name), site)
                new = value + 0.5 * torch.randn(value.shape, generator=g)
                setattr(getattr(pyro_guide, name), site, new.clone())
                setattr(getattr(guide, name), site, new.clone())
    ours = guide.get_posterior()
    theirs = pyro_guide._dense_get_mvn()
    assert torch.allclose(ours.loc, theirs.loc, atol=1e-5)
    assert torch.allclose(ours.precision_matrix, theirs.precision_matrix, atol=1e-4)


# -- options and bad models -------------------------------------------------------------------


def test_backends() -> None:
    assert type(AutoGaussian(chain, backend="dense")) is AutoGaussianDense
    with pytest.raises(NotImplementedError, match="funsor.*not supported"):
        AutoGaussian(chain, backend="funsor")
    with pytest.raises(ValueError, match=r"backend must be 'dense'.*got 'sparse'"):
        AutoGaussian(chain, backend="sparse")
    with pytest.raises(ValueError, match="init_scale"):
        AutoGaussian(chain, init_scale=-1.0)


def test_bad_models_name_the_site() -> None:
    def missing_plate():
        vitorch.sample("v", dist.Normal(torch.zeros(3), 1.0))

    with pytest.raises(ValueError, match=r"site 'v' has batch shape \(3,\).*to_event"):
        AutoGaussian(missing_plate)()

    def subsampled():
        with vitorch.plate("data", 10, subsample_size=4):
            vitorch.sample("v", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"site 'v' is in the subsampled plate 'data'"):
        AutoGaussian(subsampled)()

    with pytest.raises(ValueError, match="no latent sample sites"):
        AutoGaussian(lambda: vitorch.sample("o", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0)))()
