"""``Predictive`` against closed forms: posterior predictive means and variances, shapes.

Monte Carlo checks allow ``Z`` standard errors, and the draws are many enough that those
are small; the vectorized and the sequential paths must both pass the same checks.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.infer import Predictive
from vitorch.infer.autoguide import AutoMultivariateNormal, AutoNormal

Z = 4.0
S = 4000
SIGMA = 0.5


def model(x: torch.Tensor | None = None, n: int = 3) -> torch.Tensor:
    z = vitorch.sample("z", dist.Normal(0.0, 1.0))
    vitorch.deterministic("twice", 2 * z)
    with vitorch.plate("data", n):
        return vitorch.sample("x", dist.Normal(z, SIGMA), obs=x)


def _check_moments(samples: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> None:
    """Sample mean and sd along dim 0 match (within Z standard errors)."""
    n = samples.shape[0]
    found_mean = samples.mean(0)
    found_sd = samples.std(0)
    assert ((found_mean - mean).abs() < Z * sd / n**0.5).all(), (found_mean, mean)
    # The sd of a Normal sample sd is about sd / sqrt(2 n).
    assert ((found_sd - sd).abs() < Z * sd / (2 * n) ** 0.5).all(), (found_sd, sd)


@pytest.mark.parametrize("parallel", [False, True])
def test_predictive_given_posterior_samples(parallel: bool) -> None:
    z = torch.linspace(-2.0, 2.0, S)
    samples = Predictive(model, {"z": z}, parallel=parallel, return_sites=None)(None, 3)
    assert set(samples) == {"z", "twice", "x"}
    # z is the deepest plate's sibling: (S, 1), as Pyro returns it.
    assert samples["z"].shape == (S, 1) and samples["x"].shape == (S, 3)
    assert torch.equal(samples["z"][:, 0], z)
    assert torch.equal(samples["twice"][:, 0], 2 * z)  # the same draws in both modes
    residual = samples["x"] - z[:, None]
    _check_moments(residual, torch.zeros(3), torch.full((3,), SIGMA))


@pytest.mark.parametrize("parallel", [False, True])
def test_default_return_sites_are_those_not_given(parallel: bool) -> None:
    samples = Predictive(model, {"z": torch.zeros(5)}, parallel=parallel)(None, 2)
    assert set(samples) == {"twice", "x"}
    samples = Predictive(
        model, {"z": torch.zeros(5)}, parallel=parallel, return_sites=["x", "_RETURN"]
    )(None, 2)
    assert set(samples) == {"x", "_RETURN"}
    assert torch.equal(samples["_RETURN"], samples["x"])


@pytest.mark.parametrize("parallel", [False, True])
def test_observed_data_is_returned_as_given(parallel: bool) -> None:
    x = torch.tensor([0.5, -1.0])
    samples = Predictive(model, {"z": torch.zeros(7)}, parallel=parallel)(x, 2)
    assert samples["x"].shape == (7, 2) and torch.equal(samples["x"], x.expand(7, 2))


@pytest.mark.parametrize("parallel", [False, True])
def test_predictive_from_a_normal_guide(parallel: bool) -> None:
    guide = AutoNormal(model)
    guide(torch.zeros(3), 3)  # set up with data: x is observed
    guide.locs.z = torch.tensor(1.5)
    guide.scales.z = torch.tensor(0.3)
    samples = Predictive(model, guide=guide, num_samples=S, parallel=parallel)(None, 3)
    # With a guide, every model site is returned.
    assert set(samples) == {"z", "twice", "x"}
    _check_moments(samples["z"][:, 0], torch.tensor(1.5), torch.tensor(0.3))
    x_sd = torch.tensor(0.3**2 + SIGMA**2).sqrt()
    _check_moments(samples["x"], torch.full((3,), 1.5), x_sd.expand(3))
    # Draws of x given z: x - z has the likelihood's spread, whatever the posterior.
    _check_moments(samples["x"] - samples["z"], torch.zeros(3), torch.full((3,), SIGMA))


def vector_model(X: torch.Tensor, y: torch.Tensor | None = None) -> None:
    w = vitorch.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with vitorch.plate("data", X.shape[0]):
        vitorch.sample("y", dist.Normal((X * w).sum(-1), SIGMA), obs=y)


@pytest.mark.parametrize("parallel", [False, True])
def test_predictive_from_a_multivariate_guide(parallel: bool) -> None:
    X = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    guide = AutoMultivariateNormal(vector_model)
    guide(X, torch.zeros(3))
    loc = torch.tensor([0.5, -1.0])
    scale_tril = torch.tensor([[0.4, 0.0], [0.3, 0.2]])
    with torch.no_grad():
        guide.loc.copy_(loc)
    guide.scale = scale_tril.diagonal()
    guide.scale_tril = scale_tril / scale_tril.diagonal()[:, None]
    samples = Predictive(model=vector_model, guide=guide, num_samples=S, parallel=parallel)(X)
    assert samples["w"].shape == (S, 1, 2) and samples["y"].shape == (S, 3)
    cov_w = scale_tril @ scale_tril.T
    _check_moments(samples["w"][:, 0], loc, cov_w.diagonal().sqrt())
    y_var = (X @ cov_w * X).sum(-1) + SIGMA**2
    _check_moments(samples["y"], X @ loc, y_var.sqrt())


def test_vector_latent_samples_line_up_with_the_predictive_plate() -> None:
    # (S, 2) draws of a (2,)-valued site sit left of the data plate when vectorized.
    X = torch.randn(4, 2)
    w = torch.randn(6, 2)
    par = Predictive(vector_model, {"w": w}, parallel=True, return_sites=["w", "y"])(X)
    seq = Predictive(vector_model, {"w": w}, parallel=False, return_sites=["w", "y"])(X)
    assert par["w"].shape == seq["w"].shape == (6, 1, 2)
    assert par["y"].shape == seq["y"].shape == (6, 4)
    assert torch.equal(par["w"], seq["w"])


def test_get_vectorized_trace() -> None:
    tr = Predictive(model, {"z": torch.zeros(5)}).get_vectorized_trace(None, 3)
    x = tr.nodes["x"]
    assert x["fn"].batch_shape == (5, 3)
    assert [f.name for f in x["cond_indep_stack"]] == ["_num_predictive_samples", "data"]
    assert Predictive(model, {"z": torch.zeros(5)}).get_samples(None, 3)["x"].shape == (5, 3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="posterior_samples or num_samples"):
        Predictive(model)
    with pytest.raises(ValueError, match="not both"):
        Predictive(model, {"z": torch.zeros(2)}, guide=lambda *a: None)
    with pytest.raises(TypeError, match="return_sites"):
        Predictive(model, num_samples=2, return_sites="x")
    with pytest.raises(ValueError, match="num_samples"):
        Predictive(model, num_samples=0)
    with pytest.raises(ValueError, match=r"\['nope'\] are not sample sites"):
        Predictive(model, num_samples=2, return_sites=["nope"])(None, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = Predictive(model, {"z": torch.zeros(4)}, num_samples=10)
    assert p.num_samples == 4 and "4 draws" in str(caught[0].message)


def test_shapes_agree_with_pyro() -> None:
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist

    def make(lib, d):
        def m(x=None):
            z = lib.sample("z", d.Normal(0.0, 1.0))
            with lib.plate("outer", 2, dim=-2):
                a = lib.sample("a", d.Normal(z, 1.0))
                with lib.plate("inner", 3, dim=-1):
                    lib.sample("x", d.Normal(a, 1.0), obs=x)

        return m

    for parallel in (False, True):
        ours = Predictive(make(vitorch, dist), {"z": torch.zeros(5)}, parallel=parallel)()
        theirs = pyro.infer.Predictive(
            make(pyro, pdist), {"z": torch.zeros(5)}, parallel=parallel
        )()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
