"""Inference: ``SVI`` (and ``DistributedSVI``), the ELBOs, ``Predictive`` and the autoguides
(``vitorch.infer.autoguide``)."""

from ..distributions import enable_validation, is_validation_enabled
from . import reparam  # noqa: F401  (vitorch.infer.reparam.LocScaleReparam, ...)
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
from .traceenum_elbo import JitTraceEnum_ELBO, TraceEnum_ELBO, config_enumerate
from .tracegraph_elbo import JitTraceGraph_ELBO, TraceGraph_ELBO

__all__ = [
    "DistributedSVI",
    "ELBO",
    "JitTraceEnum_ELBO",
    "JitTraceGraph_ELBO",
    "JitTraceMeanField_ELBO",
    "JitTrace_ELBO",
    "NonFiniteLossError",
    "Predictive",
    "SVI",
    "TraceEnum_ELBO",
    "TraceGraph_ELBO",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "config_enumerate",
    "enable_validation",
    "is_validation_enabled",
    "shard",
    "summary",
]
