"""``reparam`` with ``LocScaleReparam`` and ``TransformReparam``.

The reparameterized model must put the same distribution on the original site (checked by
moments, within standard-error bounds, and by the change-of-variables formula on the
densities), record the auxiliary sites Pyro records, and work with autoguides and SVI.
"""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.distributions import constraints
from vitorch.handlers import seed, trace
from vitorch.handlers.reparam import ReparamMessenger, reparam
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide import AutoDelta, AutoNormal, init_to_value
from vitorch.infer.reparam import LocScaleReparam, Reparam, TransformReparam
from vitorch.optim import Adam
from vitorch.poutine.util import site_is_subsample

LOC, SCALE, N = 1.5, 2.0, 40_000


def normal_model():
    with vitorch.plate("draws", N):
        return vitorch.sample("theta", dist.Normal(LOC, SCALE))


def _check_moments(x: torch.Tensor, mean: float, sd: float) -> None:
    # Mean within 5 standard errors; variance within 5 standard errors of the sample
    # variance of a Gaussian (sd**2 * sqrt(2 / (n - 1))).
    n = x.numel()
    assert abs(x.mean().item() - mean) < 5 * sd / math.sqrt(n)
    assert abs(x.var().item() - sd**2) < 5 * sd**2 * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("centered", [0.0, 0.5, 1.0, 0, None, "learned-0.2"])
def test_loc_scale_marginal_matches_original(centered):
    learned_at = None
    if centered == "learned-0.2":
        learned_at = 0.2
        # A learnable centering that is not at its default 0.5.
        vitorch.param("theta_centered", torch.tensor(0.2), constraint=constraints.unit_interval)
        centered = None
    model = reparam(normal_model, config={"theta": LocScaleReparam(centered=centered)})
    tr = trace(model).get_trace()
    theta = tr.nodes["theta"].value
    _check_moments(theta, LOC, SCALE)
    if centered == 1.0:
        assert "theta_decentered" not in tr.nodes
        assert not tr.nodes["theta"].is_observed
        return
    y = tr.nodes["theta_decentered"].value
    c = vitorch.param("theta_centered").item() if centered is None else centered
    if centered is None:
        assert c == pytest.approx(0.5 if learned_at is None else learned_at)
    # The auxiliary site has the decentered law D(c * loc, scale ** c) ...
    _check_moments(y, c * LOC, SCALE**c)
    # ... and the site is its exact image.
    expected = LOC + SCALE ** (1 - c) * (y - c * LOC)
    torch.testing.assert_close(theta, expected)
    site = tr.nodes["theta"]
    assert site.is_observed and site.type == "sample"
    assert float(site.fn.log_prob(theta).abs().sum()) == 0.0


def test_learned_centered_param_default_and_shape():
    def model():
        return vitorch.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    trace(reparam(model, config={"z": LocScaleReparam()})).get_trace()
    c = vitorch.param("z_centered")
    # One entry per event element, starting half-way, constrained to [0, 1].
    torch.testing.assert_close(c, torch.full((3,), 0.5))
    store = vitorch.get_param_store()
    assert "z_centered" in store.keys()


@pytest.mark.parametrize("c", [0.0, 0.3, 0.7])
def test_loc_scale_density_change_of_variables(c):
    loc = torch.tensor([0.5, -1.0, 2.0])
    scale = torch.tensor([0.7, 1.3, 2.5])

    def model():
        return vitorch.sample("x", dist.Normal(loc, scale).to_event(1))

    tr = trace(reparam(model, config={"x": LocScaleReparam(centered=c)})).get_trace()
    tr.compute_log_prob()
    y = tr.nodes["x_decentered"].value
    x = tr.nodes["x"].value
    # The event dim survives the reparameterization on both sites.
    assert tr.nodes["x_decentered"].fn.event_shape == (3,)
    assert tr.nodes["x"].fn.event_shape == (3,)
    # By hand: y ~ N(c loc, scale**c), elementwise.
    by_hand = sum(
        -0.5 * ((yi - c * li) / si**c) ** 2 - math.log(si**c) - 0.5 * math.log(2 * math.pi)
        for yi, li, si in zip(y.tolist(), loc.tolist(), scale.tolist())
    )
    assert tr.log_prob_sum().item() == pytest.approx(by_hand, abs=1e-5)
    # Change of variables: p_y(y) = p_x(x) |dx/dy| with dx/dy = scale ** (1 - c).
    original = dist.Normal(loc, scale).log_prob(x).sum()
    log_jac = ((1 - c) * scale.log()).sum()
    assert tr.log_prob_sum().item() == pytest.approx((original + log_jac).item(), abs=1e-5)


def test_student_t_shape_params_and_tensor_centered():
    df, loc, scale = 5.0, torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    c = torch.tensor([0.0, 0.6])

    def model():
        with vitorch.plate("draws", N, dim=-2):
            return vitorch.sample("t", dist.StudentT(df, loc, scale).to_event(1))

    for shape_params in (None, ["df"]):
        rep = LocScaleReparam(centered=c, shape_params=shape_params)
        tr = trace(reparam(model, config={"t": rep})).get_trace()
        aux = tr.nodes["t_decentered"].fn.base_dist
        assert isinstance(aux, dist.StudentT)
        # The plate has expanded the distribution to batch shape (N, 1).
        assert aux.batch_shape == (N, 1, 2)
        torch.testing.assert_close(aux.df, torch.full((N, 1, 2), df))
        torch.testing.assert_close(aux.loc, (loc * c).expand(N, 1, 2))
        torch.testing.assert_close(aux.scale, (scale**c).expand(N, 1, 2))
        t = tr.nodes["t"].value
        # Student-t with 5 dof: variance scale**2 * df / (df - 2); check the mean, and the
        # median (robust to the heavy tails) within 5 of its standard errors.
        n = t.shape[0]
        median = t.median(0).values
        median_se = scale * math.sqrt(math.pi / 2) / math.sqrt(n) * 1.1
        assert ((median - loc).abs() < 5 * median_se).all()
        sd = scale * math.sqrt(df / (df - 2))
        assert ((t.mean(0) - loc).abs() < 5 * sd / math.sqrt(n)).all()


def test_observed_site_is_decentered_as_observation():
    x_obs = torch.tensor([0.3, 2.0])

    def model():
        return vitorch.sample("x", dist.Normal(LOC, SCALE).expand([2]).to_event(1), obs=x_obs)

    tr = trace(reparam(model, config={"x": LocScaleReparam(centered=0.0)})).get_trace()
    aux = tr.nodes["x_decentered"]
    assert aux.is_observed
    torch.testing.assert_close(aux.value, (x_obs - LOC) / SCALE)
    assert tr.nodes["x"].value is x_obs


def test_config_callable_and_context_manager_and_pyro_positional():
    def model():
        a = vitorch.sample("a", dist.Normal(0.0, 2.0))
        b = vitorch.sample("b", dist.Normal(a, 3.0))
        return a, b

    seen = []

    def config(msg):
        seen.append(msg["name"])
        return LocScaleReparam(centered=0.0) if msg["name"] == "b" else None

    tr = trace(reparam(model, config=config)).get_trace()
    # The auxiliary site goes through the handler too (as in Pyro).
    assert seen == ["a", "b", "b_decentered"]
    assert "b_decentered" in tr.nodes and "a_decentered" not in tr.nodes
    torch.testing.assert_close(
        tr.nodes["b"].value, tr.nodes["a"].value + 3.0 * tr.nodes["b_decentered"].value
    )
    # As a context manager, and Pyro's ReparamMessenger(config) positional form.
    for handler in (
        reparam(config={"a": LocScaleReparam(0.0)}),
        ReparamMessenger({"a": LocScaleReparam(0.0)}),
    ):
        with trace() as tr2, handler:
            model()
        assert "a_decentered" in tr2.trace.nodes and "b_decentered" not in tr2.trace.nodes


def test_unsupported_and_bad_input_errors():
    def model():
        return vitorch.sample("rate", dist.Gamma(2.0, 1.0))

    with pytest.raises(ValueError, match="'rate'.*Gamma"):
        trace(reparam(model, config={"rate": LocScaleReparam(0.0)})).get_trace()
    with pytest.raises(ValueError, match="'rate'.*TransformedDistribution.*Gamma"):
        trace(reparam(model, config={"rate": TransformReparam()})).get_trace()
    # LogNormal has loc/scale parameters but is not a location-scale family.
    with pytest.raises(ValueError, match="LogNormal"):
        with trace(), reparam(config={"ln": LocScaleReparam(0.0)}):
            vitorch.sample("ln", dist.LogNormal(0.0, 1.0))
    with pytest.raises(ValueError, match="centered must lie in"):
        LocScaleReparam(centered=1.5)
    with pytest.raises(TypeError, match="centered"):
        LocScaleReparam(centered="half")
    with pytest.raises(TypeError, match="shape_params"):
        LocScaleReparam(shape_params="df")
    with pytest.raises(TypeError, match="config"):
        reparam(model, config=3)
    with pytest.raises(TypeError, match="'rate'.*Reparam"):
        trace(reparam(model, config={"rate": "not a reparam"})).get_trace()
    with pytest.raises(NotImplementedError):
        Reparam().apply({"name": "x", "fn": None, "value": None, "is_observed": False})


def test_transform_reparam_lognormal():
    m, s = 0.3, 0.8

    def model():
        with vitorch.plate("draws", N):
            base = dist.Normal(m, s)
            return vitorch.sample(
                "y", dist.TransformedDistribution(base, [dist.transforms.ExpTransform()])
            )

    rep_model = reparam(model, config={"y": TransformReparam()})
    tr = trace(seed(rep_model, rng_seed=1)).get_trace()
    base = tr.nodes["y_base"]
    assert isinstance(base.fn, dist.Normal) and not base.is_observed
    torch.testing.assert_close(tr.nodes["y"].value, base.value.exp())
    assert tr.nodes["y"].is_observed
    _check_moments(base.value, m, s)
    # Same seed, same draws as the original model's: the base draw is the same.
    orig = trace(seed(model, rng_seed=1)).get_trace()
    torch.testing.assert_close(orig.nodes["y"].value, tr.nodes["y"].value)
    # torch's LogNormal is a TransformedDistribution too; an observation is pulled back.
    obs = torch.tensor([0.5, 2.0, 4.0])

    def obs_model():
        return vitorch.sample("z", dist.LogNormal(m, s).expand([3]).to_event(1), obs=obs)

    tr = trace(reparam(obs_model, config={"z": TransformReparam()})).get_trace()
    assert tr.nodes["z_base"].is_observed
    assert tr.nodes["z_base"].fn.event_shape == (3,)
    torch.testing.assert_close(tr.nodes["z_base"].value, obs.log())


def eight_schools():
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    mu = vitorch.sample("mu", dist.Normal(0.0, 5.0))
    tau = vitorch.sample("tau", dist.HalfCauchy(5.0))
    with vitorch.plate("J", 8):
        theta = vitorch.sample("theta", dist.Normal(mu, tau))
        vitorch.sample("obs", dist.Normal(theta, sigma), obs=y)


@pytest.mark.parametrize("centered", [None, 0.0])
def test_svi_autonormal_eight_schools(centered):
    model = reparam(eight_schools, config={"theta": LocScaleReparam(centered=centered)})
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    svi.step()
    guide_tr = trace(guide).get_trace()
    latent = [
        n
        for n, s in guide_tr.nodes.items()
        if s.type == "sample" and not s.is_observed and not site_is_subsample(s)
    ]
    assert sorted(latent) == ["mu", "tau", "theta_decentered"]
    store = vitorch.get_param_store()
    if centered is None:
        before = store["theta_centered"].detach().clone()
        assert before.shape == ()
        for _ in range(20):
            svi.step()
        after = store["theta_centered"]
        assert after.item() != before.item()
        assert 0.0 < after.item() < 1.0
    else:
        assert "theta_centered" not in store.keys()


def test_elbo_matches_hand_computation():
    # With the guide's values fixed (AutoDelta), the Trace_ELBO loss is minus the joint
    # log-density of the reparameterized model, computable by hand.
    model = reparam(eight_schools, config={"theta": LocScaleReparam(centered=0.0)})
    guide = AutoDelta(model)
    guide()
    loss = Trace_ELBO().loss(model, guide)
    med = guide.median()
    mu, tau, eta = med["mu"], med["tau"], med["theta_decentered"]
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    theta = mu + tau * eta
    joint = (
        dist.Normal(0.0, 5.0).log_prob(mu)
        + dist.HalfCauchy(5.0).log_prob(tau)
        + dist.Normal(0.0, 1.0).log_prob(eta).sum()
        + dist.Normal(theta, sigma).log_prob(y).sum()
    )
    assert loss == pytest.approx(-joint.item(), rel=1e-5)


def test_init_value_carried_to_decentered_site():
    theta0 = torch.linspace(-2.0, 3.0, 8)
    model = reparam(eight_schools, config={"theta": LocScaleReparam(centered=0.0)})
    values = {"mu": torch.tensor(1.0), "tau": torch.tensor(2.0), "theta": theta0}
    guide = AutoDelta(model, init_loc_fn=init_to_value(values=values))
    guide()
    med = guide.median()
    # theta = mu + tau * eta, so the initial eta is (theta0 - mu) / tau.
    torch.testing.assert_close(med["theta_decentered"], (theta0 - 1.0) / 2.0)


def test_site_names_match_pyro():
    pyro = pytest.importorskip("pyro")
    pdist = pytest.importorskip("pyro.distributions")
    from pyro.infer.reparam import LocScaleReparam as PyroLocScale
    from pyro.infer.reparam import TransformReparam as PyroTransform

    def make(lib, d):
        def model():
            mu = lib.sample("mu", d.Normal(0.0, 5.0))
            with lib.plate("J", 4):
                lib.sample("theta", d.Normal(mu, 2.0))
                lib.sample(
                    "w",
                    d.TransformedDistribution(d.Normal(0.0, 1.0), [d.transforms.ExpTransform()]),
                )
                lib.sample("obs", d.Normal(mu, 1.0), obs=torch.zeros(4))

        return model

    def summary(tr):
        return [
            (name, site["type"], bool(site["is_observed"]), tuple(site["value"].shape))
            for name, site in tr.nodes.items()
            # Pyro records plates as sample sites; vitorch does not.
            if site["type"] in ("sample", "param") and name != "J"
        ]

    vt = trace(
        reparam(
            make(vitorch, dist),
            config={
                "theta": LocScaleReparam(),
                "w": TransformReparam(),
                "obs": LocScaleReparam(0.0),
            },
        )
    ).get_trace()
    pyro.clear_param_store()
    pt = pyro.poutine.trace(
        pyro.poutine.reparam(
            make(pyro, pdist),
            config={"theta": PyroLocScale(), "w": PyroTransform(), "obs": PyroLocScale(0.0)},
        )
    ).get_trace()
    assert summary(vt) == summary(pt)
