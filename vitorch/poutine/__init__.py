"""``vitorch.poutine``: Pyro's name for the effect handlers (see :mod:`vitorch.handlers`).

The submodules ``messenger``, ``runtime``, ``trace_struct`` and ``util`` mirror Pyro's import
paths (``from pyro.poutine.messenger import Messenger``), and so do the per-handler modules
(``from vitorch.poutine.trace_messenger import TraceMessenger``), which are vitorch's
handler modules under Pyro's names.
"""

from .._aliases import alias_modules as _alias_modules
from ..handlers import *  # noqa: F403
from ..handlers import __all__  # noqa: F401
from . import messenger, runtime, trace_struct, util  # noqa: F401

# Pyro's module name -> the vitorch handler module that defines those handlers.
_alias_modules(
    __name__,
    "vitorch.handlers",
    {
        "block_messenger": "block",
        "condition_messenger": "condition",
        "substitute_messenger": "condition",
        "do_messenger": "do",
        "enum_messenger": "enum",
        "infer_config_messenger": "infer_config",
        "lift_messenger": "lift",
        "markov_messenger": "markov",
        "plate_messenger": "plate",
        "reparam_messenger": "reparam",
        "replay_messenger": "replay",
        "scale_messenger": "scale",
        "mask_messenger": "scale",
        "seed_messenger": "seed",
        "trace_messenger": "trace",
        "uncondition_messenger": "uncondition",
    },
)
