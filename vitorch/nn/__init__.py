"""Neural networks in models and guides: ``PyroModule``, ``PyroParam``, ``PyroSample``."""

from .module import PyroModule, PyroParam, PyroSample, to_pyro_module_

__all__ = ["PyroModule", "PyroParam", "PyroSample", "to_pyro_module_"]
