"""WeighedPredictive and MHResampler on a conjugate model whose answers are known exactly."""

from __future__ import annotations

import math

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.infer import MHResampler, Predictive, WeighedPredictive, WeighedPredictiveResults

DATA = torch.tensor([0.8, 1.6, 0.3])


def model(data=None):
    z = vitorch.sample("z", dist.Normal(0.0, 1.0))
    with vitorch.plate("data", 3):
        vitorch.sample("x", dist.Normal(z, 1.0), obs=data)
    return z


def guide(data=None):
    # Deliberately off: the posterior is N(sum/4, 1/4) = N(0.675, 0.25).
    vitorch.sample("z", dist.Normal(0.0, 1.0))


def conditioned(data=None):
    return model(DATA)


def _exact_log_weight(z: torch.Tensor) -> torch.Tensor:
    prior = dist.Normal(0.0, 1.0).log_prob(z)
    lik = dist.Normal(z.unsqueeze(-1), 1.0).log_prob(DATA).sum(-1)
    return prior + lik - dist.Normal(0.0, 1.0).log_prob(z)


@pytest.mark.parametrize("parallel", [False, True])
def test_log_weights_are_model_over_guide_per_draw(parallel):
    vitorch.set_rng_seed(0)
    pred = WeighedPredictive(model, guide=guide, num_samples=50, parallel=parallel)
    out = pred(model_guide=conditioned)
    z = out.samples["z"].reshape(50)
    assert torch.allclose(out.log_weights, _exact_log_weight(z), atol=1e-5)
    assert torch.allclose(out.guide_log_prob, dist.Normal(0.0, 1.0).log_prob(z), atol=1e-6)
    # The predictive samples come from the unconditioned model: x is drawn, not the data.
    assert out.samples["x"].shape[0] == 50 and not torch.equal(out.samples["x"][0].reshape(3), DATA)


def test_weights_correct_a_poor_guide():
    vitorch.set_rng_seed(1)
    out = WeighedPredictive(model, guide=guide, num_samples=40000, parallel=True)(
        model_guide=conditioned
    )
    z = out.samples["z"].reshape(-1)
    w = out.get_normalized_weights()
    post_mean, post_var = DATA.sum().item() / 4, 0.25
    ess = out.get_ESS().item()
    assert 0 < ess < 40000
    se = math.sqrt(post_var / ess)
    assert (w * z).sum().item() == pytest.approx(post_mean, abs=5 * se)
    # log p(x) for x ~ N(0, I + 11^T)
    cov = torch.eye(3) + torch.ones(3, 3)
    log_evidence = dist.MultivariateNormal(torch.zeros(3), cov).log_prob(DATA).item()
    assert out.get_log_normalizer().item() == pytest.approx(log_evidence, abs=0.05)


def test_call_returns_sorted_tuple_and_guide_is_required():
    vitorch.set_rng_seed(2)
    res = WeighedPredictive(model, guide=guide, num_samples=4).call(model_guide=conditioned)
    assert isinstance(res, WeighedPredictiveResults) and isinstance(res.samples, tuple)
    assert [s.shape[0] for s in res.samples] == [4, 4]
    with pytest.raises(ValueError, match="guide"):
        WeighedPredictive(model, num_samples=4)
    samples = Predictive(model, guide=guide, num_samples=3).call()
    assert isinstance(samples, tuple) and len(samples) == 2


def test_mh_resampler_reaches_the_posterior():
    vitorch.set_rng_seed(3)
    pred = WeighedPredictive(
        model, guide=guide, num_samples=4000, parallel=True, return_sites=["z"]
    )
    resampler = MHResampler(pred, stored_samples_slice=slice(-1, None))
    first = resampler(model_guide=conditioned)
    assert first.samples["z"].reshape(-1).mean().abs() < 0.1  # the guide's draws
    for _ in range(40):
        out = resampler(model_guide=conditioned)
    z = out.samples["z"].reshape(-1)
    # The chains are not independent of their start, so the tolerance is generous
    # but far tighter than the guide's error (0.675 in the mean, 0.75 in the variance).
    assert z.mean().item() == pytest.approx(0.675, abs=0.06)
    assert z.var().item() == pytest.approx(0.25, abs=0.05)
    assert 0 < resampler.get_total_transition_count().item() < 40 * 4000
    stored = resampler.get_stored_samples()
    assert stored["samples"]["z"].shape[0] == 4000 and stored["log_weights"].shape == (4000,)
    # The kept states' weights are those of their draws.
    assert torch.allclose(out.log_weights, _exact_log_weight(z), atol=1e-4)


def test_mh_resampler_checks_its_sampler():
    with pytest.raises(TypeError, match="callable"):
        MHResampler(3)
    with pytest.raises(TypeError, match="WeighedPredictiveResults"):
        MHResampler(lambda: {"z": torch.zeros(2)})()
