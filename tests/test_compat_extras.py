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
