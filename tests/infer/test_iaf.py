"""AutoIAFNormal against a posterior known exactly.

The model is a correlated 2-D Gaussian, so the posterior is the model itself. One affine
autoregressive layer maps a standard Normal to any 2-D Gaussian (second coordinate's mean
linear in the first, constant log-scales), so the optimum of the ELBO is the exact
posterior and the fitted guide's moments, estimated from 200000 draws (Monte Carlo error
below 0.005 standard deviations), must match it. The tolerances are those the other
continuous guides meet in ``test_autoguide.py`` (mean within 0.1 posterior sd, sd within
5 %, correlation within 0.06). Across seeds 0-29 this fit's worst errors were 0.031 sd,
2.6 % and 0.022: about half the tolerances or less, a margin for the seed
(``VITORCH_TEST_SEED``), not for a bias.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, Predictive, Trace_ELBO
from vitorch.infer.autoguide import init_to_value
from vitorch.infer.autoguide.iaf import AutoIAFNormal

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 1.2], [1.2, 4.0]])  # correlation 0.6


def gaussian() -> None:
    vitorch.sample("z", dist.MultivariateNormal(MEAN, COV))


def fit(model, guide, steps: int, *args, lr: float = 0.05, final: float = 0.02) -> SVI:
    """``steps`` SVI steps with the learning rate decaying from ``lr`` to ``lr * final``."""
    optim = vitorch.optim.ClippedAdam({"lr": lr, "lrd": final ** (1 / steps)})
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=64, vectorize_particles=True))
    for _ in range(steps):
        svi.step(*args)
    return svi


def test_fit_recovers_the_exact_posterior_moments_median_and_quantiles() -> None:
    guide = AutoIAFNormal(gaussian)
    fit(gaussian, guide, 1500)
    with torch.no_grad():
        draws = guide.get_posterior().sample((200_000,)).double()
    mean, cov = MEAN.double(), COV.double()
    sd = cov.diagonal().sqrt()
    found_cov = torch.cov(draws.T)
    found_sd = found_cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean) / sd).abs().max() < 0.1, draws.mean(0)
    assert ((found_sd / sd) - 1).abs().max() < 0.05, found_sd
    corr = cov / sd[:, None] / sd
    found_corr = found_cov / found_sd[:, None] / found_sd
    assert (found_corr - corr).abs().max() < 0.06, found_corr

    # The marginals are Normal: median = mean, quantiles from the exact marginal sds.
    sd = sd.float()
    median = guide.median()
    assert set(median) == {"z"} and median["z"].shape == (2,)
    assert ((median["z"] - MEAN) / sd).abs().max() < 0.1
    # Deterministic: a fixed quasi-random sequence, not the global random state.
    assert torch.equal(guide.median()["z"], median["z"])
    levels = [0.1, 0.5, 0.9]
    q = guide.quantiles(levels)["z"]
    assert q.shape == (3, 2)
    exact = dist.Normal(MEAN, sd).icdf(torch.tensor(levels)[:, None])
    assert ((q - exact) / sd).abs().max() < 0.1, (q, exact)
    assert torch.equal(q[1], median["z"])
    with pytest.raises(ValueError, match="quantiles"):
        guide.quantiles([0.5, 1.0])


def test_networks_and_loc_are_parameters_of_the_guide_and_the_store() -> None:
    guide = AutoIAFNormal(gaussian, num_transforms=2)
    guide()
    names = {name for name, _ in guide.named_parameters()}
    expected = {"loc"} | {
        f"transform.{k}.arn.layers.{i}.{w}"
        for k in (0, 1)
        for i in (0, 1)
        for w in ("weight", "bias")
    }
    assert names == expected
    before = {name: p.detach().clone() for name, p in guide.named_parameters()}
    svi = SVI(gaussian, guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step()
    store = vitorch.get_param_store()
    assert "AutoIAFNormal.loc" in store
    for name, p in guide.named_parameters():
        if name != "loc":
            # Pyro's names for the parameters of a plain module inside a PyroModule.
            key = "AutoIAFNormal.transform$$$" + name[len("transform.") :]
            assert store[key] is p
        assert not torch.equal(before[name], p.detach()), name
    assert guide.transform[1] is guide.transform.parts[1]


def test_loc_starts_at_init_loc_fn_in_unconstrained_space() -> None:
    def model() -> None:
        vitorch.sample("a", dist.Normal(0.0, 1.0))
        vitorch.sample("s", dist.LogNormal(0.0, 1.0))

    init = init_to_value(values={"a": torch.tensor(3.0), "s": torch.tensor(2.0)})
    guide = AutoIAFNormal(model, init_loc_fn=init)
    guide()
    # Packed in the model's order, each site unconstrained: a as is, s as log(s).
    torch.testing.assert_close(guide.loc.detach(), torch.tensor([3.0, math.log(2.0)]))
    # None is Pyro's default: the guide then starts at zero in unconstrained space.
    pyro_like = AutoIAFNormal(model, init_loc_fn=None)
    pyro_like()
    assert torch.equal(pyro_like.loc.detach(), torch.zeros(2))
    # The guide's draws follow loc: a shift of loc shifts every draw of the vector.
    vitorch.set_rng_seed(1)
    u1 = guide.get_posterior().sample()
    with torch.no_grad():
        guide.loc += 10.0
    vitorch.set_rng_seed(1)
    u2 = guide.get_posterior().sample()
    torch.testing.assert_close(u2 - u1, torch.full((2,), 10.0))


def test_call_predictive_and_constrained_sites() -> None:
    def model(x: torch.Tensor) -> None:
        w = vitorch.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        s = vitorch.sample("s", dist.LogNormal(0.0, 1.0))
        with vitorch.plate("data", x.shape[0]):
            vitorch.sample("y", dist.Normal((x * w).sum(-1), s), obs=torch.zeros(x.shape[0]))

    x = torch.randn(6, 3)
    guide = AutoIAFNormal(model, hidden_dim=8, num_transforms=2, stable=True)
    out = guide(x)
    assert out["w"].shape == (3,) and out["s"].shape == ()
    assert guide.latent_dim == 4
    assert guide.transform[0].arn.hidden_dims == [8] and guide.transform[0].stable
    for parallel in (False, True):
        samples = Predictive(model, guide=guide, num_samples=7, parallel=parallel)(x)
        # Sites outside the plate keep a size-1 plate dim, as with every guide (Pyro's way).
        assert samples["w"].shape == (7, 1, 3)
        assert samples["s"].shape == (7, 1) and bool((samples["s"] > 0).all())
        assert samples["y"].shape == (7, 6)
    # Vectorized particles: the flows take the particle dim as a batch dim.
    loss = Trace_ELBO(num_particles=5, vectorize_particles=True).loss(model, guide, x)
    assert torch.isfinite(torch.tensor(loss))
    assert guide.median(x)["s"] > 0
    assert guide.quantiles([0.25, 0.75], x)["w"].shape == (2, 3)


def test_guide_density_is_the_flow_density_of_its_draw() -> None:
    guide = AutoIAFNormal(gaussian, num_transforms=2)
    trace = vitorch.poutine.trace(guide).get_trace()
    latent = trace.nodes["_AutoIAFNormal_latent"]
    value = latent["value"]
    expected = guide.get_posterior().log_prob(value.detach().clone())
    torch.testing.assert_close(latent["fn"].log_prob(value), expected)


def test_guide_copies_after_a_step() -> None:
    guide = AutoIAFNormal(gaussian)
    SVI(gaussian, guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO()).step()
    clone = copy.deepcopy(guide)
    torch.testing.assert_close(clone.median()["z"], guide.median()["z"])


def test_default_width_is_pyros() -> None:
    guide = AutoIAFNormal(gaussian)
    guide()
    assert guide.transform[0].arn.hidden_dims == [3 * 2 + 1]


@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        (dict(hidden_dim=0), ValueError, "hidden_dim"),
        (dict(hidden_dim=[]), ValueError, "hidden_dim"),
        (dict(hidden_dim=[4, 2.5]), ValueError, "hidden_dim"),
        (dict(hidden_dim="8"), ValueError, "hidden_dim"),
        (dict(num_transforms=0), ValueError, "num_transforms"),
        (dict(num_transforms=True), ValueError, "num_transforms"),
        (dict(hidden_dims=[8]), TypeError, "hidden_dims"),
        (dict(init_loc_fn=3), TypeError, "init_loc_fn"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, argument) -> None:
    with pytest.raises(error, match=argument):
        AutoIAFNormal(gaussian, **kwargs)


def test_hidden_layer_narrower_than_the_latent_vector_is_refused_on_setup() -> None:
    guide = AutoIAFNormal(gaussian, hidden_dim=[1])
    with pytest.raises(ValueError, match="hidden_dim.*latent dimension 2"):
        guide()


@pytest.mark.parametrize("vectorize", [False, True])
def test_a_step_runs_each_network_once_per_draw(vectorize) -> None:
    # The guide's log-density of its own draw must come from the layers' caches: the
    # sequential inverse would cost latent_dim network calls per layer.
    def model() -> None:
        vitorch.sample("z", dist.Normal(torch.zeros(4), 1.0).to_event(1))

    guide = AutoIAFNormal(model, num_transforms=2)
    guide()
    calls = [0]

    def count(*_):
        calls[0] += 1

    for flow in guide.transform:
        flow.arn.register_forward_hook(count)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=vectorize)
    svi = SVI(model, guide, vitorch.optim.Adam({"lr": 0.01}), elbo)
    svi.step()  # the first step may run the guide once more, to find its plates
    calls[0] = 0
    svi.step()
    assert calls[0] == 2 * (1 if vectorize else 3)
