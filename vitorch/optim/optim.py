"""Pyro-style optimizer wrappers: ``vitorch.optim.Adam({"lr": 0.01})(params)``.

A :class:`PyroOptim` steps parameters that appear over time (as ``vitorch.param`` creates
them), addressed by their param-store name for saving and per-parameter settings.

Pyro builds one torch optimizer per parameter, which costs a Python-level ``step()`` per
parameter per SVI step. Here parameters with equal arguments share one torch optimizer
(a *cohort*), so a step calls ``torch.optim.X.step()`` once per distinct argument set. Per
call, the cohort's param group temporarily holds exactly the parameters passed in, so only
those are updated, whatever the other parameters' ``.grad`` holds.

A parameter that appears after its cohort's hyper-parameters have drifted (a scheduler
stepped, ClippedAdam decayed ``lr``) starts a new cohort with fresh hyper-parameters,
exactly as Pyro's fresh per-parameter optimizer would. Known difference from Pyro: within a
cohort a learning-rate decay (ClippedAdam ``lrd``) happens once per call for the whole
cohort, also for cohort members not passed in that call.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterable, Mapping
from numbers import Real
from typing import Any

import torch
from torch.optim import Optimizer

from .._io import atomic_save, safe_load
from ..params import MODULE_DIVIDER, user_param_name
from ._fused import forget_plan, fused_adam_step
from .adagrad_rmsprop import AdagradRMSProp as _TorchAdagradRMSProp
from .clipped_adam import ClippedAdam as _TorchClippedAdam

__all__ = ["PyroOptim", "AdagradRMSProp", "ClippedAdam"]

_CLIP_KEYS = ("clip_norm", "clip_value")


# -- small helpers -------------------------------------------------------------------------
def _type_name(x: Any) -> str:
    return type(x).__name__


def _freeze(x: Any) -> Any:
    """A hashable stand-in for ``x``, equal for equal plain values (used as a cache key)."""
    if isinstance(x, (str, int, float, bool, type(None))):
        return (type(x).__name__, x)
    if isinstance(x, Mapping):
        return ("dict", tuple(sorted(((str(k), _freeze(v)) for k, v in x.items()))))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(_freeze(v) for v in x))
    if isinstance(x, torch.Tensor):
        return (
            "tensor",
            str(x.dtype),
            tuple(x.shape),
            tuple(x.detach().cpu().reshape(-1).tolist()),
        )
    # Functions and other objects compare by identity; they stay alive in our caches.
    return ("id", id(x))


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _copy(x: Any) -> Any:
    """Deep copy of plain data; tensors are cloned so a snapshot does not move on."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_copy(v) for v in x)
    return x


def _check_plain(x: Any, path: str) -> None:
    """Refuse to save anything that the safe loader would later reject."""
    if isinstance(x, (torch.Tensor, str, int, float, bool, type(None))):
        return
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, (str, int)):
                raise TypeError(
                    f"cannot save optimizer state: key {k!r} at {path} is not a str or int"
                )
            _check_plain(v, f"{path}[{k!r}]")
        return
    if isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _check_plain(v, f"{path}[{i}]")
        return
    raise TypeError(
        f"cannot save optimizer state: {path} holds a {_type_name(x)} ({x!r}); only tensors, "
        f"numbers, strings, None, lists, tuples and dicts can be saved (a scheduler with a "
        f"callable lr_lambda object, for instance, keeps that object in its state)"
    )


def _positional_arity(fn: Callable) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    n = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return 1
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            n += 1
    return 2 if n == 2 else 1


def _call_per_param(fn: Callable, arity: int, name: str) -> Any:
    """Call a per-parameter settings callable the way Pyro does."""
    if arity == 2:
        # Pyro's older two-argument form: (module name, parameter name).
        return fn(name.split(MODULE_DIVIDER)[0], user_param_name(name))
    return fn(name.replace(MODULE_DIVIDER, "."))


def _is_number(x: Any) -> bool:
    return (isinstance(x, Real) and not isinstance(x, bool)) or (
        isinstance(x, torch.Tensor) and x.dim() == 0
    )


def _check_kwargs(owner: str, fn: Callable, kwargs: Mapping, what: str, skip_first: int) -> None:
    """Check argument names (and the types implied by the defaults) against ``fn``'s signature."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = list(sig.parameters.values())[skip_first:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = None
    else:
        accepted = {p.name: p for p in params if p.kind is not p.VAR_POSITIONAL}
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"{owner}: {what} names must be strings, got {key!r}")
        if accepted is None:
            continue
        if key not in accepted:
            raise TypeError(f"{owner} got an unknown {what} {key!r}; it accepts {sorted(accepted)}")
        default = accepted[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError(
                    f"{owner}: {what} {key!r} must be a bool, got {_type_name(value)} ({value!r})"
                )
        elif isinstance(default, (int, float)) and default is not None:
            if not _is_number(value):
                raise TypeError(
                    f"{owner}: {what} {key!r} must be a number, got {_type_name(value)} ({value!r})"
                )
        elif isinstance(default, tuple) and default and all(_is_number(d) for d in default):
            if not (
                isinstance(value, (tuple, list))
                and len(value) == len(default)
                and all(_is_number(v) for v in value)
            ):
                raise TypeError(
                    f"{owner}: {what} {key!r} must be a tuple of {len(default)} numbers, "
                    f"got {value!r}"
                )


def _reraise(owner: str, what: str, args: Mapping, e: Exception) -> None:
    cls = type(e) if isinstance(e, (TypeError, ValueError)) else ValueError
    raise cls(f"{owner}: invalid {what} {dict(args)!r}: {e}") from e


def _dummy_param() -> torch.Tensor:
    # 2-D because some optimizers (Muon) accept nothing else.
    return torch.zeros(2, 2, requires_grad=True)


def _load_param_state(optimizer: Optimizer, group: dict, p: torch.Tensor, saved: Mapping) -> None:
    """Install one parameter's saved optimizer state, cast the way torch's loader casts it."""
    state: dict[str, Any] = {}
    keep_step_device = bool(group.get("capturable")) or bool(group.get("fused"))
    for key, value in saved.items():
        if isinstance(value, torch.Tensor):
            if key == "step":
                value = (
                    value.to(device=p.device, dtype=torch.float32, copy=True)
                    if (keep_step_device)
                    else value.clone()
                )
            elif value.is_floating_point() and p.is_floating_point():
                value = value.to(dtype=p.dtype, device=p.device, copy=True)
            else:
                value = value.to(device=p.device, copy=True)
        else:
            value = _copy(value)
        state[key] = value
    optimizer.state[p] = state
    forget_plan(optimizer)


# Optimizers whose single fused kernel does the same update as their per-tensor loop
# (up to floating-point rounding) at a fraction of the per-step Python and dispatch cost.
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad)


def _can_fuse(constructor: Any, args: Mapping[str, Any], p: torch.Tensor) -> bool:
    """Use torch's fused kernel unless the user chose an implementation or it can't apply."""
    return (
        constructor in _FUSABLE
        and not ({"fused", "foreach", "differentiable"} & set(args))
        and p.dtype.is_floating_point
        and p.device.type in ("cpu", "cuda")
    )


class _Cohort:
    """One torch optimizer (and scheduler) shared by parameters with the same settings."""

    __slots__ = ("optimizer", "scheduler", "group", "snapshot", "sched_steps", "key")

    def __init__(self, optimizer: Optimizer, scheduler: Any, sched_steps: int, key: Any) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.group = optimizer.param_groups[0]
        self.sched_steps = sched_steps
        self.key = key
        self.snapshot = self.hyper()

    def hyper(self) -> dict[str, Any]:
        return {k: _copy(v) for k, v in self.group.items() if k != "params"}

    def pristine(self, sched_steps: int) -> bool:
        """True while a newcomer would get the same settings as a fresh optimizer."""
        if self.sched_steps != sched_steps:
            return False
        group = self.group
        snapshot = self.snapshot
        if len(group) - 1 != len(snapshot):
            return False
        return all(k in group and _same(group[k], v) for k, v in snapshot.items())


# -- the wrapper ---------------------------------------------------------------------------
class PyroOptim:
    """Wraps a ``torch.optim.Optimizer`` class for parameters that appear over time.

    :param optim_constructor: a ``torch.optim.Optimizer`` subclass (or any callable
        ``(params, **optim_args) -> Optimizer``).
    :param optim_args: a dict of arguments for the optimizer, or a callable
        ``param_name -> dict`` called once per parameter name, the first time that
        parameter is seen (Pyro's older ``(module_name, param_name) -> dict`` form works too).
    :param clip_args: optional dict with ``clip_norm`` and/or ``clip_value``, or a callable
        returning one per parameter; each parameter's gradient is clipped on its own (its
        own norm), before the update, as Pyro does.

    Call it with the unconstrained leaf tensors that received gradients:
    ``optim(params)``. Only those are stepped; their ``.grad`` is left to the caller.
    """

    def __init__(
        self,
        optim_constructor: Callable[..., Optimizer],
        optim_args: Mapping[str, Any] | Callable[..., Mapping[str, Any]],
        clip_args: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
        *,
        _name: str | None = None,
    ) -> None:
        name = (
            _name or getattr(optim_constructor, "__name__", None) or _type_name(optim_constructor)
        )
        self._name = name
        if not callable(optim_constructor):
            raise TypeError(
                f"PyroOptim: optim_constructor must be a torch.optim.Optimizer class or a "
                f"callable returning one, got {_type_name(optim_constructor)}"
            )
        if not (isinstance(optim_args, Mapping) or callable(optim_args)):
            raise TypeError(
                f"{name} expects a dict of optimizer arguments or a callable param_name -> "
                f"dict, got {_type_name(optim_args)}"
            )
        if clip_args is None:
            clip_args = {}
        if not (isinstance(clip_args, Mapping) or callable(clip_args)):
            raise TypeError(
                f"{name}: clip_args must be a dict with 'clip_norm' and/or 'clip_value' or a "
                f"callable param_name -> dict, got {_type_name(clip_args)}"
            )
        self.pt_optim_constructor = optim_constructor
        self.pt_optim_args = optim_args
        self.pt_clip_args = clip_args
        self._optim_arity = _positional_arity(optim_args) if callable(optim_args) else 0
        self._clip_arity = _positional_arity(clip_args) if callable(clip_args) else 0

        self._validated: set[Any] = set()  # frozen args already checked
        self._args_by_name: dict[str, Mapping[str, Any]] = {}
        self._clip_by_name: dict[str, tuple[float | None, float | None] | None] = {}
        if isinstance(optim_args, Mapping):
            self._fixed_args: Mapping[str, Any] | None = dict(optim_args)
            self._fixed_key = _freeze(self._fixed_args)
            self._validate_args(self._fixed_args, self._fixed_key)
        else:
            self._fixed_args = None
        self._fixed_clip = self._check_clip(clip_args) if isinstance(clip_args, Mapping) else None

        # Registry of seen parameters. Keyed by id(tensor): Tensor.__hash__ is a Python-level
        # method, several times slower than id(); _param_of_name holds the tensors, so an id
        # cannot be reused while it is a key here.
        self._cohort_of: dict[int, _Cohort] = {}
        self._name_of: dict[int, str] = {}
        self._param_of_name: dict[str, torch.Tensor] = {}
        self._clip_of: dict[int, tuple[float | None, float | None]] = {}
        self._cohorts: list[_Cohort] = []
        self._open: dict[Any, _Cohort] = {}  # cohort key -> the cohort newcomers may join
        self._pending: dict[str, dict[str, Any]] = {}  # state waiting for its parameter
        self._sched_steps = 0
        self._n_unnamed = 0

    # -- public API ------------------------------------------------------------------------
    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """Step exactly the tensors in ``params`` (new ones are registered on the way).

        Extra arguments go to the torch optimizer's ``step`` (a closure, for instance).
        """
        self._step_pairs(((None, p) for p in params), args, kwargs)

    def step_named(self, named: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """Like calling the optimizer, with the parameters' names given (no name look-up)."""
        self._step_pairs(named.items(), args, kwargs)

    def _step_pairs(self, pairs: Iterable[tuple[str | None, torch.Tensor]], args, kwargs) -> None:
        # A None name is resolved from the param store when the tensor is first seen.
        cohort_of = self._cohort_of
        work: dict[_Cohort, list[torch.Tensor]] = {}
        for name, p in pairs:
            c = cohort_of.get(id(p))
            if c is None:
                c = self._register(p, name)
            lst = work.get(c)
            if lst is None:
                work[c] = [p]
            else:
                lst.append(p)
        self._step(work, args, kwargs)

    @property
    def optim_objs(self) -> dict[torch.Tensor, Any]:
        """Parameter -> the torch optimizer (or scheduler) that steps it, as in Pyro."""
        out = {}
        for p in self._param_of_name.values():
            c = self._cohort_of[id(p)]
            out[p] = c.scheduler if c.scheduler is not None else c.optimizer
        return out

    def get_state(self) -> dict[str, Any]:
        """A snapshot of the optimizer state: ``{param name: per-parameter state dict}``.

        Each value has the layout of a torch optimizer's ``state_dict()`` for that single
        parameter (``{"scheduler": ..., "optimizer": ...}`` for schedulers), as Pyro's.
        State loaded for parameters not seen yet is included unchanged.
        """
        out = {name: _copy(s) for name, s in self._pending.items()}
        for name, p in self._param_of_name.items():
            out[name] = self._param_state(p, self._cohort_of[id(p)])
        return out

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot.

        Parameters already seen take it at once; the others take it when they first appear.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{self._name}.set_state expects a dict param name -> state, got {_type_name(state)}"
            )
        checked = {}
        for name, s in state.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"{self._name}.set_state: parameter names must be str, got {name!r}"
                )
            self._split_state(name, s)  # validates the layout now rather than later
            checked[name] = s
        for name, s in checked.items():
            p = self._param_of_name.get(name)
            self._pending[name] = s
            if p is not None:
                self._forget(p)
                self._register(p, name)

    def save(self, filename: str | os.PathLike) -> None:
        """Write :meth:`get_state` to ``filename`` atomically, as plain tensors and containers."""
        state = self.get_state()
        _check_plain(state, "state")
        atomic_save(state, filename)

    def load(self, filename: str | os.PathLike, map_location: Any = None) -> None:
        """Read a file written by :meth:`save` (refusing any file that could run code)."""
        state = safe_load(filename, map_location=map_location)
        if not isinstance(state, dict):
            raise ValueError(
                f"{os.fspath(filename)!r} is not a vitorch optimizer state file "
                f"(it holds a {_type_name(state)})"
            )
        self.set_state(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pt_optim_args!r})"

    # -- stepping --------------------------------------------------------------------------
    def _step(self, work: dict[_Cohort, list[torch.Tensor]], args: tuple, kwargs: dict) -> None:
        if self._clip_of:
            for lst in work.values():
                self._clip(lst)
        for c, lst in work.items():
            group = c.group
            full = group["params"]
            # Torch steps every member of the group with a gradient; narrowing the group to
            # the parameters passed in makes "only these are updated" hold regardless of
            # stale gradients elsewhere, at a cost proportional to len(lst).
            if not args and not kwargs and fused_adam_step(c.optimizer, group, lst):
                continue
            group["params"] = lst
            try:
                c.optimizer.step(*args, **kwargs)
            finally:
                group["params"] = full

    def _clip(self, params: list[torch.Tensor]) -> None:
        buckets: dict[Any, list[torch.Tensor]] = {}
        clip_of = self._clip_of
        for p in params:
            spec = clip_of.get(id(p))
            g = p.grad
            if spec is None or g is None:
                continue
            key = (spec, g.device, g.dtype)
            lst = buckets.get(key)
            if lst is None:
                buckets[key] = [g]
            else:
                lst.append(g)
        with torch.no_grad():
            for ((clip_norm, clip_value), _, _), grads in buckets.items():
                if clip_norm is not None:
                    # Each parameter's own norm, as Pyro's per-parameter clip_grad_norm_.
                    norms = torch.stack(torch._foreach_norm(grads))
                    coefs = (clip_norm / (norms + 1e-6)).clamp_(max=1.0)
                    torch._foreach_mul_(grads, list(coefs.unbind()))
                if clip_value is not None:
                    torch._foreach_clamp_min_(grads, -clip_value)
                    torch._foreach_clamp_max_(grads, clip_value)

    # -- registration ----------------------------------------------------------------------
    def _resolve_name(self, p: torch.Tensor) -> str:
        from ..params import get_param_store

        name = get_param_store().param_name(p)
        if name is None:
            # Not in the param store (e.g. a module registered elsewhere): a name from the
            # order of first appearance, stable across identical runs so saving works.
            name = f"_unnamed_{self._n_unnamed}"
            self._n_unnamed += 1
        return name

    def _register(self, p: torch.Tensor, name: str | None) -> _Cohort:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{self._name}: parameters must be tensors, got {_type_name(p)}")
        if not p.is_leaf:
            raise ValueError(
                f"{self._name}: cannot optimize a non-leaf tensor (shape {tuple(p.shape)}); "
                f"pass the unconstrained leaf tensors"
            )
        if name is None:
            name = self._resolve_name(p)
        old = self._param_of_name.get(name)
        if old is not None and old is not p:
            # The name now refers to a new tensor (the param was re-created): drop the old one
            # so it neither leaks nor keeps stale state.
            self._forget(old)
        args = self._args_for(name)
        args_key = self._fixed_key if self._fixed_args is not None else _freeze(args)
        pending = self._pending.pop(name, None)
        saved_state = None
        if pending is None:
            key: Any = (args_key, None)
            restore = None
        else:
            restore, saved_state = self._split_state(name, pending)
            key = (args_key, _freeze(restore))
        # Torch's fused kernels need one device type per optimizer.
        key = (key, p.device.type)
        c = self._open.get(key)
        if c is None or not c.pristine(self._sched_steps):
            c = self._new_cohort(p, args, key, restore)
        else:
            c.group["params"].append(p)
        if saved_state:
            _load_param_state(c.optimizer, c.group, p, saved_state)
        self._cohort_of[id(p)] = c
        self._name_of[id(p)] = name
        self._param_of_name[name] = p
        clip = self._clip_for(name)
        if clip is not None:
            self._clip_of[id(p)] = clip
        return c

    def _forget(self, p: torch.Tensor) -> None:
        c = self._cohort_of.pop(id(p))
        name = self._name_of.pop(id(p))
        if self._param_of_name.get(name) is p:
            del self._param_of_name[name]
        self._clip_of.pop(id(p), None)
        c.optimizer.state.pop(p, None)
        forget_plan(c.optimizer)
        # Identity, not ==: tensor equality is elementwise.
        c.group["params"] = [q for q in c.group["params"] if q is not p]
        if not c.group["params"]:
            self._cohorts = [x for x in self._cohorts if x is not c]
            if self._open.get(c.key) is c:
                del self._open[c.key]

    def _new_cohort(
        self, p: torch.Tensor, args: Mapping[str, Any], key: Any, restore: Any
    ) -> _Cohort:
        if _can_fuse(self.pt_optim_constructor, args, p):
            args = {**args, "fused": True}
        try:
            optimizer = self.pt_optim_constructor([p], **args)
        except (TypeError, ValueError, RuntimeError) as e:
            _reraise(self._name, "optimizer arguments", args, e)
        if not isinstance(optimizer, Optimizer) or len(optimizer.param_groups) != 1:
            raise TypeError(
                f"{self._name}: the optimizer constructor must return a torch.optim.Optimizer "
                f"with one param group, got {_type_name(optimizer)}"
            )
        scheduler = self._make_scheduler(optimizer)
        if restore is not None:
            hyper, sched_state = restore
            if scheduler is not None:
                scheduler.load_state_dict(_copy(sched_state))
            # As torch's load_state_dict: the saved hyper-parameters replace the current ones
            # (a decayed lr resumes where it was).
            optimizer.param_groups[0].update(_copy(hyper))
        c = _Cohort(optimizer, scheduler, self._sched_steps, key)
        self._cohorts.append(c)
        self._open[key] = c
        return c

    def _make_scheduler(self, optimizer: Optimizer) -> Any:
        return None

    def _scheduler_state_expected(self) -> bool:
        return False

    def _split_state(self, name: str, s: Any) -> tuple[tuple[dict, Any], dict | None]:
        """Validate one parameter's saved state; return ((hyper, scheduler state), param state)."""
        where = f"{self._name}: saved state of parameter {name!r}"
        if not isinstance(s, Mapping):
            raise TypeError(f"{where} must be a dict, got {_type_name(s)}")
        sched_state = None
        if self._scheduler_state_expected():
            if "scheduler" not in s or "optimizer" not in s:
                raise ValueError(
                    f"{where} has no 'scheduler'/'optimizer' entries; it was not saved from a "
                    f"learning-rate scheduler wrapper"
                )
            sched_state = s["scheduler"]
            if not isinstance(sched_state, Mapping):
                raise TypeError(
                    f"{where}: 'scheduler' must be a dict, got {_type_name(sched_state)}"
                )
            s = s["optimizer"]
        elif "scheduler" in s and "optimizer" in s:
            raise ValueError(
                f"{where} was saved from a learning-rate scheduler wrapper, not {self._name}"
            )
        if not isinstance(s, Mapping) or "state" not in s or "param_groups" not in s:
            raise ValueError(
                f"{where} must have the layout of an optimizer state_dict "
                f"('state' and 'param_groups'), got {s!r:.200}"
            )
        groups = s["param_groups"]
        if (
            not isinstance(groups, (list, tuple))
            or len(groups) != 1
            or not isinstance(groups[0], Mapping)
        ):
            raise ValueError(f"{where} must hold exactly one param group, got {groups!r:.200}")
        hyper = {k: v for k, v in groups[0].items() if k not in ("params", "param_names")}
        per_param = s["state"]
        if not isinstance(per_param, Mapping):
            raise ValueError(f"{where}: 'state' must be a dict, got {_type_name(per_param)}")
        ids = groups[0].get("params", [0])
        pid = ids[0] if isinstance(ids, (list, tuple)) and ids else 0
        saved = per_param.get(pid)
        if saved is not None and not isinstance(saved, Mapping):
            raise ValueError(
                f"{where}: per-parameter state must be a dict, got {_type_name(saved)}"
            )
        return (hyper, sched_state), (dict(saved) if saved else None)

    def _param_state(self, p: torch.Tensor, c: _Cohort) -> dict[str, Any]:
        hyper = c.hyper()
        hyper["params"] = [0]
        st = c.optimizer.state.get(p)
        opt_state = {"state": {0: _copy(dict(st))} if st else {}, "param_groups": [hyper]}
        if c.scheduler is not None:
            return {"scheduler": _copy(c.scheduler.state_dict()), "optimizer": opt_state}
        return opt_state

    # -- per-parameter settings ------------------------------------------------------------
    def _args_for(self, name: str) -> Mapping[str, Any]:
        if self._fixed_args is not None:
            return self._fixed_args
        args = self._args_by_name.get(name)
        if args is None:
            args = _call_per_param(self.pt_optim_args, self._optim_arity, name)
            if not isinstance(args, Mapping):
                raise TypeError(
                    f"{self._name}: the per-parameter optim_args callable must return a dict, "
                    f"got {_type_name(args)} for parameter {name!r}"
                )
            args = dict(args)
            self._validate_args(args, _freeze(args))
            self._args_by_name[name] = args
        return args

    def _validate_args(self, args: Mapping[str, Any], key: Any) -> None:
        if key in self._validated:
            return
        _check_kwargs(self._name, self.pt_optim_constructor, args, "optimizer argument", 1)
        if isinstance(self.pt_optim_constructor, type) and issubclass(
            self.pt_optim_constructor, Optimizer
        ):
            # Building a throw-away optimizer surfaces torch's own value checks (lr < 0, ...)
            # at construction rather than at the first step.
            try:
                self.pt_optim_constructor([_dummy_param()], **args)
            except (TypeError, ValueError, RuntimeError) as e:
                _reraise(self._name, "optimizer arguments", args, e)
        self._validated.add(key)

    def _check_clip(
        self, clip: Any, name: str | None = None
    ) -> tuple[float | None, float | None] | None:
        where = f"{self._name}: clip_args" + (f" for parameter {name!r}" if name else "")
        if not isinstance(clip, Mapping):
            raise TypeError(f"{where} must be a dict, got {_type_name(clip)}")
        for k, v in clip.items():
            if k not in _CLIP_KEYS:
                raise ValueError(
                    f"{where}: unknown key {k!r}; expected 'clip_norm' and/or 'clip_value'"
                )
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, Real):
                raise TypeError(f"{where}: {k!r} must be a positive number, got {v!r}")
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{where}: {k!r} must be a positive number, got {v!r}")
        norm, value = clip.get("clip_norm"), clip.get("clip_value")
        if norm is None and value is None:
            return None
        return (None if norm is None else float(norm), None if value is None else float(value))

    def _clip_for(self, name: str) -> tuple[float | None, float | None] | None:
        if isinstance(self.pt_clip_args, Mapping):
            return self._fixed_clip
        if name not in self._clip_by_name:
            clip = _call_per_param(self.pt_clip_args, self._clip_arity, name)
            self._clip_by_name[name] = self._check_clip(clip, name)
        return self._clip_by_name[name]


# -- ready-made wrappers -------------------------------------------------------------------
def _make_wrapper(name: str, constructor: Callable[..., Optimizer], doc: str) -> type:
    def __init__(
        self: PyroOptim,
        optim_args: Mapping[str, Any] | Callable[..., Mapping[str, Any]],
        clip_args: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
    ) -> None:
        PyroOptim.__init__(self, constructor, optim_args, clip_args, _name=name)

    __init__.__doc__ = doc
    return type(name, (PyroOptim,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


ClippedAdam = _make_wrapper(
    "ClippedAdam",
    _TorchClippedAdam,
    "Wraps :class:`vitorch.optim.clipped_adam.ClippedAdam` (Adam with elementwise gradient "
    "clamping to ``clip_norm`` and learning-rate decay ``lrd`` per step) in a "
    ":class:`PyroOptim`.",
)

AdagradRMSProp = _make_wrapper(
    "AdagradRMSProp",
    _TorchAdagradRMSProp,
    "Wraps :class:`vitorch.optim.adagrad_rmsprop.AdagradRMSProp` (ADVI's step-size "
    "sequence) in a :class:`PyroOptim`.",
)

# Every torch optimizer, as Pyro exposes them. LBFGS is left out: its step needs a closure,
# which SVI does not pass (Pyro leaves it out for the same reason).
for _name, _cls in list(vars(torch.optim).items()):
    if (
        isinstance(_cls, type)
        and issubclass(_cls, Optimizer)
        and _cls is not Optimizer
        and _cls is not torch.optim.LBFGS
        and not _name.startswith("_")
    ):
        globals()[_name] = _make_wrapper(
            _name, _cls, f"Wraps :class:`torch.optim.{_name}` in a :class:`PyroOptim`."
        )
        __all__.append(_name)
del _name, _cls
