"""Trace helpers at Pyro's path ``pyro.poutine.util``."""

from __future__ import annotations

import copy
from typing import Any

from ..handlers.trace import Trace

__all__ = [
    "all_escape",
    "discrete_escape",
    "enum_extend",
    "mc_extend",
    "prune_subsample_sites",
    "site_is_subsample",
]


def site_is_subsample(site: Any) -> bool:
    """True for the sample site a subsampled plate records for its indices."""
    return site["type"] == "sample" and bool(getattr(site["fn"], "_is_subsample", False))


def prune_subsample_sites(trace: Trace) -> Trace:
    """A shallow copy of ``trace`` without the plates' subsample sites."""
    pruned = copy.copy(trace)
    pruned.nodes = {name: site for name, site in trace.nodes.items() if not site_is_subsample(site)}
    return pruned


def discrete_escape(trace: Trace, msg: Any) -> bool:
    """Whether ``msg`` is a latent sample site with enumerable support not yet in ``trace``."""
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and msg["name"] not in trace
        and bool(getattr(msg["fn"], "has_enumerate_support", False))
    )


def all_escape(trace: Trace, msg: Any) -> bool:
    """Whether ``msg`` is a latent sample site not yet in ``trace``."""
    return msg["type"] == "sample" and not msg["is_observed"] and msg["name"] not in trace


def _extended(trace: Trace, msg: Any, value: Any) -> Trace:
    site = msg.copy()
    site.value = value
    site.done = True
    site.stop = False
    site.continuation = None
    new = trace.copy()
    new.nodes[msg.name] = site
    return new


def enum_extend(trace: Trace, msg: Any, num_samples: int | None = None) -> list[Trace]:
    """Copies of ``trace`` with site ``msg`` set to each value of its support, in order
    (the first ``num_samples + 1`` of them when ``num_samples`` >= 0, as in Pyro)."""
    num_samples = -1 if num_samples is None else num_samples
    out = []
    for i, value in enumerate(msg["fn"].enumerate_support(*msg["args"], **msg["kwargs"])):
        if 0 <= num_samples < i:
            break
        out.append(_extended(trace, msg, value))
    return out


def mc_extend(trace: Trace, msg: Any, num_samples: int | None = None) -> list[Trace]:
    """Copies of ``trace`` with site ``msg`` set to ``num_samples`` independent draws."""
    num_samples = 1 if num_samples is None else num_samples
    return [
        _extended(trace, msg, msg["fn"](*msg["args"], **msg["kwargs"])) for _ in range(num_samples)
    ]
