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
tree is supported (chains under ``markov`` of any length included: their dims are
recycled, and variables are told apart by the ids the enumeration gives them). The terms
are used unscaled (subsample and ``scale`` factors do not change a conditional), masked
as in ``TraceEnum_ELBO`` (an enumerated site's own factor is not).
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
from ..handlers.trace import TraceMessenger
from ..runtime import Message, Messenger
from .traceenum_elbo import (
    _enum_dims,
    _enum_variables,
    _logsumexp,
    _plate_frames,
    _term_factor,
    _term_log_prob,
    _walk_plates,
)

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
    var_frames = _enum_variables(sites)
    if not var_frames:
        if strict_enumeration_warning:
            warnings.warn(
                "infer_discrete found no sample site marked for enumeration; mark discrete "
                "sites with config_enumerate or infer={'enumerate': 'parallel'}",
                stacklevel=3,
            )
        return values
    plate_dims = -first_available_dim - 1
    enum_dims = _enum_dims(sites)
    terms = []
    for name, site in sites:
        log_p = _term_log_prob(site)
        factor = _term_factor("infer_discrete", name, site, log_p, plate_dims, enum_dims)
        if factor is not None:
            terms.append((name, *factor, _plate_frames(site)))
    reduce = _logsumexp if temperature == 1 else _amax
    kept: list = []
    for _ in _walk_plates("infer_discrete", terms, var_frames, reduce, kept, scaled=False):
        pass
    choices = _backward(kept, plate_dims, temperature)
    for name, site in sites:
        var = site.infer.get("_enumerate_id")
        if var is not None:
            values[name] = _select(site, choices.get(var), plate_dims)
    return values


def _amax(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.amax(dim=dim)


def _backward(kept: list, plate_dims: int, temperature: int) -> dict[int, torch.Tensor]:
    """Choose each variable's support index from its kept factor, last eliminated first.

    A choice is a tensor over the plate dims (the variable's plates), of support indices.
    """
    choices: dict[int, torch.Tensor] = {}
    for v, (joint, vs), level in reversed(kept):
        for i, e in enumerate(vs):
            if e != v:
                index = choices[e]
                joint = torch.take_along_dim(joint, index.reshape((1,) * len(vs) + index.shape), i)
        # Every item of the variable's plates gets a choice of its own.
        plate_shape = [1] * plate_dims
        for frame in level:
            plate_shape[frame.dim] = frame.size
        joint = joint.expand(
            torch.broadcast_shapes(joint.shape, (1,) * len(vs) + tuple(plate_shape))
        )
        if temperature == 1:
            # Gumbel-max: argmax of logits plus Gumbel noise is a draw from softmax(logits).
            u = torch.rand_like(joint).clamp_(min=torch.finfo(joint.dtype).tiny)
            joint = joint - (-u.log()).log()
        choice = joint.argmax(dim=vs.index(v), keepdim=True)
        choices[v] = choice.reshape(choice.shape[len(vs) :])
    return choices


def _select(site: Message, index: torch.Tensor | None, plate_dims: int) -> torch.Tensor:
    """The site's enumerated value at the chosen support index, enumeration dims removed.

    ``index`` is None for a variable with a single support value (never eliminated).
    """
    d = site.infer["_enumerate_dim"]
    event_shape = tuple(site.fn.event_shape)
    value = site.value
    batch = value.dim() - len(event_shape)
    width = max(batch, -d)
    value = value.reshape((1,) * (width - batch) + tuple(value.shape))
    # The support first, then the plate dims; other enumeration dims (an expanded
    # support repeats the same values along them) are dropped.
    value = value.movedim(d - len(event_shape), 0)
    value = value[(slice(None),) + (0,) * (width - 1 - plate_dims)]
    if index is None:
        index = torch.zeros((1,) * plate_dims, dtype=torch.long, device=value.device)
    plates = tuple(torch.broadcast_shapes(value.shape[1 : 1 + plate_dims], index.shape))
    index = index.expand(plates).reshape((1,) + plates + (1,) * len(event_shape))
    index = index.expand((1,) + plates + event_shape)
    chosen = torch.gather(value.expand(value.shape[:1] + plates + event_shape), 0, index)[0]
    # Drop the size-1 dims left of the plates, as Pyro does.
    lead = 0
    while lead < plate_dims and chosen.shape[lead] == 1:
        lead += 1
    return chosen.reshape(chosen.shape[lead:])
