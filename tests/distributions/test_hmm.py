"""DiscreteHMM against brute-force enumeration of every latent path.

The chain has ``T + 1`` latent states (``z[-1]`` from ``initial_logits``, then one per
observation), so a model with ``K`` states has ``K**(T + 1)`` paths; with small ``K`` and
``T`` summing them all is the exact answer that ``log_prob``, its gradients, ``filter``
and the sampler are held to.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from vitorch.distributions.distribution import TorchDistributionMixin
from vitorch.distributions.hmm import DiscreteHMM
from vitorch.distributions.torch import Categorical, Normal

F64 = torch.float64


def _path_log_joint(init, trans, obs_logp):
    """``log p(y, z)`` for every path ``z``, stacked on a new last dim (all paths)."""
    steps, states = obs_logp.shape[-2], obs_logp.shape[-1]
    init = init - init.logsumexp(-1, keepdim=True)
    trans = trans - trans.logsumexp(-1, keepdim=True)
    trans = trans.expand(trans.shape[:-3] + (steps, states, states))
    terms = []
    for path in itertools.product(range(states), repeat=steps + 1):
        total = init[..., path[0]]
        for t in range(steps):
            total = total + trans[..., t, path[t], path[t + 1]] + obs_logp[..., t, path[t + 1]]
        terms.append((path[-1], total))
    return terms


def _brute_log_prob(init, trans, obs_logp):
    terms = _path_log_joint(init, trans, obs_logp)
    return torch.stack(torch.broadcast_tensors(*[t for _, t in terms]), -1).logsumexp(-1)


def _brute_filter(init, trans, obs_logp):
    terms = _path_log_joint(init, trans, obs_logp)
    states = obs_logp.shape[-1]
    per_final = []
    for j in range(states):
        parts = torch.broadcast_tensors(*[t for last, t in terms if last == j])
        per_final.append(torch.stack(parts, -1).logsumexp(-1))
    logits = torch.stack(torch.broadcast_tensors(*per_final), -1)
    return logits - logits.logsumexp(-1, keepdim=True)


# (initial_logits, transition_logits, observation batch) shapes, value shape, batch_shape
SHAPES = [
    ((3,), (3, 3), (3,), (4,), ()),  # homogeneous: any length
    ((3,), (4, 3, 3), (4, 3), (4,), ()),  # time-varying transitions and observations
    ((2, 3), (3, 3), (4, 3), (2, 4), (2,)),
    ((2, 1, 3), (5, 4, 3, 3), (1, 4, 3), (2, 5, 4), (2, 5)),
    ((3,), (2, 1, 3, 3), (4, 3), (6, 2, 4), (2,)),  # extra sample dims in the value
]


def _normal_case(init_shape, trans_shape, obs_shape, value_shape):
    init = torch.randn(init_shape, dtype=F64)
    trans = torch.randn(trans_shape, dtype=F64)
    loc = torch.randn(obs_shape, dtype=F64)
    scale = torch.rand(obs_shape, dtype=F64) + 0.5
    value = torch.randn(value_shape, dtype=F64)
    return init, trans, (loc, scale), value


@pytest.mark.parametrize("init_shape,trans_shape,obs_shape,value_shape,batch_shape", SHAPES)
def test_log_prob_normal_observations_equals_brute_force(
    init_shape, trans_shape, obs_shape, value_shape, batch_shape
) -> None:
    init, trans, (loc, scale), value = _normal_case(init_shape, trans_shape, obs_shape, value_shape)
    d = DiscreteHMM(init, trans, Normal(loc, scale))
    assert d.batch_shape == torch.Size(batch_shape)
    lp = d.log_prob(value)
    obs_logp = Normal(loc, scale).log_prob(value.unsqueeze(-1))
    want = _brute_log_prob(init, trans, obs_logp)
    assert lp.shape == want.shape
    torch.testing.assert_close(lp, want, rtol=1e-10, atol=1e-10)


def test_log_prob_categorical_observations_and_gradients_equal_brute_force() -> None:
    states, symbols, steps = 3, 4, 5
    init = torch.randn(2, states, dtype=F64, requires_grad=True)
    trans = torch.randn(steps, states, states, dtype=F64, requires_grad=True)
    emit = torch.randn(states, symbols, dtype=F64, requires_grad=True)
    value = torch.randint(symbols, (2, steps)).to(F64)
    d = DiscreteHMM(init, trans, Categorical(logits=emit))
    assert d.batch_shape == (2,) and d.event_shape == (steps,)
    lp = d.log_prob(value)
    obs_logp = Categorical(logits=emit).log_prob(value.unsqueeze(-1))
    want = _brute_log_prob(init, trans, obs_logp)
    torch.testing.assert_close(lp, want, rtol=1e-10, atol=1e-10)
    got_grads = torch.autograd.grad(lp.sum(), (init, trans, emit))
    want_grads = torch.autograd.grad(want.sum(), (init, trans, emit))
    for g, w in zip(got_grads, want_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_gradients_wrt_observation_parameters_and_gradcheck() -> None:
    init = torch.randn(3, dtype=F64, requires_grad=True)
    trans = torch.randn(3, 3, dtype=F64, requires_grad=True)
    loc = torch.randn(3, dtype=F64, requires_grad=True)
    value = torch.randn(6, dtype=F64)
    lp = DiscreteHMM(init, trans, Normal(loc, 1.0)).log_prob(value)
    want = _brute_log_prob(init, trans, Normal(loc, 1.0).log_prob(value.unsqueeze(-1)))
    for g, w in zip(
        torch.autograd.grad(lp, (init, trans, loc)), torch.autograd.grad(want, (init, trans, loc))
    ):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)

    def f(i, t, m):
        return DiscreteHMM(i, t, Normal(m, 1.0)).log_prob(value)

    assert torch.autograd.gradcheck(f, (init, trans, loc))


def test_impossible_transitions_give_finite_gradients() -> None:
    # A chain that must alternate: -inf transition logits, yet finite results.
    trans = torch.tensor([[-float("inf"), 0.0], [0.0, -float("inf")]], dtype=F64)
    init = torch.zeros(2, dtype=F64, requires_grad=True)
    loc = torch.tensor([-2.0, 2.0], dtype=F64, requires_grad=True)
    value = torch.tensor([2.0, -2.0, 2.0, -2.0], dtype=F64)
    lp = DiscreteHMM(init, trans, Normal(loc, 1.0)).log_prob(value)
    obs = Normal(loc, 1.0).log_prob(value.unsqueeze(-1))
    # z[-1] is uniform, then the path alternates: 1, 0, 1, 0 or 0, 1, 0, 1.
    one_path = obs[0, 1] + obs[1, 0] + obs[2, 1] + obs[3, 0]
    other_path = obs[0, 0] + obs[1, 1] + obs[2, 0] + obs[3, 1]
    want = torch.logaddexp(one_path, other_path) - torch.log(torch.tensor(2.0, dtype=F64))
    torch.testing.assert_close(lp, want)
    grads = torch.autograd.grad(lp, (init, loc))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("init_shape,trans_shape,obs_shape,value_shape,batch_shape", SHAPES[:4])
def test_filter_equals_brute_force(
    init_shape, trans_shape, obs_shape, value_shape, batch_shape
) -> None:
    init, trans, (loc, scale), value = _normal_case(init_shape, trans_shape, obs_shape, value_shape)
    post = DiscreteHMM(init, trans, Normal(loc, scale)).filter(value)
    assert isinstance(post, Categorical)
    obs_logp = Normal(loc, scale).log_prob(value.unsqueeze(-1))
    want = _brute_filter(init, trans, obs_logp)
    torch.testing.assert_close(post.logits, want, rtol=1e-10, atol=1e-10)


def test_homogeneous_model_scores_any_length_and_duration() -> None:
    init, trans = torch.randn(3, dtype=F64), torch.randn(3, 3, dtype=F64)
    obs = Normal(torch.randn(3, dtype=F64), 1.0)
    d = DiscreteHMM(init, trans, obs)
    assert d.event_shape == (1,) and d.duration is None
    for steps in (1, 2, 7):
        value = torch.randn(steps, dtype=F64)
        want = _brute_log_prob(init, trans, obs.log_prob(value.unsqueeze(-1)))
        torch.testing.assert_close(d.log_prob(value), want, rtol=1e-10, atol=1e-10)
    fixed = DiscreteHMM(init, trans, obs, duration=4)
    assert fixed.event_shape == (4,) and fixed.duration == 4
    assert fixed.sample((3,)).shape == (3, 4)
    with pytest.raises(ValueError, match="duration="):
        d.sample()


def test_sample_frequencies_match_log_prob() -> None:
    # Two steps, two binary symbols: four outcomes whose probabilities log_prob gives.
    torch.manual_seed(0)
    init = torch.tensor([0.3, -0.4], dtype=F64)
    trans = torch.tensor([[[1.0, -1.0], [0.0, 0.5]], [[-0.5, 0.5], [2.0, 0.0]]], dtype=F64)
    emit = torch.tensor([[1.5, -1.5], [-1.0, 0.8]], dtype=F64)
    d = DiscreteHMM(init, trans, Categorical(logits=emit))
    n = 40_000
    draws = d.sample((n,))
    assert draws.shape == (n, 2)
    outcomes = torch.tensor([[a, b] for a in (0, 1) for b in (0, 1)], dtype=F64)
    probs = d.log_prob(outcomes).exp()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=F64))
    counts = torch.stack([(draws.to(F64) == o).all(-1).sum() for o in outcomes]).to(F64)
    se = (probs * (1 - probs) / n).sqrt()
    assert ((counts / n - probs).abs() <= 5 * se).all(), (counts / n, probs)


def test_sample_shapes_with_batch_and_multivariate_observations() -> None:
    init = torch.randn(2, 3)
    trans = torch.randn(4, 3, 3)
    obs = Normal(torch.randn(3, 5), 1.0).to_event(1)
    d = DiscreteHMM(init, trans, obs)
    assert d.batch_shape == (2,) and d.event_shape == (4, 5)
    x = d.sample((6,))
    assert x.shape == (6, 2, 4, 5)
    assert d.log_prob(x).shape == (6, 2)
    # Each step's vector comes from one state's Normal: with tiny noise it is a state's loc.
    sharp = DiscreteHMM(init, trans, Normal(obs.base_dist.loc, 1e-6).to_event(1))
    y = sharp.sample((10,))
    dist_to_locs = (y.unsqueeze(-2) - obs.base_dist.loc).abs().amax(-1).amin(-1)
    assert (dist_to_locs < 1e-4).all()


def test_expand_shapes_and_mixin() -> None:
    init, trans = torch.randn(3, dtype=F64), torch.randn(5, 3, 3, dtype=F64)
    d = DiscreteHMM(init, trans, Normal(torch.randn(5, 3, dtype=F64), 1.0))
    value = torch.randn(5, dtype=F64)
    e = d.expand((2, 4))
    assert type(e) is DiscreteHMM and e.batch_shape == (2, 4) and e.event_shape == (5,)
    torch.testing.assert_close(e.log_prob(value), d.log_prob(value).expand(2, 4))
    assert e.sample().shape == (2, 4, 5)
    assert isinstance(d, TorchDistributionMixin)
    assert d.expand_by((3,)).batch_shape == (3,)
    assert e.to_event(1).event_shape == (4, 5)


def test_validation_errors_name_the_argument() -> None:
    obs = Normal(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="initial_logits"):
        DiscreteHMM(torch.tensor(0.0), torch.zeros(3, 3), obs)
    with pytest.raises(ValueError, match=r"transition_logits must end in \(3, 3\)"):
        DiscreteHMM(torch.zeros(3), torch.zeros(3, 2), obs)
    with pytest.raises(ValueError, match="observation_dist.batch_shape must end in 3"):
        DiscreteHMM(torch.zeros(3), torch.zeros(3, 3), Normal(torch.zeros(4), 1.0))
    with pytest.raises(TypeError, match="observation_dist"):
        DiscreteHMM(torch.zeros(3), torch.zeros(3, 3), "normal")
    with pytest.raises(ValueError, match="duration=3 disagrees"):
        DiscreteHMM(torch.zeros(3), torch.zeros(5, 3, 3), obs, duration=3)
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        DiscreteHMM(torch.zeros(2, 3), torch.zeros(4, 5, 3, 3), obs)
    d = DiscreteHMM(torch.zeros(3), torch.zeros(3, 3), Categorical(logits=torch.zeros(3, 2)))
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([0.0, 5.0]))  # 5 is outside the categorical support


def test_matches_pyro() -> None:
    pyro_dist = pytest.importorskip("pyro.distributions")
    init, trans = torch.randn(2, 1, 3, dtype=F64), torch.randn(4, 3, 3, dtype=F64)
    loc, scale = torch.randn(4, 3, dtype=F64), torch.rand(4, 3, dtype=F64) + 0.5
    value = torch.randn(5, 2, 1, 4, dtype=F64)
    ours = DiscreteHMM(init, trans, Normal(loc, scale))
    theirs = pyro_dist.DiscreteHMM(init, trans, pyro_dist.Normal(loc, scale))
    assert ours.batch_shape == theirs.batch_shape
    assert ours.event_shape == theirs.event_shape
    torch.testing.assert_close(ours.log_prob(value), theirs.log_prob(value))
    torch.testing.assert_close(ours.filter(value).probs, theirs.filter(value).probs)
