"""``vitorch.poutine``: Pyro's name for the effect handlers (see :mod:`vitorch.handlers`)."""

from .handlers import *  # noqa: F403
from .handlers import __all__  # noqa: F401
