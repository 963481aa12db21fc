"""``vitorch.poutine``: Pyro's name for the effect handlers (see :mod:`vitorch.handlers`).

The submodules ``messenger``, ``runtime``, ``trace_struct`` and ``util`` mirror Pyro's import
paths (``from pyro.poutine.messenger import Messenger``), and so do the per-handler modules
(``from vitorch.poutine.trace_messenger import TraceMessenger``), which are vitorch's
handler modules under Pyro's names.
"""

import sys as _sys

from .. import handlers
from .._aliases import alias_modules as _alias_modules
from ..distributions import enable_validation, is_validation_enabled  # one switch, as documented
from ..handlers import *  # noqa: F403
from ..handlers import __all__ as _handler_names
from . import messenger, runtime, trace_struct, util  # noqa: F401
from .runtime import get_mask, get_plates, unwrap

__all__ = [
    *_handler_names,
    "enable_validation",
    "get_mask",
    "get_plates",
    "handlers",
    "is_validation_enabled",
    "unwrap",
]

# ``pyro.poutine.handlers`` is the module of handler functions: vitorch.handlers here.
_sys.modules[__name__ + ".handlers"] = handlers

# Pyro's module name -> the vitorch handler module that defines those handlers.
_alias_modules(
    __name__,
    "vitorch.handlers",
    {
        "block_messenger": "block",
        "broadcast_messenger": "broadcast",
        "equalize_messenger": "equalize",
        "escape_messenger": "escape",
        "guide": "guide",
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
