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
learning rate or betas, capturable or differentiable mode, a missing or sparse gradient,
parameters on several devices or of several dtypes, or a torch without the kernel.
Between steps it keeps the kernel's argument lists (:class:`_Plan`) for the set of
parameters last stepped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Adam, AdamW, Optimizer
from torch.optim import optimizer as _torch_optimizer

__all__ = ["forget_plan", "fused_adam_step"]

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


class _Plan:
    """The kernel's argument lists for one set of parameters, kept between steps.

    Built from ``optimizer.state`` when the set of parameters stepped changes; the steps'
    counters become views of one tensor (``block``), so that incrementing them all is one
    ``add_`` instead of a ``_foreach_add_`` over scalars. Each parameter's ``state["step"]``
    is such a view: torch's own ``step()``, ``state_dict()`` and saving see ordinary tensors.
    """

    __slots__ = (
        "params",
        "states",
        "exp_avgs",
        "exp_avg_sqs",
        "max_sqs",
        "steps",
        "block",
        "amsgrad",
        "state_obj",
    )

    def __init__(self, optimizer: Optimizer, params: list, amsgrad: bool) -> None:
        state_of = optimizer.state
        self.params = params
        self.states = [state_of[p] for p in params]
        for p, state in zip(params, self.states):
            if not state:
                # torch's lazy initialization for a fused group, field for field.
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.block = torch.stack([state["step"] for state in self.states])
        for i, state in enumerate(self.states):
            state["step"] = self.block[i]
        self.steps = [state["step"] for state in self.states]
        self.exp_avgs = [state["exp_avg"] for state in self.states]
        self.exp_avg_sqs = [state["exp_avg_sq"] for state in self.states]
        self.max_sqs = [state["max_exp_avg_sq"] for state in self.states] if amsgrad else []
        self.amsgrad = amsgrad
        self.state_obj = state_of

    def serves(self, optimizer: Optimizer, params: list, amsgrad: bool) -> bool:
        mine = self.params
        return (
            optimizer.state is self.state_obj  # load_state_dict replaces it
            and amsgrad == self.amsgrad
            and len(params) == len(mine)
            and all(a is b for a, b in zip(params, mine))
            and all(st.get("step") is s for st, s in zip(self.states, self.steps))
        )


def forget_plan(optimizer: Optimizer) -> None:
    """Drop the kept lists (call after changing ``optimizer.state`` entries directly)."""
    optimizer.__dict__.pop("_vitorch_plan", None)


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
    grads = [p.grad for p in params]
    if any(g is None or g.is_sparse for g in grads):
        return False  # torch's step() skips the missing ones and words the sparse error
    if not params:
        return True
    amsgrad = group["amsgrad"]
    plan = optimizer.__dict__.get("_vitorch_plan")
    if plan is None or not plan.serves(optimizer, params, amsgrad):
        # One kernel call takes one device and one dtype (torch's step() groups by them);
        # checked once per set of parameters, not at every step.
        first = params[0]
        device, dtype = first.device, first.dtype
        if any(p.device != device or p.dtype != dtype for p in params):
            return False
        plan = optimizer.__dict__["_vitorch_plan"] = _Plan(optimizer, list(params), amsgrad)
    kernel = _ADAMW if group.get("decoupled_weight_decay", type(optimizer) is AdamW) else _ADAM
    with torch.no_grad():
        plan.block.add_(1)
        try:
            kernel(
                plan.params,
                grads,
                plan.exp_avgs,
                plan.exp_avg_sqs,
                plan.max_sqs,
                plan.steps,
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
        except (TypeError, RuntimeError) as err:
            # Undo the counters so that the regular step() starts from the same state
            # (and raises its own error if the update itself is impossible).
            plan.block.sub_(1)
            if isinstance(err, TypeError):  # a torch whose kernel takes other arguments
                _enabled = False
            return False
    # What Optimizer.step's wrapper records (lr schedulers check it).
    optimizer._opt_called = True  # type: ignore[attr-defined]
    return True
