"""Pyro's module paths mapped onto vitorch's modules (``pyro.poutine.trace_messenger`` ...)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping


def alias_modules(package: str, source: str, names: Mapping[str, str]) -> None:
    """Make ``package.<alias>`` import as ``source.<target>`` for each alias -> target.

    Each alias also becomes an attribute of ``package``, as a submodule would.
    """
    parent = sys.modules[package]
    for alias, target in names.items():
        module = importlib.import_module(f"{source}.{target}")
        sys.modules[f"{package}.{alias}"] = module
        setattr(parent, alias, module)
