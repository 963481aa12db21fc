"""The encoder/decoder example of the amortized-VI page, with ``pyro`` renamed ``vitorch``.

The example's code is kept as written on the page (only the import names change), then run
for a few SVI steps on random binary 784-pixel images. The step's loss is checked against
the ELBO written out by hand for the same noise draw.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, Trace_ELBO
from vitorch.optim import Adam


# ---- the page's example, verbatim but for the rename ------------------------------------
class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)  # mean
        self.fc22 = nn.Linear(hidden_dim, z_dim)  # log-variance
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, 784)
        hidden = self.softplus(self.fc1(x))
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, 784)
        self.softplus = nn.Softplus()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        loc_img = torch.sigmoid(self.fc21(hidden))
        return loc_img


def _build():
    encoder = Encoder(z_dim=50, hidden_dim=400)
    decoder = Decoder(z_dim=50, hidden_dim=400)

    def model(x):
        vitorch.module("decoder", decoder)
        with vitorch.plate("data", x.shape[0]):
            z_loc = torch.zeros(x.shape[0], 50, device=x.device)
            z_scale = torch.ones(x.shape[0], 50, device=x.device)
            z = vitorch.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = decoder(z)
            vitorch.sample("obs", dist.Bernoulli(loc_img).to_event(1), obs=x.reshape(-1, 784))

    def guide(x):
        vitorch.module("encoder", encoder)
        with vitorch.plate("data", x.shape[0]):
            z_loc, z_scale = encoder(x)
            vitorch.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    svi = SVI(model, guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())
    return encoder, decoder, model, guide, svi


# ---- the checks ---------------------------------------------------------------------------
def _hand_loss(encoder, decoder, x):
    """Minus the one-sample ELBO, drawing the noise as the guide does."""
    z_loc, z_scale = encoder(x)
    z = z_loc + torch.empty_like(z_loc).normal_() * z_scale
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_q = (-((z - z_loc) ** 2) / (2 * z_scale**2) - z_scale.log() - half_log_2pi).sum()
    log_prior = (-(z**2) / 2 - half_log_2pi).sum()
    probs = decoder(z).clamp(torch.finfo(z.dtype).eps, 1 - torch.finfo(z.dtype).eps)
    logits = probs.log() - torch.log1p(-probs)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return -(log_lik + log_prior - log_q)


def test_seed_vae_example_runs_under_vitorch():
    torch.manual_seed(0)
    encoder, decoder, model, guide, svi = _build()
    x = torch.bernoulli(torch.full((32, 784), 0.3))

    store = vitorch.get_param_store()
    enc_start = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    dec_start = {k: v.detach().clone() for k, v in decoder.state_dict().items()}

    torch.manual_seed(5)
    loss = svi.step(x)
    # The first step's loss is the ELBO at the initial weights: recompute it from a copy.
    enc0, dec0 = Encoder(50, 400), Decoder(50, 400)
    enc0.load_state_dict(enc_start)
    dec0.load_state_dict(dec_start)
    torch.manual_seed(5)
    with torch.no_grad():
        expected = float(_hand_loss(enc0, dec0, x))
    assert loss == pytest.approx(expected, rel=1e-5)

    names = {f"encoder$$${k}" for k, _ in encoder.named_parameters()}
    names |= {f"decoder$$${k}" for k, _ in decoder.named_parameters()}
    assert set(store.keys()) == names
    assert len(names) == 10

    losses = [loss] + [svi.step(x) for _ in range(4)]
    assert all(math.isfinite(v) for v in losses)
    for k, v in encoder.named_parameters():
        assert not torch.equal(v, enc_start[k]), k
    for k, v in decoder.named_parameters():
        assert not torch.equal(v, dec_start[k]), k

    # Amortized inference on unseen images: one encoder pass gives every posterior.
    z_loc, z_scale = encoder(torch.bernoulli(torch.full((7, 784), 0.3)))
    assert z_loc.shape == z_scale.shape == (7, 50)
    assert bool((z_scale > 0).all())
