"""``vitorch demo``: three fits on data that ships with packages, in about a minute on a CPU.

1. The loc/scale model of Pyro's AutoNormal and AutoMultivariateNormal pages, on
   ``torch.randn(100) + 3.0``: the posterior against the data's mean and sd.
2. Bayesian linear regression on scikit-learn's diabetes data, against the exact
   conjugate posterior mean of the weights.
3. A short run of the variational autoencoder of ``examples/vae.py`` on scikit-learn's
   digits (skipped, with a message, when the examples folder is not next to the package).

Progress bars and summaries go to the terminal; figures, summaries (CSV) and checkpoints
to ``out``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_demo", "loc_scale_model", "regression_model"]


def loc_scale_model(data: torch.Tensor) -> None:
    """The model of the AutoNormal / AutoMultivariateNormal pages."""
    import vitorch
    import vitorch.distributions as dist

    loc = vitorch.sample("loc", dist.Normal(0.0, 10.0))
    scale = vitorch.sample("scale", dist.LogNormal(0.0, 1.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("obs", dist.Normal(loc, scale), obs=data)


def regression_model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """``y ~ Normal(b + x @ w, sigma)`` with ``w ~ Normal(0, 1)``, ``b ~ Normal(0, 1)``,
    ``sigma ~ LogNormal(0, 1)`` (on standardized features and target)."""
    import vitorch
    import vitorch.distributions as dist

    w = vitorch.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = vitorch.sample("b", dist.Normal(0.0, 1.0))
    sigma = vitorch.sample("sigma", dist.LogNormal(0.0, 1.0))
    with vitorch.plate("data", x.shape[0]):
        vitorch.sample("obs", dist.Normal(b + x @ w, sigma), obs=y)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 74 - len(title)), flush=True)


def _fit(
    model: Any,
    guide: Any,
    lr: float,
    steps: int,
    args: tuple,
    out: Path,
    tag: str,
    progress: bool,
    convergence: Any = None,
) -> Any:
    import vitorch
    from vitorch.infer import SVI, Trace_ELBO
    from vitorch.infer.summary import summary
    from vitorch.plotting import plot_losses, plot_marginals

    svi = SVI(model, guide, vitorch.optim.Adam({"lr": lr}), Trace_ELBO())
    t0 = time.perf_counter()
    result = svi.run(
        steps,
        *args,
        progress=progress,
        convergence=convergence,
        checkpoint=out / f"{tag}-checkpoint.pt",
    )
    seconds = time.perf_counter() - t0
    post = summary(guide, *args, num_samples=1000)
    post.to_csv(out / f"{tag}-summary.csv")
    plot_losses(result, out / f"{tag}-loss.png", title=f"{tag}: loss (negative ELBO)")
    plot_marginals(post.samples, out / f"{tag}-posterior.png", title=f"{tag}: posterior")
    how = (
        f"converged after {result.num_steps} of {steps} steps"
        if result.converged
        else f"{result.num_steps} steps"
    )
    print(f"{tag}: {how} ({seconds:.1f} s), final loss {result.final_loss:.2f}")
    print(post)
    return post


def _loc_scale(out: Path, progress: bool, quick: bool) -> None:
    import vitorch
    from vitorch.infer.autoguide import AutoMultivariateNormal, AutoNormal
    from vitorch.infer.run import RelativeLossChange

    _section("1. loc/scale model (the AutoNormal and AutoMultivariateNormal pages)")
    vitorch.set_rng_seed(0)
    data = torch.randn(100) + 3.0
    n = len(data)
    mean, sd = float(data.mean()), float(data.std())
    print(
        f"data: 100 draws of Normal(3, 1); sample mean {mean:.3f}, sample sd {sd:.3f}. "
        f"Expect loc ~ {mean:.3f} +- {sd / math.sqrt(n):.3f} and scale ~ {sd:.3f}."
    )
    for cls, lr, steps in ((AutoNormal, 0.01, 5000), (AutoMultivariateNormal, 0.01, 5000)):
        vitorch.clear_param_store()
        vitorch.set_rng_seed(1)
        guide = cls(loc_scale_model)
        post = _fit(
            loc_scale_model,
            guide,
            lr,
            steps // 10 if quick else steps,
            (data,),
            out,
            f"loc_scale-{cls.__name__}",
            progress,
            # Stop once the 100-step mean loss has moved by < 0.1% for 100 steps running.
            convergence=RelativeLossChange(tol=1e-3, window=100),
        )
        print(
            f"{cls.__name__}: loc {float(post['loc']['mean']):.3f} (data mean {mean:.3f}), "
            f"scale {float(post['scale']['mean']):.3f} (data sd {sd:.3f})"
        )


def _regression(out: Path, progress: bool, quick: bool) -> None:
    import vitorch
    from vitorch.infer.autoguide import AutoMultivariateNormal

    _section("2. Bayesian linear regression on scikit-learn's diabetes data")
    try:
        from sklearn.datasets import load_diabetes
    except ImportError:
        print("scikit-learn is not installed: skipping (pip install scikit-learn)")
        return
    raw = load_diabetes()
    x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    print(
        f"{x.shape[0]} patients, {x.shape[1]} standardized features: {', '.join(raw.feature_names)}"
    )
    vitorch.clear_param_store()
    vitorch.set_rng_seed(2)
    guide = AutoMultivariateNormal(regression_model)
    post = _fit(
        regression_model,
        guide,
        0.02,
        300 if quick else 3000,
        (x, y),
        out,
        "diabetes-regression",
        progress,
        # No early stopping here: the correlated weights (s1..s5) keep moving long after
        # the loss looks flat, so a fixed budget it is.
    )
    # With sigma fixed, the posterior of (b, w) is Gaussian with mean
    # (X'X + sigma^2 I)^-1 X'y for the N(0, 1) priors: compare the fitted means with it.
    sigma = float(post["sigma"]["mean"])
    xb = torch.cat([torch.ones(x.shape[0], 1), x], 1).double()
    exact = torch.linalg.solve(
        xb.T @ xb + sigma**2 * torch.eye(xb.shape[1], dtype=torch.float64), xb.T @ y.double()
    )
    fitted = torch.cat([post["b"]["mean"].reshape(1), post["w"]["mean"]])
    gap = float((fitted - exact).abs().max())
    print(
        f"exact posterior mean of the weights given sigma={sigma:.3f}: "
        + " ".join(f"{v:+.3f}" for v in exact[1:].tolist())
    )
    print(
        "fitted (AutoMultivariateNormal)                    : "
        + " ".join(f"{v:+.3f}" for v in fitted[1:].tolist())
    )
    print(
        f"largest difference: {gap:.3f} (posterior sds are about {float(post['w']['sd'].mean()):.3f})"
    )


def _find_vae() -> Path | None:
    # The examples folder sits next to the package in a source checkout (pip install -e .).
    candidate = Path(__file__).resolve().parent.parent / "examples" / "vae.py"
    return candidate if candidate.is_file() else None


def _vae(out: Path, progress: bool, quick: bool) -> None:
    _section("3. variational autoencoder on scikit-learn's digits (examples/vae.py)")
    path = _find_vae()
    if path is None:
        print(
            "examples/vae.py was not found next to the package (an installed, non-editable "
            "vitorch): skipping. Run it from a source checkout: python examples/vae.py"
        )
        return
    spec = importlib.util.spec_from_file_location("_vitorch_example_vae", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    epochs = 1 if quick else 30
    result = module.train_vae(epochs=epochs, out_dir=str(out / "vae"), progress=progress)
    print(
        f"VAE: {epochs} epochs in {result['seconds']:.1f} s; test ELBO per image "
        f"{result['test_elbo'][0]:.2f} -> {result['test_elbo'][-1]:.2f}; "
        f"{result['num_test']} unseen images encoded in one pass in "
        f"{1e3 * result['encode_seconds']:.1f} ms"
    )
    for f in result["files"]:
        print(f"wrote {f}")


def run_demo(
    out: str | os.PathLike = "vitorch-demo", progress: bool = True, quick: bool = False
) -> Path:
    """Run the three parts; write figures and summaries to ``out``; return its path."""
    import vitorch

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # These models are small: one thread is fastest, and fair on a shared machine.
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        _loc_scale(folder, progress, quick)
        _regression(folder, progress, quick)
        _vae(folder, progress, quick)
    finally:
        torch.set_num_threads(threads)
        vitorch.clear_param_store()
    _section("done")
    pngs = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    print(f"{time.perf_counter() - t0:.0f} s; figures in {folder}/: {', '.join(pngs)}")
    return folder
