"""Inference: ``SVI``, the ELBOs, ``Predictive`` and the autoguides (``vitorch.infer.autoguide``)."""

from .elbo import ELBO, NonFiniteLossError, Trace_ELBO, TraceMeanField_ELBO
from .svi import SVI

__all__ = ["ELBO", "NonFiniteLossError", "SVI", "TraceMeanField_ELBO", "Trace_ELBO"]
