"""Trace_MMD against its estimator written out on its own draws, its closed-form expected
value, and the exact minimizer of that expected value.

Model ``z ~ N(0, 1)``, ``x_n ~ N(z, 1)``; guide ``N(m, s)``; RBF kernel. For Gaussians
``E k(X, Y) = l / sqrt(l^2 + u^2 + v^2) exp(-(a - b)^2 / (2 (l^2 + u^2 + v^2)))`` for
``X ~ N(a, u^2)``, ``Y ~ N(b, v^2)``, so the expected loss is known exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.distributions import constraints
from vitorch.infer.svi import SVI
from vitorch.infer.trace_mmd import RBF, Trace_MMD
from vitorch.optim import ClippedAdam

DATA = torch.tensor([1.2, -0.4, 0.9, 2.1, 0.3])
LENGTHSCALE = 1.0


def normal_lp(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def rbf(a: torch.Tensor, b: torch.Tensor, variance: float, lengthscale: float) -> torch.Tensor:
    """Gram matrix of the rows of ``a`` and ``b``, written out."""
    gram = torch.empty(len(a), len(b))
    for i in range(len(a)):
        for j in range(len(b)):
            gram[i, j] = variance * math.exp(
                -float(((a[i] - b[j]) ** 2).sum()) / (2 * lengthscale**2)
            )
    return gram


def test_rbf_kernel_matches_the_formula_and_pyro():
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    kernel = RBF(3, variance=1.7, lengthscale=0.8)
    torch.testing.assert_close(kernel(x, z), rbf(x, z, 1.7, 0.8))
    torch.testing.assert_close(kernel(x), rbf(x, x, 1.7, 0.8))
    gp = pytest.importorskip("pyro.contrib.gp")
    theirs = gp.kernels.RBF(3, torch.tensor(1.7), torch.tensor(0.8))
    torch.testing.assert_close(kernel(x, z), theirs(x, z).detach())


def make_pair(record: dict):
    """z (2-vector) ~ N(0, I); w ~ N(0, 1) is a latent the guide does not sample (its
    log-density joins the likelihood term, as in Pyro); x_n ~ N(z_0 + z_1, 1)."""

    def model(data):
        z = vitorch.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        record.setdefault("model_z", []).append(z.detach())
        w = vitorch.sample("w", dist.Normal(0.0, 1.0))
        record.setdefault("w", []).append(w.detach())
        with vitorch.plate("data", len(data)):
            vitorch.sample("x", dist.Normal(z.sum(-1), 1.0), obs=data)

    def guide(data):
        m = vitorch.param("m", torch.tensor([0.4, -0.2]))
        s = vitorch.param("s", torch.tensor([0.5, 0.8]), constraint=constraints.positive)
        z = vitorch.sample("z", dist.Normal(m, s).to_event(1))
        record.setdefault("guide_z", []).append(z.detach())

    return model, guide


@pytest.mark.parametrize("vectorize", [True, False])
def test_loss_is_the_mmd_estimate_plus_the_expected_log_likelihood(vectorize):
    k, variance, lengthscale, scale = 5, 1.3, 0.9, 2.5
    record: dict = {}
    model, guide = make_pair(record)
    kernel = RBF(2, variance, lengthscale)
    if vectorize:
        mmd = Trace_MMD(kernel, mmd_scale=scale, num_particles=k, max_plate_nesting=1)
    else:  # the per-site dict forms
        mmd = Trace_MMD(
            {"z": kernel}, mmd_scale={"z": scale}, num_particles=k, vectorize_particles=False
        )
    loss = mmd.loss(model, guide, DATA)
    guide_z = torch.cat([z.reshape(-1, 2) for z in record["guide_z"]])
    model_z = [z.reshape(-1, 2) for z in record["model_z"]]
    w = [x.reshape(-1) for x in record["w"]]
    # The model runs twice per particle (or vectorized batch): replaying the guide's
    # draws, then on its own for the prior draws.
    replayed, prior = torch.cat(model_z[0::2]), torch.cat(model_z[1::2])
    w = torch.cat(w[0::2])
    torch.testing.assert_close(replayed, guide_z)
    assert guide_z.shape == prior.shape == (k, 2)
    log_lik = (
        normal_lp(DATA, guide_z.sum(-1).unsqueeze(-1), 1.0).sum(-1) + normal_lp(w, 0.0, 1.0)
    ).mean()
    gram = (
        rbf(prior, prior, variance, lengthscale).mean()
        + rbf(guide_z, guide_z, variance, lengthscale).mean()
    )
    estimate = gram - 2 * rbf(prior, guide_z, variance, lengthscale).mean()
    assert loss == pytest.approx(float(scale * estimate - log_lik), rel=1e-5)


# -- the expected loss in closed form (1-d latent) ---------------------------------------------
K, LAM = 10, 5.0


def model_1d(data):
    z = vitorch.sample("z", dist.Normal(0.0, 1.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("x", dist.Normal(z, 1.0), obs=data)


def guide_1d(data, m0: float = 0.0, s0: float = 1.0):
    m = vitorch.param("m", torch.tensor(m0))
    s = vitorch.param("s", torch.tensor(s0), constraint=constraints.positive)
    vitorch.sample("z", dist.Normal(m, s))


def expected_loss(m: float, s: float) -> float:
    """E[loss] for K particles: the V-statistic's diagonal terms are k(x, x) = 1."""

    def e_k(d, u2, v2):
        c = LENGTHSCALE**2 + u2 + v2
        return LENGTHSCALE / math.sqrt(c) * math.exp(-d * d / (2 * c))

    nll = sum(0.5 * math.log(2 * math.pi) + ((float(x) - m) ** 2 + s * s) / 2 for x in DATA)
    same = 1 / K + (1 - 1 / K) * e_k(0.0, s * s, s * s)
    prior = 1 / K + (1 - 1 / K) * e_k(0.0, 1.0, 1.0)
    return nll + LAM * (same + prior - 2 * e_k(m, s * s, 1.0))


def test_average_loss_matches_the_closed_form_expectation():
    mmd = Trace_MMD(RBF(1, 1.0, LENGTHSCALE), mmd_scale=LAM, num_particles=K)
    guide = lambda data: guide_1d(data, 0.3, 0.7)  # noqa: E731
    values = torch.tensor([mmd.loss(model_1d, guide, DATA) for _ in range(400)])
    se = float(values.std()) / math.sqrt(len(values))
    assert float(values.mean()) == pytest.approx(expected_loss(0.3, 0.7), abs=4 * se)


def test_svi_reaches_the_minimizer_of_the_expected_loss():
    """The estimator's gradient is unbiased for the expected loss's (both sides are
    reparameterized and the prior draws do not depend on the guide), so SGD converges to
    its minimizer, found here with scipy: m = 0.500, s = 0.222. It is only roughly the
    posterior N(0.683, 0.408): the MMD pulls q's marginal toward the prior, and nothing
    rewards q's entropy: the optimum's mean is 0.18 (0.45 posterior sd) from the
    posterior's, so "roughly the posterior" is checked as within 0.6 posterior sd. The
    learning rate decays to 0.003 and the last 200 iterates are averaged; over six seeds
    they land within 0.017 of the optimum, so 0.05 leaves 3x room."""
    optimize = pytest.importorskip("scipy.optimize")
    result = optimize.minimize(
        lambda p: expected_loss(p[0], math.exp(p[1])),
        [0.0, 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12},
    )
    m_opt, s_opt = float(result.x[0]), math.exp(float(result.x[1]))
    svi = SVI(
        model_1d,
        lambda data: guide_1d(data, 0.0, 0.5),
        ClippedAdam({"lr": 0.05, "lrd": 0.996}),
        Trace_MMD(RBF(1, 1.0, LENGTHSCALE), mmd_scale=LAM, num_particles=K),
    )
    store = vitorch.get_param_store()
    history = []
    for i in range(700):
        svi.step(DATA)
        if i >= 500:
            history.append([float(store["m"].detach()), float(store["s"].detach())])
    m, s = torch.tensor(history).mean(0).tolist()
    assert m == pytest.approx(m_opt, abs=0.05)
    assert s == pytest.approx(s_opt, abs=0.05)
    post_mean, post_sd = float(DATA.sum()) / (1 + len(DATA)), 1 / math.sqrt(1 + len(DATA))
    assert abs(m - post_mean) < 0.6 * post_sd


def test_pyro_gives_the_same_loss_on_the_same_draws():
    pyro = pytest.importorskip("pyro")
    gp = pytest.importorskip("pyro.contrib.gp")
    import pyro.distributions as pdist

    def make(lib, d):
        def model(data):
            z = lib.sample("z", d.Normal(torch.zeros(2), 1.0).to_event(1))
            with lib.plate("data", len(data)):
                lib.sample("x", d.Normal(z.sum(-1), 1.0), obs=data)

        def guide(data):
            m = lib.param("m", torch.tensor([0.4, -0.2]))
            s = lib.param("s", torch.tensor([0.5, 0.8]), constraint=constraints.positive)
            lib.sample("z", d.Normal(m, s).to_event(1))

        return model, guide

    pyro.clear_param_store()
    for vectorize in (True, False):
        kernel = gp.kernels.RBF(2, torch.tensor(1.5), torch.tensor(0.7))
        kw = dict(mmd_scale=3.0, num_particles=5, vectorize_particles=vectorize)
        torch.manual_seed(0)
        ours = Trace_MMD(RBF(2, 1.5, 0.7), **kw).loss(*make(vitorch, dist), DATA)
        torch.manual_seed(0)
        theirs = pyro.infer.Trace_MMD(kernel, **kw).loss(*make(pyro, pdist), DATA)
        assert ours == pytest.approx(theirs, rel=1e-5)
        # A Pyro kernel works here too: any callable kernel(X, Z) does.
        torch.manual_seed(0)
        assert Trace_MMD(kernel, **kw).loss(*make(vitorch, dist), DATA) == pytest.approx(ours)
    pyro.clear_param_store()


def test_bad_arguments():
    with pytest.raises(TypeError, match="kernel must be a callable kernel"):
        Trace_MMD(kernel=3.0)
    with pytest.raises(TypeError, match=r"kernel\['z'\] must be a callable"):
        Trace_MMD(kernel={"z": "rbf"})
    with pytest.raises(TypeError, match="mmd_scale must be a number"):
        Trace_MMD(RBF(1), mmd_scale="big")
    with pytest.raises(ValueError, match="RBF: lengthscale must be positive, got 0"):
        RBF(1, lengthscale=0)
    with pytest.raises(ValueError, match="has no entry for the latent site 'z'"):
        Trace_MMD({"y": RBF(1)}, num_particles=4).loss(model_1d, guide_1d, DATA)

    def discrete(data):
        vitorch.sample("z", dist.Poisson(2.0))

    with pytest.raises(
        ValueError, match="the model's site 'z' \\(Poisson\\) is not reparameterizable"
    ):
        Trace_MMD(RBF(1), num_particles=4).loss(discrete, discrete, DATA)
