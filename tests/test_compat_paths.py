"""Pyro's import paths and small helpers: pyro.poutine.*_messenger, poutine.util, pyro.util."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import poutine


@pytest.mark.parametrize(
    "module, name",
    [
        ("trace_messenger", "TraceMessenger"),
        ("block_messenger", "BlockMessenger"),
        ("condition_messenger", "ConditionMessenger"),
        ("substitute_messenger", "SubstituteMessenger"),
        ("replay_messenger", "ReplayMessenger"),
        ("scale_messenger", "ScaleMessenger"),
        ("mask_messenger", "MaskMessenger"),
        ("seed_messenger", "SeedMessenger"),
        ("plate_messenger", "PlateMessenger"),
        ("do_messenger", "DoMessenger"),
        ("uncondition_messenger", "UnconditionMessenger"),
        ("lift_messenger", "LiftMessenger"),
        ("infer_config_messenger", "InferConfigMessenger"),
        ("enum_messenger", "EnumMessenger"),
        ("markov_messenger", "MarkovMessenger"),
        ("reparam_messenger", "ReparamMessenger"),
    ],
)
def test_pyro_handler_module_paths(module, name):
    mod = importlib.import_module(f"vitorch.poutine.{module}")
    assert getattr(mod, name) is getattr(poutine, name)


def test_prune_subsample_sites():
    from vitorch.poutine.util import prune_subsample_sites, site_is_subsample

    def model():
        with vitorch.plate("data", 10, subsample_size=3):
            vitorch.sample("x", dist.Normal(0.0, 1.0))

    tr = poutine.trace(model).get_trace()
    subsample_sites = [
        n for n, s in tr.nodes.items() if s["type"] == "sample" and site_is_subsample(s)
    ]
    assert subsample_sites == ["data"]
    pruned = prune_subsample_sites(tr)
    assert "data" not in pruned.nodes and "x" in pruned.nodes
    assert "data" in tr.nodes  # the original is untouched


def test_util_warnings_and_helpers():
    from vitorch import util

    x = torch.tensor([1.0, float("nan")])
    with pytest.warns(UserWarning, match="NaN: here"):
        assert util.warn_if_nan(x, "here") is x
    with pytest.warns(UserWarning, match="inf"):
        util.warn_if_inf(torch.tensor([float("inf")]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        util.warn_if_inf(torch.tensor([float("inf")]), allow_posinf=True)
        util.warn_if_nan(torch.ones(2))
    # The gradient is checked when it arrives.
    w = torch.ones(2, requires_grad=True)
    y = util.warn_if_nan(w * 1.0)
    with pytest.warns(UserWarning, match="gradient"):
        (y * torch.tensor([float("nan"), 1.0])).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with util.ignore_jit_warnings():
            warnings.warn("traced", torch.jit.TracerWarning)
    calls = []

    class Ctx:
        def __enter__(self):
            calls.append("in")

        def __exit__(self, *a):
            calls.append("out")

    with util.optional(Ctx(), False):
        pass
    with util.optional(Ctx(), True):
        pass
    assert calls == ["in", "out"]
    util.set_rng_seed(3)
    a = torch.randn(2)
    util.set_rng_seed(3)
    assert torch.equal(a, torch.randn(2))


def test_infer_namespace_has_validation_switches():
    from vitorch import infer

    infer.enable_validation(False)
    assert not infer.is_validation_enabled()
    infer.enable_validation(True)
    assert infer.is_validation_enabled()


@pytest.mark.parametrize(
    "module, name",
    [
        ("trace_elbo", "Trace_ELBO"),
        ("trace_mean_field_elbo", "TraceMeanField_ELBO"),
        ("tracegraph_elbo", "TraceGraph_ELBO"),
        ("traceenum_elbo", "TraceEnum_ELBO"),
        ("renyi_elbo", "RenyiELBO"),
        ("trace_tail_adaptive_elbo", "TraceTailAdaptive_ELBO"),
        ("importance", "Importance"),
        ("abstract_infer", "EmpiricalMarginal"),
        ("enum", "config_enumerate"),
        ("svi", "SVI"),
        ("predictive", "Predictive"),
    ],
)
def test_pyro_infer_module_paths(module, name):
    from vitorch import infer

    mod = importlib.import_module(f"vitorch.infer.{module}")
    assert getattr(mod, name) is getattr(infer, name)


@pytest.mark.parametrize(
    "module",
    [
        "vitorch",
        "vitorch.infer",
        "vitorch.infer.autoguide",
        "vitorch.infer.reparam",
        "vitorch.infer.mcmc",
        "vitorch.distributions",
        "vitorch.distributions.transforms",
        "vitorch.distributions.constraints",
        "vitorch.poutine",
        "vitorch.nn",
        "vitorch.optim",
        "vitorch.ops",
        "vitorch.ops.stats",
        "vitorch.contrib.easyguide",
        "vitorch.settings",
        "vitorch.util",
    ],
)
def test_every_name_a_public_module_lists_can_be_imported(module):
    """A name in __all__ without its import (it happened: TraceTMC_ELBO, CSIS, ...) fails here."""
    import importlib

    m = importlib.import_module(module)
    assert [n for n in m.__all__ if not hasattr(m, n)] == []
