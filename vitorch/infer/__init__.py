"""Inference: ``SVI``, the ELBOs, ``Predictive`` and the autoguides (``vitorch.infer.autoguide``)."""

from .distributed import DistributedSVI, shard
from .elbo import (
    ELBO,
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    NonFiniteLossError,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from .predictive import Predictive
from .summary import summary
from .svi import SVI

__all__ = [
    "DistributedSVI",
    "ELBO",
    "JitTraceMeanField_ELBO",
    "JitTrace_ELBO",
    "NonFiniteLossError",
    "Predictive",
    "SVI",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "shard",
    "summary",
]
