"""TruncatedPolyaGamma, GroupedNormalNormal and ExpandedDistribution (vitorch.distributions.misc).

The Polya-Gamma density is checked against its series written out here and normalized by
quadrature; the collapsed likelihood against a brute-force multivariate normal with the
implied covariance; the expanded distribution for shapes, independence of new dims and
broadcast log_prob.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats as st
import torch

from vitorch.distributions.misc import (
    ExpandedDistribution,
    GroupedNormalNormal,
    TruncatedPolyaGamma,
)
from vitorch.distributions.torch import Bernoulli, Normal

F64 = torch.float64


def _pg_series(x: float, terms: int = 7) -> float:
    return sum(
        (-1) ** n * (2 * n + 1) * math.exp(-((2 * n + 1) ** 2) / (8 * x)) for n in range(terms)
    ) / math.sqrt(2 * math.pi * x**3)


def test_polya_gamma_log_prob_matches_series_and_normalizes():
    d = TruncatedPolyaGamma(torch.tensor(0.0, dtype=F64))
    x = [0.02, 0.1, 0.25, 0.6, 1.0, 1.8, 2.4]
    lp = d.log_prob(torch.tensor(x, dtype=F64))
    torch.testing.assert_close(lp, torch.tensor([math.log(_pg_series(v)) for v in x], dtype=F64))
    total, _ = scipy.integrate.quad(
        lambda v: math.exp(float(d.log_prob(torch.tensor(v, dtype=F64)))), 1e-6, 2.5, limit=200
    )
    assert abs(total - 1) < 1e-5  # PG(1, 0) has about 1e-5 of its mass beyond 2.5


def test_polya_gamma_sample_moments_and_shapes():
    d = TruncatedPolyaGamma(torch.tensor(0.0, dtype=F64)).expand((2,))
    assert d.batch_shape == (2,) and d.log_prob(torch.tensor(0.3, dtype=F64)).shape == (2,)
    torch.manual_seed(0)
    x = d.sample((40_000,))
    assert x.shape == (40_000, 2) and x.dtype == F64 and (x > 0).all() and (x <= 2.5).all()
    c = 1 / (2 * math.pi**2 * (np.arange(8) + 0.5) ** 2)
    mean, var = c.sum(), (c**2).sum()  # the 8-term series the sampler draws (clamp ~1e-5)
    assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / x.numel())
    with pytest.raises(TypeError, match="prototype must be a tensor, got float"):
        TruncatedPolyaGamma(0.0)


def test_polya_gamma_matches_pyro():
    pyro = pytest.importorskip("pyro")
    x = torch.tensor([0.05, 0.4, 1.3, 2.2], dtype=F64)
    theirs = pyro.distributions.TruncatedPolyaGamma(x).log_prob(x)
    # Pyro builds the series coefficients in float32, hence the tolerance.
    torch.testing.assert_close(TruncatedPolyaGamma(x).log_prob(x), theirs, rtol=1e-5, atol=1e-5)


def _gnn_case():
    g = torch.Generator().manual_seed(1)
    prior_loc = torch.randn(3, generator=g, dtype=F64)
    prior_scale = torch.rand(3, generator=g, dtype=F64) + 0.5
    obs_scale = torch.rand(7, generator=g, dtype=F64) + 0.3
    group_idx = torch.tensor([1, 0, 2, 1, 1, 0, 2])
    value = torch.randn(7, generator=g, dtype=F64)
    return prior_loc, prior_scale, obs_scale, group_idx, value


def test_grouped_normal_normal_equals_brute_force_mvn():
    prior_loc, prior_scale, obs_scale, group_idx, value = _gnn_case()
    d = GroupedNormalNormal(prior_loc, prior_scale, obs_scale, group_idx)
    same = (group_idx[:, None] == group_idx[None, :]).to(F64)
    cov = torch.diag(obs_scale**2) + same * prior_scale[group_idx, None] ** 2
    ref = st.multivariate_normal(prior_loc[group_idx].numpy(), cov.numpy()).logpdf(value.numpy())
    assert d.log_prob(value).shape == ()
    assert float(d.log_prob(value)) == pytest.approx(ref, rel=1e-12)
    # An empty group contributes nothing; a scalar obs_scale broadcasts.
    d2 = GroupedNormalNormal(prior_loc, prior_scale, torch.tensor(0.7, dtype=F64), group_idx * 0)
    cov2 = 0.49 * torch.eye(7, dtype=F64) + prior_scale[0] ** 2
    ref2 = st.multivariate_normal(np.full(7, float(prior_loc[0])), cov2.numpy()).logpdf(value)
    assert float(d2.log_prob(value)) == pytest.approx(ref2, rel=1e-12)


def test_grouped_normal_normal_posterior_and_errors():
    prior_loc, prior_scale, obs_scale, group_idx, value = _gnn_case()
    d = GroupedNormalNormal(prior_loc, prior_scale, obs_scale, group_idx)
    post = d.get_posterior(value)
    for k in range(3):
        sel = group_idx == k
        prec = prior_scale[k] ** -2 + (obs_scale[sel] ** -2).sum()
        loc = (
            prior_loc[k] * prior_scale[k] ** -2 + (value[sel] * obs_scale[sel] ** -2).sum()
        ) / prec
        torch.testing.assert_close(post.loc[k], loc)
        torch.testing.assert_close(post.scale[k], prec.rsqrt())
    with pytest.raises(ValueError, match=r"group_idx must lie in \[0, 2\].*got values in \[0, 3\]"):
        GroupedNormalNormal(prior_loc, prior_scale, obs_scale, torch.tensor([0, 3, 1, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="group_idx must be a 1-dim long tensor, got dtype"):
        GroupedNormalNormal(prior_loc, prior_scale, obs_scale, group_idx.float())
    with pytest.raises(ValueError, match=r"value must have group_idx's shape \(7,\), got \(6,\)"):
        d.log_prob(value[:6])
    with pytest.raises(ValueError, match="prior_loc must be a 0- or 1-dim tensor"):
        GroupedNormalNormal(prior_loc[None], prior_scale, obs_scale, group_idx)


def test_grouped_normal_normal_matches_pyro():
    pyro = pytest.importorskip("pyro")
    args = _gnn_case()
    theirs = pyro.distributions.GroupedNormalNormal(*args[:4]).log_prob(args[4])
    torch.testing.assert_close(GroupedNormalNormal(*args[:4]).log_prob(args[4]), theirs)


def test_expanded_distribution_shapes_and_log_prob():
    base = Normal(torch.tensor([[0.0], [5.0]], dtype=F64), torch.ones(2, 1, dtype=F64))
    d = ExpandedDistribution(base, (4, 2, 3))
    assert d.batch_shape == (4, 2, 3) and d.event_shape == () and d.has_rsample
    torch.manual_seed(0)
    x = d.rsample((5,))
    assert x.shape == (5, 4, 2, 3)
    # Row 1 comes from loc 5, row 0 from loc 0; draws along new and grown dims differ.
    assert (x[:, :, 1] > x[:, :, 0]).float().mean() > 0.99
    assert x[0, 0, 0].unique().numel() == 3 and x[0, :, 0, 0].unique().numel() == 4
    value = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=F64)
    torch.testing.assert_close(d.log_prob(value), base.log_prob(value).expand(4, 2, 3))
    assert d.log_prob(torch.zeros(7, 1, 1, 1, dtype=F64)).shape == (7, 4, 2, 3)
    torch.testing.assert_close(d.mean, torch.tensor([0.0, 5.0], dtype=F64)[:, None].expand(4, 2, 3))
    assert d.expand((6, 4, 2, 3)).batch_shape == (6, 4, 2, 3)
    with pytest.raises(ValueError, match=r"batch_shape \(2, 2\) does not expand .* \(2, 3\)"):
        ExpandedDistribution(base, (2, 3)).expand((2, 2))
    with pytest.raises(ValueError, match=r"batch_shape \(3,\) does not expand"):
        ExpandedDistribution(base, (3,))
    b = ExpandedDistribution(Bernoulli(torch.tensor([0.3, 0.6])), (5, 2))
    assert b.enumerate_support().shape == (2, 5, 2) and b.has_enumerate_support


def test_expanded_distribution_matches_pyro():
    pyro = pytest.importorskip("pyro")
    base = Normal(torch.tensor([[0.0], [5.0]], dtype=F64), torch.ones(2, 1, dtype=F64))
    torch.manual_seed(7)
    ours = ExpandedDistribution(base, (4, 2, 3)).sample((5,))
    torch.manual_seed(7)
    theirs = pyro.distributions.ExpandedDistribution(base, (4, 2, 3)).sample((5,))
    torch.testing.assert_close(ours, theirs)
