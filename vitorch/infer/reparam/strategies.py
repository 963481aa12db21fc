"""Reparameterization strategies: pick a reparameterizer per site automatically.

A strategy is a callable config for :func:`vitorch.poutine.reparam`
(``reparam(model, config=AutoReparam())``), or a decorator (``@AutoReparam()``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ...distributions import ProjectedNormal, Stable, StableWithLogProb, constraints
from ...handlers.reparam import ReparamMessenger
from ...runtime import Message
from .loc_scale import _LOC_SCALE_FAMILIES, LocScaleReparam
from .projected_normal import ProjectedNormalReparam
from .reparam import Reparam
from .softmax import GumbelSoftmaxReparam
from .stable import LatentStableReparam, StableReparam, SymmetricStableReparam
from .transform import TransformReparam

__all__ = ["AutoReparam", "MinimalReparam", "Strategy"]


class Strategy(ABC):
    """Base class of strategies: :meth:`configure` chooses a site's reparameterizer.

    The choice is made on a site's first appearance and remembered in ``self.config``
    (site name -> ``Reparam`` or ``None``), which after one run of the model can itself be
    passed as ``reparam(config=strategy.config)``.
    """

    def __init__(self) -> None:
        self.config: dict[str, Reparam | None] = {}

    @abstractmethod
    def configure(self, msg: Message) -> Reparam | None:
        """A reparameterizer for the sample site ``msg``, or ``None`` to leave it alone."""

    def __call__(self, msg_or_fn: Message | Mapping | Callable) -> Any:
        """Given a site: its (remembered) reparameterizer. Given a model: the model
        reparameterized by this strategy."""
        if isinstance(msg_or_fn, (Message, Mapping)):
            name = msg_or_fn["name"]
            if name not in self.config:
                self.config[name] = self.configure(msg_or_fn)
            return self.config[name]
        if not callable(msg_or_fn):
            raise TypeError(
                f"{type(self).__name__}: expected a model (callable) or a sample site, got "
                f"{type(msg_or_fn).__name__}"
            )
        return ReparamMessenger(msg_or_fn, config=self)


# Transformed distributions whose base is an internal torch helper that Pyro never
# unwraps (its base is not a Pyro distribution): strategies treat them as opaque.
_OPAQUE = (torch.distributions.RelaxedOneHotCategorical, torch.distributions.RelaxedBernoulli)


def _unwrap(fn: Any) -> Any:
    """Strip wrappers that have a ``base_dist`` (Independent, Masked, ...), stopping at a
    ``TransformedDistribution``."""
    while isinstance(getattr(fn, "base_dist", None), torch.distributions.Distribution):
        if isinstance(fn, torch.distributions.TransformedDistribution):
            break
        fn = fn.base_dist
    return fn


def _minimal_reparam(fn: Any, is_observed: bool) -> Reparam | None:
    """The reparameterizer a site needs to have a usable density at all, or ``None``."""
    fn = _unwrap(fn)
    if isinstance(fn, torch.distributions.TransformedDistribution) and not isinstance(fn, _OPAQUE):
        if _minimal_reparam(fn.base_dist, is_observed) is None:
            return None
        return TransformReparam()  # the base site then gets its own reparameterizer
    if isinstance(fn, Stable) and not isinstance(fn, StableWithLogProb):
        if not is_observed:
            return LatentStableReparam()
        if fn.skew.requires_grad or bool(fn.skew.any()):
            return StableReparam()
        return SymmetricStableReparam()
    if isinstance(fn, ProjectedNormal):
        return ProjectedNormalReparam()
    return None


def _is_real(constraint: constraints.Constraint) -> bool:
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    return constraint == constraints.real


def _loc_scale_reparam(name: str, fn: Any, centered: float | None) -> Reparam | None:
    if "_decentered" in name:  # already an auxiliary site of a LocScaleReparam
        return None
    # Only the families LocScaleReparam can decenter (Pyro also tries any other family
    # with real support and ``loc``/``scale`` parameters).
    if not isinstance(fn, _LOC_SCALE_FAMILIES) or not _is_real(fn.support):
        return None
    params = set(fn.arg_constraints)
    return LocScaleReparam(centered=centered, shape_params=sorted(params - {"loc", "scale"}))


class MinimalReparam(Strategy):
    """Reparameterize only the sites that would otherwise fail: ``Stable`` (which has no
    cheap density) and ``ProjectedNormal`` (latent sites), also inside a
    ``TransformedDistribution``."""

    def configure(self, msg: Message) -> Reparam | None:
        return _minimal_reparam(msg["fn"], msg["is_observed"])


class AutoReparam(Strategy):
    """A recommended set of reparameterizers; may change between releases (read
    ``self.config`` after one run to keep a choice).

    For latent sites: :class:`TransformReparam` for transformed distributions,
    :class:`GumbelSoftmaxReparam` for ``RelaxedOneHotCategorical``, a learnable
    :class:`LocScaleReparam` for location-scale families on the real line; then, for all
    sites, what :class:`MinimalReparam` would choose.

    :param centered: passed to each ``LocScaleReparam``: ``None`` (default) learns the
        centering, a float in ``[0, 1]`` fixes it (``0.0`` fully decenters, e.g. for MCMC).
    """

    def __init__(self, *, centered: float | None = None) -> None:
        if centered is not None and (not isinstance(centered, float) or not 0 <= centered <= 1):
            raise ValueError(
                f"AutoReparam: centered must be None or a float in [0, 1], got {centered!r}"
            )
        super().__init__()
        self.centered = centered

    def configure(self, msg: Message) -> Reparam | None:
        fn = msg["fn"]
        if not msg["is_observed"]:
            fn = _unwrap(fn)
            if isinstance(fn, torch.distributions.RelaxedOneHotCategorical):
                return GumbelSoftmaxReparam()
            if isinstance(fn, torch.distributions.TransformedDistribution) and not isinstance(
                fn, _OPAQUE
            ):
                return TransformReparam()
            result = _loc_scale_reparam(msg["name"], fn, self.centered)
            if result is not None:
                return result
        return _minimal_reparam(fn, msg["is_observed"])
