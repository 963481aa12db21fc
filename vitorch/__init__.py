"""vitorch: variational inference with Pyro's programming model, on PyTorch.

>>> import torch, vitorch
>>> import vitorch.distributions as dist
>>> def model(data):
...     loc = vitorch.sample("loc", dist.Normal(0.0, 10.0))
...     with vitorch.plate("data", len(data)):
...         vitorch.sample("obs", dist.Normal(loc, 1.0), obs=data)
"""

from . import distributions, handlers, infer, nn, ops, optim, poutine, settings, util
from .distributions import enable_validation, is_validation_enabled, validation_enabled
from .handlers import condition, do, markov
from .handlers.seed import set_rng_seed
from .infer.inspect import render_model
from .params import clear_param_store, get_param_store
from .primitives import (
    barrier,
    deterministic,
    factor,
    iarange,
    irange,
    module,
    param,
    plate,
    plate_stack,
    random_module,
    sample,
    subsample,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "barrier",
    "clear_param_store",
    "condition",
    "deterministic",
    "do",
    "distributions",
    "enable_validation",
    "factor",
    "get_param_store",
    "handlers",
    "iarange",
    "infer",
    "irange",
    "is_validation_enabled",
    "markov",
    "module",
    "nn",
    "ops",
    "optim",
    "param",
    "plate",
    "plate_stack",
    "poutine",
    "random_module",
    "render_model",
    "sample",
    "set_rng_seed",
    "settings",
    "subsample",
    "util",
    "validation_enabled",
]
