"""SVI: convergence to exact posteriors, and which parameters a step updates."""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.distributions import constraints
from vitorch.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

# -- Normal-Normal: the exact posterior is in the guide family ----------------------------
MU0, S0, SIGMA = 0.5, 3.0, 1.0


def _nn_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(21)
    return 2.0 + SIGMA * torch.randn(50, generator=g)


def nn_model(data: torch.Tensor) -> None:
    mu = vitorch.sample("mu", dist.Normal(MU0, S0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("obs", dist.Normal(mu, SIGMA), obs=data)


def nn_guide(data: torch.Tensor) -> None:
    loc = vitorch.param("loc", torch.tensor(0.0))
    scale = vitorch.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    vitorch.sample("mu", dist.Normal(loc, scale))


def _fit(model, guide, data, elbo, steps: int, average_last: int, read) -> list[float]:
    """Run SVI with a decaying learning rate; average ``read()`` over the last iterates."""
    optim = vitorch.optim.ClippedAdam({"lr": 0.05, "lrd": 0.998})
    svi = SVI(model, guide, optim, elbo)
    sums = None
    for i in range(steps):
        svi.step(data)
        if i >= steps - average_last:
            values = read()
            sums = values if sums is None else [a + b for a, b in zip(sums, values)]
    return [s / average_last for s in sums]


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_normal_normal_converges_to_the_exact_posterior(elbo_cls) -> None:
    data = _nn_data()
    precision = 1 / S0**2 + len(data) / SIGMA**2
    post_mean = (MU0 / S0**2 + float(data.sum()) / SIGMA**2) / precision
    post_sd = precision**-0.5
    loc, scale = _fit(
        nn_model,
        nn_guide,
        data,
        elbo_cls(num_particles=16, vectorize_particles=True),
        steps=2000,
        average_last=500,
        read=lambda: [vitorch.param("loc").item(), vitorch.param("scale").item()],
    )
    assert abs(loc - post_mean) < 0.05 * post_sd, (loc, post_mean, post_sd)
    assert abs(scale - post_sd) < 0.05 * post_sd, (scale, post_sd)


# -- Beta-Bernoulli: the guide is a Beta, reparameterized ---------------------------------
A0, B0 = 2.0, 3.0


def _bb_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(40, generator=g) < 0.7).float()


def bb_model(data: torch.Tensor) -> None:
    p = vitorch.sample("p", dist.Beta(A0, B0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("x", dist.Bernoulli(p), obs=data)


def bb_guide(data: torch.Tensor) -> None:
    a = vitorch.param("a", torch.tensor(1.0), constraint=constraints.positive)
    b = vitorch.param("b", torch.tensor(1.0), constraint=constraints.positive)
    vitorch.sample("p", dist.Beta(a, b))


def test_beta_bernoulli_converges_to_the_exact_posterior_mean() -> None:
    data = _bb_data()
    heads = float(data.sum())
    post_a, post_b = A0 + heads, B0 + len(data) - heads
    post_mean = post_a / (post_a + post_b)
    post_sd = math.sqrt(post_a * post_b / ((post_a + post_b) ** 2 * (post_a + post_b + 1)))

    def read() -> list[float]:
        a, b = vitorch.param("a").item(), vitorch.param("b").item()
        return [a / (a + b)]

    (mean,) = _fit(
        bb_model,
        bb_guide,
        data,
        Trace_ELBO(num_particles=8, vectorize_particles=True),
        steps=1500,
        average_last=400,
        read=read,
    )
    assert abs(mean - post_mean) < 0.05 * post_sd, (mean, post_mean, post_sd)


# -- one step, exactly ---------------------------------------------------------------------
def _delta_guide(data: torch.Tensor) -> None:
    vitorch.sample("mu", dist.Delta(vitorch.param("loc", torch.tensor(0.7))))


def test_one_sgd_step_is_exact() -> None:
    data = _nn_data()
    lr = 1e-3
    svi = SVI(nn_model, _delta_guide, vitorch.optim.SGD({"lr": lr}), Trace_ELBO())
    # loss(m) = -log N(m; MU0, S0) - sum log N(x; m, SIGMA); d loss / dm written out:
    m = 0.7
    grad = (m - MU0) / S0**2 - float((data - m).sum()) / SIGMA**2
    exact_loss = -float(
        torch.distributions.Normal(MU0, S0).log_prob(torch.tensor(m))
        + torch.distributions.Normal(m, SIGMA).log_prob(data).sum()
    )
    assert svi.evaluate_loss(data) == pytest.approx(exact_loss, rel=1e-6)
    assert vitorch.param("loc").item() == pytest.approx(0.7)  # evaluate_loss does not step
    returned = svi.step(data)
    assert returned == pytest.approx(exact_loss, rel=1e-6)  # the loss before the step
    assert vitorch.param("loc").item() == pytest.approx(m - lr * grad, rel=1e-6)


def test_a_callable_loss() -> None:
    data = _nn_data()
    calls = []

    def loss_fn(model, guide, *args):
        calls.append(1)
        return Trace_ELBO().differentiable_loss(model, guide, *args)

    svi = SVI(nn_model, _delta_guide, vitorch.optim.SGD({"lr": 1e-3}), loss_fn)
    svi.step(data)
    assert calls == [1]
    m = 0.7
    grad = (m - MU0) / S0**2 - float((data - m).sum()) / SIGMA**2
    assert vitorch.param("loc").item() == pytest.approx(m - 1e-3 * grad, rel=1e-6)


# -- which parameters a step updates -----------------------------------------------------
def test_only_touched_params_are_updated() -> None:
    data = _nn_data()
    unused = vitorch.param("unused", torch.tensor([1.0, 2.0]))
    # Even a stale gradient on an untouched parameter must not move it.
    vitorch.get_param_store().get_unconstrained("unused").grad = torch.ones(2)

    def guide(data: torch.Tensor) -> None:
        with handlers.block(hide=["hidden"]):
            hidden = vitorch.param("hidden", torch.tensor(0.5))
        loc = vitorch.param("loc", torch.tensor(0.0))
        vitorch.sample("mu", dist.Normal(loc + hidden, 1.0))

    svi = SVI(nn_model, guide, vitorch.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(5):
        svi.step(data)
    store = vitorch.get_param_store()
    assert torch.equal(store["unused"], unused.detach())
    assert store["hidden"].item() == 0.5
    assert store["loc"].item() != 0.0
    # Gradients of the stepped params are cleared after the step.
    assert store.get_unconstrained("loc").grad is None


def test_params_created_mid_run_are_picked_up() -> None:
    data = _nn_data()
    use_extra = []

    def guide(data: torch.Tensor) -> None:
        loc = vitorch.param("loc", torch.tensor(0.0))
        if use_extra:
            loc = loc + vitorch.param("extra", torch.tensor(0.0))
        vitorch.sample("mu", dist.Delta(loc))

    svi = SVI(nn_model, guide, vitorch.optim.SGD({"lr": 1e-3}), Trace_ELBO())
    svi.step(data)
    assert "extra" not in vitorch.get_param_store()
    use_extra.append(True)
    loc_before = vitorch.param("loc").item()
    svi.step(data)
    # Both are stepped by the same gradient (d loss / d loc = d loss / d extra).
    moved_loc = vitorch.param("loc").item() - loc_before
    assert moved_loc != 0.0
    assert vitorch.param("extra").item() == pytest.approx(moved_loc, rel=1e-6)


def test_svi_loss_is_the_loss_function_as_in_pyro():
    """Pyro's GMM tutorial initializes with svi.loss(model, guide, data), a float."""
    vitorch.clear_param_store()

    def model(data):
        loc = vitorch.sample("loc", dist.Normal(0.0, 1.0))
        with vitorch.plate("data", len(data)):
            vitorch.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def guide(data):
        vitorch.sample("loc", dist.Normal(vitorch.param("m", torch.tensor(0.2)), 0.5))

    data = torch.tensor([0.1, 0.4])
    elbo = vitorch.infer.Trace_ELBO()
    svi = vitorch.infer.SVI(model, guide, vitorch.optim.Adam({"lr": 0.01}), elbo)
    assert svi.elbo is elbo
    vitorch.set_rng_seed(0)
    a = svi.loss(model, guide, data)
    vitorch.set_rng_seed(0)
    assert isinstance(a, float) and a == elbo.loss(model, guide, data)
    vitorch.set_rng_seed(0)
    assert svi.loss_and_grads(model, guide, data) == pytest.approx(a)
    assert vitorch.get_param_store().get_unconstrained("m").grad is not None
    vitorch.clear_param_store()
