"""``TraceEnum_ELBO``: the ELBO with discrete latents summed out exactly.

Model sites marked ``infer={"enumerate": "parallel"}`` (see :func:`config_enumerate`) are
not sampled: :class:`vitorch.handlers.enum.EnumMessenger` gives each its whole support in
a dim left of the plate dims (recycled along ``markov`` chains), and the model's
log-density terms broadcast over those dims. The estimate is then

    log sum_{enumerated z} p(x, z, w) - log q(w)

with ``w`` the guide's draws, where the sum over ``z`` is done by variable elimination on
the tree of plates. Every term becomes a factor over the variables (unique ids, read
from its site's dim -> id map) it depends on; factors are grouped by their plate set;
from the deepest set outwards, a group's variables of exactly that plate set are summed
out one at a time (``logsumexp``), the plates the result does not share with its
remaining variables are summed over (times their subsample scale), and it joins the
group of those variables' plate set. Summing an item's variables out before summing over
items keeps the cost linear in the plate sizes, and along a chain linear in its length.

An enumerated site's own factor is not masked (it sums to one over its values); a mask
switches off the sites that depend on it. Sites enumerated in the guide are summed over
too, each value weighted by its probability under the guide:
``sum_g q(g) [log p(x, g, w) - log q(g, w)]``.

Guide sites marked ``infer={"enumerate": "sequential"}`` are walked one joint value at a
time instead: the guide is rerun once per joint value ``s`` of those sites (a queue of
partial traces, as Pyro's ``iter_discrete_traces``), the model is run against each
guide trace, and each pair's estimate enters the sum with the differentiable weight
``q(s)``, so the gradient reaches the guide's parameters for ``s``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from queue import LifoQueue
from typing import Any

import torch

from ..handlers.enum import EnumMessenger
from ..handlers.infer_config import InferConfigMessenger
from ..handlers.plate import PlateMessenger
from ..handlers.queue import queue
from ..handlers.replay import ReplayMessenger
from ..handlers.trace import Trace, TraceMessenger, site_log_prob, store_log_prob
from ..poutine.util import _extended
from ..runtime import Message
from .elbo import ELBO, _counts, _total, _warn_missing

__all__ = ["JitTraceEnum_ELBO", "TraceEnum_ELBO", "config_enumerate"]

_STRATEGIES = ("parallel", "sequential", "flat", None)


def _enumerate_config(
    default: str | None, expand: bool, num_samples: int | None, tmc: str, site: Message
) -> dict:
    # Latent sites only; a site's own setting (even None) is left as it is. Without
    # num_samples only sites with a finite support can be marked.
    if site.type != "sample" or site.is_observed or getattr(site.fn, "_is_subsample", False):
        return {}
    config = {
        "enumerate": site.infer.get("enumerate", default),
        "expand": site.infer.get("expand", expand),
    }
    if num_samples is not None:
        config["num_samples"] = site.infer.get("num_samples", num_samples)
        config["tmc"] = site.infer.get("tmc", tmc)
    elif not getattr(site.fn, "has_enumerate_support", False):
        return {}
    return config


def config_enumerate(
    guide: Callable | None = None,
    default: str | None = "parallel",
    expand: bool = False,
    num_samples: int | None = None,
    tmc: str = "diagonal",
) -> Any:
    """Mark every latent discrete sample site of ``guide`` (a model or guide) for enumeration.

    Sites whose distribution has ``has_enumerate_support`` get ``infer["enumerate"] =
    default`` and ``infer["expand"] = expand`` unless they set them already. Use it as
    ``config_enumerate(model)``, ``@config_enumerate`` or
    ``@config_enumerate(default="parallel")``. With ``num_samples`` every latent site
    (continuous ones too) is marked to take that many draws in parallel instead of its
    support (``infer["num_samples"]``, ``infer["tmc"]``: how draws of a site follow the
    draws of its enumerated parents, ``"diagonal"`` or ``"mixture"``), for
    ``TraceTMC_ELBO``.
    """
    if default not in _STRATEGIES:
        raise ValueError(
            f"config_enumerate: default must be one of 'parallel', 'sequential', 'flat' or "
            f"None, got {default!r}"
        )
    if expand not in (True, False):
        raise ValueError(f"config_enumerate: expand must be True or False, got {expand!r}")
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise ValueError(
            f"config_enumerate: num_samples must be None or a positive int, got {num_samples!r}"
        )
    if tmc not in ("diagonal", "mixture"):
        raise ValueError(f"config_enumerate: tmc must be 'diagonal' or 'mixture', got {tmc!r}")
    if guide is None:
        return lambda fn: config_enumerate(
            fn, default=default, expand=expand, num_samples=num_samples, tmc=tmc
        )
    if not callable(guide):
        raise TypeError(
            f"config_enumerate expects a callable model or guide, got {type(guide).__name__}"
        )
    return InferConfigMessenger(
        guide, config_fn=functools.partial(_enumerate_config, default, expand, num_samples, tmc)
    )


class _ModelOnlyEnum(EnumMessenger):
    """The model's enumeration, after the guide's: it continues the guide's dims and ids.

    A model site marked for enumeration that the guide samples is refused, unless the
    guide enumerates it (in parallel or sequentially) or the mark asks for draws
    (``num_samples``, as ``config_enumerate(model, num_samples=n)`` puts on every latent
    site): then the guide's values are replayed, as in Pyro. Sequential enumeration of a
    model-only site is refused.
    """

    def __init__(self, first_available_dim: int, guide_nodes: dict, guide_enum: EnumMessenger):
        super().__init__(first_available_dim=first_available_dim)
        self.guide_nodes = guide_nodes
        self.guide_enum = guide_enum

    def _reset_run(self) -> None:
        super()._reset_run()
        guide_enum = getattr(self, "guide_enum", None)
        if guide_enum is not None:
            self._next_dim = guide_enum._next_dim
            self._next_id = guide_enum._next_id
            self._global_dims = dict(guide_enum._global_dims)

    def _pyro_sample(self, msg: Message) -> None:
        if msg.infer.get("enumerate") is not None and not msg.is_observed:
            site = self.guide_nodes.get(msg.name)
            if site is not None and site.type == "sample" and not site.is_observed:
                if (
                    site.infer.get("_enumerate_id") is None
                    and not _is_sequential(site)
                    and msg.infer.get("num_samples") is None
                ):
                    raise ValueError(
                        f"TraceEnum_ELBO: model site {msg.name!r} is marked for enumeration "
                        f"but the guide samples it too; an enumerated site must appear in the "
                        f"model only (remove it from the guide, or hide it from an autoguide "
                        f"with poutine.block), or be enumerated in the guide"
                    )
                msg.infer = {**msg.infer, "enumerate": None}  # the guide's values win
            elif msg.infer["enumerate"] == "sequential":
                raise NotImplementedError(
                    f"TraceEnum_ELBO: model site {msg.name!r} is marked for sequential "
                    f"enumeration; vitorch enumerates sequentially only guide sites (mark it "
                    f"'parallel' in the model, or sample it in the guide)"
                )
        super()._pyro_sample(msg)


def _is_sequential(site: Message) -> bool:
    """Whether a guide site's values are walked one at a time (not enumerated in parallel)."""
    return site.infer.get("enumerate") == "sequential" and "_enumerate_id" not in site.infer


def _sequential_escape(partial: Trace, msg: Message) -> bool:
    """Stop at a latent site marked sequential that the partial trace does not fix yet."""
    return (
        msg.type == "sample"
        and not msg.is_observed
        and msg.infer.get("enumerate") == "sequential"
        and msg.name not in partial
    )


def _check_single_value(site: Message) -> None:
    """Refuse a sequential site with a batch shape: its values would not be joint."""
    if math.prod(site.fn.batch_shape) != 1:
        raise ValueError(
            f"TraceEnum_ELBO: guide site {site.name!r} is marked for sequential enumeration "
            f"but has batch_shape {tuple(site.fn.batch_shape)}; expected a single value (a "
            f"site outside vectorized plates, vectorize_particles and parallel-enumerated "
            f"parents); enumerate it with 'parallel' instead"
        )


def _sequential_extend(partial: Trace, msg: Message, num_samples: int | None = None) -> list:
    """The partial trace's sequential sites plus ``msg`` at each value of its support.

    Other sites of the abandoned run are dropped, so that they are redrawn (or
    enumerated afresh) in each run. A site must have one value to enumerate: with a
    batch shape (a vectorized plate, the particle plate, or a parent enumerated in
    parallel) its support would be shared across the batch, not enumerated jointly.
    """
    fn = msg.fn
    if not getattr(fn, "has_enumerate_support", False):
        raise ValueError(
            f"TraceEnum_ELBO: guide site {msg.name!r} is marked for sequential enumeration, "
            f"but its distribution {type(fn).__name__} has no finite support to enumerate; "
            f"expected a discrete distribution such as Categorical or Bernoulli"
        )
    _check_single_value(msg)
    base = Trace()
    for name, site in partial.nodes.items():
        if site.type == "sample" and _is_sequential(site):
            base.nodes[name] = site
    return [_extended(base, msg, value) for value in fn.enumerate_support(expand=False)]


def _plate_frames(site: Message) -> frozenset:
    return frozenset(f for f in site.cond_indep_stack if f.dim is not None)


def _plate_scale(frame: Any) -> float:
    return frame.full_size / frame.size if frame.size else 1.0


class TraceEnum_ELBO(ELBO):
    """The ELBO with enumerated discrete sites summed out (Pyro's ``TraceEnum_ELBO``).

    Supported: parallel enumeration of model-only sites whose dependents lie in the
    variable's plates or in plates nested inside them (a global variable with per-item
    terms, per-item variables, both together, subsampled plates, ``markov`` chains of any
    length with dims recycled); parallel enumeration of guide sites, each guide value
    weighted by its guide probability (guide-enumerated variables outside ``markov``; a
    model term may not depend on model- and guide-enumerated variables at once);
    sequential enumeration of guide sites with a single value each (outside vectorized
    plates), the guide rerun per joint value and each run weighted by its probability.
    Other guide sites must be reparameterizable. Other structures raise ``ValueError``.
    ``max_plate_nesting`` is guessed from a run without enumeration when not given.

    With a subsampled plate, each plate's ``size / subsample_size`` multiplies the
    per-item terms when they are summed over the items, after the item's own variables
    are summed out: unbiased for per-item variables. A subsampled plate whose items depend
    on an enumerated variable outside it raises ``ValueError`` (the estimate would be
    biased), as in Pyro.
    """

    def _guess_or_fail(self, model: Callable, guide: Callable, args, kwargs) -> None:
        try:
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        except Exception as err:  # the guessing run has no enumeration; the model may need it
            raise ValueError(
                f"TraceEnum_ELBO could not guess max_plate_nesting from a run of the model "
                f"without enumeration ({type(err).__name__}: {err}); pass "
                f"max_plate_nesting=<the number of nested plates> explicitly"
            ) from err

    def _enum_trace_pairs(self, model, guide, args, kwargs, first_dim: int) -> list:
        """(model trace, guide trace), one pair per joint value of the sequential sites."""

        def run_guide(*args, **kwargs):
            guide_tracer = TraceMessenger()
            guide_enum = EnumMessenger(first_available_dim=first_dim)
            with guide_tracer, guide_enum:
                guide(*args, **kwargs)
            return guide_tracer.trace, guide_enum

        partials: LifoQueue = LifoQueue()
        partials.put(Trace())
        walk = queue(
            run_guide, partials, escape_fn=_sequential_escape, extend_fn=_sequential_extend
        )
        pairs = []
        while not partials.empty():
            guide_trace, guide_enum = walk(*args, **kwargs)
            model_tracer = TraceMessenger()
            # Replay is outermost of the two so that the guard sees the model's own marks.
            with (
                model_tracer,
                ReplayMessenger(trace=guide_trace),
                _ModelOnlyEnum(first_dim, guide_trace.nodes, guide_enum),
            ):
                model(*args, **kwargs)
            pairs.append((model_tracer.trace, guide_trace))
        return pairs

    def _get_traces(self, model: Callable, guide: Callable, args, kwargs):
        if self.max_plate_nesting == math.inf:
            self._guess_or_fail(model, guide, args, kwargs)
        nesting = int(self.max_plate_nesting)
        vectorized = self.vectorize_particles and self.num_particles > 1
        # The particle plate takes the first dim left of the model's plates.
        self._plate_dims = nesting + (1 if vectorized else 0)
        first_dim = -(self._plate_dims + 1)
        if vectorized:
            with PlateMessenger("num_particles_vectorized", self.num_particles, dim=-(nesting + 1)):
                pairs = self._enum_trace_pairs(model, guide, args, kwargs, first_dim)
            yield from pairs
        else:
            for _ in range(self.num_particles):
                yield from self._enum_trace_pairs(model, guide, args, kwargs, first_dim)

    def _particle(self, model_trace: Trace, guide_trace: Trace):
        guide_sites = [
            (name, site)
            for name, site in guide_trace.nodes.items()
            if site.type == "sample" and not site.is_observed and _counts(site)
        ]
        guide_vars = _enum_variables(guide_sites)
        sites = [
            (name, site)
            for name, site in model_trace.nodes.items()
            if site.type == "sample" and _counts(site)
        ]
        for name, site in guide_sites + sites:
            if site.infer.get("num_samples") is not None and "_enumerate_id" in site.infer:
                raise NotImplementedError(
                    f"TraceEnum_ELBO: site {name!r} takes infer['num_samples']="
                    f"{site.infer['num_samples']!r} draws in parallel; vitorch's TraceEnum_ELBO "
                    f"sums over supports only, use TraceTMC_ELBO for sampled sites"
                )
        # A guide-enumerated site is replayed in the model: a variable of the guide's there.
        var_frames = {v: f for v, f in _enum_variables(sites).items() if v not in guide_vars}
        enum_dims = _enum_dims(guide_sites) | _enum_dims(sites)
        terms: list = []
        costs: list[tuple[str, torch.Tensor, frozenset]] = []  # terms over guide variables
        enum_terms: list[tuple[str, torch.Tensor, tuple, frozenset]] = []
        residual_scales: dict[str, float] = {}
        for name, site in sites:
            own = site.infer.get("_enumerate_id") in var_frames
            log_p = _term_log_prob(site) if own else site_log_prob(site)
            store_log_prob(site, log_p)
            factor = _term_factor("TraceEnum_ELBO", name, site, log_p, self._plate_dims, enum_dims)
            if factor is None:
                terms.append(site.log_prob_sum)
            elif guide_vars and not guide_vars.keys().isdisjoint(factor[1]):
                if not var_frames.keys().isdisjoint(factor[1]):
                    raise NotImplementedError(
                        f"TraceEnum_ELBO: model site {name!r} depends on variables enumerated "
                        f"in the guide and in the model at once; vitorch does not support "
                        f"mixing the two (enumerate both in the model, or both in the guide)"
                    )
                costs.append((name, site.log_prob, _plate_frames(site)))
            else:
                residual_scales[name] = self._residual_scale(name, site)
                enum_terms.append((name, *factor, _plate_frames(site)))
        if enum_terms:
            scale = self._common_scale(residual_scales)
            contracted = _contract(enum_terms, var_frames)
            terms.append(contracted if scale == 1.0 else scale * contracted)
        weights: list[tuple[torch.Tensor, frozenset, int]] = []  # (log q, plates, its dim)
        sequential: list[torch.Tensor] = []  # log q of this run's sequential values
        for name, site in guide_sites:
            if _is_sequential(site):
                _check_single_value(site)  # the particle plate broadcasts it only now
                sequential.append(site.fn.log_prob(site.value).sum())
            elif site.infer.get("_enumerate_id") is None and not site.fn.has_rsample:
                raise NotImplementedError(
                    f"TraceEnum_ELBO: guide site {name!r} ({type(site.fn).__name__}) is not "
                    f"reparameterizable; vitorch's TraceEnum_ELBO supports only "
                    f"reparameterized or enumerated guide sites (enumerate discrete sites, "
                    f"or use Trace_ELBO / TraceGraph_ELBO)"
                )
            if name not in model_trace.nodes:
                _warn_missing(name, site)
            log_q = _term_log_prob(site)
            total = store_log_prob(site, log_q)
            if site.infer.get("_enumerate_id") is not None:
                weights.append((log_q, _plate_frames(site), site.infer["_enumerate_dim"]))
            if (
                _term_factor("TraceEnum_ELBO", name, site, log_q, self._plate_dims, enum_dims)
                is None
            ):
                terms.append(-total)
            else:
                costs.append((name, -site.log_prob, _plate_frames(site)))
        for name, cost, frames in costs:
            terms.append(_expectation(name, cost, frames, weights, self._plate_dims))
        elbo = _total(terms)
        if sequential:
            # This run is one term of sum_s q(s) [...]; q(s) carries the gradient to q.
            elbo = functools.reduce(torch.add, sequential).exp() * elbo
        return elbo, elbo

    @staticmethod
    def _residual_scale(name: str, site: Message) -> float:
        """The site's scale apart from its vectorized plates' subsample scales."""
        scale = site.scale
        if isinstance(scale, torch.Tensor):
            if scale.dim() > 0:
                raise ValueError(
                    f"TraceEnum_ELBO: sample site {name!r} depends on an enumerated variable "
                    f"and has a per-element scale of shape {tuple(scale.shape)}; only scalar "
                    f"poutine.scale factors are supported there"
                )
            scale = float(scale)
        for frame in _plate_frames(site):
            scale = scale / _plate_scale(frame)
        return float(scale)

    @staticmethod
    def _common_scale(scales: dict[str, float]) -> float:
        values = list(scales.values())
        first = values[0]
        for name, value in scales.items():
            if not math.isclose(value, first, rel_tol=1e-6):
                raise ValueError(
                    f"TraceEnum_ELBO: the sites that depend on enumerated variables must share "
                    f"one poutine.scale (apart from plate subsampling), but {name!r} has "
                    f"{value} and {next(iter(scales))!r} has {first}"
                )
        return first


def _enum_variables(sites: list) -> dict[int, tuple[str, frozenset]]:
    """Enumerated variable id -> (its site's name, the plates it lives in)."""
    return {
        site.infer["_enumerate_id"]: (name, _plate_frames(site))
        for name, site in sites
        if site.infer.get("_enumerate_id") is not None
    }


def _enum_dims(sites: list) -> set[int]:
    return {
        site.infer["_enumerate_dim"]
        for _, site in sites
        if site.infer.get("_enumerate_dim") is not None
    }


def _term_log_prob(site: Message) -> torch.Tensor:
    """The site's log-density term for variable elimination.

    An enumerated site's own factor is left unmasked: it is a distribution over the
    enumerated values, summing to one, and masking it would count each masked element
    once per value (``log K`` too much). The mask still switches off the sites that
    depend on it. A one-value support is not enumerated, so it is masked as usual.
    """
    dim = site.infer.get("_enumerate_dim")
    if dim is None or site.mask is None:
        return site_log_prob(site)
    log_p = site.fn.log_prob(site.value)
    if log_p.dim() >= -dim and log_p.shape[dim] > 1:
        return log_p
    return site_log_prob(site)


def _term_factor(
    who: str, name: str, site: Message, log_p: torch.Tensor, plate_dims: int, enum_dims: set
) -> tuple[torch.Tensor, tuple[int, ...]] | None:
    """The term as a factor ``(tensor, variable ids)``, or None if it holds no variable.

    ``enum_dims`` are the dims any enumerated variable of the run was given: a term
    with none of them among its batch dims is an ordinary term.

    The factor's tensor has one dim per variable (in the order of the ids), then the
    ``plate_dims`` plate dims; size-1 enumeration dims are dropped. Which variable a
    dim stands for is read from the site's own ``_dim_to_id`` (dims are recycled along
    ``markov`` chains, so the same dim may be different variables at different sites).
    """
    shape = log_p.shape
    var_dims = [d for d in range(-len(shape), -plate_dims) if shape[d] > 1]
    if enum_dims.isdisjoint(var_dims):
        return None
    dim_to_id = site.infer.get("_dim_to_id", {})
    for d in var_dims:
        if d not in dim_to_id:
            raise ValueError(
                f"{who}: sample site {name!r} has a batch dim {d} of size {shape[d]} left of "
                f"the {plate_dims} plate dims that is not the dim of an enumerated variable "
                f"it can depend on; increase max_plate_nesting (or, in a markov chain, keep "
                f"the site within history of the variables it uses)"
            )
    plates = shape[len(shape) - plate_dims :] if plate_dims else ()
    if any(n != 1 for n in plates):
        frames = [f.dim for f in site.cond_indep_stack]
        for d, n in zip(range(-plate_dims, 0), plates):
            if n != 1 and d not in frames:
                raise ValueError(
                    f"{who}: sample site {name!r} depends on an enumerated variable and has "
                    f"a batch dim {d} of size {n} that no enclosing plate declares; wrap it "
                    f"in a plate or move it to the event shape (.to_event())"
                )
    t = log_p
    if len(var_dims) + plate_dims != len(shape):  # size-1 dims to drop
        t = log_p.reshape([shape[d] for d in var_dims] + list(plates))
    return t, tuple([dim_to_id[d] for d in var_dims])


def _var_dims(t: torch.Tensor, plate_dims: int) -> set[int]:
    return {d for d in range(-t.dim(), -plate_dims) if t.shape[d] > 1}


def _expectation(
    name: str, cost: torch.Tensor, frames: frozenset, weights: list, plate_dims: int
) -> torch.Tensor:
    """``sum_g q(g) cost(g)``, summed over plates, for a cost over guide-enumerated ``g``.

    The weights are the guide's enumerated factors ``log q`` in the cost's plates that
    share a dim with it, with those they share dims with in turn (a variable enumerated
    conditionally on another needs the other's weight too). Guide-enumerated dims are
    never recycled, so the terms broadcast against each other as they are.
    """
    dims = _var_dims(cost, plate_dims)
    chosen: list[torch.Tensor] = []
    covered: set[int] = set()  # the dims of the chosen weights' own variables
    pending = [(q, _var_dims(q, plate_dims), d) for q, f, d in weights if f <= frames]
    grew = True
    while grew:
        grew = False
        for item in list(pending):
            if not item[1].isdisjoint(dims):
                pending.remove(item)
                chosen.append(item[0])
                dims |= item[1]
                covered.add(item[2])
                grew = True
    if dims - covered:
        raise ValueError(
            f"TraceEnum_ELBO: site {name!r} depends on a variable enumerated in the guide "
            f"outside the plates of {name!r}; this dependency structure is not supported"
        )
    weight = functools.reduce(torch.add, chosen).exp()
    return (weight * cost).sum()


def _align(t: torch.Tensor, vs: tuple, union: tuple) -> torch.Tensor:
    """``t`` (variables ``vs``) with one dim per variable of ``union``, in that order."""
    if vs == union:
        return t
    pos = {v: i for i, v in enumerate(union)}
    order = sorted(range(len(vs)), key=lambda i: pos[vs[i]])
    if order != list(range(len(vs))):
        t = t.permute(order + list(range(len(vs), t.dim())))
    sizes = dict(zip(sorted(vs, key=pos.__getitem__), t.shape))
    return t.reshape([sizes.get(v, 1) for v in union] + list(t.shape[len(vs) :]))


def _add(factors: list) -> tuple[torch.Tensor, tuple]:
    """The sum of factors ``(tensor, variable ids)``, over the union of their variables."""
    if len(factors) == 1:
        return factors[0]
    union = tuple(dict.fromkeys(v for _, vs in factors for v in vs))
    return functools.reduce(torch.add, [_align(t, vs, union) for t, vs in factors]), union


def _reduce_var(factor: tuple, v: int, reduce: Callable) -> tuple[torch.Tensor, tuple]:
    t, vs = factor
    i = vs.index(v)
    return reduce(t, i), vs[:i] + vs[i + 1 :]


def _logsumexp(t: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(t, dim=dim)


def _contract(terms: list[tuple[str, torch.Tensor, tuple, frozenset]], var_frames: dict) -> Any:
    """``log sum_z exp(sum of terms)`` over the enumerated variables, summed over plates.

    ``terms`` are (site name, unscaled factor tensor, its variable ids, plates);
    ``var_frames`` maps each variable id to (site name, plates of that variable).
    """
    total: list[torch.Tensor] = []
    for t, outer in _walk_plates("TraceEnum_ELBO", terms, var_frames, _logsumexp):
        if not outer:
            total.append(t.sum())
    return _total(total)


def _walk_plates(
    who: str,
    terms: list,
    var_frames: dict,
    reduce: Callable,
    kept: list | None = None,
    scaled: bool = True,
) -> Iterator[tuple[torch.Tensor, tuple]]:
    """Eliminate the variables on the plate tree; yield what each group leaves behind.

    Terms are grouped by their plate set; from the deepest set outwards, each group of
    terms sharing variables has the set's own variables removed (``reduce``), the plates
    it does not share with its remaining variables summed over (times the subsample
    scale when ``scaled``), and joins the group of those variables' plate set. Each
    group's result is yielded as (tensor, remaining variables); ``kept``, if
    given, collects (variable, the factor it was removed from, plate set) in order.
    """
    levels: dict[frozenset, list] = {}
    for name, t, vs, frames in terms:
        for v in vs:
            var_name, frames_v = var_frames[v]
            if not frames_v <= frames:
                raise ValueError(
                    f"{who}: site {name!r} depends on the enumerated variable "
                    f"{var_name!r} but is outside plate(s) "
                    f"{sorted(f.name for f in frames_v - frames)} of that variable; this "
                    f"dependency structure is not supported"
                )
        levels.setdefault(frames, []).append((t, vs))
    while levels:
        # Deepest plate set first; ties are independent of each other.
        level = max(levels, key=lambda s: (len(s), sorted(f.dim for f in s)))
        for component in _components(levels.pop(level), level, var_frames):
            t, outer = _eliminate(component, level, var_frames, reduce, kept)
            parent: frozenset = frozenset().union(*(var_frames[v][1] for v in outer))
            if outer and (parent == level or all(var_frames[v][1] != parent for v in outer)):
                names = sorted(var_frames[v][0] for v in outer)
                raise ValueError(
                    f"{who}: terms in plates {sorted(f.name for f in level)} depend "
                    f"on the enumerated variables {names}, whose plates do not nest in one "
                    f"chain inside those plates; this dependency structure is not supported"
                )
            for frame in level - parent:
                if t.shape[frame.dim] != 1:
                    t = t.sum(frame.dim, keepdim=True)
                scale = _plate_scale(frame)
                if scaled and scale != 1.0:
                    if outer:
                        # log sum_z prod_items over a subsample, rescaled, is not an
                        # unbiased estimate of the full-data term (Pyro refuses it too).
                        names = sorted(var_frames[v][0] for v in outer)
                        raise ValueError(
                            f"{who}: plate {frame.name!r} is subsampled, but its "
                            f"items depend on the enumerated variable(s) {names} outside "
                            f"it; summing those out over a subsample gives a biased loss. "
                            f"Use the full plate there, or sample those variables in the "
                            f"guide instead of enumerating them"
                        )
                    t = t * scale
            if outer:
                levels.setdefault(parent, []).append((t, outer))
            yield t, outer


def _eliminate(
    factors: list, level: frozenset, var_frames: dict, reduce: Callable, kept: list | None
) -> tuple[torch.Tensor, tuple]:
    """Remove this level's variables from the sum of ``factors``, one variable at a time.

    Each step adds only the factors that hold the variable and reduces it away
    (variable elimination). The next variable is the one whose combined factor is
    smallest, the earliest-created on ties: a chain ``x1 - x2 - ... - xT`` is then
    removed from its start (the forward algorithm), ``T K^2`` instead of ``K^T``.
    """
    live = dict(enumerate(factors))
    holders: dict[int, set[int]] = {}
    sizes: dict[int, int] = {}
    for key, (t, vs) in live.items():
        for i, v in enumerate(vs):
            if var_frames[v][1] == level:
                holders.setdefault(v, set()).add(key)
            sizes[v] = t.shape[i]
    next_key = len(live)
    while holders:

        def cost(v: int) -> tuple[int, int]:
            union = {u for key in holders[v] for u in live[key][1]}
            return math.prod(sizes[u] for u in union), v

        v = min(holders, key=cost)
        keys = holders.pop(v)
        joint = _add([live.pop(key) for key in sorted(keys)])
        if kept is not None:
            kept.append((v, joint, level))
        t, vs = _reduce_var(joint, v, reduce)
        live[next_key] = (t, vs)
        for u in vs:
            if u in holders:
                holders[u] -= keys
                holders[u].add(next_key)
        next_key += 1
    return _add(list(live.values()))


def _components(group: list, level: frozenset, var_frames: dict) -> list[list]:
    """Split a level's factors into groups that share none of the level's own variables.

    Summing each group's variables out on its own keeps independent variables (say, one
    per iteration of a sequential plate) from being enumerated jointly, whose cost would
    be the product of their supports.
    """
    if len(group) == 1:
        return [group]
    owner: dict[int, int] = {}  # the level's variable -> index of its group
    groups: list[list | None] = []
    for factor in group:
        own = [v for v in factor[1] if var_frames[v][1] == level]
        merged = sorted({owner[v] for v in own if v in owner})
        target = merged[0] if merged else len(groups)
        if not merged:
            groups.append([])
        bucket = groups[target]
        for i in merged[1:]:
            bucket.extend(groups[i])  # type: ignore[union-attr, arg-type]
            groups[i] = None
        for v, i in list(owner.items()):
            if i in merged:
                owner[v] = target
        for v in own:
            owner[v] = target
        bucket.append(factor)  # type: ignore[union-attr]
    return [g for g in groups if g]


# Pyro's JIT variant only cuts Python overhead; vitorch gives the plain one.
JitTraceEnum_ELBO = TraceEnum_ELBO
