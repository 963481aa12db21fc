"""Pyro-style learning-rate scheduler wrappers.

``vitorch.optim.ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.01},
"gamma": 0.1})`` is used as an optimizer by SVI (``scheduler(params)`` steps the parameters)
and ``scheduler.step()`` advances the schedule (``scheduler.step(loss)`` for
``ReduceLROnPlateau``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as _torch_sched

from .optim import PyroOptim, _check_kwargs, _dummy_param, _reraise, _type_name

__all__ = ["PyroLRScheduler"]


class PyroLRScheduler(PyroOptim):
    """Wraps a ``torch.optim.lr_scheduler`` class for parameters that appear over time.

    :param scheduler_constructor: a scheduler class such as ``torch.optim.lr_scheduler.StepLR``.
    :param optim_args: a dict with ``"optimizer"`` (a ``torch.optim.Optimizer`` class),
        ``"optim_args"`` (its arguments: a dict or a callable ``param_name -> dict``) and the
        scheduler's own keyword arguments.
    :param clip_args: optional gradient clipping, as for :class:`~vitorch.optim.PyroOptim`.

    Parameters seen together share one optimizer and one scheduler; a parameter first seen
    after the schedule has advanced gets a schedule of its own starting from the beginning,
    as it would in Pyro.
    """

    def __init__(
        self,
        scheduler_constructor: Callable[..., Any],
        optim_args: Mapping[str, Any],
        clip_args: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
        *,
        _name: str | None = None,
    ) -> None:
        name = _name or getattr(scheduler_constructor, "__name__", None) or "PyroLRScheduler"
        if not callable(scheduler_constructor):
            raise TypeError(
                f"PyroLRScheduler: scheduler_constructor must be a torch.optim.lr_scheduler "
                f"class, got {_type_name(scheduler_constructor)}"
            )
        if not isinstance(optim_args, Mapping):
            raise TypeError(
                f"{name} expects a dict with 'optimizer', 'optim_args' and the scheduler's "
                f"arguments, got {_type_name(optim_args)}"
            )
        # Copied, not popped as Pyro does: the caller's dict stays intact.
        kwargs = dict(optim_args)
        for required in ("optimizer", "optim_args"):
            if required not in kwargs:
                raise ValueError(
                    f"{name}: the argument dict needs an {required!r} entry (got keys "
                    f"{sorted(kwargs)}); e.g. {{'optimizer': torch.optim.SGD, "
                    f"'optim_args': {{'lr': 0.01}}, ...}}"
                )
        optimizer_cls = kwargs.pop("optimizer")
        inner_args = kwargs.pop("optim_args")
        if not callable(optimizer_cls):
            raise TypeError(
                f"{name}: 'optimizer' must be a torch.optim.Optimizer class, got "
                f"{_type_name(optimizer_cls)}"
            )
        if isinstance(optimizer_cls, type) and issubclass(optimizer_cls, PyroOptim):
            raise TypeError(
                f"{name}: 'optimizer' must be a torch.optim optimizer class such as "
                f"torch.optim.SGD, not the vitorch wrapper {optimizer_cls.__name__}"
            )
        _check_kwargs(name, scheduler_constructor, kwargs, "scheduler argument", 1)
        self.pt_scheduler_constructor = scheduler_constructor
        self.kwargs = kwargs
        opt_name = getattr(optimizer_cls, "__name__", "optimizer")
        super().__init__(optimizer_cls, inner_args, clip_args, _name=f"{name}({opt_name})")
        self._sched_name = name
        if (
            isinstance(inner_args, Mapping)
            and isinstance(optimizer_cls, type)
            and issubclass(optimizer_cls, Optimizer)
        ):
            # A throw-away scheduler reports bad scheduler arguments (a missing
            # total_steps, say) now rather than at the first SVI step.
            dummy = optimizer_cls([_dummy_param()], **inner_args)
            try:
                scheduler_constructor(dummy, **kwargs)
            except (TypeError, ValueError, KeyError) as e:
                _reraise(name, "scheduler arguments", kwargs, e)

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Advance every schedule; takes what the torch scheduler's ``step`` takes
        (e.g. the loss for ``ReduceLROnPlateau``)."""
        self._sched_steps += 1
        for c in self._cohorts:
            c.scheduler.step(*args, **kwargs)

    def _make_scheduler(self, optimizer: Optimizer) -> Any:
        try:
            return self.pt_scheduler_constructor(optimizer, **self.kwargs)
        except (TypeError, ValueError, KeyError) as e:
            _reraise(self._sched_name, "scheduler arguments", self.kwargs, e)

    def _scheduler_state_expected(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kwargs!r})"


def _make_scheduler_wrapper(name: str, scheduler_cls: type) -> type:
    doc = f"Wraps :class:`torch.optim.lr_scheduler.{name}` in a :class:`PyroLRScheduler`."

    def __init__(
        self: PyroLRScheduler,
        optim_args: Mapping[str, Any],
        clip_args: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
    ) -> None:
        PyroLRScheduler.__init__(self, scheduler_cls, optim_args, clip_args, _name=name)

    __init__.__doc__ = doc
    return type(
        name, (PyroLRScheduler,), {"__init__": __init__, "__doc__": doc, "__module__": __name__}
    )


def _first_param(cls: type) -> str | None:
    try:
        params = list(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return None
    return params[0] if params else None


# Every scheduler built on a single optimizer. SequentialLR and ChainedScheduler are left
# out: they take scheduler objects already bound to an optimizer, which a dict of
# arguments cannot describe.
for _name, _cls in list(vars(_torch_sched).items()):
    if (
        isinstance(_cls, type)
        and not _name.startswith("_")
        and _cls is not _torch_sched.LRScheduler
        and _name not in ("SequentialLR", "ChainedScheduler")
        and (issubclass(_cls, _torch_sched.LRScheduler) or _name == "ReduceLROnPlateau")
        and _first_param(_cls) == "optimizer"
    ):
        globals()[_name] = _make_scheduler_wrapper(_name, _cls)
        __all__.append(_name)
del _name, _cls
