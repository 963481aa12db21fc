"""``TraceGraph_ELBO`` against exact gradients, ``Trace_ELBO`` and Pyro.

Every gradient check compares the mean of many estimates with the exact gradient of the
ELBO, obtained by summing over the values of the discrete latents (and Gaussian
expectations in closed form), within a few standard errors estimated from the samples;
the standard errors are checked to be small too, so that bias cannot hide behind noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.distributions import constraints
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.elbo import ELBO
from vitorch.infer.tracegraph_elbo import (
    JitTraceGraph_ELBO,
    TraceGraph_ELBO,
    _downstream_sites,
)

Z = 4.0  # how many standard errors an estimate may be off
Normal = torch.distributions.Normal


def _grads(elbo, model, guide, names, calls, *args):
    """Gradients of ``differentiable_loss`` w.r.t. the unconstrained params, one row per call."""
    store = vitorch.get_param_store()
    rows = []
    for _ in range(calls):
        loss = elbo.differentiable_loss(model, guide, *args)
        params = [store.get_unconstrained(n) for n in names]
        gs = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows).double()


def _assert_unbiased(samples: torch.Tensor, exact: torch.Tensor, max_rel_se: float) -> None:
    exact = exact.detach().double().reshape(samples.shape[1:])
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert (se <= max_rel_se * exact.abs().clamp_min(1.0)).all(), (se, exact)
    assert ((mean - exact).abs() <= Z * se).all(), (mean, exact, se)


def _bernoulli_terms(u: torch.Tensor):
    """(q(z=0), q(z=1)) for a Bernoulli guide with logits ``u``."""
    q = torch.sigmoid(u)
    return 1 - q, q


# -- a discrete site after a big, noisy, unrelated term ---------------------------------
# log p(y) - log q(y) has a spread of tens of nats and does not depend on z: Trace_ELBO
# puts it in z's learning signal, TraceGraph_ELBO leaves it out.
P_Z, X_OBS, Q_INIT = 0.3, torch.tensor(0.5), 0.6


def noisy_model() -> None:
    vitorch.sample("y", dist.Normal(0.0, 0.3))
    z = vitorch.sample("z", dist.Bernoulli(P_Z))
    vitorch.sample("x", dist.Normal(3.0 * z - 1.0, 1.0), obs=X_OBS)


def noisy_guide() -> None:
    vitorch.sample("y", dist.Normal(0.0, 3.0))
    q = vitorch.param("q", torch.tensor(Q_INIT), constraint=constraints.unit_interval)
    vitorch.sample("z", dist.Bernoulli(q))


def _z_terms(z: float, qz: torch.Tensor) -> torch.Tensor:
    """log p(z) - log q(z) + log p(x | z) of the noisy and masked models."""
    pz = P_Z if z == 1.0 else 1 - P_Z
    return math.log(pz) - qz.log() + Normal(3.0 * z - 1.0, 1.0).log_prob(X_OBS)


def _noisy_exact_grad() -> torch.Tensor:
    # The y terms do not depend on q: only the expectation over z matters.
    u = torch.logit(torch.tensor(Q_INIT)).requires_grad_(True)
    q0, q1 = _bernoulli_terms(u)
    elbo = q0 * _z_terms(0.0, q0) + q1 * _z_terms(1.0, q1)
    (grad,) = torch.autograd.grad(-elbo, u)
    return grad


def test_unbiased_without_plates() -> None:
    elbo = TraceGraph_ELBO(num_particles=1000, vectorize_particles=True)
    grads = _grads(elbo, noisy_model, noisy_guide, ["q"], 20)
    _assert_unbiased(grads, _noisy_exact_grad(), max_rel_se=0.05)


def test_lower_variance_than_trace_elbo_with_upstream_noise() -> None:
    variances = {}
    for cls in (Trace_ELBO, TraceGraph_ELBO):
        grads = _grads(
            cls(num_particles=50, vectorize_particles=True), noisy_model, noisy_guide, ["q"], 100
        )
        variances[cls] = grads.var(0).item()
    ratio = variances[Trace_ELBO] / variances[TraceGraph_ELBO]
    # Thousands in practice; 10 leaves room for the noise of the variance estimates.
    assert ratio >= 10.0, variances


def test_masked_discrete_site_keeps_its_influence() -> None:
    # A masked guide site drops its own log q from the ELBO, not its effect on the
    # sites after it: the objective is E_q[log p(x | z)], whose gradient the score of
    # the (unmasked) sampling distribution times log p(x | z) estimates.
    def model() -> None:
        with handlers.mask(mask=False):
            z = vitorch.sample("z", dist.Bernoulli(P_Z))
        vitorch.sample("x", dist.Normal(3.0 * z - 1.0, 1.0), obs=X_OBS)

    def guide() -> None:
        q = vitorch.param("q", torch.tensor(Q_INIT), constraint=constraints.unit_interval)
        with handlers.mask(mask=False):
            vitorch.sample("z", dist.Bernoulli(q))

    u = torch.logit(torch.tensor(Q_INIT)).requires_grad_(True)
    q0, q1 = _bernoulli_terms(u)
    log_lik = Normal(torch.tensor([-1.0, 2.0]), 1.0).log_prob(X_OBS)
    (exact,) = torch.autograd.grad(-(q0 * log_lik[0] + q1 * log_lik[1]), u)
    elbo = TraceGraph_ELBO(num_particles=1000, vectorize_particles=True)
    grads = _grads(elbo, model, guide, ["q"], 20)
    _assert_unbiased(grads, exact, max_rel_se=0.05)


# -- a global discrete latent before a vectorized plate of local ones -------------------
N_LOC = 4
X_LOC = torch.tensor([-1.5, -0.2, 0.4, 2.1])
Q_LOC = torch.tensor([0.1, 0.4, 0.6, 0.9])
P_G, QG_INIT = 0.4, 0.6


def plate_model() -> None:
    g = vitorch.sample("g", dist.Bernoulli(P_G))
    with vitorch.plate("data", N_LOC):
        z = vitorch.sample("z", dist.Bernoulli(P_Z))
        vitorch.sample("x", dist.Normal(3.0 * z - 1.0 + g, 1.0), obs=X_LOC)


def plate_guide() -> None:
    qg = vitorch.param("qg", torch.tensor(QG_INIT), constraint=constraints.unit_interval)
    vitorch.sample("g", dist.Bernoulli(qg))
    with vitorch.plate("data", N_LOC):
        q = vitorch.param("q", Q_LOC, constraint=constraints.unit_interval, event_dim=0)
        vitorch.sample("z", dist.Bernoulli(q))


def _plate_exact_grad() -> torch.Tensor:
    ug = torch.logit(torch.tensor(QG_INIT)).requires_grad_(True)
    u = torch.logit(Q_LOC).requires_grad_(True)
    qg = _bernoulli_terms(ug)
    qz = _bernoulli_terms(u)
    elbo = 0.0
    for g in (0, 1):
        local = 0.0
        for z in (0, 1):
            pz = P_Z if z == 1 else 1 - P_Z
            log_lik = Normal(3.0 * z - 1.0 + g, 1.0).log_prob(X_LOC)
            local = local + qz[z] * (math.log(pz) - qz[z].log() + log_lik)
        pg = P_G if g == 1 else 1 - P_G
        elbo = elbo + qg[g] * (math.log(pg) - qg[g].log() + local.sum())
    gg, gu = torch.autograd.grad(-elbo, (ug, u))
    return torch.cat([gg.reshape(1), gu])


def test_unbiased_with_a_vectorized_plate() -> None:
    elbo = TraceGraph_ELBO(num_particles=1000, vectorize_particles=True)
    grads = _grads(elbo, plate_model, plate_guide, ["qg", "q"], 30)
    _assert_unbiased(grads, _plate_exact_grad(), max_rel_se=0.05)


# -- the guide samples in another order than the model -----------------------------------
# The model draws z before y, and y's density depends on z; the guide draws y first.
# z's cost must include the model's log p(y | z), which follows z only in the model.
S_Y, M_INIT = 0.8, 0.4


def order_model() -> None:
    z = vitorch.sample("z", dist.Bernoulli(0.5))
    y = vitorch.sample("y", dist.Normal(2.0 * z, 1.0))
    vitorch.sample("x", dist.Normal(y, 1.0), obs=torch.tensor(1.0))


def order_guide() -> None:
    m = vitorch.param("m", torch.tensor(M_INIT))
    vitorch.sample("y", dist.Normal(m, S_Y))
    q = vitorch.param("q", torch.tensor(Q_INIT), constraint=constraints.unit_interval)
    vitorch.sample("z", dist.Bernoulli(q))


def test_model_sites_after_z_in_the_model_count() -> None:
    guide_trace, model_trace = ELBO._trace_pair(order_model, order_guide, (), {})
    assert _downstream_sites(model_trace, guide_trace, ["z"]) == {"z": (["z"], ["y", "x"])}

    u = torch.logit(torch.tensor(Q_INIT)).requires_grad_(True)
    m = torch.tensor(M_INIT, requires_grad=True)
    qz = _bernoulli_terms(u)

    def e_log_normal(mean: Any, obs_or_loc: Any) -> torch.Tensor:
        # E over y ~ N(m, S_Y) of log N(.) with squared distance (m - c)^2 + S_Y^2.
        return -0.5 * math.log(2 * math.pi) - ((mean - obs_or_loc) ** 2 + S_Y**2) / 2

    entropy_y = 0.5 * math.log(2 * math.pi * math.e * S_Y**2)
    elbo = e_log_normal(m, 1.0) + entropy_y
    for z in (0, 1):
        elbo = elbo + qz[z] * (math.log(0.5) - qz[z].log() + e_log_normal(m, 2.0 * z))
    gu, gm = torch.autograd.grad(-elbo, (u, m))
    elbo_est = TraceGraph_ELBO(num_particles=1000, vectorize_particles=True)
    grads = _grads(elbo_est, order_model, order_guide, ["m", "q"], 30)
    _assert_unbiased(grads, torch.stack([gm, gu]), max_rel_se=0.05)


# -- sequential plates: items of different iterations are independent --------------------
N_SEQ = 6
X_SEQ = torch.tensor([-1.5, -0.2, 0.4, 2.1, 1.0, -0.8])
Q_SEQ = torch.tensor([0.1, 0.3, 0.5, 0.6, 0.8, 0.9])


def seq_model() -> None:
    for i in vitorch.plate("seq", N_SEQ):
        z = vitorch.sample(f"z{i}", dist.Bernoulli(P_Z))
        vitorch.sample(f"x{i}", dist.Normal(3.0 * z - 1.0, 1.0), obs=X_SEQ[i])


def seq_guide() -> None:
    q = vitorch.param("q", Q_SEQ, constraint=constraints.unit_interval)
    for i in vitorch.plate("seq", N_SEQ):
        vitorch.sample(f"z{i}", dist.Bernoulli(q[i]))


def _seq_exact_grad() -> torch.Tensor:
    u = torch.logit(Q_SEQ).requires_grad_(True)
    qz = _bernoulli_terms(u)
    elbo = 0.0
    for z in (0, 1):
        pz = P_Z if z == 1 else 1 - P_Z
        log_lik = Normal(3.0 * z - 1.0, 1.0).log_prob(X_SEQ)
        elbo = elbo + qz[z] * (math.log(pz) - qz[z].log() + log_lik)
    (grad,) = torch.autograd.grad(-elbo.sum(), u)
    return grad


def test_sequential_plate_dependency_structure() -> None:
    def model() -> None:
        for i in vitorch.plate("seq", 2):
            z = vitorch.sample(f"z{i}", dist.Bernoulli(0.5))
            vitorch.sample(f"x{i}", dist.Normal(z, 1.0), obs=torch.tensor(0.0))
        vitorch.sample("g", dist.Normal(0.0, 1.0))
        vitorch.sample("w", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    def guide() -> None:
        for i in vitorch.plate("seq", 2):
            vitorch.sample(f"z{i}", dist.Bernoulli(0.5))
        vitorch.sample("g", dist.Normal(0.0, 1.0))

    guide_trace, model_trace = ELBO._trace_pair(model, guide, (), {})
    # z1 and x1 are in another iteration than z0; g follows the loop, so it and w
    # (which follows g) may depend on z0.
    assert _downstream_sites(model_trace, guide_trace, ["z0", "z1"]) == {
        "z0": (["z0", "g"], ["x0", "w"]),
        "z1": (["z1", "g"], ["x1", "w"]),
    }


def test_sequential_plate_unbiased_and_lower_variance() -> None:
    exact = _seq_exact_grad()
    grads = {}
    for cls in (Trace_ELBO, TraceGraph_ELBO):
        grads[cls] = _grads(
            cls(num_particles=200, vectorize_particles=True), seq_model, seq_guide, ["q"], 40
        )
    _assert_unbiased(grads[TraceGraph_ELBO], exact, max_rel_se=0.05)
    # Trace_ELBO gives each z_i the costs of all N_SEQ items, TraceGraph_ELBO its own.
    ratio = grads[Trace_ELBO].var(0) / grads[TraceGraph_ELBO].var(0)
    assert (ratio >= 2.0).all(), ratio


# -- baselines ---------------------------------------------------------------------------
# A large constant in every cost (a factor after the plate) is pure noise for the score
# function estimator; a baseline that learns it removes that noise.
OFFSET = -30.0


def offset_model(kind: str = "none", module=None) -> None:
    with vitorch.plate("data", N_LOC):
        z = vitorch.sample("z", dist.Bernoulli(P_Z))
        vitorch.sample("x", dist.Normal(3.0 * z - 1.0, 1.0), obs=X_LOC)
    vitorch.factor("offset", torch.tensor(OFFSET))


class PerItemBaseline(torch.nn.Module):
    """One weight per item: with one-hot inputs, output i is weight i."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(N_LOC, 1, bias=False)
        torch.nn.init.zeros_(self.lin.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).squeeze(-1)


def offset_guide(kind: str = "none", module=None) -> None:
    if kind == "nn":
        vitorch.module("baseline_net", module)
        baseline = {"nn_baseline": module, "nn_baseline_input": torch.eye(N_LOC)}
    elif kind == "value":
        b = vitorch.param("b", torch.zeros(N_LOC))
        baseline = {"baseline_value": b}
    elif kind == "avg":
        baseline = {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}
    else:
        baseline = None
    with vitorch.plate("data", N_LOC):
        q = vitorch.param("q", Q_LOC, constraint=constraints.unit_interval, event_dim=0)
        infer = {} if baseline is None else {"baseline": baseline}
        vitorch.sample("z", dist.Bernoulli(q), infer=infer)


def _offset_costs() -> list[torch.Tensor]:
    """Each item's downstream cost when its z is 0, and when it is 1 (guide at Q_LOC)."""
    costs = []
    for z in (0, 1):
        qz = Q_LOC if z == 1 else 1 - Q_LOC
        pz = P_Z if z == 1 else 1 - P_Z
        log_lik = Normal(3.0 * z - 1.0, 1.0).log_prob(X_LOC)
        costs.append(math.log(pz) - qz.log() + log_lik + OFFSET)
    return costs


def _offset_cost_moments() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of each item's downstream cost under the guide at Q_LOC."""
    costs = _offset_costs()
    probs = [1 - Q_LOC, Q_LOC]
    mean = probs[0] * costs[0] + probs[1] * costs[1]
    var = probs[0] * (costs[0] - mean) ** 2 + probs[1] * (costs[1] - mean) ** 2
    return mean, var


def _offset_exact_grad() -> torch.Tensor:
    # The offset is a constant of the ELBO: the gradient is that of the plate model
    # without the global latent.
    u = torch.logit(Q_LOC).requires_grad_(True)
    qz = _bernoulli_terms(u)
    elbo = 0.0
    for z in (0, 1):
        pz = P_Z if z == 1 else 1 - P_Z
        log_lik = Normal(3.0 * z - 1.0, 1.0).log_prob(X_LOC)
        elbo = elbo + qz[z] * (math.log(pz) - qz[z].log() + log_lik)
    (grad,) = torch.autograd.grad(-elbo.sum(), u)
    return grad


def test_decaying_average_baseline() -> None:
    exact = _offset_exact_grad()
    particles, warmup, calls = 100, 60, 100
    plain = TraceGraph_ELBO(num_particles=particles, vectorize_particles=True)
    no_baseline = _grads(plain, offset_model, offset_guide, ["q"], calls, "none")
    elbo = TraceGraph_ELBO(num_particles=particles, vectorize_particles=True)
    # The baseline is the average of earlier steps only, so even the first steps are
    # unbiased; the warm-up is dropped for the variance comparison.
    with_baseline = _grads(elbo, offset_model, offset_guide, ["q"], warmup + calls, "avg")
    _assert_unbiased(with_baseline, exact, max_rel_se=0.05)
    ratio = no_baseline.var(0) / with_baseline[warmup:].var(0)
    assert (ratio >= 10.0).all(), ratio
    # The running average, one per particle and item, settles at the expected cost: an
    # exponential average with weight a = 0.1 has variance a / (2 - a) times the cost's.
    mean, var = _offset_cost_moments()
    average = elbo.baseline_averages["z"]
    assert average.shape == (particles, N_LOC)
    se = (var * 0.1 / 1.9 / particles).sqrt()
    assert ((average.mean(0) - mean).abs() <= Z * se).all(), (average.mean(0), mean, se)


def test_value_only_evaluations_leave_the_average_alone() -> None:
    elbo = TraceGraph_ELBO()
    elbo.loss(offset_model, offset_guide, "avg")
    assert elbo.baseline_averages == {}
    elbo.differentiable_loss(offset_model, offset_guide, "avg")
    assert set(elbo.baseline_averages) == {"z"}


@pytest.mark.parametrize("kind", ["nn", "value"])
def test_learned_baseline_regresses_the_cost_and_is_unbiased(kind: str) -> None:
    module = PerItemBaseline() if kind == "nn" else None
    name = "baseline_net$$$lin.weight" if kind == "nn" else "b"
    # Only the baseline learns (q's learning rate is 0). With plain SGD at rate 0.05 the
    # loss (b - cost)^2 moves b by 0.1 * (cost - b): b is an exponential average of the
    # costs drawn, whose mean and spread are known exactly.
    optim = vitorch.optim.SGD(lambda param_name: {"lr": 0.0 if param_name == "q" else 0.05})
    svi = SVI(offset_model, offset_guide, optim, TraceGraph_ELBO())
    svi.step(kind, module)
    store = vitorch.get_param_store()
    # One step from b = 0 gives b = 0.1 * cost, and each item's cost is one of two values.
    first = store.get_unconstrained(name).detach().reshape(-1) / 0.1
    costs = _offset_costs()
    hits = [torch.isclose(first, c, rtol=1e-5, atol=1e-5) for c in costs]
    assert (hits[0] | hits[1]).all(), (first, costs)
    for _ in range(300):
        svi.step(kind, module)
    learned = store.get_unconstrained(name).detach().reshape(-1)
    mean, var = _offset_cost_moments()
    sd = (var * 0.1 / 1.9).sqrt()
    assert ((learned - mean).abs() <= Z * sd).all(), (learned, mean, sd)
    if kind == "nn":
        # The store holds the module's own tensor: SVI trained the module.
        assert torch.equal(module.lin.weight.detach().reshape(-1), learned)

    # With the learned baseline the gradient stays unbiased, with far less noise.
    exact = _offset_exact_grad()
    grads = {}
    for k in ("none", kind):
        elbo = TraceGraph_ELBO(num_particles=100, vectorize_particles=True)
        grads[k] = _grads(elbo, offset_model, offset_guide, ["q"], 60, k, module)
    _assert_unbiased(grads[kind], exact, max_rel_se=0.05)
    ratio = grads["none"].var(0) / grads[kind].var(0)
    assert (ratio >= 10.0).all(), ratio


# -- the value, and models without score-function terms ----------------------------------
@pytest.mark.parametrize(
    "model, guide, args",
    [
        (noisy_model, noisy_guide, ()),
        (plate_model, plate_guide, ()),
        (seq_model, seq_guide, ()),
        (offset_model, offset_guide, ("avg",)),
    ],
)
@pytest.mark.parametrize("vectorize", [False, True])
def test_loss_value_equals_trace_elbo(model, guide, args, vectorize: bool) -> None:
    for seed in range(3):
        values = []
        for cls in (Trace_ELBO, TraceGraph_ELBO):
            vitorch.set_rng_seed(seed)
            # An explicit nesting: guessing it would run the model once more, drawing.
            elbo = cls(num_particles=3, vectorize_particles=vectorize, max_plate_nesting=1)
            values.append(elbo.loss_and_grads(model, guide, *args))
            vitorch.set_rng_seed(seed)
            values.append(elbo.loss(model, guide, *args))
            vitorch.set_rng_seed(seed)
            values.append(float(elbo.differentiable_loss(model, guide, *args).detach()))
        assert values[:3] == values[3:], values
        assert values[0] == values[1] == values[2]


def reparam_model(data: torch.Tensor) -> None:
    z = vitorch.sample("z", dist.Normal(0.5, 2.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("x", dist.Normal(z, 1.3), obs=data)


def reparam_guide(data: torch.Tensor) -> None:
    loc = vitorch.param("loc", torch.tensor(1.0))
    scale = vitorch.param("scale", torch.tensor(0.4), constraint=constraints.positive)
    vitorch.sample("z", dist.Normal(loc, scale))


@pytest.mark.parametrize("vectorize", [False, True])
def test_reparameterized_gradient_equals_trace_elbo(vectorize: bool) -> None:
    data = torch.tensor([1.2, 0.3, 2.5, 1.9])
    store = vitorch.get_param_store()
    results = []
    for cls in (Trace_ELBO, TraceGraph_ELBO):
        vitorch.set_rng_seed(5)
        elbo = cls(num_particles=4, vectorize_particles=vectorize)
        loss = elbo.differentiable_loss(reparam_model, reparam_guide, data)
        params = [store.get_unconstrained(n) for n in ("loc", "scale")]
        results.append((float(loss.detach()), torch.autograd.grad(loss, params)))
    (value_a, grads_a), (value_b, grads_b) = results
    assert value_a == value_b
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))


def test_jit_alias() -> None:
    assert JitTraceGraph_ELBO is TraceGraph_ELBO


# -- errors ------------------------------------------------------------------------------
def _guide_with(baseline: Any) -> Callable[[], None]:
    def guide() -> None:
        q = vitorch.param("q", torch.tensor(Q_INIT), constraint=constraints.unit_interval)
        vitorch.sample("z", dist.Bernoulli(q), infer={"baseline": baseline})

    return guide


def _model() -> None:
    z = vitorch.sample("z", dist.Bernoulli(P_Z))
    vitorch.sample("x", dist.Normal(3.0 * z - 1.0, 1.0), obs=X_OBS)


@pytest.mark.parametrize(
    "baseline, error, match",
    [
        ({"use_decaying_avg": True}, ValueError, r"'z'.*unknown baseline option.*use_decaying_avg"),
        (
            {
                "nn_baseline": torch.nn.Identity(),
                "nn_baseline_input": torch.zeros(()),
                "baseline_value": torch.zeros(()),
            },
            ValueError,
            r"'z'.*'nn_baseline' and 'baseline_value'",
        ),
        ({"nn_baseline": torch.nn.Identity()}, ValueError, r"'z'.*needs 'nn_baseline_input'"),
        ({"nn_baseline_input": torch.zeros(())}, ValueError, r"'z'.*without 'nn_baseline'"),
        ({"nn_baseline": 3.0, "nn_baseline_input": torch.zeros(())}, TypeError, r"'z'.*callable"),
        ({"use_decaying_avg_baseline": True, "baseline_beta": 1.5}, ValueError, r"'z'.*\[0, 1\]"),
        ({"use_decaying_avg_baseline": "yes"}, TypeError, r"'z'.*bool"),
        ({"baseline_value": "zero"}, TypeError, r"'z'.*'baseline_value' must be a tensor"),
        ([("baseline_value", 0.0)], TypeError, r"'z'.*must be a dict"),
        ({"baseline_value": torch.zeros(3)}, ValueError, r"'z'.*shape \(3,\).*shape \(\)"),
    ],
)
def test_bad_baseline_options(baseline, error, match: str) -> None:
    with pytest.raises(error, match=match):
        TraceGraph_ELBO().differentiable_loss(_model, _guide_with(baseline))


def test_decaying_average_shape_change() -> None:
    guide = _guide_with({"use_decaying_avg_baseline": True})
    elbo = TraceGraph_ELBO()
    elbo.differentiable_loss(_model, guide)
    elbo.num_particles, elbo.vectorize_particles = 3, True
    with pytest.raises(ValueError, match=r"'z'.*shape \(\).*shape \(3,\)"):
        elbo.differentiable_loss(_model, guide)


def test_non_finite_step_leaves_the_average_alone() -> None:
    def model(x: torch.Tensor) -> None:
        z = vitorch.sample("z", dist.Bernoulli(P_Z))
        vitorch.sample("x", dist.Normal(3.0 * z - 1.0, 1.0), obs=x)

    guide = _guide_with({"use_decaying_avg_baseline": True})
    elbo = TraceGraph_ELBO()
    elbo.differentiable_loss(model, lambda x: guide(), X_OBS)
    before = elbo.baseline_averages["z"].clone()
    with pytest.raises(ValueError, match="not finite"):
        elbo.differentiable_loss(model, lambda x: guide(), torch.tensor(math.inf))
    assert torch.equal(elbo.baseline_averages["z"], before)


# -- Pyro ----------------------------------------------------------------------------------
def _xcheck_pair(p, d, constraints_module):
    """A model where each discrete site's downstream sites are the ones that read its
    value, so that Pyro's provenance tracking and the dense graph agree."""

    def model() -> None:
        y = p.sample("y", d.Normal(0.0, 0.5))
        with p.plate("data", N_LOC):
            z = p.sample("z", d.Bernoulli(P_Z))
            p.sample("x", d.Normal(3.0 * z - 1.0 + y, 1.0), obs=X_LOC)

    def guide() -> None:
        m = p.param("m", torch.tensor(0.2))
        p.sample("y", d.Normal(m, 1.0))
        with p.plate("data", N_LOC):
            q = p.param("q", Q_LOC, constraint=constraints_module.unit_interval, event_dim=0)
            p.sample(
                "z",
                d.Bernoulli(q),
                infer={"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.8}},
            )

    return model, guide


def test_matches_pyro() -> None:
    pyro = pytest.importorskip("pyro")
    pdist = pytest.importorskip("pyro.distributions")
    pyro.clear_param_store()
    try:
        p_model, p_guide = _xcheck_pair(pyro, pdist, pdist.constraints)
        v_model, v_guide = _xcheck_pair(vitorch, dist, constraints)
        p_elbo = pyro.infer.TraceGraph_ELBO(
            num_particles=3, vectorize_particles=True, max_plate_nesting=1
        )
        v_elbo = TraceGraph_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
        v_store = vitorch.get_param_store()
        # Several steps: from the second on, the running-average baseline matters.
        for step in range(4):
            torch.manual_seed(100 + step)
            p_loss = p_elbo.loss_and_grads(p_model, p_guide)
            torch.manual_seed(100 + step)
            v_loss = v_elbo.loss_and_grads(v_model, v_guide)
            assert v_loss == pytest.approx(p_loss, rel=1e-6)
            for name in ("m", "q"):
                p_param = pyro.get_param_store().get_param(name).unconstrained()
                v_param = v_store.get_unconstrained(name)
                torch.testing.assert_close(v_param.grad, p_param.grad, rtol=1e-5, atol=1e-5)
                p_param.grad = None
                v_param.grad = None
    finally:
        pyro.clear_param_store()
