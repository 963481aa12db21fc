"""A direct call of torch's fused Adam / AdamW kernel, for the common case.

``torch.optim.Adam(fused=True).step()`` spends most of its time outside the kernel on
small models: the profiler hook, the per-step ``_init_group`` walk, grouping the tensors
by device and dtype, and the functional dispatch (about 20 us for two parameters, 30 us
for ten, against 6 us and 26 us for the kernel itself on one CPU core). An SVI step pays
that every time. :func:`fused_adam_step` does what that ``step()`` does for one param
group (lazy state initialization in torch's own format, the step counter increment, one
kernel call) and nothing else, so the optimizer state stays torch's: ``state_dict``,
``load_state_dict`` and a later plain ``step()`` see exactly what torch would have made.

It declines (returns False, and the caller runs ``optimizer.step()``) whenever the group
is not the plain case: not a fused ``Adam``/``AdamW`` we built, hooks registered, a tensor
learning rate, capturable or differentiable mode, complex or sparse gradients, parameters
on several devices, or a torch without the kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Adam, AdamW, Optimizer
from torch.optim import optimizer as _torch_optimizer

__all__ = ["fused_adam_step"]

_ADAM = getattr(torch, "_fused_adam_", None)
_ADAMW = getattr(torch, "_fused_adamw_", None)
# Switched off for the process if the kernel ever refuses our call (a torch whose
# signature differs): the regular step() is always correct, only slower.
_enabled = _ADAM is not None and _ADAMW is not None


def _no_hooks(optimizer: Optimizer) -> bool:
    return not (
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or _torch_optimizer._global_optimizer_pre_hooks
        or _torch_optimizer._global_optimizer_post_hooks
    )


def fused_adam_step(optimizer: Optimizer, group: dict[str, Any], params: list) -> bool:
    """One Adam/AdamW update of ``params`` (all in ``group``); False if not handled."""
    global _enabled
    if not _enabled or type(optimizer) not in (Adam, AdamW) or not group.get("fused"):
        return False
    lr = group["lr"]
    beta1, beta2 = group["betas"]
    if (
        type(lr) is not float
        or type(beta1) is not float
        or type(beta2) is not float
        or group["capturable"]
        or group["differentiable"]
        or not _no_hooks(optimizer)
    ):
        return False
    amsgrad = group["amsgrad"]
    state_of = optimizer.state
    grads, exp_avgs, exp_avg_sqs, max_sqs, steps, live = [], [], [], [], [], []
    device = None
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse or p.is_complex() or (device is not None and p.device != device):
            return False
        device = p.device
        state = state_of[p]
        if not state:
            # torch's lazy initialization for a fused group, field for field.
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        live.append(p)
        grads.append(g)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        if amsgrad:
            max_sqs.append(state["max_exp_avg_sq"])
        steps.append(state["step"])
    if not live:
        return True
    kernel = _ADAMW if group.get("decoupled_weight_decay", type(optimizer) is AdamW) else _ADAM
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        try:
            kernel(
                live,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_sqs,
                steps,
                amsgrad=amsgrad,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                grad_scale=None,
                found_inf=None,
            )
        except (TypeError, RuntimeError):
            # Undo the counter so that the regular step() starts from the same state.
            torch._foreach_sub_(steps, 1)
            _enabled = False
            return False
    # What Optimizer.step's wrapper records (lr schedulers check it).
    optimizer._opt_called = True  # type: ignore[attr-defined]
    return True
