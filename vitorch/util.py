"""Helpers at Pyro's path ``pyro.util`` that user code imports."""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .handlers.seed import get_rng_state, set_rng_seed, set_rng_state
from .handlers.trace import _is_subsample

__all__ = [
    "check_model_guide_match",
    "check_site_shape",
    "get_rng_state",
    "ignore_jit_warnings",
    "optional",
    "set_rng_seed",
    "set_rng_state",
    "warn_if_inf",
    "warn_if_nan",
]


@contextlib.contextmanager
def ignore_jit_warnings(filter: list | None = None) -> Iterator[None]:  # noqa: A002 - Pyro's name
    """Silence ``torch.jit.TracerWarning`` (and the extra ``(category, message)`` or category
    filters given), as Pyro's helper of the same name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for item in filter or ():
            if isinstance(item, tuple):
                category, message = item
                warnings.filterwarnings("ignore", category=category, message=message)
            else:
                warnings.filterwarnings("ignore", category=item)
        yield


def _warn_if(value: Any, bad: Any, what: str, msg: str) -> Any:
    tensor = value if isinstance(value, torch.Tensor) else None
    if tensor is not None and tensor.requires_grad and torch.is_grad_enabled():
        # Also check the gradient when it arrives.
        tensor.register_hook(lambda g: _warn_if(g, bad, what, f"{msg} (gradient)"))
    if tensor is not None:
        found = bool(bad(tensor.detach()).any())
    elif isinstance(value, numbers.Number):
        found = bool(bad(torch.tensor(float(value))))
    else:
        raise TypeError(f"expected a tensor or a number, got {type(value).__name__}")
    if found:
        warnings.warn(f"Encountered {what}{': ' + msg if msg else ''}", UserWarning, stacklevel=3)
    return value


def warn_if_nan(
    value: Any, msg: str = "", *, filename: str | None = None, lineno: int | None = None
) -> Any:
    """Warn if ``value`` (or, later, its gradient) holds a NaN; returns ``value``."""
    return _warn_if(value, torch.isnan, "NaN", msg)


def warn_if_inf(
    value: Any,
    msg: str = "",
    allow_posinf: bool = False,
    allow_neginf: bool = False,
    *,
    filename: str | None = None,
    lineno: int | None = None,
) -> Any:
    """Warn if ``value`` (or, later, its gradient) holds a disallowed infinity."""

    def bad(t: torch.Tensor) -> torch.Tensor:
        flags = torch.zeros_like(t, dtype=torch.bool)
        if not allow_posinf:
            flags = flags | (t == float("inf"))
        if not allow_neginf:
            flags = flags | (t == float("-inf"))
        return flags

    return _warn_if(value, bad, "+/-inf", msg)


@contextlib.contextmanager
def optional(context_manager: Any, condition: bool) -> Iterator[None]:
    """Enter ``context_manager`` only if ``condition`` holds."""
    if condition:
        with context_manager:
            yield
    else:
        yield


def _is_latent(site: Any) -> bool:
    return site.type == "sample" and not site.is_observed and not _is_subsample(site)


def _dist_shape(site: Any) -> tuple[int, ...]:
    fn = site.fn
    if hasattr(fn, "batch_shape") and hasattr(fn, "event_shape"):
        return tuple(fn.batch_shape + fn.event_shape)
    return tuple(site.value.shape) if torch.is_tensor(site.value) else ()


def _site_batch_shape(site: Any) -> torch.Size:
    """The shape of the site's log-density: its value's batch dims against the batch shape."""
    fn = site.fn
    event_dim = len(getattr(fn, "event_shape", ()))
    value = site.value
    batch = tuple(value.shape[: value.dim() - event_dim]) if torch.is_tensor(value) else ()
    return torch.broadcast_shapes(batch, tuple(getattr(fn, "batch_shape", ())))


def check_site_shape(site: Any, max_plate_nesting: float) -> None:
    """Raise if a sample site's batch dims are not the ones its plates declare (Pyro's check).

    Within the rightmost ``max_plate_nesting`` dims every dim must be a plate's (of that
    plate's size) or 1; dims further left (particles, enumeration) are not checked.
    """
    expected: list[int | None] = []
    for frame in site.cond_indep_stack:
        if frame.dim is None:
            continue
        if len(expected) < -frame.dim:
            expected = [None] * (-frame.dim - len(expected)) + expected
        if expected[frame.dim] is not None:
            raise ValueError(
                f"at site {site.name!r} within plate({frame.name!r}, dim={frame.dim}), dim "
                f"collision: try setting the dim argument of the other plates"
            )
        expected[frame.dim] = frame.size
    expected_shape = [-1 if e is None else e for e in expected]
    if len(expected_shape) > max_plate_nesting:
        raise ValueError(
            f"at site {site.name!r}, plate stack overflow: {len(expected_shape)} plate dims "
            f"but max_plate_nesting={max_plate_nesting}; raise max_plate_nesting"
        )
    actual = list(_site_batch_shape(site))
    if max_plate_nesting < len(actual):
        actual = actual[len(actual) - int(max_plate_nesting) :]
    for have, want in itertools.zip_longest(
        reversed(actual), reversed(expected_shape), fillvalue=1
    ):
        if want not in (-1, have):
            raise ValueError(
                f"at site {site.name!r}, invalid log_prob shape: expected {expected_shape} "
                f"(the plates' sizes, -1 for any), got {actual}. Try one of: enclose the "
                f"batched tensor in a `with vitorch.plate(...)` block; `.to_event(...)` the "
                f"distribution; permute the data's dimensions"
            )


def check_model_guide_match(
    model_trace: Any, guide_trace: Any, max_plate_nesting: float = math.inf
) -> None:
    """Warn about latent sites in one trace only; raise where shared sites' shapes differ.

    As Pyro's check: a latent model site without a guide site, or a guide site without a
    model site (unless ``infer={"is_auxiliary": True}``), warns; event dims or batch
    shapes that disagree (beyond broadcasting left of ``max_plate_nesting``) raise.
    """
    model_vars = {n for n, s in model_trace.nodes.items() if _is_latent(s)}
    guide_vars = {n for n, s in guide_trace.nodes.items() if _is_latent(s)}
    aux = {n for n in guide_vars if guide_trace.nodes[n].infer.get("is_auxiliary")}
    extra_guide = guide_vars - aux - set(model_trace.nodes)
    if extra_guide:
        warnings.warn(
            f"Found non-auxiliary vars in guide but not model, consider marking these "
            f"infer={{'is_auxiliary': True}}: {sorted(extra_guide)}",
            UserWarning,
            stacklevel=4,
        )
    missing = {
        n
        for n in model_vars - guide_vars
        if not model_trace.nodes[n].infer.get("enumerate")
        and not model_trace.nodes[n].infer.get("_deterministic")
    }
    if missing:
        warnings.warn(
            f"Found vars in model but not guide: {sorted(missing)}", UserWarning, stacklevel=4
        )
    for name in sorted(model_vars & guide_vars):
        model_site, guide_site = model_trace.nodes[name], guide_trace.nodes[name]
        model_event = len(getattr(model_site.fn, "event_shape", ()))
        guide_event = len(getattr(guide_site.fn, "event_shape", ()))
        if model_event != guide_event:
            raise ValueError(
                f"Model and guide event_dims disagree at site {name!r}: {model_event} vs "
                f"{guide_event}"
            )
        # The distributions' shapes, as Pyro compares: the model's value is the guide's
        # (replayed), so only its distribution shows the shape the model asks for.
        model_shape = _dist_shape(model_site)
        guide_shape = _dist_shape(guide_site)
        if model_shape == guide_shape:
            continue
        keep = max_plate_nesting + model_event  # broadcasting left of the plates is fine
        if keep < len(model_shape):
            model_shape = model_shape[len(model_shape) - int(keep) :]
        if keep < len(guide_shape):
            guide_shape = guide_shape[len(guide_shape) - int(keep) :]
        for m, g in itertools.zip_longest(
            reversed(model_shape), reversed(guide_shape), fillvalue=1
        ):
            if m != g:
                raise ValueError(
                    f"Model and guide shapes disagree at site {name!r}: {torch.Size(model_shape)} "
                    f"vs {torch.Size(guide_shape)}"
                )
