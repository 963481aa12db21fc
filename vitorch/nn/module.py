"""``PyroModule``: an ``nn.Module`` whose attributes can be priors or constrained parameters.

- ``self.x = PyroParam(init, constraint)`` keeps an unconstrained ``nn.Parameter``
  (``x_unconstrained``) and reads back as the constrained value. It lives in the param
  store under the module's dotted name (``"fc.x"``) and is recorded as a ``param`` site,
  so SVI updates it and ``get_param_store().save`` saves it.
- ``self.w = PyroSample(prior)`` makes every read of ``self.w`` a ``sample`` site named
  ``"fc.w"``; ``prior`` is a distribution, or a callable ``prior(module)`` for priors that
  depend on other attributes.
- Plain ``nn.Parameter`` attributes are recorded as ``param`` sites too.
- ``PyroModule[nn.Linear](3, 4)`` turns any torch module class into a PyroModule.

Within one call of the outermost module, each attribute is computed once and cached, so
``self.w`` read twice in a forward is one sample site, not two.

With ``vitorch.settings.set(module_local_params=True)`` the parameters of PyroModules stay
local: the global param store is neither read nor written, ``module.parameters()`` is the
whole state, and two models may use the same names. Reads are still ``param`` sites (so
handlers and SVI see them), which is how ``Trace_ELBO()(model, guide)`` plus a torch
optimizer, or an engine such as Lightning, trains them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import constraints, transform_to

from .. import settings
from ..params import _PARAM_STORE, LocalParam, unconstrain_init
from ..primitives import module as _register_module
from ..primitives import sample
from ..runtime import _STACK, Message, apply_stack

__all__ = ["PyroModule", "PyroParam", "PyroSample", "to_pyro_module_"]

_MODULE_LOCAL_PARAMS = False
settings.register(
    "module_local_params",
    __name__,
    "_MODULE_LOCAL_PARAMS",
    settings.check_bool("module_local_params"),
)


def _local_param_site(fullname: str, unconstrained: torch.Tensor, value: torch.Tensor, event_dim):
    """Send a module-local param through the handlers (they may replace its value)."""
    if not _STACK:
        return value
    msg = Message(
        "param", fullname, LocalParam(unconstrained, value), (), {"event_dim": event_dim}, value
    )
    return apply_stack(msg).value


class PyroParam(NamedTuple):
    """Declare a constrained parameter attribute: ``self.x = PyroParam(init, constraint)``.

    ``init_value`` is the constrained initial value (a tensor, or a callable returning one).
    """

    init_value: Any = None
    constraint: constraints.Constraint = constraints.real
    event_dim: int | None = None


class PyroSample(NamedTuple):
    """Declare a random attribute: ``self.w = PyroSample(dist.Normal(0, 1).expand([3]).to_event(1))``."""

    prior: Any


class _Context:
    """Per-call cache shared by a whole tree of PyroModules."""

    __slots__ = ("depth", "cache")

    def __init__(self) -> None:
        self.depth = 0
        self.cache: dict[str, Any] = {}

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, *exc: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.cache.clear()


class _PyroModuleMeta(type(nn.Module)):  # type: ignore[misc]
    _mixins: dict[type, type] = {}

    def __getitem__(cls, Module: type) -> type:
        if not (isinstance(Module, type) and issubclass(Module, nn.Module)):
            raise TypeError(f"PyroModule[...] expects an nn.Module subclass, got {Module!r}")
        if issubclass(Module, PyroModule):
            return Module
        mixin = _PyroModuleMeta._mixins.get(Module)
        if mixin is None:

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                _pyro_init(self, "")
                Module.__init__(self, *args, **kwargs)

            mixin = _PyroModuleMeta(
                "Pyro" + Module.__name__,
                (PyroModule, Module),
                {"__init__": __init__, "__module__": Module.__module__},
            )
            _PyroModuleMeta._mixins[Module] = mixin
        return mixin


def _pyro_init(module: nn.Module, name: str) -> None:
    # object.__setattr__: these exist before nn.Module.__init__ has run.
    object.__setattr__(module, "_pyro_name", name)
    object.__setattr__(module, "_pyro_context", _Context())
    object.__setattr__(module, "_pyro_params", {})
    object.__setattr__(module, "_pyro_samples", {})


def _unconstrain(name: str, init_value: Any, constraint: Any) -> nn.Parameter:
    if callable(init_value) and not isinstance(init_value, torch.Tensor):
        init_value = init_value()
    if not isinstance(init_value, torch.Tensor):
        init_value = torch.as_tensor(init_value, dtype=torch.get_default_dtype())
    with torch.no_grad():
        value = unconstrain_init(
            f"PyroParam {name!r}", init_value.detach(), constraint, transform_to(constraint)
        )
    return nn.Parameter(value.clone().contiguous())


class PyroModule(nn.Module, metaclass=_PyroModuleMeta):
    """An ``nn.Module`` with ``PyroParam`` / ``PyroSample`` attributes (see module docs)."""

    _pyro_name: str
    _pyro_context: _Context
    _pyro_params: dict[str, tuple[Any, int | None]]
    _pyro_samples: dict[str, Any]

    def __init__(self, name: str = "") -> None:
        _pyro_init(self, name)
        super().__init__()

    # -- naming ------------------------------------------------------------------------------
    def _pyro_fullname(self, attr: str) -> str:
        return f"{self._pyro_name}.{attr}" if self._pyro_name else attr

    def _pyro_set_supermodule(self, name: str, context: _Context) -> None:
        object.__setattr__(self, "_pyro_name", name)
        object.__setattr__(self, "_pyro_context", context)
        for child_name, child in self._modules.items():
            if isinstance(child, PyroModule):
                child._pyro_set_supermodule(f"{name}.{child_name}" if name else child_name, context)

    def add_module(self, name: str, module: nn.Module | None) -> None:
        """Add a child; a PyroModule child takes the dotted name and the shared call context.

        ``nn.Sequential``, ``nn.ModuleList`` and ``nn.ModuleDict`` add their children this
        way rather than by attribute assignment, so without this ``PyroModule[nn.Sequential]``
        would give every layer's sites the same names.
        """
        if isinstance(module, PyroModule):
            module._pyro_set_supermodule(self._pyro_fullname(name), self._pyro_context)
        super().add_module(name, module)

    # -- calls -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._pyro_context:
            return super().__call__(*args, **kwargs)

    # -- attributes --------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, PyroParam):
            self._pyro_forget(name)
            constraint = value.constraint
            if not isinstance(constraint, constraints.Constraint):
                raise TypeError(
                    f"PyroParam {self._pyro_fullname(name)!r}: constraint must be a Constraint, "
                    f"got {constraint!r}"
                )
            unconstrained = _unconstrain(self._pyro_fullname(name), value.init_value, constraint)
            nn.Module.__setattr__(self, name + "_unconstrained", unconstrained)
            self._pyro_params[name] = (constraint, value.event_dim)
            return
        if isinstance(value, PyroSample):
            self._pyro_forget(name)
            self._pyro_samples[name] = value.prior
            return
        if (
            name in self._pyro_params
            and isinstance(value, torch.Tensor)
            and not isinstance(value, nn.Parameter)
        ):
            # Assigning a constrained value to an existing PyroParam updates it in place.
            constraint, _ = self._pyro_params[name]
            unconstrained = self._parameters[name + "_unconstrained"]
            with torch.no_grad():
                unconstrained.copy_(transform_to(constraint).inv(value.detach()))
            return
        if name in self._pyro_params or name in self._pyro_samples:
            self._pyro_forget(name)
        if isinstance(value, PyroModule):
            value._pyro_set_supermodule(self._pyro_fullname(name), self._pyro_context)
        nn.Module.__setattr__(self, name, value)

    def _pyro_forget(self, name: str) -> None:
        if name in self._pyro_params:
            del self._pyro_params[name]
            del self._parameters[name + "_unconstrained"]
        self._pyro_samples.pop(name, None)
        if name in self._parameters or name in self._modules or name in self._buffers:
            nn.Module.__delattr__(self, name)
        elif name in self.__dict__:
            object.__delattr__(self, name)

    def __delattr__(self, name: str) -> None:
        if name in self._pyro_params or name in self._pyro_samples:
            self._pyro_forget(name)
        else:
            super().__delattr__(name)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: nn.Module's _parameters, _modules, and ours.
        pyro_params = self.__dict__.get("_pyro_params")
        if pyro_params is not None and name in pyro_params:
            return self._pyro_read_param(name, *pyro_params[name])
        pyro_samples = self.__dict__.get("_pyro_samples")
        if pyro_samples is not None and name in pyro_samples:
            return self._pyro_read_sample(name, pyro_samples[name])
        result = super().__getattr__(name)
        # Inside a call of the module, or under handlers, parameters are param sites (and
        # so reach the param store, which then saves them), as in Pyro.
        if _STACK or self._pyro_context.depth:
            if isinstance(result, nn.Parameter) and not name.endswith("_unconstrained"):
                if _STACK:
                    return self._pyro_read_plain(name, result)
                # A plain call: the store learns the parameter (so saving it saves this
                # one), but nothing is adopted from it, as in Pyro.
                fullname = self._pyro_fullname(name)
                if not _MODULE_LOCAL_PARAMS and _PARAM_STORE._params.get(fullname) is None:
                    _PARAM_STORE._register_tensor(fullname, result)
                return result
            if isinstance(result, nn.Module) and not isinstance(result, PyroModule):
                # A plain torch child (say nn.Linear inside a PyroModule): its parameters
                # must reach the param store, or SVI would never train them.
                self._pyro_register_child(name, result)
        return result

    def _pyro_register_child(self, name: str, child: nn.Module) -> None:
        fullname = self._pyro_fullname(name)
        context = self._pyro_context
        key = fullname + "$$$"  # cannot clash with an attribute's dotted name
        if context.depth and key in context.cache:
            return
        if _MODULE_LOCAL_PARAMS:
            for path, p in child.named_parameters():
                _local_param_site(f"{fullname}$$${path}", p, p, None)
        else:
            _register_module(fullname, child)
        if context.depth:
            context.cache[key] = child

    def _pyro_read_param(self, name: str, constraint: Any, event_dim: int | None) -> torch.Tensor:
        fullname = self._pyro_fullname(name)
        context = self._pyro_context
        cache = context.cache
        if context.depth and fullname in cache:
            return cache[fullname]
        unconstrained = self._parameters[name + "_unconstrained"]
        if _MODULE_LOCAL_PARAMS:
            value = _local_param_site(
                fullname, unconstrained, transform_to(constraint)(unconstrained), event_dim
            )
        elif _STACK:
            _sync_with_store(fullname, unconstrained, constraint, event_dim)
            msg = Message(
                "param", fullname, _PARAM_STORE.get_param, (fullname,), {"event_dim": event_dim}
            )
            value = apply_stack(msg).value
        else:
            _sync_with_store(fullname, unconstrained, constraint, event_dim)
            value = _PARAM_STORE[fullname]
        if context.depth:
            cache[fullname] = value
        return value

    def _pyro_read_plain(self, name: str, parameter: nn.Parameter) -> torch.Tensor:
        fullname = self._pyro_fullname(name)
        context = self._pyro_context
        if context.depth and fullname in context.cache:
            return context.cache[fullname]
        if _MODULE_LOCAL_PARAMS:
            value = _local_param_site(fullname, parameter, parameter, None)
        else:
            _sync_with_store(fullname, parameter, constraints.real, None)
            msg = Message(
                "param", fullname, _PARAM_STORE.get_param, (fullname,), {"event_dim": None}
            )
            value = apply_stack(msg).value
        if context.depth:
            context.cache[fullname] = value
        return value

    def _pyro_read_sample(self, name: str, prior: Any) -> torch.Tensor:
        fullname = self._pyro_fullname(name)
        context = self._pyro_context
        if context.depth and fullname in context.cache:
            return context.cache[fullname]
        if not hasattr(prior, "log_prob"):
            if not callable(prior):
                raise TypeError(
                    f"PyroSample {fullname!r}: prior must be a distribution or a callable "
                    f"taking the module, got {type(prior).__name__}"
                )
            prior = prior(self)
        if not context.depth:
            # Read outside a call of the module: no site (its name would repeat on every
            # read), just a draw from the prior, as in Pyro.
            return prior if isinstance(prior, torch.Tensor) else prior()
        value = sample(fullname, prior)
        if context.depth:
            context.cache[fullname] = value
        return value

    def named_pyro_params(self, prefix: str = "", recurse: bool = True):
        """(name, constrained value) for each PyroParam of this module (and its children)."""
        for module_prefix, module in (
            self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        ):
            if isinstance(module, PyroModule):
                for name in module._pyro_params:
                    full = f"{module_prefix}.{name}" if module_prefix else name
                    yield full, getattr(module, name)


def _sync_with_store(
    fullname: str, tensor: torch.Tensor, constraint: Any, event_dim: int | None
) -> None:
    """Make the store hold ``tensor`` under ``fullname``; adopt values loaded into the store."""
    stored = _PARAM_STORE._params.get(fullname)
    if stored is tensor:
        return
    if stored is not None and stored.shape == tensor.shape:
        # The store was loaded (or set) since this module last registered: take its values.
        with torch.no_grad():
            tensor.copy_(stored.to(tensor.device, tensor.dtype))
    _PARAM_STORE._register_tensor(fullname, tensor, constraint, event_dim)


def to_pyro_module_(m: nn.Module, recurse: bool = True) -> None:
    """Turn the instance ``m`` (and its children) into a PyroModule in place."""
    if not isinstance(m, nn.Module):
        raise TypeError(f"to_pyro_module_ expects an nn.Module, got {type(m).__name__}")
    if isinstance(m, PyroModule):
        return
    m.__class__ = PyroModule[type(m)]
    _pyro_init(m, "")
    if recurse:
        for name, child in list(m._modules.items()):
            if child is not None:
                to_pyro_module_(child, recurse=True)
                m._modules[name] = child
                child._pyro_set_supermodule(name, m._pyro_context)  # type: ignore[operator]
