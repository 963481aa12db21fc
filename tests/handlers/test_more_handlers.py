"""do, uncondition, infer_config and lift: Pyro's semantics, checked exactly."""

from __future__ import annotations

import warnings

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import poutine


def scalar_model(x):
    s = vitorch.param("s", torch.tensor(0.5), constraint=dist.constraints.positive)
    z = vitorch.sample("z", dist.Normal(x, s))
    return 2.0 * z


def plate_model(n):
    with vitorch.plate("items", n):
        z = vitorch.sample("z", dist.Normal(torch.zeros(n), 1.0))
        y = vitorch.sample("y", dist.Normal(z, 0.1))
    return y


# -- do ---------------------------------------------------------------------------------------
def test_do_feeds_the_intervention_downstream_and_samples_a_fresh_site():
    tr = poutine.trace(poutine.do(scalar_model, data={"z": torch.tensor(3.0)})).get_trace(1.0)
    assert tr.nodes["_RETURN"]["value"] == 6.0
    fresh = tr.nodes["z"]
    assert not fresh["is_observed"] and fresh["value"] != 3.0
    # The fresh site is an ordinary draw from the site's own distribution.
    expected = torch.distributions.Normal(1.0, 0.5).log_prob(fresh["value"])
    tr.compute_log_prob()
    torch.testing.assert_close(fresh["log_prob"], expected)
    assert "z__CF" not in tr.nodes  # the intervened site stops at the do handler


def test_do_records_the_intervention_inside_and_keeps_plates_single():
    with poutine.trace() as outer:
        with poutine.do(data={"z": torch.ones(4)}):
            with poutine.trace() as inner:
                y = plate_model(4)
    cf = inner.trace.nodes["z__CF"]
    assert cf["is_observed"] and torch.equal(cf["value"], torch.ones(4))
    fresh = outer.trace.nodes["z"]
    assert [f.name for f in fresh["cond_indep_stack"]] == ["items"]
    assert fresh["fn"].batch_shape == (4,)
    # y was drawn around the intervention (1), not around the fresh draw.
    assert (y - 1.0).abs().max() < 1.0
    assert not torch.allclose(fresh["value"], torch.ones(4))


def test_do_numbers_warnings_and_bad_input():
    tr = poutine.trace(poutine.do(scalar_model, data={"z": 2})).get_trace(0.0)
    assert tr.nodes["_RETURN"]["value"] == 4.0
    with pytest.warns(RuntimeWarning, match="two do handlers"):
        twice = poutine.do(poutine.do(scalar_model, data={"z": 1.0}), data={"z": 2.0})
        tr = poutine.trace(twice).get_trace(0.0)
    assert tr.nodes["_RETURN"]["value"] == 2.0  # the inner intervention
    assert tr.nodes["z"]["value"] not in (1.0, 2.0)
    with pytest.raises(TypeError, match="dict of site name"):
        poutine.do(scalar_model, data=[("z", 1.0)])
    with pytest.raises(TypeError, match="site 'z'"):
        poutine.do(scalar_model, data={"z": "one"})


# -- uncondition --------------------------------------------------------------------------------
def test_uncondition_samples_observed_sites_and_keeps_the_data():
    def model():
        return vitorch.sample("x", dist.Delta(torch.tensor(3.0)), obs=torch.tensor(5.0))

    tr = poutine.trace(poutine.uncondition(model)).get_trace()
    site = tr.nodes["x"]
    assert not site["is_observed"]
    assert site["value"] == 3.0  # drawn from the distribution, not the observation
    assert site["infer"]["was_observed"] and site["infer"]["obs"] == 5.0
    # The plain model still observes.
    assert poutine.trace(model).get_trace().nodes["x"]["value"] == 5.0


# -- infer_config --------------------------------------------------------------------------------
def test_infer_config_sets_options_without_touching_the_callers_dict():
    mine = {"a": 1}

    def model():
        vitorch.param("p", torch.tensor(1.0))
        vitorch.sample("z", dist.Normal(0.0, 1.0), infer=mine)

    configured = poutine.infer_config(model, lambda site: {"seen": site["type"]})
    tr = poutine.trace(configured).get_trace()
    assert tr.nodes["z"]["infer"] == {"a": 1, "seen": "sample"}
    assert tr.nodes["p"]["infer"]["seen"] == "param"
    assert mine == {"a": 1}
    with pytest.raises(TypeError, match="site 'p'"):
        poutine.infer_config(model, lambda site: None)()
    with pytest.raises(TypeError, match="config_fn"):
        poutine.infer_config(model, config_fn="nope")


# -- lift ------------------------------------------------------------------------------------------
def test_lift_turns_params_into_prior_draws():
    prior = dist.Exponential(torch.tensor(0.3))
    tr = poutine.trace(poutine.lift(scalar_model, prior=prior)).get_trace(0.0)
    s = tr.nodes["s"]
    assert s["type"] == "sample" and not s["is_observed"]
    tr.compute_log_prob()
    torch.testing.assert_close(
        s["log_prob"], torch.distributions.Exponential(0.3).log_prob(s["value"])
    )
    # z is drawn with the lifted scale.
    torch.testing.assert_close(
        tr.nodes["z"]["fn"].scale, s["value"].expand_as(tr.nodes["z"]["fn"].scale)
    )
    assert "s" not in vitorch.get_param_store()  # a lifted param is never created


def test_lift_module_params_by_path_and_repeated_reads():
    net = torch.nn.Linear(3, 1)

    def model(x):
        vitorch.module("net", net)
        first = vitorch.param("net$$$bias")
        second = vitorch.param("net$$$bias")
        return first, second

    priors = {
        "bias": dist.Normal(torch.zeros(1), 10.0).to_event(1),
        "weight": dist.Normal(torch.zeros(1, 3), 1.0).to_event(2),
    }
    tr = poutine.trace(poutine.lift(model, prior=priors)).get_trace(torch.randn(2, 3))
    first, second = tr.nodes["_RETURN"]["value"]
    assert tr.nodes["net$$$bias"]["type"] == "sample"
    assert tr.nodes["net$$$weight"]["type"] == "sample"
    assert torch.equal(first, second)  # one random variable, read twice
    assert not torch.equal(tr.nodes["net$$$weight"]["value"], net.weight)


def test_lift_warns_about_unused_priors_and_rejects_bad_priors():
    with pytest.warns(UserWarning, match="'t'"):
        poutine.lift(scalar_model, prior={"s": dist.Exponential(1.0), "t": dist.Exponential(1.0)})(
            0.0
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        poutine.lift(scalar_model, prior={"s": dist.Exponential(1.0)})(0.0)
    with pytest.raises(TypeError, match="distribution"):
        poutine.lift(scalar_model, prior=lambda *a: 1.0)
    with pytest.raises(TypeError, match="'s'"):
        poutine.lift(scalar_model, prior={"s": 1.0})


# -- against pyro-ppl, when it is installed --------------------------------------------------------
def test_site_layout_matches_pyro():
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist

    def make(lib, d):
        def model(x):
            s = lib.param("s", torch.tensor(0.5), constraint=d.constraints.positive)
            with lib.plate("items", 3):
                z = lib.sample("z", d.Normal(x * torch.ones(3), s))
                lib.sample("y", d.Normal(z, 1.0), obs=torch.zeros(3))
            return z

        return model

    def layout(poutine_mod, model):
        tr = poutine_mod.trace(model).get_trace(1.0)
        return [
            (name, site["type"], bool(site.get("is_observed")))
            for name, site in tr.nodes.items()
            if site["type"] in ("sample", "param") and name != "items"  # pyro traces plate indices
        ]

    for wrap in (
        lambda p, m, d: p.do(m, data={"z": torch.zeros(3)}),
        lambda p, m, d: p.uncondition(m),
        lambda p, m, d: p.lift(m, prior={"s": d.Exponential(1.0)}),
    ):
        pyro.clear_param_store()
        vitorch.clear_param_store()
        ours = layout(poutine, wrap(poutine, make(vitorch, dist), dist))
        theirs = layout(pyro.poutine, wrap(pyro.poutine, make(pyro, pdist), pdist))
        assert ours == theirs
