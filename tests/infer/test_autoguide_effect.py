"""Effect-based autoguides against posteriors known exactly.

- Normal-Normal with known noise and Bayesian linear regression with known noise have
  Gaussian posteriors in closed form; the mean-field optimum has the exact means and the
  scales ``1 / sqrt(diag(precision))``.
- The chain ``a ~ N(0, 1)``, ``b ~ N(a, 1)``, ``y ~ N(b, sigma)`` has ``p(b | a, y)``
  Gaussian with a mean linear in ``a``, so the hierarchical guide
  ``q(b | a) = N(loc + weight * a, scale)`` contains the exact posterior and must find
  ``weight = sigma^2 / (1 + sigma^2)``.
- A model whose prior is a Normal pushed through ``biject_to(support)`` (LogNormal) is in
  the guide family, so the fit must recover the prior's parameters.

Fits use decaying learning rates and vectorized particles (as in test_autoguide.py), which
lets the tolerances be a tenth of a posterior standard deviation and 5% of a scale.
"""

from __future__ import annotations

import math

import pytest
import torch
from _regression import SIGMA, TAU, N, regression
from _regression import regression_data as _regression_data

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from vitorch.infer.autoguide.effect import (
    AutoHierarchicalNormalMessenger,
    AutoNormalMessenger,
    AutoRegressiveMessenger,
)
from vitorch.infer.elbo import ELBO
from vitorch.poutine.util import site_is_subsample


def fit(
    model, guide, steps: int, *args, lr: float = 0.05, final: float = 0.02, elbo=Trace_ELBO
) -> None:
    """``steps`` SVI steps (16 vectorized particles), lr decaying from ``lr`` to ``lr * final``."""
    optim = vitorch.optim.ClippedAdam({"lr": lr, "lrd": final ** (1 / steps)})
    svi = SVI(model, guide, optim, elbo(num_particles=16, vectorize_particles=True))
    for _ in range(steps):
        svi.step(*args)


# -- Normal-Normal, known noise ------------------------------------------------------------
NN_SIGMA = 2.0


def normal_normal(y: torch.Tensor) -> None:
    mu = vitorch.sample("mu", dist.Normal(1.0, 1.5))
    with vitorch.plate("data", len(y)):
        vitorch.sample("y", dist.Normal(mu, NN_SIGMA), obs=y)


def test_normal_normal_posterior_is_recovered() -> None:
    y = torch.tensor([2.3, 0.4, 3.1, 1.8, 2.9, 0.7])
    precision = 1 / 1.5**2 + len(y) / NN_SIGMA**2
    mean = (1.0 / 1.5**2 + y.sum().item() / NN_SIGMA**2) / precision
    sd = precision**-0.5
    guide = AutoNormalMessenger(normal_normal)
    fit(normal_normal, guide, 800, y)
    assert abs(guide.locs.mu.item() - mean) < 0.1 * sd, (guide.locs.mu, mean)
    assert abs(guide.scales.mu.item() / sd - 1) < 0.05, (guide.scales.mu, sd)


# -- Bayesian linear regression, known noise ---------------------------------------------


def test_regression_recovers_the_mean_and_mean_field_scales() -> None:
    X, y = _regression_data()
    A = torch.cat([X, torch.ones(N, 1)], 1).double()
    precision = torch.eye(3, dtype=torch.double) / TAU**2 + A.T @ A / SIGMA**2
    cov = torch.linalg.inv(precision)
    mean = cov @ A.T @ y.double() / SIGMA**2
    mf = precision.diagonal().rsqrt()
    # The test can tell the mean-field optimum from the marginal scales.
    assert (cov.diagonal().sqrt()[:2] / mf[:2]).min() > 2
    guide = AutoNormalMessenger(regression)
    # The closed-form KL (real sites get a plain Normal posterior) keeps the gradient noise
    # low, and 3000 steps let the slow, correlated direction converge (1500 left 0.11 sd
    # on one seed of sixteen) for a 0.1-sd check of the mean, as in AutoNormal's test.
    fit(regression, guide, 3000, X, y, elbo=TraceMeanField_ELBO)
    found = torch.cat([guide.locs.w, guide.locs.b[None]]).double()
    err = (found - mean) / cov.diagonal().sqrt()
    assert err.abs().max() < 0.1, (found, mean)
    scales = torch.cat([guide.scales.w, guide.scales.b[None]]).double()
    assert (scales / mf - 1).abs().max() < 0.05, (scales, mf)
    # The median runs the model at the posterior medians: the locs, for real sites.
    median = guide.median(X, y)
    assert torch.allclose(median["w"], guide.locs.w)
    assert torch.allclose(median["b"], guide.locs.b)
    assert torch.equal(median["y"], y)


# -- constrained sites ---------------------------------------------------------------------
M_POS, S_POS = 0.5, 0.3


def lognormal_model() -> None:
    vitorch.sample("pos", dist.LogNormal(M_POS, S_POS))


def test_positive_site_round_trips_and_recovers_its_prior() -> None:
    guide = AutoNormalMessenger(lognormal_model)
    draws = torch.stack([guide()["pos"] for _ in range(200)])
    assert bool((draws > 0).all())
    fit(lognormal_model, guide, 600)
    # The prior is exp(Normal(M, S)): inside the family, so the fit is exact up to noise.
    assert abs(guide.locs.pos.item() - M_POS) < 0.03, guide.locs.pos
    assert abs(guide.scales.pos.item() / S_POS - 1) < 0.05, guide.scales.pos
    median = guide.median()["pos"]
    assert median > 0
    assert torch.allclose(median, guide.locs.pos.exp())


def test_gamma_site_samples_in_support_and_log_density_has_the_jacobian() -> None:
    def model():
        vitorch.sample("g", dist.Gamma(torch.full((3,), 2.0), 1.5).to_event(1))

    guide = AutoNormalMessenger(model, init_scale=0.5)
    tr = handlers.trace(guide).get_trace()
    value = tr.nodes["g"]["value"]
    assert value.shape == (3,) and bool((value > 0).all())
    # log q(g) = log N(log g; loc, scale) - sum(log g), independently of the guide's code.
    u = value.log()
    expected = torch.distributions.Normal(guide.locs.g, guide.scales.g).log_prob(u) - u
    assert torch.allclose(tr.nodes["g"]["fn"].log_prob(value), expected.sum(), atol=1e-5)


# -- priors depending on upstream draws ----------------------------------------------------
CHAIN_SIGMA, CHAIN_Y = 1.0, torch.tensor(1.2)


def chain(y: torch.Tensor) -> None:
    a = vitorch.sample("a", dist.Normal(0.0, 1.0))
    b = vitorch.sample("b", dist.Normal(a, 1.0))
    vitorch.sample("y", dist.Normal(b, CHAIN_SIGMA), obs=y)


def test_posterior_is_built_from_the_prior_at_the_upstream_draw() -> None:
    guide = AutoHierarchicalNormalMessenger(chain, init_weight=0.7)
    guide(CHAIN_Y)
    with torch.no_grad():
        guide.locs.b = torch.tensor(0.25)
    for a in (-1.0, 2.0):
        tr = handlers.trace(handlers.condition(guide, data={"a": torch.tensor(a)})).get_trace(
            CHAIN_Y
        )
        # The guide's b is N(loc + weight * a, scale), its prior at the draw N(a, 1).
        fn = tr.nodes["b"]["fn"]
        assert torch.allclose(fn.mean, torch.tensor(0.25 + 0.7 * a))
        prior = tr.nodes["b"]["infer"]["prior"]
        assert torch.allclose(prior.mean, torch.tensor(a))
    median = guide.median(CHAIN_Y)
    assert torch.allclose(median["b"], guide.locs.b + guide.weights.b * median["a"])


def test_hierarchical_guide_recovers_the_exact_conditional_posterior() -> None:
    s2 = CHAIN_SIGMA**2
    # p(b | a, y) = N(w a + y / (1 + s2), s2 / (1 + s2)) with w = s2 / (1 + s2);
    # p(a | y) ∝ N(a; 0, 1) N(y; a, 1 + s2).
    weight, loc_b, sd_b = s2 / (1 + s2), CHAIN_Y.item() / (1 + s2), math.sqrt(s2 / (1 + s2))
    prec_a = 1 + 1 / (1 + s2)
    mean_a, sd_a = CHAIN_Y.item() / (1 + s2) / prec_a, prec_a**-0.5
    guide = AutoHierarchicalNormalMessenger(chain)
    fit(chain, guide, 1500, CHAIN_Y)
    assert abs(guide.weights.b.item() - weight) < 0.05, guide.weights.b
    assert abs(guide.locs.b.item() - loc_b) < 0.1 * sd_b, guide.locs.b
    assert abs(guide.scales.b.item() / sd_b - 1) < 0.05, guide.scales.b
    # a's prior mean is 0, so its loc is its posterior mean whatever its weight.
    assert abs(guide.locs.a.item() - mean_a) < 0.1 * sd_a, guide.locs.a
    assert abs(guide.scales.a.item() / sd_a - 1) < 0.05, guide.scales.a


def test_hierarchical_sites_restricts_the_weights() -> None:
    guide = AutoHierarchicalNormalMessenger(chain, hierarchical_sites=["b"])
    guide(CHAIN_Y)
    names = set(vitorch.get_param_store().keys())
    assert names == {"locs.a", "scales.a", "locs.b", "scales.b", "weights.b"}


def test_regressive_guide_starts_at_the_affine_mix_of_prior_and_init() -> None:
    guide = AutoRegressiveMessenger(chain, init_scale=0.2)
    tr = handlers.trace(handlers.condition(guide, data={"a": torch.tensor(3.0)})).get_trace(CHAIN_Y)
    fn = tr.nodes["b"]["fn"]
    # b = loc + 0.2 * x with x ~ N(3, 1), the prior at the draw of a.
    loc = guide.locs.b
    assert torch.allclose(loc, torch.tensor(0.8 * 3.0))
    assert torch.allclose(guide.scales.b, torch.tensor(0.2))
    v = torch.tensor([0.0, 2.5, 4.0])
    expected = torch.distributions.Normal(3.0, 1.0).log_prob((v - loc) / 0.2) - math.log(0.2)
    assert torch.allclose(fn.log_prob(v), expected, atol=1e-5)


# -- plates: particles, subsampling, amortization ------------------------------------------
def local_model(data: torch.Tensor) -> None:
    m = vitorch.sample("m", dist.Normal(0.0, 1.0))
    with vitorch.plate("items", 10, subsample_size=4) as idx:
        z = vitorch.sample("z", dist.Normal(m, 1.0))
        vitorch.sample("x", dist.Normal(z, 0.5), obs=data[idx])


def test_subsampled_plate_parameters_have_full_size_and_replay_matches() -> None:
    data = torch.arange(10.0)
    guide = AutoNormalMessenger(local_model)
    guide_trace, model_trace = ELBO._trace_pair(local_model, guide, (data,), {})
    assert guide.locs.z.shape == (10,)
    idx = guide_trace.nodes["items"]["value"]
    assert torch.equal(model_trace.nodes["items"]["value"], idx)
    assert torch.equal(model_trace.nodes["x"]["value"], data[idx])
    locs = vitorch.get_param_store()["locs.z"]
    assert torch.allclose(guide_trace.nodes["z"]["fn"].mean, locs[idx])
    amortized = AutoNormalMessenger(local_model, amortized_plates=("items",))
    vitorch.clear_param_store()
    amortized(data)
    assert amortized.locs.z.shape == ()


def test_first_call_inside_a_particle_plate_makes_unbatched_parameters() -> None:
    guide = AutoHierarchicalNormalMessenger(chain)
    with vitorch.plate("particles", 7, dim=-1):
        out = guide(CHAIN_Y)
    assert out["b"].shape == (7,)
    assert guide.locs.b.shape == () and guide.weights.b.shape == ()


# -- Predictive ---------------------------------------------------------------------------
def predictive_model(y: torch.Tensor | None = None) -> None:
    mu = vitorch.sample("mu", dist.Normal(1.0, 1.5))
    with vitorch.plate("data", 3):
        vitorch.sample("y", dist.Normal(mu, NN_SIGMA), obs=y)


def test_predictive_draws_from_the_guide() -> None:
    # The guide runs the model: without data, y would be a latent site of the guide too,
    # so it is blocked from the guide and the model draws it given the guide's mu.
    guide = AutoNormalMessenger(handlers.block(predictive_model, hide=["y"]), init_scale=0.3)
    guide(torch.tensor([2.3, 0.4, 3.1]))
    with torch.no_grad():
        guide.locs.mu = torch.tensor(1.5)
    assert set(vitorch.get_param_store().keys()) == {"locs.mu", "scales.mu"}
    samples = Predictive(predictive_model, guide=guide, num_samples=4000)()
    mu = samples["mu"].reshape(-1)
    assert samples["y"].shape == (4000, 3)
    # 4000 draws: the sample mean is within 5 standard errors (0.3 / sqrt(4000)).
    assert abs(mu.mean().item() - 1.5) < 5 * 0.3 / math.sqrt(4000)
    assert abs(mu.std().item() / 0.3 - 1) < 0.05
    spread = (samples["y"] - mu[:, None]).std().item()
    # 12000 draws of y - mu ~ N(0, 2): the relative error of their sd is about 0.7%.
    assert abs(spread / NN_SIGMA - 1) < 0.05


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("init_scale", [0.0, -1.0, "x", float("nan")])
@pytest.mark.parametrize("cls", [AutoNormalMessenger, AutoHierarchicalNormalMessenger])
def test_bad_init_scale(cls, init_scale) -> None:
    with pytest.raises(ValueError, match="init_scale"):
        cls(chain, init_scale=init_scale)


def test_discrete_latent_site_is_rejected_by_name() -> None:
    def model():
        vitorch.sample("coin", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="'coin'"):
        AutoNormalMessenger(model)()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model"):
        AutoNormalMessenger(3)
    with pytest.raises(TypeError, match="amortized_plates"):
        AutoNormalMessenger(chain, amortized_plates="items")
    with pytest.raises(TypeError, match="hierarchical_sites"):
        AutoHierarchicalNormalMessenger(chain, hierarchical_sites="b")
    with pytest.raises(ValueError, match="init_weight"):
        AutoHierarchicalNormalMessenger(chain, init_weight=0.0)


# -- Pyro cross-check -------------------------------------------------------------------------
def _pyro_mixed(lib, dist_mod, y):
    a = lib.sample("a", dist_mod.Normal(0.0, 1.0))
    s = lib.sample("s", dist_mod.LogNormal(0.0, 1.0))
    lib.deterministic("d", a * 2)
    with lib.plate("p", 3):
        b = lib.sample("b", dist_mod.Normal(a, 1.0))
        lib.sample("y", dist_mod.Normal(b, s), obs=y)


@pytest.mark.parametrize("name", ["AutoNormalMessenger", "AutoHierarchicalNormalMessenger"])
def test_names_traces_and_medians_match_pyro(name) -> None:
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist
    import pyro.infer.autoguide as pauto

    import vitorch.infer.autoguide.effect as effect

    y = torch.tensor([0.5, -1.0, 2.0])
    pyro.clear_param_store()
    pguide = getattr(pauto, name)(lambda y: _pyro_mixed(pyro, pdist, y))
    pmedian = pguide.median(y)
    pguide(y)
    _, pguide_trace = pguide.get_traces()
    guide = getattr(effect, name)(lambda y: _pyro_mixed(vitorch, dist, y))
    median = guide.median(y)
    tr = handlers.trace(guide).get_trace(y)
    assert set(vitorch.get_param_store().keys()) == set(pyro.get_param_store().keys())
    latent = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    assert latent == list(pguide_trace.nodes)
    assert sorted(guide(y)) == sorted(pguide(y))
    assert sorted(median) == sorted(pmedian)
    for key in median:
        assert torch.allclose(median[key], pmedian[key].detach(), atol=1e-6), key


def test_get_traces_pairs_the_posterior_with_the_prior() -> None:
    y = torch.tensor([2.3, 0.4])
    guide = AutoNormalMessenger(normal_normal)
    out = guide(y)
    model_trace, guide_trace = guide.get_traces()
    assert list(guide_trace.nodes) == ["mu"]
    assert guide_trace.nodes["mu"]["fn"].mean == guide.locs.mu
    prior = model_trace.nodes["mu"]["fn"]
    assert (prior.loc, prior.scale) == (1.0, 1.5)
    assert model_trace.nodes["y"]["is_observed"] and torch.equal(out["y"], y)
    assert torch.equal(guide.upstream_value("mu"), out["mu"])
    with pytest.raises(ValueError, match="'nope'"):
        guide.upstream_value("nope")


def test_mean_field_elbo_uses_the_analytic_kl_for_real_sites() -> None:
    def prior_only():
        vitorch.sample("mu", dist.Normal(1.0, 1.5))

    guide = AutoNormalMessenger(prior_only, init_scale=0.4)
    guide()
    with torch.no_grad():
        guide.locs.mu = torch.tensor(-0.3)
    # Without data the loss is KL(q || prior), exactly, when it is computed analytically.
    loss = TraceMeanField_ELBO().loss(prior_only, guide)
    kl = math.log(1.5 / 0.4) + (0.4**2 + 1.3**2) / (2 * 1.5**2) - 0.5
    assert abs(loss - kl) < 1e-5, (loss, kl)


def test_scalar_weight_type() -> None:
    class Scalar(AutoHierarchicalNormalMessenger):
        weight_type = "scalar"

    def model():
        a = vitorch.sample("a", dist.Normal(0.0, 1.0))
        with vitorch.plate("p", 4):
            vitorch.sample("b", dist.Normal(a, 1.0))

    guide = Scalar(model, init_weight=0.5)
    guide()
    assert guide.weights.b.shape == () and guide.locs.b.shape == (4,)
    median = guide.median()
    assert torch.allclose(median["b"], guide.locs.b + 0.5 * median["a"])
