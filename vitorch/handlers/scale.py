"""``scale`` and ``mask``: reweight or switch off the log-densities of sample sites."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from ..runtime import Message, Messenger

__all__ = ["ScaleMessenger", "MaskMessenger", "scale", "mask"]


class ScaleMessenger(Messenger):
    def __init__(self, fn: Callable | None = None, scale: float | torch.Tensor = 1.0):
        super().__init__(fn)
        if isinstance(scale, numbers.Number):
            if not scale > 0:
                raise ValueError(f"scale expects a positive scale, got {scale}")
        elif not isinstance(scale, torch.Tensor):
            raise TypeError(f"scale expects a number or a tensor, got {type(scale).__name__}")
        self.scale = scale

    def _pyro_sample(self, msg: Message) -> None:
        msg.scale = self.scale * msg.scale


class MaskMessenger(Messenger):
    def __init__(self, fn: Callable | None = None, mask: bool | torch.Tensor = True):
        super().__init__(fn)
        if not isinstance(mask, bool) and not (
            isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
        ):
            raise TypeError(
                f"mask expects a bool or a bool tensor, got "
                f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}"
            )
        self.mask = mask

    def _pyro_sample(self, msg: Message) -> None:
        if msg.mask is None or msg.mask is True:
            msg.mask = self.mask
        elif self.mask is False or msg.mask is False:
            msg.mask = False
        elif self.mask is not True:
            msg.mask = msg.mask & self.mask


def scale(fn: Callable | None = None, scale: float | torch.Tensor = 1.0):
    """Multiply the log-density of every sample site by ``scale``."""
    return ScaleMessenger(fn, scale=scale)


def mask(fn: Callable | None = None, mask: bool | torch.Tensor = True):
    """Switch off log-density entries where ``mask`` is False."""
    return MaskMessenger(fn, mask=mask)
