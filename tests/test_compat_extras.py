"""Pyro behaviours beyond the reference pages that ported code relies on."""

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import poutine
from vitorch.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO


def test_a_plate_entered_twice_reuses_its_subsample():
    def model():
        data_plate = vitorch.plate("data", 10, subsample_size=3)
        with data_plate as first:
            vitorch.sample("a", dist.Normal(0.0, 1.0))
        with data_plate as second:
            vitorch.sample("b", dist.Normal(0.0, 1.0))
        return first, second

    tr = poutine.trace(model).get_trace()
    first, second = tr.nodes["_RETURN"]["value"]
    assert torch.equal(first, second)
    assert tr.nodes["a"]["fn"].batch_shape == (3,)
    assert [n for n in tr.nodes if n == "data"] == ["data"]  # one subsample site


def test_subsample_selects_the_plate_items():
    data = torch.arange(20.0).reshape(10, 2)

    def model():
        with vitorch.plate("data", 10, subsample_size=4) as idx:
            batch = vitorch.subsample(data, event_dim=1)
            return idx, batch

    idx, batch = poutine.trace(model).get_trace().nodes["_RETURN"]["value"]
    assert torch.equal(batch, data[idx])
    with pytest.raises(ValueError, match="event_dim"):
        vitorch.subsample(data, event_dim=-1)


def test_analytic_kl_is_not_switched_off_by_one_mismatched_pair():
    # Two LogNormals with different transforms have no closed form between them; that
    # must not disable the closed form for a later pair of the same types that has one.
    transforms = dist.transforms
    q = dist.TransformedDistribution(dist.Normal(0.0, 1.0), [transforms.ExpTransform()])
    p_bad = dist.TransformedDistribution(
        dist.Normal(0.0, 1.0), [transforms.AffineTransform(1.0, 2.0)]
    )
    p_good = dist.TransformedDistribution(dist.Normal(1.0, 2.0), [transforms.ExpTransform()])
    from vitorch.infer.elbo import _analytic_kl

    assert _analytic_kl(q, p_bad) is None
    kl = _analytic_kl(q, p_good)
    expected = dist.kl_divergence(dist.Normal(0.0, 1.0), dist.Normal(1.0, 2.0))
    assert kl is not None and torch.allclose(kl, expected)


def test_mean_field_uses_the_closed_form_for_a_transformed_pair():
    def model():
        vitorch.sample("x", dist.LogNormal(1.0, 2.0))

    def guide():
        vitorch.sample("x", dist.LogNormal(0.0, 1.0))

    # With the closed form the loss is exactly the KL: no Monte Carlo noise at all.
    values = {TraceMeanField_ELBO().loss(model, guide) for _ in range(5)}
    expected = float(dist.kl_divergence(dist.Normal(0.0, 1.0), dist.Normal(1.0, 2.0)))
    assert len(values) == 1
    assert abs(values.pop() - expected) < 1e-6


def test_jit_elbo_names_run_unchanged():
    def model(data):
        loc = vitorch.sample("loc", dist.Normal(0.0, 1.0))
        with vitorch.plate("data", len(data)):
            vitorch.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def guide(data):
        m = vitorch.param("m", torch.tensor(0.0))
        vitorch.sample("loc", dist.Normal(m, 1.0))

    elbo = JitTrace_ELBO(ignore_jit_warnings=True)
    assert isinstance(elbo, Trace_ELBO)
    svi = SVI(model, guide, vitorch.optim.Adam({"lr": 0.1}), elbo)
    data = torch.ones(5)
    for _ in range(3):
        svi.step(data)
    assert vitorch.condition is poutine.condition


def test_factor_records_whether_its_term_is_reparameterized():
    def model():
        vitorch.factor("f", torch.tensor(-1.5), has_rsample=False)
        vitorch.factor("g", torch.tensor(-0.5))

    tr = poutine.trace(model).get_trace()
    assert tr.nodes["f"]["fn"].has_rsample is False
    assert tr.nodes["g"]["fn"].has_rsample is True
    assert float(tr.log_prob_sum()) == pytest.approx(-2.0)


def test_real_valued_masks_act_as_bool_masks():
    """DMM passes a float mini-batch mask, AIR a float Bernoulli draw: Pyro takes mask.bool()."""
    d = dist.Normal(torch.zeros(3), 1.0)
    value = torch.tensor([0.5, -1.0, 2.0])
    for mask in (torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1, 0, 1])):
        expected = d.log_prob(value) * torch.tensor([1.0, 0.0, 1.0])
        assert torch.equal(d.mask(mask).log_prob(value), expected)


def test_simplex_param_accepts_an_unnormalized_init_like_pyro():
    vitorch.clear_param_store()
    raw = torch.tensor([1.0, 3.0, 4.0])
    p = vitorch.param("p", raw, constraint=dist.constraints.simplex)
    assert torch.allclose(p, raw / raw.sum())
    with pytest.raises(ValueError, match=r"param 'q'.*outside the constraint"):
        vitorch.param("q", torch.tensor([-1.0, 2.0]), constraint=dist.constraints.positive)
    m = vitorch.nn.PyroModule()
    m.w = vitorch.nn.PyroParam(raw, dist.constraints.simplex)
    assert torch.allclose(m.w, raw / raw.sum())
    vitorch.clear_param_store()


def test_plate_without_a_size_is_pyros_any_size_plate():
    """CVAE's model uses plate("data") with no size: a dim, no broadcasting, no scaling."""

    def model(x):
        with vitorch.plate("data"):
            z = vitorch.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            vitorch.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)

    x = torch.randn(5)
    tr = poutine.trace(model).get_trace(x)
    tr.compute_log_prob()
    assert tr.nodes["z"]["value"].shape == (5, 2)
    assert tr.nodes["x"]["scale"] == 1.0
    assert tr.nodes["x"]["cond_indep_stack"][0].size == -1

    # The guide runs the same plate: the ELBO is finite and the log-densities unscaled.
    def guide(x):
        with vitorch.plate("data"):
            vitorch.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    assert torch.isfinite(torch.tensor(Trace_ELBO().loss(model, guide, x)))
    with pytest.raises(ValueError, match="size must be a non-negative int"):
        vitorch.plate("bad", -3)


def test_param_values_lead_back_to_their_leaf_tensor():
    """Pyro code hands site["value"].unconstrained() to a torch optimizer (mixed_hmm)."""
    vitorch.clear_param_store()

    def model():
        vitorch.param("a", torch.tensor(0.5))
        vitorch.param("b", torch.tensor(2.0), constraint=dist.constraints.positive)

    tr = poutine.trace(model).get_trace()
    store = vitorch.get_param_store()
    for name in ("a", "b"):
        assert tr.nodes[name]["value"].unconstrained() is store.get_unconstrained(name)
    vitorch.clear_param_store()


def test_pyros_trace_checks_catch_shapes_the_plates_do_not_declare():
    """Pyro's eight-schools example with a (8, 1) guide site: Pyro raises, so must we."""
    import warnings

    def model():
        with vitorch.plate("schools", 8):
            vitorch.sample("eta", dist.Normal(0.0, 1.0))

    def bad_guide():
        with vitorch.plate("schools", 8):
            vitorch.sample("eta", dist.Normal(torch.zeros(8, 1), 1.0))

    with pytest.raises(ValueError, match=r"Model and guide shapes disagree at site 'eta'"):
        Trace_ELBO().loss(model, bad_guide)

    def batch_outside_plates():
        vitorch.sample("eta", dist.Normal(torch.zeros(8), 1.0))

    with pytest.raises(ValueError, match=r"invalid log_prob shape: expected \[\].*got \[8\]"):
        Trace_ELBO().loss(batch_outside_plates, batch_outside_plates)

    def half_guide():
        pass

    with pytest.warns(UserWarning, match=r"Found vars in model but not guide: \['eta'\]"):
        Trace_ELBO().loss(model, half_guide)
    with vitorch.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("error")
        Trace_ELBO().loss(model, lambda: None)  # the checks run under validation only


def test_pyro_sample_attribute_read_outside_a_call_is_a_plain_draw():
    """Pyro's modules tutorial reads model.x twice under one trace: no sites, two draws."""
    m = vitorch.nn.PyroModule()
    m.x = vitorch.nn.PyroSample(dist.Normal(0.0, 1.0))
    with poutine.trace() as tr:
        a, b = m.x, m.x
    assert [n for n in tr.trace.nodes] == [] and not torch.equal(a, b)


def test_plain_parameters_reach_the_store_on_a_plain_call():
    """to_pyro_module_(nn.Sequential) then a plain call: Pyro's store holds every parameter."""
    vitorch.clear_param_store()
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    vitorch.nn.to_pyro_module_(net)
    net(torch.ones(4, 2))
    store = vitorch.get_param_store()
    assert sorted(store.keys()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert store.get_unconstrained("0.weight") is net[0].weight
    # A second module of the same names, called plainly, keeps its own values.
    other = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    vitorch.nn.to_pyro_module_(other)
    before = other[0].weight.detach().clone()
    other(torch.ones(4, 2))
    assert torch.equal(other[0].weight.detach(), before)
    vitorch.clear_param_store()


def test_testing_fakes_util_helpers_and_plate_rows_in_format_shapes():
    from vitorch.distributions.testing import fakes
    from vitorch.distributions.util import is_identically_zero
    from vitorch.infer.util import torch_item

    assert not fakes.NonreparameterizedNormal(0.0, 1.0).has_rsample
    assert fakes.NonreparameterizedBeta(2.0, 2.0).has_rsample is False
    assert torch_item(torch.tensor(1.5)) == 1.5 and torch_item(2) == 2
    assert is_identically_zero(0) and not is_identically_zero(torch.zeros(()))

    def model():
        with vitorch.plate("data", 3):
            vitorch.sample("a", dist.Normal(0.0, 1.0))

    lines = poutine.trace(model).get_trace().format_shapes().splitlines()
    assert [line.split() for line in lines[3:5]] == [["data", "dist", "|"], ["value", "3", "|"]]
