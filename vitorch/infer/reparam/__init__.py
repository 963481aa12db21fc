"""Reparameterizers for :func:`vitorch.poutine.reparam` (Pyro's ``pyro.infer.reparam``)."""

from .loc_scale import LocScaleReparam
from .reparam import Reparam
from .transform import TransformReparam

__all__ = ["LocScaleReparam", "Reparam", "TransformReparam"]
