"""The step-size sequence of ADVI (Kucukelbir et al. 2017, eqs. 10-11).

A running average of squared gradients (RMSProp-like, weight ``t`` on the newest; the first
step starts it at ``g^2``) scales a step that decays like Adagrad's, ``eta * k^(-1/2 +
delta)`` at step ``k``::

    s_k = t g_k^2 + (1 - t) s_{k-1},        x_{k+1} = x_k - eta k^(-1/2+delta) g_k / (1 + sqrt(s_k))

This is the ``torch.optim.Optimizer`` behind :func:`vitorch.optim.AdagradRMSProp`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["AdagradRMSProp"]


class AdagradRMSProp(Optimizer):
    """ADVI's adaptive step size: RMSProp's gradient scale with Adagrad's decay.

    :param params: tensors (or parameter-group dicts) to optimize.
    :param eta: scale of the step, ``> 0``.
    :param delta: the step decays like ``k^(-1/2 + delta)``; ``>= 0`` and below 1/2.
    :param t: weight of the newest squared gradient in the running average, in ``(0, 1]``.
    """

    def __init__(
        self, params: Iterable[Any], eta: float = 1.0, delta: float = 1.0e-16, t: float = 0.1
    ) -> None:
        for name, value, ok, expected in (
            ("eta", eta, lambda v: v > 0, "> 0"),
            ("delta", delta, lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
            ("t", t, lambda v: 0 < v <= 1, "in (0, 1]"),
        ):
            if isinstance(value, bool) or not isinstance(value, Real) or not ok(value):
                raise ValueError(
                    f"AdagradRMSProp: {name} must be a number {expected}, got {value!r}"
                )
        super().__init__(params, {"eta": float(eta), "delta": float(delta), "t": float(t)})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            eta, delta, t = group["eta"], group["delta"], group["t"]
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise ValueError("AdagradRMSProp does not support sparse gradients")
                state = self.state[p]
                k = state["step"] = state.get("step", 0) + 1
                if k == 1:
                    state["sum"] = grad * grad
                else:
                    state["sum"].mul_(1.0 - t).addcmul_(grad, grad, value=t)
                step_size = eta * k ** (-0.5 + delta)
                p.addcdiv_(grad, state["sum"].sqrt().add_(1.0), value=-step_size)
        return loss
