"""``vitorch.module``: an nn.Module's parameters in the param store, trained by SVI, saved, loaded.

The models below put ``-0.5 * |theta|^2`` on every parameter with ``factor`` and have an
empty guide, so the loss is ``0.5 * |theta|^2``, its gradient is ``theta`` and one SGD step
with learning rate ``lr`` maps ``theta`` to exactly ``(1 - lr) * theta``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vitorch
from vitorch import poutine
from vitorch.infer import SVI, Trace_ELBO
from vitorch.optim import SGD

LR = 0.1


def _quadratic_model(name: str, net: nn.Module):
    def model():
        vitorch.module(name, net)
        penalty = sum((p**2).sum() for p in net.parameters() if p.requires_grad)
        vitorch.factor("penalty", -0.5 * penalty)

    return model


def _guide():
    pass


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def test_names_are_pyros_and_the_store_holds_the_modules_own_tensors():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    vitorch.module("net", net)
    store = vitorch.get_param_store()
    expected = {"net$$$0.weight", "net$$$0.bias", "net$$$2.weight", "net$$$2.bias"}
    assert set(store.keys()) == expected
    for path, p in net.named_parameters():
        assert store.get_unconstrained(f"net$$${path}") is p
        assert store.param_name(p) == f"net$$${path}"


def test_module_params_are_param_sites_of_the_trace():
    net = nn.Linear(2, 3)
    tr = poutine.trace(_quadratic_model("lin", net)).get_trace()
    assert tr.param_nodes == ["lin$$$weight", "lin$$$bias"]
    assert tr.nodes["lin$$$weight"].value is net.weight


def test_svi_takes_the_exact_sgd_step_on_module_params():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    before = _snapshot(net)
    svi = SVI(_quadratic_model("lin", net), _guide, SGD({"lr": LR}), Trace_ELBO())
    loss = svi.step()
    expected_loss = 0.5 * sum(float((v**2).sum()) for v in before.values())
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    for k, v in net.named_parameters():
        torch.testing.assert_close(v.detach(), (1 - LR) * before[k])
    svi.step()
    for k, v in net.named_parameters():
        torch.testing.assert_close(v.detach(), (1 - LR) ** 2 * before[k])


def test_frozen_parameters_are_left_alone():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)
    before = _snapshot(net)
    svi = SVI(_quadratic_model("lin", net), _guide, SGD({"lr": LR}), Trace_ELBO())
    svi.step()
    torch.testing.assert_close(net.weight.detach(), (1 - LR) * before["weight"])
    assert torch.equal(net.bias, before["bias"])


def test_save_then_load_into_a_fresh_module(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    start = _snapshot(net)
    svi = SVI(_quadratic_model("net", net), _guide, SGD({"lr": LR}), Trace_ELBO())
    for _ in range(3):
        svi.step()
    trained = _snapshot(net)
    path = tmp_path / "params.pt"
    vitorch.get_param_store().save(path)

    vitorch.clear_param_store()
    vitorch.get_param_store().load(path)
    torch.manual_seed(1)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    assert not torch.equal(fresh[0].weight, trained["0.weight"])
    vitorch.module("net", fresh, update_module_params=True)
    for k, v in fresh.named_parameters():
        torch.testing.assert_close(v.detach(), trained[k], rtol=0, atol=0)
        torch.testing.assert_close(v.detach(), (1 - LR) ** 3 * start[k])

    # The loaded module keeps training where the first one stopped.
    svi = SVI(_quadratic_model("net", fresh), _guide, SGD({"lr": LR}), Trace_ELBO())
    svi.step()
    for k, v in fresh.named_parameters():
        torch.testing.assert_close(v.detach(), (1 - LR) ** 4 * start[k])


def test_without_update_module_params_the_module_keeps_its_values(tmp_path):
    torch.manual_seed(0)
    vitorch.module("lin", nn.Linear(2, 2))
    path = tmp_path / "params.pt"
    vitorch.get_param_store().save(path)
    vitorch.clear_param_store()
    vitorch.get_param_store().load(path)
    fresh = nn.Linear(2, 2)
    own = _snapshot(fresh)
    vitorch.module("lin", fresh)
    for k, v in fresh.named_parameters():
        assert torch.equal(v, own[k])


def test_load_converts_to_the_modules_dtype(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    vitorch.module("lin", net)
    path = tmp_path / "params.pt"
    vitorch.get_param_store().save(path)
    vitorch.clear_param_store()
    vitorch.get_param_store().load(path)
    fresh = nn.Linear(3, 2).double()
    vitorch.module("lin", fresh, update_module_params=True)
    assert fresh.weight.dtype == torch.float64
    torch.testing.assert_close(fresh.weight.detach(), net.weight.detach().double())


def test_registering_again_after_clear_param_store():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    model = _quadratic_model("lin", net)
    SVI(model, _guide, SGD({"lr": LR}), Trace_ELBO()).step()
    vitorch.clear_param_store()
    assert len(vitorch.get_param_store()) == 0
    before = _snapshot(net)
    SVI(model, _guide, SGD({"lr": LR}), Trace_ELBO()).step()
    assert vitorch.get_param_store().get_unconstrained("lin$$$weight") is net.weight
    for k, v in net.named_parameters():
        torch.testing.assert_close(v.detach(), (1 - LR) * before[k])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_module_on_cuda_trains_and_loads(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(3, 2).cuda()
    before = _snapshot(net)
    SVI(_quadratic_model("lin", net), _guide, SGD({"lr": LR}), Trace_ELBO()).step()
    for k, v in net.named_parameters():
        assert v.is_cuda
        torch.testing.assert_close(v.detach(), (1 - LR) * before[k])
    path = tmp_path / "params.pt"
    vitorch.get_param_store().save(path)
    vitorch.clear_param_store()
    vitorch.get_param_store().load(path)  # CPU tensors in the store
    fresh = nn.Linear(3, 2).cuda()
    vitorch.module("lin", fresh, update_module_params=True)
    assert fresh.weight.is_cuda
    torch.testing.assert_close(fresh.weight.detach(), net.weight.detach())


def test_shape_mismatch_on_update_is_a_value_error():
    vitorch.module("lin", nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"lin\$\$\$weight.*\(2, 3\).*\(4, 3\)"):
        vitorch.module("lin", nn.Linear(3, 4), update_module_params=True)


def test_bad_arguments():
    with pytest.raises(TypeError, match="expected a torch.nn.Module, got str"):
        vitorch.module("lin", "not a module")
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        vitorch.module("lin", nn.Linear)  # the class, not an instance
    with pytest.raises(ValueError, match=r"must not contain '\$\$\$'"):
        vitorch.module("a$$$b", nn.Linear(1, 1))
    with pytest.raises(TypeError, match="module name must be a str, got int"):
        vitorch.module(3, nn.Linear(1, 1))
