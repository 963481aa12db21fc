"""Posterior summaries: mean, sd and quantiles per site and element, as a table and as data.

>>> guide = AutoNormal(model)  # doctest: +SKIP
>>> ...  # fit it with SVI
>>> s = vitorch.infer.summary(guide, data)  # draws 1000 posterior samples  # doctest: +SKIP
>>> print(s)  # doctest: +SKIP
            mean        sd        5%       50%       95%
  loc      3.036    0.1003     2.871     3.036     3.201
scale      1.008   0.07239    0.8926     1.005     1.131
>>> s["loc"]["mean"], s.to_csv("summary.csv")  # doctest: +SKIP

``summary`` also takes a dict of samples (``{name: tensor of shape (num_samples, ...)}``),
for instance from ``Predictive``.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..handlers.block import BlockMessenger
from ..handlers.replay import ReplayMessenger
from ..handlers.trace import TraceMessenger

__all__ = ["Summary", "summary", "sample_posterior"]


def _is_latent(site: Any) -> bool:
    return (
        site.type == "sample"
        and not site.is_observed
        and not getattr(site.fn, "_is_subsample", False)
        and not site.infer.get("_deterministic", False)
    )


def sample_posterior(
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    model: Callable | None = None,
    sites: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Draw ``num_samples`` joint samples of the latent sites from ``guide``.

    With a ``model`` (by default ``guide.model`` when the guide has one, as autoguides do),
    the model is replayed against each guide draw and its latent sample sites are returned,
    so auxiliary guide sites (an autoguide's packed latent vector) are left out and sites
    the model derives are right. Without one, the guide's own latent sites are returned,
    except those whose name starts with ``_``. ``sites`` picks sites by name (deterministic
    sites of the model may be named too). Returns ``{name: tensor (num_samples, ...)}``.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"summary: num_samples must be a positive int, got {num_samples!r}")
    if not callable(guide):
        raise TypeError(f"summary: guide must be callable, got {type(guide).__name__}")
    if model is None:
        candidate = getattr(guide, "model", None)
        model = candidate if callable(candidate) else None
    wanted = None if sites is None else list(sites)
    draws: dict[str, list[torch.Tensor]] = {}
    # Blocked: the draws must not reach a handler the caller has active (a trace, say).
    with torch.no_grad(), BlockMessenger():
        for _ in range(num_samples):
            guide_tracer = TraceMessenger()
            with guide_tracer:
                guide(*args, **kwargs)
            tr = guide_tracer.trace
            if model is not None:
                model_tracer = TraceMessenger()
                with model_tracer, ReplayMessenger(trace=tr):
                    model(*args, **kwargs)
                tr = model_tracer.trace
            for name, site in tr.nodes.items():
                if wanted is not None:
                    keep = name in wanted and site.type == "sample"
                else:
                    keep = _is_latent(site) and (model is not None or not name.startswith("_"))
                if keep:
                    draws.setdefault(name, []).append(site.value.detach())
    if wanted is not None:
        missing = [n for n in wanted if n not in draws]
        if missing:
            raise ValueError(
                f"summary: sites {missing} were not found; the sample sites are "
                f"{sorted(draws) or 'none'}"
            )
        return {n: torch.stack(draws[n]) for n in wanted}
    return {n: torch.stack(v) for n, v in draws.items()}


def _label(site: str, index: tuple[int, ...]) -> str:
    return site if not index else f"{site}[{','.join(str(i) for i in index)}]"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class Summary(Mapping):
    """Per-site statistics: ``summary[site][stat]`` is a tensor of the site's shape.

    ``stat`` is one of :attr:`columns` (``"mean"``, ``"sd"``, then the quantiles as
    ``"5%"``, ``"50%"``, ``"95%"``). ``str(summary)`` is a table with one row per element;
    :meth:`to_dict` and :meth:`to_csv` give the same numbers as data. The samples are kept
    in :attr:`samples` (for :func:`vitorch.plotting.plot_marginals`).
    """

    def __init__(
        self, samples: Mapping[str, torch.Tensor], quantiles: Sequence[float] = (0.05, 0.5, 0.95)
    ) -> None:
        qs = list(quantiles)
        for q in qs:
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
                raise ValueError(f"summary: quantiles must be numbers in [0, 1], got {quantiles!r}")
        self.samples: dict[str, torch.Tensor] = {}
        self.stats: dict[str, dict[str, torch.Tensor]] = {}
        self.columns: tuple[str, ...] = ("mean", "sd", *(f"{100 * q:g}%" for q in qs))
        for name, value in samples.items():
            if not isinstance(name, str):
                raise TypeError(f"summary: site names must be str, got {name!r}")
            x = torch.as_tensor(value)
            if x.dim() < 1 or x.shape[0] < 2:
                raise ValueError(
                    f"summary: samples of site {name!r} must have shape (num_samples, ...) with "
                    f"num_samples >= 2, got shape {tuple(x.shape)}"
                )
            self.samples[name] = x
            xd = x.detach().to("cpu", torch.float64)
            stats = {"mean": xd.mean(0), "sd": xd.std(0)}
            if qs:
                # numpy: torch.quantile refuses inputs above 16M elements.
                qv = torch.from_numpy(np.quantile(xd.numpy(), qs, axis=0))
                for col, v in zip(self.columns[2:], qv):
                    stats[col] = v
            self.stats[name] = stats

    # -- mapping ---------------------------------------------------------------------------
    def __getitem__(self, site: str) -> dict[str, torch.Tensor]:
        try:
            return self.stats[site]
        except KeyError:
            raise KeyError(
                f"no site {site!r} in this summary (it has {list(self.stats)})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.stats)

    def __len__(self) -> int:
        return len(self.stats)

    # -- data ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{site: {stat: tensor of the site's shape}}`` (copies)."""
        return {s: {k: v.clone() for k, v in st.items()} for s, st in self.stats.items()}

    def _site_rows(
        self, site: str, limit: int | None = None
    ) -> Iterator[tuple[tuple[int, ...], list[float]]]:
        st = self.stats[site]
        cols = [st[c] for c in self.columns]
        indices = itertools.product(*(range(n) for n in st["mean"].shape))
        for index in itertools.islice(indices, limit):
            yield index, [float(c[index]) for c in cols]

    def rows(self) -> Iterator[tuple[str, tuple[int, ...], list[float]]]:
        """(site, element index, [value per column]) for every element of every site."""
        for site in self.stats:
            for index, values in self._site_rows(site):
                yield site, index, values

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write one row per element: ``site, index, name, mean, sd, 5%, 50%, 95%``."""
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["site", "index", "name", *self.columns])
            for site, index, values in self.rows():
                w.writerow(
                    [site, " ".join(map(str, index)), _label(site, index), *map(repr, values)]
                )

    # -- text ------------------------------------------------------------------------------
    def table(self, max_rows_per_site: int | None = 10) -> str:
        """The table as text; sites with more elements show the first ``max_rows_per_site``."""
        body: list[list[str]] = []
        notes: dict[int, str] = {}  # row position -> "(n more rows)" after it
        for site, st in self.stats.items():
            for index, values in self._site_rows(site, max_rows_per_site):
                body.append([_label(site, index), *map(_fmt, values)])
            n = st["mean"].numel()
            if max_rows_per_site is not None and n > max_rows_per_site:
                notes[len(body)] = f"({n - max_rows_per_site} more elements of {site!r})"
        header = ["", *self.columns]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(header, widths))]
        for i, r in enumerate(body, 1):
            lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
            if i in notes:
                lines.append(" " * widths[0] + "  " + notes[i])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Summary(sites={list(self.stats)}, columns={list(self.columns)})"


def summary(
    source: Mapping[str, torch.Tensor] | Callable,
    *args: Any,
    num_samples: int = 1000,
    model: Callable | None = None,
    sites: Sequence[str] | None = None,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    **kwargs: Any,
) -> Summary:
    """Summarize a posterior: mean, sd and quantiles (5%, 50%, 95%) per site and element.

    ``source`` is either a dict ``{site: samples}`` with the samples along the first dim,
    or a guide, called with ``*args, **kwargs`` (the model's arguments) ``num_samples``
    times (see :func:`sample_posterior` for ``model`` and ``sites``).
    Returns a :class:`Summary`: print it for a table, index it for data
    (``s["loc"]["mean"]``), or write it with ``to_csv``.
    """
    if isinstance(source, Mapping):
        if args or kwargs:
            raise TypeError(
                "summary: model arguments are only used with a guide; got a dict of samples "
                f"and extra arguments {args!r} {kwargs!r}"
            )
        samples = source if sites is None else {k: source[k] for k in sites}
    elif callable(source):
        samples = sample_posterior(
            source, *args, num_samples=num_samples, model=model, sites=sites, **kwargs
        )
    else:
        raise TypeError(
            f"summary: expected a guide or a dict of samples, got {type(source).__name__}"
        )
    return Summary(samples, quantiles)
