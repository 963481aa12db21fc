"""The point mass: all probability on one value."""

from __future__ import annotations

import numbers
from typing import ClassVar

import torch

from . import constraints
from .distribution import TorchDistribution
from .util import sum_rightmost

__all__ = ["Delta"]


class Delta(TorchDistribution):
    """Point mass at ``v``, with an optional ``log_density`` carried along.

    ``log_density`` lets a guide hand a log-Jacobian (or any other log-weight)
    to the ELBO through an otherwise degenerate site, as Pyro's ``Delta`` does.

    Args:
        v: the location of the mass; its rightmost ``event_dim`` dims form the
            event shape, the rest the batch shape.
        log_density: added to ``log_prob`` at ``v``; a number or a tensor of
            the batch shape.
        event_dim: how many rightmost dims of ``v`` are event dims.
        validate_args: as for any ``torch.distributions.Distribution``.

    Example:
        >>> import torch
        >>> d = Delta(torch.tensor([1.0, 2.0]), event_dim=1)
        >>> d.log_prob(torch.tensor([1.0, 2.0]))
        tensor(0.)
        >>> d.log_prob(torch.tensor([1.0, 3.0]))
        tensor(-inf)
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "v": constraints.dependent,
        "log_density": constraints.real,
    }
    has_rsample = True

    def __init__(
        self,
        v: torch.Tensor,
        log_density: torch.Tensor | float = 0.0,
        event_dim: int = 0,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"Delta: v must be a tensor, got {type(v).__name__}")
        if (
            isinstance(event_dim, bool)
            or not isinstance(event_dim, int)
            or not 0 <= event_dim <= v.dim()
        ):
            raise ValueError(
                f"Delta: event_dim must be an int in [0, v.dim()={v.dim()}], got {event_dim!r}"
            )
        batch_dim = v.dim() - event_dim
        batch_shape = v.shape[:batch_dim]
        event_shape = v.shape[batch_dim:]
        if isinstance(log_density, numbers.Number):
            log_density = torch.full(
                batch_shape, float(log_density), dtype=v.dtype, device=v.device
            )
        elif not isinstance(log_density, torch.Tensor):
            raise TypeError(
                f"Delta: log_density must be a number or a tensor, got {type(log_density).__name__}"
            )
        elif log_density.shape != batch_shape:
            try:
                log_density = log_density.expand(batch_shape)
            except RuntimeError:
                raise ValueError(
                    f"Delta: log_density of shape {tuple(log_density.shape)} does not "
                    f"broadcast to the batch shape {tuple(batch_shape)}"
                ) from None
        self.v = v
        self.log_density = log_density
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """All reals (in ``event_dim`` dependent dims): any value may be scored."""
        return constraints.independent(constraints.real, len(self.event_shape))

    def expand(
        self, batch_shape: torch.Size | tuple[int, ...], _instance: Delta | None = None
    ) -> Delta:
        """The same point mass, repeated over a larger batch shape."""
        new = self._get_checked_instance(Delta, _instance)
        batch_shape = torch.Size(batch_shape)
        new.v = self.v.expand(batch_shape + self.event_shape)
        new.log_density = self.log_density.expand(batch_shape)
        super(Delta, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """``v`` expanded to ``sample_shape + v.shape``; gradients reach ``v``."""
        return self.v.expand(torch.Size(sample_shape) + self.v.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log_density`` where ``value == v`` (in every event entry), else ``-inf``."""
        if self._validate_args:
            self._validate_sample(value)
        # log(1) = 0 on the point, log(0) = -inf elsewhere.
        hit = (value == self.v).to(self.log_density.dtype).log()
        return sum_rightmost(hit, len(self.event_shape)) + self.log_density

    @property
    def mean(self) -> torch.Tensor:
        """``v`` itself."""
        return self.v

    @property
    def variance(self) -> torch.Tensor:
        """Zeros of the shape of ``v``."""
        return torch.zeros_like(self.v)
