"""Tests for vitorch.optim: Pyro-style optimizer and scheduler wrappers."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import vitorch.optim as optim
from vitorch._io import UnsafeFileError
from vitorch.optim.clipped_adam import ClippedAdam as TorchClippedAdam
from vitorch.params import clear_param_store, get_param_store


@pytest.fixture(autouse=True)
def _fresh_store():
    clear_param_store()
    torch.manual_seed(0)
    yield
    clear_param_store()


def _make_params(names_shapes, dtype=torch.float32):
    """Create params in the store; return the unconstrained leaf tensors in order."""
    store = get_param_store()
    out = []
    for name, shape in names_shapes:
        store.get_param(name, torch.randn(shape, dtype=dtype))
        out.append(store.get_unconstrained(name))
    return out


def _loss(params, t):
    # A smooth objective whose gradient changes with the step t.
    return sum(
        ((p - 0.1 * (i + 1) * math.sin(t + i)) ** 2).sum() * (i + 1) for i, p in enumerate(params)
    )


def _set_grads(params, t):
    for p in params:
        p.grad = None
    _loss(params, t).backward()


def _clones(params):
    return [p.detach().clone().requires_grad_(True) for p in params]


SHAPES = [("loc", (3,)), ("scale", (2, 2)), ("mod$$$weight", ())]


# -- trajectories match torch --------------------------------------------------------------
@pytest.mark.parametrize(
    "wrapper, torch_cls, args",
    [
        (optim.Adam, torch.optim.Adam, {"lr": 0.05, "betas": (0.8, 0.99)}),
        (optim.AdamW, torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.1}),
        (optim.SGD, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
        (optim.RMSprop, torch.optim.RMSprop, {"lr": 0.01}),
        (optim.Adagrad, torch.optim.Adagrad, {"lr": 0.1}),
    ],
)
def test_trajectory_matches_torch_exactly(wrapper, torch_cls, args):
    ours = _make_params(SHAPES)
    ref = _clones(ours)
    w = wrapper(args)
    # vitorch picks torch's fused kernel where one exists; compare with that kernel.
    fused = torch_cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad)
    t_opt = torch_cls(ref, **args, **({"fused": True} if fused else {}))
    for t in range(15):
        _set_grads(ours, t)
        _set_grads(ref, t)
        w(ours)
        t_opt.step()
        for p in ours:
            p.grad = None
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
    # All three share one torch optimizer (the point of the design).
    assert len({id(o) for o in w.optim_objs.values()}) == 1


@pytest.mark.parametrize(
    "wrapper, torch_cls, args",
    [
        (optim.Adam, torch.optim.Adam, {"lr": 0.05, "betas": (0.8, 0.99)}),
        (optim.AdamW, torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.1}),
        (optim.SGD, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
        (optim.Adagrad, torch.optim.Adagrad, {"lr": 0.1}),
    ],
)
def test_fused_default_does_the_per_tensor_update(wrapper, torch_cls, args):
    # The fused kernel is the same update as torch's default loop, up to rounding; and a
    # user who names an implementation gets exactly that one.
    ours = _make_params(SHAPES)
    chosen = _clones(ours)
    ref = _clones(ours)
    w, w_chosen = wrapper(args), wrapper({**args, "foreach": False})
    t_opt = torch_cls(ref, **args, foreach=False)
    for t in range(15):
        for params in (ours, chosen, ref):
            _set_grads(params, t)
        w(ours)
        w_chosen(chosen)
        t_opt.step()
    for p, q, r in zip(ours, chosen, ref):
        assert torch.equal(q, r)
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
    assert all(o.defaults.get("fused") for o in w.optim_objs.values())


def test_step_named_matches_call():
    ours = _make_params(SHAPES)
    other = _clones(ours)
    a, b = optim.Adam({"lr": 0.1}), optim.Adam({"lr": 0.1})
    for t in range(5):
        _set_grads(ours, t)
        _set_grads(other, t)
        a(ours)
        b.step_named({name: p for (name, _), p in zip(SHAPES, other)})
    for p, q in zip(ours, other):
        assert torch.equal(p, q)
    assert set(a.get_state()) == set(b.get_state()) == {n for n, _ in SHAPES}


# -- per-parameter arguments ---------------------------------------------------------------
def test_per_param_callable_sets_learning_rates():
    lrs = {"a": 0.1, "b": 0.01, "c": 0.1}
    calls = []

    def per_param(name):
        calls.append(name)
        return {"lr": lrs[name]}

    params = _make_params([("a", (4,)), ("b", (4,)), ("c", (4,))])
    before = [p.detach().clone() for p in params]
    w = optim.SGD(per_param)
    grads = [torch.randn(4) for _ in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    w(params)
    for lr, p, b, g in zip(lrs.values(), params, before, grads):
        torch.testing.assert_close(p.detach(), b - lr * g, rtol=0, atol=0)
    # A second step does not call the callable again.
    w(params)
    assert calls == ["a", "b", "c"]
    # Equal args share one torch optimizer, different args get their own.
    objs = w.optim_objs
    assert objs[params[0]] is objs[params[2]]
    assert objs[params[0]] is not objs[params[1]]


def test_per_param_callable_two_argument_form():
    seen = []

    def per_param(module_name, param_name):
        seen.append((module_name, param_name))
        return {"lr": 0.5 if module_name == "mod" else 0.0}

    (p,) = _make_params([("mod$$$weight", (2,))])
    (q,) = _make_params([("free", (2,))])
    p0, q0 = p.detach().clone(), q.detach().clone()
    p.grad = torch.ones(2)
    q.grad = torch.ones(2)
    optim.SGD(per_param)([p, q])
    assert seen == [("mod", "weight"), ("free", "free")]
    assert torch.equal(p.detach(), p0 - 0.5)
    assert torch.equal(q.detach(), q0)


def test_one_argument_callable_gets_normalized_module_name():
    seen = []
    (p,) = _make_params([("net$$$layer.bias", (2,))])
    p.grad = torch.ones(2)
    optim.Adam(lambda name: seen.append(name) or {"lr": 0.1})([p])
    assert seen == ["net.layer.bias"]


# -- only the params passed are stepped ----------------------------------------------------
def test_param_not_passed_is_not_updated():
    a, b = _make_params([("a", (3,)), ("b", (3,))])
    w = optim.Adam({"lr": 0.1})
    _set_grads([a, b], 0)
    w([a, b])
    b_after_first = b.detach().clone()
    a_after_first = a.detach().clone()
    # b has a (stale) gradient but is not passed: it must not move.
    _set_grads([a, b], 1)
    w([a])
    assert torch.equal(b.detach(), b_after_first)
    assert not torch.equal(a.detach(), a_after_first)
    opt = w.optim_objs[a]
    assert float(opt.state[a]["step"]) == 2
    assert float(opt.state[b]["step"]) == 1
    # The group still lists both after the narrowed step.
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(a), id(b)]


def test_param_with_no_grad_is_skipped():
    a, b = _make_params([("a", (3,)), ("b", (3,))])
    w = optim.Adam({"lr": 0.1})
    a.grad = torch.ones(3)
    b0 = b.detach().clone()
    w([a, b])
    assert torch.equal(b.detach(), b0)
    assert b not in w.optim_objs[a].state or not w.optim_objs[a].state[b]


def test_unnamed_tensor_gets_stable_generated_name(tmp_path):
    x = torch.zeros(2, requires_grad=True)
    x.grad = torch.ones(2)
    w = optim.Adam({"lr": 0.1})
    w([x])
    assert list(w.get_state()) == ["_unnamed_0"]


def test_recreated_param_gets_fresh_state():
    store = get_param_store()
    (old,) = _make_params([("a", (2,))])
    w = optim.Adam({"lr": 0.1})
    old.grad = torch.ones(2)
    w([old])
    del store["a"]
    (new,) = _make_params([("a", (2,))])
    new.grad = torch.ones(2)
    w([new])
    assert old not in w.optim_objs
    assert float(w.optim_objs[new].state[new]["step"]) == 1


# -- ClippedAdam ---------------------------------------------------------------------------
def _hand_clipped_adam(x, grads, lr, betas, eps, weight_decay, clip_norm, lrd):
    """Reference ClippedAdam, elementwise in plain Python floats."""
    b1, b2 = betas
    m = [0.0] * len(x)
    v = [0.0] * len(x)
    x = list(x)
    for t, g in enumerate(grads, start=1):
        lr = lr * lrd
        for i in range(len(x)):
            gi = min(max(g[i], -clip_norm), clip_norm) + weight_decay * x[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            x[i] -= step * m[i] / (math.sqrt(v[i]) + eps)
    return x, lr


def test_clipped_adam_against_hand_computation():
    (p,) = _make_params([("x", (5,))], dtype=torch.float64)
    x0 = p.detach().tolist()
    grads = [(torch.randn(5, dtype=torch.float64) * 3).tolist() for _ in range(6)]
    args = dict(lr=0.1, betas=(0.7, 0.9), eps=1e-6, weight_decay=0.05, clip_norm=0.8, lrd=0.9)
    w = optim.ClippedAdam(args)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        w([p])
        # The gradient is clamped in place, as in Pyro.
        assert float(p.grad.abs().max()) <= 0.8
    expected, lr_final = _hand_clipped_adam(x0, grads, **args)
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64))
    assert w.optim_objs[p].param_groups[0]["lr"] == pytest.approx(lr_final, rel=1e-14)
    assert w.optim_objs[p].param_groups[0]["lr"] == pytest.approx(0.1 * 0.9**6, rel=1e-14)


def test_clipped_adam_defaults_and_clipping_only():
    # Large gradients: with clip_norm=10 they act as +-10.
    (p,) = _make_params([("x", (3,))], dtype=torch.float64)
    x0 = p.detach().tolist()
    g = [100.0, -50.0, 3.0]
    p.grad = torch.tensor(g, dtype=torch.float64)
    optim.ClippedAdam({"lr": 0.01})([p])
    expected, _ = _hand_clipped_adam(x0, [g], 0.01, (0.9, 0.999), 1e-8, 0.0, 10.0, 1.0)
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64))


def test_clipped_adam_matches_pyro_bitwise():
    pyro_clipped = pytest.importorskip("pyro.optim.clipped_adam")
    ps = [torch.randn(4, requires_grad=True), torch.randn(2, 3, requires_grad=True)]
    qs = _clones(ps)
    args = dict(lr=0.05, clip_norm=0.5, lrd=0.95, weight_decay=0.01)
    ours = TorchClippedAdam(ps, **args)
    theirs = pyro_clipped.ClippedAdam(qs, **args)
    for t in range(8):
        _set_grads(ps, t)
        _set_grads(qs, t)
        ours.step()
        theirs.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "bad", [{"clip_norm": 0.0}, {"clip_norm": -1.0}, {"lrd": 0.0}, {"lrd": -0.5}]
)
def test_clipped_adam_rejects_nonpositive(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        optim.ClippedAdam(bad)


# -- gradient clipping via clip_args -------------------------------------------------------
def test_clip_args_clip_each_param_by_its_own_norm():
    ps = _make_params([("a", (5,)), ("b", (3,)), ("c", (2,))])
    refs = _clones(ps)
    grads = [torch.randn(5) * 10, torch.randn(3) * 0.01, torch.randn(2) * 3]
    w = optim.SGD({"lr": 0.1}, {"clip_norm": 1.0, "clip_value": 0.9})
    for p, r, g in zip(ps, refs, grads):
        p.grad = g.clone()
        r.grad = g.clone()
        torch.nn.utils.clip_grad_norm_([r], 1.0)
        torch.nn.utils.clip_grad_value_([r], 0.9)
    w(ps)
    for p, r in zip(ps, refs):
        assert torch.equal(p.grad, r.grad)
        assert torch.equal(p.detach(), r.detach() - 0.1 * r.grad)


def test_clip_args_rejects_unknown_key():
    with pytest.raises(ValueError, match="clip_nrom"):
        optim.Adam({"lr": 0.1}, {"clip_nrom": 1.0})


# -- schedulers ----------------------------------------------------------------------------
def _lambda(epoch):
    return 0.9**epoch


SCHEDULERS = [
    ("ExponentialLR", {"gamma": 0.8}),
    ("StepLR", {"step_size": 2, "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [1, 3], "gamma": 0.3}),
    ("CosineAnnealingLR", {"T_max": 4, "eta_min": 0.001}),
    ("LambdaLR", {"lr_lambda": _lambda}),
    ("OneCycleLR", {"max_lr": 0.5, "total_steps": 10}),
    ("LinearLR", {"start_factor": 0.5, "total_iters": 3}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2}),
    ("ReduceLROnPlateau", {"factor": 0.5, "patience": 0}),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_scheduler_matches_torch(name, kwargs):
    ours = _make_params(SHAPES)
    ref = _clones(ours)
    inner = {"lr": 0.05, "momentum": 0.9}
    w = getattr(optim, name)({"optimizer": torch.optim.SGD, "optim_args": inner, **kwargs})
    t_opt = torch.optim.SGD(ref, **inner, fused=True)  # vitorch picks the fused kernel
    t_sched = getattr(torch.optim.lr_scheduler, name)(t_opt, **kwargs)
    plateau = name == "ReduceLROnPlateau"
    losses = [1.0, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4]
    lrs = []
    for t, loss in enumerate(losses):
        _set_grads(ours, t)
        _set_grads(ref, t)
        w(ours)
        t_opt.step()
        if plateau:
            w.step(loss)
            t_sched.step(loss)
        else:
            w.step()
            t_sched.step()
        ours_lr = w.optim_objs[ours[0]].optimizer.param_groups[0]["lr"]
        assert ours_lr == t_opt.param_groups[0]["lr"]
        lrs.append(ours_lr)
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
    assert len(set(lrs)) > 1  # the schedule did change the learning rate


def test_scheduler_late_param_starts_its_own_schedule():
    a, b = _make_params([("a", (2,)), ("b", (2,))])
    w = optim.ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "gamma": 0.5})
    a.grad = torch.ones(2)
    w([a])
    w.step()
    w.step()
    b.grad = torch.ones(2)
    w([a, b])
    lr = {p: s.optimizer.param_groups[0]["lr"] for p, s in w.optim_objs.items()}
    assert lr[a] == 0.25 and lr[b] == 1.0
    w.step()
    lr = {p: s.optimizer.param_groups[0]["lr"] for p, s in w.optim_objs.items()}
    assert lr[a] == 0.125 and lr[b] == 0.5


def test_pyro_lr_scheduler_generic_and_input_dict_untouched():
    args = {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1}, "step_size": 1}
    w = optim.PyroLRScheduler(torch.optim.lr_scheduler.StepLR, args)
    assert set(args) == {"optimizer", "optim_args", "step_size"}
    (p,) = _make_params([("a", (2,))])
    p.grad = torch.ones(2)
    w([p])
    w.step()
    assert w.optim_objs[p].get_last_lr() == [pytest.approx(0.01)]


def test_scheduler_argument_errors():
    with pytest.raises(ValueError, match="'optimizer'"):
        optim.StepLR({"optim_args": {"lr": 0.1}, "step_size": 1})
    with pytest.raises(TypeError, match="gama"):
        optim.StepLR(
            {"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1}, "step_size": 1, "gama": 0.1}
        )
    with pytest.raises(TypeError, match="step_size"):
        optim.StepLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1}})


# -- state ---------------------------------------------------------------------------------
def _run(w, params, steps):
    for t in steps:
        _set_grads(params, t)
        w(params)
        for p in params:
            p.grad = None


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.Adam({"lr": 0.05}),
        lambda: optim.ClippedAdam({"lr": 0.05, "lrd": 0.9, "clip_norm": 0.5}),
        lambda: optim.ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05}, "gamma": 0.7}
        ),
    ],
    ids=["Adam", "ClippedAdam", "ExponentialLR"],
)
def test_save_load_resumes_exactly(make, tmp_path):
    params = _make_params(SHAPES)
    start = [p.detach().clone() for p in params]
    sched = isinstance(make(), optim.PyroLRScheduler)

    def run(w, steps):
        for t in steps:
            _set_grads(params, t)
            w(params)
            if sched:
                w.step()
            for p in params:
                p.grad = None

    w = make()
    run(w, range(10))
    straight = [p.detach().clone() for p in params]

    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)
    w1 = make()
    run(w1, range(5))
    w1.save(tmp_path / "optim.pt")
    w2 = make()  # fresh: the params have not been seen yet, so the state waits for them
    w2.load(tmp_path / "optim.pt")
    run(w2, range(5, 10))
    for p, s in zip(params, straight):
        assert torch.equal(p.detach(), s)


def test_set_state_applies_to_params_already_seen():
    params = _make_params(SHAPES)
    w = optim.Adam({"lr": 0.1})
    _run(w, params, range(3))
    snap = w.get_state()
    values = [p.detach().clone() for p in params]
    _run(w, params, range(3, 6))
    after = [p.detach().clone() for p in params]
    # Rewind the values and the optimizer; replaying must give the same numbers.
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
    w.set_state(snap)
    _run(w, params, range(3, 6))
    for p, a in zip(params, after):
        assert torch.equal(p.detach(), a)
    # The snapshot did not move while stepping (it holds copies).
    assert float(snap["loc"]["state"][0]["step"]) == 3


def test_get_state_layout_and_pending_state_kept():
    (p,) = _make_params([("a", (2,))])
    p.grad = torch.ones(2)
    w = optim.Adam({"lr": 0.1})
    w([p])
    state = w.get_state()
    assert set(state["a"]) == {"state", "param_groups"}
    assert state["a"]["param_groups"][0]["lr"] == 0.1
    fresh = optim.Adam({"lr": 0.1})
    fresh.set_state(state)
    assert float(fresh.get_state()["a"]["state"][0]["step"]) == 1


def test_set_state_rejects_bad_layout():
    w = optim.Adam({"lr": 0.1})
    with pytest.raises(TypeError):
        w.set_state([1, 2])
    with pytest.raises(ValueError, match="'a'"):
        w.set_state({"a": {"foo": 1}})
    s = optim.StepLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1}, "step_size": 1})
    (p,) = _make_params([("a", (2,))])
    p.grad = torch.ones(2)
    w([p])
    with pytest.raises(ValueError, match="scheduler"):
        s.set_state(w.get_state())


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("fmt", ["raw_pickle", "torch_save"])
def test_load_refuses_malicious_file(tmp_path, fmt):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    payload = {"a": _Marker(marker)}
    if fmt == "raw_pickle":
        bad.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, bad)
    assert not marker.exists()
    w = optim.Adam({"lr": 0.1})
    with pytest.raises(UnsafeFileError):
        w.load(bad)
    assert not marker.exists()
    assert w.get_state() == {}


def test_save_refuses_unsaveable_state(tmp_path):
    class Lambda:
        def __init__(self):
            self.fn = _lambda

        def __call__(self, epoch):
            return self.fn(epoch)

    w = optim.LambdaLR(
        {"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1}, "lr_lambda": Lambda()}
    )
    (p,) = _make_params([("a", (2,))])
    p.grad = torch.ones(2)
    w([p])
    with pytest.raises(TypeError, match="function"):
        w.save(tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()


# -- argument errors -----------------------------------------------------------------------
def test_argument_errors():
    with pytest.raises(
        TypeError,
        match="Adam expects a dict of optimizer arguments or a callable param_name -> dict, got float",
    ):
        optim.Adam(0.01)
    with pytest.raises(TypeError, match="Adam.*'lrr'"):
        optim.Adam({"lrr": 0.01})
    with pytest.raises(TypeError, match="Adam.*'lr'.*str"):
        optim.Adam({"lr": "0.01"})
    with pytest.raises(ValueError, match="Adam.*learning rate"):
        optim.Adam({"lr": -1.0})
    with pytest.raises(TypeError, match="SGD.*'momentum'.*number"):
        optim.SGD({"lr": 0.1, "momentum": [0.9]})
    (p,) = _make_params([("a", (2,))])
    p.grad = torch.ones(2)
    with pytest.raises(TypeError, match="list for parameter 'a'"):
        optim.Adam(lambda name: [0.1])([p])
    with pytest.raises(TypeError, match="Adam.*'lrr'"):
        optim.Adam(lambda name: {"lrr": 0.1})([p])
