"""``Predictive``: draws from the posterior predictive distribution.

``WeighedPredictive`` adds each draw's importance weight ``p(x, z) / q(z)`` (model over
guide), so that estimates can be corrected for an imperfect guide, and ``MHResampler``
turns such weighed draws into equally weighted ones by independence Metropolis-Hastings.

The model is run with its latent sites fixed (``condition``) to posterior samples, given as
a dict of tensors with one leading sample dim or drawn from a guide, and the values of its
sites are collected. With ``parallel=True`` all the draws are one run of the model inside an
extra plate, left of every plate of the model (its dim is found by tracing the model once);
otherwise the model runs once per draw.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..handlers.block import BlockMessenger
from ..handlers.condition import ConditionMessenger
from ..handlers.plate import PlateMessenger
from ..handlers.trace import Trace, TraceMessenger
from .importance import LogWeightsMixin

__all__ = ["MHResampler", "Predictive", "WeighedPredictive", "WeighedPredictiveResults"]

_PLATE_NAME = "_num_predictive_samples"


def _is_subsample(site: Any) -> bool:
    return getattr(site.fn, "_is_subsample", False)


def _prototype(model: Callable, args: tuple, kwargs: dict) -> tuple[Trace, int]:
    """One run of ``model``, hidden from outer handlers, and the depth of its plates."""
    with BlockMessenger():
        trace = TraceMessenger(model).get_trace(*args, **kwargs)
    dims = [
        -frame.dim
        for site in trace.nodes.values()
        if site.type == "sample"
        for frame in site.cond_indep_stack
        if frame.dim is not None
    ]
    return trace, max(dims, default=0)


def _site_shapes(
    trace: Trace, num_samples: int, nesting: int, return_sites: Any, posterior_samples: dict
) -> dict[str, tuple[int, ...] | None]:
    """The output shape of each site to return: (num_samples, 1..., value shape)."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    for name, site in trace.nodes.items():
        if site.type != "sample" or _is_subsample(site):
            continue
        if return_sites is None:
            wanted = True
        elif return_sites:
            wanted = name in return_sites
        else:
            wanted = name not in posterior_samples
        if wanted:
            pad = max(nesting - len(site.fn.batch_shape), 0)
            shapes[name] = (num_samples,) + (1,) * pad + tuple(site.value.shape)
    if return_sites is not None and "_RETURN" in return_sites:
        value = trace.nodes["_RETURN"].value
        shapes["_RETURN"] = (num_samples,) + tuple(value.shape) if torch.is_tensor(value) else None
    missing = set(return_sites or ()) - set(shapes)
    if missing:
        raise ValueError(
            f"Predictive: return_sites {sorted(missing)} are not sample sites of the model "
            f"(it has {sorted(n for n, s in trace.nodes.items() if s.type == 'sample')})"
        )
    return shapes


def _batched_samples(
    posterior_samples: dict, trace: Trace, num_samples: int, nesting: int
) -> dict[str, torch.Tensor]:
    """Posterior samples reshaped so that the sample dim sits at the predictive plate's dim."""
    out = {}
    for name, value in posterior_samples.items():
        site = trace.nodes.get(name)
        if site is None or site.type != "sample":
            continue  # e.g. a guide's auxiliary site: the model does not use it
        site_shape = tuple(site.value.shape)
        pad = max(nesting - len(site.fn.batch_shape), 0)
        target = (num_samples,) + (1,) * pad + site_shape
        if value.numel() == torch.Size(target).numel():
            out[name] = value.reshape(target)
        else:
            # Not the shape the model made here (e.g. a different data size): keep the
            # sample's own shape and only line its sample dim up with the plate.
            rest = tuple(value.shape[1:])
            out[name] = value.reshape((num_samples,) + (1,) * max(nesting - len(rest), 0) + rest)
    return out


def _collect(trace: Trace, shapes: dict) -> dict[str, Any]:
    out = {}
    for name, shape in shapes.items():
        value = trace.nodes[name].value
        if shape is None:
            out[name] = value
        elif value.numel() < torch.Size(shape).numel():
            out[name] = value.expand(shape)
        else:
            out[name] = value.reshape(shape)
    return out


def _predict(
    model: Callable,
    posterior_samples: dict,
    num_samples: int,
    return_sites: Any,
    parallel: bool,
    args: tuple,
    kwargs: dict,
) -> tuple[dict[str, Any], Any]:
    """(samples by site, the trace or list of traces) of ``model`` under the samples."""
    trace, nesting = _prototype(model, args, kwargs)
    shapes = _site_shapes(trace, num_samples, nesting, return_sites, posterior_samples)
    if parallel:
        data = _batched_samples(posterior_samples, trace, num_samples, nesting)

        def vectorized(*args: Any, **kwargs: Any) -> Any:
            with PlateMessenger(_PLATE_NAME, num_samples, dim=-nesting - 1):
                return model(*args, **kwargs)

        tr = TraceMessenger(ConditionMessenger(vectorized, data=data)).get_trace(*args, **kwargs)
        return _collect(tr, shapes), tr
    traces = []
    collected: dict[str, list] = {name: [] for name in shapes}
    for i in range(num_samples):
        data = {name: value[i] for name, value in posterior_samples.items()}
        tr = TraceMessenger(ConditionMessenger(model, data=data)).get_trace(*args, **kwargs)
        traces.append(tr)
        for name in shapes:
            collected[name].append(tr.nodes[name].value)
    samples: dict[str, Any] = {}
    for name, shape in shapes.items():
        values = collected[name]
        samples[name] = values if shape is None else torch.stack(values).reshape(shape)
    return samples, traces


class Predictive(torch.nn.Module):
    """Samples from the posterior predictive distribution of ``model``.

    :param model: the model.
    :param posterior_samples: ``{site: tensor}`` with the draws along dim 0; the model's
        latent sites named here are fixed to them.
    :param guide: draw the latent sites from this guide instead (not with
        ``posterior_samples``).
    :param num_samples: the number of draws (taken from ``posterior_samples`` if given).
    :param return_sites: the sites to return. By default every sample site not in
        ``posterior_samples`` (with a guide: every sample site of the model, latent and
        observed); ``"_RETURN"`` adds the model's return value.
    :param parallel: draw all samples in one run of the model, vectorized by an extra
        plate; needs every batch dim of the model to be declared by a plate.

    Calling it with the model's arguments returns ``{site: tensor}``, each of shape
    ``(num_samples, ...)`` where ``...`` is the site's shape, with dims of size one inserted
    after the sample dim when the site lies in fewer plates than the deepest one.

    Example:
        >>> import torch, vitorch
        >>> import vitorch.distributions as dist
        >>> def model():
        ...     z = vitorch.sample("z", dist.Normal(0.0, 1.0))
        ...     return vitorch.sample("x", dist.Normal(z, 1.0))
        >>> samples = Predictive(model, {"z": torch.zeros(5)})()
        >>> samples["x"].shape
        torch.Size([5])
    """

    def __init__(
        self,
        model: Callable,
        posterior_samples: dict[str, torch.Tensor] | None = None,
        guide: Callable | None = None,
        num_samples: int | None = None,
        return_sites: Any = (),
        parallel: bool = False,
    ):
        super().__init__()
        if not callable(model):
            raise TypeError(f"Predictive: model must be callable, got {type(model).__name__}")
        if guide is not None and not callable(guide):
            raise TypeError(f"Predictive: guide must be callable, got {type(guide).__name__}")
        if posterior_samples is None:
            if num_samples is None:
                raise ValueError("Predictive: give posterior_samples or num_samples")
            posterior_samples = {}
        if not isinstance(posterior_samples, dict):
            raise TypeError(
                f"Predictive: posterior_samples must be a dict from site name to tensor, "
                f"got {type(posterior_samples).__name__}"
            )
        if guide is not None and posterior_samples:
            raise ValueError("Predictive: give posterior_samples or guide, not both")
        for name, value in posterior_samples.items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                raise ValueError(
                    f"Predictive: posterior_samples[{name!r}] must be a tensor with a leading "
                    f"sample dim, got {getattr(value, 'shape', type(value).__name__)}"
                )
            if num_samples is None:
                num_samples = value.shape[0]
            elif num_samples != value.shape[0]:
                warnings.warn(
                    f"Predictive: posterior_samples[{name!r}] has {value.shape[0]} draws but "
                    f"num_samples={num_samples}; using {value.shape[0]}",
                    UserWarning,
                    stacklevel=2,
                )
                num_samples = value.shape[0]
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"Predictive: num_samples must be a positive int, got {num_samples!r}")
        if return_sites is not None and not isinstance(return_sites, (list, tuple, set, frozenset)):
            raise TypeError(
                f"Predictive: return_sites must be a list, tuple or set of site names (or "
                f"None for all), got {type(return_sites).__name__}"
            )
        self.model = model
        self.posterior_samples = posterior_samples
        self.guide = guide
        self.num_samples = num_samples
        self.return_sites = return_sites
        self.parallel = parallel

    def _posterior_samples(self, args: tuple, kwargs: dict) -> tuple[dict, Any]:
        if self.guide is None:
            return self.posterior_samples, self.return_sites
        samples, _ = _predict(self.guide, {}, self.num_samples, None, self.parallel, args, kwargs)
        # With a guide, every model site is returned unless told otherwise.
        return samples, (self.return_sites or None)

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw ``num_samples`` predictive samples given the model's arguments."""
        posterior_samples, return_sites = self._posterior_samples(args, kwargs)
        samples, _ = _predict(
            self.model,
            posterior_samples,
            self.num_samples,
            return_sites,
            self.parallel,
            args,
            kwargs,
        )
        return samples

    def get_samples(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The same as calling the Predictive (Pyro's older name)."""
        return self.forward(*args, **kwargs)

    def call(self, *args: Any, **kwargs: Any) -> tuple:
        """The samples as a tuple, sorted by site name (what Pyro's ``call`` returns)."""
        return tuple(v for _, v in sorted(self.forward(*args, **kwargs).items()))

    @torch.no_grad()
    def get_vectorized_trace(self, *args: Any, **kwargs: Any) -> Trace:
        """One trace of the model with all draws vectorized by the extra plate."""
        posterior_samples, _ = self._posterior_samples(args, kwargs)
        _, trace = _predict(self.model, posterior_samples, self.num_samples, (), True, args, kwargs)
        return trace


def _log_prob_per_draw(trace: Trace | list[Trace], num_samples: int) -> torch.Tensor:
    """The log-density of each of the ``num_samples`` draws: shape ``(num_samples,)``."""
    if isinstance(trace, list):
        return torch.stack([torch.as_tensor(t.log_prob_sum()) for t in trace])
    trace.compute_log_prob()
    total = torch.zeros(num_samples)
    for site in trace.nodes.values():
        if site.type != "sample" or site.log_prob is None:
            continue
        dim = next(f.dim for f in site.cond_indep_stack if f.name == _PLATE_NAME)
        log_p = site.log_prob
        if log_p.dim() < -dim:  # a site without batch dims (a factor of one number)
            log_p = log_p.expand(site.fn.batch_shape)
        per_draw = log_p.movedim(dim, 0).reshape(num_samples, -1).sum(1)
        total = total.to(per_draw) + per_draw
    return total


@dataclasses.dataclass(frozen=True, eq=False)
class WeighedPredictiveResults(LogWeightsMixin):
    """What :class:`WeighedPredictive` returns: the draws and their importance weights.

    ``log_weights = model_log_prob - guide_log_prob``, one per draw; the mixin's
    ``get_normalized_weights``, ``get_log_normalizer`` (an estimate of the log evidence) and
    ``get_ESS`` apply to them.
    """

    samples: dict | tuple
    log_weights: torch.Tensor
    guide_log_prob: torch.Tensor
    model_log_prob: torch.Tensor

    def clone(self) -> WeighedPredictiveResults:
        samples = (
            {k: v.clone() for k, v in self.samples.items()}
            if isinstance(self.samples, dict)
            else tuple(v.clone() for v in self.samples)
        )
        return WeighedPredictiveResults(
            samples,
            self.log_weights.clone(),
            self.guide_log_prob.clone(),
            self.model_log_prob.clone(),
        )


class WeighedPredictive(Predictive):
    """:class:`Predictive` whose draws come with importance weights ``p(x_obs, z) / q(z)``.

    The latent draws ``z`` come from ``guide``. Calling it with the model's arguments (and
    optionally ``model_guide=``, the conditioned model the guide was fitted to; by default
    ``model``) returns a :class:`WeighedPredictiveResults` whose ``samples`` are the
    predictive draws of ``model`` and whose ``log_weights`` are
    ``log p_model_guide(all its sites) - log q(z)`` per draw. Self-normalized, the weights
    make estimates exact in the limit of many draws however poor the guide, as long as it
    covers the posterior (e.g. ``vitorch.ops.stats.weighed_quantile``).
    """

    def __init__(self, model: Callable, *args: Any, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        if self.guide is None:
            raise ValueError("WeighedPredictive: a guide is needed (the weights are p / q)")

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> WeighedPredictiveResults:  # type: ignore[override]
        model_guide = kwargs.pop("model_guide", None) or self.model
        if not callable(model_guide):
            raise TypeError(
                f"WeighedPredictive: model_guide must be callable, got {type(model_guide).__name__}"
            )
        n = self.num_samples
        return_sites = self.return_sites or None
        latents, guide_trace = _predict(self.guide, {}, n, None, self.parallel, args, kwargs)
        guide_log_prob = _log_prob_per_draw(guide_trace, n)
        scored, model_trace = _predict(
            model_guide, latents, n, return_sites, self.parallel, args, kwargs
        )
        model_log_prob = _log_prob_per_draw(model_trace, n)
        if model_guide is self.model:
            samples = scored
        else:
            samples, _ = _predict(self.model, latents, n, return_sites, self.parallel, args, kwargs)
        return WeighedPredictiveResults(
            samples, model_log_prob - guide_log_prob, guide_log_prob, model_log_prob
        )

    def call(self, *args: Any, **kwargs: Any) -> WeighedPredictiveResults:  # type: ignore[override]
        """As :meth:`forward`, with the samples as a tuple sorted by site name."""
        result = self.forward(*args, **kwargs)
        return dataclasses.replace(
            result, samples=tuple(v for _, v in sorted(result.samples.items()))
        )


class MHResampler(torch.nn.Module):
    """Equally weighted draws from weighed ones, by independence Metropolis-Hastings.

    ``sampler(*args, **kwargs)`` (usually a :class:`WeighedPredictive`) returns
    :class:`WeighedPredictiveResults`. The first call keeps its draws as the chains' states;
    every later call proposes the new draws, one per chain, and chain ``i`` moves to its
    proposal with probability ``min(1, w'_i / w_i)`` (``w`` = importance weight). The
    proposal is the guide, independent of the state, so the chains' stationary law is the
    weighted target. Each call returns the current states (a results object whose
    ``log_weights`` belong to the states).

    :param source_samples_slice: which of the proposals to keep (``get_source_samples``);
        default none.
    :param stored_samples_slice: which of the returned states to keep
        (``get_stored_samples``); default none.
    """

    def __init__(
        self,
        sampler: Callable[..., WeighedPredictiveResults],
        source_samples_slice: slice = slice(0),
        stored_samples_slice: slice = slice(0),
    ):
        super().__init__()
        if not callable(sampler):
            raise TypeError(f"MHResampler: sampler must be callable, got {type(sampler).__name__}")
        self.sampler = sampler
        self.samples: WeighedPredictiveResults | None = None
        self.transition_count = torch.tensor(0)
        self.source_samples: list[WeighedPredictiveResults] = []
        self.source_samples_slice = source_samples_slice
        self.stored_samples: list[WeighedPredictiveResults] = []
        self.stored_samples_slice = stored_samples_slice

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> WeighedPredictiveResults:
        proposal = self.sampler(*args, **kwargs)
        if not isinstance(proposal, WeighedPredictiveResults):
            raise TypeError(
                f"MHResampler: the sampler must return WeighedPredictiveResults, got "
                f"{type(proposal).__name__}"
            )
        self.source_samples = (self.source_samples + [proposal])[self.source_samples_slice]
        if self.samples is None:
            self.samples = proposal.clone()
            self.transition_count = torch.zeros(proposal.log_weights.shape, dtype=torch.long)
        else:
            log_accept = (proposal.log_weights - self.samples.log_weights).clamp(max=0.0)
            move = torch.rand(log_accept.shape, device=log_accept.device) < log_accept.exp()
            self.transition_count += move.to(self.transition_count.device)
            self.samples = _select(move, proposal, self.samples)
        self.stored_samples = (self.stored_samples + [self.samples.clone()])[
            self.stored_samples_slice
        ]
        return self.samples

    def get_min_sample_transition_count(self) -> torch.Tensor:
        """The fewest moves any chain has made."""
        return self.transition_count.min()

    def get_total_transition_count(self) -> torch.Tensor:
        """The moves of all chains together."""
        return self.transition_count.sum()

    def get_source_samples(self) -> dict:
        """The kept proposals, concatenated along the draw dim (by field, then by site)."""
        return self.get_samples(self.source_samples)

    def get_stored_samples(self) -> dict:
        """The kept states, concatenated along the draw dim (by field, then by site)."""
        return self.get_samples(self.stored_samples)

    def get_samples(self, samples: list[WeighedPredictiveResults]) -> dict:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(WeighedPredictiveResults):
            values = [getattr(s, field.name) for s in samples]
            if field.name == "samples":
                out["samples"] = (
                    {k: torch.cat([v[k] for v in values]) for k in values[0]} if values else {}
                )
            else:
                out[field.name] = torch.cat(values) if values else torch.empty(0)
        return out


def _select(
    move: torch.Tensor, new: WeighedPredictiveResults, old: WeighedPredictiveResults
) -> WeighedPredictiveResults:
    """Per draw, ``new`` where ``move`` else ``old``, for every field and site."""

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mask = move.reshape(move.shape + (1,) * (a.dim() - 1))
        return torch.where(mask, a, b)

    samples = (
        {k: pick(v, old.samples[k]) for k, v in new.samples.items()}
        if isinstance(new.samples, dict)
        else tuple(pick(a, b) for a, b in zip(new.samples, old.samples))
    )
    return WeighedPredictiveResults(
        samples,
        pick(new.log_weights, old.log_weights),
        pick(new.guide_log_prob, old.guide_log_prob),
        pick(new.model_log_prob, old.model_log_prob),
    )
