"""``TraceTMC_ELBO`` and ``num_samples`` draws in the ``enum`` handler, against exact answers.

With exhaustive enumeration the estimate is the exact log marginal likelihood. With draws
it is compared with the tensor Monte Carlo formula written out by hand over the very
draws the run made (read back from the model or guide), gradients with autograd of that
hand-written estimate (DiCE factors included where draws are not reparameterized).
"""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.handlers.enum import enum
from vitorch.infer.traceenum_elbo import TraceEnum_ELBO, config_enumerate
from vitorch.infer.tracetmc_elbo import TraceTMC_ELBO

Normal = torch.distributions.Normal
PARALLEL = {"enumerate": "parallel"}
DATA = torch.tensor([-2.1, -1.7, 0.2, 0.4, 2.8, 3.3, 2.9], dtype=torch.float64)


def _no_guide(*args, **kwargs):
    pass


def test_exhaustive_enumeration_gives_the_exact_marginal():
    # The GMM with global weights: TMC over supports is exact (log p counted once).
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    locs = torch.tensor([-2.0, 0.3, 3.0], dtype=torch.float64)

    def model():
        with vitorch.plate("data", len(DATA)):
            z = vitorch.sample("z", dist.Categorical(weights), infer=PARALLEL)
            vitorch.sample("x", dist.Normal(locs[z], 1.0), obs=DATA)

    exact = torch.logsumexp(weights.log()[:, None] + Normal(locs[:, None], 1.0).log_prob(DATA), 0)
    loss = TraceTMC_ELBO(max_plate_nesting=1).loss(model, _no_guide)
    assert loss == pytest.approx(-exact.sum().item(), rel=1e-9)


def test_sampled_global_discrete_site_is_the_average_over_its_draws():
    # z takes n draws from its prior: estimate log (1/n) sum_i prod_j p(x_j | z_i), and
    # its gradient in the prior's logits is the DiCE (score-function) one.
    torch.manual_seed(0)
    n = 6
    logits = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    locs = torch.tensor([-2.0, 0.3, 3.0], dtype=torch.float64, requires_grad=True)
    seen = {}

    def model():
        z = vitorch.sample("z", dist.Categorical(logits=logits))
        seen["z"] = z
        with vitorch.plate("data", len(DATA)):
            vitorch.sample("x", dist.Normal(locs[z], 1.0), obs=DATA)

    tmc_model = config_enumerate(model, num_samples=n)
    loss = TraceTMC_ELBO(max_plate_nesting=1).differentiable_loss(tmc_model, _no_guide)
    z = seen["z"].reshape(-1)
    assert z.shape == (n,)
    log_prior = logits.log_softmax(0)[z]
    lik = Normal(locs[z][:, None], 1.0).log_prob(DATA).sum(-1)
    dice = log_prior - log_prior.detach()
    estimate = torch.logsumexp(dice + lik, 0) - math.log(n)
    torch.testing.assert_close(loss, -estimate)
    params = (logits, locs)
    for a, b in zip(
        torch.autograd.grad(loss, params, retain_graph=True), torch.autograd.grad(-estimate, params)
    ):
        torch.testing.assert_close(a, b)


def test_sampled_local_sites_of_a_chain_use_every_combination_of_draws():
    # Per item: u_i ~ N(0, 1) (n draws), v_i ~ N(u_i, 1) (n draws, draw k given u's draw
    # k), x_i ~ N(v_i, 0.5). Draws from the prior have p / q = 1 (for every pair of draws,
    # as in Pyro), so TMC is log (1/n^2) sum_{k,l} p(x | v_l) = log (1/n) sum_l p(x | v_l).
    torch.manual_seed(1)
    n = 5
    x = DATA[:4]
    seen = {}

    def model():
        with vitorch.plate("items", len(x)):
            u = vitorch.sample("u", dist.Normal(torch.zeros((), dtype=torch.float64), 1.0))
            v = vitorch.sample("v", dist.Normal(u, 1.0))
            seen["u"], seen["v"] = u, v
            vitorch.sample("x", dist.Normal(v, 0.5), obs=x)

    loss = TraceTMC_ELBO(max_plate_nesting=1).loss(
        config_enumerate(model, num_samples=n), _no_guide
    )
    u, v = seen["u"], seen["v"]
    assert u.shape == (n, len(x)) and v.shape == (n, 1, len(x))
    u, v = u.reshape(n, len(x)), v.reshape(n, len(x))
    per_item = torch.logsumexp(Normal(v, 0.5).log_prob(x), 0) - math.log(n)
    assert loss == pytest.approx(-per_item.sum().item(), rel=1e-9)
    # Draw k of v was made from draw k of u ("diagonal"): same noise would give v = u + eps.
    assert not torch.equal(u, v)


def test_guide_draws_are_importance_weighted():
    # Guide z ~ N(m, s) with n reparameterized draws: log (1/n) sum_i p(z_i) p(x | z_i) / q(z_i).
    torch.manual_seed(2)
    n = 8
    m = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    seen = {}

    def model():
        z = vitorch.sample("z", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        with vitorch.plate("data", len(DATA)):
            vitorch.sample("x", dist.Normal(z, 2.0), obs=DATA)

    def guide():
        seen["z"] = vitorch.sample(
            "z", dist.Normal(m, s), infer={"enumerate": "parallel", "num_samples": n}
        )

    loss = TraceTMC_ELBO(max_plate_nesting=1).differentiable_loss(model, guide)
    z = seen["z"].reshape(-1)
    assert z.shape == (n,)
    log_w = (
        Normal(0.0, 1.0).log_prob(z)
        + Normal(z[:, None], 2.0).log_prob(DATA).sum(-1)
        - Normal(m, s).log_prob(z)
    )
    estimate = torch.logsumexp(log_w, 0) - math.log(n)
    torch.testing.assert_close(loss, -estimate)
    for a, b in zip(
        torch.autograd.grad(loss, (m, s), retain_graph=True), torch.autograd.grad(-estimate, (m, s))
    ):
        torch.testing.assert_close(a, b)


def test_many_draws_approach_the_exact_marginal():
    # z ~ N(0, 1), x ~ N(z, 1): p(x) = N(x; 0, sqrt 2). 20000 draws: within 0.02.
    torch.manual_seed(3)

    def model():
        z = vitorch.sample("z", dist.Normal(0.0, 1.0))
        vitorch.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(1.5))

    loss = TraceTMC_ELBO(max_plate_nesting=0).loss(
        config_enumerate(model, num_samples=20000), _no_guide
    )
    exact = -Normal(0.0, math.sqrt(2.0)).log_prob(torch.tensor(1.5)).item()
    assert loss == pytest.approx(exact, abs=0.02)


def test_masked_sampled_site_averages_to_one():
    # Masked items: their draws' factors are off, the 1/n average of ones is one.
    torch.manual_seed(4)
    mask = torch.tensor([True, False, True])
    x = DATA[:3]
    seen = {}

    def model():
        with vitorch.plate("items", 3), handlers.mask(mask=mask):
            z = vitorch.sample(
                "z",
                dist.Bernoulli(torch.tensor(0.4, dtype=torch.float64)),
                infer={**PARALLEL, "num_samples": 4},
            )
            seen["z"] = z
            vitorch.sample("x", dist.Normal(3 * z, 1.0), obs=x)

    loss = TraceTMC_ELBO(max_plate_nesting=1).loss(model, _no_guide)
    z = seen["z"].reshape(4, 3)
    per_item = torch.logsumexp(Normal(3 * z, 1.0).log_prob(x), 0) - math.log(4)
    assert loss == pytest.approx(-per_item[mask].sum().item(), rel=1e-9)


def test_enum_handler_lays_out_draws_like_a_support():
    def model():
        with vitorch.plate("p", 4):
            a = vitorch.sample("a", dist.Normal(0.0, 1.0), infer={**PARALLEL, "num_samples": 3})
            b = vitorch.sample(
                "b", dist.Normal(a, 1.0), infer={**PARALLEL, "num_samples": 3, "expand": True}
            )
            c = vitorch.sample("c", dist.Normal(a, 1e-9), infer={**PARALLEL, "num_samples": 3})
            mix = {**PARALLEL, "num_samples": 5, "tmc": "mixture"}
            d = vitorch.sample("d", dist.Normal(a, 1e-9), infer=mix)
        return a, b, c, d

    torch.manual_seed(5)
    a, b, c, d = enum(model, first_available_dim=-2)()
    assert a.shape == (3, 4)
    assert b.shape == (3, 3, 4)  # expand: every draw of a gets 3 draws
    assert c.shape == (3, 1, 1, 4)  # diagonal: draw k follows draw k of a, no dim of a
    torch.testing.assert_close(c.reshape(3, 4), a, atol=1e-6, rtol=0)
    # mixture: each draw follows a draw of a picked at random (per draw, for all items)
    d = d.reshape(5, 4)
    picks = [int((a - d[k]).abs().sum(-1).argmin()) for k in range(5)]
    torch.testing.assert_close(d, a[picks], atol=1e-6, rtol=0)

    def bad(n=0, tmc="diagonal"):
        vitorch.sample("z", dist.Normal(0.0, 1.0), infer={**PARALLEL, "num_samples": n, "tmc": tmc})

    with pytest.raises(ValueError, match=r"'z'.*num_samples'\] must be a positive int, got 0"):
        enum(bad, first_available_dim=-1)()
    with pytest.raises(ValueError, match=r"'z'.*tmc'\] must be 'diagonal' or 'mixture'"):
        enum(bad, first_available_dim=-1)(2, "x")


def test_traceenum_elbo_refuses_draws():
    def model():
        vitorch.sample("z", dist.Bernoulli(0.5), infer={**PARALLEL, "num_samples": 3})

    with pytest.raises(NotImplementedError, match="'z'.*num_samples.*TraceTMC_ELBO"):
        TraceEnum_ELBO(max_plate_nesting=0).loss(model, _no_guide)


def test_guide_enumerated_support_agrees_with_pyro():
    pyro = pytest.importorskip("pyro")
    x = DATA.float()
    pi, locs = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([-2.0, 0.3, 3.0])

    def model(P, D):
        with P.plate("data", len(x)):
            z = P.sample("z", D.Categorical(pi))
            P.sample("x", D.Normal(locs[z], 1.0), obs=x)

    def guide(P, D):
        with P.plate("data", len(x)):
            P.sample("z", D.Categorical(torch.ones(3) / 3), infer=PARALLEL)

    ours = TraceTMC_ELBO(max_plate_nesting=1).loss(model, guide, vitorch, dist)
    theirs = pyro.infer.TraceTMC_ELBO(max_plate_nesting=1).loss(
        model, guide, pyro, pyro.distributions
    )
    exact = -torch.logsumexp(pi.log()[:, None] + Normal(locs[:, None], 1.0).log_prob(x), 0).sum()
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert ours == pytest.approx(exact.item(), rel=1e-5)
