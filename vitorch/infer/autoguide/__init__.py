"""Automatic guides: build a guide from the model (``AutoNormal(model)``).

- :class:`AutoNormal`, :class:`AutoDelta`: one distribution per latent site.
- :class:`AutoDiagonalNormal`, :class:`AutoMultivariateNormal`,
  :class:`AutoLowRankMultivariateNormal`: one Normal over all latent sites, flattened.
- :class:`AutoNormalMessenger`, :class:`AutoHierarchicalNormalMessenger`,
  :class:`AutoRegressiveMessenger`: guides that run the model itself and replace each latent
  site's prior (evaluated at the upstream draws) with a learned posterior.
- :class:`AutoIAFNormal`, :class:`AutoNormalizingFlow`: a Normal pushed through flows.
- :class:`AutoStructured`: per-site conditionals (delta, normal, mvn) with linear
  dependencies between sites; :class:`AutoGaussian`: a Gaussian with the model's
  conditional-independence structure (dense backend).
- :class:`AutoLaplaceApproximation`: MAP over the latent vector, then a Gaussian with the
  inverse Hessian as covariance (``laplace_approximation()``).
- :class:`AutoGuideList`: several guides over disjoint sites of one model.
- Initialization strategies (``init_to_median`` ...), also in
  :mod:`vitorch.infer.autoguide.initialization`.
"""

from .base import AutoCallable, AutoGuide, AutoGuideList
from .continuous import (
    AutoContinuous,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from .effect import (
    AutoHierarchicalNormalMessenger,
    AutoMessenger,
    AutoNormalMessenger,
    AutoRegressiveMessenger,
)
from .flow import AutoNormalizingFlow
from .gaussian import AutoGaussian
from .iaf import AutoIAFNormal
from .initialization import (
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from .laplace import AutoLaplaceApproximation
from .normal import AutoDelta, AutoNormal
from .structured import AutoStructured

__all__ = [
    "AutoNormalizingFlow",
    "AutoGaussian",
    "AutoStructured",
    "AutoCallable",
    "AutoContinuous",
    "AutoDelta",
    "AutoDiagonalNormal",
    "AutoGuide",
    "AutoGuideList",
    "AutoHierarchicalNormalMessenger",
    "AutoIAFNormal",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMessenger",
    "AutoMultivariateNormal",
    "AutoNormal",
    "AutoNormalMessenger",
    "AutoRegressiveMessenger",
    "init_to_feasible",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
]
