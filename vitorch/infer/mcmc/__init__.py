"""Pyro's ``pyro.infer.mcmc`` path, for the sample summaries VI code imports from it.

vitorch is a variational-inference library: it has no MCMC kernels. ``util.summary`` and
``util.print_summary`` (mean, std, median, credible interval, n_eff, r_hat of posterior
samples) work on any samples, e.g. a guide's or ``Predictive``'s.
"""

from . import util
from .util import print_summary, summary

__all__ = ["print_summary", "summary", "util"]

_MCMC_NAMES = {"MCMC", "NUTS", "HMC", "RandomWalkKernel", "BlockMassMatrix", "ArrowheadMassMatrix"}


def __getattr__(name: str):
    if name in _MCMC_NAMES:
        raise ImportError(
            f"vitorch.infer.mcmc.{name}: vitorch has no MCMC (it implements Pyro's variational "
            f"inference); fit a guide with SVI, or run MCMC with pyro-ppl or numpyro"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
