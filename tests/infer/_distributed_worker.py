"""One worker of the DistributedSVI tests: ``python _distributed_worker.py SCENARIO RANK WORLD INIT OUT``.

Joins a gloo process group through the file ``INIT``, runs ``SCENARIO`` and saves what the
test checks to ``OUT`` (a torch file: final parameters, losses, or the error it raised).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

import vitorch
import vitorch.distributions as vdist
from vitorch.infer import DistributedSVI, Trace_ELBO, shard
from vitorch.infer.autoguide import AutoDelta, AutoNormal


def regression_data(n: int = 40, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(n, d, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5])[:d] + 0.3 * torch.randn(n, generator=gen)
    return x, y


def regression_model(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> None:
    w = vitorch.sample("w", vdist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    with vitorch.plate("data", x.shape[0], subsample=idx) as i:
        vitorch.sample("y", vdist.Normal(x[i] @ w, 0.3), obs=y[i])


def main() -> None:
    scenario, rank, world, init, out = sys.argv[1:6]
    rank, world = int(rank), int(world)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    # A different seed on every worker (the first step must still start them all alike),
    # except where the scenario is about one seed everywhere.
    vitorch.set_rng_seed(0 if scenario == "same_seed" else 1000 + rank)
    x, y = regression_data()
    idx = shard(x.shape[0])
    record: dict = {"rank": rank}
    try:
        if scenario == "map":
            guide = AutoDelta(regression_model)
            svi = DistributedSVI(
                regression_model, guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO()
            )
            record["losses"] = [svi.step(x, y, idx) for _ in range(30)]
        elif scenario == "normal":
            guide = AutoNormal(regression_model)
            svi = DistributedSVI(
                regression_model, guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO()
            )
            record["losses"] = [svi.step(x, y, idx) for _ in range(40)]
        elif scenario == "same_seed":
            guide = AutoNormal(regression_model)
            svi = DistributedSVI(
                regression_model, guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO()
            )
            record["losses"] = [svi.step(x, y, idx) for _ in range(10)]
            record["next_draw"] = torch.randn(3)
        elif scenario == "fail":
            calls = {"n": 0}

            def failing(x, y, idx):
                calls["n"] += 1  # step 1 evaluates twice (new parameters), so call 4 is step 3
                if rank == 1 and calls["n"] == 4:
                    raise ValueError("worker 1 broke on purpose")
                regression_model(x, y, idx)

            guide = AutoDelta(regression_model)
            svi = DistributedSVI(failing, guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO())
            record["losses"] = []
            for _ in range(6):
                record["losses"].append(svi.step(x, y, idx))
        elif scenario == "inf_skip":
            calls = {"n": 0}

            def sometimes_inf(x, y, idx):
                calls["n"] += 1  # call 3 is step 2
                huge = rank == 1 and calls["n"] == 3
                regression_model(x, y * 1e30 if huge else y, idx)

            guide = AutoDelta(regression_model)
            svi = DistributedSVI(
                sometimes_inf, guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO()
            )
            result = svi.run(5, x, y, idx, progress=False, on_nonfinite="skip")
            record["skipped"] = list(result.skipped_steps)
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
    except Exception as e:  # the test reads what each worker raised
        record["error"] = f"{type(e).__name__}: {e}"
    record["params"] = {
        name: value.detach().clone() for name, value in vitorch.get_param_store().items()
    }
    torch.save(record, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
