"""Pyro's import path for the interpreter pieces."""

from ..runtime import CondIndepStackFrame, Message, am_i_wrapped, apply_stack, effectful, get_stack

__all__ = [
    "CondIndepStackFrame",
    "Message",
    "am_i_wrapped",
    "apply_stack",
    "effectful",
    "get_stack",
]
