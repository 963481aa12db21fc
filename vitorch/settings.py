"""Global settings by name (Pyro's ``pyro.settings``): ``get``, ``set``, ``context``, ``register``.

A setting is a module-level variable registered under an alias, with an optional
validator; the variable stays where the code that reads it lives, so reading a setting
on a hot path costs an attribute lookup. ::

    vitorch.settings.set(module_local_params=True)
    with vitorch.settings.context(module_local_params=False):
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from importlib import import_module
from typing import Any

__all__ = ["context", "get", "register", "set"]

# alias -> (module name, dotted variable name inside it, validator or None)
_REGISTRY: dict[str, tuple[str, str, Callable[[Any], None] | None]] = {}


def _entry(alias: str) -> tuple[str, str, Callable[[Any], None] | None]:
    try:
        return _REGISTRY[alias]
    except KeyError:
        raise ValueError(
            f"vitorch.settings: unknown setting {alias!r}; registered: {sorted(_REGISTRY)}"
        ) from None


def _owner(module: str, deepname: str) -> tuple[Any, str]:
    *path, leaf = deepname.split(".")
    owner: Any = import_module(module)
    for name in path:
        owner = getattr(owner, name)
    return owner, leaf


def get(alias: str | None = None) -> Any:
    """The value of setting ``alias``, or a dict of every setting when ``alias`` is None."""
    if alias is None:
        return {name: get(name) for name in sorted(_REGISTRY)}
    module, deepname, _ = _entry(alias)
    owner, leaf = _owner(module, deepname)
    return getattr(owner, leaf)


def set(**kwargs: Any) -> None:
    """Set settings by alias: ``set(module_local_params=True)``; each value is validated first."""
    entries = {alias: _entry(alias) for alias in kwargs}
    for alias, (_, _, validator) in entries.items():
        if validator is not None:
            validator(kwargs[alias])
    for alias, (module, deepname, _) in entries.items():
        owner, leaf = _owner(module, deepname)
        setattr(owner, leaf, kwargs[alias])


@contextlib.contextmanager
def context(**kwargs: Any) -> Iterator[None]:
    """Override settings inside a ``with`` block (or a decorated function), then restore them."""
    old = {alias: get(alias) for alias in kwargs}
    try:
        set(**kwargs)
        yield
    finally:
        set(**old)


def register(
    alias: str, modulename: str, deepname: str, validator: Callable[[Any], None] | None = None
) -> Callable:
    """Register the variable ``modulename.deepname`` as setting ``alias``.

    Returns a decorator, so a validator can be declared with it::

        @vitorch.settings.register("my_setting", __name__, "MY_SETTING")
        def _check_my_setting(value):
            if not isinstance(value, bool):
                raise TypeError(...)
    """
    for name, value in (("alias", alias), ("modulename", modulename), ("deepname", deepname)):
        if not isinstance(value, str):
            raise TypeError(f"settings.register: {name} must be a str, got {value!r}")
    _REGISTRY[alias] = (modulename, deepname, validator)

    def decorator(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        _REGISTRY[alias] = (modulename, deepname, fn)
        return fn

    return decorator


def check_bool(alias: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"setting {alias!r} must be a bool, got {value!r}")

    return check
