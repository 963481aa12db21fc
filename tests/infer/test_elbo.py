"""The ELBO estimators against closed forms.

Every check compares a Monte Carlo estimate with an exact value (a closed-form Gaussian
ELBO, or a sum over the values of a discrete latent) within a few standard errors that are
themselves estimated from the samples; the standard errors are also checked to be small,
so that a biased estimator cannot hide behind a noisy one.
"""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.distributions import constraints
from vitorch.infer import Trace_ELBO, TraceMeanField_ELBO

ELBOS = [Trace_ELBO, TraceMeanField_ELBO]
Z = 4.0  # how many standard errors an estimate may be off

# -- a conjugate Normal-Normal model with a Normal guide --------------------------------
MU0, S0, SIGMA = 0.5, 2.0, 1.3


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return 1.7 + SIGMA * torch.randn(50, generator=g)


def nn_model(data: torch.Tensor) -> None:
    z = vitorch.sample("z", dist.Normal(MU0, S0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("x", dist.Normal(z, SIGMA), obs=data)


def nn_guide(data: torch.Tensor) -> None:
    loc = vitorch.param("loc", torch.tensor(1.0))
    scale = vitorch.param("scale", torch.tensor(0.4), constraint=constraints.positive)
    vitorch.sample("z", dist.Normal(loc, scale))


def nn_elbo_closed_form(m: torch.Tensor, s: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """E_q[log p(z) + sum_i log p(x_i | z)] + H[q] for q = Normal(m, s), written out."""
    n = len(data)
    e_log_prior = -0.5 * math.log(2 * math.pi * S0**2) - ((m - MU0) ** 2 + s**2) / (2 * S0**2)
    e_log_lik = -0.5 * n * math.log(2 * math.pi * SIGMA**2) - (
        ((data - m) ** 2).sum() + n * s**2
    ) / (2 * SIGMA**2)
    entropy = 0.5 * torch.log(2 * math.pi * math.e * s**2)
    return e_log_prior + e_log_lik + entropy


def _exact_nn_grads(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Gradient of the loss (-ELBO) with respect to loc and the unconstrained log-scale."""
    m = torch.tensor(1.0, requires_grad=True)
    u = torch.tensor(math.log(0.4), requires_grad=True)
    loss = -nn_elbo_closed_form(m, u.exp(), data)
    gm, gu = torch.autograd.grad(loss, (m, u))
    return gm, gu, float(loss.detach())


def _mc_grads(elbo, model, guide, names, batches, *args):
    """Per-batch gradients (batches x params) and loss values of ``differentiable_loss``."""
    store = vitorch.get_param_store()
    grads, losses = [], []
    for _ in range(batches):
        loss = elbo.differentiable_loss(model, guide, *args)
        params = [store.get_unconstrained(n) for n in names]
        gs = torch.autograd.grad(loss, params)
        grads.append(torch.cat([g.reshape(-1) for g in gs]))
        losses.append(float(loss.detach()))
    return torch.stack(grads), torch.tensor(losses, dtype=torch.float64)


def _assert_close_mc(samples: torch.Tensor, exact: torch.Tensor, max_rel_se: float) -> None:
    """Mean of ``samples`` (first dim) equals ``exact`` within Z standard errors."""
    samples = samples.double()
    exact = torch.as_tensor(exact, dtype=torch.float64).reshape(samples.shape[1:])
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    # The test is only meaningful if the Monte Carlo error is small against the value.
    assert (se <= max_rel_se * exact.abs().clamp_min(1.0)).all(), (se, exact)
    assert ((mean - exact).abs() <= Z * se).all(), (mean, exact, se)


# -- the gradient of the ELBO --------------------------------------------------------------
@pytest.mark.parametrize("elbo_cls", ELBOS)
def test_elbo_gradient_matches_the_closed_form(elbo_cls) -> None:
    data = _data()
    gm, gu, exact_loss = _exact_nn_grads(data)
    elbo = elbo_cls(num_particles=1000, vectorize_particles=True)
    grads, losses = _mc_grads(elbo, nn_model, nn_guide, ["loc", "scale"], 20, data)
    _assert_close_mc(grads, torch.stack([gm, gu]), max_rel_se=0.02)
    _assert_close_mc(losses[:, None], torch.tensor([exact_loss]), max_rel_se=0.01)


@pytest.mark.parametrize("elbo_cls", ELBOS)
def test_loss_value_matches_the_closed_form(elbo_cls) -> None:
    data = _data()
    _, _, exact_loss = _exact_nn_grads(data)
    elbo = elbo_cls()
    vitorch.param("loc", torch.tensor(1.0))
    values = torch.tensor([elbo.loss(nn_model, nn_guide, data) for _ in range(300)])
    _assert_close_mc(values[:, None], torch.tensor([exact_loss]), max_rel_se=0.01)


# A model where the prior and the guide carry most of the Monte Carlo noise (a weak
# likelihood), which is what the analytic KL of TraceMeanField_ELBO removes.
K_WEAK, SIGMA_WEAK, S_WEAK = 10, 4.0, 0.5
M_WEAK = torch.linspace(-1.0, 1.0, K_WEAK)


def _weak_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(77)
    return 2.0 * torch.randn(K_WEAK, generator=g)


def weak_model(data: torch.Tensor) -> None:
    with vitorch.plate("items", K_WEAK):
        z = vitorch.sample("z", dist.Normal(0.0, 1.0))
        vitorch.sample("x", dist.Normal(z, SIGMA_WEAK), obs=data)


def weak_guide(data: torch.Tensor) -> None:
    m = vitorch.param("m", M_WEAK)
    s = vitorch.param("s", torch.full((K_WEAK,), S_WEAK), constraint=constraints.positive)
    with vitorch.plate("items", K_WEAK):
        vitorch.sample("z", dist.Normal(m, s))


def weak_loss_closed_form(data: torch.Tensor) -> float:
    m, s = M_WEAK, S_WEAK
    e_pz = -0.5 * math.log(2 * math.pi) - (m**2 + s**2) / 2
    e_px = -0.5 * math.log(2 * math.pi * SIGMA_WEAK**2) - ((data - m) ** 2 + s**2) / (
        2 * SIGMA_WEAK**2
    )
    h = 0.5 * math.log(2 * math.pi * math.e * s**2)
    return -float((e_pz + e_px + h).sum())


def test_mean_field_agrees_with_trace_elbo_with_lower_variance() -> None:
    data = _weak_data()
    exact = weak_loss_closed_form(data)
    tr = torch.tensor([Trace_ELBO().loss(weak_model, weak_guide, data) for _ in range(400)])
    mf = torch.tensor(
        [TraceMeanField_ELBO().loss(weak_model, weak_guide, data) for _ in range(400)]
    )
    _assert_close_mc(tr[:, None], torch.tensor([exact]), max_rel_se=0.01)
    _assert_close_mc(mf[:, None], torch.tensor([exact]), max_rel_se=0.01)
    # Two estimates of the same quantity from independent samples agree.
    diff_se = math.sqrt(float(tr.var() + mf.var()) / 400)
    assert abs(float(tr.mean() - mf.mean())) <= Z * diff_se
    # The analytic KL removes the prior's and the entropy's Monte Carlo noise.
    assert mf.var() < 0.5 * tr.var(), (mf.var(), tr.var())


def test_mean_field_gradient_agrees_with_lower_variance() -> None:
    data = _weak_data()
    names = ["m", "s"]
    tr, _ = _mc_grads(Trace_ELBO(), weak_model, weak_guide, names, 400, data)
    mf, _ = _mc_grads(TraceMeanField_ELBO(), weak_model, weak_guide, names, 400, data)
    diff_se = ((tr.var(0) + mf.var(0)) / 400).sqrt()
    assert ((tr.mean(0) - mf.mean(0)).abs() <= Z * diff_se).all()
    assert (mf.var(0) < 0.5 * tr.var(0)).all()


# -- vectorized particles ----------------------------------------------------------------
ROWS, COLS = 3, 4


def _grid_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.randn(ROWS, COLS, generator=g)


def grid_model(data: torch.Tensor) -> None:
    z = vitorch.sample("z", dist.Normal(0.0, 1.0))
    with vitorch.plate("rows", ROWS, dim=-2), vitorch.plate("cols", COLS, dim=-1):
        loc = vitorch.sample("l", dist.Normal(z, 1.0))
        vitorch.sample("x", dist.Normal(loc, 0.5), obs=data)


GRID_LOC = torch.linspace(-1.0, 1.0, ROWS * COLS).reshape(ROWS, COLS)


def grid_guide(data: torch.Tensor) -> None:
    zq = vitorch.param("zq", torch.tensor(0.2))
    vitorch.sample("z", dist.Normal(zq, 0.7))
    lq = vitorch.param("lq", GRID_LOC)
    with vitorch.plate("rows", ROWS, dim=-2), vitorch.plate("cols", COLS, dim=-1):
        vitorch.sample("l", dist.Normal(lq, 0.3))


def grid_loss_closed_form(data: torch.Tensor) -> float:
    mz, sz, sl, sx = 0.2, 0.7, 0.3, 0.5
    ml = GRID_LOC
    log2pi = math.log(2 * math.pi)
    e_pz = -0.5 * log2pi - (mz**2 + sz**2) / 2
    e_pl = (-0.5 * log2pi - ((ml - mz) ** 2 + sl**2 + sz**2) / 2).sum()
    e_px = (-0.5 * math.log(2 * math.pi * sx**2) - ((data - ml) ** 2 + sl**2) / (2 * sx**2)).sum()
    h = 0.5 * math.log(2 * math.pi * math.e * sz**2) + ROWS * COLS * 0.5 * math.log(
        2 * math.pi * math.e * sl**2
    )
    return -float(e_pz + e_pl + e_px + h)


@pytest.mark.parametrize("elbo_cls", ELBOS)
def test_vectorized_particles_equal_the_sequential_loop(elbo_cls) -> None:
    data = _grid_data()
    exact = grid_loss_closed_form(data)
    vec = elbo_cls(num_particles=200, vectorize_particles=True)
    assert vec.max_plate_nesting == math.inf
    vec_values = torch.tensor([vec.loss(grid_model, grid_guide, data) for _ in range(30)])
    # Guessed from the model: two nested plates.
    assert vec.max_plate_nesting == 2
    seq_values = torch.tensor([elbo_cls().loss(grid_model, grid_guide, data) for _ in range(300)])
    _assert_close_mc(vec_values[:, None], torch.tensor([exact]), max_rel_se=0.01)
    _assert_close_mc(seq_values[:, None], torch.tensor([exact]), max_rel_se=0.01)
    # Averaging 200 particles divides the variance by 200 (up to sampling error).
    ratio = float(vec_values.var() * 200 / seq_values.var())
    assert 0.3 < ratio < 3.0, ratio


def test_vectorized_particles_see_a_particle_dim() -> None:
    data = _grid_data()
    shapes = {}

    def guide(data: torch.Tensor) -> None:
        grid_guide(data)

    def model(data: torch.Tensor) -> None:
        with handlers.trace() as tracer:
            grid_model(data)
        shapes.update({k: tuple(v["value"].shape) for k, v in tracer.trace.nodes.items()})

    Trace_ELBO(num_particles=7, vectorize_particles=True).loss(model, guide, data)
    assert shapes["z"] == (7, 1, 1)
    assert shapes["l"] == (7, ROWS, COLS)
    assert shapes["x"] == (ROWS, COLS)


def test_explicit_max_plate_nesting() -> None:
    data = _grid_data()
    exact = grid_loss_closed_form(data)
    elbo = Trace_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=3)
    values = torch.tensor([elbo.loss(grid_model, grid_guide, data) for _ in range(30)])
    assert elbo.max_plate_nesting == 3
    _assert_close_mc(values[:, None], torch.tensor([exact]), max_rel_se=0.01)
    # Too small: the particle dim collides with a plate of the model.
    too_small = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    with pytest.raises(ValueError, match="dim=-2"):
        too_small.loss(grid_model, grid_guide, data)


def test_max_plate_nesting_guess_sees_only_vectorized_plates() -> None:
    def model() -> None:
        with vitorch.plate("a", 2):
            for i in vitorch.plate("seq", 2):
                vitorch.sample(f"x{i}", dist.Normal(0.0, 1.0))

    def guide() -> None:
        with vitorch.plate("a", 2):
            for i in vitorch.plate("seq", 2):
                vitorch.sample(f"x{i}", dist.Normal(0.0, 1.0))

    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True)
    elbo.loss(model, guide)
    assert elbo.max_plate_nesting == 1
    # The guessing run left nothing in the param store or on the stack.
    assert len(vitorch.get_param_store()) == 0


# -- subsampling keeps the loss unbiased ---------------------------------------------------
N_SUB, n_SUB = 20, 5


def _sub_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(9)
    return torch.randn(N_SUB, generator=g) + 1.0


LQ = torch.linspace(-0.5, 1.5, N_SUB)


def sub_model(data: torch.Tensor, subsample_size: int | None) -> None:
    z = vitorch.sample("z", dist.Normal(0.0, 1.0))
    with vitorch.plate("data", N_SUB, subsample_size=subsample_size) as idx:
        loc = vitorch.sample("l", dist.Normal(z, 1.0))
        vitorch.sample("x", dist.Normal(loc, 0.5), obs=data[idx])


def sub_guide(data: torch.Tensor, subsample_size: int | None) -> None:
    zq = vitorch.param("zq", torch.tensor(0.3))
    vitorch.sample("z", dist.Delta(zq))
    with vitorch.plate("data", N_SUB, subsample_size=subsample_size):
        lq = vitorch.param("lq", LQ, event_dim=0)
        vitorch.sample("l", dist.Delta(lq))


def _sub_full_loss(data: torch.Tensor) -> float:
    normal = torch.distributions.Normal
    return -float(
        normal(0.0, 1.0).log_prob(torch.tensor(0.3))
        + normal(0.3, 1.0).log_prob(LQ).sum()
        + normal(LQ, 0.5).log_prob(data).sum()
    )


@pytest.mark.parametrize("elbo_cls", ELBOS)
def test_subsampled_loss_is_unbiased(elbo_cls) -> None:
    data = _sub_data()
    full = _sub_full_loss(data)
    elbo = elbo_cls()
    assert elbo.loss(sub_model, sub_guide, data, None) == pytest.approx(full, rel=1e-5)
    values = torch.tensor([elbo.loss(sub_model, sub_guide, data, n_SUB) for _ in range(1500)])
    assert values.std() > 0  # the subsample does change
    _assert_close_mc(values[:, None], torch.tensor([full]), max_rel_se=0.02)


def test_one_subsampled_loss_exactly() -> None:
    data = _sub_data()
    with handlers.seed(rng_seed=11):
        value = Trace_ELBO().loss(sub_model, sub_guide, data, n_SUB)
    with handlers.seed(rng_seed=11):
        idx = handlers.trace(sub_guide).get_trace(data, n_SUB).nodes["data"]["value"]
    normal = torch.distributions.Normal
    scale = N_SUB / n_SUB
    expected = -float(
        normal(0.0, 1.0).log_prob(torch.tensor(0.3))
        + scale * normal(0.3, 1.0).log_prob(LQ[idx]).sum()
        + scale * normal(LQ[idx], 0.5).log_prob(data[idx]).sum()
    )
    assert value == pytest.approx(expected, rel=1e-5)


# -- score-function gradients for guide sites that cannot be reparameterized ---------------
PI0 = torch.tensor([0.5, 0.3, 0.2])
MUS = torch.tensor([-2.0, 0.0, 3.0])
X0 = torch.tensor(0.8)
Q0 = torch.tensor([0.2, 0.5, 0.3])


def cat_model() -> None:
    z = vitorch.sample("z", dist.Categorical(PI0))
    vitorch.sample("x", dist.Normal(MUS[z], 1.0), obs=X0)


def cat_guide() -> None:
    q = vitorch.param("q", Q0, constraint=constraints.simplex)
    vitorch.sample("z", dist.Categorical(q))


def _cat_exact() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact loss gradient (w.r.t. the softmax logits) and per-particle gradient covariance.

    The per-particle estimator is grad log q(z) * (log p(x, z) - log q(z)), enumerated over z.
    """
    u = Q0.log().clone().requires_grad_(True)
    q = torch.softmax(u, -1)
    f = PI0.log() + torch.distributions.Normal(MUS, 1.0).log_prob(X0) - q.log()
    loss = -(q * f).sum()
    (grad,) = torch.autograd.grad(loss, u)
    # Per-z estimator of the loss gradient: -(d log q_z / du) * f_z.
    jac = torch.eye(3) - q.detach()[None, :]  # d log softmax_z / du
    per_z = -jac * f.detach()[:, None]
    var = (q.detach()[:, None] * (per_z - grad) ** 2).sum(0)
    return grad, var, loss.detach()


@pytest.mark.parametrize("elbo_cls", ELBOS)
def test_score_function_gradient_is_unbiased(elbo_cls) -> None:
    grad, var_one, exact_loss = _cat_exact()
    particles, batches = 1000, 30
    elbo = elbo_cls(num_particles=particles, vectorize_particles=True)
    grads, losses = _mc_grads(elbo, cat_model, cat_guide, ["q"], batches)
    _assert_close_mc(grads, grad, max_rel_se=0.05)
    _assert_close_mc(losses[:, None], exact_loss[None], max_rel_se=0.01)
    # Each particle gets its own learning signal: the variance of the average of
    # `particles` particles is that of one particle divided by `particles`.
    assert (grads.var(0) <= 3.0 * var_one / particles).all(), (grads.var(0), var_one / particles)


@pytest.mark.parametrize("elbo_cls", ELBOS)
def test_score_function_gradient_sequential_particles(elbo_cls) -> None:
    grad, _, _ = _cat_exact()
    elbo = elbo_cls(num_particles=1)
    grads, _ = _mc_grads(elbo, cat_model, cat_guide, ["q"], 1000)
    _assert_close_mc(grads, grad, max_rel_se=0.15)


N_LOC, n_LOC = 6, 2
X_LOC = torch.tensor([-1.5, -0.2, 0.4, 1.1, 2.0, -0.7])
Q_LOC = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.4])


def local_model(subsample_size: int | None) -> None:
    with vitorch.plate("data", N_LOC, subsample_size=subsample_size) as idx:
        z = vitorch.sample("z", dist.Bernoulli(0.4))
        vitorch.sample("x", dist.Normal(3.0 * z - 1.0, 1.0), obs=X_LOC[idx])


def local_guide(subsample_size: int | None) -> None:
    with vitorch.plate("data", N_LOC, subsample_size=subsample_size):
        q = vitorch.param("q", Q_LOC, constraint=constraints.unit_interval, event_dim=0)
        vitorch.sample("z", dist.Bernoulli(q))


def _local_exact_grad() -> torch.Tensor:
    u = torch.logit(Q_LOC).clone().requires_grad_(True)
    q = torch.sigmoid(u)
    elbo = 0.0
    for z in (0.0, 1.0):
        qz = q if z == 1.0 else 1 - q
        pz = 0.4 if z == 1.0 else 0.6
        log_lik = torch.distributions.Normal(3.0 * z - 1.0, 1.0).log_prob(X_LOC)
        elbo = elbo + qz * (math.log(pz) + log_lik - qz.log())
    (grad,) = torch.autograd.grad(-elbo.sum(), u)
    return grad


@pytest.mark.parametrize("elbo_cls", ELBOS)
@pytest.mark.parametrize("subsample_size", [None, n_LOC])
def test_score_function_gradient_with_local_latents(elbo_cls, subsample_size) -> None:
    grad = _local_exact_grad()
    # With subsampling most of the noise is in which items are drawn: more, smaller calls.
    calls, particles = (100, 1000) if subsample_size is None else (400, 100)
    elbo = elbo_cls(num_particles=particles, vectorize_particles=True)
    grads, _ = _mc_grads(elbo, local_model, local_guide, ["q"], calls, subsample_size)
    # Subsampling adds the noise of which items are drawn; without the right scaling
    # the local gradients would be off by the factor size / subsample_size = 3.
    _assert_close_mc(grads, grad, max_rel_se=0.05 if subsample_size is None else 0.1)


def test_score_function_and_pathwise_together() -> None:
    # A discrete guide site upstream of a reparameterized one: the pathwise part of the
    # gradient (w.r.t. the Normal's loc) must stay exact.
    def model() -> None:
        z = vitorch.sample("z", dist.Bernoulli(0.5))
        y = vitorch.sample("y", dist.Normal(2.0 * z, 1.0))
        vitorch.sample("x", dist.Normal(y, 1.0), obs=torch.tensor(1.0))

    def guide() -> None:
        q = vitorch.param("q", torch.tensor(0.3), constraint=constraints.unit_interval)
        z = vitorch.sample("z", dist.Bernoulli(q))
        m = vitorch.param("m", torch.tensor([0.1, 1.2]))
        vitorch.sample("y", dist.Normal(m[z.long()], 0.8))

    # Exact: enumerate z, Gaussian expectations in closed form.
    u = torch.logit(torch.tensor(0.3)).requires_grad_(True)
    m = torch.tensor([0.1, 1.2], requires_grad=True)
    q = torch.sigmoid(u)
    s = 0.8
    elbo = 0.0
    for z in (0, 1):
        qz = q if z == 1 else 1 - q
        e_py = -0.5 * math.log(2 * math.pi) - ((m[z] - 2.0 * z) ** 2 + s**2) / 2
        e_px = -0.5 * math.log(2 * math.pi) - ((1.0 - m[z]) ** 2 + s**2) / 2
        h = 0.5 * math.log(2 * math.pi * math.e * s**2)
        elbo = elbo + qz * (math.log(0.5) + e_py + e_px + h - qz.log())
    gu, gm = torch.autograd.grad(-elbo, (u, m))
    exact = torch.cat([gu.reshape(1), gm])
    elbo_est = Trace_ELBO(num_particles=1000, vectorize_particles=True)
    grads, _ = _mc_grads(elbo_est, model, guide, ["q", "m"], 40)
    _assert_close_mc(grads, exact, max_rel_se=0.05)


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_a_masked_discrete_guide_site_still_gets_its_score_gradient(elbo_cls) -> None:
    # z's own terms are masked out of the ELBO, but z still decides the likelihood of x:
    # ELBO(p) = p log N(2; 3, 1) + (1 - p) log N(2; 0, 1), so dELBO/dp is known exactly.
    from vitorch import poutine

    def model():
        with poutine.mask(mask=False):
            z = vitorch.sample("z", dist.Bernoulli(0.5))
        vitorch.sample("x", dist.Normal(3.0 * z, 1.0), obs=torch.tensor(2.0))

    theta = torch.tensor(0.3, requires_grad=True)

    def guide():
        with poutine.mask(mask=False):
            vitorch.sample("z", dist.Bernoulli(torch.sigmoid(theta)))

    loss = elbo_cls(num_particles=20000, vectorize_particles=True, max_plate_nesting=0)
    (grad,) = torch.autograd.grad(loss.differentiable_loss(model, guide), theta)
    p = torch.sigmoid(theta.detach())
    normal = torch.distributions.Normal
    d_elbo_dp = normal(3.0, 1.0).log_prob(torch.tensor(2.0)) - normal(0.0, 1.0).log_prob(
        torch.tensor(2.0)
    )
    expected = -d_elbo_dp * p * (1 - p)  # d(-ELBO)/dtheta
    # Score-function noise: per draw the estimate is (z - p) * cost-difference; 20000 draws
    # give a standard error below 0.01 here, and the wrong (masked) score gives 0.
    assert abs(grad.item() - expected.item()) < 0.04
    assert abs(expected.item()) > 0.3  # far from the 0 of a masked score
