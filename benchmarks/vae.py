"""Time per epoch of the digits VAE: vitorch vs pyro-ppl vs a hand-written torch loop.

All three train the same encoder/decoder (``examples/vae.py``, from the same initial
weights) on scikit-learn's digits with batch size 100 and Adam(lr=1e-3), one Monte Carlo
sample per image. The hand-written loop computes the same ELBO by hand
(``log p(x|z) + log p(z) - log q(z|x)`` at ``z = loc + eps * scale``) and calls
``torch.optim.Adam`` directly. The libraries are interleaved at the step (each round is one
epoch; every batch goes through each library in turn, in rotating order, and a library's
epoch time is the sum of its step times), so that drifts in machine load hit all of them
alike; the median over rounds is reported. Torch runs on one thread.

    python benchmarks/vae.py [--rounds 15] [--hidden 128] [--no-validation] [--clock wall]
    python benchmarks/vae.py --profile                # cProfile of vitorch's steps

Times are the thread's CPU time by default (see :func:`run`).

pyro-ppl is optional: without it its column is skipped.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import vitorch
from vitorch.infer import SVI as VSVI
from vitorch.infer import Trace_ELBO as VTrace_ELBO
from vitorch.optim import Adam as VAdam

_ROOT = Path(__file__).resolve().parents[1]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _load_vae_example():
    spec = importlib.util.spec_from_file_location(
        "_vitorch_example_vae", _ROOT / "examples" / "vae.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the three training steps --------------------------------------------------------------
def make_vitorch_step(ex, vae, lr: float) -> Callable[[torch.Tensor], float]:
    svi = VSVI(vae.model, vae.guide, VAdam({"lr": lr}), loss=VTrace_ELBO())
    return svi.step


def make_pyro_step(ex, vae, lr: float) -> Callable[[torch.Tensor], float] | None:
    try:
        import pyro
        import pyro.distributions as pdist
        from pyro.infer import SVI, Trace_ELBO
        from pyro.optim import Adam
    except ImportError:
        return None
    z_dim = vae.z_dim

    def model(x):
        pyro.module("decoder", vae.decoder)
        n = x.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample(
                "latent",
                pdist.Normal(x.new_zeros((n, z_dim)), x.new_ones((n, z_dim))).to_event(1),
            )
            probs = vae.decoder(z)
            pyro.sample("obs", pdist.Bernoulli(probs, validate_args=False).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", vae.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = vae.encoder(x)
            pyro.sample("latent", pdist.Normal(z_loc, z_scale).to_event(1))

    pyro.clear_param_store()
    svi = SVI(model, guide, Adam({"lr": lr}), loss=Trace_ELBO())
    return svi.step


def hand_written_elbo(encoder, decoder, x: torch.Tensor) -> torch.Tensor:
    """The one-sample ELBO of the batch, written out."""
    z_loc, z_scale = encoder(x)
    z = z_loc + torch.empty_like(z_loc).normal_() * z_scale
    log_q = (-((z - z_loc) ** 2) / (2 * z_scale**2) - z_scale.log() - _HALF_LOG_2PI).sum()
    log_prior = (-0.5 * z**2 - _HALF_LOG_2PI).sum()
    probs = decoder(z)
    tiny = torch.finfo(probs.dtype).eps
    p = probs.clamp(tiny, 1 - tiny)
    log_lik = -F.binary_cross_entropy_with_logits(
        torch.log(p) - torch.log1p(-p), x, reduction="sum"
    )
    return log_lik + log_prior - log_q


def make_torch_step(ex, vae, lr: float, fused: bool = False) -> Callable[[torch.Tensor], float]:
    # fused=True is torch's fused Adam kernel, which vitorch.optim.Adam picks by default:
    # the row shows how much of vitorch's margin is that choice, not the bookkeeping.
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr, fused=fused)

    def step(x: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = -hand_written_elbo(vae.encoder, vae.decoder, x)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


# -- timing --------------------------------------------------------------------------------
def _epoch(step, batches) -> float:
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return time.perf_counter() - start


def run(
    rounds: int = 15,
    hidden: int = 128,
    z_dim: int = 8,
    validation: bool = True,
    clock: str = "cpu",
) -> dict:
    """Median seconds per epoch of each library (pyro left out when it is absent).

    ``clock="cpu"`` times with the thread's CPU time, ``"wall"`` with the wall clock. With
    torch on one thread the two agree on an idle machine; on a shared one the CPU clock
    leaves out the time the process waits for a core, which otherwise swamps the
    differences being measured.
    """
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', got {clock!r}")
    torch.set_num_threads(1)
    ex = _load_vae_example()
    train, _ = ex.load_digits_split(seed=0)
    torch.manual_seed(0)
    base = ex.VAE(z_dim=z_dim, hidden_dim=hidden)
    vitorch.clear_param_store()
    steps = {
        "torch": make_torch_step(ex, copy.deepcopy(base), 1e-3),
        "torch-fused": make_torch_step(ex, copy.deepcopy(base), 1e-3, fused=True),
        "vitorch": make_vitorch_step(ex, copy.deepcopy(base), 1e-3),
    }
    pyro_step = make_pyro_step(ex, copy.deepcopy(base), 1e-3)
    if pyro_step is not None:
        steps["pyro"] = pyro_step
    # One flag for all: torch's global default, which both libraries' distributions follow.
    torch.distributions.Distribution.set_default_validate_args(validation)

    batch_rng = torch.Generator().manual_seed(0)
    names = list(steps)
    for name in names:  # warm-up: first-call costs (optimizer state, caches)
        _epoch(steps[name], ex.minibatches(train, 100, batch_rng))
    # Interleaved at the step: every batch goes through each library in turn (rotating the
    # order), and a library's epoch time is the sum of its step times. Load bursts on a
    # shared machine then land on all of them alike instead of on one library's epoch.
    times: dict[str, list[float]] = {name: [] for name in names}
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    for r in range(rounds):
        epoch = dict.fromkeys(names, 0.0)
        for i, batch in enumerate(ex.minibatches(train, 100, batch_rng)):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                step = steps[name]
                start = timer()
                step(batch)
                epoch[name] += timer() - start
        for name in names:
            times[name].append(epoch[name])
    median = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "seconds_per_epoch": median,
        "steps_per_epoch": math.ceil(len(train) / 100),
        "rounds": rounds,
        "validation": validation,
        "clock": clock,
        "pyro_available": pyro_step is not None,
    }


def profile(hidden: int = 128, epochs: int = 30) -> None:
    """cProfile of vitorch's steps, sorted by own time."""
    import cProfile
    import pstats

    torch.set_num_threads(1)
    ex = _load_vae_example()
    train, _ = ex.load_digits_split(seed=0)
    vae = ex.VAE(hidden_dim=hidden)
    step = make_vitorch_step(ex, vae, 1e-3)
    rng = torch.Generator().manual_seed(0)
    _epoch(step, ex.minibatches(train, 100, rng))
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(epochs):
        _epoch(step, ex.minibatches(train, 100, rng))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> dict:
    """Command line; prints a table and returns :func:`run`'s result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--no-validation", action="store_true", help="distribution checks off")
    parser.add_argument(
        "--clock", choices=["cpu", "wall"], default="cpu", help="thread CPU time or wall time"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile vitorch instead")
    args = parser.parse_args(argv)
    if args.profile:
        profile(hidden=args.hidden)
        return {}
    result = run(
        args.rounds, args.hidden, args.z_dim, validation=not args.no_validation, clock=args.clock
    )
    med = result["seconds_per_epoch"]
    print(
        f"digits VAE, {result['steps_per_epoch']} steps/epoch of 100 images, hidden {args.hidden}, "
        f"z {args.z_dim}, 1 thread, validation {'on' if result['validation'] else 'off'}, "
        f"{result['clock']} clock, median of {result['rounds']} interleaved rounds"
    )
    print(f"{'library':<12}{'ms/epoch':>10}{'ms/step':>10}{'vs torch':>10}{'vs fused':>10}")
    for name in ("torch", "torch-fused", "vitorch", "pyro"):
        if name not in med:
            print(f"{name:<12}{'(pyro-ppl not installed: skipped)':>30}")
            continue
        ms = 1e3 * med[name]
        print(
            f"{name:<12}{ms:>10.2f}{ms / result['steps_per_epoch']:>10.3f}"
            f"{med[name] / med['torch']:>9.2f}x{med[name] / med['torch-fused']:>9.2f}x"
        )
    return result


if __name__ == "__main__":
    main()
