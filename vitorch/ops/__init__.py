"""Tensor helpers of Pyro's ``pyro.ops`` that models use (``indexing.Vindex``)."""

from . import indexing
from .indexing import Vindex, vindex

__all__ = ["Vindex", "indexing", "vindex"]
