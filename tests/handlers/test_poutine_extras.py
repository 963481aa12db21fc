"""broadcast, escape, queue, equalize, get_mask/get_plates, unwrap: Pyro's lesser handlers."""

from __future__ import annotations

import itertools
import math
import queue as pyqueue

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import poutine
from vitorch.runtime import CondIndepStackFrame, Message


def _frame(name: str, dim: int, size: int) -> CondIndepStackFrame:
    return CondIndepStackFrame(name, dim, size, 0, size)


def test_broadcast_expands_to_the_plates_shape():
    msg = Message("sample", "x", dist.Normal(torch.zeros(3), 1.0))
    msg.cond_indep_stack = (_frame("outer", -3, 2), _frame("inner", -1, 3))
    poutine.BroadcastMessenger()._pyro_sample(msg)
    assert msg.fn.batch_shape == (2, 1, 3)

    msg = Message("sample", "y", dist.Normal(torch.zeros(4, 1), 1.0))
    msg.cond_indep_stack = (_frame("p", -1, 5),)
    poutine.BroadcastMessenger()._pyro_sample(msg)
    assert msg.fn.batch_shape == (4, 5)  # free sizes keep the distribution's own


def test_broadcast_mismatch_names_site_and_plate():
    msg = Message("sample", "x", dist.Normal(torch.zeros(4), 1.0))
    msg.cond_indep_stack = (_frame("data", -1, 3),)
    with pytest.raises(ValueError, match=r"'x'.*size 4 at dim -1.*plate 'data'.*size 3"):
        poutine.BroadcastMessenger()._pyro_sample(msg)


def test_broadcast_of_a_model_keeps_plate_shapes():
    def model():
        with vitorch.plate("a", 2, dim=-2), vitorch.plate("b", 3):
            vitorch.sample("x", dist.Normal(0.0, 1.0))

    tr = poutine.trace(poutine.broadcast(model)).get_trace()
    assert tr.nodes["x"]["value"].shape == (2, 3)


def test_broadcast_matches_pyro():
    pyro_poutine = pytest.importorskip("pyro.poutine")
    pyro_dist = pytest.importorskip("pyro.distributions")
    from pyro.poutine.indep_messenger import CondIndepStackFrame as PyroFrame

    for base_shape, frames in [((3,), [(-3, 2), (-1, 3)]), ((4, 1), [(-1, 5)]), ((), [(-2, 6)])]:
        msg = Message("sample", "x", dist.Normal(torch.zeros(base_shape), 1.0))
        msg.cond_indep_stack = tuple(_frame(f"p{d}", d, s) for d, s in frames)
        poutine.BroadcastMessenger()._pyro_sample(msg)
        pmsg = {
            "type": "sample",
            "name": "x",
            "done": False,
            "fn": pyro_dist.Normal(torch.zeros(base_shape), 1.0),
            "cond_indep_stack": tuple(PyroFrame(f"p{d}", d, s, 0) for d, s in frames),
        }
        pyro_poutine.broadcast_messenger.BroadcastMessenger._pyro_sample(pmsg)
        assert msg.fn.batch_shape == pmsg["fn"].batch_shape


def _three_sites():
    x = vitorch.sample("x", dist.Normal(0.0, 1.0))
    y = vitorch.sample("y", dist.Bernoulli(0.5))
    return vitorch.sample("z", dist.Normal(x + y, 1.0))


def test_escape_stops_at_the_chosen_site():
    tr = poutine.trace(poutine.escape(_three_sites, escape_fn=lambda m: m.name == "y"))
    with pytest.raises(poutine.NonlocalExit) as info:
        tr()
    assert info.value.site.name == "y"
    assert info.value.site.value is None  # not sampled
    assert [n for n in tr.trace.nodes if n != "_INPUT"] == ["x"]
    info.value.reset_stack()
    assert not vitorch.runtime.get_stack()  # every handler left the stack


def test_escape_needs_a_callable():
    with pytest.raises(TypeError, match="escape_fn"):
        poutine.escape(_three_sites, escape_fn=None)


def _discrete_model(data):
    a = vitorch.sample("a", dist.Bernoulli(0.3))
    b = vitorch.sample("b", dist.Categorical(torch.tensor([0.2, 0.5, 0.3])))
    c = vitorch.sample("c", dist.Bernoulli(0.6 + 0.1 * a))
    vitorch.sample("obs", dist.Normal(a + b - c, 1.0), obs=data)
    return a, b, c


def test_queue_walks_every_assignment_once_and_sums_to_the_evidence():
    data = torch.tensor(1.3)
    q = pyqueue.Queue()
    q.put(poutine.Trace())
    enum_model = poutine.queue(_discrete_model, queue=q)
    seen, evidence = [], 0.0
    for _ in range(12):
        tr = poutine.trace(enum_model).get_trace(data)
        seen.append(tuple(int(v) for v in tr.nodes["_RETURN"]["value"]))
        evidence += tr.log_prob_sum().exp().item()
    assert sorted(seen) == sorted(itertools.product(range(2), range(3), range(2)))
    # The exact marginal likelihood, summed by hand.
    expected = 0.0
    for a, b, c in itertools.product(range(2), range(3), range(2)):
        pa = 0.3 if a else 0.7
        pb = [0.2, 0.5, 0.3][b]
        pc = (0.6 + 0.1 * a) if c else 1 - (0.6 + 0.1 * a)
        expected += pa * pb * pc * dist.Normal(a + b - c, 1.0).log_prob(data).exp().item()
    assert evidence == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="queue is empty"):
        enum_model(data)


def test_queue_with_monte_carlo_extension_and_limits():
    q = pyqueue.Queue()
    q.put(poutine.Trace())
    model = poutine.queue(_discrete_model, queue=q, extend_fn=poutine.util.mc_extend, num_samples=2)
    model(torch.tensor(0.0))
    # The first try escapes at "a" and queues two draws of it; the second escapes at "b"...
    assert q.qsize() >= 2
    with pytest.raises(TypeError, match="queue"):
        poutine.queue(_discrete_model, queue=[])
    q = pyqueue.Queue()
    q.put(poutine.Trace())
    with pytest.raises(ValueError, match=r"max_tries \(1\) exceeded"):
        poutine.queue(_discrete_model, queue=q, max_tries=1)(torch.tensor(0.0))


def test_enum_extend_respects_num_samples():
    msg = Message("sample", "k", dist.Categorical(torch.ones(4) / 4))
    values = [t.nodes["k"]["value"].item() for t in poutine.util.enum_extend(poutine.Trace(), msg)]
    assert values == [0, 1, 2, 3]
    assert len(poutine.util.enum_extend(poutine.Trace(), msg, num_samples=1)) == 2


def _per_category(category):
    shift = vitorch.param(f"{category}_shift", torch.randn(1))
    mean = vitorch.sample(f"{category}_mean", dist.Normal(0.0, 1.0))
    std = vitorch.sample(f"{category}_std", dist.LogNormal(0.0, 1.0))
    return vitorch.sample(f"{category}_values", dist.Normal(mean + shift, std))


def _categories(categories):
    return {c: _per_category(c) for c in categories}


def test_equalize_shares_values_and_drops_later_densities():
    vitorch.clear_param_store()
    vitorch.set_rng_seed(0)
    model = poutine.equalize(_categories, ".+_std")
    model = poutine.equalize(model, ".+_shift", "param")
    tr = poutine.trace(model).get_trace(["a", "b", "c"])
    stds = [tr.nodes[f"{c}_std"]["value"] for c in "abc"]
    shifts = [tr.nodes[f"{c}_shift"]["value"] for c in "abc"]
    assert all(torch.equal(s, stds[0]) for s in stds)
    assert all(torch.equal(s, shifts[0]) for s in shifts)
    means = [tr.nodes[f"{c}_mean"]["value"] for c in "abc"]
    assert not torch.equal(means[0], means[1])  # unmatched sites stay independent
    tr.compute_log_prob()
    assert tr.nodes["b_std"]["log_prob"].item() == 0.0  # a point mass, masked out
    assert tr.nodes["b_std"]["is_observed"]


def test_equalize_keep_dist_conditions_on_equality():
    def model():
        x = vitorch.sample("x", dist.Normal(0.0, 1.0))
        y = vitorch.sample("y", dist.Normal(5.0, 3.0))
        return x, y

    vitorch.set_rng_seed(1)
    tr = poutine.trace(poutine.equalize(model, ["x", "y"], keep_dist=True)).get_trace()
    x = tr.nodes["x"]["value"]
    assert torch.equal(tr.nodes["y"]["value"], x)
    expected = dist.Normal(0.0, 1.0).log_prob(x) + dist.Normal(5.0, 3.0).log_prob(x)
    assert tr.log_prob_sum().item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(TypeError, match="sites"):
        poutine.equalize(model, sites=[])


def test_get_mask_and_get_plates():
    assert poutine.get_mask() is None
    with poutine.mask(mask=False):
        assert poutine.get_mask() is False
    m1 = torch.tensor([True, True, False])
    m2 = torch.tensor([True, False, True])
    with poutine.mask(mask=m1), poutine.mask(mask=m2):
        assert torch.equal(poutine.get_mask(), m1 & m2)
    assert poutine.get_plates() == ()
    with vitorch.plate("outer", 2, dim=-2), vitorch.plate("inner", 3):
        frames = poutine.get_plates()
    assert [(f.name, f.dim, f.size) for f in frames] == [("outer", -2, 2), ("inner", -1, 3)]


def test_unwrap_and_module_paths():
    def model():
        return 1

    assert poutine.unwrap(poutine.trace(poutine.block(poutine.scale(model, scale=2.0)))) is model
    assert poutine.unwrap(model) is model
    from vitorch.poutine.escape_messenger import NonlocalExit
    from vitorch.poutine.handlers import equalize

    assert NonlocalExit is poutine.NonlocalExit and equalize is poutine.equalize
    old = poutine.is_validation_enabled()
    try:
        poutine.enable_validation(not old)
        assert vitorch.distributions.is_validation_enabled() is (not old)
    finally:
        poutine.enable_validation(old)


def test_random_module_draws_the_modules_parameters_from_the_prior():
    vitorch.clear_param_store()
    net = torch.nn.Linear(2, 1)
    loc = torch.tensor(3.0)
    prior = {
        "weight": dist.Normal(loc, 1e-3).expand([1, 2]).to_event(2),
        "bias": dist.Normal(-1.0, 1e-3).expand([1]).to_event(1),
    }
    with pytest.warns(FutureWarning, match="random_module"):
        draw = vitorch.random_module("net", net, prior)
    tr = poutine.trace(draw).get_trace()
    sampled = tr.nodes["_RETURN"]["value"]
    assert sampled is not net and torch.equal(sampled.weight, tr.nodes["net$$$weight"]["value"])
    assert sampled.weight.detach().sub(3.0).abs().max() < 0.01
    out = sampled(torch.tensor([[1.0, 2.0]]))
    expected = (
        tr.nodes["net$$$weight"]["value"] @ torch.tensor([1.0, 2.0])
        + tr.nodes["net$$$bias"]["value"]
    )
    assert torch.allclose(out.squeeze(0), expected)
    assert net.weight.detach().sub(3.0).abs().max() > 0.5  # the original is untouched
    with pytest.raises(TypeError, match="torch.nn.Module"), pytest.warns(FutureWarning):
        vitorch.random_module("bad", object(), prior)


def test_iarange_and_irange_are_plates():
    with pytest.warns(FutureWarning, match="iarange"):
        with vitorch.iarange("data", 3) as idx:
            x = vitorch.sample("x", dist.Normal(0.0, 1.0))
    assert x.shape == (3,) and idx.tolist() == [0, 1, 2]
    with pytest.warns(FutureWarning, match="irange"):
        assert list(vitorch.irange("seq", 2)) == [0, 1]


def test_full_size_model_plate_takes_the_guides_subsample():
    """Pyro's LDA pattern: the guide subsamples, the model declares the whole plate."""
    data = torch.arange(50.0)

    def model():
        with vitorch.plate("docs", 50) as idx:
            z = vitorch.sample("z", dist.Normal(0.0, 1.0))
            vitorch.sample("x", dist.Normal(z, 1.0), obs=data[idx])
        return idx

    def guide():
        with vitorch.plate("docs", 50, subsample_size=10):
            vitorch.sample("z", dist.Normal(0.0, 1.0))

    vitorch.set_rng_seed(0)
    guide_tr = poutine.trace(guide).get_trace()
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace()
    idx = guide_tr.nodes["docs"]["value"]
    assert len(idx) == 10 and torch.equal(model_tr.nodes["_RETURN"]["value"], idx)
    assert torch.equal(model_tr.nodes["x"]["value"], data[idx])
    assert model_tr.nodes["x"]["scale"] == pytest.approx(5.0)  # 50 items / 10 used
    # Without a guide the model uses all 50 items, unscaled.
    tr = poutine.trace(model).get_trace()
    assert torch.equal(tr.nodes["_RETURN"]["value"], torch.arange(50))
    assert tr.nodes["x"]["scale"] == 1.0
    # The ELBO sees the rescaled log-likelihood: check one term against its hand value.
    elbo = vitorch.infer.Trace_ELBO()
    vitorch.set_rng_seed(1)
    loss = elbo.loss(model, guide)
    assert math.isfinite(loss)
