"""``PyroModule``, ``PyroParam``, ``PyroSample``: sites, names, constraints, caching, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import transform_to

import vitorch
import vitorch.distributions as dist
from vitorch import poutine
from vitorch.distributions import constraints
from vitorch.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from vitorch.nn import PyroModule, PyroParam, PyroSample, to_pyro_module_
from vitorch.optim import SGD, Adam

LR = 0.1


def _sample_sites(tr) -> dict[str, tuple[int, ...]]:
    return {
        name: tuple(site.value.shape)
        for name, site in tr.nodes.items()
        if site.type == "sample" and not getattr(site.fn, "_is_subsample", False)
    }


def _bayesian_linear(in_features: int, out_features: int) -> nn.Module:
    layer = PyroModule[nn.Linear](in_features, out_features)
    layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2))
    layer.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))
    return layer


# -- PyroSample: names and shapes ----------------------------------------------------------
def test_pyro_sample_attributes_are_sample_sites():
    layer = _bayesian_linear(3, 2)
    x = torch.randn(5, 3)
    tr = poutine.trace(layer).get_trace(x)
    assert _sample_sites(tr) == {"weight": (2, 3), "bias": (2,)}
    assert tr.nodes["weight"].fn.event_shape == (2, 3)
    # The forward used exactly the sampled values.
    expected = x @ tr.nodes["weight"].value.T + tr.nodes["bias"].value
    torch.testing.assert_close(tr.nodes["_RETURN"].value, expected)


class _Net(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = _bayesian_linear(3, 4)
        self.block = PyroModule[nn.Sequential](
            _bayesian_linear(4, 4), nn.Tanh(), _bayesian_linear(4, 1)
        )
        self.noise = PyroSample(dist.LogNormal(0.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(torch.tanh(self.fc1(x))).squeeze(-1) * self.noise


def test_nested_modules_get_dotted_site_names():
    tr = poutine.trace(_Net()).get_trace(torch.randn(6, 3))
    assert _sample_sites(tr) == {
        "fc1.weight": (4, 3),
        "fc1.bias": (4,),
        "block.0.weight": (4, 4),
        "block.0.bias": (4,),
        "block.2.weight": (1, 4),
        "block.2.bias": (1,),
        "noise": (),
    }
    assert tr.nodes["_RETURN"].value.shape == (6,)


def test_a_top_level_sequential_names_its_layers():
    net = PyroModule[nn.Sequential](_bayesian_linear(3, 4), nn.Tanh(), _bayesian_linear(4, 1))
    tr = poutine.trace(net).get_trace(torch.randn(5, 3))
    assert _sample_sites(tr) == {
        "0.weight": (4, 3),
        "0.bias": (4,),
        "2.weight": (1, 4),
        "2.bias": (1,),
    }


def test_module_list_and_dict_children_are_named_by_their_keys():
    class Stack(PyroModule):
        def __init__(self) -> None:
            super().__init__()
            self.layers = PyroModule[nn.ModuleList]([_bayesian_linear(2, 2) for _ in range(2)])
            self.heads = PyroModule[nn.ModuleDict]({"mean": _bayesian_linear(2, 1)})

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.heads["mean"](x)

    tr = poutine.trace(Stack()).get_trace(torch.randn(3, 2))
    assert set(_sample_sites(tr)) == {
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
        "heads.mean.weight",
        "heads.mean.bias",
    }


def test_root_name_prefixes_every_site():
    class Named(PyroModule):
        def __init__(self) -> None:
            super().__init__("net")
            self.fc = _bayesian_linear(2, 1)

        def forward(self, x):
            return self.fc(x)

    tr = poutine.trace(Named()).get_trace(torch.randn(3, 2))
    assert set(_sample_sites(tr)) == {"net.fc.weight", "net.fc.bias"}


def test_to_pyro_module_converts_in_place():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    to_pyro_module_(net)
    assert isinstance(net, PyroModule) and isinstance(net[0], nn.Linear)
    net[2].weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 3]).to_event(2))
    tr = poutine.trace(net).get_trace(torch.randn(4, 2))
    assert _sample_sites(tr) == {"2.weight": (1, 3)}
    assert tr.param_nodes == ["0.weight", "0.bias", "2.bias"]


def test_prior_may_depend_on_other_attributes():
    class Hier(PyroModule):
        def __init__(self) -> None:
            super().__init__()
            self.loc = PyroSample(dist.Normal(0.0, 1.0))
            self.x = PyroSample(lambda self: dist.Normal(self.loc, 0.5).expand([3]).to_event(1))

        def forward(self):
            return self.x

    tr = poutine.trace(Hier()).get_trace()
    assert list(_sample_sites(tr)) == ["loc", "x"]
    assert tr.nodes["x"].fn.base_dist.loc.eq(tr.nodes["loc"].value).all()
    assert float(tr.nodes["x"].fn.base_dist.scale[0]) == 0.5


# -- caching -------------------------------------------------------------------------------
def test_a_sample_read_twice_in_one_forward_is_one_site():
    class Twice(PyroModule):
        def __init__(self) -> None:
            super().__init__()
            self.z = PyroSample(dist.Normal(0.0, 1.0))
            self.child = _bayesian_linear(1, 1)

        def forward(self):
            # The child reads its own weight; the parent reads it again through the child.
            a = self.z + self.child(torch.ones(1, 1)).squeeze()
            b = self.z * self.child.weight.squeeze()
            return a, b

    m = Twice()
    tr = poutine.trace(m).get_trace()
    assert list(_sample_sites(tr)) == ["z", "child.weight", "child.bias"]
    a, b = tr.nodes["_RETURN"].value
    z, w, bias = (tr.nodes[k].value for k in ("z", "child.weight", "child.bias"))
    torch.testing.assert_close(a, z + w.squeeze() + bias.squeeze())
    torch.testing.assert_close(b, z * w.squeeze())
    # A new call draws again: the cache lasts one call of the outermost module.
    tr2 = poutine.trace(m).get_trace()
    assert not torch.equal(tr2.nodes["z"].value, tr.nodes["z"].value)


def test_reading_a_sample_outside_a_call_draws_each_time():
    layer = _bayesian_linear(2, 2)
    assert not torch.equal(layer.weight, layer.weight)


# -- PyroParam -----------------------------------------------------------------------------
def test_pyro_param_reads_back_its_constrained_value():
    m = PyroModule()
    m.scale = PyroParam(torch.tensor([0.5, 2.0]), constraints.positive)
    m.prob = PyroParam(torch.tensor(0.25), constraints.unit_interval)
    m.w = PyroParam(torch.tensor([[0.2, 0.8], [0.6, 0.4]]), constraints.simplex)
    torch.testing.assert_close(m.scale.detach(), torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(m.prob.detach(), torch.tensor(0.25))
    torch.testing.assert_close(m.w.detach(), torch.tensor([[0.2, 0.8], [0.6, 0.4]]))
    # The free parameter is the unconstrained one.
    torch.testing.assert_close(m.scale_unconstrained.detach(), torch.tensor([0.5, 2.0]).log())
    assert {name for name, _ in m.named_parameters()} == {
        "scale_unconstrained",
        "prob_unconstrained",
        "w_unconstrained",
    }


def test_pyro_param_stays_in_its_constraint_under_svi():
    # loss = sum(scale) with scale = exp(u): du = scale, so one SGD step maps
    # u -> u - lr * scale, i.e. scale -> scale * exp(-lr * scale), always > 0.
    m = PyroModule()
    m.scale = PyroParam(torch.tensor([0.5, 3.0, 20.0]), constraints.positive)

    def model():
        vitorch.factor("f", -m.scale.sum())

    svi = SVI(model, lambda: None, SGD({"lr": LR}), Trace_ELBO())
    expected = torch.tensor([0.5, 3.0, 20.0])
    for _ in range(3):
        svi.step()
        expected = expected * torch.exp(-LR * expected)
        torch.testing.assert_close(m.scale.detach(), expected)
    assert bool((m.scale > 0).all())


def test_interval_constraint_matches_its_transform():
    m = PyroModule()
    m.p = PyroParam(torch.tensor(0.3), constraints.interval(-1.0, 2.0))
    with torch.no_grad():
        m.p_unconstrained.fill_(50.0)  # far out in unconstrained space
    value = m.p
    torch.testing.assert_close(
        value, transform_to(constraints.interval(-1.0, 2.0))(torch.tensor(50.0))
    )
    assert -1.0 <= float(value.detach()) <= 2.0


def test_assigning_a_tensor_updates_a_pyro_param_in_place():
    m = PyroModule()
    m.scale = PyroParam(torch.tensor(1.0), constraints.positive)
    u = m.scale_unconstrained
    m.scale = torch.tensor(4.0)
    assert m.scale_unconstrained is u
    torch.testing.assert_close(m.scale.detach(), torch.tensor(4.0))


def test_pyro_param_rejects_bad_input():
    m = PyroModule()
    with pytest.raises(ValueError, match=r"PyroParam 'scale'.*outside the constraint"):
        m.scale = PyroParam(torch.tensor([-1.0]), constraints.positive)
    with pytest.raises(TypeError, match="constraint must be a Constraint"):
        m.scale = PyroParam(torch.tensor([1.0]), "positive")
    m.z = PyroSample(3.0)
    with pytest.raises(TypeError, match="prior must be a distribution or a callable"):
        getattr(m, "z")  # noqa: B009  (reading the attribute is the test)
    with pytest.raises(TypeError, match="expects an nn.Module subclass"):
        PyroModule[3]


# -- the param store and SVI ---------------------------------------------------------------
def test_pyro_module_params_are_in_the_store_and_follow_sgd():
    torch.manual_seed(0)
    m = PyroModule[nn.Linear](3, 2)
    m.log_noise = PyroParam(torch.tensor(0.7), constraints.positive)
    w0, b0, n0 = m.weight.detach().clone(), m.bias.detach().clone(), 0.7

    def model():
        # loss = 0.5 |W|^2 + 0.5 |b|^2 + noise: gradients W, b and noise (through exp).
        value = 0.5 * (m.weight**2).sum() + 0.5 * (m.bias**2).sum() + m.log_noise
        vitorch.factor("f", -value)

    svi = SVI(model, lambda: None, SGD({"lr": LR}), Trace_ELBO())
    svi.step()
    store = vitorch.get_param_store()
    assert set(store.keys()) == {"weight", "bias", "log_noise"}
    assert store.get_unconstrained("weight") is m.weight
    assert store.get_unconstrained("log_noise") is m.log_noise_unconstrained
    assert store._constraints["log_noise"] is constraints.positive
    torch.testing.assert_close(m.weight.detach(), (1 - LR) * w0)
    torch.testing.assert_close(m.bias.detach(), (1 - LR) * b0)
    torch.testing.assert_close(float(m.log_noise.detach()), n0 * math.exp(-LR * n0))


def test_plain_torch_child_of_a_pyro_module_is_trained():
    torch.manual_seed(0)

    class Wrapper(PyroModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(2, 1)

        def forward(self):
            return 0.5 * sum((p**2).sum() for p in self.net.parameters())

    m = Wrapper()
    w0 = m.net.weight.detach().clone()

    def model():
        vitorch.factor("f", -m())

    tr = poutine.trace(model).get_trace()
    assert tr.param_nodes == ["net$$$weight", "net$$$bias"]
    SVI(model, lambda: None, SGD({"lr": LR}), Trace_ELBO()).step()
    torch.testing.assert_close(m.net.weight.detach(), (1 - LR) * w0)


def test_pyro_params_survive_save_and_load(tmp_path):
    m = PyroModule()
    m.scale = PyroParam(torch.tensor([1.0, 2.0]), constraints.positive)

    def model():
        vitorch.factor("f", -m.scale.sum())

    svi = SVI(model, lambda: None, SGD({"lr": LR}), Trace_ELBO())
    svi.step()
    trained = m.scale.detach().clone()
    path = tmp_path / "params.pt"
    vitorch.get_param_store().save(path)

    vitorch.clear_param_store()
    vitorch.get_param_store().load(path)
    fresh = PyroModule()
    fresh.scale = PyroParam(torch.tensor([5.0, 5.0]), constraints.positive)
    with poutine.trace():
        value = fresh.scale  # first read under a handler adopts the stored value
    torch.testing.assert_close(value.detach(), trained)
    assert vitorch.get_param_store().get_unconstrained("scale") is fresh.scale_unconstrained


# -- autoguides and Predictive -------------------------------------------------------------
def _regression_data():
    torch.manual_seed(1)
    x = torch.randn(100, 2)
    y = x @ torch.tensor([1.5, -0.7]) + 0.3 + 0.5 * torch.randn(100)
    return x, y


class _BayesianRegression(PyroModule):
    """y ~ Normal(x @ w + b, 0.5) with standard normal priors on w and b."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = PyroModule[nn.Linear](2, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 2]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        with vitorch.plate("data", x.shape[0]):
            vitorch.sample("obs", dist.Normal(mean, 0.5), obs=y)
        return mean


def _exact_posterior(x, y, noise=0.5):
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    precision = torch.eye(3, dtype=torch.float64) + design.T @ design / noise**2
    mean = torch.linalg.solve(precision, design.T @ y.double() / noise**2)
    return mean, precision


def test_autonormal_on_a_pyro_module_finds_the_exact_posterior():
    from vitorch.infer.autoguide import AutoNormal

    x, y = _regression_data()
    model = _BayesianRegression()
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.03}), TraceMeanField_ELBO())
    vitorch.set_rng_seed(0)

    def current():
        with torch.no_grad():
            loc = torch.cat([guide.locs.linear.weight.reshape(-1), guide.locs.linear.bias])
            scale = torch.cat([guide.scales.linear.weight.reshape(-1), guide.scales.linear.bias])
        return loc.double(), scale.double()

    # Average the iterates of the second half: the stochastic gradient's jitter averages out.
    loc_sum = scale_sum = 0.0
    steps, averaged = 1500, 750
    for i in range(steps):
        svi.step(x, y)
        if i >= steps - averaged:
            loc_i, scale_i = current()
            loc_sum, scale_sum = loc_sum + loc_i, scale_sum + scale_i
    loc, scale = loc_sum / averaged, scale_sum / averaged
    names = set(vitorch.get_param_store().keys())
    assert {"AutoNormal.locs.linear.weight", "AutoNormal.scales.linear.bias"} <= names

    # For a Gaussian posterior the mean-field optimum has the exact posterior mean and
    # scales 1 / sqrt(diag(precision)).
    mean, precision = _exact_posterior(x, y)
    post_sd = precision.inverse().diagonal().sqrt()
    torch.testing.assert_close(loc, mean, atol=0.15 * float(post_sd.min()), rtol=0.0)
    torch.testing.assert_close(scale, precision.diagonal().rsqrt(), rtol=0.1, atol=0.0)


def test_predictive_with_autonormal_on_a_pyro_module():
    from vitorch.infer import Predictive
    from vitorch.infer.autoguide import AutoNormal

    x, y = _regression_data()
    model = _BayesianRegression()
    guide = AutoNormal(model)
    guide(x, y)  # create the guide's parameters, then set them by hand
    with torch.no_grad():
        guide.locs.linear.weight.copy_(torch.tensor([[1.0, -1.0]]))
        guide.locs.linear.bias.copy_(torch.tensor([0.5]))
        guide.scales.linear.weight = torch.full((1, 2), 1e-4)
        guide.scales.linear.bias = torch.full((1,), 1e-4)
    x_new = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-1.0, 3.0]])
    vitorch.set_rng_seed(0)
    samples = Predictive(
        model, guide=guide, num_samples=2000, return_sites=("obs", "_RETURN", "linear.weight")
    )(x_new)
    # As in Pyro: a dim of size one for the "data" plate, which the weight is not in.
    assert samples["linear.weight"].shape == (2000, 1, 1, 2)
    assert samples["obs"].shape == (2000, 3)
    mean = x_new @ torch.tensor([1.0, -1.0]) + 0.5
    torch.testing.assert_close(samples["_RETURN"].mean(0), mean, atol=1e-3, rtol=0)
    # obs = mean + 0.5 * noise: its spread is the model's noise scale.
    torch.testing.assert_close(samples["obs"].mean(0), mean, atol=4 * 0.5 / math.sqrt(2000), rtol=0)
    torch.testing.assert_close(samples["obs"].std(0), torch.full((3,), 0.5), atol=0.05, rtol=0)
