"""The primitives: sample, param, module, deterministic, factor, obs_mask, barrier."""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.distributions import constraints


# -- sample ------------------------------------------------------------------------------
def test_sample_without_handlers_draws_from_the_distribution() -> None:
    vitorch.set_rng_seed(3)
    x = vitorch.sample("x", dist.Normal(torch.zeros(2), 1.0))
    vitorch.set_rng_seed(3)
    assert torch.equal(x, torch.distributions.Normal(torch.zeros(2), 1.0).rsample())


def test_sample_is_reparameterized_when_possible() -> None:
    loc = torch.tensor(1.0, requires_grad=True)
    x = vitorch.sample("x", dist.Normal(loc, 1.0))
    x.backward()
    assert loc.grad.item() == 1.0
    # Discrete draws carry no gradient.
    p = torch.tensor(0.3, requires_grad=True)
    assert not vitorch.sample("b", dist.Bernoulli(p)).requires_grad


def test_sample_obs_is_returned_as_is() -> None:
    obs = torch.tensor([1.0, 2.0])
    assert vitorch.sample("x", dist.Normal(torch.zeros(2), 1.0), obs=obs) is obs
    with handlers.trace() as tracer:
        out = vitorch.sample("x", dist.Normal(torch.zeros(2), 1.0), obs=obs)
    assert out is obs and tracer.trace.nodes["x"]["is_observed"]


def test_sample_infer_dict_is_recorded() -> None:
    with handlers.trace() as tracer:
        vitorch.sample("x", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
    assert tracer.trace.nodes["x"]["infer"] == {"is_auxiliary": True}


def test_sample_sample_shape_args() -> None:
    # Extra positional args go to the distribution's sampler, as in Pyro.
    with handlers.trace():
        x = vitorch.sample("x", dist.Normal(0.0, 1.0), torch.Size([4]))
    assert x.shape == (4,)


# -- param -------------------------------------------------------------------------------
def test_param_created_once_then_read() -> None:
    a = vitorch.param("a", torch.tensor([1.0, 2.0]))
    b = vitorch.param("a", torch.tensor([5.0, 5.0]))  # init ignored once created
    c = vitorch.param("a")
    assert torch.equal(a, torch.tensor([1.0, 2.0]))
    assert torch.equal(b, a) and torch.equal(c, a)
    assert a.requires_grad


def test_param_init_forms() -> None:
    assert vitorch.param("n", 2.5).item() == 2.5
    assert torch.equal(vitorch.param("f", lambda: torch.ones(3)), torch.ones(3))
    with pytest.raises(TypeError, match="'s'"):
        vitorch.param("s", "hello")


def test_param_constraints() -> None:
    s = vitorch.param("s", torch.tensor([0.5, 2.0]), constraint=constraints.positive)
    assert torch.allclose(s, torch.tensor([0.5, 2.0]))
    store = vitorch.get_param_store()
    # Stored unconstrained: log for positive.
    assert torch.allclose(store.get_unconstrained("s"), torch.log(torch.tensor([0.5, 2.0])))
    with torch.no_grad():
        store.get_unconstrained("s").fill_(-50.0)
    assert (vitorch.param("s") > 0).all()
    u = vitorch.param("u", torch.tensor(0.25), constraint=constraints.interval(0.0, 1.0))
    assert u.item() == pytest.approx(0.25)
    assert store.get_unconstrained("u").item() == pytest.approx(math.log(0.25 / 0.75))
    p = vitorch.param("p", torch.tensor([0.2, 0.3, 0.5]), constraint=constraints.simplex)
    assert torch.allclose(p, torch.tensor([0.2, 0.3, 0.5]))
    # As in Pyro, the store uses transform_to (softmax for the simplex), not a bijection.
    assert torch.allclose(torch.softmax(store.get_unconstrained("p"), -1), p)


def test_param_outside_constraint() -> None:
    with pytest.raises(ValueError, match="'s'"):
        vitorch.param("s", torch.tensor(-1.0), constraint=constraints.positive)


def test_param_missing_without_init() -> None:
    with pytest.raises(KeyError, match="nope"):
        vitorch.param("nope")


def test_param_gradient_flows_through_the_constraint() -> None:
    s = vitorch.param("s", torch.tensor(2.0), constraint=constraints.positive)
    s.backward()
    # d exp(u) / du = exp(u) = 2.
    assert vitorch.get_param_store().get_unconstrained("s").grad.item() == pytest.approx(2.0)


def test_param_inside_handlers_is_recorded() -> None:
    with handlers.trace() as tracer:
        vitorch.param("a", torch.tensor(1.0), constraint=constraints.positive)
    site = tracer.trace.nodes["a"]
    assert site["type"] == "param"
    assert site["value"].item() == pytest.approx(1.0)


# -- module ------------------------------------------------------------------------------
def test_module_registers_its_parameters() -> None:
    net = torch.nn.Linear(3, 2)
    with handlers.trace() as tracer:
        assert vitorch.module("net", net) is net
    store = vitorch.get_param_store()
    assert set(store.keys()) == {"net$$$weight", "net$$$bias"}
    # The store holds the module's own tensors, so optimizing them changes the module.
    assert store.get_unconstrained("net$$$weight") is net.weight
    assert tracer.trace.param_nodes == ["net$$$weight", "net$$$bias"]


def test_module_update_module_params_copies_stored_values() -> None:
    net = torch.nn.Linear(2, 1)
    vitorch.module("net", net)
    saved = vitorch.get_param_store().get_state()
    vitorch.clear_param_store()
    fresh = torch.nn.Linear(2, 1)
    vitorch.get_param_store().set_state(saved)
    vitorch.module("net", fresh, update_module_params=True)
    assert torch.equal(fresh.weight, net.weight)
    assert torch.equal(fresh.bias, net.bias)


def test_module_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="'net'"):
        vitorch.module("net", lambda x: x)


def test_svi_updates_a_module() -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = 2.0 * x.squeeze(-1)

    def model() -> None:
        vitorch.module("net", net)
        with vitorch.plate("data", 3):
            vitorch.sample("y", dist.Normal(net(x).squeeze(-1), 1.0), obs=y)

    def guide() -> None:
        pass

    svi = vitorch.infer.SVI(
        model, guide, vitorch.optim.SGD({"lr": 0.01}), vitorch.infer.Trace_ELBO()
    )
    # One SGD step from w=0: d(-log p)/dw = -sum x*(y - w x) = -sum 2 x^2 = -28.
    svi.step()
    assert net.weight.item() == pytest.approx(0.28)


# -- deterministic, factor, obs_mask, barrier ---------------------------------------------
def test_deterministic() -> None:
    def model() -> None:
        z = vitorch.sample("z", dist.Normal(0.0, 1.0))
        vitorch.deterministic("z2", z * 2)

    tr = handlers.trace(model).get_trace()
    site = tr.nodes["z2"]
    assert torch.equal(site["value"], tr.nodes["z"]["value"] * 2)
    assert tr.stochastic_nodes == ["z"]
    assert "z2" not in tr.observation_nodes
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(tr.nodes["z"]["value"])
    assert torch.allclose(torch.as_tensor(tr.log_prob_sum()), expected)
    # With no handler it is the identity.
    v = torch.ones(2)
    assert vitorch.deterministic("d", v) is v


def test_factor_adds_to_the_log_density() -> None:
    def model() -> None:
        vitorch.sample("z", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))
        vitorch.factor("f", torch.tensor(-3.25))

    tr = handlers.trace(model).get_trace()
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.0)) - 3.25
    assert torch.allclose(torch.as_tensor(tr.log_prob_sum()), expected)


def test_factor_in_plate() -> None:
    f = torch.tensor([-1.0, -2.0, -3.0])

    def model() -> None:
        with vitorch.plate("data", 3):
            vitorch.factor("f", f)

    tr = handlers.trace(model).get_trace()
    assert float(tr.log_prob_sum()) == pytest.approx(-6.0)


def test_obs_mask_splits_the_site() -> None:
    obs = torch.tensor([1.0, 0.0, 3.0])
    obs_mask = torch.tensor([True, False, True])

    def model() -> torch.Tensor:
        with vitorch.plate("data", 3):
            return vitorch.sample("x", dist.Normal(torch.zeros(3), 1.0), obs=obs, obs_mask=obs_mask)

    tr = handlers.trace(model).get_trace()
    x = tr.nodes["_RETURN"]["value"]
    imputed = tr.nodes["x_unobserved"]["value"]
    assert x[0].item() == 1.0 and x[2].item() == 3.0
    assert x[1].item() == imputed[1].item()
    assert tr.nodes["x_observed"]["is_observed"]
    assert not tr.nodes["x_unobserved"]["is_observed"]
    tr.compute_log_prob()
    lp = torch.distributions.Normal(0.0, 1.0).log_prob
    assert torch.allclose(tr.nodes["x_observed"]["log_prob_sum"], lp(obs[[0, 2]]).sum())
    assert torch.allclose(tr.nodes["x_unobserved"]["log_prob_sum"], lp(imputed[1]))


def test_obs_mask_must_be_bool() -> None:
    with pytest.raises(TypeError, match="obs_mask"):
        vitorch.sample(
            "x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0), obs_mask=torch.tensor(1.0)
        )


def test_barrier_and_plate_alias() -> None:
    t = torch.ones(2)
    assert vitorch.barrier(t) is t
    assert vitorch.plate is handlers.PlateMessenger
