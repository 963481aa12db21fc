"""Neural networks in models and guides: ``PyroModule``, ``PyroParam``, ``PyroSample``,
and ``AutoRegressiveNN`` (the masked network of autoregressive flows)."""

from .auto_reg_nn import AutoRegressiveNN
from .module import PyroModule, PyroParam, PyroSample, to_pyro_module_

__all__ = ["AutoRegressiveNN", "PyroModule", "PyroParam", "PyroSample", "to_pyro_module_"]
