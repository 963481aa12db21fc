"""Inference: ``SVI`` (and ``DistributedSVI``), the ELBOs, ``Predictive`` and the autoguides
(``vitorch.infer.autoguide``)."""

from .._aliases import alias_modules as _alias_modules
from ..distributions import enable_validation, is_validation_enabled
from . import (
    inspect,  # noqa: F401  (vitorch.infer.inspect.get_dependencies, ...)
    reparam,  # noqa: F401  (vitorch.infer.reparam.LocScaleReparam, ...)
)
from .csis import CSIS
from .discrete import infer_discrete
from .distributed import DistributedSVI, shard
from .elbo import (
    ELBO,
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    NonFiniteLossError,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from .energy_distance import EnergyDistance
from .importance import EmpiricalMarginal, Importance, TracePosterior
from .predictive import MHResampler, Predictive, WeighedPredictive, WeighedPredictiveResults
from .renyi_elbo import RenyiELBO
from .rws import ReweightedWakeSleep
from .summary import summary
from .svgd import SVGD, IMQSteinKernel, RBFSteinKernel
from .svi import SVI
from .tail_adaptive_elbo import TraceTailAdaptive_ELBO
from .trace_mmd import Trace_MMD
from .traceenum_elbo import JitTraceEnum_ELBO, TraceEnum_ELBO, config_enumerate
from .tracegraph_elbo import JitTraceGraph_ELBO, TraceGraph_ELBO
from .tracetmc_elbo import TraceTMC_ELBO

__all__ = [
    "DistributedSVI",
    "ELBO",
    "EmpiricalMarginal",
    "Importance",
    "JitTraceEnum_ELBO",
    "JitTraceGraph_ELBO",
    "JitTraceMeanField_ELBO",
    "JitTrace_ELBO",
    "NonFiniteLossError",
    "MHResampler",
    "infer_discrete",
    "Predictive",
    "WeighedPredictive",
    "WeighedPredictiveResults",
    "RenyiELBO",
    "IMQSteinKernel",
    "RBFSteinKernel",
    "SVGD",
    "CSIS",
    "EnergyDistance",
    "ReweightedWakeSleep",
    "Trace_MMD",
    "TraceTMC_ELBO",
    "SVI",
    "TraceEnum_ELBO",
    "TraceGraph_ELBO",
    "TraceMeanField_ELBO",
    "TracePosterior",
    "TraceTailAdaptive_ELBO",
    "Trace_ELBO",
    "config_enumerate",
    "enable_validation",
    "is_validation_enabled",
    "shard",
    "summary",
]


# Pyro's module names inside pyro.infer that code imports from directly.
_alias_modules(
    __name__,
    __name__,
    {
        "trace_elbo": "elbo",
        "trace_mean_field_elbo": "elbo",
        "trace_tail_adaptive_elbo": "tail_adaptive_elbo",
        "abstract_infer": "importance",
        "enum": "traceenum_elbo",
    },
)
