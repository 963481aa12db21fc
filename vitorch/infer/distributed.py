"""Data-parallel SVI on ``torch.distributed``: each worker fits its shard, gradients are averaged.

One process per worker, started by ``torchrun`` (or any launcher that sets up a process
group); every worker runs the same script::

    import torch.distributed as dist
    dist.init_process_group("gloo")  # "nccl" for one GPU per worker
    idx = shard(len(data))  # this worker's items

    def model(data, idx):
        ...
        with vitorch.plate("data", len(data), subsample=idx):  # scaled to the full data
            vitorch.sample("obs", dist_fn, obs=data[idx])

    svi = DistributedSVI(model, guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())
    result = svi.run(2000, data, idx)  # or a loop over svi.step(data, idx)

What one :meth:`DistributedSVI.step` does:

1. Each worker evaluates the loss on its own data and backpropagates, as ``SVI.step``.
2. One small all-gather agrees on the step: every worker evaluated it and holds as many
   parameter entries as the others. A worker that failed (a non-finite loss, an
   exception) is reported to all: it raises its own error, the others raise one that
   names its rank, so nobody waits forever in the next collective, and
   ``run(on_nonfinite="skip")`` skips the same step everywhere.
3. Parameters seen for the first time (a guide's first call, a resumed checkpoint) are
   checked to agree in names and shapes and broadcast from rank 0, and the step is
   evaluated again: every worker starts from the same values whatever its seed.
4. One all-reduce per (device, dtype) averages the gradients, flattened in name order, and
   the losses are averaged. Every worker then applies the same update to the same values
   with its own copy of the optimizer, so parameters and optimizer states stay identical
   without ever being sent again.

With a plate subsampled and scaled to the full data, each worker's loss is an unbiased
estimate of the full loss and so is their average; with equal shards of a deterministic
objective the averaged gradient is the full-data gradient itself (tests check both).
Workers that start a run with one random state (the same seed everywhere, or every
worker resuming from rank 0's checkpoint) would draw the same noise and average identical
gradients. The first step checks for that (one all-gather of a digest of torch's random
state) and, only then, reseeds each worker with ``digest + rank``: still reproducible, and
the draws differ. Save checkpoints from one worker only (``run(checkpoint=...)`` on rank
0); a resumed run restores parameters and optimizer state everywhere and continues with
those reseeded streams, not bit for bit as the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

from ..handlers.seed import set_rng_seed
from ..params import _PARAM_STORE
from .elbo import ELBO, NonFiniteLossError
from .svi import SVI, _clear_grads

__all__ = ["DistributedSVI", "shard"]

# Status codes exchanged at every step.
_OK, _NONFINITE, _FAILED = 0.0, 1.0, 2.0


def _distributed() -> Any:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "DistributedSVI needs a torch.distributed process group: call "
            "torch.distributed.init_process_group(...) in every worker first (torchrun sets "
            "up the environment it reads)"
        )
    return dist


def shard(num_items: int, rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """The indices of this worker's items: ``rank, rank + world_size, ...`` below ``num_items``.

    Shards differ in size by at most one. ``rank`` and ``world_size`` default to those of
    the default process group.
    """
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"shard: num_items must be a positive int, got {num_items!r}")
    if rank is None or world_size is None:
        dist = _distributed()
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"shard: world_size must be a positive int, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"shard: rank must be in [0, {world_size}), got {rank!r}")
    if num_items < world_size:
        raise ValueError(
            f"shard: {num_items} items cannot give each of {world_size} workers at least one"
        )
    return torch.arange(rank, num_items, world_size)


class DistributedSVI(SVI):
    """``SVI`` whose steps average gradients over the workers of a process group.

    Same arguments as :class:`SVI`, plus ``process_group`` (default: the default group).
    ``step`` returns the loss averaged over the workers. See the module docstring for
    what a step exchanges.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: Any,
        loss: ELBO | Callable,
        *,
        process_group: Any = None,
        **kwargs: Any,
    ):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.process_group = process_group
        self._synced: set[str] = set()
        self._streams_checked = False

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One gradient step with gradients averaged over the workers; the mean loss."""
        dist = _distributed()
        if not self._streams_checked:
            self._separate_streams(dist)
        try:
            value, params, new = self._agreed_compute(dist, args, kwargs)
            if new:
                self._broadcast_new(dist, params, new)
                _clear_grads(params.values())
                value, params, _ = self._agreed_compute(dist, args, kwargs)
            self._average_grads(dist, params)
        except BaseException:
            _clear_grads(_PARAM_STORE._params.values())
            raise
        self._update(params)
        return value

    # -- the collectives -------------------------------------------------------------------
    def _separate_streams(self, dist: Any) -> None:
        """Reseed every worker (``digest + rank``) if they all hold one random state."""
        group = self.process_group
        world = dist.get_world_size(group)
        # 48 bits of the state's hash: exact in a float64, which every backend moves.
        digest = int(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:12], 16)
        mine = torch.tensor([float(digest)], dtype=torch.float64, device=_status_device(dist))
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine, group=group)
        self._streams_checked = True
        if world > 1 and all(bool(g == mine) for g in gathered):
            set_rng_seed(digest + dist.get_rank(group))

    def _agreed_compute(self, dist: Any, args: tuple, kwargs: dict) -> tuple[float, dict, list]:
        """Evaluate locally, then agree with the others: everyone fine, same parameter layout.

        Returns the loss averaged over the workers, the local (name -> param) dict and the
        sorted names not broadcast yet (as many on every worker, or an error is raised).
        """
        error: BaseException | None = None
        value, params = float("nan"), {}
        try:
            value, params = self._compute(args, kwargs)
        except NonFiniteLossError as e:
            error, code = e, _NONFINITE
        except Exception as e:  # noqa: BLE001 - reported to the others, then re-raised
            error, code = e, _FAILED
        else:
            code = _OK
        numel = sum(p.numel() for p in params.values())
        new = sorted(name for name in params if name not in self._synced)
        # On the backend's device, not the parameters': a failed worker has none.
        mine = torch.tensor(
            [code, len(params), numel, len(new), value],
            dtype=torch.float64,
            device=_status_device(dist),
        )
        group = self.process_group
        world = dist.get_world_size(group)
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine, group=group)
        rows = torch.stack(gathered).cpu()
        if error is not None:
            raise error
        failed = [r for r in range(world) if rows[r, 0] != _OK]
        if failed:
            r = failed[0]
            if rows[r, 0] == _NONFINITE:
                raise NonFiniteLossError(
                    f"worker {r} of {world} got a non-finite loss in this step (its own error "
                    "names the sites)",
                    [],
                )
            raise RuntimeError(f"worker {r} of {world} failed in this step (see its error)")
        if (rows[:, 1:4] != rows[0, 1:4]).any():
            self._raise_layout_mismatch(dist, params)
        return float(rows[:, 4].mean()), params, new

    def _raise_layout_mismatch(self, dist: Any, params: dict) -> None:
        layouts: list[Any] = [None] * dist.get_world_size(self.process_group)
        mine = {name: tuple(p.shape) for name, p in params.items()}
        dist.all_gather_object(layouts, mine, group=self.process_group)
        first = layouts[0]
        for r, other in enumerate(layouts):
            if other != first:
                only0 = sorted(set(first) - set(other))
                only_r = sorted(set(other) - set(first))
                shapes = sorted(n for n in set(first) & set(other) if first[n] != other[n])
                raise ValueError(
                    f"DistributedSVI: workers 0 and {r} do not hold the same parameters "
                    f"(only on 0: {only0}, only on {r}: {only_r}, different shapes: {shapes}); "
                    "every worker must run the same model and guide"
                )
        raise ValueError(
            "DistributedSVI: the workers' parameters differ in size or in which of them are new "
            "in this step; every worker must run the same model and guide"
        )

    def _broadcast_new(self, dist: Any, params: dict, new: list[str]) -> None:
        """Check that every worker met the same new parameters; copy rank 0's values to all."""
        group = self.process_group
        layouts: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(layouts, [(n, tuple(params[n].shape)) for n in new], group=group)
        for r, other in enumerate(layouts):
            if other != layouts[0]:
                raise ValueError(
                    f"DistributedSVI: workers 0 and {r} created different parameters in this "
                    f"step: {layouts[0]} vs {other}; every worker must run the same model "
                    "and guide"
                )
        src = 0 if group is None else dist.get_global_rank(group, 0)
        with torch.no_grad():
            for bucket in _buckets([params[n] for n in new]):
                flat = torch.cat([p.reshape(-1) for p in bucket])
                dist.broadcast(flat, src=src, group=group)
                _scatter(flat, bucket, lambda p, chunk: p.copy_(chunk))
        self._synced.update(new)

    def _average_grads(self, dist: Any, params: dict) -> None:
        group = self.process_group
        world = dist.get_world_size(group)
        ordered = [params[n] for n in sorted(params)]
        with torch.no_grad():
            for bucket in _buckets(ordered):
                flat = torch.cat(
                    [
                        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                        for p in bucket
                    ]
                )
                dist.all_reduce(flat, group=group)
                flat.div_(world)

                # Views of the reduced buffer: read by the optimizer, dropped after it.
                _scatter(flat, bucket, _set_grad)


def _set_grad(p: torch.Tensor, chunk: torch.Tensor) -> None:
    p.grad = chunk


def _status_device(dist: Any) -> torch.device:
    # NCCL moves only CUDA tensors; every other backend takes CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _buckets(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Group by (device, dtype), keeping order; buckets in an order every worker agrees on."""
    groups: dict[tuple[str, str], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((str(t.device), str(t.dtype)), []).append(t)
    return [groups[k] for k in sorted(groups)]


def _scatter(flat: torch.Tensor, bucket: list[torch.Tensor], put: Callable) -> None:
    offset = 0
    for p in bucket:
        n = p.numel()
        put(p, flat[offset : offset + n].view_as(p))
        offset += n
