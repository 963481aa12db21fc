"""Checkpoints: everything needed to resume an SVI run, in a file that cannot run code.

A checkpoint holds the parameter store (unconstrained values and constraints), the
optimizer's state, the number of completed steps, the loss history, the random number
generators' states and, when a run uses them, the convergence criteria's state. It is
written with :func:`vitorch._io.atomic_save` (the old file stays whole until the new one
is complete) and read with :func:`vitorch._io.safe_load` (tensors, numbers, strings and
plain containers only: a file crafted to run code when unpickled is refused).

>>> import vitorch, vitorch.optim
>>> from vitorch.checkpoint import save_checkpoint, load_checkpoint, restore_checkpoint
>>> _ = vitorch.param("w", torch.zeros(2))  # doctest: +SKIP
>>> optim = vitorch.optim.Adam({"lr": 0.01})  # doctest: +SKIP
>>> save_checkpoint("run.pt", optim, step=10, losses=[1.0] * 10)  # doctest: +SKIP
>>> restore_checkpoint(load_checkpoint("run.pt"), optim)  # doctest: +SKIP

:func:`vitorch.infer.run.run_svi` (``SVI.run(..., checkpoint=path)``) uses these.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._io import atomic_save, safe_load
from .handlers.seed import get_rng_state, set_rng_state
from .params import _constraint_from_spec, get_param_store

__all__ = [
    "FORMAT",
    "capture_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
]

FORMAT = "vitorch.checkpoint/1"


# -- RNG state as plain tensors ----------------------------------------------------------
# random.getstate() is a tuple of ints and numpy's is a tuple holding an ndarray; the safe
# loader rebuilds neither ndarrays nor long tuples efficiently, so both become tensors.
def _rng_to_plain(state: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = state["random"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    out: dict[str, Any] = {
        "torch": state["torch"].clone(),
        "random": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
    }
    if "cuda" in state:
        out["cuda"] = [s.clone() for s in state["cuda"]]
    return out


def _rng_from_plain(plain: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = plain["random"]
    name, keys, pos, has_gauss, cached = plain["numpy"]
    state: dict[str, Any] = {
        "torch": plain["torch"],
        "random": (int(version), tuple(int(x) for x in internal.tolist()), gauss),
        "numpy": (name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)),
    }
    if "cuda" in plain:
        state["cuda"] = plain["cuda"]
    return state


# -- the file ----------------------------------------------------------------------------
def _param_store_state() -> dict[str, Any]:
    return get_param_store().get_plain_state()


def capture_checkpoint(
    optim: Any,
    *,
    step: int = 0,
    losses: Sequence[float] | torch.Tensor = (),
    skipped_steps: Sequence[int] = (),
    convergence: Sequence[dict[str, Any]] | None = None,
    converged: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint of the current state as a dict of plain data (see :func:`save_checkpoint`)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint: step must be a non-negative int, got {step!r}")
    if optim is not None and not hasattr(optim, "get_state"):
        raise TypeError(
            f"checkpoint: optim must be a vitorch.optim optimizer (with get_state), "
            f"got {type(optim).__name__}"
        )
    return {
        "format": FORMAT,
        "step": step,
        "losses": torch.as_tensor(losses, dtype=torch.float64).clone(),
        "skipped_steps": torch.as_tensor(list(skipped_steps), dtype=torch.int64),
        "param_store": _param_store_state(),
        "optim": None if optim is None else optim.get_state(),
        "rng": _rng_to_plain(get_rng_state()),
        "convergence": None if convergence is None else list(convergence),
        "converged": bool(converged),
        "extra": {} if extra is None else dict(extra),
    }


def save_checkpoint(
    path: str | os.PathLike,
    optim: Any,
    *,
    step: int = 0,
    losses: Sequence[float] | torch.Tensor = (),
    skipped_steps: Sequence[int] = (),
    convergence: Sequence[dict[str, Any]] | None = None,
    converged: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the parameter store, ``optim``'s state, the step count, the loss history and
    the RNG states to ``path``, atomically.

    ``extra`` is a dict of plain data (tensors, numbers, strings, lists, dicts) stored
    alongside. ``optim`` may be None to save parameters and RNG state only.
    """
    state = capture_checkpoint(
        optim,
        step=step,
        losses=losses,
        skipped_steps=skipped_steps,
        convergence=convergence,
        converged=converged,
        extra=extra,
    )
    atomic_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing files that could run code.

    Returns the checkpoint as a dict: ``step`` (int), ``losses`` (list of floats),
    ``skipped_steps`` (list of ints), ``param_store``, ``optim``, ``rng``, ``convergence``,
    ``converged`` and ``extra``. Pass it to :func:`restore_checkpoint`.
    """
    state = safe_load(path, map_location=map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{os.fspath(path)!r} is not a vitorch checkpoint (expected format {FORMAT!r}, "
            f"found {found!r})"
        )
    missing = [
        k
        for k in ("step", "losses", "param_store", "optim", "rng", "skipped_steps")
        if k not in state
    ]
    if missing:
        raise ValueError(f"{os.fspath(path)!r} is an incomplete vitorch checkpoint: no {missing}")
    state = dict(state)
    state["losses"] = state["losses"].tolist()
    state["skipped_steps"] = [int(s) for s in state["skipped_steps"].tolist()]
    return state


def restore_checkpoint(state: dict[str, Any], optim: Any = None, *, rng: bool = True) -> None:
    """Put a loaded checkpoint's parameters, optimizer state and (if ``rng``) RNG states back.

    Parameters that already exist keep their tensor objects (modules and optimizers hold
    references to them) and take the saved values. To resume modules and autoguides that
    create their parameters on first use, run the model and guide once before restoring
    (``SVI.run(..., resume=...)`` does that).
    """
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError("restore_checkpoint expects the dict returned by load_checkpoint")
    ps = state["param_store"]
    get_param_store().set_state(
        {
            "params": ps["params"],
            "constraints": {k: _constraint_from_spec(v, k) for k, v in ps["constraints"].items()},
        }
    )
    if optim is not None and state["optim"] is not None:
        optim.set_state(state["optim"])
    if rng:
        set_rng_state(_rng_from_plain(state["rng"]))
