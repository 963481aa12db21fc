"""The global parameter store.

Each parameter is kept as an unconstrained leaf tensor (what the optimizer updates) with
its constraint. Reading a parameter returns the constrained value, ``transform_to(c)`` of
the unconstrained one. The transform is looked up once per name, not once per read.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.distributions import constraints, transform_to
from torch.distributions.constraints import Constraint

from ._io import atomic_save, safe_load

__all__ = ["ParamStoreDict", "get_param_store", "clear_param_store"]

_FORMAT = "vitorch.param_store/1"

# A module's parameters are stored as "<module name>$$$<path inside the module>" (Pyro's).
MODULE_DIVIDER = "$$$"


def user_param_name(name: str) -> str:
    """The name a user gave a parameter: the path inside its module for a module's one."""
    return name.split(MODULE_DIVIDER, 1)[1] if MODULE_DIVIDER in name else name


class _LeafRef:
    """``value.unconstrained()``: Pyro's way back from a parameter's value to its leaf tensor.

    A weak reference, so a value does not keep its leaf alive; unlike a bare
    ``weakref.ref`` it survives pickling and deep copies of the tensor that carries it
    (as a dead reference: the store gives the copy a live one when it adopts it).
    """

    __slots__ = ("_ref",)

    def __init__(self, tensor: torch.Tensor | None):
        self._ref = None if tensor is None else weakref.ref(tensor)

    def __call__(self) -> torch.Tensor | None:
        return None if self._ref is None else self._ref()

    def __reduce__(self):
        return (_LeafRef, (None,))

    def __deepcopy__(self, memo: dict) -> _LeafRef:
        return _LeafRef(None)


def unconstrain_init(who: str, value: torch.Tensor, constraint: Constraint, transform: Any):
    """The unconstrained tensor for the initial ``value`` of a constrained parameter.

    A value outside the constraint is accepted when the transform maps it onto one inside
    it, as in Pyro (an unnormalized positive vector for a simplex becomes its
    normalization); one the transform cannot take (a negative value for a positive
    parameter: its log is NaN) raises, rather than surface later as a NaN loss.
    """
    unconstrained = transform.inv(value)
    if bool(constraint.check(value).all()):
        return unconstrained
    if bool(torch.isfinite(unconstrained).all()) and bool(
        constraint.check(transform(unconstrained)).all()
    ):
        return unconstrained
    raise ValueError(
        f"{who}: the initial value is outside the constraint {constraint} (got {value})"
    )


class LocalParam:
    """The ``fn`` of a module-local param site (``module_local_params``): it gives the
    site's value and holds the leaf tensor behind it, which SVI optimizes."""

    __slots__ = ("unconstrained", "value")

    def __init__(self, unconstrained: torch.Tensor, value: torch.Tensor):
        self.unconstrained = unconstrained
        self.value = value

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.value


def record_params(found: dict[str, Any], *traces: Any) -> None:
    """Note in ``found`` (name -> the site's ``fn``) every param site of ``traces``."""
    for tr in traces:
        for name, site in tr.nodes.items():
            if site.type == "param":
                found[name] = site.fn


def touched_params(found: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The unconstrained tensors behind the param sites ``found`` by :func:`record_params`.

    A module-local parameter (``module_local_params``) carries its own tensor; any other
    lives in the param store.
    """
    store = _PARAM_STORE._params
    out = {}
    for name, fn in found.items():
        tensor = fn.unconstrained if type(fn) is LocalParam else store.get(name)
        if tensor is not None:
            out[name] = tensor
    return out


_EXP = torch.distributions.transforms.ExpTransform()


def constraint_transform(constraint: Constraint) -> Any:
    """``transform_to(constraint)``, or None for ``real`` (reading is then free).

    torch composes ``exp`` with a do-nothing affine map for ``positive``; the plain
    ``exp`` is the same function at half the autograd nodes.
    """
    if constraint is constraints.real:
        return None
    if constraint is constraints.positive:
        return _EXP
    return transform_to(constraint)


def _check_init(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    raise TypeError(
        f"param {name!r}: the initial value must be a tensor, a number or a callable "
        f"returning a tensor, got {type(value).__name__}"
    )


class ParamStoreDict:
    """Name -> parameter, with constraints. Use :func:`get_param_store` for the global one."""

    def __init__(self) -> None:
        self._params: dict[str, torch.Tensor] = {}
        self._constraints: dict[str, Constraint] = {}
        # None means the identity (constraints.real): reading is free.
        self._transforms: dict[str, Any] = {}
        self._param_to_name: dict[torch.Tensor, str] = {}
        self._event_dims: dict[str, int | None] = {}

    # -- mapping interface (constrained values) ------------------------------------------
    def __len__(self) -> int:
        return len(self._params)

    def __contains__(self, name: str) -> bool:
        return name in self._params

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._params))

    def keys(self):
        return self._params.keys()

    def values(self) -> Iterator[torch.Tensor]:
        return (self[name] for name in list(self._params))

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, self[name]) for name in list(self._params))

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The unconstrained leaf tensors, which are what an optimizer updates."""
        return iter(list(self._params.items()))

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            unconstrained = self._params[name]
        except KeyError:
            raise KeyError(
                f"no parameter named {name!r} in the param store "
                f"(it has {sorted(self._params)[:10]})"
            ) from None
        return self._constrained(name, unconstrained)

    def _constrained(self, name: str, unconstrained: torch.Tensor) -> torch.Tensor:
        t = self._transforms[name]
        if t is None:
            return unconstrained  # carries ``.unconstrained`` since it was stored
        value = t(unconstrained)
        # Pyro's convention: a constrained value leads back to its leaf tensor.
        value.unconstrained = _LeafRef(unconstrained)
        return value

    def __setitem__(self, name: str, new_constrained_value: torch.Tensor) -> None:
        constraint = self._constraints.get(name, constraints.real)
        self._set(name, _check_init(name, new_constrained_value), constraint)

    def __delitem__(self, name: str) -> None:
        unconstrained = self._params.pop(name)
        self._param_to_name.pop(unconstrained, None)
        self._constraints.pop(name, None)
        self._transforms.pop(name, None)
        self._event_dims.pop(name, None)

    def clear(self) -> None:
        self._params.clear()
        self._constraints.clear()
        self._transforms.clear()
        self._param_to_name.clear()
        self._event_dims.clear()

    def param_name(self, p: torch.Tensor) -> str | None:
        """The name under which the unconstrained tensor ``p`` is stored, or None."""
        return self._param_to_name.get(p)

    def get_unconstrained(self, name: str) -> torch.Tensor:
        return self._params[name]

    # -- creation ------------------------------------------------------------------------
    def _set(self, name: str, constrained: torch.Tensor, constraint: Constraint) -> torch.Tensor:
        with torch.no_grad():
            transform = constraint_transform(constraint)
            constrained = constrained.detach()
            if transform is not None:
                unconstrained = unconstrain_init(
                    f"param {name!r}", constrained, constraint, transform
                )
            else:
                unconstrained = constrained.clone()
        unconstrained = unconstrained.contiguous().requires_grad_(True)
        unconstrained.unconstrained = _LeafRef(unconstrained)
        old = self._params.get(name)
        if old is not None:
            self._param_to_name.pop(old, None)
        self._params[name] = unconstrained
        self._constraints[name] = constraint
        self._transforms[name] = transform
        self._param_to_name[unconstrained] = name
        return unconstrained

    def _register_tensor(
        self,
        name: str,
        tensor: torch.Tensor,
        constraint: Constraint = constraints.real,
        event_dim: int | None = None,
    ) -> None:
        """Store ``tensor`` itself (an nn.Module's unconstrained parameter) under ``name``."""
        old = self._params.get(name)
        if old is not None:
            self._param_to_name.pop(old, None)
        self._params[name] = tensor
        self._constraints[name] = constraint
        self._transforms[name] = constraint_transform(constraint)
        self._param_to_name[tensor] = name
        self._event_dims[name] = event_dim
        tensor.unconstrained = _LeafRef(tensor)

    def get_param(
        self,
        name: str,
        init_tensor: torch.Tensor | Callable[[], torch.Tensor] | float | None = None,
        constraint: Constraint = constraints.real,
        event_dim: int | None = None,
    ) -> torch.Tensor:
        """Return the constrained value of ``name``, creating it from ``init_tensor`` once."""
        unconstrained = self._params.get(name)
        if unconstrained is None:
            if init_tensor is None:
                raise KeyError(f"param {name!r} does not exist yet and no initial value was given")
            if not isinstance(constraint, Constraint):
                raise TypeError(
                    f"param {name!r}: constraint must be a "
                    f"torch.distributions.constraints.Constraint, got {constraint!r}"
                )
            if callable(init_tensor) and not isinstance(init_tensor, torch.Tensor):
                init_tensor = init_tensor()
            self._set(name, _check_init(name, init_tensor), constraint)
            self._event_dims[name] = event_dim
            return self[name]
        stored_constraint = self._constraints[name]
        if constraint is not stored_constraint and init_tensor is not None:
            if type(constraint) is not type(stored_constraint) or repr(constraint) != repr(
                stored_constraint
            ):
                raise ValueError(
                    f"param {name!r} was created with constraint {stored_constraint} and "
                    f"is now declared with {constraint}; use one constraint per name "
                    f"(or delete it from the param store first)"
                )
        if isinstance(init_tensor, torch.Tensor) and init_tensor.shape != unconstrained.shape:
            # Constraints such as simplex change the shape between the two spaces.
            if self._transforms[name] is None or init_tensor.shape != self[name].shape:
                raise ValueError(
                    f"param {name!r} exists with shape {tuple(self[name].shape)} and is "
                    f"now declared with an initial value of shape "
                    f"{tuple(init_tensor.shape)}; use one shape per name (or call "
                    f"vitorch.clear_param_store() / del the param first)"
                )
        return self._constrained(name, unconstrained)

    def setdefault(self, name: str, init_constrained_value, constraint=constraints.real):
        return self.get_param(name, init_constrained_value, constraint)

    # -- state, save, load ---------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The unconstrained values and constraints (in memory; see :meth:`save`)."""
        return {
            "params": {k: v.detach().clone() for k, v in self._params.items()},
            "constraints": dict(self._constraints),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace values from :meth:`get_state` (or the dict read by :meth:`load`)."""
        if not isinstance(state, dict) or "params" not in state:
            raise ValueError("param store state must be a dict with 'params' and 'constraints'")
        for name, unconstrained in state["params"].items():
            constraint = state.get("constraints", {}).get(name, constraints.real)
            if isinstance(constraint, (str, tuple, list)):
                constraint = _constraint_from_spec(constraint, name)
            existing = self._params.get(name)
            with torch.no_grad():
                if existing is not None and existing.shape == unconstrained.shape:
                    # Keep the tensor object: optimizers and modules hold references to it.
                    existing.copy_(unconstrained)
                    self._constraints[name] = constraint
                    self._transforms[name] = constraint_transform(constraint)
                    continue
            if existing is not None:
                self._param_to_name.pop(existing, None)
            new = unconstrained.detach().clone().requires_grad_(True)
            new.unconstrained = _LeafRef(new)
            self._params[name] = new
            self._constraints[name] = constraint
            self._transforms[name] = constraint_transform(constraint)
            self._param_to_name[new] = name

    def save(self, filename: str | os.PathLike) -> None:
        """Save to ``filename`` atomically, in a format that cannot run code when loaded."""
        atomic_save(self.get_plain_state(), filename)

    def get_plain_state(self) -> dict[str, Any]:
        """The state as plain data (CPU tensors, constraint specs): what :meth:`save` writes."""
        return {
            "format": _FORMAT,
            "params": {k: v.detach().cpu().clone() for k, v in self._params.items()},
            "constraints": {k: _constraint_to_spec(c, k) for k, c in self._constraints.items()},
        }

    def load(self, filename: str | os.PathLike, map_location: Any = None) -> None:
        """Load values saved by :meth:`save`; refuses files that would run code."""
        state = safe_load(filename, map_location=map_location)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{os.fspath(filename)!r} is not a vitorch param store file")
        self.set_state(state)


# -- constraints as plain data -------------------------------------------------------------
def _named_constraints() -> dict[str, Constraint]:
    from .distributions import constraints as vc

    return {
        k: v for k, v in vars(vc).items() if isinstance(v, Constraint) and not k.startswith("_")
    }


def _constraint_to_spec(c: Constraint, name: str) -> Any:
    for key, value in _named_constraints().items():
        if value is c:
            return key
    simple = {
        constraints.interval: ("interval", "lower_bound", "upper_bound"),
        constraints.half_open_interval: ("half_open_interval", "lower_bound", "upper_bound"),
        constraints.greater_than: ("greater_than", "lower_bound"),
        constraints.greater_than_eq: ("greater_than_eq", "lower_bound"),
        constraints.less_than: ("less_than", "upper_bound"),
    }
    for cls, (key, *fields) in simple.items():
        if type(c) is cls:
            return [key] + [float(getattr(c, f)) for f in fields]
    if isinstance(c, constraints.independent):
        return [
            "independent",
            _constraint_to_spec(c.base_constraint, name),
            c.reinterpreted_batch_ndims,
        ]
    raise ValueError(
        f"param {name!r}: cannot save constraint {c!r}; supported are the named constraints "
        f"of vitorch.distributions.constraints, interval-type constraints and independent(...)"
    )


def _constraint_from_spec(spec: Any, name: str) -> Constraint:
    if isinstance(spec, str):
        named = _named_constraints()
        if spec in named:
            return named[spec]
    elif isinstance(spec, (list, tuple)) and spec:
        key = spec[0]
        if key == "independent":
            return constraints.independent(_constraint_from_spec(spec[1], name), int(spec[2]))
        factory = getattr(constraints, key, None)
        if callable(factory):
            return factory(*spec[1:])
    raise ValueError(f"param {name!r}: unknown constraint {spec!r} in the saved file")


_PARAM_STORE = ParamStoreDict()


def get_param_store() -> ParamStoreDict:
    """The global parameter store."""
    return _PARAM_STORE


def clear_param_store() -> None:
    """Remove every parameter from the global store."""
    _PARAM_STORE.clear()
