"""Importance sampling: ``Importance``, ``TracePosterior`` and ``EmpiricalMarginal``.

This is Pyro's legacy trace-posterior API: ``Importance(model, guide, num_samples)
.run(*args)`` draws ``num_samples`` traces from the guide (the prior when no guide is
given), weights each by ``log p(x, z) - log q(z)``, and keeps them;
``EmpiricalMarginal(posterior, sites="z")`` is the weighted empirical distribution of a
site's values, with ``mean``, ``variance``, ``sample`` and ``log_prob``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.distributions import constraints

from ..distributions import Categorical
from ..distributions.distribution import TorchDistribution
from ..handlers.block import BlockMessenger
from ..handlers.replay import ReplayMessenger
from ..handlers.trace import Trace, TraceMessenger

__all__ = ["EmpiricalMarginal", "Importance", "LogWeightsMixin", "TracePosterior"]


class LogWeightsMixin:
    """Estimates from a ``log_weights`` attribute (a list of scalars or a 1-d tensor)."""

    log_weights: Any

    def _log_weights_tensor(self) -> torch.Tensor | None:
        log_w = self.log_weights
        if len(log_w) == 0:
            return None
        if isinstance(log_w, torch.Tensor):
            return log_w.reshape(-1)
        return torch.stack([torch.as_tensor(w) for w in log_w]).reshape(-1)

    def get_log_normalizer(self) -> torch.Tensor | None:
        """``log (1/N sum_i w_i)``: the estimate of the log evidence ``log p(x)``."""
        log_w = self._log_weights_tensor()
        if log_w is None:
            warnings.warn("The log_weights list is empty: no normalizer to estimate.")
            return None
        return torch.logsumexp(log_w, 0) - math.log(log_w.numel())

    def get_normalized_weights(self, log_scale: bool = False) -> torch.Tensor | None:
        """The self-normalized weights ``w_i / sum_j w_j`` (their logs with ``log_scale``)."""
        log_w = self._log_weights_tensor()
        if log_w is None:
            warnings.warn("The log_weights list is empty: no weights to normalize.")
            return None
        log_norm = log_w - torch.logsumexp(log_w, 0)
        return log_norm if log_scale else log_norm.exp()

    def get_ESS(self) -> torch.Tensor | int:
        """Kish's effective sample size ``1 / sum_i wbar_i^2``, in ``(0, N]`` (0 when empty)."""
        log_norm = self.get_normalized_weights(log_scale=True)
        if log_norm is None:
            return 0
        return torch.exp(-torch.logsumexp(2 * log_norm, 0))


class TracePosterior:
    """A bag of weighted execution traces; subclasses define :meth:`_traces`.

    After :meth:`run`, ``exec_traces``, ``log_weights`` and ``chain_ids`` hold one entry
    per trace; calling the posterior draws one trace (observations removed) in
    proportion to its weight.
    """

    def __init__(self, num_chains: int = 1):
        if not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
        self.num_chains = num_chains
        self._reset()

    def _reset(self) -> None:
        self.log_weights: list[torch.Tensor] = []
        self.exec_traces: list[Trace] = []
        self.chain_ids: list[int] = []
        self._idx_by_chain: list[list[int]] = [[] for _ in range(self.num_chains)]
        self._categorical: Categorical | None = None

    def _traces(self, *args: Any, **kwargs: Any) -> Iterator[tuple]:
        """Yield ``(trace, log_weight)`` or ``(trace, log_weight, chain_id)``."""
        raise NotImplementedError("an inference algorithm must implement _traces")

    def run(self, *args: Any, **kwargs: Any) -> TracePosterior:
        """Collect the weighted traces (hidden from outer handlers); returns ``self``."""
        self._reset()
        with BlockMessenger():
            for i, vals in enumerate(self._traces(*args, **kwargs)):
                if len(vals) == 2:
                    (tr, log_weight), chain_id = vals, 0
                else:
                    tr, log_weight, chain_id = vals
                    if not 0 <= chain_id < self.num_chains:
                        raise ValueError(
                            f"chain_id must be in [0, {self.num_chains}), got {chain_id!r}"
                        )
                self.exec_traces.append(tr)
                self.log_weights.append(torch.as_tensor(log_weight).detach())
                self.chain_ids.append(chain_id)
                self._idx_by_chain[chain_id].append(i)
        if self.log_weights:
            self._categorical = Categorical(logits=torch.stack(self.log_weights))
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Trace:
        """One stored trace drawn in proportion to its weight, without observed sites."""
        if self._categorical is None:
            raise ValueError("the posterior has no traces: call .run(*args) first")
        idx = int(self._categorical.sample().item())
        chain, pos = idx % self.num_chains, idx // self.num_chains
        tr = self.exec_traces[self._idx_by_chain[chain][pos]].copy()
        for name in tr.observation_nodes:
            del tr.nodes[name]
        return tr


class Importance(TracePosterior, LogWeightsMixin):
    """Importance sampling with ``guide`` as the proposal (Pyro's ``Importance``).

    :param model: the model.
    :param guide: the proposal; when None, the model itself with its observed sites
        hidden (sampling from the prior).
    :param num_samples: the number of weighted traces (10, with a warning, if None).
    """

    def __init__(
        self, model: Callable, guide: Callable | None = None, num_samples: int | None = None
    ):
        super().__init__()
        if num_samples is None:
            num_samples = 10
            warnings.warn(f"num_samples not provided, defaulting to {num_samples}", stacklevel=2)
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        if guide is None:
            guide = BlockMessenger(
                model, hide_fn=lambda msg: msg.type == "sample" and msg.is_observed
            )
        elif not callable(guide):
            raise TypeError(f"guide must be callable or None, got {type(guide).__name__}")
        self.model = model
        self.guide = guide
        self.num_samples = num_samples

    def _traces(self, *args: Any, **kwargs: Any) -> Iterator[tuple[Trace, torch.Tensor]]:
        for _ in range(self.num_samples):
            guide_trace = TraceMessenger(self.guide).get_trace(*args, **kwargs)
            model_trace = TraceMessenger(ReplayMessenger(self.model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
            log_weight = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
            yield model_trace, torch.as_tensor(log_weight)


class EmpiricalMarginal(TorchDistribution):
    """The weighted empirical distribution of one site (or same-shaped sites) of a posterior.

    :param trace_posterior: a :class:`TracePosterior` that has been ``run``.
    :param sites: a site name, or a list of names whose values are stacked along a new
        first dim (default ``"_RETURN"``, the model's return value).
    """

    arg_constraints: dict = {}
    has_enumerate_support = True
    support = constraints.real

    def __init__(
        self,
        trace_posterior: TracePosterior,
        sites: str | list[str] | None = None,
        validate_args: bool | None = None,
    ):
        if not isinstance(trace_posterior, TracePosterior):
            raise TypeError(
                f"trace_posterior must be a TracePosterior (e.g. Importance(...).run(...)), "
                f"got {type(trace_posterior).__name__}"
            )
        if sites is None:
            sites = "_RETURN"
        if not isinstance(sites, (str, list)):
            raise TypeError(f"sites must be a site name or a list of names, got {sites!r}")
        if not trace_posterior.exec_traces:
            raise ValueError("the posterior has no traces: call .run(*args) before marginalizing")
        if trace_posterior.num_chains != 1:
            raise NotImplementedError("EmpiricalMarginal supports one chain only")
        values = []
        for tr in trace_posterior.exec_traces:
            names = [sites] if isinstance(sites, str) else sites
            vals = []
            for name in names:
                if name not in tr.nodes or tr.nodes[name].value is None:
                    raise ValueError(
                        f"sites: {name!r} has no value in the posterior's traces (sites "
                        f"with values: {[n for n, s in tr.nodes.items() if s.value is not None]})"
                    )
                vals.append(torch.as_tensor(tr.nodes[name].value))
            values.append(vals[0] if isinstance(sites, str) else torch.stack(vals, 0))
        samples = torch.stack(values, 0)
        log_weights = torch.stack([torch.as_tensor(w) for w in trace_posterior.log_weights])
        self._init(samples, log_weights.reshape(-1), validate_args)

    def _init(self, samples: torch.Tensor, log_weights: torch.Tensor, validate_args) -> None:
        dtype = samples.dtype if samples.dtype.is_floating_point else torch.get_default_dtype()
        self._samples = samples
        self._log_weights = log_weights.to(dtype=dtype, device=samples.device)
        self._categorical = Categorical(logits=self._log_weights)
        super().__init__(torch.Size(), samples.shape[1:], validate_args=validate_args)

    @property
    def sample_size(self) -> int:
        """The number of stored samples."""
        return self._samples.shape[0]

    @property
    def log_weights(self) -> torch.Tensor:
        """The unnormalized log weights of the stored samples."""
        return self._log_weights

    def _normalized(self) -> torch.Tensor:
        w = torch.softmax(self._log_weights, 0)
        return w.reshape((-1,) + (1,) * len(self.event_shape))

    @property
    def mean(self) -> torch.Tensor:
        """The self-normalized weighted mean of the samples."""
        if not self._samples.dtype.is_floating_point:
            raise ValueError("mean is not defined for non-floating-point samples")
        return (self._normalized() * self._samples).sum(0)

    @property
    def variance(self) -> torch.Tensor:
        """The self-normalized weighted variance ``sum_i wbar_i (x_i - mean)^2``."""
        if not self._samples.dtype.is_floating_point:
            raise ValueError("variance is not defined for non-floating-point samples")
        return (self._normalized() * (self._samples - self.mean) ** 2).sum(0)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Stored samples drawn with probability proportional to their weights."""
        with torch.no_grad():
            idx = self._categorical.sample(torch.Size(sample_shape))
            return self._samples[idx]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log of the total normalized weight of the stored samples equal to ``value``."""
        value = torch.as_tensor(value, dtype=self._samples.dtype, device=self._samples.device)
        n_event = len(self.event_shape)
        if tuple(value.shape[value.dim() - n_event :]) != tuple(self.event_shape):
            raise ValueError(
                f"value: shape {tuple(value.shape)} does not end in the event shape "
                f"{tuple(self.event_shape)}"
            )
        batch = value.shape[: value.dim() - n_event]
        flat = value.reshape((-1, 1) + tuple(self.event_shape))
        equal = (flat == self._samples.unsqueeze(0)).reshape(flat.shape[0], self.sample_size, -1)
        match = equal.all(-1)
        log_w = self._log_weights - torch.logsumexp(self._log_weights, 0)
        masked = torch.where(match, log_w.unsqueeze(0), log_w.new_tensor(-math.inf))
        return torch.logsumexp(masked, -1).reshape(batch)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """The stored samples."""
        return self._samples
