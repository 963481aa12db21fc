"""Pyro's conventions on top of ``torch.distributions``.

Every vitorch distribution carries :class:`TorchDistributionMixin`, which adds the few
methods Pyro models rely on: ``.to_event(n)`` to declare batch dims dependent,
``.mask(m)`` to switch log-densities off, ``.expand_by(shape)`` to grow the batch on the
left and ``.shape(sample_shape)`` for the shape of a draw.
"""

from __future__ import annotations

import warnings

import torch
from torch.distributions import Distribution

__all__ = ["TorchDistributionMixin", "TorchDistribution"]


class TorchDistributionMixin:
    """Adds Pyro's methods to a ``torch.distributions.Distribution`` subclass."""

    # Set by Distribution; declared here for type checkers.
    batch_shape: torch.Size
    event_shape: torch.Size

    def __call__(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Draw a sample, reparameterized when the distribution allows it."""
        return self.rsample(sample_shape) if self.has_rsample else self.sample(sample_shape)  # type: ignore[attr-defined]

    @property
    def event_dim(self) -> int:
        return len(self.event_shape)

    def shape(self, sample_shape: torch.Size = torch.Size()) -> torch.Size:
        """The shape of ``self.sample(sample_shape)``."""
        return torch.Size(sample_shape) + self.batch_shape + self.event_shape

    def expand_by(self, sample_shape) -> Distribution:
        """Expand the batch shape on the left by ``sample_shape``."""
        return self.expand(torch.Size(sample_shape) + self.batch_shape)  # type: ignore[attr-defined]

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> Distribution:
        """Reinterpret the rightmost ``reinterpreted_batch_ndims`` batch dims as event dims.

        ``None`` reinterprets all batch dims; ``0`` returns the distribution itself.
        """
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if not isinstance(reinterpreted_batch_ndims, int) or reinterpreted_batch_ndims < 0:
            raise ValueError(
                f"to_event expects a non-negative int, got {reinterpreted_batch_ndims!r}"
            )
        if reinterpreted_batch_ndims == 0:
            return self  # type: ignore[return-value]
        if reinterpreted_batch_ndims > len(self.batch_shape):
            raise ValueError(
                f"to_event({reinterpreted_batch_ndims}) on a distribution with batch_shape "
                f"{tuple(self.batch_shape)}: at most {len(self.batch_shape)} dims can move"
            )
        from .torch import Independent

        return Independent(self, reinterpreted_batch_ndims)

    def mask(self, mask) -> Distribution:
        """Zero the log-density where ``mask`` is False (broadcast against the batch shape)."""
        from .masked import MaskedDistribution

        return MaskedDistribution(self, mask)

    def independent(self, reinterpreted_batch_ndims: int | None = None) -> Distribution:
        """Pyro's deprecated name for :meth:`to_event`."""
        warnings.warn(
            "independent() is deprecated (as in Pyro); use to_event()",
            FutureWarning,
            stacklevel=2,
        )
        return self.to_event(reinterpreted_batch_ndims)


class TorchDistribution(Distribution, TorchDistributionMixin):
    """Base class for distributions that vitorch defines itself."""

    def expand(self, batch_shape, _instance=None) -> Distribution:
        """Without a family-specific ``expand``, wrap: an :class:`ExpandedDistribution`."""
        from .misc import ExpandedDistribution

        return ExpandedDistribution(self, batch_shape)
