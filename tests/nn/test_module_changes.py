"""module() registers what the module holds at each call; every kind of change is seen."""

import torch
from torch import nn

import vitorch
from vitorch import poutine


def _param_sites(name, net):
    tr = poutine.trace(lambda: vitorch.module(name, net)).get_trace()
    return {n: s["value"] for n, s in tr.nodes.items() if s["type"] == "param"}


def test_a_layer_added_later_is_registered():
    net = nn.Sequential(nn.Linear(2, 3))
    assert set(_param_sites("net", net)) == {"net$$$0.weight", "net$$$0.bias"}
    net.append(nn.Linear(3, 1))
    sites = _param_sites("net", net)
    assert set(sites) == {"net$$$0.weight", "net$$$0.bias", "net$$$1.weight", "net$$$1.bias"}
    assert sites["net$$$1.weight"] is net[1].weight


def test_a_parameter_replaced_behind_torchs_back_is_noticed():
    net = nn.Linear(2, 3)
    _param_sites("net", net)
    new = nn.Parameter(torch.zeros(3))
    net._parameters["bias"] = new  # no registration hook fires for this
    sites = _param_sites("net", net)
    assert sites["net$$$bias"] is new
    assert vitorch.get_param_store().get_unconstrained("net$$$bias") is new


def test_a_deleted_parameter_is_dropped():
    net = nn.Linear(2, 3)
    _param_sites("net", net)
    del net.bias
    net.register_parameter("bias", None)
    assert set(_param_sites("net", net)) == {"net$$$weight"}


def test_the_same_module_under_two_names():
    net = nn.Linear(2, 3)
    assert set(_param_sites("a", net)) == {"a$$$weight", "a$$$bias"}
    assert set(_param_sites("b", net)) == {"b$$$weight", "b$$$bias"}
