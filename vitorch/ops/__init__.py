"""Tensor helpers of Pyro's ``pyro.ops``: ``indexing.Vindex``, ``stats`` (posterior
summaries) and ``provenance`` (what ``vitorch.render_model`` tracks)."""

from . import indexing, provenance, stats
from .indexing import Vindex, vindex

__all__ = ["Vindex", "indexing", "provenance", "stats", "vindex"]
