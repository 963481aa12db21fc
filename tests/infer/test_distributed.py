"""DistributedSVI: data-parallel SVI over a torch.distributed (gloo) process group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import vitorch
from vitorch.infer import SVI, DistributedSVI, Trace_ELBO, shard
from vitorch.infer.autoguide import AutoDelta

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend"
)

WORKER = Path(__file__).with_name("_distributed_worker.py")
sys.path.insert(0, str(WORKER.parent))
import _distributed_worker as worker  # noqa: E402


def run_workers(tmp_path: Path, scenario: str, world: int = 2) -> list[dict]:
    """Start ``world`` worker processes and return what each saved."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    init = tmp_path / "rendezvous"
    outs = [tmp_path / f"rank{r}.pt" for r in range(world)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), scenario, str(r), str(world), str(init), str(outs[r])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)  # a hang in a collective fails here
            logs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    return [torch.load(o, weights_only=False) for o in outs]


def test_two_workers_on_half_the_data_follow_the_full_data_trajectory(tmp_path):
    # MAP (AutoDelta) has no sampling noise, and with equal shards scaled to the full data
    # the averaged gradient is the full-data gradient: the same 30 Adam steps.
    records = run_workers(tmp_path, "map")
    assert "error" not in records[0] and "error" not in records[1]
    x, y = worker.regression_data()
    vitorch.clear_param_store()
    vitorch.set_rng_seed(1000)  # worker 0's seed: its initial values are the ones broadcast
    guide = AutoDelta(worker.regression_model)
    svi = SVI(worker.regression_model, guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(30)]
    reference = {k: v.detach() for k, v in vitorch.get_param_store().items()}
    for rec in records:
        assert rec["params"].keys() == reference.keys()
        for name, value in reference.items():
            torch.testing.assert_close(rec["params"][name], value, rtol=1e-5, atol=1e-6)
        # The loss returned is the workers' mean, an estimate of the full-data loss.
        torch.testing.assert_close(
            torch.tensor(rec["losses"]), torch.tensor(losses), rtol=1e-5, atol=1e-4
        )


def test_workers_with_different_seeds_stay_identical(tmp_path):
    records = run_workers(tmp_path, "normal")
    first, second = records
    assert "error" not in first and "error" not in second
    assert first["params"].keys() == second["params"].keys()
    for name in first["params"]:
        assert torch.equal(first["params"][name], second["params"][name]), name
    # Each worker drew its own noise (different seeds), yet the copies agree bit for bit:
    # without the averaged gradients they would drift apart at the first step.
    assert first["losses"] == second["losses"]


def test_workers_seeded_alike_get_their_own_random_streams(tmp_path):
    # Same seed everywhere: without separate streams every worker would draw the same
    # noise and the average would be one worker's gradient.
    first, second = run_workers(tmp_path, "same_seed")
    assert "error" not in first and "error" not in second
    assert not torch.equal(first["next_draw"], second["next_draw"])
    for name in first["params"]:
        assert torch.equal(first["params"][name], second["params"][name]), name
    # Reproducible: the streams derive from the common state and the rank.
    again = run_workers(tmp_path / "again", "same_seed")
    assert torch.equal(again[0]["next_draw"], first["next_draw"])
    assert torch.equal(again[1]["next_draw"], second["next_draw"])


def test_a_failing_worker_stops_every_worker_without_a_hang(tmp_path):
    first, second = run_workers(tmp_path, "fail")
    assert second["error"] == "ValueError: worker 1 broke on purpose"
    assert first["error"].startswith("RuntimeError: worker 1 of 2 failed in this step")
    assert len(first["losses"]) == 2 and len(second["losses"]) == 2
    for name in first["params"]:  # the failed step changed nothing anywhere
        assert torch.equal(first["params"][name], second["params"][name])


def test_a_non_finite_loss_on_one_worker_is_skipped_by_all(tmp_path):
    first, second = run_workers(tmp_path, "inf_skip")
    assert "error" not in first and "error" not in second, (first, second)
    assert first["skipped"] == [2] and second["skipped"] == [2]
    for name in first["params"]:
        assert torch.equal(first["params"][name], second["params"][name])


def test_one_worker_group_is_plain_svi(tmp_path):
    x, y = worker.regression_data()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'solo'}", rank=0, world_size=1)
    try:
        results = []
        for cls in (SVI, DistributedSVI):
            vitorch.clear_param_store()
            vitorch.set_rng_seed(7)
            guide = AutoDelta(worker.regression_model)
            svi = cls(
                worker.regression_model, guide, vitorch.optim.Adam({"lr": 0.05}), Trace_ELBO()
            )
            losses = [svi.step(x, y) for _ in range(10)]
            results.append((losses, vitorch.get_param_store()["AutoDelta.w"].detach().clone()))
        assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
        torch.testing.assert_close(results[0][1], results[1][1])
    finally:
        dist.destroy_process_group()


def test_without_a_process_group_the_error_says_what_to_do():
    assert not dist.is_initialized()
    svi = DistributedSVI(
        worker.regression_model,
        AutoDelta(worker.regression_model),
        vitorch.optim.Adam({"lr": 0.05}),
        Trace_ELBO(),
    )
    x, y = worker.regression_data()
    with pytest.raises(RuntimeError, match="init_process_group"):
        svi.step(x, y)


def test_shard_splits_the_items():
    parts = [shard(10, r, 3) for r in range(3)]
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(10))
    assert [len(p) for p in parts] == [4, 3, 3]
    with pytest.raises(ValueError, match="rank"):
        shard(10, 3, 3)
    with pytest.raises(ValueError, match="num_items"):
        shard(0, 0, 1)
    with pytest.raises(ValueError, match="at least one"):
        shard(2, 0, 3)
