"""The interpreter: the message record, the handler stack and ``apply_stack``.

A primitive (``sample``, ``param``, ...) builds a :class:`Message` and hands it to
:func:`apply_stack`. Handlers on the global stack see it innermost first
(``_process_message``) and may fill in its value, change its scale, or stop it from
travelling further out; then, if nothing has provided a value, the default behaviour runs
(draw from the distribution, read the parameter store); finally the handlers that saw it
get it back in the opposite order (``_postprocess_message``), which is where ``trace``
records it, because only then is the value final.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = [
    "Message",
    "Messenger",
    "apply_stack",
    "am_i_wrapped",
    "get_stack",
    "CondIndepStackFrame",
    "effectful",
]

# Outermost handler first; apply_stack walks it from the end.
_STACK: list[Messenger] = []


class CondIndepStackFrame:
    """One enclosing ``plate``: its name, tensor dim (None when sequential) and sizes."""

    __slots__ = ("name", "dim", "size", "counter", "full_size")

    def __init__(self, name: str, dim: int | None, size: int, counter: int, full_size: int):
        self.name = name
        self.dim = dim
        self.size = size
        self.counter = counter
        self.full_size = full_size

    @property
    def vectorized(self) -> bool:
        return self.dim is not None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CondIndepStackFrame)
            and self.name == other.name
            and self.dim == other.dim
            and self.counter == other.counter
        )

    def __hash__(self) -> int:
        return hash((self.name, self.dim, self.counter))

    def __repr__(self) -> str:
        return f"CondIndepStackFrame(name={self.name!r}, dim={self.dim}, size={self.size})"


class Message:
    """The record one primitive call sends through the handler stack.

    Fields (all handlers read and write these, nothing else):

    - ``type``: ``"sample"``, ``"param"`` or a custom effect name.
    - ``name``: the site name, unique within one run of a model.
    - ``fn``: the distribution (sample sites) or the callable producing the value.
    - ``args``, ``kwargs``: what ``fn`` is called with by the default behaviour.
    - ``value``: the result; ``None`` until a handler or the default behaviour sets it.
    - ``is_observed``: the value was given by the user (``obs=``) or by ``condition``.
    - ``infer``: per-site options for inference algorithms (a dict).
    - ``scale``: a multiplier of the site's log-density (plates, ``scale`` handler).
    - ``mask``: ``None`` or a bool tensor/bool switching log-density entries off.
    - ``cond_indep_stack``: the enclosing plates, innermost last.
    - ``done``: the value is final; the default behaviour is skipped.
    - ``stop``: handlers further out do not see the message.
    - ``continuation``: called with the message after the postprocess pass.
    - ``log_prob``, ``unscaled_log_prob``, ``log_prob_sum``: filled in by
      :meth:`vitorch.handlers.Trace.compute_log_prob`.

    Item access (``msg["value"]``) works as well, so code written against Pyro's
    dict-shaped messages keeps working. Unknown keys go to a small side dict.
    """

    __slots__ = (
        "type",
        "name",
        "fn",
        "args",
        "kwargs",
        "value",
        "is_observed",
        "infer",
        "scale",
        "mask",
        "cond_indep_stack",
        "done",
        "stop",
        "continuation",
        "log_prob",
        "unscaled_log_prob",
        "log_prob_sum",
        "_extra",
    )

    def __init__(
        self,
        type: str,
        name: str | None,
        fn: Any,
        args: tuple = (),
        kwargs: dict | None = None,
        value: Any = None,
        is_observed: bool = False,
        infer: dict | None = None,
    ):
        self.type = type
        self.name = name
        self.fn = fn
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.value = value
        self.is_observed = is_observed
        self.infer = infer if infer is not None else {}
        self.scale = 1.0
        self.mask = None
        self.cond_indep_stack: tuple[CondIndepStackFrame, ...] = ()
        self.done = False
        self.stop = False
        self.continuation = None
        self.log_prob = None
        self.unscaled_log_prob = None
        self.log_prob_sum = None
        self._extra: dict | None = None

    # -- dict-style access, for code written against Pyro's messages --------------
    def __getitem__(self, key: str) -> Any:
        if key in Message.__slots__:
            return getattr(self, key)
        if self._extra is not None and key in self._extra:
            return self._extra[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in Message.__slots__:
            setattr(self, key, value)
        else:
            if self._extra is None:
                self._extra = {}
            self._extra[key] = value

    def __contains__(self, key: str) -> bool:
        if key in ("log_prob", "unscaled_log_prob", "log_prob_sum"):
            return getattr(self, key) is not None
        if key in Message.__slots__:
            return True
        return self._extra is not None and key in self._extra

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None and key not in ("value",) else value

    def keys(self):
        keys = [k for k in Message.__slots__ if k != "_extra" and k in self]
        return keys + list(self._extra or ())

    def copy(self) -> Message:
        new = Message.__new__(Message)
        for k in Message.__slots__:
            setattr(new, k, getattr(self, k))
        new.infer = dict(self.infer)
        if self._extra is not None:
            new._extra = dict(self._extra)
        return new

    def __repr__(self) -> str:
        return f"Message(type={self.type!r}, name={self.name!r}, value={self.value!r})"


class Messenger:
    """Base class of effect handlers.

    A handler is used as a context manager (``with trace() as tr: ...``) or wraps a
    function (``trace(model)``). Subclasses react to a message type ``T`` by defining
    ``_pyro_T(msg)`` (before the value exists) and/or ``_pyro_post_T(msg)`` (after).
    The per-class dispatch tables are built once, at class creation, so that the hot
    path does a dict lookup rather than a ``getattr`` on a formatted string.
    """

    _process_table: dict[str, Callable] = {}
    _postprocess_table: dict[str, Callable] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        process, post = {}, {}
        for attr in dir(cls):
            if attr.startswith("_pyro_post_"):
                post[attr[len("_pyro_post_") :]] = getattr(cls, attr)
            elif attr.startswith("_pyro_"):
                process[attr[len("_pyro_") :]] = getattr(cls, attr)
        cls._process_table = process
        cls._postprocess_table = post

    def __init__(self, fn: Callable | None = None):
        if fn is not None and not callable(fn):
            raise TypeError(
                f"{type(self).__name__} expects a callable to wrap (or nothing, to be "
                f"used as a context manager), got {type(fn).__name__}"
            )
        self.fn = fn
        if fn is not None:
            functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            # handler(...)(fn) form: wrap a function given later.
            if len(args) == 1 and not kwargs and callable(args[0]):
                self.fn = args[0]
                functools.update_wrapper(self, args[0], updated=())
                return self
            raise TypeError(f"{type(self).__name__} has no function to call")
        with self:
            return self.fn(*args, **kwargs)

    def __enter__(self) -> Messenger:
        _STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        # Remove this handler even when the stack is unbalanced by an exception deeper in.
        if _STACK and _STACK[-1] is self:
            _STACK.pop()
        else:
            for i in range(len(_STACK) - 1, -1, -1):
                if _STACK[i] is self:
                    del _STACK[i:]
                    break

    def _reset(self) -> None:
        """Forget what this run recorded (a run abandoned by ``NonlocalExit`` restarts)."""

    def _process_message(self, msg: Message) -> None:
        handler = self._process_table.get(msg.type)
        if handler is not None:
            handler(self, msg)

    def _postprocess_message(self, msg: Message) -> None:
        handler = self._postprocess_table.get(msg.type)
        if handler is not None:
            handler(self, msg)


def default_process_message(msg: Message) -> None:
    """What happens to a message that no handler has finished: draw, or call its ``fn``."""
    if msg.done or msg.value is not None:
        msg.done = True
        return
    fn = msg.fn
    if msg.type == "sample":
        # torch's own distributions are not callable; draw the way Pyro's __call__ does.
        draw = fn.rsample if fn.has_rsample else fn.sample
        msg.value = draw(*msg.args, **msg.kwargs)
    else:
        msg.value = fn(*msg.args, **msg.kwargs)
    msg.done = True


def apply_stack(msg: Message) -> Message:
    """Send ``msg`` through the handler stack and return it with its value set."""
    stack = _STACK
    # Innermost first; `first` ends as the index of the outermost handler that saw it.
    first = len(stack)
    for handler in reversed(stack):
        first -= 1
        handler._process_message(msg)
        if msg.stop:
            break
    default_process_message(msg)
    for handler in stack[first:]:
        handler._postprocess_message(msg)
    if msg.continuation is not None:
        msg.continuation(msg)
    return msg


def am_i_wrapped() -> bool:
    """True when at least one handler is active."""
    return bool(_STACK)


def get_stack() -> list[Messenger]:
    """The active handlers, outermost first (the list itself; do not mutate)."""
    return _STACK


def effectful(fn: Callable | None = None, *, type: str | None = None) -> Callable:
    """Turn ``fn`` into a primitive whose calls go through the handler stack as ``type``."""
    if fn is None:
        return functools.partial(effectful, type=type)

    @functools.wraps(fn)
    def wrapper(*args: Any, name: str | None = None, infer: dict | None = None, **kwargs: Any):
        if not _STACK:
            return fn(*args, **kwargs)
        msg = Message(type or fn.__name__, name, fn, args, kwargs, infer=infer)
        return apply_stack(msg).value

    return wrapper
