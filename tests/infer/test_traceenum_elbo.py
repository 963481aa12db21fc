"""``TraceEnum_ELBO``, ``config_enumerate`` and the ``enum`` handler against exact answers.

Every loss is compared with the log marginal likelihood written out by hand with
``logsumexp`` (the enumerated variables summed out explicitly), and gradients with
autograd of that hand-written marginal.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.handlers.enum import EnumMessenger, enum
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide import AutoDelta
from vitorch.infer.traceenum_elbo import JitTraceEnum_ELBO, TraceEnum_ELBO, config_enumerate
from vitorch.optim import ClippedAdam

Normal = torch.distributions.Normal
PARALLEL = {"enumerate": "parallel"}


def _empty_guide(*args, **kwargs):
    pass


def _data() -> torch.Tensor:
    return torch.tensor([-2.1, -1.7, 0.2, 0.4, 2.8, 3.3, 2.9])


def _gmm(weights, locs, scale, data, subsample=None):
    def model():
        with vitorch.plate("data", len(data), subsample=subsample) as idx:
            z = vitorch.sample("z", dist.Categorical(weights), infer=PARALLEL)
            vitorch.sample("x", dist.Normal(locs[z], scale), obs=data[idx])

    return model


def _gmm_marginal(weights, locs, scale, data):
    """log sum_k w_k N(x_i | loc_k, scale), per item (Categorical normalizes w)."""
    log_w = (weights / weights.sum()).log()
    return torch.logsumexp(log_w + Normal(locs, scale).log_prob(data[:, None]), -1)


# -- the enum handler ------------------------------------------------------------------------


def test_enum_handler_puts_each_site_in_its_own_dim_left_of_the_plates():
    def model():
        a = vitorch.sample("a", dist.Categorical(torch.ones(3) / 3), infer=PARALLEL)
        with vitorch.plate("p", 4):
            b = vitorch.sample("b", dist.Bernoulli(0.3), infer=PARALLEL)
            c = vitorch.sample("c", dist.Bernoulli(0.3))
        return a, b, c

    with handlers.trace() as tr, EnumMessenger(first_available_dim=-2):
        a, b, c = model()
    assert a.shape == (3, 1) and torch.equal(a.flatten(), torch.arange(3))
    assert b.shape == (2, 1, 1) and torch.equal(b.flatten(), torch.tensor([0.0, 1.0]))
    assert c.shape == (4,)  # not marked: drawn as usual
    assert tr.trace.nodes["a"].infer["_enumerate_dim"] == -2
    assert tr.trace.nodes["b"].infer["_enumerate_dim"] == -3
    assert "_enumerate_dim" not in tr.trace.nodes["c"].infer
    # A second run allocates the same dims again.
    a2, b2, _ = enum(model, first_available_dim=-2)()
    assert a2.shape == (3, 1) and b2.shape == (2, 1, 1)


def test_enum_handler_expand_and_errors():
    def model():
        with vitorch.plate("p", 4):
            return vitorch.sample(
                "b", dist.Bernoulli(0.3), infer={"enumerate": "parallel", "expand": True}
            )

    assert enum(model, first_available_dim=-2)().shape == (2, 4)
    with pytest.raises(ValueError, match="first_available_dim"):
        EnumMessenger(first_available_dim=1)
    with pytest.raises(ValueError, match="max_plate_nesting"):
        enum(model, first_available_dim=-1)()

    def continuous():
        vitorch.sample("y", dist.Normal(0.0, 1.0), infer=PARALLEL)

    with pytest.raises(ValueError, match="'y'.*no finite support"):
        enum(continuous, first_available_dim=-1)()

    def flat():
        vitorch.sample("s", dist.Bernoulli(0.5), infer={"enumerate": "flat"})

    with pytest.raises(NotImplementedError, match="'s'.*'flat'"):
        enum(flat, first_available_dim=-1)()

    def sequential():
        return vitorch.sample("s", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})

    # As in Pyro, enum leaves a sequential site alone: it is sampled, one value.
    value = enum(sequential, first_available_dim=-1)()
    assert value.shape == () and value.item() in (0.0, 1.0)


# -- exact values ------------------------------------------------------------------------------


def test_gmm_local_assignments_exact_value_and_gradients():
    data = _data()
    weights = torch.tensor([0.2, 0.3, 0.5], requires_grad=True)
    locs = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    scale = torch.tensor(0.7, requires_grad=True)
    model = _gmm(weights, locs, scale, data)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, _empty_guide)
    exact = -_gmm_marginal(weights, locs, scale, data).sum()
    assert loss.item() == pytest.approx(exact.item(), abs=1e-5)
    assert elbo.loss(model, _empty_guide) == pytest.approx(exact.item(), abs=1e-5)
    got = torch.autograd.grad(loss, [weights, locs, scale])
    want = torch.autograd.grad(exact, [weights, locs, scale])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_gmm_with_a_param_in_the_store_gives_its_gradient():
    data = _data()
    weights = torch.tensor([0.2, 0.3, 0.5])

    def model():
        locs = vitorch.param("locs", torch.tensor([-1.0, 0.5, 2.0]))
        with vitorch.plate("data", len(data)):
            z = vitorch.sample("z", dist.Categorical(weights), infer=PARALLEL)
            vitorch.sample("x", dist.Normal(locs[z], 1.0), obs=data)

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, _empty_guide)
    loss.backward()
    locs = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    exact = -_gmm_marginal(weights, locs, torch.tensor(1.0), data).sum()
    exact.backward()
    store_locs = vitorch.get_param_store().get_unconstrained("locs")
    torch.testing.assert_close(store_locs.grad, locs.grad, rtol=1e-5, atol=1e-6)
    assert loss.item() == pytest.approx(exact.item(), abs=1e-5)


def test_global_enumerated_variable_with_a_plate_of_observations():
    data = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    prior = torch.tensor([0.3, 0.7])
    probs = torch.tensor([0.2, 0.9])

    def model():
        c = vitorch.sample("c", dist.Categorical(prior), infer=PARALLEL)
        with vitorch.plate("data", len(data)):
            vitorch.sample("x", dist.Bernoulli(probs[c]), obs=data)

    per_c = torch.distributions.Bernoulli(probs[:, None]).log_prob(data).sum(-1)
    exact = -torch.logsumexp(prior.log() + per_c, 0)
    assert TraceEnum_ELBO(max_plate_nesting=1).loss(model, _empty_guide) == pytest.approx(
        exact.item(), abs=1e-5
    )

    # The same with a global Bernoulli and config_enumerate doing the marking.
    def bern_model():
        c = vitorch.sample("c", dist.Bernoulli(0.7)).long()
        with vitorch.plate("data", len(data)):
            vitorch.sample("x", dist.Bernoulli(probs[c]), obs=data)

    loss = TraceEnum_ELBO().loss(config_enumerate(bern_model), _empty_guide)
    assert loss == pytest.approx(exact.item(), abs=1e-5)


def _mixture_of_mixtures(prior, weights, locs, data, subsample=None):
    def model():
        c = vitorch.sample("c", dist.Categorical(prior), infer=PARALLEL)
        with vitorch.plate("data", len(data), subsample=subsample) as idx:
            z = vitorch.sample("z", dist.Categorical(weights), infer=PARALLEL)
            vitorch.sample("x", dist.Normal(locs[c, z], 1.0), obs=data[idx])

    return model


def _mixture_of_mixtures_marginal(prior, weights, locs, data, item_scale=1.0):
    # [c, i, k]
    inner = (weights / weights.sum()).log() + Normal(locs[:, None, :], 1.0).log_prob(
        data[None, :, None]
    )
    per_c = item_scale * torch.logsumexp(inner, -1).sum(-1)
    return torch.logsumexp(prior.log() + per_c, 0)


def test_global_and_local_enumerated_variables_exact():
    data = _data()
    prior = torch.tensor([0.4, 0.6])
    weights = torch.tensor([0.5, 0.25, 0.25], requires_grad=True)
    locs = torch.tensor([[-2.0, 0.0, 3.0], [-1.0, 1.0, 2.0]], requires_grad=True)
    model = _mixture_of_mixtures(prior, weights, locs, data)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, _empty_guide)
    exact = -_mixture_of_mixtures_marginal(prior, weights, locs, data)
    assert loss.item() == pytest.approx(exact.item(), abs=1e-5)
    got = torch.autograd.grad(loss, [weights, locs])
    want = torch.autograd.grad(exact, [weights, locs])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_nested_plates_sum_the_inner_plate_before_the_outer_variable():
    # x[g, i] ~ N(loc[z_g], 1): z_g is per group, its dependents are per item of the group.
    x = torch.tensor([[0.1, -0.3, 0.2], [2.9, 3.2, 3.1]])  # [group, item]
    weights = torch.tensor([0.3, 0.7])
    locs = torch.tensor([0.0, 3.0])

    def model():
        with vitorch.plate("groups", 2, dim=-2):
            z = vitorch.sample("z", dist.Categorical(weights), infer=PARALLEL)
            with vitorch.plate("items", 3, dim=-1):
                vitorch.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    per_k = Normal(locs[:, None, None], 1.0).log_prob(x).sum(-1)  # [k, group]
    exact = -torch.logsumexp(weights.log()[:, None] + per_k, 0).sum()
    assert TraceEnum_ELBO(max_plate_nesting=2).loss(model, _empty_guide) == pytest.approx(
        exact.item(), abs=1e-5
    )


def test_sequential_plate_sums_each_items_variable_out_on_its_own():
    # 20 items of K=3: enumerating the assignments jointly would need 3**20 entries.
    torch.manual_seed(1)
    data = torch.randn(20) * 2.0
    weights, locs = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([-2.0, 0.0, 3.0])

    def model():
        for i in vitorch.plate("data", len(data)):
            z = vitorch.sample(f"z_{i}", dist.Categorical(weights), infer=PARALLEL)
            vitorch.sample(f"x_{i}", dist.Normal(locs[z], 1.0), obs=data[i])

    exact = -_gmm_marginal(weights, locs, 1.0, data).sum()
    assert TraceEnum_ELBO(max_plate_nesting=0).loss(model, _empty_guide) == pytest.approx(
        exact.item(), abs=1e-4
    )


def test_continuous_guide_site_alongside_enumeration():
    # A latent mean with a fixed Normal guide: the estimate is log p(x, mu) - log q(mu)
    # with the assignments summed out, at the guide's draw of mu.
    data = _data()
    weights = torch.tensor([0.5, 0.5])

    def model():
        mu = vitorch.sample("mu", dist.Normal(0.0, 5.0))
        locs = torch.stack([mu - 2.0, mu + 2.0])
        with vitorch.plate("data", len(data)):
            z = vitorch.sample("z", dist.Categorical(weights), infer=PARALLEL)
            vitorch.sample("x", dist.Normal(locs[z], 1.0), obs=data)

    def guide():
        vitorch.sample("mu", dist.Normal(0.4, 0.1))

    tr = handlers.trace(handlers.seed(guide, rng_seed=3)).get_trace()
    mu = tr.nodes["mu"].value
    locs = torch.stack([mu - 2.0, mu + 2.0])
    log_q = Normal(0.4, 0.1).log_prob(mu)
    exact = -(Normal(0.0, 5.0).log_prob(mu) + _gmm_marginal(weights, locs, 1.0, data).sum() - log_q)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, handlers.seed(guide, rng_seed=3))
    assert loss == pytest.approx(exact.item(), abs=1e-4)


def test_vectorized_particles_average_exact_particles():
    data = _data()
    weights, locs = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([-2.0, 0.0, 3.0])
    model = _gmm(weights, locs, 1.0, data)
    exact = -_gmm_marginal(weights, locs, 1.0, data).sum().item()
    for vectorize in (False, True):
        elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=3, vectorize_particles=vectorize)
        assert elbo.loss(model, _empty_guide) == pytest.approx(exact, abs=1e-5)


def test_without_enumerated_sites_the_value_equals_trace_elbo():
    data = torch.tensor([0.3, -1.2, 2.0])

    def model():
        mu = vitorch.sample("mu", dist.Normal(0.0, 2.0))
        with vitorch.plate("data", 3):
            vitorch.sample("x", dist.Normal(mu, 1.0), obs=data)

    def guide():
        vitorch.sample("mu", dist.Normal(vitorch.param("m", torch.tensor(0.5)), 0.3))

    vitorch.set_rng_seed(7)
    want = Trace_ELBO().loss(model, guide)
    vitorch.set_rng_seed(7)
    # Given max_plate_nesting: guessing it would run the guide once more, using up draws.
    got = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert JitTraceEnum_ELBO is TraceEnum_ELBO


# -- subsampling ---------------------------------------------------------------------------------


def test_subsampled_local_variables_are_unbiased_over_all_subsamples():
    data = _data()[:5]
    weights, locs = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([-2.0, 0.0, 3.0])
    full = TraceEnum_ELBO(max_plate_nesting=1).loss(_gmm(weights, locs, 1.0, data), _empty_guide)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    losses = []
    for idx in itertools.combinations(range(5), 2):
        subsample = torch.tensor(idx)
        losses.append(elbo.loss(_gmm(weights, locs, 1.0, data, subsample), _empty_guide))
        # One subsample by hand: the per-item marginals times N / B.
        by_hand = -2.5 * _gmm_marginal(weights, locs, 1.0, data[subsample]).sum()
        assert losses[-1] == pytest.approx(by_hand.item(), abs=1e-5)
    assert sum(losses) / len(losses) == pytest.approx(full, abs=1e-5)


def test_subsampled_plate_under_a_global_variable_is_refused():
    # log sum_z prod over a subsample, rescaled, would be a biased loss: refuse, as Pyro does.
    data = _data()
    prior = torch.tensor([0.4, 0.6])
    weights = torch.tensor([0.5, 0.25, 0.25])
    locs = torch.tensor([[-2.0, 0.0, 3.0], [-1.0, 1.0, 2.0]])
    model = _mixture_of_mixtures(prior, weights, locs, data, torch.tensor([0, 4, 6]))
    with pytest.raises(ValueError, match="subsampled.*biased"):
        TraceEnum_ELBO(max_plate_nesting=1).loss(model, _empty_guide)
    # The full plate is fine.
    full = _mixture_of_mixtures(prior, weights, locs, data, None)
    exact = -_mixture_of_mixtures_marginal(prior, weights, locs, data, 1.0)
    assert TraceEnum_ELBO(max_plate_nesting=1).loss(full, _empty_guide) == pytest.approx(
        exact.item(), abs=1e-5
    )


def test_common_poutine_scale_multiplies_the_marginal():
    data = _data()
    weights, locs = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([-2.0, 0.0, 3.0])
    model = handlers.scale(_gmm(weights, locs, 1.0, data), scale=0.25)
    exact = -0.25 * _gmm_marginal(weights, locs, 1.0, data).sum()
    assert TraceEnum_ELBO(max_plate_nesting=1).loss(model, _empty_guide) == pytest.approx(
        exact.item(), abs=1e-5
    )


# -- SVI -----------------------------------------------------------------------------------------


def test_svi_with_autodelta_finds_the_map_of_the_marginal():
    torch.manual_seed(0)
    data = torch.cat([torch.randn(15) * 0.5 - 3.0, torch.randn(15) * 0.5 + 3.0])
    weights = torch.tensor([0.5, 0.5])

    @config_enumerate
    def model(data):
        locs = vitorch.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        with vitorch.plate("data", len(data)):
            z = vitorch.sample("z", dist.Categorical(weights))
            vitorch.sample("x", dist.Normal(locs[z], 0.5), obs=data)

    guide = AutoDelta(handlers.block(model, expose=["locs"]))
    svi = SVI(
        model, guide, ClippedAdam({"lr": 0.2, "lrd": 0.99}), TraceEnum_ELBO(max_plate_nesting=1)
    )
    for _ in range(600):
        svi.step(data)
    found = guide.median()["locs"].detach()

    # The MAP of the hand-written marginal, by L-BFGS.
    locs = torch.tensor([-1.0, 1.0]).requires_grad_()
    lbfgs = torch.optim.LBFGS(
        [locs], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )

    def closure():
        lbfgs.zero_grad()
        neg = -(
            Normal(0.0, 10.0).log_prob(locs).sum() + _gmm_marginal(weights, locs, 0.5, data).sum()
        )
        neg.backward()
        return neg

    lbfgs.step(closure)
    want = locs.detach()
    if found[0] > found[1]:  # the labels are exchangeable
        found = found.flip(0)
    if want[0] > want[1]:
        want = want.flip(0)
    torch.testing.assert_close(found, want, atol=2e-3, rtol=0)
    assert want[0] < -2.5 and want[1] > 2.5


# -- config_enumerate ----------------------------------------------------------------------------


def test_config_enumerate_marks_exactly_the_latent_discrete_sites():
    def model():
        vitorch.sample("cat", dist.Categorical(torch.ones(3) / 3))
        vitorch.sample("bern", dist.Bernoulli(0.5))
        vitorch.sample("cont", dist.Normal(0.0, 1.0))
        vitorch.sample("obs", dist.Bernoulli(0.5), obs=torch.tensor(1.0))
        vitorch.sample("off", dist.Bernoulli(0.5), infer={"enumerate": None})
        vitorch.sample("seq", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})
        vitorch.param("p", torch.tensor(1.0))

    def marks(fn):
        tr = handlers.trace(fn).get_trace()
        return {
            n: s.infer.get("enumerate", "-")
            for n, s in tr.nodes.items()
            if s.type != "args" and s.type != "return"
        }

    want = {
        "cat": "parallel",
        "bern": "parallel",
        "cont": "-",
        "obs": "-",
        "off": None,
        "seq": "sequential",
        "p": "-",
    }
    assert marks(config_enumerate(model)) == want
    assert marks(config_enumerate()(model)) == want
    assert marks(config_enumerate(default="sequential")(model))["cat"] == "sequential"
    tr = handlers.trace(config_enumerate(model, expand=True)).get_trace()
    assert tr.nodes["cat"].infer["expand"] is True

    @config_enumerate
    def decorated():
        return vitorch.sample("d", dist.Bernoulli(0.5))

    assert handlers.trace(decorated).get_trace().nodes["d"].infer["enumerate"] == "parallel"


def test_config_enumerate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="default.*'parallel'.*got 'paralel'"):
        config_enumerate(default="paralel")
    with pytest.raises(ValueError, match="expand"):
        config_enumerate(expand="yes")
    with pytest.raises(ValueError, match="num_samples must be None or a positive int, got 0"):
        config_enumerate(num_samples=0)
    with pytest.raises(ValueError, match="tmc must be 'diagonal' or 'mixture', got 'x'"):
        config_enumerate(num_samples=2, tmc="x")
    with pytest.raises(TypeError, match="callable"):
        config_enumerate(3)


# -- errors ---------------------------------------------------------------------------------------


def test_model_enumerated_site_sampled_by_the_guide_is_rejected():
    def model():
        vitorch.sample("z", dist.Bernoulli(0.5), infer=PARALLEL)

    def guide():
        vitorch.sample("z", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match="'z'.*the guide samples it too"):
        TraceEnum_ELBO(max_plate_nesting=0).loss(model, guide)


def test_non_reparameterized_guide_site_is_not_implemented():
    def model():
        vitorch.sample("n", dist.Poisson(3.0))

    def guide():
        vitorch.sample("n", dist.Poisson(2.0))

    with pytest.raises(NotImplementedError, match="'n'.*not reparameterizable"):
        TraceEnum_ELBO(max_plate_nesting=0).loss(model, guide)


def test_non_tree_dependency_is_rejected():
    # x[a, b] depends on u[a] and v[b]: no plate can be summed before the other variable.
    def model():
        with vitorch.plate("a", 2, dim=-1):
            u = vitorch.sample("u", dist.Bernoulli(0.5), infer=PARALLEL)
        with vitorch.plate("b", 3, dim=-2):
            v = vitorch.sample("v", dist.Bernoulli(0.5), infer=PARALLEL)
        with vitorch.plate("a", 2, dim=-1), vitorch.plate("b", 3, dim=-2):
            vitorch.sample("x", dist.Normal(u + v, 1.0), obs=torch.zeros(3, 2))

    with pytest.raises(ValueError, match=r"\['u', 'v'\].*not supported"):
        TraceEnum_ELBO(max_plate_nesting=2).loss(model, _empty_guide)


def test_dependent_outside_the_variables_plate_is_rejected():
    def model():
        with vitorch.plate("a", 1):
            z = vitorch.sample("z", dist.Bernoulli(0.5), infer=PARALLEL)
        vitorch.sample("y", dist.Normal(z, 1.0), obs=torch.zeros(1))

    with pytest.raises(ValueError, match="'y'.*'z'.*outside plate.*'a'"):
        TraceEnum_ELBO(max_plate_nesting=1).loss(model, _empty_guide)


def test_undeclared_batch_dim_on_an_enumerated_term_is_rejected():
    def model():
        z = vitorch.sample("z", dist.Bernoulli(0.5), infer=PARALLEL)
        vitorch.sample("y", dist.Normal(z * torch.ones(3), 1.0), obs=torch.zeros(3))

    with pytest.raises(ValueError, match="'y'.*no enclosing plate"):
        TraceEnum_ELBO(max_plate_nesting=1).loss(model, _empty_guide)


def test_max_plate_nesting_that_cannot_be_guessed_asks_for_it():
    def model():
        z = vitorch.sample("z", dist.Bernoulli(0.5), infer=PARALLEL)
        if z.dim() == 0:
            raise RuntimeError("this model only runs enumerated")

    with pytest.raises(ValueError, match="max_plate_nesting"):
        TraceEnum_ELBO().loss(model, _empty_guide)
    # Given explicitly, it runs: log sum_z p(z) = 0.
    assert TraceEnum_ELBO(max_plate_nesting=0).loss(model, _empty_guide) == pytest.approx(
        0.0, abs=1e-6
    )


def test_pyro_agrees_on_a_mixture_of_mixtures():
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist
    from pyro.infer import TraceEnum_ELBO as PyroTraceEnum_ELBO

    data = _data()
    prior = torch.tensor([0.4, 0.6])
    weights = torch.tensor([0.5, 0.25, 0.25])
    locs = torch.tensor([[-2.0, 0.0, 3.0], [-1.0, 1.0, 2.0]])

    def pyro_model():
        c = pyro.sample("c", pdist.Categorical(prior), infer=PARALLEL)
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", pdist.Categorical(weights), infer=PARALLEL)
            pyro.sample("x", pdist.Normal(locs[c, z], 1.0), obs=data)

    want = PyroTraceEnum_ELBO(max_plate_nesting=1).loss(pyro_model, _empty_guide)
    got = TraceEnum_ELBO(max_plate_nesting=1).loss(
        _mixture_of_mixtures(prior, weights, locs, data), _empty_guide
    )
    assert got == pytest.approx(want, abs=1e-4)
    assert not math.isnan(got)


# -- masks on enumerated sites ------------------------------------------------------------------
def test_masked_enumerated_site_keeps_its_own_factor_unmasked():
    # Two sequences of lengths 1 and 2 padded to 2 steps: step 1 of sequence 0 is masked.
    # Its x_1 still sums to one over its 4 values; masking its factor would add log 4.
    probs_x = torch.tensor(
        [[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.25] * 4, [0.1, 0.1, 0.1, 0.7]]
    )
    probs_y = torch.tensor([0.1, 0.5, 0.8, 0.3])
    lengths = torch.tensor([1, 2])
    ys = torch.tensor([[1.0, 0.0], [1.0, 1.0]])

    def model():
        with vitorch.plate("seq", 2, dim=-1):
            x = 0
            for t in vitorch.markov(range(2)):
                with handlers.mask(mask=t < lengths):
                    x = vitorch.sample(f"x_{t}", dist.Categorical(probs_x[x]), infer=PARALLEL)
                    vitorch.sample(f"y_{t}", dist.Bernoulli(probs_y[x]), obs=ys[:, t])

    K = range(4)
    ll0 = math.log(sum(probs_x[0, a] * probs_y[a] for a in K))
    ll1 = math.log(
        sum(probs_x[0, a] * probs_y[a] * probs_x[a, b] * probs_y[b] for a in K for b in K)
    )
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, _empty_guide)
    assert loss == pytest.approx(-(ll0 + ll1), abs=1e-5)


def test_mask_before_later_observations_gives_the_exact_value_and_gradient():
    # A capture-recapture step: z_0 is masked (not yet captured), so its value does not
    # matter, y_0 is masked with it; z_1 ~ Bernoulli(phi) (alive), y_1 ~ Bernoulli(rho z_1).
    ch = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    phi = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    rho = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def model():
        with vitorch.plate("animals", 2, dim=-1):
            z = torch.ones(2, dtype=torch.float64)
            seen = torch.zeros(2, dtype=torch.bool)
            for t in vitorch.markov(range(2)):
                with handlers.mask(mask=seen):
                    mu = seen.double() * phi * z + (1 - seen.double())
                    z = vitorch.sample(f"z_{t}", dist.Bernoulli(mu), infer=PARALLEL)
                    vitorch.sample(f"y_{t}", dist.Bernoulli(rho * z), obs=ch[:, t].double())
                seen = seen | ch[:, t].bool()

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, _empty_guide)
    # Animal 0: seen at t=0, then alive and missed or dead. Animal 1: all masked.
    exact = -torch.log(phi * (1 - rho) + (1 - phi))
    torch.testing.assert_close(loss, exact)
    got = torch.autograd.grad(loss, (phi, rho))
    want = torch.autograd.grad(exact, (phi, rho))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_a_one_value_support_is_masked_like_any_other_site():
    # Categorical with one category is not summed over: its (zero) term is just masked.
    def model():
        with vitorch.plate("p", 3, dim=-1), handlers.mask(mask=torch.tensor([True, False, True])):
            z = vitorch.sample("z", dist.Categorical(torch.ones(1)), infer=PARALLEL)
            vitorch.sample("x", dist.Normal(z.double(), 1.0), obs=torch.zeros(3).double())

    exact = -2 * Normal(0.0, 1.0).log_prob(torch.tensor(0.0)).item()
    assert TraceEnum_ELBO(max_plate_nesting=1).loss(model, _empty_guide) == pytest.approx(exact)


# -- guide-side enumeration ---------------------------------------------------------------------
def test_guide_enumerated_global_variable_is_weighted_by_q_exactly():
    # ELBO = sum_z q(z) [log p(z) + sum_i log p(x_i | z) - log q(z)], no sampling at all.
    x = _data()
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    locs = torch.tensor([-2.0, 0.3, 3.0], dtype=torch.float64)
    q_logits = torch.tensor([0.1, -0.4, 0.6], dtype=torch.float64, requires_grad=True)

    def model():
        z = vitorch.sample("z", dist.Categorical(pi), infer=PARALLEL)  # the guide's values win
        with vitorch.plate("data", len(x)):
            vitorch.sample("x", dist.Normal(locs[z], 1.0), obs=x.double())

    def guide():
        vitorch.sample("z", dist.Categorical(logits=q_logits), infer=PARALLEL)

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide)
    log_q = q_logits.log_softmax(0)
    per_z = pi.log() + Normal(locs[:, None], 1.0).log_prob(x.double()).sum(-1) - log_q
    exact = -(log_q.exp() * per_z).sum()
    torch.testing.assert_close(loss, exact)
    torch.testing.assert_close(
        torch.autograd.grad(loss, q_logits)[0], torch.autograd.grad(exact, q_logits)[0]
    )


def test_guide_enumerated_local_variable_with_a_reparameterized_child():
    # Per item: z_i ~ q_i in the guide, then w_i ~ N(a[z_i] + b_i, s) given each value of
    # z_i. The estimate is exact in z and uses the guide's draws of w (read back here).
    torch.manual_seed(3)
    dt = torch.float64
    x = _data().double()
    N, K = len(x), 3
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=dt)
    mu = torch.tensor([-2.0, 0.3, 3.0], dtype=dt)
    q_logits = torch.randn(N, K, dtype=dt, requires_grad=True)
    a = torch.randn(K, dtype=dt, requires_grad=True)
    b = torch.randn(N, dtype=dt, requires_grad=True)
    drawn = {}

    def model():
        with vitorch.plate("data", N):
            z = vitorch.sample("z", dist.Categorical(pi))
            w = vitorch.sample("w", dist.Normal(mu[z], 1.0))
            vitorch.sample("x", dist.Normal(w, 0.5), obs=x)

    def guide():
        with vitorch.plate("data", N):
            z = vitorch.sample("z", dist.Categorical(logits=q_logits), infer=PARALLEL)
            drawn["w"] = vitorch.sample("w", dist.Normal(a[z] + b, 0.7))

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide)
    w = drawn["w"]  # (K, N): the draw for z_i = k
    assert w.shape == (K, N)
    k = torch.arange(K)[:, None]
    log_q = q_logits.log_softmax(-1).T  # (K, N)
    cost = (
        pi.log()[k]
        + Normal(mu[k], 1.0).log_prob(w)
        + Normal(w, 0.5).log_prob(x)
        - log_q
        - Normal(a[k] + b, 0.7).log_prob(w)
    )
    exact = -(log_q.exp() * cost).sum()
    torch.testing.assert_close(loss, exact)
    params = (q_logits, a, b)
    got = torch.autograd.grad(loss, params, retain_graph=True)
    for g, e in zip(got, torch.autograd.grad(exact, params)):
        torch.testing.assert_close(g, e)


def test_guide_enumeration_mixed_with_model_enumeration_on_one_site_is_refused():
    def model():
        g = vitorch.sample("g", dist.Bernoulli(0.5))
        m = vitorch.sample("m", dist.Bernoulli(0.5), infer=PARALLEL)
        vitorch.sample("x", dist.Normal(g + m, 1.0), obs=torch.tensor(0.0))

    def guide():
        vitorch.sample("g", dist.Bernoulli(0.3), infer=PARALLEL)

    with pytest.raises(NotImplementedError, match="'x'.*guide and in the model"):
        TraceEnum_ELBO(max_plate_nesting=0).loss(model, guide)


def test_guide_enumeration_agrees_with_pyro():
    pyro = pytest.importorskip("pyro")
    x = _data()
    q_logits = torch.tensor([[0.1, -0.4, 0.6]]).expand(len(x), 3) + torch.arange(len(x))[:, None]
    pi, locs = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([-2.0, 0.3, 3.0])

    def model(P, D):
        with P.plate("data", len(x)):
            z = P.sample("z", D.Categorical(pi))
            P.sample("x", D.Normal(locs[z], 1.0), obs=x)

    def guide(P, D):
        with P.plate("data", len(x)):
            P.sample("z", D.Categorical(logits=q_logits), infer={"enumerate": "parallel"})

    ours = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, vitorch, dist)
    theirs = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(
        model, guide, pyro, pyro.distributions
    )
    assert ours == pytest.approx(theirs, rel=1e-5)


# -- sequential enumeration of guide sites -----------------------------------------------------

SEQUENTIAL = {"enumerate": "sequential"}


def _tutorial(probs: torch.Tensor):
    """Pyro's enumeration tutorial: z ~ Categorical(5), x = 2 observed around z."""

    def model():
        z = vitorch.sample("z", dist.Categorical(torch.ones(5)))
        vitorch.sample("x", dist.Normal(z.float(), 1.0), obs=torch.tensor(2.0))

    def guide():
        vitorch.sample("z", dist.Categorical(probs))

    z = torch.arange(5.0)
    log_p = math.log(0.2) + Normal(z, 1.0).log_prob(torch.tensor(2.0))
    q = probs / probs.sum()  # Categorical normalizes its probs (and so their gradient)
    exact = -(q * (log_p - q.log())).sum()
    return model, guide, exact


def test_sequential_guide_site_exact_loss_and_gradient():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64, requires_grad=True)
    model, guide, exact = _tutorial(probs)
    for num_particles in (1, 3):
        elbo = TraceEnum_ELBO(max_plate_nesting=0, num_particles=num_particles)
        loss = elbo.differentiable_loss(model, config_enumerate(guide, "sequential"))
        torch.testing.assert_close(loss, exact)
        (got,) = torch.autograd.grad(loss, probs)
        (want,) = torch.autograd.grad(exact, probs, retain_graph=True)
        torch.testing.assert_close(got, want)
    assert TraceEnum_ELBO(max_plate_nesting=0).loss(
        model, config_enumerate(guide, "sequential")
    ) == pytest.approx(exact.item(), rel=1e-12)


def test_sequential_tutorial_with_a_constrained_param():
    vitorch.clear_param_store()
    start = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15])
    model, _, exact = _tutorial(start)

    def guide():
        probs = vitorch.param("probs", start, constraint=dist.constraints.simplex)
        vitorch.sample("z", dist.Categorical(probs))

    loss = TraceEnum_ELBO(max_plate_nesting=0).loss(model, config_enumerate(guide, "sequential"))
    assert loss == pytest.approx(exact.item(), rel=1e-5)
    vitorch.clear_param_store()


def _two_site_problem():
    q_a = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    q_b = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=torch.float64, requires_grad=True)
    p_b = torch.tensor([[0.3, 0.3, 0.4], [0.1, 0.7, 0.2]], dtype=torch.float64)
    x = torch.tensor(1.7, dtype=torch.float64)

    def model():
        a = vitorch.sample("a", dist.Bernoulli(torch.tensor(0.4, dtype=torch.float64)))
        b = vitorch.sample("b", dist.Categorical(p_b[a.long()]))
        vitorch.sample("x", dist.Normal(a + b, 1.0), obs=x)

    def guide():
        a = vitorch.sample("a", dist.Bernoulli(q_a), infer=SEQUENTIAL)
        vitorch.sample("b", dist.Categorical(q_b[a.long()]), infer=SEQUENTIAL)

    terms = []
    q_b_rows = q_b / q_b.sum(-1, keepdim=True)
    for a, b in itertools.product(range(2), range(3)):
        log_q = torch.log(q_a if a else 1 - q_a) + q_b_rows[a, b].log()
        log_p = math.log(0.4 if a else 0.6) + p_b[a, b].log() + Normal(a + b, 1.0).log_prob(x)
        terms.append(log_q.exp() * (log_p - log_q))
    return model, guide, -sum(terms), (q_a, q_b)


def test_two_sequential_guide_sites_walk_all_six_values():
    model, guide, exact, params = _two_site_problem()
    runs = []

    def counted():
        runs.append(None)
        guide()

    loss = TraceEnum_ELBO(max_plate_nesting=0).differentiable_loss(model, counted)
    # One run per (a, b) value, plus the runs abandoned at a and at b (1 + 2).
    assert len(runs) == 6 + 3
    torch.testing.assert_close(loss, exact)
    got = torch.autograd.grad(loss, params)
    for g, e in zip(got, torch.autograd.grad(exact, params)):
        torch.testing.assert_close(g, e)


def test_sequential_equals_parallel_guide_enumeration():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64, requires_grad=True)
    model, guide, _ = _tutorial(probs)
    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    seq = elbo.differentiable_loss(model, config_enumerate(guide, "sequential"))
    par = elbo.differentiable_loss(model, config_enumerate(guide, "parallel"))
    torch.testing.assert_close(seq, par)
    torch.testing.assert_close(
        torch.autograd.grad(seq, probs)[0], torch.autograd.grad(par, probs)[0]
    )


def test_sequential_site_mixed_with_parallel_guide_and_model_sites():
    # a: sequential in the guide; b: parallel in the guide, depends on a; c: model-only,
    # enumerated in parallel. x depends on a and c, y on a and b.
    q_a = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    q_b = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=torch.float64, requires_grad=True)
    p_c = torch.tensor([0.25, 0.75], dtype=torch.float64)
    x, y = torch.tensor(0.9, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)

    def model(a_mark):
        a = vitorch.sample("a", dist.Bernoulli(torch.tensor(0.5, dtype=torch.float64)))
        b = vitorch.sample("b", dist.Categorical(torch.tensor([0.4, 0.6], dtype=torch.float64)))
        c = vitorch.sample("c", dist.Categorical(p_c), infer=PARALLEL)
        vitorch.sample("x", dist.Normal(a - c, 1.0), obs=x)
        vitorch.sample("y", dist.Normal(a + 0.5 * b, 1.0), obs=y)

    def guide(a_mark):
        a = vitorch.sample("a", dist.Bernoulli(q_a), infer={"enumerate": a_mark})
        vitorch.sample("b", dist.Categorical(q_b[a.long()]), infer=PARALLEL)

    terms = []
    q_b_rows = q_b / q_b.sum(-1, keepdim=True)
    for a, b in itertools.product(range(2), range(2)):
        log_q = torch.log(q_a if a else 1 - q_a) + q_b_rows[a, b].log()
        lik_x = torch.logsumexp(p_c.log() + Normal(a - torch.arange(2.0), 1.0).log_prob(x), 0)
        log_p = (
            math.log(0.5) + math.log((0.4, 0.6)[b]) + lik_x + Normal(a + 0.5 * b, 1.0).log_prob(y)
        )
        terms.append(log_q.exp() * (log_p - log_q))
    exact = -sum(terms)
    params = (q_a, q_b)
    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    loss = elbo.differentiable_loss(model, guide, "sequential")
    torch.testing.assert_close(loss, exact)
    got = torch.autograd.grad(loss, params)
    for g, e in zip(got, torch.autograd.grad(exact, params)):
        torch.testing.assert_close(g, e)
    # In parallel, x would depend on guide- and model-enumerated variables at once.
    with pytest.raises(NotImplementedError, match="'x'.*guide and in the model"):
        elbo.loss(model, guide, "parallel")


def test_model_marks_on_a_sequential_guide_site_replay_the_guide_value():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64)
    model, guide, exact = _tutorial(probs)
    loss = TraceEnum_ELBO(max_plate_nesting=0).loss(
        config_enumerate(model), config_enumerate(guide, "sequential")
    )
    assert loss == pytest.approx(exact.item(), rel=1e-12)


def test_unsupported_sequential_sites_are_refused_by_name():
    elbo = TraceEnum_ELBO(max_plate_nesting=1)

    def model():
        with vitorch.plate("data", 3):
            vitorch.sample("z", dist.Bernoulli(0.5))

    def plated_guide():
        with vitorch.plate("data", 3):
            vitorch.sample("z", dist.Bernoulli(0.3), infer=SEQUENTIAL)

    with pytest.raises(ValueError, match=r"'z'.*sequential.*batch_shape \(3,\)"):
        elbo.loss(model, plated_guide)

    def scalar_model():
        vitorch.sample("z", dist.Bernoulli(0.5))
        vitorch.sample("y", dist.Normal(0.0, 1.0))

    def child_of_parallel():
        z = vitorch.sample("z", dist.Bernoulli(0.3), infer=PARALLEL)
        vitorch.sample("y", dist.Bernoulli(0.2 + 0.5 * z), infer=SEQUENTIAL)

    with pytest.raises(ValueError, match=r"'y'.*batch_shape \(2, 1\)"):
        elbo.loss(scalar_model, child_of_parallel)

    def continuous_guide():
        vitorch.sample("z", dist.Bernoulli(0.3), infer=SEQUENTIAL)
        vitorch.sample("y", dist.Normal(0.0, 1.0), infer=SEQUENTIAL)

    with pytest.raises(ValueError, match="'y'.*Normal has no finite support"):
        elbo.loss(scalar_model, continuous_guide)

    def model_sequential():
        vitorch.sample("m", dist.Bernoulli(0.5), infer=SEQUENTIAL)

    with pytest.raises(NotImplementedError, match="model site 'm'.*sequential"):
        elbo.loss(model_sequential, _empty_guide)

    vectorized = TraceEnum_ELBO(max_plate_nesting=0, num_particles=2, vectorize_particles=True)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15])
    tut_model, tut_guide, _ = _tutorial(probs)
    with pytest.raises(ValueError, match=r"'z'.*batch_shape \(2,\).*vectorize_particles"):
        vectorized.loss(tut_model, config_enumerate(tut_guide, "sequential"))


def test_sequential_guide_enumeration_agrees_with_pyro():
    pyro = pytest.importorskip("pyro")
    q_a = torch.tensor(0.35, requires_grad=True)
    q_b = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], requires_grad=True)
    p_b = torch.tensor([[0.3, 0.3, 0.4], [0.1, 0.7, 0.2]])

    def model(P, D):
        a = P.sample("a", D.Bernoulli(0.4))
        b = P.sample("b", D.Categorical(p_b[a.long()]))
        c = P.sample("c", D.Bernoulli(0.3), infer=PARALLEL)
        P.sample("x", D.Normal(a + b - c, 1.0), obs=torch.tensor(1.7))

    def guide(P, D):
        a = P.sample("a", D.Bernoulli(q_a), infer=SEQUENTIAL)
        P.sample("b", D.Categorical(q_b[a.long()]), infer=SEQUENTIAL)

    ours = TraceEnum_ELBO(max_plate_nesting=0).differentiable_loss(model, guide, vitorch, dist)
    theirs = pyro.infer.TraceEnum_ELBO(max_plate_nesting=0).differentiable_loss(
        model, guide, pyro, pyro.distributions
    )
    torch.testing.assert_close(ours, theirs)
    for g, e in zip(torch.autograd.grad(ours, (q_a, q_b)), torch.autograd.grad(theirs, (q_a, q_b))):
        torch.testing.assert_close(g, e)
