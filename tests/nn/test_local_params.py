"""vitorch.settings, module-local parameters and Trace_ELBO()(model, guide) as an nn.Module."""

from __future__ import annotations

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import settings
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide import AutoNormal
from vitorch.infer.elbo import ELBOModule
from vitorch.nn import PyroModule, PyroParam

DATA = torch.tensor([0.9, 2.1, 1.4, 0.2])


class Model(PyroModule):
    """z ~ N(0, 1), x_i ~ N(z, 1): the posterior is N(sum x / (n + 1), 1 / (n + 1))."""

    def forward(self, data):
        z = vitorch.sample("z", dist.Normal(0.0, 1.0))
        with vitorch.plate("data", len(data)):
            vitorch.sample("x", dist.Normal(z, 1.0), obs=data)


POST_MEAN = DATA.sum().item() / 5
POST_SD = (1 / 5) ** 0.5


@pytest.fixture
def local_params():
    vitorch.clear_param_store()
    with settings.context(module_local_params=True):
        yield
    vitorch.clear_param_store()


def test_settings_get_set_context_and_errors():
    assert settings.get("module_local_params") is False
    assert "module_local_params" in settings.get()
    with settings.context(module_local_params=True):
        assert settings.get("module_local_params") is True
    assert settings.get("module_local_params") is False
    with pytest.raises(TypeError, match="module_local_params.*bool"):
        settings.set(module_local_params=1)
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        settings.get("nope")


def test_register_a_setting_with_a_validator():
    import sys
    import types

    mod = types.ModuleType("_vitorch_test_settings")
    mod.LEVEL = 1
    sys.modules[mod.__name__] = mod
    try:

        @settings.register("test_level", mod.__name__, "LEVEL")
        def _check(value):
            if value < 0:
                raise ValueError("test_level must be >= 0")

        settings.set(test_level=3)
        assert mod.LEVEL == 3 and settings.get("test_level") == 3
        with pytest.raises(ValueError, match=">= 0"):
            settings.set(test_level=-1)
        assert mod.LEVEL == 3
    finally:
        settings._REGISTRY.pop("test_level", None)
        del sys.modules[mod.__name__]


def test_local_params_stay_out_of_the_store_and_do_not_collide(local_params):
    a, b = PyroModule(), PyroModule()
    a.scale = PyroParam(torch.tensor(2.0), dist.constraints.positive)
    b.scale = PyroParam(torch.tensor(5.0), dist.constraints.positive)
    tr = vitorch.poutine.trace(lambda: (a.scale, b.scale)).get_trace()
    ret = tr.nodes["_RETURN"]["value"]
    assert ret[0].item() == pytest.approx(2.0) and ret[1].item() == pytest.approx(5.0)
    assert tr.nodes["scale"]["type"] == "param"  # still a site for handlers
    assert len(vitorch.get_param_store()) == 0


def test_svi_trains_local_params_to_the_exact_posterior(local_params):
    torch.manual_seed(0)
    model = Model()
    guide = AutoNormal(model)
    svi = SVI(
        model,
        guide,
        vitorch.optim.ClippedAdam({"lr": 0.05, "lrd": 0.998}),  # decays to converge
        Trace_ELBO(num_particles=16, vectorize_particles=True),
    )
    for _ in range(1500):
        svi.step(DATA)
    assert len(vitorch.get_param_store()) == 0
    assert guide.locs.z.item() == pytest.approx(POST_MEAN, abs=0.03)
    assert guide.scales.z.item() == pytest.approx(POST_SD, abs=0.03)


def test_elbo_module_with_a_torch_optimizer(local_params):
    torch.manual_seed(1)
    model = Model()
    guide = AutoNormal(model)
    elbo = Trace_ELBO(num_particles=16, vectorize_particles=True)(model, guide)
    assert isinstance(elbo, ELBOModule) and isinstance(elbo, torch.nn.Module)
    elbo(DATA)  # the guide creates its parameters lazily, on the first call
    params = list(elbo.parameters())
    assert len(params) == 2 and all(p.requires_grad for p in params)
    optim = torch.optim.Adam(params, lr=0.05)
    decay = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.998)  # to converge
    for _ in range(1500):
        optim.zero_grad()
        loss = elbo(DATA)
        loss.backward()
        optim.step()
        decay.step()
    assert guide.locs.z.item() == pytest.approx(POST_MEAN, abs=0.03)
    assert guide.scales.z.item() == pytest.approx(POST_SD, abs=0.03)
    assert set(elbo.state_dict()) == {"guide.locs.z_unconstrained", "guide.scales.z_unconstrained"}


def test_elbo_module_value_is_the_differentiable_loss():
    vitorch.clear_param_store()

    def model():
        vitorch.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        loc = vitorch.param("loc", torch.tensor(0.3))
        vitorch.sample("z", dist.Normal(loc, 1.0))

    loss = Trace_ELBO(num_particles=1)(model, guide)
    vitorch.set_rng_seed(3)
    a = loss()
    vitorch.set_rng_seed(3)
    b = Trace_ELBO().differentiable_loss(model, guide)
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="guide must be callable"):
        Trace_ELBO()(model, 3)


def test_plain_torch_children_are_local_param_sites(local_params):
    class Net(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, x):
            return self.fc(x)

    net = Net()
    tr = vitorch.poutine.trace(net).get_trace(torch.ones(3, 2))
    names = {n for n, s in tr.nodes.items() if s["type"] == "param"}
    assert names == {"fc$$$weight", "fc$$$bias"}
    assert len(vitorch.get_param_store()) == 0
