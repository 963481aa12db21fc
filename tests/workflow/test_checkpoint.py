"""Checkpoints: round trip, bit-exact resume, Ctrl-C, interrupted saves, unsafe files."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch
from torch.distributions import constraints

import vitorch
import vitorch.distributions as dist
from vitorch._io import UnsafeFileError
from vitorch.checkpoint import (
    FORMAT,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide import AutoMultivariateNormal, AutoNormal
from vitorch.infer.run import RelativeLossChange


def model(data):
    loc = vitorch.sample("loc", dist.Normal(0.0, 10.0))
    scale = vitorch.sample("scale", dist.LogNormal(0.0, 1.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("obs", dist.Normal(loc, scale), obs=data)


def manual_guide(data):
    a = vitorch.param("a", torch.tensor(0.0))
    b = vitorch.param("b", torch.tensor(1.0), constraint=constraints.positive)
    c = vitorch.param("c", torch.tensor(0.0))
    d = vitorch.param("d", torch.tensor(0.5), constraint=constraints.positive)
    vitorch.sample("loc", dist.Normal(a, b))
    vitorch.sample("scale", dist.LogNormal(c, d))


class AmortizedGuide:
    """A guide whose parameters live in an nn.Module registered with vitorch.module."""

    def __init__(self):
        self.net = torch.nn.Linear(1, 4)

    def __call__(self, data):
        out = vitorch.module("net", self.net)(data.mean().reshape(1, 1)).reshape(4)
        vitorch.sample("loc", dist.Normal(out[0], torch.nn.functional.softplus(out[1])))
        vitorch.sample("scale", dist.LogNormal(out[2], torch.nn.functional.softplus(out[3])))


GUIDES = {
    "manual": lambda: manual_guide,
    "AutoNormal": lambda: AutoNormal(model),
    "AutoMultivariateNormal": lambda: AutoMultivariateNormal(model),
    "module": AmortizedGuide,
}


def make_svi(guide_name):
    return SVI(model, GUIDES[guide_name](), vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO())


@pytest.fixture
def data():
    torch.manual_seed(0)
    return torch.randn(20) + 3.0


def params_now():
    return {k: v.detach().clone() for k, v in vitorch.get_param_store().named_parameters()}


class Stop:
    """A callback raising KeyboardInterrupt after step k, as a Ctrl-C there would."""

    def __init__(self, k):
        self.k = k

    def __call__(self, step, loss):
        if step == self.k:
            raise KeyboardInterrupt


# -- exact resume ------------------------------------------------------------------------
@pytest.mark.parametrize("guide_name", list(GUIDES))
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, data, guide_name):
    n, k = 40, 17
    vitorch.set_rng_seed(5)
    full = make_svi(guide_name).run(n, data, progress=False)
    full_params = params_now()

    path = tmp_path / "ckpt.pt"
    vitorch.clear_param_store()
    vitorch.set_rng_seed(5)
    with pytest.raises(KeyboardInterrupt):
        make_svi(guide_name).run(
            n, data, progress=False, checkpoint=path, checkpoint_every=5, callbacks=[Stop(k)]
        )
    assert load_checkpoint(path)["step"] == k

    # A fresh start in every respect but the file: other seed, new guide and optimizer.
    vitorch.clear_param_store()
    vitorch.set_rng_seed(12345)
    resumed = make_svi(guide_name).run(n, data, progress=False, checkpoint=path, resume=True)
    assert resumed.start_step == k
    assert resumed.losses == full.losses  # floats compared exactly
    after = params_now()
    assert after.keys() == full_params.keys()
    for name, value in full_params.items():
        assert torch.equal(after[name], value), name
    assert load_checkpoint(path)["step"] == n


def test_resume_keeps_the_convergence_criterion_state(tmp_path, data):
    def crit():
        return RelativeLossChange(tol=3e-3, window=15)

    vitorch.set_rng_seed(1)
    full = make_svi("manual").run(2000, data, progress=False, convergence=crit())
    assert full.converged and full.num_steps > 60
    k = full.num_steps // 2

    path = tmp_path / "ckpt.pt"
    vitorch.clear_param_store()
    vitorch.set_rng_seed(1)
    with pytest.raises(KeyboardInterrupt):
        make_svi("manual").run(
            2000, data, progress=False, convergence=crit(), checkpoint=path, callbacks=[Stop(k)]
        )
    vitorch.clear_param_store()
    resumed = make_svi("manual").run(
        2000, data, progress=False, convergence=crit(), checkpoint=path, resume=True
    )
    assert resumed.converged and resumed.num_steps == full.num_steps
    assert resumed.losses == full.losses


def test_resume_with_a_path_and_a_finished_checkpoint(tmp_path, data):
    path = tmp_path / "c.pt"
    make_svi("manual").run(12, data, progress=False, checkpoint=path)
    before = params_now()
    vitorch.clear_param_store()
    # Already at step 12: nothing to run; the state is restored and returned.
    result = make_svi("manual").run(12, data, progress=False, resume=path)
    assert result.num_steps == 12 and result.start_step == 12
    for name, value in before.items():
        assert torch.equal(params_now()[name], value)


def test_resume_true_without_a_file_starts_afresh_and_a_missing_path_is_an_error(tmp_path, data):
    path = tmp_path / "none-yet.pt"
    result = make_svi("manual").run(8, data, progress=False, checkpoint=path, resume=True)
    assert result.start_step == 0 and result.num_steps == 8
    assert load_checkpoint(path)["step"] == 8
    with pytest.raises(FileNotFoundError):
        make_svi("manual").run(8, data, progress=False, resume=tmp_path / "missing.pt")


# -- round trip --------------------------------------------------------------------------
def test_round_trip_restores_params_optimizer_and_every_rng(tmp_path, data):
    svi = make_svi("manual")
    for _ in range(5):
        svi.step(data)
    path = tmp_path / "c.pt"
    vitorch.set_rng_seed(99)
    save_checkpoint(path, svi.optim, step=5, losses=[1.0, 2.5], skipped_steps=[2], extra={"a": 1})
    expected_draws = (torch.randn(3), random.random(), np.random.rand(2))
    saved_params = params_now()
    saved_optim = svi.optim.get_state()

    for _ in range(3):
        svi.step(data)  # move everything on
    state = load_checkpoint(path)
    assert state["format"] == FORMAT
    assert state["step"] == 5 and state["losses"] == [1.0, 2.5] and state["skipped_steps"] == [2]
    assert state["extra"] == {"a": 1}
    restore_checkpoint(state, svi.optim)
    for name, value in saved_params.items():
        assert torch.equal(params_now()[name], value)
    restored_optim = svi.optim.get_state()
    for name, st in saved_optim.items():
        for key, value in st["state"][0].items():
            assert torch.equal(restored_optim[name]["state"][0][key], value)
    draws = (torch.randn(3), random.random(), np.random.rand(2))
    assert torch.equal(draws[0], expected_draws[0])
    assert draws[1] == expected_draws[1]
    assert np.array_equal(draws[2], expected_draws[2])


def test_capture_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path / "c.pt", None, step=-1)
    with pytest.raises(TypeError, match="optim"):
        save_checkpoint(tmp_path / "c.pt", object(), step=0)


def test_a_file_of_another_kind_is_refused_with_a_clear_error(tmp_path):
    vitorch.param("w", torch.zeros(2))
    path = tmp_path / "params.pt"
    vitorch.get_param_store().save(path)
    with pytest.raises(ValueError, match="not a vitorch checkpoint"):
        load_checkpoint(path)


# -- Ctrl-C ------------------------------------------------------------------------------
def test_keyboard_interrupt_from_a_callback_checkpoints_that_step(tmp_path, data):
    path = tmp_path / "c.pt"
    with pytest.raises(KeyboardInterrupt):
        make_svi("manual").run(
            100, data, progress=False, checkpoint=path, checkpoint_every=5, callbacks=[Stop(7)]
        )
    state = load_checkpoint(path)
    assert state["step"] == 7 and len(state["losses"]) == 7
    for name, value in params_now().items():
        assert torch.equal(state["param_store"]["params"][name], value)


def test_a_real_sigint_is_held_until_the_step_is_done(tmp_path, data):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by something else here; sending one is not safe")
    path = tmp_path / "c.pt"

    def press_ctrl_c(step, loss):
        if step == 9:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        make_svi("manual").run(100, data, progress=False, checkpoint=path, callbacks=[press_ctrl_c])
    assert load_checkpoint(path)["step"] == 9
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_interrupt_inside_a_step_keeps_the_previous_checkpoint(tmp_path, data):
    path = tmp_path / "c.pt"
    calls = {"n": 0}

    def interrupted_model(data):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        model(data)

    svi = SVI(interrupted_model, manual_guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO())
    with pytest.raises(KeyboardInterrupt):
        svi.run(100, data, progress=False, checkpoint=path, checkpoint_every=5)
    assert load_checkpoint(path)["step"] == 5


def test_a_save_interrupted_half_way_leaves_the_previous_checkpoint(tmp_path, data, monkeypatch):
    path = tmp_path / "c.pt"
    real_save = torch.save
    saves = {"n": 0}

    def half_save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            f.write(b"PK\x03\x04 half a file")  # then the user presses Ctrl-C again
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        make_svi("manual").run(
            100, data, progress=False, checkpoint=path, checkpoint_every=5, callbacks=[Stop(7)]
        )
    monkeypatch.setattr(torch, "save", real_save)
    assert saves["n"] == 2  # step 5's save, then the interrupted one of step 7
    assert load_checkpoint(path)["step"] == 5
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary file left behind


# -- unsafe files ------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_checkpoint_crafted_to_run_code_is_refused_and_runs_nothing(tmp_path, data):
    marker = str(tmp_path / "code-ran")
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "step": 0, "payload": _Payload(marker)}, path)
    # The file really does run code under a plain unpickler...
    torch.load(path, weights_only=False)
    assert os.path.isdir(marker)
    os.rmdir(marker)
    # ...and vitorch refuses it without running anything.
    with pytest.raises(UnsafeFileError):
        load_checkpoint(path)
    with pytest.raises(UnsafeFileError):
        make_svi("manual").run(10, data, progress=False, resume=path)
    assert not os.path.exists(marker)
