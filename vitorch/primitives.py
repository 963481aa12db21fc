"""The primitives a model or guide is written with: ``sample``, ``param``, ``plate`` ...

Each builds a :class:`~vitorch.runtime.Message` and sends it through the handler stack.
With no handler active they take the direct route (draw, or read the parameter store), so
that calling a model as a plain function costs no more than the tensor work it does.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.distributions import constraints

from .distributions.unit import Unit
from .handlers.plate import PlateMessenger
from .params import _PARAM_STORE
from .runtime import _STACK, Message, apply_stack

__all__ = [
    "subsample",
    "sample",
    "param",
    "plate",
    "module",
    "deterministic",
    "factor",
    "barrier",
    "random_module",
    "iarange",
    "irange",
]

plate = PlateMessenger


def iarange(*args: Any, **kwargs: Any) -> PlateMessenger:
    """Pyro's old name for a vectorized :class:`plate` (deprecated there too)."""
    warnings.warn("iarange is deprecated; use plate instead", FutureWarning, stacklevel=2)
    return plate(*args, **kwargs)


def irange(*args: Any, **kwargs: Any) -> PlateMessenger:
    """Pyro's old name for a sequential :class:`plate` (iterate over it; deprecated there too)."""
    warnings.warn("irange is deprecated; use plate instead", FutureWarning, stacklevel=2)
    return plate(*args, **kwargs)


def _draw(fn: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    if fn.has_rsample:
        return fn.rsample(*args, **kwargs)
    return fn.sample(*args, **kwargs)


def _check_obs_shape(name: str, fn: Any, value: Any) -> None:
    if not isinstance(value, torch.Tensor):
        return
    expected = fn.batch_shape + fn.event_shape
    if value.shape == expected:
        return
    try:
        torch.broadcast_shapes(value.shape, expected)
    except RuntimeError:
        raise ValueError(
            f"sample site {name!r}: the observation has shape {tuple(value.shape)}, which "
            f"does not broadcast with the distribution's batch_shape + event_shape "
            f"{tuple(fn.batch_shape)} + {tuple(fn.event_shape)}"
        ) from None


def sample(
    name: str,
    fn: Any,
    *args: Any,
    obs: torch.Tensor | None = None,
    obs_mask: torch.Tensor | None = None,
    infer: dict | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Draw from ``fn`` at the site ``name``, or observe ``obs`` there."""
    if not isinstance(name, str):
        raise TypeError(f"sample site name must be a str, got {type(name).__name__}")
    if obs_mask is not None:
        return _masked_observe(name, fn, obs, obs_mask, infer, *args, **kwargs)
    if not hasattr(fn, "log_prob") or not hasattr(fn, "batch_shape") or isinstance(fn, type):
        got = (
            f"the class {fn.__name__} (not an instance)"
            if isinstance(fn, type)
            else type(fn).__name__
        )
        raise TypeError(f"sample site {name!r}: expected a distribution, got {got}")
    if not _STACK:
        if obs is None:
            return _draw(fn, *args, **kwargs)
        _check_obs_shape(name, fn, obs)
        return obs
    msg = Message(
        "sample", name, fn, args, kwargs, value=obs, is_observed=obs is not None, infer=infer
    )
    apply_stack(msg)
    if msg.is_observed:
        _check_obs_shape(name, msg.fn, msg.value)
    return msg.value


def _masked_observe(name, fn, obs, obs_mask, infer, *args, **kwargs):
    # Split the site into an observed part and a latent part, as Pyro does, so that
    # missing entries are imputed by inference while the rest are conditioned on.
    if obs_mask.dtype != torch.bool:
        raise TypeError(
            f"sample site {name!r}: obs_mask must be a bool tensor, got {obs_mask.dtype}"
        )
    if obs is None:
        raise ValueError(f"sample site {name!r}: obs_mask given without obs")
    event_mask = obs_mask.reshape(obs_mask.shape + (1,) * len(fn.event_shape))
    observed = sample(f"{name}_observed", fn.mask(obs_mask), obs=obs, infer=infer)
    unobserved = sample(f"{name}_unobserved", fn.mask(~obs_mask), *args, infer=infer, **kwargs)
    value = torch.where(event_mask, observed, unobserved)
    return deterministic(name, value, event_dim=len(fn.event_shape))


def param(
    name: str,
    init_tensor: torch.Tensor | Callable[[], torch.Tensor] | float | None = None,
    constraint: constraints.Constraint = constraints.real,
    event_dim: int | None = None,
) -> torch.Tensor:
    """The constrained value of parameter ``name``, created from ``init_tensor`` on first use."""
    if not isinstance(name, str):
        raise TypeError(f"param name must be a str, got {type(name).__name__}")
    if not _STACK:
        return _PARAM_STORE.get_param(name, init_tensor, constraint, event_dim)
    msg = Message(
        "param",
        name,
        _PARAM_STORE.get_param,
        (name, init_tensor, constraint),
        {"event_dim": event_dim},
    )
    return apply_stack(msg).value


_NAMED_PARAMETERS = torch.nn.Module.named_parameters


def _named_parameters(
    m: torch.nn.Module, prefix: str, out: list[tuple[str, torch.Tensor]], seen: set
) -> list[tuple[str, torch.Tensor]]:
    """``list(m.named_parameters())``: same names, order and de-duplication, a few times faster.

    ``module`` runs on every call of every model and guide, and torch's generator chain
    (named_parameters -> _named_members -> named_modules) costs as much as a small layer.
    """
    # Ids, not the objects: Tensor.__hash__ is a Python-level method. Everything seen is
    # alive for the whole walk (it belongs to the tree), so no id can be reused meanwhile.
    seen.add(id(m))
    for key, p in m._parameters.items():
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            out.append((prefix + key, p))
    for key, child in m._modules.items():
        if child is not None and id(child) not in seen:
            _named_parameters(child, prefix + key + ".", out, seen)
    return out


def _module_parameters(name: str, nn_module: torch.nn.Module) -> list:
    """[(full store name, param)] for ``nn_module``, named as Pyro names them."""
    if type(nn_module).named_parameters is _NAMED_PARAMETERS:
        walked = _named_parameters(nn_module, "", [], set())
    else:  # a module that defines its own parameter listing: ask it
        walked = list(nn_module.named_parameters())
    return [(f"{name}$$${path}", p) for path, p in walked]


def module(
    name: str, nn_module: torch.nn.Module, update_module_params: bool = False
) -> torch.nn.Module:
    """Register the parameters of ``nn_module`` in the param store as ``name$$$path``.

    The store holds the module's own tensors, so SVI's updates change the module. When the
    store already holds values under those names (after ``get_param_store().load(...)``)
    and ``update_module_params`` is True, they are copied into the module first.
    """
    if not isinstance(name, str):
        raise TypeError(f"module name must be a str, got {type(name).__name__}")
    if "$$$" in name:
        # The divider separates module from parameter names in the store; one in the
        # module name would make saved names ambiguous.
        raise ValueError(f"module name must not contain '$$$', got {name!r}")
    if not isinstance(nn_module, torch.nn.Module):
        raise TypeError(
            f"module {name!r}: expected a torch.nn.Module, got {type(nn_module).__name__}"
        )
    store = _PARAM_STORE
    stored_params = store._params
    replaced: list[tuple[str, torch.Tensor]] | None = None  # values a handler swapped in
    for full_name, p in _module_parameters(name, nn_module):
        stored = stored_params.get(full_name)
        if stored is not p:
            if stored is not None and update_module_params:
                if stored.shape != p.shape:
                    raise ValueError(
                        f"module {name!r}: stored parameter {full_name!r} has shape "
                        f"{tuple(stored.shape)}, the module's has {tuple(p.shape)}"
                    )
                with torch.no_grad():
                    p.copy_(stored.to(p.device))
            store._register_tensor(full_name, p)
        if _STACK and p.requires_grad:
            # The value is the module's own tensor (unconstrained = constrained): set it
            # up front rather than have the default behaviour look it up again.
            msg = Message("param", full_name, store.get_param, (full_name,), {"event_dim": None}, p)
            apply_stack(msg)
            if msg.value is not p and update_module_params:
                # A handler (lift) gave another value: the module computes with it, as Pyro's.
                replaced = replaced or []
                replaced.append((full_name[len(name) + 3 :], msg.value))
    for path, value in replaced or ():
        owner_path, _, attr = path.rpartition(".")
        owner = nn_module.get_submodule(owner_path) if owner_path else nn_module
        owner._parameters[attr] = value
    return nn_module


def random_module(
    name: str, nn_module: torch.nn.Module, prior: Any, *args: Any, **kwargs: Any
) -> Callable[[], torch.nn.Module]:
    """Deprecated in Pyro (use ``vitorch.nn.PyroModule`` with ``PyroSample``); kept so old
    code runs: a function that returns a copy of ``nn_module`` whose parameters are drawn
    from ``prior`` (a distribution, or a dict of them by parameter name, as in ``lift``)."""
    warnings.warn(
        "random_module is deprecated (as in Pyro); build Bayesian modules with "
        "vitorch.nn.PyroModule and PyroSample instead",
        FutureWarning,
        stacklevel=2,
    )
    if not isinstance(nn_module, torch.nn.Module):
        raise TypeError(
            f"random_module {name!r}: expected a torch.nn.Module, got {type(nn_module).__name__}"
        )
    from .handlers.lift import lift

    lifted = lift(module, prior=prior)

    def draw() -> torch.nn.Module:
        return lifted(name, copy.deepcopy(nn_module), True, *args, **kwargs)

    return draw


def deterministic(name: str, value: torch.Tensor, event_dim: int | None = None) -> torch.Tensor:
    """Record ``value`` at site ``name`` (no log-density); returns it."""
    if not _STACK:
        return value
    event_dim = value.dim() if event_dim is None else event_dim
    from .distributions.delta import Delta

    fn = Delta(value, event_dim=event_dim).mask(False)
    return sample(name, fn, obs=value, infer={"_deterministic": True})


def factor(name: str, log_factor: torch.Tensor, *, has_rsample: bool | None = None) -> None:
    """Add ``log_factor`` to the model's log-density at site ``name``."""
    log_factor = torch.as_tensor(log_factor)
    unit = Unit(log_factor, has_rsample=True if has_rsample is None else has_rsample)
    sample(name, unit, obs=unit.rsample())


def barrier(data: torch.Tensor) -> torch.Tensor:
    """A no-op kept for Pyro compatibility (sequential enumeration barriers)."""
    return data


def subsample(data: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Select the items of ``data`` that the enclosing subsampled plates use.

    ``data`` is full-size along each subsampled plate's dim (counted left of its
    ``event_dim`` rightmost dims); a dim that already has the subsample size is left alone.
    """
    if not isinstance(event_dim, int) or event_dim < 0:
        raise ValueError(f"subsample: event_dim must be a non-negative int, got {event_dim!r}")
    for handler in _STACK:
        if not isinstance(handler, PlateMessenger) or handler._frame is None:
            continue
        dim = handler._frame.dim
        if dim is None or not handler.subsampling:
            continue
        tensor_dim = dim - event_dim
        if data.dim() >= -tensor_dim and data.shape[tensor_dim] == handler.size:
            data = data.index_select(tensor_dim, handler._indices.to(data.device))
    return data


@contextlib.contextmanager
def plate_stack(prefix: str, sizes: Sequence[int], rightmost_dim: int = -1) -> Iterator[None]:
    """Nested plates ``prefix_0`` (rightmost, at ``rightmost_dim``), ``prefix_1``, ... for
    a batch of shape ``sizes`` (Pyro's ``plate_stack``)."""
    if not isinstance(rightmost_dim, int) or rightmost_dim >= 0:
        raise ValueError(
            f"plate_stack: rightmost_dim must be a negative int, got {rightmost_dim!r}"
        )
    with contextlib.ExitStack() as stack:
        for i, size in enumerate(reversed(tuple(sizes))):
            stack.enter_context(plate(f"{prefix}_{i}", size, dim=rightmost_dim - i))
        yield
