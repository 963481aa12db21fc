"""The usage examples of the OMTMultivariateNormal reference page, with ``pyro`` -> ``vitorch``.

The page (shared/seeds/001_a090fd986dc2a3aa.txt) shows two code blocks; each is copied here
with only the import names changed, then checked against exact values.
"""

from __future__ import annotations

import pytest
import torch


def test_omt_page_first_block_rsample_and_backward() -> None:
    from vitorch.distributions import OMTMultivariateNormal

    # Create a 3-dimensional OMT multivariate normal
    loc = torch.zeros(3, requires_grad=True)
    scale_tril = torch.eye(3, requires_grad=True)

    dist = OMTMultivariateNormal(loc, scale_tril)

    # Draw a sample with OMT gradients
    sample = dist.rsample()
    assert sample.shape == torch.Size([3])

    # Compute a loss and backpropagate
    loss = sample.sum()
    loss.backward()

    # d(sum z)/d loc = 1 for every entry, as for the ordinary reparameterization.
    assert torch.equal(loc.grad, torch.ones(3))
    assert scale_tril.grad.shape == (3, 3)
    assert torch.isfinite(scale_tril.grad).all()
    # Only the lower triangle of the Cholesky factor is a parameter.
    assert torch.equal(scale_tril.grad.triu(1), torch.zeros(3, 3))


def test_omt_page_second_block_svi() -> None:
    import vitorch
    import vitorch.distributions as dist
    from vitorch.infer import SVI, Trace_ELBO
    from vitorch.optim import Adam

    # Using OMTMultivariateNormal as a variational distribution (guide)
    def model():
        vitorch.sample("z", dist.MultivariateNormal(torch.zeros(3), torch.eye(3)))

    def guide():
        loc = vitorch.param("loc", torch.zeros(3))
        scale_tril = vitorch.param(
            "scale_tril", torch.eye(3), constraint=dist.constraints.lower_cholesky
        )
        vitorch.sample("z", dist.OMTMultivariateNormal(loc, scale_tril))

    # SVI with OMT gradients for lower-variance updates
    svi = SVI(model, guide, Adam({"lr": 0.01}), loss=Trace_ELBO())

    # The guide starts equal to the model, so log p(z) - log q(z) is 0 for every draw.
    first = svi.step()
    assert first == pytest.approx(0.0, abs=1e-5)
    losses = [svi.step() for _ in range(20)]
    assert all(isinstance(v, float) for v in losses)
    store = vitorch.get_param_store()
    # Both parameters were stepped (Adam moves each entry by about lr per step) ...
    assert not torch.equal(store["loc"], torch.zeros(3))
    assert not torch.equal(store["scale_tril"], torch.eye(3))
    # ... and stay near the optimum they started at, with a valid Cholesky factor (an
    # Adam step moves an entry by at most about 3 lr).
    assert (store["loc"].abs() <= 21 * 0.01 * 3).all()
    L = store["scale_tril"]
    assert torch.equal(L, L.tril()) and (L.diagonal() > 0).all()
    assert torch.allclose(L, torch.eye(3), atol=21 * 0.01 * 3)
