"""SVI.run: early stopping, non-finite losses, callbacks, progress and option checks.

The models here have a deterministic loss (a Delta guide: MAP), so every expectation is
computed exactly from the recorded history rather than guessed.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, NonFiniteLossError, Trace_ELBO
from vitorch.infer.run import ParamChange, RelativeLossChange, SVIResult


def map_model(data, nan_at=()):
    # `nan_at`: model calls (1-based) whose observation density is made NaN.
    map_model.calls += 1
    z = vitorch.sample("z", dist.Normal(0.0, 10.0))
    loc = z * math.nan if map_model.calls in nan_at else z
    with vitorch.plate("data", len(data)):
        vitorch.sample("obs", dist.Normal(loc, 1.0, validate_args=False), obs=data)


map_model.calls = 0


def map_guide(data, nan_at=()):
    z_loc = vitorch.param("z_loc", torch.tensor(0.0))
    vitorch.sample("z", dist.Delta(z_loc))


def make_svi(lr):
    map_model.calls = 0
    return SVI(map_model, map_guide, vitorch.optim.Adam({"lr": lr}), Trace_ELBO())


def z_loc() -> float:
    return float(vitorch.get_param_store()["z_loc"].detach())


def first_windowed_stop(losses, tol, window):
    """The first step t by which the windowed-mean rule has held for `window` consecutive
    steps, by brute force (or None)."""
    calm = 0
    for t in range(2 * window, len(losses) + 1):
        recent = math.fsum(losses[t - window : t]) / window
        previous = math.fsum(losses[t - 2 * window : t - window]) / window
        calm = calm + 1 if abs(recent - previous) < tol * abs(previous) else 0
        if calm == window:
            return t
    return None


DATA = torch.tensor([1.5, 2.0, 2.5, 3.0, 3.5])


# -- convergence -------------------------------------------------------------------------
def test_stops_early_once_the_windowed_loss_is_flat():
    result = make_svi(0.1).run(5000, DATA, progress=False, convergence=RelativeLossChange(1e-6, 20))
    assert isinstance(result, SVIResult)
    assert result.converged and result.stop_reason == "converged"
    assert result.num_steps < 5000
    # It stopped exactly where the rule first holds on its own history, not before or after.
    assert first_windowed_stop(result.losses, 1e-6, 20) == result.num_steps
    # And it had converged: MAP of z is sum(x) / (n + 1/100).
    assert abs(z_loc() - float(DATA.sum()) / (len(DATA) + 0.01)) < 1e-2


def test_does_not_stop_while_the_loss_still_falls():
    far = DATA + 100.0  # far from the start; a small lr keeps the loss falling steadily
    result = make_svi(1e-3).run(300, far, progress=False, convergence=RelativeLossChange(1e-4, 20))
    assert not result.converged and result.stop_reason == "completed"
    assert result.num_steps == 300
    assert first_windowed_stop(result.losses, 1e-4, 20) is None


def test_float_shorthand_is_relative_loss_change_with_window_100():
    a = make_svi(0.1).run(3000, DATA, progress=False, convergence=1e-7)
    vitorch.clear_param_store()
    b = make_svi(0.1).run(3000, DATA, progress=False, convergence=RelativeLossChange(1e-7, 100))
    assert a.converged and a.num_steps == b.num_steps
    assert first_windowed_stop(a.losses, 1e-7, 100) == a.num_steps


def test_param_change_stops_when_the_parameters_stop_moving():
    trajectory = []
    result = make_svi(0.1).run(
        5000,
        DATA,
        progress=False,
        convergence=ParamChange(tol=1e-5, every=10),
        callbacks=[lambda step, loss: trajectory.append(z_loc())],
    )
    assert result.converged
    # Brute force: checks at steps 10, 20, ...; the first comparison is at step 20.
    expected = None
    for t in range(20, len(trajectory) + 1, 10):
        now, before = trajectory[t - 1], trajectory[t - 11]
        if abs(now - before) < 1e-5 * abs(before):
            expected = t
            break
    assert expected == result.num_steps


def test_any_of_several_criteria_stops_the_run():
    loose = RelativeLossChange(tol=1e-3, window=10)
    strict = ParamChange(tol=1e-12, every=10)
    result = make_svi(0.1).run(5000, DATA, progress=False, convergence=[strict, loose])
    assert result.converged
    assert first_windowed_stop(result.losses, 1e-3, 10) == result.num_steps
    assert "changed by" in result.message


def test_relative_loss_change_running_sums_match_brute_force():
    rng = random.Random(0)
    crit = RelativeLossChange(tol=1e-300, window=7)
    losses = [100.0 + 10 * rng.random() - 0.01 * i for i in range(500)]
    for t, x in enumerate(losses, 1):
        crit.update(t, x)
        if t >= 14:
            recent = math.fsum(losses[t - 7 : t])
            previous = math.fsum(losses[t - 14 : t - 7])
            expected = abs(recent - previous) / abs(previous)
            # Only rounding separates running sums from fresh ones.
            assert crit.relative_change == pytest.approx(expected, rel=1e-9, abs=1e-15)
        else:
            assert crit.relative_change == math.inf


def test_noise_alone_does_not_stop_a_run_that_is_still_improving():
    rng = random.Random(1)
    # A slow downward trend (0.1% per 100 steps) under noise of sd 5.
    losses = [1000.0 - 0.01 * t + rng.gauss(0.0, 5.0) for t in range(6000)]
    # The change of the windowed mean alone dips under tol many times...
    dips = 0
    for t in range(200, 6001):
        recent = math.fsum(losses[t - 100 : t]) / 100
        previous = math.fsum(losses[t - 200 : t - 100]) / 100
        dips += abs(recent - previous) < 5e-4 * abs(previous)
    assert dips > 100
    # ...but never for a whole window, so the criterion does not fire.
    crit = RelativeLossChange(tol=5e-4, window=100)
    assert not any(crit.update(t, x) for t, x in enumerate(losses, 1))


def test_a_flat_noisy_loss_converges_once_tol_is_above_the_noise():
    rng = random.Random(2)
    losses = [1000.0 + rng.gauss(0.0, 5.0) for _ in range(1000)]
    crit = RelativeLossChange(tol=1e-2, window=50)
    fired = next(t for t, x in enumerate(losses, 1) if crit.update(t, x))
    # Two windows to compare, then the rule must hold for one more window.
    assert fired == first_windowed_stop(losses, 1e-2, 50) == 2 * 50 + 50 - 1


# -- non-finite losses -------------------------------------------------------------------
def test_nonfinite_loss_raises_naming_the_site_and_step():
    seen = {}
    svi = make_svi(0.1)
    with pytest.raises(NonFiniteLossError) as info:
        svi.run(
            10,
            DATA,
            nan_at=(3,),
            progress=False,
            callbacks=[lambda step, loss: seen.__setitem__(step, z_loc())],
        )
    err = info.value
    assert err.sites == ["obs"]
    assert err.step == 3
    assert "step 3" in str(err) and "'obs'" in str(err)
    # Raised before any update: the parameter is where step 2 left it, with no gradient.
    assert z_loc() == seen[2]
    assert vitorch.get_param_store().get_unconstrained("z_loc").grad is None


def test_skip_carries_on_counts_and_makes_no_update():
    result = make_svi(0.1).run(10, DATA, nan_at=(3, 5), on_nonfinite="skip", progress=False)
    assert result.num_skipped == 2 and result.skipped_steps == [3, 5]
    assert result.num_steps == 10
    assert math.isnan(result.losses[2]) and math.isnan(result.losses[4])
    skipped_run_z = z_loc()
    finite = [x for x in result.losses if not math.isnan(x)]
    # A skipped step changes nothing: 10 steps with 2 skipped == 8 clean steps, bit for bit.
    vitorch.clear_param_store()
    reference = make_svi(0.1).run(8, DATA, progress=False)
    assert finite == reference.losses
    assert skipped_run_z == z_loc()


# -- callbacks, progress, result ---------------------------------------------------------
def test_callbacks_see_every_step_and_can_stop_the_run():
    calls = []

    def cb(step, loss):
        calls.append((step, loss))
        return step == 7

    result = make_svi(0.1).run(100, DATA, progress=False, callbacks=[cb])
    assert result.stop_reason == "callback" and not result.converged
    assert [s for s, _ in calls] == list(range(1, 8))
    assert [x for _, x in calls] == result.losses


def test_run_matches_a_bare_loop_of_step():
    result = make_svi(0.1).run(25, DATA, progress=False)
    z_run = z_loc()
    vitorch.clear_param_store()
    svi = make_svi(0.1)
    bare = [svi.step(DATA) for _ in range(25)]
    assert result.losses == bare and z_loc() == z_run


def test_progress_bar_shows_the_smoothed_loss(capsys):
    result = make_svi(0.1).run(200, DATA, progress=True)
    err = capsys.readouterr().err
    assert "200/200" in err and "loss=" in err
    assert result.num_steps == 200
    assert "SVIResult(num_steps=200" in repr(result)


def test_final_loss_is_the_mean_of_the_last_hundred():
    result = make_svi(0.1).run(150, DATA, progress=False)
    assert result.final_loss == math.fsum(result.losses[-100:]) / 100


# -- option checks -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite"),
        ({"convergence": "fast"}, TypeError, "convergence"),
        ({"callbacks": [1]}, TypeError, "callback"),
        ({"checkpoint_every": 10}, ValueError, "checkpoint_every"),
        ({"resume": True}, ValueError, "resume=True"),
        ({"checkpoint": 3}, TypeError, "checkpoint"),
    ],
)
def test_bad_options_are_reported(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        make_svi(0.1).run(10, DATA, progress=False, **kwargs)


@pytest.mark.parametrize("num_steps", [-1, 2.5, True])
def test_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        make_svi(0.1).run(num_steps, DATA, progress=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RelativeLossChange(tol=0),
        lambda: RelativeLossChange(tol=math.nan),
        lambda: RelativeLossChange(window=0),
        lambda: RelativeLossChange(window=2.0),
        lambda: ParamChange(tol=-1),
        lambda: ParamChange(every=0),
    ],
)
def test_bad_criteria(make):
    with pytest.raises(ValueError, match="must be a positive"):
        make()
