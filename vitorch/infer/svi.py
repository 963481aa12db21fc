"""Stochastic variational inference: ``SVI(model, guide, optim, loss)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..handlers.trace import TraceMessenger
from ..params import _PARAM_STORE, record_params, touched_params
from .elbo import ELBO

__all__ = ["SVI"]


class SVI:
    """Fit ``guide`` to ``model`` by following gradients of ``loss`` with ``optim``.

    ``step(*args, **kwargs)`` takes one gradient step and returns the loss as a float.
    ``loss`` is an ELBO (``Trace_ELBO()``, ``TraceMeanField_ELBO()``) or any callable
    ``loss(model, guide, *args, **kwargs) -> tensor``.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: Any,
        loss: ELBO | Callable,
        loss_and_grads: Callable | None = None,
        num_samples: int = 0,
        num_steps: int = 0,
        **kwargs: Any,
    ):
        if not callable(model):
            raise TypeError(f"SVI: model must be callable, got {type(model).__name__}")
        if not callable(guide):
            raise TypeError(f"SVI: guide must be callable, got {type(guide).__name__}")
        if isinstance(optim, torch.optim.Optimizer) or (
            isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer)
        ):
            raise TypeError(
                "SVI: optim must be a vitorch optimizer such as vitorch.optim.Adam({'lr': 1e-3}), "
                f"got the torch optimizer {optim!r}; vitorch creates the torch optimizer "
                "itself as parameters appear"
            )
        if not callable(optim):
            raise TypeError(
                f"SVI: optim must be a vitorch.optim optimizer, got {type(optim).__name__}"
            )
        if not (isinstance(loss, ELBO) or callable(loss)):
            raise TypeError(
                f"SVI: loss must be an ELBO such as Trace_ELBO() or a callable, got {type(loss).__name__}"
            )
        self.model = model
        self.guide = guide
        self.optim = optim
        # As in Pyro, ``svi.loss`` is the loss *function* ``loss(model, guide, *args)``
        # (an ELBO's ``.loss``, returning a float); the objective object is kept apart.
        self.elbo = loss
        self.loss = loss.loss if isinstance(loss, ELBO) else loss
        self._loss_and_grads = loss_and_grads
        self.loss_and_grads = (
            loss_and_grads
            if loss_and_grads is not None
            else loss.loss_and_grads
            if isinstance(loss, ELBO)
            else _backward_of(loss)
        )
        self.num_steps = num_steps
        self._last_params: dict[str, torch.Tensor] = {}

    def _compute(self, args, kwargs) -> tuple[float, dict[str, torch.Tensor]]:
        """Loss value and the unconstrained params it touched, with gradients populated."""
        loss = self.elbo
        if self._loss_and_grads is None and isinstance(loss, ELBO):
            surrogate, value, found = loss._loss_and_params(self.model, self.guide, args, kwargs)
            params = touched_params(found)
            if isinstance(surrogate, torch.Tensor) and surrogate.requires_grad:
                surrogate.backward(retain_graph=loss.retain_graph)
            return value, params
        # A user-supplied loss: record which params it reads with a param-only trace.
        with TraceMessenger(param_only=True) as tracer:
            if self._loss_and_grads is not None:
                value = self._loss_and_grads(self.model, self.guide, *args, **kwargs)
            else:
                out = loss(self.model, self.guide, *args, **kwargs)
                out.backward()
                value = out.detach()
        found: dict[str, Any] = {}
        record_params(found, tracer.trace)
        params = touched_params(found)
        return float(value), params

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One gradient step; returns the loss (the negative ELBO estimate)."""
        try:
            value, params = self._compute(args, kwargs)
        except BaseException:
            # A failed step must not leave half-accumulated gradients behind (module-local
            # parameters are not in the store: clear those the last step touched too).
            _clear_grads(_PARAM_STORE._params.values())
            _clear_grads(self._last_params.values())
            raise
        self._update(params)
        self._last_params = params
        return value

    def _update(self, params: dict[str, torch.Tensor]) -> None:
        """Step the optimizer on ``params`` (their gradients are set), then drop the gradients."""
        step_named = getattr(self.optim, "step_named", None)
        if step_named is not None:
            step_named(params)
        else:
            self.optim(list(params.values()))
        _clear_grads(params.values())

    def run(self, num_steps: int, *args: Any, **kwargs: Any):
        """Run ``num_steps`` steps with progress, convergence checks and checkpoints.

        See :func:`vitorch.infer.run.run_svi` for the options.
        """
        from .run import run_svi

        return run_svi(self, num_steps, *args, **kwargs)

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> float:
        """The loss at the current parameters, without taking a step."""
        with torch.no_grad():
            if isinstance(self.elbo, ELBO):
                return self.elbo.loss(self.model, self.guide, *args, **kwargs)
            return float(self.elbo(self.model, self.guide, *args, **kwargs))


def _backward_of(loss: Callable) -> Callable:
    """Pyro's ``svi.loss_and_grads`` for a plain loss callable: evaluate, backpropagate."""

    def loss_and_grads(*args: Any, **kwargs: Any) -> Any:
        value = loss(*args, **kwargs)
        if getattr(value, "requires_grad", False):
            value.backward(retain_graph=True)
        return value

    return loss_and_grads


def _clear_grads(params: Any) -> None:
    for p in params:
        p.grad = None
