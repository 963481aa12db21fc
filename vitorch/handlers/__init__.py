"""Effect handlers (also importable as ``vitorch.poutine``).

Each handler wraps a function (``trace(model).get_trace(*args)``) or is used as a context
manager (``with trace() as tr: model(*args)``).
"""

from ..runtime import Message, Messenger, am_i_wrapped, apply_stack
from .block import BlockMessenger, block
from .broadcast import BroadcastMessenger, broadcast
from .condition import ConditionMessenger, SubstituteMessenger, condition, substitute
from .do import DoMessenger, do
from .enum import EnumMessenger, enum
from .equalize import EqualizeMessenger, equalize
from .escape import EscapeMessenger, NonlocalExit, escape
from .guide import GuideMessenger
from .infer_config import InferConfigMessenger, infer_config
from .lift import LiftMessenger, lift
from .markov import MarkovMessenger, markov
from .plate import PlateMessenger
from .queue import queue
from .reparam import ReparamMessenger, reparam
from .replay import ReplayMessenger, replay
from .scale import MaskMessenger, ScaleMessenger, mask, scale
from .seed import SeedMessenger, seed
from .trace import Trace, TraceMessenger, trace
from .uncondition import UnconditionMessenger, uncondition

__all__ = [
    "BlockMessenger",
    "BroadcastMessenger",
    "ConditionMessenger",
    "DoMessenger",
    "EnumMessenger",
    "EqualizeMessenger",
    "EscapeMessenger",
    "GuideMessenger",
    "InferConfigMessenger",
    "LiftMessenger",
    "MarkovMessenger",
    "MaskMessenger",
    "Message",
    "Messenger",
    "NonlocalExit",
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
    "broadcast",
    "condition",
    "do",
    "enum",
    "equalize",
    "escape",
    "infer_config",
    "lift",
    "markov",
    "mask",
    "queue",
    "reparam",
    "replay",
    "scale",
    "seed",
    "substitute",
    "trace",
    "uncondition",
]
