"""The digits VAE trained with vitorch matches the same VAE trained by a hand-written torch loop.

Both start from the same weights, see the same minibatches in the same order, take the same
number of Adam steps, and draw the reparameterization noise ``eps`` in the same order from
the same seed. The torch loop writes the Monte Carlo ELBO out by hand
(``log p(x|z) + log p(z) - log q(z|x)`` at ``z = loc + eps * scale``), so any error in
vitorch's traces, replay, ELBO, parameter registration or optimizer plumbing shows up as a
difference in the trained weights and in the test ELBO.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vitorch
from vitorch.infer import SVI, Trace_ELBO
from vitorch.optim import Adam

_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _load_example(name: str):
    module_name = f"_vitorch_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, _EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _normal_log_density(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return -((x - loc) ** 2) / (2 * scale**2) - torch.log(scale) - _HALF_LOG_2PI


def _hand_elbo(encoder, decoder, x: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of one-sample ELBOs, with the same draw order as the guide."""
    z_loc, z_scale = encoder(x)
    eps = torch.empty_like(z_loc).normal_()
    z = z_loc + eps * z_scale
    log_q = _normal_log_density(z, z_loc, z_scale).sum(-1)
    log_prior = _normal_log_density(z, torch.zeros_like(z), torch.ones_like(z)).sum(-1)
    probs = decoder(z)
    tiny = torch.finfo(probs.dtype).eps
    p = probs.clamp(tiny, 1 - tiny)
    logits = torch.log(p) - torch.log1p(-p)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    return (log_lik + log_prior - log_q).sum()


def test_vitorch_vae_matches_hand_written_torch_vae():
    ex = _load_example("vae")
    train, test = ex.load_digits_split(seed=0)
    torch.manual_seed(123)
    vae = ex.VAE(z_dim=8, hidden_dim=64)
    reference = ex.VAE(z_dim=8, hidden_dim=64)
    reference.load_state_dict(vae.state_dict())
    initial = {k: v.clone() for k, v in vae.state_dict().items()}
    epochs, batch_size, lr = 6, 100, 1e-3

    # vitorch: SVI with Trace_ELBO and vitorch's Adam wrapper.
    svi = SVI(vae.model, vae.guide, Adam({"lr": lr}), loss=Trace_ELBO())
    vitorch.set_rng_seed(7)
    batches = torch.Generator().manual_seed(0)
    steps = 0
    for _ in range(epochs):
        for batch in ex.minibatches(train, batch_size, batches):
            svi.step(batch)
            steps += 1

    # The hand-written loop: same start, batches, draws and optimizer.
    optimizer = torch.optim.Adam(reference.parameters(), lr=lr)
    torch.manual_seed(7)
    batches = torch.Generator().manual_seed(0)
    torch_steps = 0
    for _ in range(epochs):
        for batch in ex.minibatches(train, batch_size, batches):
            optimizer.zero_grad(set_to_none=True)
            loss = -_hand_elbo(reference.encoder, reference.decoder, batch)
            loss.backward()
            optimizer.step()
            torch_steps += 1
    assert steps == torch_steps == epochs * math.ceil(len(train) / batch_size)

    # Every weight was trained, and both runs took the same path.
    trained = vae.state_dict()
    for name, value in reference.state_dict().items():
        assert not torch.equal(trained[name], initial[name]), name
        torch.testing.assert_close(trained[name], value, rtol=1e-4, atol=1e-5, msg=name)

    # The test ELBO per image: the same noise for both, evaluated each library's way.
    vitorch.set_rng_seed(11)
    vitorch_elbo = -Trace_ELBO().loss(vae.model, vae.guide, test) / len(test)
    torch.manual_seed(11)
    with torch.no_grad():
        torch_elbo = float(_hand_elbo(reference.encoder, reference.decoder, test)) / len(test)
    assert math.isfinite(vitorch_elbo)
    assert abs(vitorch_elbo - torch_elbo) <= 0.01 * abs(torch_elbo)

    # The vitorch estimate is the hand-written one for vitorch's own weights, to float precision.
    torch.manual_seed(11)
    with torch.no_grad():
        same_weights = float(_hand_elbo(vae.encoder, vae.decoder, test)) / len(test)
    assert vitorch_elbo == pytest.approx(same_weights, rel=1e-5)
