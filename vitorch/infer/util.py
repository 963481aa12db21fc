"""Helpers at Pyro's path ``pyro.infer.util`` that custom objectives import."""

from __future__ import annotations

from typing import Any

import torch

from ..distributions import enable_validation, is_validation_enabled
from ..distributions.util import is_identically_zero

__all__ = ["enable_validation", "is_identically_zero", "is_validation_enabled", "torch_item"]


def torch_item(x: Any) -> float:
    """``x`` as a Python number (a 0-d tensor's ``.item()``, a number unchanged)."""
    return x.item() if isinstance(x, torch.Tensor) else x
