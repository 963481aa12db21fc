"""``summary`` / ``print_summary`` of posterior samples (Pyro's ``pyro.infer.mcmc.util``)."""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict

import torch

from ...ops import stats

__all__ = ["print_summary", "summary"]


def _effective_sample_size(value: torch.Tensor) -> torch.Tensor:
    """Pyro's: NaN where the estimate is undefined (too few samples or chains)."""
    try:
        return stats.effective_sample_size(value)
    except (ValueError, RuntimeError):
        return torch.full(value.shape[2:], math.nan, dtype=value.dtype)


def summary(
    samples: dict[str, torch.Tensor], prob: float = 0.9, group_by_chain: bool = True
) -> dict[str, OrderedDict]:
    """Per site: mean, std, median, the ``prob`` HPD interval, n_eff and split R-hat.

    :param samples: site name -> tensor of shape ``(chains, draws, ...)`` with
        ``group_by_chain``, else ``(draws, ...)`` (one chain).
    :param prob: the probability mass inside the interval (columns named as in Pyro,
        ``"5.0%"`` and ``"95.0%"`` for 0.9).
    """
    if not isinstance(samples, dict):
        raise TypeError(f"summary: samples must be a dict of tensors, got {type(samples).__name__}")
    if not 0 < prob <= 1:
        raise ValueError(f"summary: prob must lie in (0, 1], got {prob!r}")
    lower, upper = f"{50 * (1 - prob):.1f}%", f"{50 * (1 + prob):.1f}%"
    out: dict[str, OrderedDict] = {}
    for name, value in samples.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"summary: samples[{name!r}] must be a tensor, got {type(value).__name__}"
            )
        if not group_by_chain:
            value = value.unsqueeze(0)
        if value.dim() < 2:
            raise ValueError(
                f"summary: samples[{name!r}] must have shape (chains, draws, ...) with "
                f"group_by_chain=True, got {tuple(value.shape)}"
            )
        flat = value.reshape((-1,) + value.shape[2:])
        interval = stats.hpdi(flat, prob=prob)
        out[name] = OrderedDict(
            [
                ("mean", flat.mean(0)),
                ("std", flat.std(0)),
                ("median", flat.median(0)[0]),
                (lower, interval[0]),
                (upper, interval[1]),
                ("n_eff", _effective_sample_size(value)),
                ("r_hat", stats.split_gelman_rubin(value)),
            ]
        )
    return out


def print_summary(
    samples: dict[str, torch.Tensor], prob: float = 0.9, group_by_chain: bool = True
) -> None:
    """Print :func:`summary` as a table, one row per site element (Pyro's layout)."""
    if not samples:
        return
    table = summary(samples, prob, group_by_chain)
    rows = []
    for name, row in table.items():
        shape = row["mean"].shape
        for idx in itertools.product(*map(range, shape)):
            label = name + (f"[{','.join(map(str, idx))}]" if shape else "")
            rows.append((label, [float(v[idx]) for v in row.values()]))
    width = max(10, *(len(label) for label, _ in rows))
    columns = list(next(iter(table.values())))
    print()
    print(f"{'':>{width}}" + "".join(f" {c:>9}" for c in columns))
    for label, values in rows:
        print(f"{label:>{width}}" + "".join(f" {v:>9.2f}" for v in values))
    print()
