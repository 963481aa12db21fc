"""Cost of the multivariate-normal gradient estimators: ``rsample`` + backward.

For every dimension ``D`` and number of draws ``N`` one "step" is: build the
distribution from leaf parameters ``loc`` (D,) and ``scale_tril`` (D, D) (and
``control_var`` (2, 1, D) for AVF), draw ``z = d.rsample((N,))``, and backpropagate
``(z ** 2).sum()``. Gradients are reset to ``None`` before each step, so every step
allocates its own ``.grad`` tensors. Five estimators are compared:

* ``plain``: ``vitorch.distributions.MultivariateNormal`` (torch's pathwise gradient),
* ``omt`` / ``avf``: vitorch's ``OMTMultivariateNormal`` / ``AVFMultivariateNormal``,
* ``pyro-omt`` / ``pyro-avf``: the same classes from pyro-ppl (columns left out when
  pyro-ppl is not installed).

Time: the estimators take turns step by step (so a slow moment of a shared machine hits
all of them), and the median step time is reported (``--stat min`` for the fastest step,
steadier when other jobs share the cores). Torch runs on one thread
(``torch.set_num_threads(1)``) and argument validation is off for everyone, so what is
measured is the estimator, not the checks.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the step minus what was
allocated before it. On CPU, torch's profiler with ``profile_memory=True`` records every
allocation and free made by torch's CPU allocator (sizes and time stamps, from all
threads, forward and backward alike); replaying them in time order gives the live bytes
after each event, and the peak of that curve is reported. It counts exactly the tensor
memory the step allocates on top of what existed before it (the parameters): saved
tensors, backward temporaries, ``.grad`` buffers and LAPACK workspaces that torch
allocates; it does not count Python objects or memory that MKL allocates for itself
outside torch's allocator (the same for every estimator). ``tracemalloc`` would see none
of torch's tensor memory, and process RSS is blurred by the C allocator's caching.

    python benchmarks/mvn_estimators.py [--dims 10 50 200 500] [--samples 1 100 1000]
        [--device cpu|cuda] [--dtype float32|float64] [--max-seconds 0.5] [--stat min]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import torch
from torch.distributions import Distribution

import vitorch.distributions as vdist

Step = Callable[[], None]


def make_params(dim: int, dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(dim)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    tril = torch.linalg.cholesky(a @ a.T / dim + torch.eye(dim, dtype=torch.float64))
    return {
        "loc": torch.zeros(dim, dtype=dtype, device=device).requires_grad_(),
        "scale_tril": tril.to(dtype=dtype, device=device).requires_grad_(),
        "control_var": torch.full((2, 1, dim), 0.1, dtype=dtype, device=device).requires_grad_(),
    }


def estimators(pyro_dist) -> dict[str, Callable[[dict[str, torch.Tensor]], Distribution]]:
    out: dict[str, Callable[[dict[str, torch.Tensor]], Distribution]] = {
        "plain": lambda p: vdist.MultivariateNormal(p["loc"], scale_tril=p["scale_tril"]),
        "omt": lambda p: vdist.OMTMultivariateNormal(p["loc"], p["scale_tril"]),
        "avf": lambda p: vdist.AVFMultivariateNormal(p["loc"], p["scale_tril"], p["control_var"]),
    }
    if pyro_dist is not None:
        out["pyro-omt"] = lambda p: pyro_dist.OMTMultivariateNormal(p["loc"], p["scale_tril"])
        out["pyro-avf"] = lambda p: pyro_dist.AVFMultivariateNormal(
            p["loc"], p["scale_tril"], p["control_var"]
        )
    return out


def make_step(build, params: dict[str, torch.Tensor], num_samples: int) -> Step:
    def step() -> None:
        for p in params.values():
            p.grad = None
        z = build(params).rsample((num_samples,))
        (z * z).sum().backward()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_bytes(step: Step, device: str) -> int:
    """Peak of the tensor bytes allocated during ``step`` on top of those live before it."""
    if device == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync(device)
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


def time_cell(
    steps: dict[str, Step], device: str, max_seconds: float, stat: str = "median"
) -> dict[str, float]:
    """Seconds per step (median or min); estimators alternate until each used ``max_seconds``."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    spent = dict.fromkeys(steps, 0.0)
    for step in steps.values():  # warm-up: caches, lazy init, allocator pools
        step()
    for _ in range(200):
        todo = [n for n in steps if spent[n] < max_seconds or len(samples[n]) < 3]
        if not todo:
            break
        for name in todo:
            sync(device)
            start = time.perf_counter()
            steps[name]()
            sync(device)
            elapsed = time.perf_counter() - start
            samples[name].append(elapsed)
            spent[name] += elapsed
    reduce = statistics.median if stat == "median" else min
    return {name: reduce(v) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 50, 200, 500])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-seconds", type=float, default=0.5, help="timing budget per estimator and cell"
    )
    parser.add_argument("--no-pyro", action="store_true", help="leave pyro-ppl out")
    parser.add_argument(
        "--stat",
        choices=["median", "min"],
        default="median",
        help="min is the steadier choice on a machine shared with other jobs",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    Distribution.set_default_validate_args(False)
    pyro_dist = None
    if not args.no_pyro and importlib.util.find_spec("pyro") is not None:
        import pyro.distributions as pyro_dist  # noqa: F811

    dtype = getattr(torch, args.dtype)
    builders = estimators(pyro_dist)
    names = list(builders)
    print(
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} pyro={'yes' if pyro_dist is not None else 'not installed'}"
    )
    time_rows, mem_rows = [], []
    for dim in args.dims:
        for n in args.samples:
            params = make_params(dim, dtype, args.device)
            steps = {name: make_step(b, params, n) for name, b in builders.items()}
            times = time_cell(steps, args.device, args.max_seconds, args.stat)
            mems = {name: peak_bytes(steps[name], args.device) for name in names}
            time_rows.append((dim, n, times))
            mem_rows.append((dim, n, mems))
            print(
                f"D={dim:4d} N={n:5d}  "
                + "  ".join(f"{k}={v * 1e3:.3f}ms" for k, v in times.items()),
                flush=True,
            )

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 0 else "-"

    print(f"\n## Time per step (ms, {args.stat})\n")
    header = "| D | N | " + " | ".join(names) + " | omt/plain | avf/plain |"
    if pyro_dist is not None:
        header += " pyro-omt/omt | pyro-avf/avf | pyro-omt/plain | pyro-avf/plain |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for dim, n, t in time_rows:
        row = f"| {dim} | {n} | " + " | ".join(f"{t[k] * 1e3:.3f}" for k in names)
        row += f" | {ratio(t['omt'], t['plain'])} | {ratio(t['avf'], t['plain'])} |"
        if pyro_dist is not None:
            row += (
                f" {ratio(t['pyro-omt'], t['omt'])} | {ratio(t['pyro-avf'], t['avf'])} |"
                f" {ratio(t['pyro-omt'], t['plain'])} | {ratio(t['pyro-avf'], t['plain'])} |"
            )
        print(row)

    print("\n## Peak memory per step (MB)\n")
    header = "| D | N | " + " | ".join(names) + " | omt/plain | avf/plain |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for dim, n, m in mem_rows:
        row = f"| {dim} | {n} | " + " | ".join(f"{m[k] / 2**20:.2f}" for k in names)
        row += f" | {ratio(m['omt'], m['plain'])} | {ratio(m['avf'], m['plain'])} |"
        print(row)


if __name__ == "__main__":
    main()
