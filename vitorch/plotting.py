"""PNG figures of a fit: the loss curve and the posterior marginals.

matplotlib is imported only when a figure is drawn, and drawn on its Agg canvas directly:
no window opens, and the pyplot backend a user has chosen is left alone.

>>> result = svi.run(2000, data)  # doctest: +SKIP
>>> vitorch.plotting.plot_losses(result, "loss.png")  # doctest: +SKIP
>>> s = vitorch.infer.summary(guide, data)  # doctest: +SKIP
>>> vitorch.plotting.plot_marginals(s.samples, "posterior.png")  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["plot_losses", "plot_marginals", "moving_average"]


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "vitorch.plotting needs matplotlib: pip install matplotlib (or vitorch[plots])"
        ) from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """The mean of the finite values among the last ``window`` at each position (NaN where
    there are none), in O(n)."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    hi = np.arange(1, len(x) + 1)
    lo = np.maximum(hi - window, 0)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[hi] - sums[lo]) / n, np.nan)


def plot_losses(
    result_or_losses: Any,
    path: str | os.PathLike,
    *,
    window: int | None = None,
    title: str = "SVI loss (negative ELBO)",
    log_scale: bool | None = None,
) -> str:
    """Draw the loss per step and its moving average to the PNG file ``path``.

    ``result_or_losses`` is what :meth:`SVI.run` returned or a sequence of losses.
    ``window`` (default: 2% of the steps) sets the moving average; ``log_scale`` (default:
    when all losses are positive and span more than two decades) the y axis. Skipped
    (NaN) steps are gaps. Returns ``path``.
    """
    losses = getattr(result_or_losses, "losses", result_or_losses)
    if isinstance(losses, torch.Tensor):
        losses = losses.tolist()
    if not isinstance(losses, Sequence) or isinstance(losses, (str, bytes)):
        raise TypeError(
            "plot_losses: expected an SVIResult or a sequence of losses, got "
            f"{type(result_or_losses).__name__}"
        )
    y = np.asarray(losses, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(
            f"plot_losses: expected a non-empty 1-d sequence of losses, got shape {y.shape}"
        )
    if window is None:
        window = max(1, len(y) // 50)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"plot_losses: window must be a positive int, got {window!r}")
    finite = y[np.isfinite(y)]
    if log_scale is None:
        log_scale = bool(len(finite)) and finite.min() > 0 and finite.max() / finite.min() > 100
    x = np.arange(1, len(y) + 1)
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, y, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss per step")
    if window > 1:
        ax.plot(
            x,
            moving_average(y, window),
            color="tab:blue",
            linewidth=1.8,
            label=f"moving average ({window} steps)",
        )
    if log_scale:
        ax.set_yscale("log")
    elif len(finite) > 20:
        # The first steps' losses dwarf the rest; frame the y axis on the later ones.
        tail = finite[len(finite) // 10 :]
        lo, hi = float(tail.min()), float(np.percentile(finite, 99))
        if hi > lo:
            pad = 0.05 * (hi - lo)
            ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def plot_marginals(
    samples: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    max_panels: int = 16,
    bins: int = 40,
    title: str = "posterior marginals",
) -> str:
    """Draw a histogram per site element (at most ``max_panels``) to the PNG file ``path``.

    ``samples`` is ``{site: tensor (num_samples, ...)}`` (``Summary.samples``, or
    ``Predictive``'s output). Each panel marks the mean and the 5% and 95% quantiles.
    Returns ``path``.
    """
    samples = getattr(samples, "samples", samples)
    if not isinstance(samples, Mapping) or not samples:
        raise TypeError(
            f"plot_marginals: expected a non-empty dict of samples, got {type(samples).__name__}"
        )
    if isinstance(max_panels, bool) or not isinstance(max_panels, int) or max_panels < 1:
        raise ValueError(f"plot_marginals: max_panels must be a positive int, got {max_panels!r}")
    panels: list[tuple[str, np.ndarray]] = []
    total = 0
    for name, value in samples.items():
        x = torch.as_tensor(value).detach().to("cpu", torch.float64)
        if x.dim() < 1:
            raise ValueError(
                f"plot_marginals: samples of {name!r} must have a leading sample dim, got a scalar"
            )
        flat = x.reshape(x.shape[0], -1).numpy()
        shape = tuple(x.shape[1:])
        total += flat.shape[1]
        for k, index in enumerate(itertools.product(*(range(n) for n in shape))):
            if len(panels) >= max_panels:
                break
            label = name if not index else f"{name}[{','.join(map(str, index))}]"
            panels.append((label, flat[:, k]))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(3.2 * cols, 2.5 * rows + 0.5)
    for i, (label, v) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        v = v[np.isfinite(v)]
        ax.hist(v, bins=bins, density=True, color="tab:blue", alpha=0.6)
        if len(v):
            q05, q95 = np.quantile(v, [0.05, 0.95])
            ax.axvline(float(v.mean()), color="black", linewidth=1.2)
            for q in (q05, q95):
                ax.axvline(float(q), color="black", linestyle="--", linewidth=0.8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.set_yticks([])
    shown = f" (first {len(panels)} of {total})" if total > len(panels) else ""
    fig.suptitle(f"{title}{shown}: mean (solid), 5% and 95% (dashed)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
