"""Inference: ``SVI``, the ELBOs, ``Predictive`` and the autoguides (``vitorch.infer.autoguide``)."""

from .elbo import ELBO, NonFiniteLossError, Trace_ELBO, TraceMeanField_ELBO
from .predictive import Predictive
from .summary import summary as summary
from .svi import SVI

__all__ = ["ELBO", "NonFiniteLossError", "Predictive", "SVI", "TraceMeanField_ELBO", "Trace_ELBO"]
