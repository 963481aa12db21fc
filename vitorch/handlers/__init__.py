"""Effect handlers (also importable as ``vitorch.poutine``).

Each handler wraps a function (``trace(model).get_trace(*args)``) or is used as a context
manager (``with trace() as tr: model(*args)``).
"""

from ..runtime import Message, Messenger, am_i_wrapped, apply_stack
from .block import BlockMessenger, block
from .condition import ConditionMessenger, SubstituteMessenger, condition, substitute
from .do import DoMessenger, do
from .enum import EnumMessenger, enum
from .infer_config import InferConfigMessenger, infer_config
from .lift import LiftMessenger, lift
from .markov import MarkovMessenger, markov
from .plate import PlateMessenger
from .reparam import ReparamMessenger, reparam
from .replay import ReplayMessenger, replay
from .scale import MaskMessenger, ScaleMessenger, mask, scale
from .seed import SeedMessenger, seed
from .trace import Trace, TraceMessenger, trace
from .uncondition import UnconditionMessenger, uncondition

__all__ = [
    "BlockMessenger",
    "ConditionMessenger",
    "DoMessenger",
    "EnumMessenger",
    "InferConfigMessenger",
    "LiftMessenger",
    "MarkovMessenger",
    "MaskMessenger",
    "Message",
    "Messenger",
    "PlateMessenger",
    "ReparamMessenger",
    "ReplayMessenger",
    "ScaleMessenger",
    "SeedMessenger",
    "SubstituteMessenger",
    "Trace",
    "TraceMessenger",
    "UnconditionMessenger",
    "am_i_wrapped",
    "apply_stack",
    "block",
    "condition",
    "do",
    "enum",
    "infer_config",
    "lift",
    "markov",
    "mask",
    "reparam",
    "replay",
    "scale",
    "seed",
    "substitute",
    "trace",
    "uncondition",
]
