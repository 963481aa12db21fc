"""``SplitReparam``: cut a site into pieces along one dim, each its own site."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import constraints as _tc

from ...distributions import Delta, ImproperUniform, constraints
from ...poutine.runtime import get_mask
from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["SplitReparam", "default_support", "real_support", "same_support"]


def same_support(fn: Any, *args: Any) -> constraints.Constraint:
    """Every piece keeps the site's support."""
    return fn.support


def real_support(fn: Any, *args: Any) -> constraints.Constraint:
    """Every piece is real, with the site's event dim."""
    return constraints.independent(constraints.real, len(fn.event_shape))


def default_support(fn: Any, slice: slice, dim: int) -> constraints.Constraint:
    """The site's support, restricted to the piece ``slice`` (positions along ``dim``) where
    it is a ``cat`` or ``stack`` of constraints along ``dim``."""
    support = fn.support
    wrappers = []
    while isinstance(support, _tc._IndependentConstraint):
        wrappers.append(support.reinterpreted_batch_ndims)
        support = support.base_constraint
    if isinstance(support, _tc._Stack) and support.dim == dim:
        support = constraints.stack(support.cseq[slice], dim)
    elif isinstance(support, _tc._Cat) and support.dim == dim:
        # Keep the blocks that overlap the piece, each cut to the overlap.
        cseq, lengths, end = [], [], 0
        for c, n in zip(support.cseq, support.lengths):
            begin, end = end, end + n
            overlap = min(end, slice.stop) - max(begin, slice.start)
            if overlap > 0:
                cseq.append(c)
                lengths.append(overlap)
        support = constraints.cat(cseq, dim, lengths)
    for n in reversed(wrappers):
        support = constraints.independent(support, n)
    return support


class SplitReparam(Reparam):
    """Split a site along an event dim into sites ``{name}_split_{i}`` (as ``torch.split``).

    Lets different parts of one tensor get different reparameterizers or inference
    (e.g. the low frequencies of a DCT-reparameterized series in a dense mass matrix).
    The pieces are flat (``ImproperUniform``) latent sites; the site's own density is kept,
    at the concatenated value, on the site itself. The pieces must get their values from a
    guide, a condition or an initialization: they cannot be drawn.

    :param sections: the size of each piece (a list of positive ints).
    :param dim: the (negative) event dim to split along.
    :param support_fn: ``support_fn(fn, slice, dim)`` gives a piece's support:
        :func:`default_support` (default), :func:`same_support` or :func:`real_support`.
    """

    def __init__(
        self, sections: list[int], dim: int, support_fn: Callable = default_support
    ) -> None:
        if (
            not isinstance(sections, (list, tuple))
            or not sections
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sections)
        ):
            raise ValueError(
                f"SplitReparam: sections must be a non-empty list of positive ints, got "
                f"{sections!r}"
            )
        if isinstance(dim, bool) or not isinstance(dim, int) or dim >= 0:
            raise ValueError(f"SplitReparam: dim must be a negative int, got {dim!r}")
        if not callable(support_fn):
            raise TypeError(
                f"SplitReparam: support_fn must be callable, got {type(support_fn).__name__}"
            )
        self.sections = list(sections)
        self.dim = dim
        self.support_fn = support_fn

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample the pieces and return the site as their concatenation."""
        name = msg["name"]
        fn = msg["fn"]
        value = msg["value"]
        event_dim = len(fn.event_shape)
        if event_dim < -self.dim:
            raise ValueError(
                f"SplitReparam at site {name!r}: dim={self.dim} is not an event dim of a site "
                f"with event_shape {tuple(fn.event_shape)}; expected at least {-self.dim} "
                f"event dims (use .to_event())"
            )
        size = fn.event_shape[self.dim]
        if sum(self.sections) != size:
            raise ValueError(
                f"SplitReparam at site {name!r}: sections {self.sections} add up to "
                f"{sum(self.sections)}, but the site has size {size} at dim {self.dim}"
            )

        pieces = [None] * len(self.sections)
        if value is not None:
            pieces = list(value.split(self.sections, self.dim))
        left = event_dim + self.dim  # event dims left of the split dim
        start = 0
        for i, part in enumerate(self.sections):
            event_shape = fn.event_shape[:left] + (part,) + fn.event_shape[left + 1 :]
            support = self.support_fn(fn, slice(start, start + part), self.dim)
            pieces[i] = self._sample_aux(
                f"{name}_split_{i}",
                ImproperUniform(support, fn.batch_shape, event_shape),
                pieces[i],
                msg["is_observed"],
            )
            start += part

        if value is None:
            # Pieces from a guide may differ in batch shape; broadcast all but the split dim.
            shapes = [
                p.shape[: p.dim() + self.dim] + (1,) + p.shape[p.dim() + self.dim + 1 :]
                for p in pieces
            ]
            shape = list(torch.broadcast_shapes(*shapes))
            expanded = []
            for p in pieces:
                shape[self.dim] = p.shape[self.dim]
                expanded.append(p.expand(shape))
            value = torch.cat(expanded, dim=self.dim)

        log_density = 0.0 if get_mask() is False else fn.log_prob(value)
        return {
            "fn": Delta(value, log_density, event_dim=event_dim),
            "value": value,
            "is_observed": True,
        }
