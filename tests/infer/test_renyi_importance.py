"""RenyiELBO, TraceTailAdaptive_ELBO and Importance against hand-written estimators.

The conjugate Normal-Normal model has a closed-form log evidence and posterior. The
estimators are checked on the very draws they made (recorded by the guide) against the
formulas written out here, and in expectation against the exact values within a few
standard errors estimated from the samples.
"""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.distributions import constraints
from vitorch.infer.importance import EmpiricalMarginal, Importance, TracePosterior
from vitorch.infer.renyi_elbo import RenyiELBO
from vitorch.infer.tail_adaptive_elbo import TraceTailAdaptive_ELBO, tail_adaptive_weights

Z = 4.0  # how many standard errors an estimate may be off
MU0, S0, SIGMA = 0.5, 2.0, 1.3


def _data(n: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return 1.7 + SIGMA * torch.randn(n, generator=g)


def model(data: torch.Tensor) -> torch.Tensor:
    z = vitorch.sample("z", dist.Normal(MU0, S0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("x", dist.Normal(z, SIGMA), obs=data)
    return z


def make_guide(loc: float = 1.0, scale: float = 0.6, record: list | None = None):
    """A Normal guide with learnable loc/scale that records the z it draws."""

    def guide(data: torch.Tensor) -> None:
        m = vitorch.param("loc", torch.tensor(loc))
        s = vitorch.param("scale", torch.tensor(scale), constraint=constraints.positive)
        z = vitorch.sample("z", dist.Normal(m, s))
        if record is not None:
            record.append(z)

    return guide


def log_evidence(data: torch.Tensor) -> float:
    n = len(data)
    cov = SIGMA**2 * torch.eye(n) + S0**2 * torch.ones(n, n)
    mvn = torch.distributions.MultivariateNormal(torch.full((n,), MU0), cov)
    return float(mvn.log_prob(data))


def posterior(data: torch.Tensor) -> tuple[float, float]:
    prec = 1 / S0**2 + len(data) / SIGMA**2
    mean = (MU0 / S0**2 + float(data.sum()) / SIGMA**2) / prec
    return mean, 1 / math.sqrt(prec)


def elbo_closed_form(m: float, s: float, data: torch.Tensor) -> float:
    n = len(data)
    e_prior = -0.5 * math.log(2 * math.pi * S0**2) - ((m - MU0) ** 2 + s**2) / (2 * S0**2)
    e_lik = -0.5 * n * math.log(2 * math.pi * SIGMA**2) - (
        float(((data - m) ** 2).sum()) + n * s**2
    ) / (2 * SIGMA**2)
    return e_prior + e_lik + 0.5 * math.log(2 * math.pi * math.e * s**2)


def hand_log_w(z: torch.Tensor, data: torch.Tensor, m, s) -> torch.Tensor:
    """log p(x, z) - log q(z), written out, for a 1-d tensor of draws ``z``."""
    z = z.reshape(-1, 1)

    def normal_lp(x, mu, sd):
        return (
            -0.5 * ((x - mu) / sd) ** 2
            - torch.log(torch.as_tensor(sd))
            - 0.5 * math.log(2 * math.pi)
        )

    log_p = normal_lp(z, MU0, S0).squeeze(-1) + normal_lp(data, z, SIGMA).sum(-1)
    return log_p - normal_lp(z.squeeze(-1), m, s)


def _params():
    store = vitorch.get_param_store()
    return store["loc"], store["scale"]


# -- RenyiELBO ------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.5, -0.7])
@pytest.mark.parametrize("vectorize", [True, False])
def test_renyi_value_and_gradient_match_hand_estimator(alpha, vectorize):
    data = _data()
    draws: list = []
    guide = make_guide(record=draws)
    k = 64 if vectorize else 8
    elbo = RenyiELBO(alpha=alpha, num_particles=k, vectorize_particles=vectorize)
    loss = elbo.differentiable_loss(model, guide, data)
    # When vectorized, a first run guesses the plate nesting: the last draws count.
    z = draws[-1].reshape(-1) if vectorize else torch.cat([d.reshape(-1) for d in draws])
    assert z.shape == (k,)
    loc, scale = _params()
    log_w = hand_log_w(z, data, loc, scale)
    hand = -(torch.logsumexp((1 - alpha) * log_w, 0) - math.log(k)) / (1 - alpha)
    torch.testing.assert_close(loss, hand, rtol=1e-6, atol=1e-5)
    # The gradient on these draws is the pathwise gradient of the hand-written bound.
    store = vitorch.get_param_store()
    unconstrained = [store.get_unconstrained(n) for n in ("loc", "scale")]
    g_elbo = torch.autograd.grad(loss, unconstrained, retain_graph=True)
    g_hand = torch.autograd.grad(hand, unconstrained)
    for a, b in zip(g_elbo, g_hand):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
def test_at_the_exact_posterior_every_weight_is_the_evidence(alpha):
    """With q = p(z | x), log w = log p(x) for every draw, whatever alpha."""
    data = _data()
    mean, sd = posterior(data)
    guide = make_guide(mean, sd)
    for vectorize in (True, False):
        elbo = RenyiELBO(alpha=alpha, num_particles=8, vectorize_particles=vectorize)
        loss = elbo.differentiable_loss(model, guide, data)
        assert float(loss.detach()) == pytest.approx(-log_evidence(data), abs=1e-3)
    # Equal weights: the tail-adaptive surrogate is the plain average of log w.
    tail = TraceTailAdaptive_ELBO(num_particles=32)
    assert float(tail.differentiable_loss(model, guide, data).detach()) == pytest.approx(
        -log_evidence(data), abs=1e-3
    )


def test_renyi_model_without_latents_is_the_log_likelihood():
    data = _data(3)

    def obs_only(data):
        with vitorch.plate("data", len(data)):
            vitorch.sample("x", dist.Normal(0.0, 1.0), obs=data)

    for vectorize in (True, False):
        elbo = RenyiELBO(num_particles=3, vectorize_particles=vectorize)
        expected = float(torch.distributions.Normal(0.0, 1.0).log_prob(data).sum())
        assert -elbo.loss(obs_only, lambda data: None, data) == pytest.approx(expected, rel=1e-6)


def test_renyi_alpha_one_raises_and_bad_alpha():
    with pytest.raises(ValueError, match="Trace_ELBO"):
        RenyiELBO(alpha=1)
    with pytest.raises(TypeError, match="alpha"):
        RenyiELBO(alpha="0")


def test_renyi_bound_sits_between_elbo_and_evidence_and_grows_with_k():
    data = _data()
    guide = make_guide(loc=1.0, scale=0.6)
    exact = log_evidence(data)
    elbo_exact = elbo_closed_form(1.0, 0.6, data)
    assert exact - elbo_exact > 1.0  # the guide is far enough off to see the gap
    reps = 100
    means, ses = {}, {}
    for k in (1, 10, 100, 1000):
        est = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True)
        vals = torch.tensor([-est.loss(model, guide, data) for _ in range(reps)])
        means[k], ses[k] = float(vals.mean()), float(vals.std()) / math.sqrt(reps)
    # One particle: the estimator is the ELBO itself.
    assert abs(means[1] - elbo_exact) < Z * ses[1] + 1e-4
    for k in (10, 100, 1000):
        assert ses[k] < 0.2
        assert elbo_exact < means[k] < exact + Z * ses[k]
    for a, b in ((1, 10), (10, 100), (100, 1000)):
        assert means[a] < means[b] + Z * math.hypot(ses[a], ses[b])
    # The gaps close fast: the first step up in K gains a lot.
    assert means[10] - elbo_exact > Z * ses[10]
    assert exact - means[1000] < 0.1


def local_model(data: torch.Tensor) -> None:
    with vitorch.plate("items", len(data)):
        z = vitorch.sample("z", dist.Normal(MU0, S0))
        vitorch.sample("x", dist.Normal(z, SIGMA), obs=data)


def test_renyi_plate_shared_by_every_site_gets_one_bound_per_item():
    data = _data(5)
    draws: list = []

    def guide(data):
        m = vitorch.param("m", torch.linspace(0.0, 1.0, len(data)))
        with vitorch.plate("items", len(data)):
            draws.append(vitorch.sample("z", dist.Normal(m, 0.7)))

    k = 16
    elbo = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    value = -elbo.loss(local_model, guide, data)
    z = draws[0]
    assert z.shape == (k, len(data))
    m = torch.linspace(0.0, 1.0, len(data))
    log_w = (
        dist.Normal(MU0, S0).log_prob(z)
        + dist.Normal(z, SIGMA).log_prob(data)
        - dist.Normal(m, 0.7).log_prob(z)
    )
    hand = (torch.logsumexp(log_w, 0) - math.log(k)).sum()
    assert value == pytest.approx(float(hand), rel=1e-6)


def test_renyi_score_function_gradient_is_unbiased_for_the_bound():
    """Discrete latent, K=2: E[bound] and its gradient by enumeration of both draws."""
    n_items, k = 4000, 2
    x_obs = 1.2
    data = torch.full((n_items,), x_obs)

    def disc_model(data):
        with vitorch.plate("items", len(data)):
            z = vitorch.sample("z", dist.Bernoulli(0.3))
            vitorch.sample("x", dist.Normal(2.0 * z, 1.0), obs=data)

    def disc_guide(data):
        theta = vitorch.param("theta", torch.tensor(0.4))
        with vitorch.plate("items", len(data)):
            vitorch.sample("z", dist.Bernoulli(logits=theta.expand(len(data))))

    theta = torch.tensor(0.4, requires_grad=True)
    q1 = torch.sigmoid(theta)
    zs = torch.tensor([0.0, 1.0])
    q = torch.stack([1 - q1, q1])
    log_w = (
        torch.distributions.Bernoulli(0.3).log_prob(zs)
        + torch.distributions.Normal(2.0 * zs, 1.0).log_prob(torch.tensor(x_obs))
        - torch.log(q)
    )
    expected = sum(
        q[i] * q[j] * (torch.logsumexp(torch.stack([log_w[i], log_w[j]]), 0) - math.log(2))
        for i in range(2)
        for j in range(2)
    )
    (exact_grad,) = torch.autograd.grad(expected, theta)
    elbo = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    grads, values = [], []
    for _ in range(10):
        loss = elbo.differentiable_loss(disc_model, disc_guide, data)
        p = vitorch.get_param_store().get_unconstrained("theta")
        (g,) = torch.autograd.grad(loss, p)
        grads.append(-float(g) / n_items)  # the gradient of the mean per-item bound
        values.append(-float(loss.detach()) / n_items)
    grads_t, values_t = torch.tensor(grads), torch.tensor(values)
    se_g = float(grads_t.std()) / math.sqrt(len(grads))
    se_v = float(values_t.std()) / math.sqrt(len(values))
    assert abs(float(values_t.mean()) - float(expected.detach())) < Z * se_v + 1e-6
    assert se_g < 0.2 * abs(float(exact_grad))
    assert abs(float(grads_t.mean()) - float(exact_grad)) < Z * se_g


def test_renyi_matches_pyro_on_the_same_draws():
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist
    from pyro.distributions import constraints as pconstraints

    data = _data()

    def p_model(data):
        z = pyro.sample("z", pdist.Normal(MU0, S0))
        with pyro.plate("data", len(data)):
            pyro.sample("x", pdist.Normal(z, SIGMA), obs=data)

    def p_guide(data):
        m = pyro.param("loc", torch.tensor(1.0))
        s = pyro.param("scale", torch.tensor(0.6), constraint=pconstraints.positive)
        pyro.sample("z", pdist.Normal(m, s))

    for alpha in (0.0, 0.5):
        pyro.clear_param_store()
        torch.manual_seed(7)
        theirs = pyro.infer.RenyiELBO(
            alpha=alpha, num_particles=32, vectorize_particles=True, max_plate_nesting=1
        ).loss(p_model, p_guide, data)
        torch.manual_seed(7)
        ours = RenyiELBO(
            alpha=alpha, num_particles=32, vectorize_particles=True, max_plate_nesting=1
        ).loss(model, make_guide(1.0, 0.6), data)
        assert ours == pytest.approx(theirs, rel=1e-5)


# -- TraceTailAdaptive_ELBO -----------------------------------------------------------
def test_tail_adaptive_weights_are_the_empirical_tail_probability():
    log_w = torch.tensor([0.3, -1.0, 2.0, 0.3, 5.0])
    # F(w_k) = #{j : w_j >= w_k} / K
    tail = torch.tensor([(log_w >= v).sum() / 5.0 for v in log_w])
    torch.testing.assert_close(tail_adaptive_weights(log_w, -1.0), tail.pow(-1.0))
    torch.testing.assert_close(tail_adaptive_weights(log_w, -0.5), tail.pow(-0.5))


def test_tail_adaptive_gradient_matches_paper_formula():
    data = _data()
    draws: list = []
    guide = make_guide(record=draws)
    k, beta = 50, -1.0
    elbo = TraceTailAdaptive_ELBO(
        num_particles=k, vectorize_particles=True, tail_adaptive_beta=beta
    )
    loss = elbo.differentiable_loss(model, guide, data)
    z = draws[-1].reshape(-1)
    loc, scale = _params()
    log_w = hand_log_w(z, data, loc, scale)
    # rho_k = F(w_k)^beta with F the empirical tail probability, held fixed.
    lw = log_w.detach()
    rho = torch.stack([((lw >= v).sum() / k) ** beta for v in lw])
    hand = -(rho * log_w).sum() / rho.sum()
    torch.testing.assert_close(loss, hand, rtol=1e-6, atol=1e-5)
    store = vitorch.get_param_store()
    unconstrained = [store.get_unconstrained(n) for n in ("loc", "scale")]
    g_elbo = torch.autograd.grad(loss, unconstrained, retain_graph=True)
    g_hand = torch.autograd.grad(hand, unconstrained)
    for a, b in zip(g_elbo, g_hand):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The heaviest weight counts most (beta < 0).
    assert int(rho.argmax()) == int(lw.argmax())


def test_tail_adaptive_errors():
    data = _data()
    with pytest.raises(NotImplementedError, match="vectorize_particles"):
        TraceTailAdaptive_ELBO(num_particles=4, vectorize_particles=False)
    elbo = TraceTailAdaptive_ELBO(num_particles=4)
    with pytest.raises(NotImplementedError, match="not implemented"):
        elbo.loss(model, make_guide(), data)

    def bern_model(data):
        vitorch.sample("b", dist.Bernoulli(0.5))

    def bern_guide(data):
        vitorch.sample("b", dist.Bernoulli(0.4))

    with pytest.raises(NotImplementedError, match="reparameterized"):
        elbo.differentiable_loss(bern_model, bern_guide, data)
    with pytest.warns(UserWarning, match="num_particles==1"):
        TraceTailAdaptive_ELBO(num_particles=1)


# -- Importance -----------------------------------------------------------------------
def test_importance_with_prior_proposal_matches_the_posterior():
    data = _data(4)
    n = 4000
    imp = Importance(model, guide=None, num_samples=n).run(data)
    assert isinstance(imp, TracePosterior)
    assert len(imp.log_weights) == n
    ess = float(imp.get_ESS())
    assert 0 < ess <= n
    assert ess > 50  # enough for the tolerances below to be meaningful
    post_mean, post_sd = posterior(data)
    marginal = EmpiricalMarginal(imp, sites="z")
    assert abs(float(marginal.mean) - post_mean) < Z * post_sd / math.sqrt(ess)
    # The variance from ESS effective samples: relative se about sqrt(2 / ESS).
    assert abs(float(marginal.variance) / post_sd**2 - 1) < Z * math.sqrt(2 / ess)
    # log Z: delta-method standard error of the mean weight, sqrt((N/ESS - 1) / N).
    se_log_z = math.sqrt((n / ess - 1) / n)
    assert abs(float(imp.get_log_normalizer()) - log_evidence(data)) < Z * se_log_z
    # The model's return value is z, the default site.
    torch.testing.assert_close(EmpiricalMarginal(imp).mean, marginal.mean)


def test_importance_log_weights_are_log_p_minus_log_q():
    data = _data(4)
    imp = Importance(model, guide=make_guide(1.0, 0.6), num_samples=30).run(data)
    z = torch.stack([tr.nodes["z"].value for tr in imp.exec_traces])
    expected = hand_log_w(z, data, torch.tensor(1.0), torch.tensor(0.6))
    torch.testing.assert_close(torch.stack(imp.log_weights), expected.detach())
    w = torch.softmax(expected.detach(), 0)
    torch.testing.assert_close(imp.get_normalized_weights(), w)
    torch.testing.assert_close(imp.get_ESS(), 1 / (w**2).sum())
    torch.testing.assert_close(
        imp.get_log_normalizer(), torch.logsumexp(expected.detach(), 0) - math.log(30)
    )


def test_empirical_marginal_distribution_methods():
    data = _data(4)
    imp = Importance(model, guide=make_guide(1.0, 0.6), num_samples=20).run(data)
    marginal = EmpiricalMarginal(imp, sites="z")
    samples = marginal.enumerate_support()
    w = torch.softmax(torch.stack(imp.log_weights), 0)
    torch.testing.assert_close(marginal.mean, (w * samples).sum())
    torch.testing.assert_close(marginal.variance, (w * (samples - (w * samples).sum()) ** 2).sum())
    draws = marginal.sample((7,))
    assert draws.shape == (7,)
    assert all(bool((samples == d).any()) for d in draws)
    torch.testing.assert_close(marginal.log_prob(samples[3]), w[3].log())
    assert marginal.log_prob(torch.tensor(123.0)) == -math.inf
    assert marginal.log_prob(samples[:5]).shape == (5,)
    both = EmpiricalMarginal(imp, sites=["z", "z"])
    assert both.event_shape == (2,)
    # Posterior draws are stored traces without their observations.
    tr = imp()
    assert "z" in tr.nodes and "x" not in tr.nodes


def test_importance_and_marginal_input_errors():
    with pytest.raises(ValueError, match="num_samples"):
        Importance(model, num_samples=0)
    with pytest.warns(UserWarning, match="num_samples"):
        Importance(model)
    with pytest.raises(TypeError, match="trace_posterior"):
        EmpiricalMarginal(object(), "z")
    imp = Importance(model, num_samples=3)
    with pytest.raises(ValueError, match="run"):
        EmpiricalMarginal(imp, "z")
    imp.run(_data(4))
    with pytest.raises(ValueError, match="nope"):
        EmpiricalMarginal(imp, "nope")


def test_svi_step_reports_the_bound_and_inf_for_tail_adaptive():
    from vitorch.infer import SVI
    from vitorch.optim import SGD

    data = _data()
    mean, sd = posterior(data)
    # At the exact posterior every weight is p(x): the step reports -log p(x) exactly.
    svi = SVI(model, make_guide(mean, sd), SGD({"lr": 0.0}), RenyiELBO(num_particles=4))
    assert svi.step(data) == pytest.approx(-log_evidence(data), abs=1e-3)
    # Pyro's tail-adaptive step returns inf: the divergence itself is not estimated.
    vitorch.clear_param_store()
    svi = SVI(model, make_guide(), SGD({"lr": 1e-3}), TraceTailAdaptive_ELBO(num_particles=4))
    assert svi.step(data) == math.inf
    assert float(vitorch.get_param_store()["loc"].detach()) != 1.0  # the guide's initial loc
