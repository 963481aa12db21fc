"""``infer_discrete``: draw a model's enumerated discrete sites from their exact posterior.

The model is run once under parallel enumeration (as for ``TraceEnum_ELBO``), which gives
every log-density term a tensor over the supports of the enumerated variables it depends
on. A forward pass of variable elimination on the tree of plates then removes those
variables one at a time, keeping for each the combined factor it was removed from: with
``temperature=1`` variables are summed out (``logsumexp``), with ``temperature=0`` maxed
out. A backward pass visits the variables in the reverse order; each one's kept factor,
with the values already chosen for the variables that were removed after it plugged in,
is its conditional given them: a draw from it (Gumbel-max) gives a joint posterior
sample, its argmax the joint MAP assignment (Viterbi on a chain). The model is then run
again with those values in place of the enumerated sites, so its return value and any
trace of it see ordinary values in the plates' batch shapes.

Like ``TraceEnum_ELBO``, only model-side parallel enumeration over plates that nest in a
tree is supported (a chain under ``markov`` included; without dim recycling it is limited
to about ``64 - max_plate_nesting`` enumerated sites per run). The terms are used unscaled
(subsample and ``scale`` factors do not change a conditional), with their masks applied.
As in Pyro, the second run draws the model's other latent sites afresh (wrap the model in
``replay`` to fix them); plate subsample indices, unlike in Pyro, are kept from the first.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..handlers.block import BlockMessenger
from ..handlers.enum import EnumMessenger
from ..handlers.trace import TraceMessenger, site_log_prob
from ..runtime import Message, Messenger
from .traceenum_elbo import _combined_size, _components, _holds, _plate_frames, _sizes_at

__all__ = ["infer_discrete"]


def infer_discrete(
    fn: Callable | None = None,
    first_available_dim: int | None = None,
    temperature: int = 1,
    *,
    strict_enumeration_warning: bool = True,
) -> Callable:
    """Run ``fn`` with its enumerated discrete sites drawn from their posterior given the data.

    Sites marked ``infer={"enumerate": "parallel"}`` (see ``config_enumerate``) take a
    joint posterior sample (``temperature=1``) or the joint MAP assignment
    (``temperature=0``) given every other site of the run. ``first_available_dim`` is the
    rightmost tensor dim free for enumeration, ``-(max_plate_nesting + 1)``. Without
    ``fn``, returns a decorator: ``infer_discrete(first_available_dim=-1, temperature=0)``.
    With ``strict_enumeration_warning`` a run that finds no enumerated site warns.
    """
    if (
        isinstance(first_available_dim, bool)
        or not isinstance(first_available_dim, int)
        or first_available_dim >= 0
    ):
        raise ValueError(
            f"infer_discrete: first_available_dim must be a negative int, "
            f"-(max_plate_nesting + 1), got {first_available_dim!r}"
        )
    if isinstance(temperature, bool) or temperature not in (0, 1):
        raise ValueError(
            f"infer_discrete: temperature must be 0 (MAP) or 1 (posterior sample), "
            f"got {temperature!r}"
        )
    if fn is None:
        return functools.partial(
            infer_discrete,
            first_available_dim=first_available_dim,
            temperature=temperature,
            strict_enumeration_warning=strict_enumeration_warning,
        )
    if not callable(fn):
        raise TypeError(f"infer_discrete: fn must be a callable model, got {type(fn).__name__}")

    @functools.wraps(fn, updated=())
    def posterior_model(*args: Any, **kwargs: Any) -> Any:
        values = _posterior_values(
            fn, first_available_dim, int(temperature), strict_enumeration_warning, args, kwargs
        )
        with _PosteriorReplay(values):
            return fn(*args, **kwargs)

    return posterior_model


class _PosteriorReplay(Messenger):
    """Give the named sample sites (not observed) the values chosen by ``infer_discrete``."""

    def __init__(self, values: dict[str, torch.Tensor]):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: Message) -> None:
        if msg.is_observed or msg.name not in self.values:
            return
        msg.value = self.values[msg.name]
        msg.done = True


def _is_term(site: Message) -> bool:
    return (
        site.type == "sample"
        and not getattr(site.fn, "_is_subsample", False)
        and not site.infer.get("_deterministic")
    )


def _posterior_values(
    fn: Callable,
    first_available_dim: int,
    temperature: int,
    strict_enumeration_warning: bool,
    args: tuple,
    kwargs: dict,
) -> dict[str, torch.Tensor]:
    """The value of each enumerated site, chosen from the posterior of one enumerated run.

    Plate subsample indices drawn in that run are returned too, so that the replayed run
    uses the items the choices were made for.
    """
    tracer = TraceMessenger()
    # Hidden from outer handlers: only the replayed run below is the model's real run.
    with BlockMessenger(), EnumMessenger(first_available_dim=first_available_dim), tracer:
        fn(*args, **kwargs)
    nodes = tracer.trace.nodes
    values = {
        name: site.value
        for name, site in nodes.items()
        if site.type == "sample" and getattr(site.fn, "_is_subsample", False)
    }
    sites = [(name, site) for name, site in nodes.items() if _is_term(site)]
    for name, site in sites:
        for frame in _plate_frames(site):
            if frame.dim <= first_available_dim:
                raise ValueError(
                    f"infer_discrete: site {name!r} is in plate {frame.name!r} at dim "
                    f"{frame.dim}, which is not right of first_available_dim="
                    f"{first_available_dim}; pass first_available_dim={frame.dim - 1} or less"
                )
    # enumeration dim -> (site name, the plates the variable lives in)
    enum_vars: dict[int, tuple[str, frozenset]] = {
        site.infer["_enumerate_dim"]: (name, _plate_frames(site))
        for name, site in sites
        if site.infer.get("_enumerate_dim") is not None
    }
    if not enum_vars:
        if strict_enumeration_warning:
            warnings.warn(
                "infer_discrete found no sample site marked for enumeration; mark discrete "
                "sites with config_enumerate or infer={'enumerate': 'parallel'}",
                stacklevel=3,
            )
        return values
    width = -min(enum_vars)
    terms = []
    for name, site in sites:
        log_p = site_log_prob(site)
        if _sizes_at(log_p, enum_vars):
            _check_term_dims(name, site, log_p, enum_vars)
            terms.append((name, log_p, _plate_frames(site)))
    reduce = _logsumexp if temperature == 1 else _amax
    choices = _backward(_forward(terms, enum_vars, width, reduce), enum_vars, width, temperature)
    for name, site in sites:
        if site.infer.get("_enumerate_dim") is not None:
            values[name] = _select(site, choices.get(site.infer["_enumerate_dim"]), width)
    return values


def _check_term_dims(name: str, site: Message, log_p: torch.Tensor, enum_vars: dict) -> None:
    """Every batch dim of a term is a plate it is in, or an enumeration dim."""
    frames = {f.dim for f in site.cond_indep_stack if f.dim is not None}
    for d in range(-log_p.dim(), 0):
        if log_p.shape[d] != 1 and d not in frames and d not in enum_vars:
            raise ValueError(
                f"infer_discrete: sample site {name!r} depends on an enumerated variable and "
                f"has a batch dim {d} of size {log_p.shape[d]} that no enclosing plate "
                f"declares; wrap it in a plate or move it to the event shape (.to_event())"
            )


def _logsumexp(t: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(t, dim=dim, keepdim=True)


def _amax(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.amax(dim=dim, keepdim=True)


def _forward(
    terms: list[tuple[str, torch.Tensor, frozenset]], enum_vars: dict, width: int, reduce: Callable
) -> list[tuple[int, torch.Tensor, frozenset]]:
    """Eliminate every enumerated variable; return (dim, kept factor, plates) in order.

    The plate tree is walked as in ``TraceEnum_ELBO``: deepest plate set first, its own
    variables removed from each group of terms, the result reduced over the plates its
    remaining variables are not in (a sum of logs: the items are independent given
    those variables) and handed to those variables' plate set.
    """
    levels: dict[frozenset, list[torch.Tensor]] = {}
    for name, t, frames in terms:
        for d in _sizes_at(t, enum_vars):
            var_name, var_frames = enum_vars[d]
            if not var_frames <= frames:
                raise ValueError(
                    f"infer_discrete: site {name!r} depends on the enumerated variable "
                    f"{var_name!r} but is outside plate(s) "
                    f"{sorted(f.name for f in var_frames - frames)} of that variable; this "
                    f"dependency structure is not supported"
                )
        levels.setdefault(frames, []).append(t.reshape((1,) * (width - t.dim()) + t.shape))
    kept: list[tuple[int, torch.Tensor, frozenset]] = []
    while levels:
        level = max(levels, key=lambda s: (len(s), sorted(f.dim for f in s)))
        for component in _components(levels.pop(level), level, enum_vars):
            x = _eliminate(component, level, enum_vars, reduce, kept)
            outer = _sizes_at(x, enum_vars)
            if not outer:
                continue  # a normalizer: no variable left to choose
            parent: frozenset = frozenset().union(*(enum_vars[d][1] for d in outer))
            if parent == level or all(enum_vars[d][1] != parent for d in outer):
                names = sorted(enum_vars[d][0] for d in outer)
                raise ValueError(
                    f"infer_discrete: terms in plates {sorted(f.name for f in level)} depend "
                    f"on the enumerated variables {names}, whose plates do not nest in one "
                    f"chain inside those plates; this dependency structure is not supported"
                )
            for frame in level - parent:
                if x.shape[frame.dim] != 1:
                    x = x.sum(frame.dim, keepdim=True)
            levels.setdefault(parent, []).append(x)
    return kept


def _eliminate(
    factors: list[torch.Tensor], level: frozenset, enum_vars: dict, reduce: Callable, kept: list
) -> torch.Tensor:
    """Remove this level's variables from the sum of ``factors``, cheapest first.

    Appends each variable's combined factor (the sum of the factors holding it) to
    ``kept`` before reducing it away.
    """
    factors = list(factors)
    while True:
        local = {d for f in factors for d in _sizes_at(f, enum_vars) if enum_vars[d][1] == level}
        if not local:
            return functools.reduce(torch.add, factors)
        d = min(sorted(local), key=lambda d, fs=factors: _combined_size(fs, d))
        joint = functools.reduce(torch.add, [f for f in factors if _holds(f, d)])
        factors = [f for f in factors if not _holds(f, d)]
        kept.append((d, joint, level))
        factors.append(reduce(joint, d))


def _backward(
    kept: list[tuple[int, torch.Tensor, frozenset]], enum_vars: dict, width: int, temperature: int
) -> dict[int, torch.Tensor]:
    """Choose each variable's support index from its kept factor, last eliminated first."""
    choices: dict[int, torch.Tensor] = {}
    for d, joint, level in reversed(kept):
        for e in _sizes_at(joint, enum_vars):
            if e != d:
                joint = torch.take_along_dim(joint, choices[e], dim=e)
        # Every item of the variable's plates gets a choice of its own.
        plate_shape = [1] * width
        for frame in level:
            plate_shape[frame.dim] = frame.size
        joint = joint.expand(torch.broadcast_shapes(joint.shape, torch.Size(plate_shape)))
        if temperature == 1:
            # Gumbel-max: argmax of logits plus Gumbel noise is a draw from softmax(logits).
            u = torch.rand_like(joint).clamp_(min=torch.finfo(joint.dtype).tiny)
            joint = joint - (-u.log()).log()
        choices[d] = joint.argmax(dim=d, keepdim=True)
    return choices


def _select(site: Message, index: torch.Tensor | None, width: int) -> torch.Tensor:
    """The site's enumerated value at the chosen support index, enumeration dims removed.

    ``index`` is None for a variable with a single support value (never eliminated).
    """
    d = site.infer["_enumerate_dim"]
    value = site.value
    event_dim = len(site.fn.event_shape)
    batch = value.shape[: value.dim() - event_dim]
    event = value.shape[value.dim() - event_dim :]
    value = value.reshape((1,) * (width - len(batch)) + value.shape)
    if index is None:
        index = torch.zeros((1,) * width, dtype=torch.long, device=value.device)
    target = list(torch.broadcast_shapes(value.shape[:width], index.shape))
    target[d] = 1
    index = index.expand(target).reshape(target + [1] * event_dim).expand(target + list(event))
    target[d] = value.shape[d - event_dim]
    chosen = torch.gather(value.expand(target + list(event)), d - event_dim, index)
    # Drop the size-1 dims left of the plates (enumeration dims included), as Pyro does.
    lead = 0
    while lead < width and chosen.shape[lead] == 1:
        lead += 1
    return chosen.reshape(chosen.shape[lead:])
