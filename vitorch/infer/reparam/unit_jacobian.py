"""``UnitJacobianReparam``: sample a site through a volume-preserving bijection."""

from __future__ import annotations

from collections.abc import Container, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch

from ...distributions import TorchDistribution, TransformedDistribution, constraints
from ...distributions.transforms import ComposeTransform, Transform, biject_to
from ...handlers.plate import PlateMessenger
from ...runtime import get_stack
from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["UnitJacobianReparam"]


@contextmanager
def block_plates(dims: Container[int] | None = None) -> Iterator[None]:
    """Take the enclosing vectorized plates at ``dims`` (all of them for ``None``) off the
    handler stack for the duration, so that a site sampled inside is not broadcast along
    them; they go back at their places afterwards."""
    stack = get_stack()
    removed = [
        (i, h)
        for i, h in enumerate(stack)
        if isinstance(h, PlateMessenger)
        and h._frame is not None
        and h._frame.dim is not None
        and (dims is None or h._frame.dim in dims)
    ]
    for i, _ in reversed(removed):
        del stack[i]
    try:
        yield
    finally:
        for i, h in removed:
            stack.insert(i, h)


def _unpad(x: torch.Tensor, shift: int, event_dim: int) -> torch.Tensor:
    """Drop the ``shift`` size-1 dims that sit left of the rightmost ``shift + event_dim``."""
    right = shift + event_dim
    return x.reshape(x.shape[: x.dim() - right - shift] + x.shape[x.dim() - right :])


def _pad(x: torch.Tensor, shift: int, event_dim: int) -> torch.Tensor:
    """Insert ``shift`` size-1 dims left of the rightmost ``shift + event_dim`` (undoes
    :func:`_unpad`)."""
    right = shift + event_dim
    return x.reshape(x.shape[: x.dim() - right] + (1,) * shift + x.shape[x.dim() - right :])


class _BatchToEvent(TorchDistribution):
    """``fn`` with its rightmost ``shift`` batch dims moved into the event.

    Unlike ``fn.to_event(shift)`` the batch keeps its rank: size-1 dims stand where the
    moved dims were, so that plates further left still find their dims in place.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(self, fn: Any, shift: int) -> None:
        self.base_dist = fn.to_event(shift)
        self.shift = shift
        self.fn_event_dim = len(fn.event_shape)
        batch = self.base_dist.batch_shape + (1,) * shift
        super().__init__(batch, self.base_dist.event_shape, validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_rsample

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base_dist.support

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return _pad(self.base_dist.rsample(sample_shape), self.shift, self.fn_event_dim)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return _pad(self.base_dist.sample(sample_shape), self.shift, self.fn_event_dim)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lp = self.base_dist.log_prob(_unpad(value, self.shift, self.fn_event_dim))
        return lp.reshape(lp.shape + (1,) * self.shift)


class UnitJacobianReparam(Reparam):
    """Reparameterize a site by a bijection whose Jacobian determinant is one.

    The site ``x`` (first mapped to unconstrained space by ``biject_to(support)``) is
    sampled as ``{name}_{suffix}``: ``y = transform(x)``; the site becomes the deterministic
    ``x = transform.inv(y)``. For real supports the density of ``y`` equals that of ``x``.

    :param transform: a ``Transform`` with ``|det J| = 1`` (e.g. a DCT or Haar transform).
    :param suffix: appended to the site name to name the auxiliary site.
    :param experimental_allow_batch: let the transform reach into batch dims; those dims
        (and the plates over them) are folded into the event of the auxiliary site.
    """

    def __init__(
        self,
        transform: Transform,
        suffix: str = "transformed",
        *,
        experimental_allow_batch: bool = False,
    ) -> None:
        if not isinstance(transform, torch.distributions.Transform):
            raise TypeError(
                f"UnitJacobianReparam: transform must be a torch Transform, got "
                f"{type(transform).__name__}"
            )
        if not isinstance(suffix, str) or not suffix:
            raise TypeError(f"UnitJacobianReparam: suffix must be a non-empty str, got {suffix!r}")
        self.transform = transform.with_cache()
        self.suffix = suffix
        self.experimental_allow_batch = bool(experimental_allow_batch)

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample ``{name}_{suffix}`` and return the site as its inverse image."""
        name = msg["name"]
        fn = msg["fn"]
        value = msg["value"]
        event_dim = len(fn.event_shape)
        shift = max(0, self.transform.domain.event_dim - event_dim)
        if shift and not self.experimental_allow_batch:
            raise ValueError(
                f"{type(self).__name__} at site {name!r}: the transform acts on "
                f"{self.transform.domain.event_dim} rightmost dims but the site has event dim "
                f"{event_dim}; expected a site with at least that many event dims (use "
                f".to_event()), or experimental_allow_batch=True to couple batch dims"
            )
        if shift > len(fn.batch_shape):
            raise ValueError(
                f"{type(self).__name__} at site {name!r}: the transform needs "
                f"{self.transform.domain.event_dim} dims, the site has only "
                f"{len(fn.batch_shape) + event_dim}"
            )
        with block_plates(range(-shift, 0) if shift else ()):
            if shift:
                fn = _BatchToEvent(fn, shift)
                if value is not None:
                    value = _pad(value, shift, event_dim)
            transform = ComposeTransform([biject_to(fn.support).inv.with_cache(), self.transform])
            value_trans = None if value is None else transform(value)
            value_trans = self._sample_aux(
                f"{name}_{self.suffix}",
                TransformedDistribution(fn, transform),
                value_trans,
                msg["is_observed"],
            )
        if value is None:
            value = transform.inv(value_trans)
        if shift:
            value = _unpad(value, shift, event_dim)
        return self._deterministic_result(value, event_dim)
