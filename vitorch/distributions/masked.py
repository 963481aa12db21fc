"""A distribution whose log-density is switched off where a mask is False."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import Distribution

from . import constraints
from .distribution import TorchDistribution
from .util import broadcast_shape

__all__ = ["MaskedDistribution"]


def _all(flags: torch.Tensor) -> bool:
    return bool(flags.all())


class MaskedDistribution(TorchDistribution):
    """``base_dist`` with ``log_prob`` set to zero where ``mask`` is False.

    Sampling is unchanged. Usually built with ``base_dist.mask(mask)``.

    Args:
        base_dist: the distribution to mask.
        mask: a bool tensor that broadcasts with ``base_dist.batch_shape``, or a
            Python bool (``True``: no masking; ``False``: everything masked).
            The batch shape is the broadcast of the two shapes.

    Entries that are masked out contribute exactly zero to the value *and* to
    the gradient of ``log_prob``, even where the base log-density is ``nan`` or
    ``-inf`` there (e.g. missing observations stored as ``nan``).

    Example:
        >>> import torch
        >>> from vitorch.distributions import Normal
        >>> d = Normal(torch.zeros(2), 1.0).mask(torch.tensor([True, False]))
        >>> d.log_prob(torch.tensor([0.0, float("nan")]))
        tensor([-0.9189,  0.0000])
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(self, base_dist: Distribution, mask: torch.Tensor | bool) -> None:
        if not isinstance(base_dist, Distribution):
            raise TypeError(
                "MaskedDistribution: base_dist must be a Distribution, "
                f"got {type(base_dist).__name__}"
            )
        if isinstance(mask, bool):
            batch_shape = base_dist.batch_shape
        elif isinstance(mask, torch.Tensor):
            if mask.dtype != torch.bool:
                if mask.is_complex():
                    raise TypeError(
                        f"MaskedDistribution: mask must be a bool (or 0/1 real) tensor, got "
                        f"dtype {mask.dtype}"
                    )
                # Pyro takes any real mask as ``mask.bool()`` (DMM's float mini-batch
                # masks, AIR's float z_pres draws): nonzero keeps the entry.
                mask = mask.bool()
            try:
                batch_shape = torch.broadcast_shapes(mask.shape, base_dist.batch_shape)
            except RuntimeError:
                raise ValueError(
                    f"MaskedDistribution: mask of shape {tuple(mask.shape)} does not "
                    f"broadcast with batch_shape {tuple(base_dist.batch_shape)}"
                ) from None
            if mask.shape != batch_shape:
                mask = mask.expand(batch_shape)
            if base_dist.batch_shape != batch_shape:
                base_dist = base_dist.expand(batch_shape)
        else:
            raise TypeError(
                "MaskedDistribution: mask must be a bool or a bool tensor, "
                f"got {type(mask).__name__}"
            )
        self.base_dist = base_dist
        self._mask = mask
        super().__init__(batch_shape, base_dist.event_shape, validate_args=False)

    def expand(
        self,
        batch_shape: torch.Size | tuple[int, ...],
        _instance: MaskedDistribution | None = None,
    ) -> MaskedDistribution:
        """The same masked distribution over a larger batch shape."""
        new = self._get_checked_instance(MaskedDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        new.base_dist = self.base_dist.expand(batch_shape)
        new._mask = self._mask if isinstance(self._mask, bool) else self._mask.expand(batch_shape)
        super(MaskedDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        return new

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_rsample

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_enumerate_support

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base_dist.support

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """A draw from the base distribution (masks do not affect sampling)."""
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """A reparameterized draw from the base distribution."""
        return self.base_dist.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Base ``log_prob`` where the mask is True, exactly zero elsewhere."""
        if self._mask is True:
            return self.base_dist.log_prob(value)
        event_dim = len(self.event_shape)
        if self._mask is False:
            shape = broadcast_shape(value.shape[: value.dim() - event_dim], self.batch_shape)
            return torch.zeros(shape, dtype=torch.get_default_dtype(), device=value.device)
        mask = self._mask
        event_mask = mask.reshape(mask.shape + (1,) * event_dim)
        # torch.where alone is not enough: it passes 0 * nan = nan back through
        # masked-out entries, and nan values there would also trip validation.
        # So bad masked-out entries are swapped for a harmless value first.
        if value.is_floating_point() and not _all(torch.isfinite(value) | event_mask):
            value = self._fill_masked_out(value, event_mask)
        log_prob = self.base_dist.log_prob(value)
        if log_prob.requires_grad and not _all(torch.isfinite(log_prob) | mask):
            value = self._fill_masked_out(value, event_mask)
            log_prob = self.base_dist.log_prob(value)
        return torch.where(mask, log_prob, log_prob.new_zeros(()))

    def _fill_masked_out(self, value: torch.Tensor, event_mask: torch.Tensor) -> torch.Tensor:
        # A draw from the base lies in its support, so its log-density and
        # gradients are finite; it is detached so nothing flows through it.
        fill = self.base_dist.sample().detach().to(value.dtype)
        return torch.where(event_mask, value, fill)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """The base distribution's support (masks do not change it)."""
        return self.base_dist.enumerate_support(expand=expand)

    @property
    def mean(self) -> torch.Tensor:
        """The base distribution's mean."""
        return self.base_dist.mean

    @property
    def variance(self) -> torch.Tensor:
        """The base distribution's variance."""
        return self.base_dist.variance
