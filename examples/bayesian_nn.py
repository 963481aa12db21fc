"""A Bayesian neural network for regression on scikit-learn's diabetes data.

The network is an ordinary ``nn.Linear`` stack made Bayesian with ``PyroModule[nn.Linear]``
and ``PyroSample`` priors on every weight and bias; the observation noise is a latent site
too. ``AutoNormal`` fits a mean-field Gaussian posterior with SVI, and ``Predictive`` draws
from the posterior predictive distribution of unseen patients: its mean is the point
prediction and its 5% and 95% quantiles bound a 90% predictive interval. The script reports
the test RMSE (in the data's units and in standard deviations of the target) and how often
the 90% interval covers the truth, next to a least-squares linear fit for scale.

Run it::

    python examples/bayesian_nn.py                 # ~2000 steps
    python examples/bayesian_nn.py --smoke         # a few seconds

or import it (the command line is guarded) and call :func:`train_bnn`.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from torch import nn

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, Predictive, Trace_ELBO
from vitorch.infer.autoguide import AutoNormal
from vitorch.nn import PyroModule, PyroSample
from vitorch.optim import Adam

__all__ = ["BayesianMLP", "load_diabetes_split", "train_bnn", "main"]


def _normal_prior(scale: float, *shape: int):
    return dist.Normal(0.0, scale).expand(list(shape)).to_event(len(shape))


class BayesianMLP(PyroModule):
    """``y ~ Normal(fc2(tanh(fc1(x))), sigma)`` with Normal priors on every weight.

    The prior scale of a layer's weights is ``1 / sqrt(fan_in)``, so that the prior
    network's outputs have unit scale whatever the width.
    """

    def __init__(self, in_features: int, hidden: int = 32) -> None:
        super().__init__()
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        self.fc1 = PyroModule[nn.Linear](in_features, hidden)
        self.fc1.weight = PyroSample(_normal_prior(in_features**-0.5, hidden, in_features))
        self.fc1.bias = PyroSample(_normal_prior(1.0, hidden))
        self.fc2 = PyroModule[nn.Linear](hidden, 1)
        self.fc2.weight = PyroSample(_normal_prior(hidden**-0.5, 1, hidden))
        self.fc2.bias = PyroSample(_normal_prior(1.0, 1))
        self.sigma = PyroSample(dist.HalfNormal(1.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mean = self.fc2(torch.tanh(self.fc1(x))).squeeze(-1)
        sigma = self.sigma
        with vitorch.plate("data", x.shape[0]):
            vitorch.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def load_diabetes_split(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    """``(x_train, y_train, x_test, y_test, y_mean, y_std)``, standardized with train statistics.

    Multiply a standardized prediction by ``y_std`` and add ``y_mean`` to get the data's units.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.as_tensor(data.data, dtype=torch.get_default_dtype())
    y = torch.as_tensor(data.target, dtype=torch.get_default_dtype())
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    num_test = int(round(test_fraction * len(x)))
    test_idx, train_idx = order[:num_test], order[num_test:]
    x_mean, x_std = x[train_idx].mean(0), x[train_idx].std(0)
    y_mean, y_std = y[train_idx].mean(), y[train_idx].std()
    x = (x - x_mean) / x_std
    y = (y - y_mean) / y_std
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], float(y_mean), float(y_std)


def _least_squares_rmse(x_train, y_train, x_test, y_test) -> float:
    design = torch.cat([x_train, torch.ones(len(x_train), 1)], dim=1).double()
    coef = torch.linalg.lstsq(design, y_train.double().unsqueeze(-1)).solution.squeeze(-1)
    pred = torch.cat([x_test, torch.ones(len(x_test), 1)], dim=1).double() @ coef
    return float(((pred - y_test.double()) ** 2).mean().sqrt())


def _plot(y_test, mean, lower, upper, y_mean, y_std, path: str) -> None:
    # Imported here: matplotlib is needed only for the picture.
    from matplotlib.figure import Figure

    def units(t: torch.Tensor):
        return (t * y_std + y_mean).numpy()

    order = torch.argsort(mean)
    idx = torch.arange(len(order)).numpy()
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    ax.fill_between(idx, units(lower[order]), units(upper[order]), alpha=0.3, label="90% interval")
    ax.plot(idx, units(mean[order]), lw=1.5, label="predictive mean")
    ax.scatter(idx, units(y_test[order]), s=8, color="k", label="truth")
    ax.set_xlabel("test patients, sorted by prediction")
    ax.set_ylabel("disease progression")
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def train_bnn(
    num_steps: int = 2000,
    smoke: bool = False,
    out_dir: str | None = None,
    progress: bool = True,
    seed: int = 0,
    hidden: int = 32,
    lr: float = 0.01,
    num_samples: int = 500,
    num_threads: int | None = 1,
) -> dict[str, Any]:
    """Fit the BNN with AutoNormal and evaluate it on held-out patients.

    Returns plain data: ``rmse`` (data units), ``rmse_std`` (in standard deviations of the
    target), ``coverage_90`` (share of test targets inside the 90% predictive interval),
    ``interval_width`` (mean width of that interval, data units), ``linear_rmse`` (a
    least-squares linear fit, for scale), ``sigma`` (posterior median of the noise scale,
    standardized units), ``losses`` (one per step), ``num_steps``, ``seconds``,
    ``num_train``/``num_test`` and ``files`` (a PNG, with ``out_dir``). ``smoke=True`` runs
    at most 200 steps and 100 predictive draws. ``num_threads`` sets torch's CPU threads
    for the run and restores them (``None``: leave them).
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if smoke:
        num_steps, num_samples = min(num_steps, 200), min(num_samples, 100)
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(num_steps, out_dir, progress, seed, hidden, lr, num_samples)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    num_steps: int,
    out_dir: str | None,
    progress: bool,
    seed: int,
    hidden: int,
    lr: float,
    num_samples: int,
) -> dict[str, Any]:
    vitorch.set_rng_seed(seed)
    vitorch.clear_param_store()
    x_train, y_train, x_test, y_test, y_mean, y_std = load_diabetes_split(seed=seed)
    model = BayesianMLP(x_train.shape[1], hidden)
    # A small initial scale: the network starts near its prior mean, not at random noise.
    guide = AutoNormal(model, init_scale=0.05)
    svi = SVI(model, guide, Adam({"lr": lr}), Trace_ELBO())

    from tqdm.auto import tqdm

    losses = []
    start = time.perf_counter()
    bar = tqdm(range(num_steps), desc="BNN", unit="step", disable=not progress, miniters=50)
    for step in bar:
        losses.append(svi.step(x_train, y_train) / len(x_train))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    seconds = time.perf_counter() - start

    predictive = Predictive(
        model, guide=guide, num_samples=num_samples, return_sites=("obs", "_RETURN")
    )
    samples = predictive(x_test)
    mean = samples["_RETURN"].mean(0)
    quantiles = torch.quantile(samples["obs"], torch.tensor([0.05, 0.95]), dim=0)
    lower, upper = quantiles[0], quantiles[1]
    rmse_std = float(((mean - y_test) ** 2).mean().sqrt())
    coverage = float(((y_test >= lower) & (y_test <= upper)).float().mean())

    files = []
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "bnn_predictions.png")
        _plot(y_test, mean, lower, upper, y_mean, y_std, path)
        files.append(path)
    return {
        "rmse": rmse_std * y_std,
        "rmse_std": rmse_std,
        "coverage_90": coverage,
        "interval_width": float((upper - lower).mean()) * y_std,
        "linear_rmse": _least_squares_rmse(x_train, y_train, x_test, y_test) * y_std,
        "sigma": float(guide.median()["sigma"]),
        "losses": losses,
        "num_steps": num_steps,
        "seconds": seconds,
        "num_train": len(x_train),
        "num_test": len(x_test),
        "files": files,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: ``python examples/bayesian_nn.py [--steps N] [--out DIR] [--smoke]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--samples", type=int, default=500, help="predictive draws")
    parser.add_argument("--out", default=None, help="directory for the PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    result = train_bnn(
        num_steps=args.steps,
        smoke=args.smoke,
        out_dir=args.out,
        progress=not args.no_progress,
        seed=args.seed,
        hidden=args.hidden,
        lr=args.lr,
        num_samples=args.samples,
        num_threads=args.threads or None,
    )
    print(
        f"{result['num_steps']} steps in {result['seconds']:.1f} s on {result['num_train']} "
        f"patients; {result['num_test']} held out"
    )
    print(
        f"test RMSE {result['rmse']:.1f} ({result['rmse_std']:.3f} sd of the target); "
        f"least-squares linear fit {result['linear_rmse']:.1f}"
    )
    print(
        f"90% predictive interval: covers {100 * result['coverage_90']:.1f}% of test targets, "
        f"mean width {result['interval_width']:.1f}"
    )
    for path in result["files"]:
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
