"""``CSIS``: compiled sequential importance sampling (Le, Baydin & Wood 2017).

Inference compilation trains an amortized guide ``q(z | x)`` on the model's own joint
draws: the loss ``E_{p(z, x)} [-log q(z | x)]`` equals ``E_{p(x)} KL(p(z | x) || q(z | x))``
plus a constant, so its minimizer over a family that contains the posterior is the
posterior for every ``x``. Training needs no data; the trained guide is then the
proposal of ordinary importance sampling (:meth:`run`, from :class:`Importance`).

Model and guide must accept the keyword argument ``observations``, a dict of observed
values by site name: the guide gets the sampled observations there during training, and
``csis.run(..., observations={...})`` passes the real ones to both at inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..handlers.trace import Trace, TraceMessenger
from ..handlers.uncondition import UnconditionMessenger
from ..params import record_params, touched_params
from .importance import Importance
from .rws import _latent_log_q, matched_guide_trace

__all__ = ["CSIS"]


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


class CSIS(Importance):
    """Compiled sequential importance sampling (Pyro's ``CSIS``).

    :param model: the model; it takes ``observations=`` (see the module docstring).
    :param guide: the amortized proposal ``q(z | x)``; it takes ``observations=`` too.
    :param optim: a ``vitorch.optim`` optimizer such as ``Adam({"lr": 1e-3})``.
    :param num_inference_samples: the number of weighted traces :meth:`run` draws.
    :param training_batch_size: joint draws per :meth:`step`.
    :param validation_batch_size: joint draws of the fixed validation batch.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: Any,
        num_inference_samples: int = 10,
        training_batch_size: int = 10,
        validation_batch_size: int = 20,
    ):
        if not callable(guide):
            raise TypeError(f"CSIS: guide must be callable, got {type(guide).__name__}")
        if not callable(optim):
            raise TypeError(
                f"CSIS: optim must be a vitorch.optim optimizer, got {type(optim).__name__}"
            )
        _positive_int("CSIS", "num_inference_samples", num_inference_samples)
        super().__init__(model, guide, num_inference_samples)
        self.optim = optim
        self.training_batch_size = _positive_int("CSIS", "training_batch_size", training_batch_size)
        self.validation_batch_size = _positive_int(
            "CSIS", "validation_batch_size", validation_batch_size
        )
        self.validation_batch: list[Trace] | None = None

    def _sample_from_joint(self, *args: Any, **kwargs: Any) -> Trace:
        """A trace of the model with its observed sites sampled too (no gradients kept)."""
        with torch.no_grad():
            return TraceMessenger(UnconditionMessenger(self.model)).get_trace(*args, **kwargs)

    def set_validation_batch(self, *args: Any, **kwargs: Any) -> None:
        """Draw and keep ``validation_batch_size`` joint traces (arguments go to the model)."""
        self.validation_batch = [
            self._sample_from_joint(*args, **kwargs) for _ in range(self.validation_batch_size)
        ]

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One gradient step on a fresh training batch; returns its loss estimate."""
        with TraceMessenger(param_only=True) as tracer:
            loss = self.loss_and_grads(True, None, *args, **kwargs)
        found: dict[str, Any] = {}
        record_params(found, tracer.trace)
        params = {n: p for n, p in touched_params(found).items() if p.grad is not None}
        step_named = getattr(self.optim, "step_named", None)
        if step_named is not None:
            step_named(params)
        else:
            self.optim(list(params.values()))
        for p in params.values():
            p.grad = None
        return loss

    def loss_and_grads(
        self, grads: bool, batch: Iterable[Trace] | None, *args: Any, **kwargs: Any
    ) -> float:
        """The mean of ``-log q(z | x)`` over ``batch`` (a fresh training batch when None).

        With ``grads`` the gradient of that mean is accumulated into the guide's
        parameters, one draw at a time (so memory does not grow with the batch).
        """
        if batch is None:
            batch_size = self.training_batch_size
            batch = (self._sample_from_joint(*args, **kwargs) for _ in range(batch_size))
        else:
            batch = list(batch)
            batch_size = len(batch)
            if batch_size == 0:
                raise ValueError("CSIS.loss_and_grads: batch is empty")
        total = 0.0
        with torch.set_grad_enabled(grads):
            for model_trace in batch:
                with TraceMessenger(param_only=True) as tracer:
                    guide_trace = matched_guide_trace(model_trace, self.guide, args, kwargs)
                particle_loss = -torch.as_tensor(_latent_log_q(guide_trace)) / batch_size
                if grads and particle_loss.requires_grad:
                    found: dict[str, Any] = {}
                    record_params(found, tracer.trace)
                    params = list(touched_params(found).values())
                    if params:
                        particle_loss.backward(inputs=params)
                total += float(particle_loss.detach())
        return total

    def validation_loss(self, *args: Any, **kwargs: Any) -> float:
        """The loss on the fixed validation batch (drawn on first use), without gradients."""
        if self.validation_batch is None:
            self.set_validation_batch(*args, **kwargs)
        return self.loss_and_grads(False, self.validation_batch, *args, **kwargs)
