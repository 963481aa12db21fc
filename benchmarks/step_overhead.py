"""Time per SVI step on a small model: vitorch vs pyro-ppl vs a hand-written torch loop.

The model is the loc/scale model of the AutoNormal / AutoMultivariateNormal reference
pages (100 observations), with a hand-written mean-field guide (Normal for ``loc``,
LogNormal for ``scale``: four parameters, two of them positive). With so little tensor
work per step, the time is almost all Python: what each library adds on top of the
arithmetic. The hand-written loop does the same arithmetic with ``torch.distributions``
(default validation), one ``torch.optim.Adam`` and ``transform_to(positive)``; it is the
floor.

Each implementation runs ``--steps`` steps per round, the implementations take turns
round by round (so that a slow moment of a shared machine hits all of them), and the
median over ``--rounds`` rounds is reported. pyro-ppl is optional: without it its column
is left out.

    python benchmarks/step_overhead.py [--steps 1000] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.distributions import constraints, kl_divergence, transform_to

NUM_DATA = 100
LR = 0.01


def make_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(NUM_DATA, generator=g) + 3.0


# -- vitorch and pyro share the model code, up to the module names ---------------------------
def make_ppl_step(ppl, ppl_dist, ppl_infer, ppl_optim, elbo_name: str, data: torch.Tensor):
    """One SVI step of ``ppl`` (vitorch or pyro), as a zero-argument callable."""

    def model(data: torch.Tensor) -> None:
        loc = ppl.sample("loc", ppl_dist.Normal(0.0, 10.0))
        scale = ppl.sample("scale", ppl_dist.LogNormal(0.0, 1.0))
        with ppl.plate("data", len(data)):
            ppl.sample("obs", ppl_dist.Normal(loc, scale), obs=data)

    # Initial values made once: building them inside the guide would time four
    # torch.tensor calls per step that the hand-written loop does not make. One tensor
    # per parameter: pyro-ppl keeps an unconstrained initial tensor itself as the
    # parameter, so two parameters made from one tensor would be one parameter there.
    init = {k: torch.tensor(v) for k, v in (("ll", 0.0), ("ls", 1.0), ("sl", 0.0), ("ss", 0.5))}

    def guide(data: torch.Tensor) -> None:
        loc_loc = ppl.param("loc_loc", init["ll"])
        loc_scale = ppl.param("loc_scale", init["ls"], constraint=constraints.positive)
        scale_loc = ppl.param("scale_loc", init["sl"])
        scale_scale = ppl.param("scale_scale", init["ss"], constraint=constraints.positive)
        ppl.sample("loc", ppl_dist.Normal(loc_loc, loc_scale))
        ppl.sample("scale", ppl_dist.LogNormal(scale_loc, scale_scale))

    ppl.clear_param_store()
    elbo = getattr(ppl_infer, elbo_name)()
    svi = ppl_infer.SVI(model, guide, ppl_optim.Adam({"lr": LR}), loss=elbo)
    return lambda: svi.step(data)


def make_vitorch_step(elbo_name: str, data: torch.Tensor) -> Callable[[], float]:
    import vitorch
    import vitorch.distributions
    import vitorch.infer
    import vitorch.optim

    return make_ppl_step(
        vitorch, vitorch.distributions, vitorch.infer, vitorch.optim, elbo_name, data
    )


def make_pyro_step(elbo_name: str, data: torch.Tensor) -> Callable[[], float] | None:
    try:
        import pyro
        import pyro.distributions
        import pyro.infer
        import pyro.optim
    except ImportError:
        return None
    return make_ppl_step(pyro, pyro.distributions, pyro.infer, pyro.optim, elbo_name, data)


# -- the floor: the same arithmetic, written out -----------------------------------------------
def make_torch_step(elbo_name: str, data: torch.Tensor) -> Callable[[], float]:
    D = torch.distributions
    positive = transform_to(constraints.positive)
    loc_loc = torch.tensor(0.0, requires_grad=True)
    loc_scale_u = positive.inv(torch.tensor(1.0)).requires_grad_(True)
    scale_loc = torch.tensor(0.0, requires_grad=True)
    scale_scale_u = positive.inv(torch.tensor(0.5)).requires_grad_(True)
    optimizer = torch.optim.Adam([loc_loc, loc_scale_u, scale_loc, scale_scale_u], lr=LR)
    mean_field = elbo_name == "TraceMeanField_ELBO"

    def step() -> float:
        q_loc = D.Normal(loc_loc, positive(loc_scale_u))
        q_scale = D.LogNormal(scale_loc, positive(scale_scale_u))
        loc = q_loc.rsample()
        scale = q_scale.rsample()
        p_loc = D.Normal(0.0, 10.0)
        p_scale = D.LogNormal(0.0, 1.0)
        log_lik = D.Normal(loc, scale).log_prob(data).sum()
        if mean_field:
            elbo = log_lik - kl_divergence(q_loc, p_loc) - kl_divergence(q_scale, p_scale)
        else:
            elbo = (
                p_loc.log_prob(loc)
                + p_scale.log_prob(scale)
                + log_lik
                - q_loc.log_prob(loc)
                - q_scale.log_prob(scale)
            )
        loss = -elbo
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


# -- timing ----------------------------------------------------------------------------------
CLOCKS = {
    "wall": time.perf_counter,
    # CPU time of this thread: on a machine shared with other jobs it leaves out the
    # time spent waiting for a core, so it varies less from run to run.
    "cpu": time.thread_time,
}


def time_steps(step: Callable[[], float], steps: int, clock: Callable[[], float]) -> float:
    """Seconds per step over ``steps`` calls."""
    start = clock()
    for _ in range(steps):
        step()
    return (clock() - start) / steps


def check_same_math(elbo_name: str, steps: int = 50) -> str:
    """Run each implementation from one RNG seed; report how far their losses differ.

    All three draw their noise in the same order, so equal math gives equal losses step
    by step; a large difference means the comparison is not like for like.
    """
    data = make_data()
    losses = {}
    for name, make in (
        ("torch", make_torch_step),
        ("vitorch", make_vitorch_step),
        ("pyro", make_pyro_step),
    ):
        fn = make(elbo_name, data)
        if fn is None:
            continue
        torch.manual_seed(0)
        losses[name] = torch.tensor([fn() for _ in range(steps)], dtype=torch.float64)
    ref = losses["torch"]
    worst = {
        name: float(((v - ref).abs() / ref.abs()).max())
        for name, v in losses.items()
        if name != "torch"
    }
    return ", ".join(f"{name} {w:.1e}" for name, w in worst.items())


def bench(
    elbo_name: str, steps: int, rounds: int, warmup: int, clock: Callable[[], float]
) -> dict[str, float]:
    data = make_data()
    # Each library keeps its state in its own global param store, so the three can be
    # built up front and interleaved.
    makers = {
        "torch": make_torch_step,
        "vitorch": make_vitorch_step,
        "pyro": make_pyro_step,
    }
    fns = {}
    for name, make in makers.items():
        fn = make(elbo_name, data)
        if fn is not None:
            fns[name] = fn
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_steps(fn, steps, clock))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="wall-clock or thread CPU time"
    )
    parser.add_argument(
        "--no-validation",
        action="store_true",
        help="switch argument/support validation off for all three (default: on, as shipped)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    validate = not args.no_validation
    # One switch serves torch and vitorch (vitorch.enable_validation sets torch's default);
    # pyro-ppl has its own on top.
    torch.distributions.Distribution.set_default_validate_args(validate)

    try:
        import pyro

        pyro.enable_validation(validate)
        pyro_version = pyro.__version__
    except ImportError:
        pyro_version = None
    print(
        f"torch {torch.__version__}, pyro-ppl {pyro_version or 'not installed'}; "
        f"{NUM_DATA} observations, {args.rounds} rounds x {args.steps} steps, "
        f"median per step, {args.threads} thread(s), {args.clock} clock, "
        f"validation {'on' if validate else 'off'}"
    )
    header = f"{'ELBO':<22}{'torch':>10}{'vitorch':>10}{'pyro':>10}{'vitorch/torch':>15}{'vitorch/pyro':>14}"
    print(header)
    for elbo_name in ("Trace_ELBO", "TraceMeanField_ELBO"):
        same = check_same_math(elbo_name)
        med = bench(elbo_name, args.steps, args.rounds, args.warmup, CLOCKS[args.clock])
        us = {k: v * 1e6 for k, v in med.items()}
        pyro_us = f"{us['pyro']:>8.0f}us" if "pyro" in us else f"{'-':>10}"
        vs_pyro = f"{us['vitorch'] / us['pyro']:>14.2f}" if "pyro" in us else f"{'-':>14}"
        print(
            f"{elbo_name:<22}{us['torch']:>8.0f}us{us['vitorch']:>8.0f}us{pyro_us}"
            f"{us['vitorch'] / us['torch']:>15.2f}{vs_pyro}"
            f"   (max rel. loss difference to torch over 50 seeded steps: {same})"
        )


if __name__ == "__main__":
    main()
