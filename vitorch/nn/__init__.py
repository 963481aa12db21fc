"""Neural networks in models and guides: ``PyroModule``, ``PyroParam``, ``PyroSample``,
and the networks of flows (``AutoRegressiveNN``, ``DenseNN`` and their conditional kinds)."""

from .auto_reg_nn import AutoRegressiveNN
from .dense_nn import ConditionalAutoRegressiveNN, ConditionalDenseNN, DenseNN
from .module import PyroModule, PyroParam, PyroSample, to_pyro_module_

__all__ = [
    "AutoRegressiveNN",
    "ConditionalAutoRegressiveNN",
    "ConditionalDenseNN",
    "DenseNN",
    "PyroModule",
    "PyroParam",
    "PyroSample",
    "to_pyro_module_",
]
