"""Provenance tracking: which labelled inputs (sample sites, params) a tensor was computed from.

A :class:`ProvenanceTensor` is a tensor carrying a frozenset of labels. Every torch
operation it takes part in returns tensors labelled with the union of its inputs' labels,
so after running a model on labelled values the log-density of a site tells which sites it
was computed from. This is what :mod:`vitorch.infer.inspect` builds its dependency graphs on.

What is tracked, and what is not:

- Tracking is per tensor, not per element: ``torch.stack([a, b])[0]`` still depends on
  both ``a`` and ``b``.
- Whatever leaves torch loses its labels: ``x.item()``, ``float(x)``, ``bool(x)`` (so any
  Python ``if`` on a tensor) and ``x.tolist()`` return plain Python values. A value that
  depends on a site only through such control flow is not seen to depend on it.
- In-place operations return a labelled result, but do not relabel the tensor they
  modify.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "ProvenanceTensor",
    "detach_provenance",
    "extract_provenance",
    "get_provenance",
    "track_provenance",
]

_EMPTY: frozenset = frozenset()


class ProvenanceTensor(torch.Tensor):
    """A tensor labelled with a frozenset of provenance labels.

    ``ProvenanceTensor(data, provenance)`` shares storage with ``data``; with an empty
    ``provenance`` it returns ``data`` itself (nothing to track). Wrapping a tensor that
    already carries provenance merges the two label sets.

    Example:
        >>> a = ProvenanceTensor(torch.ones(2), frozenset({"a"}))
        >>> b = ProvenanceTensor(torch.ones(2), frozenset({"b"}))
        >>> sorted(get_provenance(a * 2 + b.exp()))
        ['a', 'b']
        >>> sorted(get_provenance(a + detach_provenance(b)))
        ['a']
    """

    _t: torch.Tensor
    _provenance: frozenset

    def __new__(cls, data: torch.Tensor, provenance: frozenset = _EMPTY) -> Any:
        if not isinstance(data, torch.Tensor):
            raise TypeError(
                f"ProvenanceTensor: data must be a torch.Tensor, got {type(data).__name__}"
            )
        if isinstance(data, ProvenanceTensor):
            data, provenance = data._t, data._provenance | frozenset(provenance)
        if not provenance:
            return data
        out = data.as_subclass(cls)
        # Keep the plain tensor itself, so that detaching always gives back the same
        # object (it may be a dict key, as parameters are in the param store).
        out._t = data
        out._provenance = frozenset(provenance)
        return out

    def __repr__(self) -> str:  # type: ignore[override]
        return f"ProvenanceTensor({self._t!r}, provenance={set(self._provenance)!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        (args, kwargs), provenance = extract_provenance((args, kwargs or {}))
        return track_provenance(func(*args, **kwargs), provenance)


def _rebuild(x: Any, parts: list) -> Any:
    """A container of ``x``'s type holding ``parts`` (``x`` itself when nothing changed)."""
    if all(new is old for new, old in zip(parts, x)):
        return x
    kind = type(x)
    if kind in (list, tuple, set, frozenset):
        return kind(parts)
    if hasattr(x, "_fields"):  # a namedtuple
        return kind(*parts)
    return kind(parts)  # torch.return_types and other sequence subclasses


def _walk(x: Any, leaf: Callable[[torch.Tensor], tuple[Any, frozenset]]) -> tuple[Any, frozenset]:
    """Apply ``leaf`` to the tensors in a nest of lists, tuples, sets and dicts.

    Returns the rebuilt nest and the union of the provenances ``leaf`` reported.
    """
    if isinstance(x, torch.Tensor):
        return leaf(x)
    if isinstance(x, dict):
        provenance = _EMPTY
        changed = {}
        for key, value in x.items():
            new, p = _walk(value, leaf)
            provenance |= p
            if new is not value:
                changed[key] = new
        if not changed:
            return x, provenance
        out = copy.copy(x)
        out.update(changed)
        return out, provenance
    if isinstance(x, (list, tuple, set, frozenset)):
        walked = [_walk(part, leaf) for part in x]
        provenance = _EMPTY.union(*(p for _, p in walked))
        return _rebuild(x, [new for new, _ in walked]), provenance
    return x, _EMPTY


def _unwrap(t: torch.Tensor) -> tuple[torch.Tensor, frozenset]:
    if isinstance(t, ProvenanceTensor):
        return t._t, t._provenance
    return t, _EMPTY


def extract_provenance(x: Any) -> tuple[Any, frozenset]:
    """Split ``x`` (a tensor or a nest of them) into its plain value and its provenance."""
    return _walk(x, _unwrap)


def get_provenance(x: Any) -> frozenset:
    """The union of the provenances of the tensors in ``x``."""
    return extract_provenance(x)[1]


def detach_provenance(x: Any) -> Any:
    """``x`` with every tensor's provenance dropped (the plain tensors, sharing storage)."""
    return extract_provenance(x)[0]


def track_provenance(x: Any, provenance: frozenset) -> Any:
    """``x`` with ``provenance`` added to the provenance of every tensor in it."""
    if not isinstance(provenance, (set, frozenset)):
        raise TypeError(
            f"track_provenance: provenance must be a set or frozenset, "
            f"got {type(provenance).__name__}"
        )
    if not provenance:
        return x
    provenance = frozenset(provenance)
    return _walk(x, lambda t: (ProvenanceTensor(t, provenance), provenance))[0]
