"""The reparameterizers beyond loc-scale and transform, and the reparameterization strategies.

Exact changes of variables (Split, DCT, Haar, UnitJacobian, NeuTra) must leave the joint
density unchanged (up to the stated Jacobian) at every value; auxiliary-variable schemes
(StudentT, the Stable family) must give back the original law when the auxiliaries are
integrated out, checked by quadrature or by the closed-form characteristic function
against many draws, within tolerances set by the sample size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import fft as sfft
from scipy import stats

import vitorch
import vitorch.distributions as dist
from vitorch.distributions.transforms import HaarTransform
from vitorch.handlers import condition, seed, trace
from vitorch.handlers.reparam import reparam
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal
from vitorch.infer.reparam import LocScaleReparam, TransformReparam
from vitorch.infer.reparam.discrete_cosine import DiscreteCosineReparam, HaarReparam
from vitorch.infer.reparam.neutra import NeuTraReparam
from vitorch.infer.reparam.projected_normal import ProjectedNormalReparam
from vitorch.infer.reparam.softmax import GumbelSoftmaxReparam
from vitorch.infer.reparam.split import SplitReparam
from vitorch.infer.reparam.stable import (
    LatentStableReparam,
    StableReparam,
    SymmetricStableReparam,
    _skew_shift,
)
from vitorch.infer.reparam.strategies import AutoReparam, MinimalReparam
from vitorch.infer.reparam.studentt import StudentTReparam
from vitorch.infer.reparam.unit_jacobian import UnitJacobianReparam
from vitorch.optim import Adam

T = 6


def _cov(n: int) -> torch.Tensor:
    # A random-walk covariance: strongly correlated along the "time" axis.
    idx = torch.arange(1, n + 1, dtype=torch.float64)
    return torch.minimum(idx[:, None], idx[None, :]) * 0.3 + 0.1 * torch.eye(n, dtype=torch.float64)


def _mvn(n: int = T) -> dist.MultivariateNormal:
    return dist.MultivariateNormal(torch.linspace(-1, 1, n, dtype=torch.float64), _cov(n))


def _log_joint(model, data: dict) -> torch.Tensor:
    tr = trace(condition(model, data=data)).get_trace()
    return tr.log_prob_sum()


# -- exact changes of variables ---------------------------------------------------------------


@pytest.mark.parametrize(
    "reparameterizer, suffix, inverse",
    [
        (
            DiscreteCosineReparam(),
            "dct",
            lambda y: torch.from_numpy(sfft.idct(y.numpy(), norm="ortho")),
        ),
        (HaarReparam(), "haar", lambda y: HaarTransform().inv(y)),
        (HaarReparam(flip=True), "haar", lambda y: HaarTransform(flip=True).inv(y)),
    ],
)
def test_frequency_reparam_preserves_density(reparameterizer, suffix, inverse):
    def model():
        return vitorch.sample("x", _mvn())

    y = torch.tensor([0.3, -1.2, 0.5, 2.0, -0.7, 0.1], dtype=torch.float64)
    tr = trace(condition(reparam(model, {"x": reparameterizer}), data={f"x_{suffix}": y}))
    tr = tr.get_trace()
    x = tr.nodes["x"].value
    torch.testing.assert_close(x, inverse(y))
    # Unit Jacobian: the density of the coefficients is that of the series.
    torch.testing.assert_close(tr.log_prob_sum(), _mvn().log_prob(x))
    assert float(tr.nodes["x"].fn.log_prob(x).sum()) == 0.0


def test_dct_smooth_and_dim():
    # Transform along dim -2 of a (T, 2) event, with spectral weighting: still |det J| = 1.
    def model():
        loc = torch.zeros(T, 2, dtype=torch.float64)
        return vitorch.sample("x", dist.Normal(loc, torch.tensor([1.0, 2.0])).to_event(2))

    g = torch.Generator().manual_seed(0)
    y = torch.randn(T, 2, generator=g, dtype=torch.float64)
    tr = trace(
        condition(reparam(model, {"x": DiscreteCosineReparam(dim=-2, smooth=1.0)}), {"x_dct": y})
    ).get_trace()
    x = tr.nodes["x"].value
    k = np.arange(T) + 0.5
    weight = np.exp(np.log(k) - np.log(k).mean())
    expected = sfft.idct(y.numpy() / weight[:, None], norm="ortho", axis=0)
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-10, atol=1e-12)
    lp = dist.Normal(0.0, torch.tensor([1.0, 2.0], dtype=torch.float64)).log_prob(x).sum()
    torch.testing.assert_close(tr.log_prob_sum(), lp)


def test_unit_jacobian_positive_support_includes_log_jacobian():
    # For a constrained site the auxiliary lives in unconstrained space, so the densities
    # differ by exactly log|d log(x) / dx| = -sum(log x).
    def model():
        return vitorch.sample("x", dist.LogNormal(torch.zeros(4), 0.5).to_event(1))

    y = torch.tensor([0.1, -0.3, 0.8, 0.2])
    rep = UnitJacobianReparam(HaarTransform())
    tr = trace(condition(reparam(model, {"x": rep}), {"x_transformed": y})).get_trace()
    x = tr.nodes["x"].value
    torch.testing.assert_close(x, HaarTransform().inv(y).exp())
    expected = dist.LogNormal(torch.zeros(4), 0.5).to_event(1).log_prob(x) + x.log().sum()
    torch.testing.assert_close(tr.log_prob_sum(), expected)


def test_unit_jacobian_batch_dims():
    locs = torch.linspace(0, 1, T)

    def model():
        with vitorch.plate("components", 2, dim=-2), vitorch.plate("time", T, dim=-1):
            return vitorch.sample("x", dist.Normal(locs, 2.0))

    with pytest.raises(ValueError, match="experimental_allow_batch=True"):
        trace(reparam(model, {"x": DiscreteCosineReparam()})).get_trace()

    rep = DiscreteCosineReparam(experimental_allow_batch=True)
    vitorch.set_rng_seed(0)
    tr = trace(reparam(model, {"x": rep})).get_trace()
    y = tr.nodes["x_dct"].value
    assert y.shape == (2, 1, T)
    assert [f.name for f in tr.nodes["x_dct"].cond_indep_stack] == ["components"]
    x = tr.nodes["x"].value
    assert x.shape == (2, T)
    torch.testing.assert_close(
        x, torch.from_numpy(sfft.idct(y.squeeze(1).numpy(), norm="ortho")), atol=1e-6, rtol=1e-5
    )
    # The density of the coefficients equals that of the series.
    torch.testing.assert_close(
        tr.log_prob_sum(), dist.Normal(locs, 2.0).log_prob(x).sum(), atol=1e-4, rtol=1e-5
    )


def test_split_preserves_density_and_values():
    def model():
        return vitorch.sample("x", _mvn())

    x = torch.tensor([0.3, -1.2, 0.5, 2.0, -0.7, 0.1], dtype=torch.float64)
    data = {"x_split_0": x[:2], "x_split_1": x[2:3], "x_split_2": x[3:]}
    rmodel = reparam(model, {"x": SplitReparam([2, 1, 3], -1)})
    tr = trace(condition(rmodel, data=data)).get_trace()
    torch.testing.assert_close(tr.nodes["x"].value, x)
    # The pieces are flat; the site keeps the original density at the joined value.
    torch.testing.assert_close(tr.log_prob_sum(), _mvn().log_prob(x))
    assert float(tr.nodes["x_split_1"].fn.log_prob(x[2:3])) == 0.0


def test_split_default_support_and_latent_init():
    # A cat constraint is sliced along with the value.
    support = dist.constraints.cat([dist.constraints.real, dist.constraints.positive], -1, [2, 2])

    class _Flat(dist.ImproperUniform):
        def __init__(self):
            super().__init__(dist.constraints.independent(support, 1), (), (4,))

    def model():
        x = vitorch.sample("x", _Flat())
        vitorch.sample("obs", dist.Normal(x.sum(), 1.0), obs=torch.tensor(1.0))

    init = torch.tensor([0.5, -0.5, 2.0, 3.0])
    rmodel = reparam(model, {"x": SplitReparam([2, 2], -1)})
    from vitorch.infer.autoguide.initialization import InitMessenger, init_to_value

    tr = trace(InitMessenger(init_to_value(values={"x": init}), rmodel)).get_trace()
    assert not tr.nodes["x_split_0"].is_observed  # an initial value stays latent
    torch.testing.assert_close(tr.nodes["x_split_1"].value, init[2:])
    s0 = tr.nodes["x_split_0"].fn.support
    s1 = tr.nodes["x_split_1"].fn.support
    assert s0.base_constraint.cseq == [dist.constraints.real]
    assert s1.base_constraint.cseq == [dist.constraints.positive]


def test_split_errors():
    def model():
        return vitorch.sample("x", _mvn())

    with pytest.raises(ValueError, match=r"add up to 5, but the site has size 6"):
        trace(reparam(model, {"x": SplitReparam([2, 3], -1)})).get_trace()
    with pytest.raises(ValueError, match="dim must be a negative int, got 1"):
        SplitReparam([2, 4], 1)
    with pytest.raises(ValueError, match="sections must be a non-empty list"):
        SplitReparam([2, 0], -1)


# -- auxiliary-variable schemes -------------------------------------------------------------


def test_studentt_gamma_mixture_integrates_to_studentt():
    df, loc, scale = 3.5, 0.7, 1.8
    xs = torch.tensor([-4.0, -1.0, 0.7, 2.5, 9.0], dtype=torch.float64)
    # Gauss-Laguerre-free quadrature: a fine grid over the Gamma's quantiles.
    q = torch.linspace(0.5 / 4000, 1 - 0.5 / 4000, 4000, dtype=torch.float64)
    g = torch.from_numpy(stats.gamma(df / 2, scale=2 / df).ppf(q.numpy()))

    def model():
        with vitorch.plate("grid", len(g), dim=-2), vitorch.plate("x", len(xs), dim=-1):
            return vitorch.sample(
                "y", dist.StudentT(torch.tensor(df, dtype=torch.float64), loc, scale), obs=xs
            )

    tr = trace(condition(reparam(model, {"y": StudentTReparam()}), {"y_gamma": g[:, None]}))
    site = tr.get_trace().nodes["y"]
    assert isinstance(site.fn, dist.Normal) and site.is_observed
    # Midpoint rule in the quantile variable: E_g[N(x; loc, scale / sqrt(g))].
    density = site.fn.log_prob(xs).exp().mean(0)
    expected = stats.t(df, loc=loc, scale=scale).pdf(xs.numpy())
    np.testing.assert_allclose(density.numpy(), expected, rtol=2e-3)


def test_studentt_latent_draws():
    n = 20000

    def model():
        with vitorch.plate("n", n):
            return vitorch.sample("y", dist.StudentT(4.0, -1.0, 2.0))

    x = trace(seed(reparam(model, {"y": StudentTReparam()}), 0)).get_trace().nodes["y"].value
    d = stats.kstest(x.numpy(), stats.t(4.0, loc=-1.0, scale=2.0).cdf).statistic
    assert d < 1.95 / math.sqrt(n)  # KS critical value at the 0.1% level


def _stable_cf(t, alpha, skew, scale, loc):
    """Nolan's S0 characteristic function."""
    st = scale * abs(t)
    if alpha == 1:
        tail = 1j * skew * (2 / math.pi) * np.sign(t) * math.log(st)
    else:
        tail = 1j * skew * math.tan(math.pi * alpha / 2) * np.sign(t) * (st ** (1 - alpha) - 1)
    return np.exp(-(st**alpha) * (1 + tail) + 1j * loc * t)


def _check_cf(x: torch.Tensor, alpha, skew, scale, loc):
    x = x.double().numpy()
    n = x.size
    for t in (-1.3, -0.4, 0.25, 0.7, 1.5):
        ecf = np.exp(1j * t * x).mean()
        expected = _stable_cf(t, alpha, skew, scale, loc)
        # Real and imaginary parts of exp(itX) lie in [-1, 1]: standard error <= 1/sqrt(n).
        assert abs(ecf - expected) < 5 * math.sqrt(2 / n), (t, ecf, expected)


STABLE_CASES = [(1.5, 0.5), (0.7, -0.6), (1.0, 0.4), (1.0005, -0.8), (1.9, 1.0), (1.2, 0.0)]


@pytest.mark.parametrize("alpha, skew", STABLE_CASES)
@pytest.mark.parametrize("kind", ["latent", "general", "symmetric"])
def test_stable_marginals(kind, alpha, skew):
    if kind == "symmetric":
        skew = 0.0
    n, scale, loc = 20000, 1.5, -0.5
    rep = {"latent": LatentStableReparam, "general": StableReparam}.get(
        kind, SymmetricStableReparam
    )()

    def model():
        with vitorch.plate("n", n):
            return vitorch.sample("x", dist.Stable(alpha, skew, scale, loc))

    tr = trace(seed(reparam(model, {"x": rep}), 1)).get_trace()
    _check_cf(tr.nodes["x"].value, alpha, skew, scale, loc)
    if kind == "latent":
        assert set(tr.stochastic_nodes) == {"x_uniform", "x_exponential"}
    else:
        assert isinstance(tr.nodes["x"].fn, dist.Normal)


def test_symmetric_stable_special_cases():
    n = 20000

    def model(alpha):
        with vitorch.plate("n", n):
            return vitorch.sample("x", dist.Stable(alpha, 0.0, 2.0, 1.0))

    rmodel = reparam(model, {"x": SymmetricStableReparam()})
    # stability 1: Cauchy(loc, scale).
    x = trace(seed(rmodel, 2)).get_trace(1.0).nodes["x"].value
    assert stats.kstest(x.numpy(), stats.cauchy(1.0, 2.0).cdf).statistic < 1.95 / math.sqrt(n)
    # stability 2: the mixing variable is exactly 1, giving Normal(loc, scale * sqrt(2)).
    site = trace(seed(rmodel, 2)).get_trace(2.0).nodes["x"]
    # (Up to float32 rounding of cos(u) near the ends of the uniform's range.)
    torch.testing.assert_close(
        site.fn.scale, torch.full((n,), 2.0 * math.sqrt(2)), rtol=1e-3, atol=0
    )


def test_skew_shift_continuous_at_one():
    skew = torch.tensor([-0.9, -0.3, 0.2, 0.7], dtype=torch.float64)
    alpha = torch.tensor([0.6, 1.4, 1.9, 0.95], dtype=torch.float64)
    naive = (skew.sign() * skew.abs().pow(1 / alpha) - skew) * (math.pi / 2 * alpha).tan()
    torch.testing.assert_close(_skew_shift(alpha, skew, skew.abs()), naive)
    # The removable singularity at stability 1 has the limit (2/pi) b log|b|.
    one = torch.ones_like(skew)
    limit = 2 / math.pi * skew * skew.abs().log()
    torch.testing.assert_close(_skew_shift(one, skew, skew.abs()), limit)
    # Differentiable through stability 1.
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: _skew_shift(a, skew, skew.abs()), (a,))


def test_stable_observed_and_errors():
    obs = torch.tensor([0.3, -2.0, 5.0])

    def model(skew=0.5):
        with vitorch.plate("n", 3):
            vitorch.sample("x", dist.Stable(1.5, skew), obs=obs)

    tr = trace(reparam(model, {"x": StableReparam()})).get_trace()
    assert tr.nodes["x"].is_observed and torch.equal(tr.nodes["x"].value, obs)
    assert {"x_z_uniform", "x_z_exponential", "x_t_uniform", "x_t_exponential"} <= set(
        tr.stochastic_nodes
    )
    with pytest.raises(NotImplementedError, match="observed sites are not supported"):
        trace(reparam(model, {"x": LatentStableReparam()})).get_trace()
    with pytest.raises(ValueError, match="expected skew == 0, got skew"):
        trace(reparam(model, {"x": SymmetricStableReparam()})).get_trace()

    def model_lp():
        vitorch.sample("x", dist.StableWithLogProb(1.5, 0.0))

    with pytest.raises(ValueError, match="not StableWithLogProb.*got StableWithLogProb"):
        trace(reparam(model_lp, {"x": LatentStableReparam()})).get_trace()


def _cms_s1(alpha, skew, u, e):
    """Classic Chambers-Mallows-Stuck draw in the S1 parameterization (alpha != 1)."""
    b = skew * np.tan(np.pi * alpha / 2)
    shift = np.arctan(b) / alpha
    return (
        (1 + b * b) ** (1 / (2 * alpha))
        * np.sin(alpha * (u + shift))
        / np.cos(u) ** (1 / alpha)
        * (np.cos(u - alpha * (u + shift)) / e) ** ((1 - alpha) / alpha)
    )


def test_stable_reparam_conditional_closed_form():
    # By the S1 sum rule X = S + sign(b) |b|^(1/a) T - b tan(pi a / 2) in S0, with S the
    # symmetric part (a Normal given Z) and T totally skewed: the conditional Normal at
    # fixed noise follows in closed form.
    alpha = np.array([0.6, 1.3, 1.7, 1.5])
    skew = np.array([0.5, -0.8, 0.3, 0.0])
    scale, loc = 1.3, 0.2
    rng = np.random.default_rng(4)
    zu, tu = rng.uniform(-1.5, 1.5, (2, 4))
    ze, te = rng.uniform(0.1, 2.0, (2, 4))
    aux = {
        "x_z_uniform": zu,
        "x_z_exponential": ze,
        "x_t_uniform": tu,
        "x_t_exponential": te,
    }
    aux = {k: torch.from_numpy(v) for k, v in aux.items()}

    def model():
        fn = dist.Stable(torch.from_numpy(alpha), torch.from_numpy(skew), scale, loc)
        vitorch.sample("x", fn.to_event(1), obs=torch.zeros(4, dtype=torch.float64))

    site = trace(condition(reparam(model, {"x": StableReparam()}), aux)).get_trace().nodes["x"]
    t = _cms_s1(alpha, np.ones(4), tu, te)  # T ~ S1(a, 1, 1); sign(b) T has skew sign(b)
    z = _cms_s1(alpha / 2, np.ones(4), zu, ze)
    tan = np.tan(np.pi * alpha / 2)
    expected_loc = loc + scale * (np.sign(skew) * np.abs(skew) ** (1 / alpha) * t - skew * tan)
    s_scale = (1 - np.abs(skew)) ** (1 / alpha)
    expected_scale = (
        scale * s_scale * np.sqrt(2) * np.cos(np.pi * alpha / 4) ** (1 / alpha) * np.sqrt(z)
    )
    np.testing.assert_allclose(site.fn.base_dist.loc.numpy(), expected_loc, rtol=1e-6)
    np.testing.assert_allclose(site.fn.base_dist.scale.numpy(), expected_scale, rtol=1e-6)


def test_stable_matches_pyro_conditional():
    pyro = pytest.importorskip("pyro")
    pdist = pytest.importorskip("pyro.distributions")
    from pyro.infer.reparam import StableReparam as PyroStableReparam

    alpha = torch.tensor([0.6, 1.3, 1.7, 1.02])
    skew = torch.tensor([0.5, -0.8, 0.3, 0.6])
    obs = torch.tensor([0.1, 1.0, -2.0, 0.5])
    g = torch.Generator().manual_seed(3)
    aux = {f"x_{p}_uniform": (torch.rand(4, generator=g) - 0.5) * 3.0 for p in "zt"} | {
        f"x_{p}_exponential": torch.rand(4, generator=g) * 2 + 0.1 for p in "zt"
    }

    def vmodel():
        vitorch.sample("x", dist.Stable(alpha, skew, 1.3, 0.2).to_event(1), obs=obs)

    def pmodel():
        pyro.sample("x", pdist.Stable(alpha, skew, 1.3, 0.2).to_event(1), obs=obs)

    vfn = trace(condition(reparam(vmodel, {"x": StableReparam()}), aux)).get_trace()
    pfn = pyro.poutine.trace(
        pyro.poutine.condition(pyro.poutine.reparam(pmodel, {"x": PyroStableReparam()}), aux)
    ).get_trace()
    vnormal, pnormal = vfn.nodes["x"]["fn"].base_dist, pfn.nodes["x"]["fn"].base_dist
    # Pyro interpolates the shift near stability 1; elsewhere the two agree exactly.
    torch.testing.assert_close(vnormal.loc[:3], pnormal.loc[:3], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vnormal.loc[3], pnormal.loc[3], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(vnormal.scale, pnormal.scale, rtol=1e-4, atol=1e-6)


# -- reparameterized latents ------------------------------------------------------------------


def test_projected_normal_reparam():
    c = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.3, 0.1]])

    def model():
        with vitorch.plate("p", 2):
            return vitorch.sample("x", dist.ProjectedNormal(c))

    eps = torch.tensor([[0.2, 0.1, -0.4], [1.0, -1.0, 0.5]])
    tr = trace(condition(reparam(model, {"x": ProjectedNormalReparam()}), {"x_normal": eps}))
    tr = tr.get_trace()
    # x / |x| with x = c + eps, eps ~ N(0, I): the definition of ProjectedNormal.
    torch.testing.assert_close(
        tr.nodes["x"].value, (c + eps) / (c + eps).norm(dim=-1, keepdim=True)
    )
    torch.testing.assert_close(tr.log_prob_sum(), dist.Normal(0.0, 1.0).log_prob(eps).sum())

    def observed():
        vitorch.sample("x", dist.ProjectedNormal(c[0]), obs=torch.tensor([1.0, 0.0, 0.0]))

    with pytest.raises(NotImplementedError, match="observed sites are not supported"):
        trace(reparam(observed, {"x": ProjectedNormalReparam()})).get_trace()


def test_gumbel_softmax_reparam():
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    temp = torch.tensor(0.7)

    def model():
        return vitorch.sample("x", dist.RelaxedOneHotCategorical(temp, logits=logits))

    u = torch.tensor([0.2, 0.9, 0.5, 0.01])
    tr = trace(condition(reparam(model, {"x": GumbelSoftmaxReparam()}), {"x_uniform": u}))
    tr = tr.get_trace()
    expected = torch.softmax((logits - (-u.log()).log()) / temp, -1)
    torch.testing.assert_close(tr.nodes["x"].value, expected)
    assert float(tr.log_prob_sum()) == 0.0  # Uniform(0, 1) noise has density 1

    # An initial value is carried over to noise that maps back onto it.
    from vitorch.infer.autoguide.initialization import InitMessenger, init_to_value

    init = torch.tensor([0.1, 0.2, 0.3, 0.4])
    rmodel = reparam(model, {"x": GumbelSoftmaxReparam()})
    tr = trace(InitMessenger(init_to_value(values={"x": init}), rmodel)).get_trace()
    u0 = tr.nodes["x_uniform"].value
    assert ((u0 > 0) & (u0 < 1)).all()
    torch.testing.assert_close(torch.softmax((logits - (-u0.log()).log()) / temp, -1), init)


# -- NeuTra -------------------------------------------------------------------------------------


def _neutra_model():
    a = vitorch.sample("a", dist.Normal(0.0, 1.0))
    b = vitorch.sample("b", dist.LogNormal(a, 0.5))
    with vitorch.plate("p", 3):
        vitorch.sample("c", dist.Normal(a, b))
    vitorch.sample("y", dist.Normal(b, 1.0), obs=torch.tensor(0.4))


@pytest.mark.parametrize("guide_cls", [AutoDiagonalNormal, AutoMultivariateNormal])
def test_neutra_density_and_transform_sample(guide_cls):
    guide = guide_cls(_neutra_model)
    guide()
    with torch.no_grad():
        guide.loc.copy_(torch.tensor([0.3, -0.2, 0.1, 0.5, -0.4]))
    guide.scale = torch.tensor([0.5, 1.2, 2.0, 0.3, 0.7])
    if guide_cls is AutoMultivariateNormal:
        guide.scale_tril = torch.eye(5) + torch.tril(torch.full((5, 5), 0.2), -1)
        tril = guide.scale[:, None] * guide.scale_tril
    else:
        tril = torch.diag(guide.scale)
    tril = tril.detach()
    neutra = NeuTraReparam(guide)
    z = torch.tensor([0.7, -1.1, 0.4, 0.0, 2.0])
    tr = trace(condition(neutra.reparam(_neutra_model), {"a_shared_latent": z})).get_trace()

    u = guide.loc.detach() + tril @ z
    a, b, c = u[0], u[1].exp(), u[2:]
    for name, value in {"a": a, "b": b, "c": c}.items():
        torch.testing.assert_close(tr.nodes[name].value, value)
    # log p(x(z)) + log|dx/dz|: the model density, the exp for b, the guide's affine map.
    expected = (
        dist.Normal(0.0, 1.0).log_prob(a)
        + dist.LogNormal(a, 0.5).log_prob(b)
        + dist.Normal(a, b).log_prob(c).sum()
        + dist.Normal(b, 1.0).log_prob(torch.tensor(0.4))
        + u[1]
        + tril.diagonal().log().sum()
    )
    torch.testing.assert_close(tr.log_prob_sum().detach(), expected.detach())
    assert tr.nodes["a_shared_latent"].cond_indep_stack == ()

    samples = neutra.transform_sample(z)
    torch.testing.assert_close(samples["b"].detach(), b)
    # Batch dims go left of the model's plate dims.
    batch = neutra.transform_sample(torch.stack([z, z, -z]).unsqueeze(-2))
    assert batch["a"].shape == (3, 1) and batch["c"].shape == (3, 3)
    torch.testing.assert_close(batch["c"][1].detach(), c)


def test_neutra_errors():
    with pytest.raises(TypeError, match="AutoContinuous guide, got AutoNormal"):
        NeuTraReparam(AutoNormal(_neutra_model))
    neutra = NeuTraReparam(AutoDiagonalNormal(_neutra_model))
    with pytest.raises(ValueError, match="the guide has not run yet"):
        trace(neutra.reparam(_neutra_model)).get_trace()


# -- strategies ---------------------------------------------------------------------------------


def _site_kinds(d):
    """(name, distribution, observed) for a set of site kinds, built from module ``d``."""
    v = torch.tensor(0.3)
    return [
        ("normal", d.Normal(0.0, 1.0), None),
        ("normal_obs", d.Normal(0.0, 1.0), v),
        ("normal_vec", d.Normal(torch.zeros(3), 1.0).to_event(1), None),
        ("studentt", d.StudentT(3.0, 0.0, 1.0), None),
        ("gamma", d.Gamma(2.0, 1.0), None),
        ("lognormal", d.LogNormal(0.0, 1.0), None),
        ("relaxed", d.RelaxedOneHotCategorical(torch.tensor(0.5), logits=torch.zeros(3)), None),
        ("relaxed_bernoulli", d.RelaxedBernoulli(torch.tensor(0.5), logits=torch.zeros(3)), None),
        ("projected", d.ProjectedNormal(torch.ones(3)), None),
        ("stable_obs_sym", d.Stable(1.5, 0.0), v),
        ("stable_obs_skew", d.Stable(1.5, 0.4), v),
        ("stable_lp", d.StableWithLogProb(1.5, 0.0), v),
        (
            "stable_transformed",
            d.TransformedDistribution(d.Stable(1.5, 0.0), [d.transforms.ExpTransform()]),
            None,
        ),
        ("exp_transformed", d.TransformedDistribution(d.Gamma(2.0, 1.0), []), v),
    ]


def _choices(strategy, kinds):
    sites = [
        {"name": name, "fn": fn, "is_observed": obs is not None, "value": obs}
        for name, fn, obs in kinds
    ]
    return {s["name"]: type(strategy(s)).__name__ for s in sites}


EXPECTED_MINIMAL = {
    "normal": "NoneType",
    "normal_obs": "NoneType",
    "normal_vec": "NoneType",
    "studentt": "NoneType",
    "gamma": "NoneType",
    "lognormal": "NoneType",
    "relaxed": "NoneType",
    "relaxed_bernoulli": "NoneType",
    "projected": "ProjectedNormalReparam",
    "stable_obs_sym": "SymmetricStableReparam",
    "stable_obs_skew": "StableReparam",
    "stable_lp": "NoneType",
    "stable_transformed": "TransformReparam",
    "exp_transformed": "NoneType",
}
EXPECTED_AUTO = EXPECTED_MINIMAL | {
    "normal": "LocScaleReparam",
    "normal_vec": "LocScaleReparam",
    "studentt": "LocScaleReparam",
    "lognormal": "TransformReparam",
    "relaxed": "GumbelSoftmaxReparam",
}


def test_strategy_choices():
    kinds = _site_kinds(dist)
    assert _choices(MinimalReparam(), kinds) == EXPECTED_MINIMAL
    auto = AutoReparam(centered=0.25)
    assert _choices(auto, kinds) == EXPECTED_AUTO
    assert auto.config["normal"].centered == 0.25
    assert auto.config["studentt"].shape_params == ("df",)
    # A latent Stable is decentered first, then its auxiliary site gets LatentStableReparam,
    # as in Pyro.
    s = dist.Stable(1.5, 0.0)
    auto = AutoReparam()
    assert isinstance(auto({"name": "s", "fn": s, "is_observed": False}), LocScaleReparam)
    assert isinstance(
        auto({"name": "s_decentered", "fn": s, "is_observed": False}), LatentStableReparam
    )
    with pytest.raises(ValueError, match=r"centered must be None or a float in \[0, 1\], got 2"):
        AutoReparam(centered=2)


def test_strategy_choices_match_pyro():
    pytest.importorskip("pyro")
    import pyro.distributions as pdist
    from pyro.infer.reparam import AutoReparam as PyroAuto
    from pyro.infer.reparam import MinimalReparam as PyroMinimal

    assert _choices(PyroMinimal(), _site_kinds(pdist)) == EXPECTED_MINIMAL
    assert _choices(PyroAuto(), _site_kinds(pdist)) == EXPECTED_AUTO


def test_strategy_remembers_and_decorates():
    calls = []

    class Counting(MinimalReparam):
        def configure(self, msg):
            calls.append(msg["name"])
            return super().configure(msg)

    strategy = Counting()

    @strategy
    def model():
        vitorch.sample("x", dist.Stable(1.2, 0.3))
        vitorch.sample("y", dist.Normal(0.0, 1.0))

    for _ in range(2):
        tr = trace(model).get_trace()
    assert calls == ["x", "x_uniform", "x_exponential", "y"]
    assert isinstance(strategy.config["x"], LatentStableReparam) and strategy.config["y"] is None
    assert {"x_uniform", "x_exponential", "y"} == set(tr.stochastic_nodes)


def test_svi_on_auto_reparam_conjugate_model():
    # x ~ N(0, 1), y ~ N(x, 1) observed at 1.2: posterior N(0.6, 1/2). AutoReparam
    # decenters x (x = x_decentered), so the guide's optimum is that posterior.
    def model():
        x = vitorch.sample("x", dist.Normal(0.0, 1.0))
        vitorch.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(1.2))

    vitorch.set_rng_seed(0)
    rmodel = AutoReparam(centered=0.0)(model)
    guide = AutoNormal(rmodel)
    svi = SVI(
        rmodel, guide, Adam({"lr": 0.05}), Trace_ELBO(num_particles=16, vectorize_particles=True)
    )
    for _ in range(600):
        svi.step()
    med = guide.median()
    assert set(med) == {"x_decentered"}
    assert abs(med["x_decentered"].item() - 0.6) < 0.05
    scale = vitorch.param("AutoNormal.scales.x_decentered").item()
    assert abs(scale - math.sqrt(0.5)) < 0.05


def test_svi_on_minimal_reparam_stable_latent():
    # SVI runs on a latent Stable through its noise sites; the reparameterized model's
    # density at the guide's noise is exactly that of the noise plus the likelihood.
    def model():
        s = vitorch.sample("s", dist.Stable(1.7, 0.2))
        vitorch.sample("y", dist.Normal(s, 1.0), obs=torch.tensor(0.5))

    rmodel = MinimalReparam()(model)
    guide = AutoNormal(rmodel)
    svi = SVI(rmodel, guide, Adam({"lr": 0.01}), Trace_ELBO())
    vitorch.set_rng_seed(0)
    losses = [svi.step() for _ in range(5)]
    assert all(math.isfinite(x) for x in losses)
    gtr = trace(guide).get_trace()
    assert set(gtr.stochastic_nodes) == {"s_uniform", "s_exponential"}
    u, e = gtr.nodes["s_uniform"].value, gtr.nodes["s_exponential"].value
    mtr = trace(condition(rmodel, {"s_uniform": u, "s_exponential": e})).get_trace()
    expected = (
        dist.Uniform(-math.pi / 2, math.pi / 2).log_prob(u)
        + dist.Exponential(1.0).log_prob(e)
        + dist.Normal(mtr.nodes["s"].value, 1.0).log_prob(torch.tensor(0.5))
    )
    torch.testing.assert_close(mtr.log_prob_sum(), expected)


def test_loc_scale_and_transform_still_compose():
    # AutoReparam's TransformReparam base site is itself decentered on the second pass.
    def model():
        return vitorch.sample("x", dist.LogNormal(1.0, 2.0))

    auto = AutoReparam(centered=0.0)
    tr = trace(seed(auto(model), 0)).get_trace()
    assert isinstance(auto.config["x"], TransformReparam)
    assert isinstance(auto.config["x_base"], LocScaleReparam)
    y = tr.nodes["x_base_decentered"].value
    torch.testing.assert_close(tr.nodes["x"].value, (1.0 + 2.0 * y).exp())


def test_loc_scale_decenters_a_stable_in_s0_coords_only():
    """Pyro decenters a latent Stable (S0) before LatentStableReparam; 'S' has no loc."""
    from vitorch import poutine

    def model():
        return vitorch.sample("s", dist.Stable(1.5, 0.3, scale=2.0, loc=1.0))

    tr = poutine.trace(poutine.reparam(model, config={"s": LocScaleReparam(0.0)})).get_trace()
    aux = tr.nodes["s_decentered"]["fn"]
    assert isinstance(aux, dist.Stable) and float(aux.loc) == 0.0 and float(aux.scale) == 1.0
    assert float(aux.stability) == 1.5 and float(aux.skew) == pytest.approx(0.3)
    assert torch.allclose(tr.nodes["s"]["value"], 1.0 + 2.0 * tr.nodes["s_decentered"]["value"])

    def model_s():
        vitorch.sample("s", dist.Stable(1.5, 0.3, coords="S"))

    with pytest.raises(ValueError, match=r"site 's'.*coords='S0'"):
        poutine.trace(poutine.reparam(model_s, config={"s": LocScaleReparam(0.0)})).get_trace()
