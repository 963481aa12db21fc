"""Straight-through relaxed distributions and MaskedMixture (vitorch.distributions.relaxed).

Straight-through draws must be exactly 0/1 (one-hot) forward while their gradient equals
that of torch's relaxed draw under the same noise; MaskedMixture must score and sample each
batch element from the component its mask selects.
"""

from __future__ import annotations

import pytest
import torch

from vitorch.distributions.relaxed import (
    MaskedMixture,
    RelaxedBernoulliStraightThrough,
    RelaxedOneHotCategoricalStraightThrough,
)
from vitorch.distributions.torch import Exponential, Normal

F64 = torch.float64


def test_bernoulli_straight_through_values_and_gradient():
    logits = torch.tensor([-1.0, 0.2, 2.0], dtype=F64, requires_grad=True)
    w = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    torch.manual_seed(0)
    d = RelaxedBernoulliStraightThrough(torch.tensor(0.5, dtype=F64), logits=logits)
    hard = d.rsample((50,))
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    (g_hard,) = torch.autograd.grad((w * hard).sum(), logits)
    torch.manual_seed(0)
    soft = torch.distributions.RelaxedBernoulli(torch.tensor(0.5, dtype=F64), logits=logits)
    soft = soft.rsample((50,))
    (g_soft,) = torch.autograd.grad((w * soft).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)
    assert torch.equal(hard, soft.detach().round())
    # log_prob scores the relaxed draw behind the hard value.
    ref = torch.distributions.RelaxedBernoulli(torch.tensor(0.5, dtype=F64), logits=logits)
    torch.testing.assert_close(d.log_prob(hard), ref.log_prob(soft.clamp(1e-12, 1 - 1e-12)))


def test_one_hot_straight_through_values_and_gradient():
    logits = torch.tensor([[0.1, -0.5, 1.0, 0.0]], dtype=F64, requires_grad=True)
    w = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(1))
    temp = torch.tensor(0.7, dtype=F64)
    torch.manual_seed(2)
    d = RelaxedOneHotCategoricalStraightThrough(temp, logits=logits)
    hard = d.rsample((30,))
    assert hard.shape == (30, 1, 4)
    assert torch.all(hard.sum(-1) == 1) and set(hard.unique().tolist()) == {0.0, 1.0}
    (g_hard,) = torch.autograd.grad((w * hard).sum(), logits)
    torch.manual_seed(2)
    soft = torch.distributions.RelaxedOneHotCategorical(temp, logits=logits).rsample((30,))
    (g_soft,) = torch.autograd.grad((w * soft).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))
    ref = torch.distributions.RelaxedOneHotCategorical(temp, logits=logits)
    torch.testing.assert_close(d.log_prob(hard), ref.log_prob(soft.detach()), rtol=1e-6, atol=1e-6)


def test_straight_through_expand_keeps_class():
    d = RelaxedBernoulliStraightThrough(torch.tensor(0.5), probs=torch.tensor([0.2, 0.7]))
    e = d.expand((3, 2))
    assert type(e) is RelaxedBernoulliStraightThrough and e.rsample().shape == (3, 2)
    c = RelaxedOneHotCategoricalStraightThrough(torch.tensor(0.5), probs=torch.ones(3) / 3)
    e = c.expand((2,))
    assert type(e) is RelaxedOneHotCategoricalStraightThrough and e.rsample().shape == (2, 3)


def test_straight_through_matches_pyro():
    pyro = pytest.importorskip("pyro")
    logits = torch.tensor([-1.0, 0.5, 1.5])
    for ours_cls, name in [
        (RelaxedBernoulliStraightThrough, "RelaxedBernoulliStraightThrough"),
        (RelaxedOneHotCategoricalStraightThrough, "RelaxedOneHotCategoricalStraightThrough"),
    ]:
        torch.manual_seed(3)
        ours = ours_cls(torch.tensor(0.4), logits=logits)
        a = ours.rsample((20,))
        torch.manual_seed(3)
        theirs = getattr(pyro.distributions, name)(torch.tensor(0.4), logits=logits)
        b = theirs.rsample((20,))
        assert torch.equal(a, b)
        torch.testing.assert_close(ours.log_prob(a), theirs.log_prob(b))


def _mixture():
    mask = torch.tensor([True, False, True])
    c0 = Normal(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    c1 = Exponential(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    return mask, c0, c1


def test_masked_mixture_log_prob_and_sample_pick_by_mask():
    mask, c0, c1 = _mixture()
    d = MaskedMixture(mask, c0, c1)
    value = torch.tensor([0.5, -1.2, 2.0], dtype=F64)
    expected = torch.where(mask, c1.log_prob(value.clamp(min=0)), c0.log_prob(value))
    torch.testing.assert_close(d.log_prob(value), expected)
    torch.manual_seed(4)
    x = d.sample((2000,))
    assert x.shape == (2000, 3)
    assert (x[:, 0] >= 0).all() and (x[:, 2] >= 0).all() and (x[:, 1] < 0).any()
    # Mean of column 0 ~ Exponential(1) = 1, column 1 ~ Normal = 0 (5 SE).
    assert abs(x[:, 0].mean() - 1) < 5 / 2000**0.5 and abs(x[:, 1].mean()) < 5 / 2000**0.5
    torch.testing.assert_close(d.mean, torch.tensor([1.0, 0.0, 1 / 3], dtype=F64))
    torch.testing.assert_close(d.variance, torch.tensor([1.0, 1.0, 1 / 9], dtype=F64))
    assert d.has_rsample
    torch.manual_seed(5)
    r = d.rsample((4,))
    torch.manual_seed(5)
    r1 = c1.rsample((4,))  # component1 is drawn first
    r0 = c0.rsample((4,))
    torch.testing.assert_close(r, torch.where(mask, r1, r0))


def test_masked_mixture_support_shapes_and_errors():
    mask, c0, c1 = _mixture()
    flags = (c0._validate_args, c1._validate_args)
    d = MaskedMixture(mask, c0, c1, validate_args=True)
    assert (c0._validate_args, c1._validate_args) == flags  # the caller's objects untouched
    assert d.support.check(torch.tensor([1.0, -1.0, 1.0], dtype=F64)).all()
    assert not d.support.check(torch.tensor([-1.0, -1.0, 1.0], dtype=F64))[0]
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([-1.0, 0.0, 1.0], dtype=F64))
    e = d.expand((2, 3))
    assert e.batch_shape == (2, 3) and e.log_prob(torch.ones(3, dtype=F64)).shape == (2, 3)
    b = MaskedMixture(torch.tensor([[True], [False]]), c0, c1)
    assert b.batch_shape == (2, 3) and b.sample().shape == (2, 3)
    with pytest.raises(ValueError, match="mask must be a bool tensor, got torch.int64"):
        MaskedMixture(torch.tensor([1, 0, 1]), c0, c1)
    with pytest.raises(ValueError, match=r"share an event_shape, got \(\) and \(3,\)"):
        MaskedMixture(mask, c0, c0.to_event(1))


def test_masked_mixture_matches_pyro():
    pyro = pytest.importorskip("pyro")
    mask, c0, c1 = _mixture()
    value = torch.tensor([[0.5, -1.2, 2.0], [1.0, 0.3, 0.1]], dtype=F64)
    theirs = pyro.distributions.MaskedMixture(mask, c0, c1).log_prob(value)
    torch.testing.assert_close(MaskedMixture(mask, c0, c1).log_prob(value), theirs)
