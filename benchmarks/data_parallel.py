"""Data-parallel SVI: one worker on all the data vs ``W`` workers on a shard each.

Bayesian logistic regression with AutoNormal, ``N`` items and ``d`` features. With one
worker, ``SVI.step`` on all items; with ``W`` workers (separate processes, a gloo process
group, one thread each), ``DistributedSVI.step`` on ``N / W`` items each, gradients
averaged. Reported: the median wall time per step and the speed-up. The step is the
same estimator either way (a full-data gradient of the same ELBO); what differs is
that ``W`` cores share the work. Needs as many free cores as workers.

The exchange per step is two small collectives (~0.2-0.5 ms each over gloo on one
machine) plus waiting for the slowest worker, so a step must cost tens of milliseconds
for the split to pay: on the 2-core development machine 1M items give 1.97x with two
workers, 200k items (6 ms steps) give no gain.

    python benchmarks/data_parallel.py [--workers 2] [--items 1000000] [--features 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, DistributedSVI, Trace_ELBO, shard
from vitorch.infer.autoguide import AutoNormal


def data(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    y = torch.bernoulli(torch.sigmoid(x @ torch.randn(d, generator=gen)), generator=gen)
    return x, y


def make_model(n: int, d: int):
    """The model over rows ``xs`` of the ``n`` items (all of them, or a worker's shard)."""

    def model(xs: torch.Tensor, ys: torch.Tensor, local: torch.Tensor) -> None:
        w = vitorch.sample("w", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        # size n, subsample = the rows at hand: the likelihood is scaled to all n items.
        with vitorch.plate("data", n, subsample=local):
            vitorch.sample("y", dist.Bernoulli(logits=xs @ w), obs=ys)

    return model


def timed_steps(step, steps: int) -> float:
    for _ in range(5):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(rank: int, world: int, init: str, n: int, d: int, steps: int, out: str) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    x, y = data(n, d)
    idx = shard(n)
    # The shard's rows, gathered once: each worker holds only its part in practice.
    xs, ys = x[idx], y[idx]
    local = torch.arange(len(idx))
    model = make_model(n, d)
    guide = AutoNormal(model)
    svi = DistributedSVI(model, guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())
    seconds = timed_steps(lambda: svi.step(xs, ys, local), steps)
    if rank == 0:
        Path(out).write_text(str(seconds))
    tdist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # rank, init, out
    args = parser.parse_args()
    n, d = args.items, args.features
    if args.worker:
        rank, init, out = args.worker
        worker(int(rank), args.workers, init, n, d, args.steps, out)
        return

    torch.set_num_threads(1)
    x, y = data(n, d)
    model = make_model(n, d)
    guide = AutoNormal(model)
    svi = SVI(model, guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())
    everything = torch.arange(n)
    single = timed_steps(lambda: svi.step(x, y, everything), args.steps)

    with tempfile.TemporaryDirectory() as tmp:
        init, out = f"{tmp}/rendezvous", f"{tmp}/seconds"
        cmd = [sys.executable, __file__, "--workers", str(args.workers), "--items", str(n)]
        cmd += ["--features", str(d), "--steps", str(args.steps), "--worker"]
        procs = [subprocess.Popen(cmd + [str(r), init, out]) for r in range(args.workers)]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"a worker failed with exit code {p.returncode}")
        parallel = float(Path(out).read_text())
    print(
        f"logistic regression, AutoNormal, N={n}, d={d}, 1 thread per process, "
        f"median of {args.steps} steps"
    )
    print(f"{'setup':<28}{'ms/step':>10}{'speed-up':>10}")
    print(f"{'SVI, 1 process':<28}{single * 1e3:>10.2f}{1.0:>9.2f}x")
    label = f"DistributedSVI, {args.workers} workers"
    print(f"{label:<28}{parallel * 1e3:>10.2f}{single / parallel:>9.2f}x")


if __name__ == "__main__":
    main()
