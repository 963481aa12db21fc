"""vitorch.optim calls torch's fused Adam/AdamW kernel directly: same numbers, same state."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import vitorch.optim as optim
from vitorch.optim import _fused
from vitorch.params import get_param_store

pytestmark = pytest.mark.skipif(not _fused._enabled, reason="torch has no fused Adam kernel")


def _params(dtype=torch.float32):
    store = get_param_store()
    out = []
    for name, shape in (("a", (3,)), ("b", (2, 4)), ("m$$$w", ())):
        store.get_param(name, torch.randn(shape, dtype=dtype))
        out.append(store.get_unconstrained(name))
    return out


def _grads(params, t):
    for p in params:
        p.grad = None
    loss = sum(((p - math.sin(t + i)) ** 2).sum() * (i + 1) for i, p in enumerate(params))
    loss.backward()


def _forbid_step(wrapper):
    """Make torch's own step() raise, so only the direct kernel call can update."""

    def refuse(*args, **kwargs):
        raise AssertionError("Optimizer.step() was called")

    for opt in {id(o): o for o in wrapper.optim_objs.values()}.values():
        opt.step = refuse


@pytest.mark.parametrize(
    "wrapper, torch_cls, args",
    [
        (optim.Adam, torch.optim.Adam, {"lr": 0.05, "amsgrad": True, "maximize": True}),
        (optim.Adam, torch.optim.Adam, {"lr": 0.02, "weight_decay": 0.3, "eps": 1e-6}),
        (optim.AdamW, torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_kernel_matches_torch_step_and_state(wrapper, torch_cls, args, dtype):
    ours = _params(dtype)
    ref = [p.detach().clone().requires_grad_(True) for p in ours]
    w = wrapper(args)
    t_opt = torch_cls(ref, **args, fused=True)
    for t in range(12):
        _grads(ours, t)
        _grads(ref, t)
        w(ours)
        if t == 0:
            _forbid_step(w)  # from here on only the direct path can step
        t_opt.step()
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
    (opt,) = {id(o): o for o in w.optim_objs.values()}.values()
    for p, q in zip(ours, ref):
        mine, theirs = opt.state[p], t_opt.state[q]
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key].dtype == theirs[key].dtype, key
            assert torch.equal(mine[key], theirs[key]), key


def test_only_the_params_passed_are_stepped():
    a, b, c = _params()
    w = optim.Adam({"lr": 0.1})
    _grads([a, b, c], 0)
    w([a, b, c])
    _forbid_step(w)
    before = [p.detach().clone() for p in (a, b, c)]
    _grads([a, b, c], 1)
    w([a])  # b and c hold gradients too, but were not passed
    assert not torch.equal(a, before[0])
    assert torch.equal(b, before[1]) and torch.equal(c, before[2])


def test_hooks_and_closures_take_torch_path():
    (a, *_) = _params()
    w = optim.Adam({"lr": 0.1})
    _grads([a], 0)
    w([a])
    (opt,) = set(w.optim_objs.values())
    calls = []
    handle = opt.register_step_post_hook(lambda *_: calls.append(1))
    _grads([a], 1)
    w([a])
    assert calls == [1]  # the direct path would have skipped the hook
    handle.remove()
    _grads([a], 2)
    w([a], lambda: None)  # a closure is torch's business
    assert torch.isfinite(a).all()


def test_tensor_lr_falls_back_to_torch():
    (a, *_) = _params()
    ref = a.detach().clone().requires_grad_(True)
    w = optim.Adam({"lr": torch.tensor(0.05)})
    t_opt = torch.optim.Adam([ref], lr=torch.tensor(0.05), fused=True)
    for t in range(5):
        _grads([a], t)
        _grads([ref], t)
        w([a])
        t_opt.step()
    assert torch.equal(a, ref)


def test_scheduler_sees_an_optimizer_step():
    # torch's schedulers warn when they step before the optimizer ever did.
    (a, *_) = _params()
    sched = optim.StepLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1}, "step_size": 1})
    _grads([a], 0)
    sched([a])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
    (opt,) = {id(o.optimizer): o.optimizer for o in sched.optim_objs.values()}.values()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_changing_subsets_and_torch_state_loads_keep_the_trajectory():
    # The kept kernel lists follow the set of parameters stepped and a state reloaded into
    # the torch optimizer behind vitorch's back.
    ours = _params()
    ref = [p.detach().clone().requires_grad_(True) for p in ours]
    w = optim.Adam({"lr": 0.05})
    t_opt = torch.optim.Adam(ref, lr=0.05, fused=True)
    subsets = [[0, 1, 2], [0], [1, 2], [0, 1, 2], [2], [0, 1, 2]]
    snapshot = None
    for t, subset in enumerate(subsets * 2):
        _grads([ours[i] for i in subset], t)
        _grads([ref[i] for i in subset], t)
        for i in range(3):
            if i not in subset:
                ref[i].grad = None  # torch steps whatever has a gradient
        w([ours[i] for i in subset])
        t_opt.step()
        if t == 3:
            (opt,) = {id(o): o for o in w.optim_objs.values()}.values()
            snapshot = (copy.deepcopy(opt.state_dict()), copy.deepcopy(t_opt.state_dict()))
        if t == 8:
            opt.load_state_dict(snapshot[0])
            t_opt.load_state_dict(snapshot[1])
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
    for p, q in zip(ours, ref):
        assert torch.equal(opt.state[p]["step"], t_opt.state[q]["step"])


def test_saved_state_is_independent_of_the_live_counters(tmp_path):
    names = ("a", "b", "m$$$w")
    ours = _params()
    w = optim.Adam({"lr": 0.05})
    for t in range(3):
        _grads(ours, t)
        w(ours)
    saved = w.get_state()
    path = tmp_path / "optim.pt"
    w.save(path)
    at_save = [p.detach().clone().requires_grad_(True) for p in ours]
    _grads(ours, 3)
    w(ours)  # the live counters move on; the snapshot must not
    assert all(float(s["state"][0]["step"]) == 3.0 for s in saved.values())
    # The file resumes exactly: the same fourth step from the saved parameters.
    fresh = optim.Adam({"lr": 0.05})
    fresh.load(path)
    _grads(at_save, 3)
    fresh.step_named(dict(zip(names, at_save)))
    for p, q in zip(ours, at_save):
        assert torch.equal(p, q)
    assert all(float(s["state"][0]["step"]) == 4.0 for s in fresh.get_state().values())


def test_mixed_dtypes_in_one_cohort_take_torch_path():
    store = get_param_store()
    store.get_param("x32", torch.randn(3))
    store.get_param("x64", torch.randn(3, dtype=torch.float64))
    ours = [store.get_unconstrained("x32"), store.get_unconstrained("x64")]
    ref = [p.detach().clone().requires_grad_(True) for p in ours]
    w = optim.Adam({"lr": 0.05})
    t_opt = torch.optim.Adam(ref, lr=0.05, fused=True)
    for t in range(4):
        _grads(ours, t)
        _grads(ref, t)
        w(ours)
        t_opt.step()
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
