"""Optimizers for SVI with Pyro's ``pyro.optim`` interface.

``vitorch.optim.Adam({"lr": 0.01})`` (and every other ``torch.optim`` optimizer, plus
:class:`ClippedAdam`) wraps a torch optimizer so that it can be called with whatever
parameters a step produced; ``vitorch.optim.ExponentialLR({...})`` and the other
``torch.optim.lr_scheduler`` classes do the same with a learning-rate schedule.
"""

from . import lr_scheduler as _lr_scheduler
from . import optim as _optim
from .lr_scheduler import *  # noqa: F403
from .lr_scheduler import PyroLRScheduler as PyroLRScheduler
from .optim import *  # noqa: F403
from .optim import ClippedAdam as ClippedAdam
from .optim import PyroOptim as PyroOptim

__all__ = sorted(set(_optim.__all__) | set(_lr_scheduler.__all__))

del _optim, _lr_scheduler
