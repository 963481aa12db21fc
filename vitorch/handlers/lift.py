"""``lift``: turn ``param`` statements into ``sample`` statements from a prior."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from torch.distributions import Distribution

from ..params import user_param_name
from ..runtime import Message, Messenger

__all__ = ["LiftMessenger", "lift"]


class LiftMessenger(Messenger):
    """Each ``param`` site becomes a ``sample`` site drawn from ``prior``.

    ``prior`` is one distribution for every param, or a dict from parameter name (for a
    module's parameters, the dotted path inside the module, as in ``"linear.weight"``) to
    a distribution; params not in the dict stay params. The same param read twice in one
    run gives the same draw.
    """

    def __init__(
        self, fn: Callable | None = None, prior: Distribution | Mapping[str, Any] | None = None
    ):
        super().__init__(fn)
        if isinstance(prior, Mapping):
            for key, value in prior.items():
                if not isinstance(value, Distribution):
                    raise TypeError(
                        f"lift: the prior for {key!r} must be a distribution, got "
                        f"{type(value).__name__}"
                    )
        elif not isinstance(prior, Distribution):
            raise TypeError(
                f"lift expects prior, a distribution or a dict of name -> distribution, got "
                f"{type(prior).__name__}"
            )
        self.prior = prior
        self._draws: dict[str, Any] = {}
        self._used: set[str] = set()

    def __enter__(self) -> LiftMessenger:
        self._draws = {}
        self._used = set()
        return super().__enter__()  # type: ignore[return-value]

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if exc[0] is None and isinstance(self.prior, Mapping):
            unused = sorted(set(self.prior) - self._used)
            if unused:
                warnings.warn(
                    f"lift: no param named {unused} was read; the priors for them were not used",
                    UserWarning,
                    stacklevel=2,
                )

    def _pyro_param(self, msg: Message) -> None:
        name = user_param_name(msg.name)  # type: ignore[arg-type]
        if isinstance(self.prior, Mapping):
            fn = self.prior.get(name)
            if fn is None:
                return
            self._used.add(name)
        else:
            fn = self.prior
        msg.type = "sample"
        msg.fn = fn
        msg.args = ()
        msg.kwargs = {}
        msg.infer = {}
        earlier = self._draws.get(msg.name)  # type: ignore[arg-type]
        if earlier is not None:
            # Read again in the same run: the same value, not a second random variable.
            msg.value = earlier.value
            msg.is_observed = True
            msg.stop = True
            return
        msg.value = None  # module() sends its tensor along; a draw replaces it
        msg.done = False
        msg.is_observed = False
        self._draws[msg.name] = msg  # type: ignore[index]


def lift(
    fn: Callable | None = None, prior: Distribution | Mapping[str, Any] | None = None
) -> LiftMessenger:
    """Replace the ``param`` statements of ``fn`` by draws from ``prior``."""
    return LiftMessenger(fn, prior=prior)
