"""vitorch.distributions against SciPy, from one table of cases.

Each case builds a vitorch distribution with batch shape ``(3,)`` and, for each
batch element, the matching frozen SciPy distribution. ``log_prob``, ``mean``
and ``variance`` are compared elementwise; then the Pyro conventions
(``to_event``, ``expand_by``, ``mask``, ``shape``, ``__call__``) are checked on
the same distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import vitorch.distributions as dist
from vitorch.distributions import TorchDistributionMixin

F64 = torch.float64
BATCH = 3


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


@dataclass(frozen=True)
class Case:
    """One table row: a vitorch distribution and its SciPy twin per batch element."""

    name: str
    make: Callable[[], Any]
    # scipy.stats module and batch index -> frozen distribution
    scipy: Callable[[Any, int], Any]
    discrete: bool = False
    moments: bool = True  # False where mean/variance are undefined
    # turn a torch sample into what SciPy's density takes (e.g. one-hot)
    to_scipy: Callable[[torch.Tensor], Any] = lambda x: x.numpy()


def _mvn_cov() -> torch.Tensor:
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=F64)
    scales = _t(1.0, 2.0, 0.5)
    return (a @ a.T) * scales[:, None, None] ** 2


_LOC, _SCALE = _t(-1.0, 0.0, 2.5), _t(0.5, 1.0, 2.0)
_CONC, _RATE = _t(2.5, 3.0, 7.0), _t(0.5, 1.0, 4.0)
_PROBS = _t(0.1, 0.5, 0.8)
_CAT_PROBS = torch.tensor([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype=F64)
_DIR_CONC = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 4.0], [5.0, 1.5, 2.0]], dtype=F64)
_MVN_LOC = torch.tensor([[0.0, 1.0], [-2.0, 0.5], [3.0, 3.0]], dtype=F64)

CASES = [
    Case(
        "Normal",
        lambda: dist.Normal(_LOC, _SCALE),
        lambda st, i: st.norm(_LOC[i].item(), _SCALE[i].item()),
    ),
    Case(
        "LogNormal",
        lambda: dist.LogNormal(_LOC, _SCALE),
        lambda st, i: st.lognorm(s=_SCALE[i].item(), scale=_LOC[i].exp().item()),
    ),
    Case(
        "HalfNormal",
        lambda: dist.HalfNormal(_SCALE),
        lambda st, i: st.halfnorm(scale=_SCALE[i].item()),
    ),
    Case(
        "HalfCauchy",
        lambda: dist.HalfCauchy(_SCALE),
        lambda st, i: st.halfcauchy(scale=_SCALE[i].item()),
        moments=False,
    ),
    Case(
        "Cauchy",
        lambda: dist.Cauchy(_LOC, _SCALE),
        lambda st, i: st.cauchy(_LOC[i].item(), _SCALE[i].item()),
        moments=False,
    ),
    Case(
        "StudentT",
        lambda: dist.StudentT(_CONC, _LOC, _SCALE),
        lambda st, i: st.t(_CONC[i].item(), _LOC[i].item(), _SCALE[i].item()),
    ),
    Case(
        "Laplace",
        lambda: dist.Laplace(_LOC, _SCALE),
        lambda st, i: st.laplace(_LOC[i].item(), _SCALE[i].item()),
    ),
    Case(
        "Gamma",
        lambda: dist.Gamma(_CONC, _RATE),
        lambda st, i: st.gamma(_CONC[i].item(), scale=1 / _RATE[i].item()),
    ),
    Case(
        "InverseGamma",
        lambda: dist.InverseGamma(_CONC, _RATE),
        lambda st, i: st.invgamma(_CONC[i].item(), scale=_RATE[i].item()),
    ),
    Case(
        "Beta",
        lambda: dist.Beta(_CONC, _RATE),
        lambda st, i: st.beta(_CONC[i].item(), _RATE[i].item()),
    ),
    Case(
        "Exponential",
        lambda: dist.Exponential(_RATE),
        lambda st, i: st.expon(scale=1 / _RATE[i].item()),
    ),
    Case(
        "Uniform",
        lambda: dist.Uniform(_LOC, _LOC + _SCALE),
        lambda st, i: st.uniform(_LOC[i].item(), _SCALE[i].item()),
    ),
    Case(
        "Bernoulli",
        lambda: dist.Bernoulli(_PROBS),
        lambda st, i: st.bernoulli(_PROBS[i].item()),
        discrete=True,
    ),
    Case(
        "Binomial",
        lambda: dist.Binomial(10, _PROBS),
        lambda st, i: st.binom(10, _PROBS[i].item()),
        discrete=True,
    ),
    Case(
        "Categorical",
        lambda: dist.Categorical(_CAT_PROBS),
        lambda st, i: st.multinomial(1, _CAT_PROBS[i].numpy()),
        discrete=True,
        # torch defines no mean/variance for labels; SciPy's is for one-hot.
        moments=False,
        to_scipy=lambda x: torch.nn.functional.one_hot(x, 3).numpy(),
    ),
    Case(
        "Poisson",
        lambda: dist.Poisson(_CONC),
        lambda st, i: st.poisson(_CONC[i].item()),
        discrete=True,
    ),
    Case(
        # torch counts successes (probability `probs`) before `total_count`
        # failures; SciPy counts failures before n successes.
        "NegativeBinomial",
        lambda: dist.NegativeBinomial(_CONC, _PROBS),
        lambda st, i: st.nbinom(_CONC[i].item(), 1 - _PROBS[i].item()),
        discrete=True,
    ),
    Case(
        "Dirichlet",
        lambda: dist.Dirichlet(_DIR_CONC),
        lambda st, i: st.dirichlet(_DIR_CONC[i].numpy()),
    ),
    Case(
        "MultivariateNormal",
        lambda: dist.MultivariateNormal(_MVN_LOC, covariance_matrix=_mvn_cov()),
        lambda st, i: st.multivariate_normal(_MVN_LOC[i].numpy(), _mvn_cov()[i].numpy()),
    ),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _scipy_log_density(case: Case, frozen: Any, x: torch.Tensor) -> float:
    fn = frozen.logpmf if case.discrete else frozen.logpdf
    return float(fn(case.to_scipy(x)))


def _scipy_moment(frozen: Any, name: str) -> torch.Tensor:
    # SciPy's multivariate frozen objects are not uniform: `mean` is a method
    # or an array, and a multivariate normal has `cov` but no `var`.
    if name == "mean":
        value = frozen.mean
    else:
        value = getattr(frozen, "var", None)
        if value is None:
            return torch.as_tensor(frozen.cov, dtype=F64).diagonal()
    value = value() if callable(value) else value
    return torch.as_tensor(value, dtype=F64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_log_prob_matches_scipy(case: Case) -> None:
    stats = pytest.importorskip("scipy.stats")
    d = case.make()
    assert d.batch_shape == (BATCH,)
    x = d.sample((4,))
    lp = d.log_prob(x)
    assert lp.shape == (4, BATCH)
    expected = torch.tensor(
        [
            [_scipy_log_density(case, case.scipy(stats, i), x[n, i]) for i in range(BATCH)]
            for n in range(4)
        ],
        dtype=F64,
    )
    torch.testing.assert_close(lp.to(F64), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", [c for c in CASES if c.moments], ids=lambda c: c.name)
def test_mean_and_variance_match_scipy(case: Case) -> None:
    stats = pytest.importorskip("scipy.stats")
    d = case.make()
    for name in ("mean", "variance"):
        expected = torch.stack([_scipy_moment(case.scipy(stats, i), name) for i in range(BATCH)])
        torch.testing.assert_close(
            getattr(d, name).to(F64), expected.reshape(d.batch_shape + d.event_shape)
        )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_pyro_conventions(case: Case) -> None:
    d = case.make()
    assert isinstance(d, TorchDistributionMixin)
    event = d.event_shape
    assert d.shape() == (BATCH,) + event
    assert d.shape((2, 5)) == (2, 5, BATCH) + event
    assert d().shape == d.shape()
    x = d.sample((2,))
    assert x.shape == d.shape((2,))
    lp = d.log_prob(x)

    wide = d.expand_by((4, 2))
    assert wide.batch_shape == (4, 2, BATCH)
    assert type(wide) is type(d)
    torch.testing.assert_close(wide.log_prob(x), lp.expand(4, 2, BATCH))

    ev = d.to_event(1)
    assert ev.batch_shape == ()
    assert ev.event_shape == (BATCH,) + event
    torch.testing.assert_close(ev.log_prob(x), lp.sum(-1))
    assert d.to_event(0) is d

    mask = torch.tensor([True, False, True])
    masked = d.mask(mask)
    assert masked.batch_shape == (BATCH,)
    torch.testing.assert_close(masked.log_prob(x), torch.where(mask, lp, 0.0))
    # Masking and to_event compose as in Pyro: masked entries drop out of the sum.
    torch.testing.assert_close(masked.to_event(1).log_prob(x), torch.where(mask, lp, 0.0).sum(-1))
