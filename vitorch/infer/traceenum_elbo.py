"""``TraceEnum_ELBO``: the ELBO with discrete model latents summed out exactly.

Model sites marked ``infer={"enumerate": "parallel"}`` (see :func:`config_enumerate`) are
not sampled: :class:`vitorch.handlers.enum.EnumMessenger` gives each its whole support in
a dim of its own, left of the plate dims, and the model's log-density terms broadcast over
those dims. The estimate is then

    log sum_{enumerated z} p(x, z, w) - log q(w)

with ``w`` the guide's draws, where the sum over ``z`` is done by variable elimination on
the tree of plates: terms are grouped by the set of plates they live in; from the deepest
set outwards, a group's terms are added, the enumerated variables of exactly that plate
set are summed out (``logsumexp``), the plates the group does not share with the
variables still in its terms are summed over (times their subsample scale), and the
result joins the group of those variables' plate set. Summing an item's variables out
before summing over items is what keeps the cost linear in the plate sizes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from ..handlers.enum import EnumMessenger
from ..handlers.infer_config import InferConfigMessenger
from ..handlers.plate import PlateMessenger
from ..handlers.replay import ReplayMessenger
from ..handlers.trace import Trace, TraceMessenger, site_log_prob, store_log_prob
from ..runtime import Message
from .elbo import ELBO, _counts, _total, _warn_missing

__all__ = ["JitTraceEnum_ELBO", "TraceEnum_ELBO", "config_enumerate"]

_STRATEGIES = ("parallel", "sequential", "flat", None)


def _enumerate_config(default: str | None, expand: bool, site: Message) -> dict:
    # Only latent discrete sites; a site's own setting (even None) is left as it is.
    if site.type != "sample" or site.is_observed or getattr(site.fn, "_is_subsample", False):
        return {}
    if not getattr(site.fn, "has_enumerate_support", False):
        return {}
    return {
        "enumerate": site.infer.get("enumerate", default),
        "expand": site.infer.get("expand", expand),
    }


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
    ``@config_enumerate(default="parallel")``. ``num_samples`` and ``tmc`` (Pyro's local
    Monte Carlo sampling) are not supported.
    """
    if default not in _STRATEGIES:
        raise ValueError(
            f"config_enumerate: default must be one of 'parallel', 'sequential', 'flat' or "
            f"None, got {default!r}"
        )
    if expand not in (True, False):
        raise ValueError(f"config_enumerate: expand must be True or False, got {expand!r}")
    if num_samples is not None:
        raise NotImplementedError(
            f"config_enumerate: num_samples={num_samples!r} (local Monte Carlo sampling) is "
            f"not supported by vitorch; leave num_samples=None for exhaustive enumeration"
        )
    if guide is None:
        return lambda fn: config_enumerate(fn, default=default, expand=expand)
    if not callable(guide):
        raise TypeError(
            f"config_enumerate expects a callable model or guide, got {type(guide).__name__}"
        )
    return InferConfigMessenger(
        guide, config_fn=functools.partial(_enumerate_config, default, expand)
    )


class _ModelOnlyEnum(EnumMessenger):
    """EnumMessenger that refuses to enumerate a site the guide also samples."""

    def __init__(self, first_available_dim: int, guide_nodes: dict):
        super().__init__(first_available_dim=first_available_dim)
        self.guide_nodes = guide_nodes

    def _pyro_sample(self, msg: Message) -> None:
        if msg.infer.get("enumerate") is not None and not msg.is_observed:
            site = self.guide_nodes.get(msg.name)
            if site is not None and site.type == "sample" and not site.is_observed:
                raise ValueError(
                    f"TraceEnum_ELBO: model site {msg.name!r} is marked for enumeration but "
                    f"the guide samples it too; an enumerated site must appear in the model "
                    f"only (remove it from the guide, or hide it from an autoguide with "
                    f"poutine.block)"
                )
        super()._pyro_sample(msg)


def _plate_frames(site: Message) -> frozenset:
    return frozenset(f for f in site.cond_indep_stack if f.dim is not None)


def _plate_scale(frame: Any) -> float:
    return frame.full_size / frame.size if frame.size else 1.0


def _sizes_at(t: torch.Tensor, dims: Any) -> list[int]:
    return [d for d in dims if t.dim() >= -d and t.shape[d] > 1]


class TraceEnum_ELBO(ELBO):
    """The ELBO with the model's enumerated discrete sites summed out (Pyro's ``TraceEnum_ELBO``).

    Supported (v1): parallel enumeration of model-only sites whose dependents lie in the
    variable's plates or in plates nested inside them (a global variable with per-item
    terms, per-item variables, both together, subsampled plates); guide sites must be
    reparameterizable and not enumerated. Other structures raise ``ValueError``.
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

    def _enum_trace_pair(self, model, guide, args, kwargs, first_dim: int):
        guide_tracer = TraceMessenger()
        with guide_tracer:
            guide(*args, **kwargs)
        guide_trace = guide_tracer.trace
        for name, site in guide_trace.nodes.items():
            if site.type == "sample" and not site.is_observed and site.infer.get("enumerate"):
                raise ValueError(
                    f"TraceEnum_ELBO: guide site {name!r} is marked for enumeration "
                    f"(infer['enumerate']={site.infer['enumerate']!r}); guide-side enumeration "
                    f"is not supported by vitorch, enumerate discrete sites in the model only"
                )
        model_tracer = TraceMessenger()
        # Replay is outermost of the two so that the guard sees the model's own marks.
        with (
            model_tracer,
            ReplayMessenger(trace=guide_trace),
            _ModelOnlyEnum(first_dim, guide_trace.nodes),
        ):
            model(*args, **kwargs)
        return guide_trace, model_tracer.trace

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
                pair = self._enum_trace_pair(model, guide, args, kwargs, first_dim)
            yield pair[1], pair[0]
        else:
            for _ in range(self.num_particles):
                guide_trace, model_trace = self._enum_trace_pair(
                    model, guide, args, kwargs, first_dim
                )
                yield model_trace, guide_trace

    def _particle(self, model_trace: Trace, guide_trace: Trace):
        sites = [
            (name, site)
            for name, site in model_trace.nodes.items()
            if site.type == "sample" and _counts(site)
        ]
        # enumeration dim -> (site name, the plates the variable lives in)
        enum_vars: dict[int, tuple[str, frozenset]] = {}
        for name, site in sites:
            dim = site.infer.get("_enumerate_dim")
            if dim is not None:
                enum_vars[dim] = (name, _plate_frames(site))
        terms: list = []
        enum_terms: list[tuple[str, torch.Tensor, frozenset]] = []
        residual_scales: dict[str, float] = {}
        for name, site in sites:
            log_p = site_log_prob(site)
            store_log_prob(site, log_p)
            deps = _sizes_at(log_p, enum_vars) if enum_vars else []
            if not deps:
                terms.append(site.log_prob_sum)
                continue
            self._check_term_dims(name, site, log_p, enum_vars)
            residual_scales[name] = self._residual_scale(name, site)
            enum_terms.append((name, log_p, _plate_frames(site)))
        if enum_terms:
            scale = self._common_scale(residual_scales)
            contracted = _contract(enum_terms, enum_vars)
            terms.append(contracted if scale == 1.0 else scale * contracted)
        for name, site in guide_trace.nodes.items():
            if site.type != "sample" or site.is_observed or not _counts(site):
                continue
            if not site.fn.has_rsample:
                raise NotImplementedError(
                    f"TraceEnum_ELBO: guide site {name!r} ({type(site.fn).__name__}) is not "
                    f"reparameterizable; vitorch's TraceEnum_ELBO supports only "
                    f"reparameterized guide sites (enumerate discrete sites in the model, or "
                    f"use Trace_ELBO / TraceGraph_ELBO)"
                )
            if name not in model_trace.nodes:
                _warn_missing(name, site)
            terms.append(-store_log_prob(site, site_log_prob(site)))
        elbo = _total(terms)
        return elbo, elbo

    def _check_term_dims(
        self, name: str, site: Message, log_p: torch.Tensor, enum_vars: dict
    ) -> None:
        """Every batch dim of a term is a plate it is in, or an enumeration dim."""
        frames = {f.dim for f in site.cond_indep_stack if f.dim is not None}
        for d in range(-log_p.dim(), 0):
            if log_p.shape[d] == 1 or d in frames or d in enum_vars:
                continue
            if -d > self._plate_dims:
                raise ValueError(
                    f"TraceEnum_ELBO: sample site {name!r} has a batch dim {d} of size "
                    f"{log_p.shape[d]} left of the {self._plate_dims} plate dims that is not "
                    f"an enumeration dim; increase max_plate_nesting"
                )
            raise ValueError(
                f"TraceEnum_ELBO: sample site {name!r} depends on an enumerated variable "
                f"and has a batch dim {d} of size {log_p.shape[d]} that no enclosing plate "
                f"declares; wrap it in a plate or move it to the event shape (.to_event())"
            )

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


def _contract(terms: list[tuple[str, torch.Tensor, frozenset]], enum_vars: dict) -> torch.Tensor:
    """``log sum_z exp(sum of terms)`` over the enumerated variables, summed over plates.

    ``terms`` are (site name, unscaled log-density, plates); ``enum_vars`` maps each
    enumeration dim to (site name, plates of that variable).
    """
    width = -min(enum_vars)
    levels: dict[frozenset, list[torch.Tensor]] = {}
    for name, t, frames in terms:
        for d in _sizes_at(t, enum_vars):
            var_name, var_frames = enum_vars[d]
            if not var_frames <= frames:
                raise ValueError(
                    f"TraceEnum_ELBO: site {name!r} depends on the enumerated variable "
                    f"{var_name!r} but is outside plate(s) "
                    f"{sorted(f.name for f in var_frames - frames)} of that variable; this "
                    f"dependency structure is not supported"
                )
        if t.dim() < width:
            t = t.reshape((1,) * (width - t.dim()) + tuple(t.shape))
        levels.setdefault(frames, []).append(t)
    total: list[torch.Tensor] = []
    while levels:
        # Deepest plate set first; ties are independent of each other.
        level = max(levels, key=lambda s: (len(s), sorted(f.dim for f in s)))
        for component in _components(levels.pop(level), level, enum_vars):
            x = _eliminate(component, level, enum_vars)
            outer = _sizes_at(x, enum_vars)
            parent: frozenset = frozenset()
            for d in outer:
                parent = parent | enum_vars[d][1]
            if outer and (parent == level or all(enum_vars[d][1] != parent for d in outer)):
                names = sorted(enum_vars[d][0] for d in outer)
                raise ValueError(
                    f"TraceEnum_ELBO: terms in plates {sorted(f.name for f in level)} depend "
                    f"on the enumerated variables {names}, whose plates do not nest in one "
                    f"chain inside those plates; this dependency structure is not supported"
                )
            for frame in level - parent:
                if x.shape[frame.dim] != 1:
                    x = x.sum(frame.dim, keepdim=True)
                scale = _plate_scale(frame)
                if scale != 1.0:
                    if outer:
                        # log sum_z prod_items over a subsample, rescaled, is not an
                        # unbiased estimate of the full-data term (Pyro refuses it too).
                        names = sorted(enum_vars[d][0] for d in outer)
                        raise ValueError(
                            f"TraceEnum_ELBO: plate {frame.name!r} is subsampled, but its "
                            f"items depend on the enumerated variable(s) {names} outside "
                            f"it; summing those out over a subsample gives a biased loss. "
                            f"Use the full plate there, or sample those variables in the "
                            f"guide instead of enumerating them"
                        )
                    x = x * scale
            if outer:
                levels.setdefault(parent, []).append(x)
            else:
                total.append(x.sum())
    return _total(total)


def _eliminate(factors: list[torch.Tensor], level: frozenset, enum_vars: dict) -> torch.Tensor:
    """Sum this level's variables out of the sum of ``factors``, one variable at a time.

    Each step adds only the factors that hold the variable and log-sum-exps it away
    (variable elimination, cheapest variable first: the one whose combined factor is
    smallest). A chain ``x1 - x2 - ... - xT`` then costs ``T K^2`` instead of the ``K^T``
    of adding every factor first; the result is the same sum.
    """
    factors = list(factors)
    while True:
        local = {d for f in factors for d in _sizes_at(f, enum_vars) if enum_vars[d][1] == level}
        if not local:
            return functools.reduce(torch.add, factors)

        d = min(sorted(local), key=lambda d, fs=factors: _combined_size(fs, d))
        holding = [f for f in factors if _holds(f, d)]
        factors = [f for f in factors if not _holds(f, d)]
        factors.append(torch.logsumexp(functools.reduce(torch.add, holding), dim=d, keepdim=True))


def _combined_size(factors: list[torch.Tensor], d: int) -> int:
    return math.prod(torch.broadcast_shapes(*(f.shape for f in factors if _holds(f, d))))


def _holds(t: torch.Tensor, d: int) -> bool:
    return t.dim() >= -d and t.shape[d] > 1


def _components(group: list[torch.Tensor], level: frozenset, enum_vars: dict) -> list[list]:
    """Split a level's terms into groups that share none of the level's own variables.

    Summing each group's variables out on its own keeps independent variables (say, one
    per iteration of a sequential plate) from being enumerated jointly, whose cost would
    be the product of their supports.
    """
    owner: dict[int, int] = {}  # the level's enumeration dim -> index of its group
    groups: list[list[torch.Tensor] | None] = []
    for t in group:
        dims = [d for d in _sizes_at(t, enum_vars) if enum_vars[d][1] == level]
        merged = sorted({owner[d] for d in dims if d in owner})
        target = merged[0] if merged else len(groups)
        if not merged:
            groups.append([])
        bucket = groups[target]
        for i in merged[1:]:
            bucket.extend(groups[i])  # type: ignore[union-attr, arg-type]
            groups[i] = None
        for d, i in list(owner.items()):
            if i in merged:
                owner[d] = target
        for d in dims:
            owner[d] = target
        bucket.append(t)  # type: ignore[union-attr]
    return [g for g in groups if g]


# Pyro's JIT variant only cuts Python overhead; vitorch gives the plain one.
JitTraceEnum_ELBO = TraceEnum_ELBO
