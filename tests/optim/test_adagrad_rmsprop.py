"""AdagradRMSProp: ADVI's step-size sequence, checked step by step against the equations."""

from __future__ import annotations

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, Trace_ELBO
from vitorch.optim import AdagradRMSProp
from vitorch.optim.adagrad_rmsprop import AdagradRMSProp as TorchAdagradRMSProp


def test_steps_follow_the_advi_equations():
    torch.manual_seed(0)
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, dtype=torch.float64)
    eta, delta, t = 0.3, 0.01, 0.2
    opt = TorchAdagradRMSProp([x], eta=eta, delta=delta, t=t)
    ref, s = x.detach().clone(), None
    for k in range(1, 6):
        opt.zero_grad()
        loss = ((x - target) ** 4).sum()
        loss.backward()
        g = 4 * (ref - target) ** 3
        s = g * g if s is None else t * g * g + (1 - t) * s
        ref = ref - eta * k ** (-0.5 + delta) * g / (1 + s.sqrt())
        opt.step()
        assert torch.allclose(x.detach(), ref, rtol=1e-12, atol=1e-12)


def test_matches_pyro():
    pyro_optim = pytest.importorskip("pyro.optim")
    torch.manual_seed(1)
    init = torch.randn(3, 2)
    a = init.clone().requires_grad_()
    b = init.clone().requires_grad_()
    opt_a = TorchAdagradRMSProp([a], eta=0.5, t=0.3)
    opt_b = pyro_optim.adagrad_rmsprop.AdagradRMSProp([b], eta=0.5, t=0.3)
    for _ in range(4):
        for p, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (p.sin() * p).sum().backward()
            opt.step()
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_wrapper_drives_svi_to_the_map():
    vitorch.clear_param_store()

    def model():
        vitorch.sample(
            "obs", dist.Normal(vitorch.param("mu", torch.tensor(0.0)), 1.0), obs=torch.tensor(2.0)
        )

    svi = SVI(model, lambda: None, AdagradRMSProp({"eta": 1.0, "t": 0.1}), Trace_ELBO())
    for _ in range(300):
        svi.step()
    assert vitorch.param("mu").item() == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, match", [({"eta": 0.0}, "eta"), ({"t": 1.5}, "t must"), ({"delta": 0.7}, "delta")]
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TorchAdagradRMSProp([torch.zeros(1, requires_grad=True)], **kwargs)
