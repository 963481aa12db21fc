"""Non-reparameterized versions of reparameterizable families (Pyro's ``testing.fakes``).

The same distributions with ``has_rsample = False``: a site drawn from one gets a
score-function gradient instead of a pathwise one, which is how tutorials demonstrate
baselines and ``TraceGraph_ELBO`` on models that would otherwise not need them.
"""

from __future__ import annotations

from ..torch import Beta, Dirichlet, Gamma, Normal

__all__ = [
    "NonreparameterizedBeta",
    "NonreparameterizedDirichlet",
    "NonreparameterizedGamma",
    "NonreparameterizedNormal",
]


class NonreparameterizedBeta(Beta):
    has_rsample = False


class NonreparameterizedDirichlet(Dirichlet):
    has_rsample = False


class NonreparameterizedGamma(Gamma):
    has_rsample = False


class NonreparameterizedNormal(Normal):
    has_rsample = False
