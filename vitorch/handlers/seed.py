"""``seed``: run with a fixed random seed, restoring the previous RNG state afterwards."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..runtime import Messenger

__all__ = ["SeedMessenger", "seed", "set_rng_seed", "get_rng_state", "set_rng_state"]


def set_rng_seed(rng_seed: int) -> None:
    """Seed torch, Python's ``random`` and NumPy."""
    if not isinstance(rng_seed, int) or isinstance(rng_seed, bool):
        raise TypeError(f"set_rng_seed expects an int, got {rng_seed!r}")
    torch.manual_seed(rng_seed)
    random.seed(rng_seed)
    np.random.seed(rng_seed % 2**32)


def get_rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class SeedMessenger(Messenger):
    def __init__(self, fn: Callable | None = None, rng_seed: int = 0):
        super().__init__(fn)
        if not isinstance(rng_seed, int) or isinstance(rng_seed, bool):
            raise TypeError(f"seed expects an int rng_seed, got {rng_seed!r}")
        self.rng_seed = rng_seed
        self._old_state: dict[str, Any] | None = None

    def __enter__(self) -> SeedMessenger:
        self._old_state = get_rng_state()
        set_rng_seed(self.rng_seed)
        return super().__enter__()  # type: ignore[return-value]

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if self._old_state is not None:
            set_rng_state(self._old_state)


def seed(fn: Callable | None = None, rng_seed: int = 0):
    """Run ``fn`` (or the block) with RNGs seeded by ``rng_seed``; restore them after."""
    return SeedMessenger(fn, rng_seed=rng_seed)
