"""Hidden Markov models with a discrete latent state (Pyro's ``DiscreteHMM``).

The latent chain starts at a state ``z[-1] ~ Categorical(initial_logits)`` before the
first observation, moves by ``z[t] ~ Categorical(transition_logits[t, z[t-1]])`` and emits
``y[t] ~ observation_dist[t, z[t]]``. ``log_prob`` marginalises the chain with the
forward algorithm written as a product of ``K x K`` matrices in log space, contracted
pairwise (a parallel scan), so the depth of the computation grows as ``log(T)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import Distribution

from . import constraints
from .distribution import TorchDistribution
from .torch import Categorical
from .util import broadcast_shape

__all__ = ["DiscreteHMM"]

_Shape = torch.Size | tuple[int, ...] | list[int]


def _log_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) @ exp(b))`` without overflow; all ``-inf`` rows stay ``-inf``."""
    lowest = torch.finfo(a.dtype).min
    a_top = a.detach().amax(-1, keepdim=True).clamp(min=lowest)
    b_top = b.detach().amax(-2, keepdim=True).clamp(min=lowest)
    prod = (a - a_top).exp() @ (b - b_top).exp()
    # log(0) would give a nan gradient: take the log of a safe value and put -inf back.
    positive = prod > 0
    logs = torch.where(positive, prod, torch.ones_like(prod)).log()
    logs = torch.where(positive, logs, torch.full_like(logs, -float("inf")))
    return logs + a_top + b_top


def _log_matmul_chain(factors: torch.Tensor) -> torch.Tensor:
    """``factors[..., 0, :, :] @ ... @ factors[..., T-1, :, :]`` in log space.

    Neighbouring pairs are multiplied together at each round, halving the time axis,
    so ``T`` matrices take ``ceil(log2 T)`` rounds of batched matmuls.
    """
    while factors.size(-3) > 1:
        steps = factors.size(-3)
        even = steps - steps % 2
        merged = _log_matmul(factors[..., 0:even:2, :, :], factors[..., 1:even:2, :, :])
        if even < steps:
            merged = torch.cat([merged, factors[..., even:, :, :]], dim=-3)
        factors = merged
    return factors.squeeze(-3)


class DiscreteHMM(TorchDistribution):
    """A hidden Markov model with ``K`` discrete states and any observation distribution.

    ``event_shape`` is ``(T,) + observation_dist.event_shape``: time is part of the event.
    When neither ``transition_logits`` nor ``observation_dist`` varies over time, ``T`` is
    1 and broadcasts, so ``log_prob`` scores sequences of any length; pass ``duration`` to
    fix the length (needed to ``sample`` such a homogeneous model).

    Args:
        initial_logits: logits of the state before the first step, shape
            ``batch_shape + (K,)`` (broadcastable).
        transition_logits: logits of ``z[t]`` given ``z[t-1]`` (old state on the left),
            broadcastable to ``batch_shape + (T, K, K)``.
        observation_dist: the distribution of ``y[t]`` given ``z[t]``; its batch shape ends
            in ``K`` and broadcasts to ``batch_shape + (T, K)``.
        validate_args: as for any ``torch.distributions.Distribution``.
        duration: the number of time steps, optional.

    Example:
        >>> import torch
        >>> from vitorch.distributions import Normal
        >>> hmm = DiscreteHMM(torch.zeros(2), torch.zeros(2, 2),
        ...                   Normal(torch.tensor([-1.0, 1.0]), 1.0))
        >>> hmm.log_prob(torch.randn(5)).shape
        torch.Size([])
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "initial_logits": constraints.real,
        "transition_logits": constraints.real,
    }

    def __init__(
        self,
        initial_logits: torch.Tensor,
        transition_logits: torch.Tensor,
        observation_dist: Distribution,
        validate_args: bool | None = None,
        duration: int | None = None,
    ) -> None:
        if not isinstance(initial_logits, torch.Tensor) or initial_logits.dim() < 1:
            raise ValueError(
                "DiscreteHMM: initial_logits must be a tensor with at least one dim "
                f"(states on the right), got {_describe(initial_logits)}"
            )
        states = initial_logits.size(-1)
        if (
            not isinstance(transition_logits, torch.Tensor)
            or transition_logits.dim() < 2
            or transition_logits.shape[-2:] != (states, states)
        ):
            raise ValueError(
                f"DiscreteHMM: transition_logits must end in ({states}, {states}) to match "
                f"initial_logits, got {_describe(transition_logits)}"
            )
        if not isinstance(observation_dist, Distribution):
            raise TypeError(
                "DiscreteHMM: observation_dist must be a torch Distribution, got "
                f"{type(observation_dist).__name__}"
            )
        obs_batch = observation_dist.batch_shape
        if len(obs_batch) < 1 or obs_batch[-1] not in (1, states):
            raise ValueError(
                f"DiscreteHMM: observation_dist.batch_shape must end in {states} (one "
                f"distribution per state), got {tuple(obs_batch)}"
            )
        shape = broadcast_shape(
            initial_logits.shape[:-1] + (1,), transition_logits.shape[:-2], obs_batch[:-1]
        )
        batch_shape, steps = shape[:-1], shape[-1]
        if duration is not None:
            if not isinstance(duration, int) or isinstance(duration, bool) or duration < 1:
                raise ValueError(f"DiscreteHMM: duration must be a positive int, got {duration!r}")
            if steps not in (1, duration):
                raise ValueError(
                    f"DiscreteHMM: duration={duration} disagrees with the {steps} time steps "
                    "of transition_logits/observation_dist"
                )
            steps = duration
        elif steps != 1:
            duration = steps
        self._duration = duration
        self.initial_logits = initial_logits - initial_logits.logsumexp(-1, keepdim=True)
        self.transition_logits = transition_logits - transition_logits.logsumexp(-1, keepdim=True)
        self.observation_dist = observation_dist
        event_shape = torch.Size((steps,)) + observation_dist.event_shape
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def duration(self) -> int | None:
        """The number of time steps, or ``None`` when any length is accepted."""
        return self._duration

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """Sequences of values in the observation distribution's support."""
        return constraints.independent(self.observation_dist.support, 1)

    def expand(self, batch_shape: _Shape, _instance=None) -> DiscreteHMM:
        """The same model over a larger batch shape.

        Only ``initial_logits`` is expanded: it enters after the time contraction, so
        the batched matmuls stay as small as the parameters allow.
        """
        new = self._get_checked_instance(DiscreteHMM, _instance)
        batch_shape = torch.Size(batch_shape)
        broadcast_shape(batch_shape, self.batch_shape)
        new.initial_logits = self.initial_logits.expand(batch_shape + (-1,))
        new.transition_logits = self.transition_logits
        new.observation_dist = self.observation_dist
        new._duration = self._duration
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _validate_sample(self, value: torch.Tensor) -> None:
        if value.dim() < len(self.event_shape):
            raise ValueError(
                f"DiscreteHMM: value must have at least {len(self.event_shape)} dims "
                f"(time, then the observation event), got shape {tuple(value.shape)}"
            )
        if self._duration is not None:
            super()._validate_sample(value)
            return
        # Any length is allowed: check against the value's own length.
        kept = self._event_shape
        self._event_shape = value.shape[value.dim() - len(kept) :][:1] + kept[1:]
        try:
            super()._validate_sample(value)
        finally:
            self._event_shape = kept

    def _step_factors(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(z[t] = j | z[t-1] = i) + log p(y[t] | z[t] = j)``, shape ``(..., T, K, K)``."""
        obs_dim = len(self.observation_dist.event_shape)
        obs_logp = self.observation_dist.log_prob(value.unsqueeze(-1 - obs_dim))
        return self.transition_logits + obs_logp.unsqueeze(-2)

    def _final_logits(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(y, z[T-1] = j)`` for every final state ``j``."""
        if self._validate_args:
            self._validate_sample(value)
        through = _log_matmul_chain(self._step_factors(value))
        return (self.initial_logits.unsqueeze(-1) + through).logsumexp(-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The marginal ``log p(y)``, summing over every state path."""
        return self._final_logits(value).logsumexp(-1)

    def filter(self, value: torch.Tensor) -> Categorical:
        """The posterior over the final state given the observations ``value``."""
        return Categorical(logits=self._final_logits(value), validate_args=self._validate_args)

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Draw a state path forward in time, then one observation per step."""
        if self._duration is None:
            raise ValueError(
                "DiscreteHMM.sample needs the number of time steps: pass duration= when the "
                "parameters do not vary over time"
            )
        sample_shape = torch.Size(sample_shape)
        steps, states = self._duration, self.initial_logits.size(-1)
        lead = sample_shape + self.batch_shape
        with torch.no_grad():
            trans = self.transition_logits.expand(self.batch_shape + (steps, states, states))
            trans = trans.expand(lead + trans.shape[len(self.batch_shape) :])
            state = Categorical(logits=self.initial_logits.expand(lead + (states,))).sample()
            path = []
            for t in range(steps):
                rows = trans[..., t, :, :]
                index = state[..., None, None].expand(lead + (1, states))
                logits = rows.gather(-2, index).squeeze(-2)
                state = Categorical(logits=logits).sample()
                path.append(state)
            path = torch.stack(path, dim=-1)  # lead + (T,)
            obs = self.observation_dist.expand(self.batch_shape + (steps, states))
            draws = obs.sample(sample_shape)  # lead + (T, K) + obs event
            obs_dim = len(obs.event_shape)
            index = path.reshape(path.shape + (1,) * (1 + obs_dim))
            index = index.expand(path.shape + (1,) + obs.event_shape)
            return draws.gather(len(lead) + 1, index).squeeze(len(lead) + 1)


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
