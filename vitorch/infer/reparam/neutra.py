"""``NeuTraReparam``: neural-transport reparameterization by a trained continuous guide."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...distributions import Delta
from ...handlers.reparam import ReparamMessenger
from ...poutine.runtime import get_mask
from ..autoguide.continuous import AutoContinuous
from .reparam import Reparam, ReparamMessage, ReparamResult
from .unit_jacobian import block_plates

__all__ = ["NeuTraReparam"]


class NeuTraReparam(Reparam):
    """Warp all latent sites of a model through a trained ``AutoContinuous`` guide
    (Hoffman et al. 2019, "NeuTra-lizing bad geometry in HMC using neural transport").

    At the first latent site of a run one shared site ``{that site's name}_shared_latent``
    is sampled in the guide's base space (its own density masked out); the guide's
    transform maps it to the unconstrained latent vector, which is cut into the model's
    sites. Each site becomes a ``Delta`` carrying the model density of its value plus the
    log-Jacobians, so the model density in the shared latent is
    ``log p(x(z)) + log|dx/dz|``: nearly standard normal if the guide fits well, which is
    an easy geometry for HMC. Use one instance for all sites, e.g.
    ``reparam(model, config=lambda _: neutra)`` or ``neutra.reparam(model)``. Latent sites
    only; the model must have static structure and the guide must already have run.

    :param guide: a trained :class:`~vitorch.infer.autoguide.AutoContinuous` guide whose
        ``get_transform()`` needs no model arguments.
    """

    def __init__(self, guide: AutoContinuous) -> None:
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                f"NeuTraReparam: guide must be an AutoContinuous guide, got {type(guide).__name__}"
            )
        self.guide = guide
        self.transform: Any = None
        self.x_unconstrained: dict[str, tuple[Any, torch.Tensor]] = {}

    def _latents(self) -> dict:
        latents = self.guide._latents
        if latents is None:
            raise ValueError(
                "NeuTraReparam: the guide has not run yet; train it (or call it once with "
                "the model's arguments) before reparameterizing"
            )
        return latents

    def _get_transform(self) -> Any:
        try:
            return self.guide.get_transform()
        except (NotImplementedError, TypeError) as e:
            raise ValueError(
                f"NeuTraReparam: {type(self.guide).__name__} must implement get_transform() "
                f"without model arguments"
            ) from e

    def _reparam_config(self, site: Any) -> NeuTraReparam | None:
        return self if site["name"] in self._latents() else None

    def reparam(self, fn: Callable | None = None) -> ReparamMessenger:
        """``reparam(fn)`` with this reparameterizer on every latent site of the guide."""
        return ReparamMessenger(fn, config=self._reparam_config)

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample the shared latent (at the first site) and return this site's slice."""
        name = msg["name"]
        fn = msg["fn"]
        latents = self._latents()
        if name not in latents:
            return {"fn": fn, "value": msg["value"], "is_observed": msg["is_observed"]}
        if msg["is_observed"]:
            raise NotImplementedError(
                f"NeuTraReparam at site {name!r}: observed sites are not supported"
            )

        compute_density = get_mask() is not False
        shared = None  # log|det| of the guide's transform, at the first site only
        if name not in self.x_unconstrained:  # the first site of this run
            self.transform = self._get_transform()
            with block_plates():
                z = self._sample_aux(
                    f"{name}_shared_latent", self.guide.get_base_dist().mask(False), None, False
                )
            x = self.transform(z)
            if compute_density:
                shared = self.transform.log_abs_det_jacobian(z, x)
            self.x_unconstrained = {
                site.name: (site, u) for site, u in self.guide._unpack_latent(x)
            }

        site, unconstrained = self.x_unconstrained.pop(name)
        value, neg_log_det = site.constrain_with_log_density(unconstrained)
        log_density: Any = 0.0
        if compute_density:
            log_density = fn.log_prob(value) - neg_log_det
            if shared is not None:
                # One term per draw of the latent vector: spread it evenly over this
                # site's plate elements, so that their sum counts it once.
                extra = log_density.dim() - shared.dim()
                n = log_density.shape[shared.dim() :].numel()
                log_density = log_density + shared.reshape(shared.shape + (1,) * extra) / n
        event_dim = len(fn.event_shape)
        return {
            "fn": Delta(value, log_density, event_dim=event_dim),
            "value": value,
            "is_observed": True,
        }

    def transform_sample(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map draws of the shared latent (with optional batch dims left of the model's
        plates) to ``{site name: constrained value}``."""
        x = self._get_transform()(latent)
        return {site.name: site.constrain(u) for site, u in self.guide._unpack_latent(x)}
