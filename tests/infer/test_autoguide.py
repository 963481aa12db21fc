"""Autoguides and initialization against posteriors known exactly.

Bayesian linear regression with known noise has a Gaussian posterior in closed form: a
full-rank Normal guide must find its mean and covariance, a mean-field one the mean and the
optimal mean-field scales ``1 / sqrt(diag(precision))`` (far from the marginal scales here,
because the two inputs are strongly correlated), and a MAP guide the mean. Models whose
prior is a Normal pushed through ``biject_to(support)`` (LogNormal, logit-normal,
logistic-normal on the simplex, a lower-Cholesky factor) are in the guide families exactly,
so the guides must recover the prior's parameters. Fits use decaying learning rates and
vectorized particles so that the tolerances can be tight.
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
from vitorch import handlers
from vitorch.distributions import constraints
from vitorch.distributions import transforms as T
from vitorch.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from vitorch.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from vitorch.infer.autoguide.initialization import InitMessenger


def fit(model, guide, loss, steps: int, *args, lr: float = 0.05, final: float = 0.02) -> None:
    """``steps`` SVI steps with the learning rate decaying from ``lr`` to ``lr * final``."""
    optim = vitorch.optim.ClippedAdam({"lr": lr, "lrd": final ** (1 / steps)})
    svi = SVI(model, guide, optim, loss)
    for _ in range(steps):
        svi.step(*args)


# -- Bayesian linear regression, exact posterior ------------------------------------------


def _check_mean(found: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    # Within a tenth of a posterior standard deviation.
    err = (found.double() - mean) / cov.diagonal().sqrt()
    assert err.abs().max() < 0.1, (found, mean)


def _check_cov(found: torch.Tensor, cov: torch.Tensor) -> None:
    sd = cov.diagonal().sqrt()
    found_sd = found.double().diagonal().sqrt()
    assert ((found_sd / sd) - 1).abs().max() < 0.05, (found_sd, sd)
    corr = cov / sd[:, None] / sd
    found_corr = found.double() / found_sd[:, None] / found_sd
    assert (found_corr - corr).abs().max() < 0.06, (found_corr, corr)


def _mean_field_scales(cov: torch.Tensor) -> torch.Tensor:
    mf = torch.linalg.inv(cov).diagonal().rsqrt()
    # The test can tell the mean-field optimum from the marginal scales.
    assert (cov.diagonal().sqrt()[:2] / mf[:2]).min() > 2
    return mf


@pytest.mark.parametrize("estimator", ["reparam", "omt", "avf"])
def test_multivariate_normal_recovers_the_exact_posterior(estimator: str) -> None:
    X, y = _regression_data()
    mean, cov = _exact_posterior(X, y)
    guide = AutoMultivariateNormal(regression, estimator=estimator)
    fit(regression, guide, Trace_ELBO(num_particles=16, vectorize_particles=True), 1500, X, y)
    posterior = guide.get_posterior()
    _check_mean(posterior.mean, mean, cov)
    _check_cov(posterior.covariance_matrix.detach(), cov)
    # The packing order is the model's: w (2 entries) then b.
    median = guide.median()
    assert torch.equal(median["w"], posterior.mean[:2].detach())
    assert torch.equal(median["b"], posterior.mean[2].detach())


def test_multivariate_normal_avf_control_variate_is_a_trained_parameter() -> None:
    X, y = _regression_data()
    guide = AutoMultivariateNormal(regression, estimator="avf", avf_rank=3)
    guide(X, y)
    assert guide.control_var.shape == (2, 3, 3)
    before = guide.control_var.detach().clone()
    fit(regression, guide, Trace_ELBO(), 5, X, y)
    assert not torch.equal(before, guide.control_var.detach())
    assert "AutoMultivariateNormal.control_var" in vitorch.get_param_store()


def test_low_rank_multivariate_normal_of_full_rank_recovers_the_exact_posterior() -> None:
    X, y = _regression_data()
    mean, cov = _exact_posterior(X, y)
    guide = AutoLowRankMultivariateNormal(regression, rank=3)
    fit(regression, guide, Trace_ELBO(num_particles=16, vectorize_particles=True), 1500, X, y)
    posterior = guide.get_posterior()
    _check_mean(posterior.mean, mean, cov)
    _check_cov(posterior.covariance_matrix.detach(), cov)


def test_normal_recovers_the_mean_and_mean_field_scales() -> None:
    X, y = _regression_data()
    mean, cov = _exact_posterior(X, y)
    mf = _mean_field_scales(cov)
    guide = AutoNormal(regression)
    loss = TraceMeanField_ELBO(num_particles=16, vectorize_particles=True)
    fit(regression, guide, loss, 1500, X, y)
    _check_mean(torch.cat([guide.locs.w, guide.locs.b[None]]), mean, cov)
    scales = torch.cat([guide.scales.w, guide.scales.b[None]]).double()
    assert (scales / mf - 1).abs().max() < 0.05, (scales, mf)
    for name, _ in guide.prototype_trace.iter_stochastic_nodes():
        loc, scale = guide._get_loc_and_scale(name)
        assert (
            loc is guide.locs.w
            or loc is guide.locs.b
            or torch.equal(loc, getattr(guide.locs, name))
        )


def test_normal_site_distribution_is_the_normal_itself_for_real_sites() -> None:
    # So that TraceMeanField_ELBO can use the analytic KL against a Normal prior.
    X, y = _regression_data()
    guide = AutoNormal(regression)
    tr = handlers.trace(guide).get_trace(X, y)
    fn = tr.nodes["w"]["fn"]
    assert isinstance(fn, torch.distributions.Independent)
    assert isinstance(fn.base_dist, torch.distributions.Normal)
    assert fn.event_shape == (2,) and isinstance(tr.nodes["b"]["fn"], torch.distributions.Normal)


def test_diagonal_normal_recovers_the_mean_and_mean_field_scales() -> None:
    X, y = _regression_data()
    mean, cov = _exact_posterior(X, y)
    mf = _mean_field_scales(cov)
    guide = AutoDiagonalNormal(regression)
    fit(regression, guide, Trace_ELBO(num_particles=16, vectorize_particles=True), 1500, X, y)
    _check_mean(guide.loc, mean, cov)
    assert (guide.scale.double() / mf - 1).abs().max() < 0.05, (guide.scale, mf)


def test_delta_finds_the_map() -> None:
    X, y = _regression_data()
    mean, _ = _exact_posterior(X, y)  # the posterior is Gaussian: its mode is its mean
    guide = AutoDelta(regression)
    fit(regression, guide, Trace_ELBO(), 800, X, y)
    found = torch.cat([guide.median()["w"], guide.median()["b"][None]]).double()
    assert (found - mean).abs().max() < 1e-3, (found, mean)


# -- constrained sites ------------------------------------------------------------------------
M_POS, S_POS = torch.tensor(0.5), torch.tensor(0.3)
M_UNIT, S_UNIT = torch.tensor(-1.0), torch.tensor(0.4)
M_SIMPLEX, S_SIMPLEX = torch.tensor([0.2, -0.3]), torch.tensor([0.5, 0.25])
M_CHOL, S_CHOL = torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.2, 0.3, 0.4])


def constrained() -> None:
    """Each prior is a Normal pushed through biject_to of its support."""
    vitorch.sample("pos", dist.LogNormal(M_POS, S_POS))
    logit_normal = dist.TransformedDistribution(dist.Normal(M_UNIT, S_UNIT), T.SigmoidTransform())
    vitorch.sample("unit", logit_normal)
    vitorch.sample("simplex", dist.LogisticNormal(M_SIMPLEX, S_SIMPLEX))
    chol = dist.TransformedDistribution(
        dist.Normal(M_CHOL, S_CHOL).to_event(1),
        [T.VecToTrilTransform(), T.LowerCholeskyTransform()],
    )
    vitorch.sample("chol", chol)


TRUE_LOC = torch.cat([M_POS[None], M_UNIT[None], M_SIMPLEX, M_CHOL])
TRUE_SCALE = torch.cat([S_POS[None], S_UNIT[None], S_SIMPLEX, S_CHOL])
SUPPORTS = {
    "pos": constraints.positive,
    "unit": constraints.unit_interval,
    "simplex": constraints.simplex,
    "chol": constraints.lower_cholesky,
}


def test_normal_recovers_pushed_forward_priors_with_analytic_kl() -> None:
    guide = AutoNormal(constrained)
    fit(constrained, guide, TraceMeanField_ELBO(), 300)
    names = ["pos", "unit", "simplex", "chol"]
    locs = torch.cat([getattr(guide.locs, n).reshape(-1) for n in names])
    scales = torch.cat([getattr(guide.scales, n).reshape(-1) for n in names])
    # The KL is exact here (same bijections), so the fit is exact up to the optimizer.
    assert torch.allclose(locs, TRUE_LOC, atol=1e-3)
    assert torch.allclose(scales, TRUE_SCALE, rtol=1e-3)


@pytest.mark.parametrize("guide_class", [AutoDiagonalNormal, AutoMultivariateNormal])
def test_continuous_guides_recover_pushed_forward_priors(guide_class) -> None:
    # Monte Carlo ELBO: the log-Jacobians carried by the guide's Delta sites matter here.
    guide = guide_class(constrained)
    fit(constrained, guide, Trace_ELBO(num_particles=8, vectorize_particles=True), 600)
    posterior = guide.get_posterior()
    assert (posterior.mean - TRUE_LOC).abs().max() < 0.06
    assert (posterior.stddev / TRUE_SCALE - 1).abs().max() < 0.08


@pytest.mark.parametrize(
    "guide_class", [AutoNormal, AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal]
)
def test_constrained_values_round_trip_and_samples_lie_in_the_support(guide_class) -> None:
    values = {
        "pos": torch.tensor(2.5),
        "unit": torch.tensor(0.2),
        "simplex": torch.tensor([0.2, 0.3, 0.5]),
        "chol": torch.tensor([[1.5, 0.0], [-0.4, 0.7]]),
    }
    guide = guide_class(constrained, init_loc_fn=init_to_value(values=values))
    draws = guide()
    for name, value in guide.median().items():
        assert torch.allclose(value, values[name], atol=1e-5), name
    for name, draw in draws.items():
        assert bool(SUPPORTS[name].check(draw).all()), name
        assert draw.shape == values[name].shape


def _change_of_variables(name: str, value: torch.Tensor, log_q_unconstrained) -> torch.Tensor:
    # Independently of the guide: torch's own bijection and log-Jacobian.
    t = torch.distributions.biject_to(SUPPORTS[name])
    u = t.inv(value)
    ldj = t.log_abs_det_jacobian(u, value)
    return log_q_unconstrained(u) - ldj.sum()


def test_normal_guide_density_is_the_change_of_variables() -> None:
    guide = AutoNormal(constrained, init_scale=0.3)
    tr = handlers.trace(guide).get_trace()
    for name in SUPPORTS:
        site = tr.nodes[name]
        loc, scale = guide._get_loc_and_scale(name)

        def log_q(u, loc=loc, scale=scale):
            return torch.distributions.Normal(loc, scale).log_prob(u).sum()

        expected = _change_of_variables(name, site["value"], log_q)
        assert torch.allclose(site["fn"].log_prob(site["value"]).sum(), expected, atol=1e-4), name


@pytest.mark.parametrize("guide_class", [AutoDiagonalNormal, AutoMultivariateNormal])
def test_continuous_guide_density_is_the_change_of_variables(guide_class) -> None:
    guide = guide_class(constrained, init_scale=0.3)
    tr = handlers.trace(guide).get_trace()
    tr.compute_log_prob()
    total = sum(site["log_prob_sum"] for site in tr.nodes.values() if site["type"] == "sample")
    latent = tr.nodes[f"_{guide_class.__name__}_latent"]["value"]
    expected = guide.get_posterior().log_prob(latent)
    for name in SUPPORTS:
        value = tr.nodes[name]["value"]
        t = torch.distributions.biject_to(SUPPORTS[name])
        expected = expected - t.log_abs_det_jacobian(t.inv(value), value).sum()
    assert torch.allclose(total, expected, atol=1e-4)


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDiagonalNormal, AutoMultivariateNormal])
def test_quantiles_are_ordered_and_the_middle_one_is_the_median(guide_class) -> None:
    guide = guide_class(constrained, init_scale=0.3)
    guide()
    q = guide.quantiles([0.25, 0.5, 0.75])
    median = guide.median()
    for name in SUPPORTS:
        assert q[name].shape == (3,) + median[name].shape
        assert torch.allclose(q[name][1], median[name], atol=1e-6), name
    for name in ("pos", "unit"):  # monotone transforms keep the order
        assert q[name][0] < q[name][1] < q[name][2]


def test_delta_quantiles_are_the_point() -> None:
    guide = AutoDelta(constrained)
    guide()
    q = guide.quantiles([0.1, 0.9])
    assert torch.equal(q["chol"][0], guide.median()["chol"])
    assert torch.equal(q["chol"][1], guide.median()["chol"])


# -- subsampling: one local latent per data point ----------------------------------------------
NL, B = 20, 5


def _local_data() -> torch.Tensor:
    return 1.0 + torch.randn(NL, generator=torch.Generator().manual_seed(3))


def local_model(x: torch.Tensor, subsample_size: int = B) -> None:
    mu = vitorch.sample("mu", dist.Normal(0.0, 1.0))
    with vitorch.plate("data", NL, subsample_size=subsample_size) as idx:
        z = vitorch.sample("z", dist.Normal(mu, 1.0))
        vitorch.sample("x", dist.Normal(z, 0.5), obs=x[idx])


def _local_posterior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and precision of (mu, z_1 .. z_N)."""
    precision = torch.zeros(NL + 1, NL + 1, dtype=torch.double)
    precision[0, 0] = 1 + NL
    precision[0, 1:] = precision[1:, 0] = -1
    precision[1:, 1:] = torch.eye(NL, dtype=torch.double) * (1 + 4)
    rhs = torch.cat([torch.zeros(1), 4 * x]).double()
    return torch.linalg.solve(precision, rhs), precision


def test_normal_with_subsampling_keeps_full_size_parameters_and_recovers_them() -> None:
    x = _local_data()
    mean, precision = _local_posterior(x)
    guide = AutoNormal(local_model)
    loss = TraceMeanField_ELBO(num_particles=8, vectorize_particles=True)
    # Ending at lr 1e-4 rather than 1e-3: the last subsampled steps otherwise move the
    # global mean by about a tenth of its posterior sd for some seeds.
    fit(local_model, guide, loss, 3000, x, final=0.002)
    assert guide.locs.z.shape == (NL,)
    locs = torch.cat([guide.locs.mu[None], guide.locs.z]).double()
    scales = torch.cat([guide.scales.mu[None], guide.scales.z]).double()
    sd = torch.linalg.inv(precision).diagonal().sqrt()
    assert ((locs - mean) / sd).abs().max() < 0.1
    assert (scales * precision.diagonal().sqrt() - 1).abs().max() < 0.05


def test_diagonal_normal_with_subsampling_recovers_the_mean_field_posterior() -> None:
    # The continuous guides keep every local latent in their vector and use the subsample's
    # entries; their entropy term covers all of them at every step, so this estimator is
    # noisier than AutoNormal's: half of the data per step keeps the fit short.
    x = _local_data()
    mean, precision = _local_posterior(x)
    guide = AutoDiagonalNormal(local_model)
    # 16 particles, 3000 steps and a low final lr: with 8 / 2000 / 0.005 the end-of-run
    # optimizer noise alone put the scales 5% off for some seeds.
    loss = Trace_ELBO(num_particles=16, vectorize_particles=True)
    fit(local_model, guide, loss, 3000, x, NL // 2, final=0.002)
    assert guide.loc.shape == (NL + 1,)
    sd = torch.linalg.inv(precision).diagonal().sqrt()
    assert ((guide.loc.double() - mean) / sd).abs().max() < 0.1
    assert (guide.scale.double() * precision.diagonal().sqrt() - 1).abs().max() < 0.05


def test_delta_with_subsampling_finds_the_map() -> None:
    x = _local_data()
    mean, precision = _local_posterior(x)
    guide = AutoDelta(local_model)
    # 3000 steps ending at lr 2e-4: with 1500 ending at 1e-3 the last subsampled steps
    # still moved the estimate by over a tenth of a posterior sd for some seeds.
    fit(local_model, guide, Trace_ELBO(), 3000, x, lr=0.1, final=0.002)
    found = torch.cat([guide.mu[None], guide.z]).double()
    # Subsampling makes the gradient noisy even for a point estimate: within a tenth of a
    # posterior standard deviation, as for the other guides.
    sd = torch.linalg.inv(precision).diagonal().sqrt()
    assert ((found - mean) / sd).abs().max() < 0.1


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDelta, AutoDiagonalNormal])
def test_guide_and_model_use_the_same_subsample(guide_class) -> None:
    x = _local_data()
    guide = guide_class(local_model)
    guide_trace = handlers.trace(guide).get_trace(x)
    model_trace = handlers.trace(handlers.replay(local_model, trace=guide_trace)).get_trace(x)
    idx = guide_trace.nodes["data"]["value"]
    assert idx.shape == (B,) and torch.equal(model_trace.nodes["data"]["value"], idx)
    z = guide_trace.nodes["z"]
    assert z["value"].shape == (B,) and z["scale"] == NL / B
    full = guide.median()["z"]
    if guide_class is AutoDelta:
        assert torch.equal(z["value"], full[idx])
    elif guide_class is AutoNormal:
        assert torch.equal(z["fn"].loc, guide.locs.z[idx])


def test_create_plates_gives_the_guide_the_callers_subsample() -> None:
    x = _local_data()

    def model(x, idx):
        with vitorch.plate("data", NL, subsample=idx):
            vitorch.sample("z", dist.Normal(0.0, 1.0))

    guide = AutoNormal(model, create_plates=lambda x, idx: vitorch.plate("data", NL, subsample=idx))
    idx = torch.tensor([3, 17, 4])
    tr = handlers.trace(guide).get_trace(x, idx)
    assert torch.equal(tr.nodes["z"]["fn"].loc, guide.locs.z[idx])
    assert guide.locs.z.shape == (NL,)


# -- AutoGuideList ----------------------------------------------------------------------------
def test_guide_list_combines_a_map_part_and_a_normal_part() -> None:
    x = _local_data()
    guide = AutoGuideList(local_model)
    guide.append(AutoDelta(handlers.block(local_model, expose=["mu"])))
    guide.append(AutoNormal(handlers.block(local_model, hide=["mu"])))
    assert len(guide) == 2 and isinstance(guide[0], AutoDelta) and isinstance(guide[1], AutoNormal)
    tr = handlers.trace(guide).get_trace(x)
    # One subsample, shared by the parts.
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["mu", "data", "z"]
    fit(local_model, guide, TraceMeanField_ELBO(num_particles=8, vectorize_particles=True), 2000, x)
    # With q(mu) a point, the optimum is mu = the posterior mean of mu, and each q(z_i) the
    # exact conditional N((mu + 4 x_i) / 5, 1 / 5).
    mu = 4 * x.sum() / (5 + 4 * NL)
    _, precision = _local_posterior(x)
    sd = torch.linalg.inv(precision).diagonal().sqrt()  # within a tenth of these
    assert abs(guide[0].mu - mu) < 0.1 * sd[0]
    assert (guide[1].locs.z - (mu + 4 * x) / 5).abs().max() < 0.1 * sd[1]
    assert (guide[1].scales.z / 0.2**0.5 - 1).abs().max() < 0.05
    store = vitorch.get_param_store()
    assert "AutoGuideList.0.mu" in store and "AutoGuideList.1.locs.z" in store
    assert set(guide.median()) == {"mu", "z"}


def test_guide_list_rejects_a_site_guided_twice() -> None:
    guide = AutoGuideList(constrained)
    guide.append(AutoNormal(constrained))
    guide.append(AutoDelta(handlers.block(constrained, expose=["pos"])))
    with pytest.raises(ValueError, match="'pos'"):
        guide()


def test_guide_list_accepts_a_plain_guide_function() -> None:
    def guide_pos():
        return {"pos": vitorch.sample("pos", dist.Delta(torch.tensor(1.0)))}

    guide = AutoGuideList(constrained)
    guide.append(guide_pos)
    guide.append(AutoNormal(handlers.block(constrained, hide=["pos"])))
    assert set(guide()) == set(SUPPORTS)


# -- modules: parameters, state ---------------------------------------------------------------
def test_parameters_and_state_dict_round_trip() -> None:
    guide = AutoNormal(constrained)
    guide()
    names = {n for n, _ in guide.named_parameters()}
    assert "locs.pos_unconstrained" in names and "scales.chol_unconstrained" in names
    with torch.no_grad():
        guide.locs.pos = torch.tensor(1.25)
    state = guide.state_dict()
    vitorch.clear_param_store()
    fresh = AutoNormal(constrained)
    fresh()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.locs.pos, torch.tensor(1.25))
    for name, value in guide.median().items():
        assert torch.allclose(fresh.median()[name], value)


@pytest.mark.parametrize(
    "guide_class", [AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal]
)
def test_posterior_is_the_base_distribution_pushed_through_the_transform(guide_class) -> None:
    guide = guide_class(constrained, init_scale=0.3)
    guide()
    posterior = guide.get_posterior()
    pushed = dist.TransformedDistribution(guide.get_base_dist(), guide.get_transform())
    z = posterior.sample((5,))
    assert torch.allclose(pushed.log_prob(z), posterior.log_prob(z), atol=1e-4)
    assert guide.get_base_dist().event_shape == (guide.latent_dim,) == (7,)


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDelta, AutoMultivariateNormal])
def test_a_fitted_guide_survives_torch_save_and_load(guide_class, tmp_path) -> None:
    guide = guide_class(constrained)
    guide()
    torch.save(guide, tmp_path / "guide.pt")
    loaded = torch.load(tmp_path / "guide.pt", weights_only=False)
    for name, value in guide.median().items():
        assert torch.equal(loaded.median()[name], value)
    assert set(loaded()) == set(SUPPORTS)


# -- errors ------------------------------------------------------------------------------------
def discrete_model() -> None:
    vitorch.sample("x", dist.Normal(0.0, 1.0))
    vitorch.sample("coin", dist.Bernoulli(0.3))


@pytest.mark.parametrize(
    "guide_class", [AutoNormal, AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal]
)
def test_discrete_latent_site_is_named_with_a_fix(guide_class) -> None:
    with pytest.raises(ValueError, match=r"discrete sample site 'coin'.*block"):
        guide_class(discrete_model)()


def test_support_without_bijection_is_named() -> None:
    class _Odd(constraints.Constraint):
        event_dim = 0

        def check(self, value):
            return value == value

    class OddNormal(dist.Normal):
        @property
        def support(self):
            return _Odd()

    def model():
        vitorch.sample("odd", OddNormal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"'odd'.*no\s+bijection"):
        AutoNormal(model, init_loc_fn=init_to_sample)()


@pytest.mark.parametrize(
    "make",
    [
        lambda m: AutoNormal(m, init_scale=0.0),
        lambda m: AutoNormal(m, init_scale=-1.0),
        lambda m: AutoDiagonalNormal(m, init_scale=float("nan")),
        lambda m: AutoMultivariateNormal(m, init_scale=True),
        lambda m: AutoLowRankMultivariateNormal(m, init_scale=-0.1),
    ],
)
def test_bad_init_scale(make) -> None:
    with pytest.raises(ValueError, match="init_scale"):
        make(constrained)


def test_bad_estimator_rank_and_model() -> None:
    with pytest.raises(ValueError, match=r"estimator.*'reparam', 'omt', 'avf'"):
        AutoMultivariateNormal(constrained, estimator="score")
    with pytest.raises(ValueError, match="avf_rank"):
        AutoMultivariateNormal(constrained, estimator="avf", avf_rank=0)
    with pytest.raises(ValueError, match="rank"):
        AutoLowRankMultivariateNormal(constrained, rank=0)
    with pytest.raises(TypeError, match="model must be callable"):
        AutoNormal("model")


@pytest.mark.parametrize(
    "guide_class", [AutoNormal, AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal]
)
def test_median_and_quantiles_before_the_guide_has_run(guide_class) -> None:
    guide = guide_class(regression)
    with pytest.raises(ValueError, match=r"median\(\) was called before the guide has run"):
        guide.median()
    with pytest.raises(ValueError, match=r"quantiles\(\) was called before"):
        guide.quantiles([0.5])
    X, y = _regression_data()
    assert set(guide.median(X, y)) == {"w", "b"}  # given the model's arguments, it sets up


def test_sequential_plate_is_named() -> None:
    def model():
        for i in vitorch.plate("p", 2):
            vitorch.sample(f"z{i}", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"'z0'.*sequential plate 'p'"):
        AutoNormal(model)()


def test_delta_site_named_like_a_guide_attribute() -> None:
    def model():
        vitorch.sample("median", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'median'.*rename"):
        AutoDelta(model)()


def test_no_latent_sites() -> None:
    def model():
        vitorch.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(ValueError, match="no latent sample sites"):
        AutoMultivariateNormal(model)()


def test_create_plates_must_return_plates() -> None:
    guide = AutoNormal(local_model, create_plates=lambda x: "data")
    with pytest.raises(TypeError, match="create_plates must return"):
        guide(_local_data())


def test_bad_initial_values_are_named() -> None:
    with pytest.raises(ValueError, match=r"site 'simplex'.*shape \(2,\).*shape \(3,\)"):
        AutoNormal(constrained, init_loc_fn=init_to_value(values={"simplex": torch.ones(2)}))()
    with pytest.raises(ValueError, match=r"site 'pos'.*outside its support"):
        AutoNormal(constrained, init_loc_fn=init_to_value(values={"pos": torch.tensor(-1.0)}))()
    with pytest.raises(TypeError, match="init_loc_fn"):
        InitMessenger("median")


# -- initialization ----------------------------------------------------------------------------
def _site(fn, name: str = "x") -> dict:
    return {"name": name, "fn": fn}


def test_init_to_feasible_is_the_image_of_zero() -> None:
    assert init_to_feasible(_site(dist.Normal(5.0, 1.0))) == 0.0
    assert init_to_feasible(_site(dist.Gamma(3.0, 1.0))) == 1.0
    assert init_to_feasible(_site(dist.Beta(3.0, 1.0))) == 0.5
    assert torch.allclose(
        init_to_feasible(_site(dist.Dirichlet(torch.ones(4)))), torch.full((4,), 0.25)
    )
    assert init_to_feasible() is init_to_feasible


def test_init_to_median_and_sample_use_prior_draws() -> None:
    fn = dist.Gamma(torch.full((3,), 2.0), 1.0)
    vitorch.set_rng_seed(7)
    value = init_to_median(num_samples=31)(_site(fn))
    vitorch.set_rng_seed(7)
    assert torch.equal(value, fn.sample((31,)).median(0).values)
    vitorch.set_rng_seed(7)
    value = init_to_sample(_site(fn))
    vitorch.set_rng_seed(7)
    assert torch.equal(value, fn.sample())
    # Multivariate sites have no median: the fallback decides.
    mvn = dist.MultivariateNormal(torch.ones(2), torch.eye(2))
    assert torch.equal(init_to_median(_site(mvn)), torch.zeros(2))
    with pytest.raises(ValueError, match="'x'"):
        init_to_median(_site(mvn), fallback=None)


def test_init_to_mean_falls_back_where_the_mean_is_undefined() -> None:
    assert init_to_mean(_site(dist.Normal(3.0, 2.0))) == 3.0
    # Cauchy has no mean: the median fallback gives a finite value.
    value = init_to_mean(_site(dist.Cauchy(1.0, 1.0)))
    assert math.isfinite(float(value))
    with pytest.raises(ValueError, match="'x'"):
        init_to_mean(_site(dist.Cauchy(1.0, 1.0)), fallback=None)


def test_init_to_uniform_lies_within_the_radius_in_unconstrained_space() -> None:
    fn = dist.LogNormal(torch.zeros(1000), 1.0)
    value = init_to_uniform(radius=0.5)(_site(fn))
    assert value.log().abs().max() <= 0.5 and value.log().abs().max() > 0.45
    with pytest.raises(ValueError, match="radius"):
        init_to_uniform(radius=0.0)


def test_init_to_value_and_its_fallback() -> None:
    init = init_to_value(values={"x": torch.tensor(2.0)}, fallback=init_to_feasible)
    assert init(_site(dist.Normal(0.0, 1.0))) == 2.0
    assert init(_site(dist.Gamma(2.0, 1.0), name="y")) == 1.0
    with pytest.raises(ValueError, match="'y'"):
        init_to_value(values={}, fallback=None)(_site(dist.Normal(0.0, 1.0), name="y"))
    with pytest.raises(TypeError, match="values"):
        init_to_value(values=[1.0])


def test_init_messenger_sets_latent_sites_only() -> None:
    def model():
        a = vitorch.sample("a", dist.Normal(3.0, 1.0))
        b = vitorch.sample("b", dist.Normal(0.0, 1.0), obs=torch.tensor(5.0))
        return a, b

    assert InitMessenger(init_to_mean)(model)() == (3.0, 5.0)


def test_autoguide_uses_its_init_loc_fn() -> None:
    X, y = _regression_data()
    guide = AutoNormal(regression, init_loc_fn=init_to_value(values={"b": torch.tensor(0.75)}))
    guide(X, y)
    assert guide.locs.b == 0.75
    guide = AutoMultivariateNormal(regression, init_loc_fn=init_to_mean)
    guide(X, y)
    assert torch.equal(guide.loc.detach(), torch.zeros(3))
