"""vitorch's shortcuts in Normal and Bernoulli log_prob give torch's values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import poutine
from vitorch.infer import Trace_ELBO, TraceMeanField_ELBO


def _general_normal_log_prob(value, loc, scale):
    return -(((value - loc) / scale) ** 2) / 2 - scale.log() - 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize("sample_shape", [(), (5,)])
def test_normal_scores_its_own_draw_with_the_general_formula_gradient(sample_shape):
    torch.manual_seed(0)
    loc = torch.randn(3, 4, requires_grad=True)
    raw = torch.randn(4, requires_grad=True)  # scale broadcasts against loc
    scale = torch.nn.functional.softplus(raw)
    d = dist.Normal(loc, scale)
    z = d.rsample(sample_shape)
    weights = torch.randn(z.shape)
    # Something downstream of the draw too, as the model's log-density is in an ELBO.
    downstream = (z.sin() * weights).sum()
    fast = d.log_prob(z)
    general = _general_normal_log_prob(z, loc, scale)
    torch.testing.assert_close(fast, general, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast, torch.distributions.Normal(loc, scale).log_prob(z))
    g_fast = torch.autograd.grad(downstream + (fast * weights).sum(), (loc, raw), retain_graph=True)
    g_gen = torch.autograd.grad(downstream + (general * weights).sum(), (loc, raw))
    for a, b in zip(g_fast, g_gen):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_normal_other_values_and_modified_draws_take_the_general_path():
    loc, scale = torch.zeros(3), torch.full((3,), 2.0)
    d = dist.Normal(loc, scale)
    z = d.rsample()
    other = z.detach().clone() + 1.0
    torch.testing.assert_close(d.log_prob(other), _general_normal_log_prob(other, loc, scale))
    z.add_(1.0)  # changed in place after the draw: its noise no longer describes it
    torch.testing.assert_close(d.log_prob(z), _general_normal_log_prob(z, loc, scale))
    # An expanded copy has no draw of its own.
    e = d.expand((2, 3))
    y = e.rsample()
    torch.testing.assert_close(e.log_prob(y), _general_normal_log_prob(y, loc, scale))


@pytest.mark.parametrize("param", ["probs", "logits"])
def test_bernoulli_log_prob_and_total_match_torch(param):
    torch.manual_seed(1)
    raw = torch.randn(6, 5, requires_grad=True)
    arg = raw.sigmoid() if param == "probs" else raw
    value = torch.randint(0, 2, (6, 5)).float()
    ours = dist.Bernoulli(**{param: arg})
    ref = torch.distributions.Bernoulli(**{param: arg})
    torch.testing.assert_close(ours.log_prob(value), ref.log_prob(value))
    torch.testing.assert_close(ours._log_prob_sum(value), ref.log_prob(value).sum())
    (g1,) = torch.autograd.grad(ours._log_prob_sum(value), raw, retain_graph=True)
    (g2,) = torch.autograd.grad(ref.log_prob(value).sum(), raw, retain_graph=True)
    torch.testing.assert_close(g1, g2)
    # Values that broadcast against the batch.
    torch.testing.assert_close(ours.log_prob(value[:1]), ref.log_prob(value[:1]))
    torch.testing.assert_close(ours._log_prob_sum(value[0]), ref.log_prob(value[0]).sum())


def test_bernoulli_total_still_validates():
    d = dist.Bernoulli(probs=torch.full((3,), 0.5), validate_args=True)
    with pytest.raises(ValueError):
        d._log_prob_sum(torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_tensor_scale_weights_each_batch_element_of_an_independent_site(elbo_cls):
    # A per-element scale must weight each batch element's event total, not the sum.
    weights = torch.tensor([1.0, 2.0, 3.0])
    probs = torch.tensor([[0.2, 0.7], [0.5, 0.5], [0.9, 0.1]])
    data = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])

    def model():
        with vitorch.plate("items", 3), poutine.scale(scale=weights):
            vitorch.sample("x", dist.Normal(torch.zeros(3, 2), 1.0).to_event(1), obs=data)
            vitorch.sample("y", dist.Bernoulli(probs).to_event(1), obs=data)

    def guide():
        pass

    expected = -(
        weights
        * (
            torch.distributions.Normal(0.0, 1.0).log_prob(data).sum(-1)
            + torch.distributions.Bernoulli(probs).log_prob(data).sum(-1)
        )
    ).sum()
    assert elbo_cls().loss(model, guide) == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "loc, scale",
    [
        (torch.zeros(3), torch.ones(3)),  # quick path: one shape
        (torch.zeros(3), 2.0),  # quick path: tensor and number
        (torch.zeros(3, 1), torch.ones(4)),  # torch's path: broadcasting
        (0.5, 2),  # torch's path: numbers
    ],
)
def test_normal_construction_matches_torch(loc, scale):
    ours = dist.Normal(loc, scale)
    ref = torch.distributions.Normal(loc, scale)
    assert ours.batch_shape == ref.batch_shape
    torch.testing.assert_close(ours.loc, ref.loc)
    torch.testing.assert_close(ours.scale, ref.scale)
    assert ours.loc.dtype == ref.loc.dtype and ours.scale.dtype == ref.scale.dtype
    wide = ours.expand((2,) + tuple(ref.batch_shape))
    assert type(wide) is dist.Normal and wide.batch_shape == (2,) + tuple(ref.batch_shape)


@pytest.mark.parametrize("scale", [-1.0, torch.tensor([1.0, -1.0])])
def test_normal_quick_construction_still_validates(scale):
    with pytest.raises(ValueError, match="scale"):
        dist.Normal(torch.zeros(2), scale, validate_args=True)


def test_bernoulli_logits_from_probs_match_torch_in_value_and_gradient():
    probs = torch.cat([torch.rand(1000), torch.tensor([0.0, 1.0, 1e-9, 1 - 1e-8, 0.5, 2e-7])])
    probs.requires_grad_()
    ours = dist.Bernoulli(probs).logits
    ref = torch.distributions.Bernoulli(probs).logits
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-6)
    (g1,) = torch.autograd.grad(ours.sum(), probs)
    (g2,) = torch.autograd.grad(ref.sum(), probs)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=0.0)
    assert torch.isfinite(ours).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"probs": torch.tensor([0.2, 0.9])},
        {"logits": torch.tensor([[0.3], [-2.0]])},
        {"probs": 0.25},  # torch's path: a number
    ],
)
def test_bernoulli_construction_matches_torch(kwargs):
    ours = dist.Bernoulli(**kwargs)
    ref = torch.distributions.Bernoulli(**kwargs)
    assert ours.batch_shape == ref.batch_shape
    torch.testing.assert_close(ours.probs, ref.probs)
    torch.testing.assert_close(ours.logits, ref.logits, rtol=1e-5, atol=1e-6)
    wide = ours.expand((3,) + tuple(ref.batch_shape))
    assert type(wide) is dist.Bernoulli and wide.batch_shape == (3,) + tuple(ref.batch_shape)
    with pytest.raises(ValueError):
        dist.Bernoulli(probs=torch.tensor([0.5]), logits=torch.tensor([0.0]))
    with pytest.raises(ValueError):
        dist.Bernoulli(probs=torch.tensor([1.5]), validate_args=True)
