"""``TraceTMC_ELBO``: tensor Monte Carlo, a marginal likelihood estimate over parallel draws.

Sites marked ``infer={"enumerate": "parallel", "num_samples": n}`` (see
``config_enumerate(..., num_samples=n)``) take ``n`` draws in a dim of their own, laid out
like an enumerated support; sites marked without ``num_samples`` take their support. Every
combination of the draws of different sites is an importance sample, and the estimate

    log (1 / prod_s n_s) sum_{draws} prod_sites p / q

is computed by the same variable elimination on the plate tree as ``TraceEnum_ELBO``
(cost linear in chain lengths and plate sizes, not in the number of combinations). A
model-only site drawn from its prior has ``p / q = 1``; a guide site has ``q`` its guide
density. Gradients of reparameterized draws flow through their values; those of other
draws come from the DiCE factor ``exp(log q - log q.detach())``, which is one in value.

Unlike Pyro, a model site enumerated over its support (no ``num_samples``) counts its
prior once (Pyro's ``TraceTMC_ELBO`` counts it twice), and a model-only latent site that
is not marked is treated as a single draw from its prior (weight one), not as a draw
from a proposal of density one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..handlers.trace import Trace, site_log_prob, store_log_prob
from ..runtime import Message
from .elbo import _counts, _total, _warn_missing
from .traceenum_elbo import (
    TraceEnum_ELBO,
    _contract,
    _enum_dims,
    _enum_variables,
    _plate_frames,
    _term_factor,
    _term_log_prob,
)

__all__ = ["TraceTMC_ELBO"]


def _dice(log_q: torch.Tensor) -> torch.Tensor:
    """Zero in value, the score function in gradient."""
    return log_q - log_q.detach()


class TraceTMC_ELBO(TraceEnum_ELBO):
    """Tensor Monte Carlo (Pyro's ``TraceTMC_ELBO``): ``-log`` of an importance estimate of
    the marginal likelihood that averages over every combination of parallel draws.

    Mark sites with ``config_enumerate(fn, "parallel", num_samples=n)`` (model or guide):
    each takes ``n`` draws, or its whole support without ``num_samples``. A model site
    that the guide samples must not be marked in the model. The plate-tree structures
    supported are those of ``TraceEnum_ELBO``; draws of one site may follow those of its
    marked parents (``tmc="diagonal"``: draw ``i`` uses the parents' draw ``i``;
    ``"mixture"``: a parent draw picked at random).
    """

    def _particle(self, model_trace: Trace, guide_trace: Trace):
        guide_sites = [
            (name, site)
            for name, site in guide_trace.nodes.items()
            if site.type == "sample" and not site.is_observed and _counts(site)
        ]
        sites = [
            (name, site)
            for name, site in model_trace.nodes.items()
            if site.type == "sample" and _counts(site)
        ]
        var_frames = {**_enum_variables(guide_sites), **_enum_variables(sites)}
        enum_dims = _enum_dims(guide_sites) | _enum_dims(sites)
        terms: list = []
        factors: list[tuple[str, torch.Tensor, tuple, frozenset]] = []
        residual_scales: dict[str, float] = {}

        def add(name: str, site: Message, log_f: torch.Tensor) -> None:
            factor = _term_factor("TraceTMC_ELBO", name, site, log_f, self._plate_dims, enum_dims)
            if factor is None:
                terms.append((log_f if _is_one(site.scale) else site.scale * log_f).sum())
            else:
                residual_scales[name] = self._residual_scale(name, site)
                factors.append((name, *factor, _plate_frames(site)))

        for name, site in guide_sites:
            if name not in model_trace.nodes:
                _warn_missing(name, site)
            log_q = site_log_prob(site)
            store_log_prob(site, log_q)
            num_samples = site.infer.get("num_samples")
            if "_enumerate_id" not in site.infer or num_samples is not None:
                # -log q, plus the DiCE factor log q - log q.detach() unless reparameterized
                # (and the 1/n average of n draws).
                log_f = -log_q if site.fn.has_rsample else -log_q.detach()
                add(name, site, log_f if num_samples is None else log_f - math.log(num_samples))
            # A support enumerated in the guide: -log q and its DiCE factor log q cancel.
        for name, site in sites:
            own = name not in guide_trace.nodes and not site.is_observed
            num_samples = site.infer.get("num_samples")
            if own and num_samples is not None and "_enumerate_id" in site.infer:
                # Drawn from the prior: p / q = 1, the DiCE factor and the 1/n average.
                log_p = site_log_prob(site)
                store_log_prob(site, log_p)
                log_f = log_p.new_zeros(()) if site.fn.has_rsample else _dice(log_p)
                add(name, site, log_f.expand(log_p.shape) - math.log(num_samples))
            elif own and "_enumerate_id" not in site.infer:
                # One draw from the prior: p / q = 1.
                log_p = site_log_prob(site)
                store_log_prob(site, log_p)
                if not site.fn.has_rsample:
                    add(name, site, _dice(log_p))
            else:
                log_p = _term_log_prob(site) if own else site_log_prob(site)
                store_log_prob(site, log_p)
                add(name, site, log_p)
        if factors:
            scale = self._common_scale(residual_scales)
            contracted = _contract(factors, var_frames)
            terms.append(contracted if scale == 1.0 else scale * contracted)
        elbo = _total(terms)
        return elbo, elbo


def _is_one(scale: Any) -> bool:
    return not isinstance(scale, torch.Tensor) and scale == 1.0
