"""``do``: interventions. A site named in ``data`` returns the given value downstream."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..runtime import Message, Messenger, apply_stack

__all__ = ["DoMessenger", "do"]


class DoMessenger(Messenger):
    """Intervene on sample sites: ``do(model, data={"z": value})``.

    The program continues with ``value`` where site ``z`` was drawn, as if the line read
    ``z = value``. The site itself is still sampled under its own name, from its own
    distribution, but its draw goes nowhere (the single-world intervention graph of
    Richardson and Robins); the intervened value is recorded inside this handler as the
    observed site ``z__CF``. Combined with ``condition`` this gives counterfactuals.
    """

    def __init__(self, fn: Callable | None = None, data: Mapping[str, Any] | None = None):
        super().__init__(fn)
        if not isinstance(data, Mapping):
            raise TypeError(
                f"do expects data, a dict of site name -> value, got {type(data).__name__}"
            )
        for name, value in data.items():
            if value is not None and not isinstance(value, (torch.Tensor, numbers.Number)):
                raise TypeError(
                    f"do: the intervention at site {name!r} must be a tensor or a number, "
                    f"got {type(value).__name__}"
                )
        self.data = data
        self._id = id(self)

    def _pyro_sample(self, msg: Message) -> None:
        value = self.data.get(msg.name)
        # The do handlers that already split this site: each splits it once (Pyro recurses
        # forever when two handlers intervene on one site; here the second one warns).
        done = msg.get("_interveners") or frozenset()
        if value is None or self._id in done:
            return
        if done:
            warnings.warn(
                f"site {msg.name!r} is intervened on by two do handlers; only the inner "
                f"intervention reaches the program",
                RuntimeWarning,
                stacklevel=2,
            )
        msg["_interveners"] = done | {self._id}
        # The fresh site: same name and distribution, through the whole stack again (the
        # plates inside this handler add their frames again, hence the empty stack).
        fresh = msg.copy()
        fresh.cond_indep_stack = ()
        apply_stack(fresh)
        msg.name = f"{msg.name}__CF"
        msg.value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
        msg.is_observed = True
        msg.stop = True


def do(fn: Callable | None = None, data: Mapping[str, Any] | None = None) -> DoMessenger:
    """Intervene on the sample sites named in ``data`` (see :class:`DoMessenger`)."""
    return DoMessenger(fn, data=data)
