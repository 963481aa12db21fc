"""``vitorch.poutine``: Pyro's name for the effect handlers (see :mod:`vitorch.handlers`).

The submodules ``messenger``, ``runtime`` and ``trace_struct`` mirror Pyro's import paths
(``from pyro.poutine.messenger import Messenger``).
"""

from ..handlers import *  # noqa: F403
from ..handlers import __all__  # noqa: F401
from . import messenger, runtime, trace_struct  # noqa: F401
