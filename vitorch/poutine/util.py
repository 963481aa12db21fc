"""Trace helpers at Pyro's path ``pyro.poutine.util``."""

from __future__ import annotations

import copy
from typing import Any

from ..handlers.trace import Trace

__all__ = ["prune_subsample_sites", "site_is_subsample"]


def site_is_subsample(site: Any) -> bool:
    """True for the sample site a subsampled plate records for its indices."""
    return site["type"] == "sample" and bool(getattr(site["fn"], "_is_subsample", False))


def prune_subsample_sites(trace: Trace) -> Trace:
    """A shallow copy of ``trace`` without the plates' subsample sites."""
    pruned = copy.copy(trace)
    pruned.nodes = {name: site for name, site in trace.nodes.items() if not site_is_subsample(site)}
    return pruned
