"""Adam with elementwise gradient clipping and a per-step learning-rate decay.

This is the ``torch.optim.Optimizer`` behind :func:`vitorch.optim.ClippedAdam`. Each
gradient is clamped to ``[-clip_norm, clip_norm]`` (in place, as Pyro does), then an Adam
update is applied with learning rate ``lr``, which is first multiplied by ``lrd`` at every
call of :meth:`ClippedAdam.step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["ClippedAdam"]


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"ClippedAdam: argument {name!r} must be a number, got {value!r}")
    return float(value)


class ClippedAdam(Optimizer):
    """Adam whose gradients are clamped elementwise and whose learning rate decays.

    :param params: tensors (or parameter-group dicts) to optimize.
    :param lr: learning rate (before decay); ``>= 0``.
    :param betas: decay rates of the first and second moment averages, each in ``[0, 1)``.
    :param eps: added to the root of the second moment for stability; ``>= 0``.
    :param weight_decay: L2 penalty added to the (clamped) gradient; ``>= 0``.
    :param clip_norm: gradients are clamped to ``[-clip_norm, clip_norm]``; ``> 0``.
    :param lrd: factor applied to ``lr`` at every step (``lr_t = lr * lrd ** t``); ``> 0``.
    :param centered_variance: use the variance of the gradient around its running mean
        instead of its raw second moment.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float = 10.0,
        lrd: float = 1.0,
        centered_variance: bool = False,
    ) -> None:
        if not isinstance(lr, torch.Tensor) and _check_number("lr", lr) < 0:
            raise ValueError(f"ClippedAdam: argument 'lr' must be >= 0, got {lr}")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(
                f"ClippedAdam: argument 'betas' must be a pair of numbers, got {betas!r}"
            )
        for i, b in enumerate(betas):
            if not 0.0 <= _check_number("betas", b) < 1.0:
                raise ValueError(f"ClippedAdam: betas[{i}] must be in [0, 1), got {b}")
        if _check_number("eps", eps) < 0:
            raise ValueError(f"ClippedAdam: argument 'eps' must be >= 0, got {eps}")
        if _check_number("weight_decay", weight_decay) < 0:
            raise ValueError(
                f"ClippedAdam: argument 'weight_decay' must be >= 0, got {weight_decay}"
            )
        if not _check_number("clip_norm", clip_norm) > 0:
            raise ValueError(f"ClippedAdam: argument 'clip_norm' must be > 0, got {clip_norm}")
        if not _check_number("lrd", lrd) > 0:
            raise ValueError(f"ClippedAdam: argument 'lrd' must be > 0, got {lrd}")
        if not isinstance(centered_variance, bool):
            raise TypeError(
                f"ClippedAdam: argument 'centered_variance' must be a bool, got {centered_variance!r}"
            )
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            clip_norm=clip_norm,
            lrd=lrd,
            centered_variance=centered_variance,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Clamp the gradients, decay the learning rate and apply one Adam update.

        Parameters whose ``.grad`` is None are left alone (their step count included).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Decay first, as Pyro does: the t-th update uses lr * lrd ** t.
            group["lr"] *= group["lrd"]
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            exp_avgs: list[torch.Tensor] = []
            exp_avg_sqs: list[torch.Tensor] = []
            step_sizes: list[float] = []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("ClippedAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step = int(state["step"]) + 1
                state["step"] = step
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                # Same association as Pyro's ClippedAdam so results agree bit for bit.
                step_sizes.append(-(lr * math.sqrt(bias_correction2) / bias_correction1))
                params.append(p)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            if not params:
                continue
            # The foreach kernels do the per-tensor work in C++: one Python call per group
            # rather than a dozen per parameter.
            clip = group["clip_norm"]
            torch._foreach_clamp_min_(grads, -clip)
            torch._foreach_clamp_max_(grads, clip)
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
            grad_var = torch._foreach_sub(grads, exp_avgs) if group["centered_variance"] else grads
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grad_var, grad_var, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)
        return loss
