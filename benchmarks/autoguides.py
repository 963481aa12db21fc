"""Time per SVI step of AutoNormal and AutoMultivariateNormal: vitorch vs pyro-ppl vs torch.

Two models:

- ``seed``: the loc/scale model of the AutoNormal reference page (100 observations);
- ``blr-d``: Bayesian linear regression with known noise, N = 1000 and d weights.

Each is fitted with ``Trace_ELBO`` and Adam by vitorch, by pyro-ppl (if installed; the
column is skipped otherwise) and by a hand-written pure-torch loop doing the same tensor
math without any bookkeeping (see ``torch_step_fn``). That loop is the floor. Argument
validation is off for all three, as it would be in a timed production run.

Rounds are interleaved (every implementation runs once per round) and the median CPU time
per step is reported, with one thread:

    .venv/bin/python benchmarks/autoguides.py [--rounds 7] [--steps 100] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import vitorch
import vitorch.distributions as vdist
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide import AutoMultivariateNormal, AutoNormal

try:
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import SVI as PSVI
    from pyro.infer import Trace_ELBO as PTrace_ELBO
    from pyro.infer.autoguide import AutoMultivariateNormal as PAutoMultivariateNormal
    from pyro.infer.autoguide import AutoNormal as PAutoNormal
except ImportError:  # the pyro column is optional
    pyro = None

LR = 1e-3
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# -- the models, written once per library ---------------------------------------------------
def make_seed_model(lib, d):
    def model(data):
        loc = lib.sample("loc", d.Normal(0.0, 10.0))
        scale = lib.sample("scale", d.LogNormal(0.0, 1.0))
        with lib.plate("data", len(data)):
            lib.sample("obs", d.Normal(loc, scale), obs=data)

    return model


def make_blr_model(lib, d, sigma):
    def model(X, y):
        w = lib.sample("w", d.Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
        with lib.plate("data", X.shape[0]):
            lib.sample("y", d.Normal(X @ w, sigma), obs=y)

    return model


# -- the hand-written floor -------------------------------------------------------------------
# The same tensor math as the libraries, without their bookkeeping: the model's densities
# from the same torch distributions, the guide's draws ``loc + L @ eps`` scored from their
# noise (``-|eps|^2 / 2 - log|det L| - d log(2 pi) / 2``, which vitorch's guides use too;
# it equals the general formula in value and gradient), minus the log-Jacobian of ``exp``
# for the positive site, and ``torch.optim.Adam``.
def inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


def draw_normal(loc, scale):
    eps = torch.randn_like(loc)
    return loc + scale * eps, (-0.5 * eps.square() - scale.log() - HALF_LOG_2PI).sum()


class TorchNormal:
    """Mean-field Normal in unconstrained space, one (loc, scale) pair per site."""

    def __init__(self, shapes: list[tuple[int, ...]]):
        self.locs = [torch.zeros(s, requires_grad=True) for s in shapes]
        self.scales = [torch.full(s, inv_softplus(0.1), requires_grad=True) for s in shapes]
        self.params = self.locs + self.scales

    def sample(self):
        draws = [draw_normal(loc, F.softplus(s)) for loc, s in zip(self.locs, self.scales)]
        return [z for z, _ in draws], sum(lq for _, lq in draws)


class TorchMVN:
    """Full-rank Normal with L = diag(softplus(s)) (tril(S, -1) + I)."""

    def __init__(self, dim: int):
        self.loc = torch.zeros(dim, requires_grad=True)
        self.s = torch.full((dim,), inv_softplus(0.1), requires_grad=True)
        self.tril = torch.zeros(dim, dim, requires_grad=True)
        self.eye = torch.eye(dim)
        self.params = [self.loc, self.s, self.tril]

    def sample(self):
        L = F.softplus(self.s)[:, None] * (self.tril.tril(-1) + self.eye)
        eps = torch.randn_like(self.loc)
        z = self.loc + L @ eps
        log_q = -0.5 * eps.square().sum() - L.diagonal().log().sum() - len(z) * HALF_LOG_2PI
        return z, log_q


def torch_step_fn(guide_kind: str, model: str, data) -> Callable[[], float]:
    if model == "seed":
        (obs,) = data

        def log_p(loc, log_scale):
            scale = log_scale.exp()
            return (
                torch.distributions.Normal(0.0, 10.0).log_prob(loc)
                + torch.distributions.LogNormal(0.0, 1.0).log_prob(scale)
                + torch.distributions.Normal(loc, scale).log_prob(obs).sum()
            )

        if guide_kind == "normal":
            guide = TorchNormal([(), ()])

            def draw():
                (loc, log_scale), log_q = guide.sample()
                return log_p(loc, log_scale), log_q - log_scale
        else:
            guide = TorchMVN(2)

            def draw():
                z, log_q = guide.sample()
                return log_p(z[0], z[1]), log_q - z[1]
    else:
        X, y, sigma = data

        def log_p(w):
            prior = torch.distributions.Normal(torch.zeros(X.shape[1]), 1.0).log_prob(w).sum()
            return prior + torch.distributions.Normal(X @ w, sigma).log_prob(y).sum()

        if guide_kind == "normal":
            guide = TorchNormal([(X.shape[1],)])

            def draw():
                (w,), log_q = guide.sample()
                return log_p(w), log_q
        else:
            guide = TorchMVN(X.shape[1])

            def draw():
                w, log_q = guide.sample()
                return log_p(w), log_q

    opt = torch.optim.Adam(guide.params, lr=LR)

    def step() -> float:
        lp, lq = draw()
        loss = lq - lp
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


# -- the libraries ------------------------------------------------------------------------------
def vitorch_step_fn(guide_kind: str, model: str, data) -> Callable[[], float]:
    vitorch.clear_param_store()
    if model == "seed":
        fn = make_seed_model(vitorch, vdist)
    else:
        fn = make_blr_model(vitorch, vdist, data[2])
        data = data[:2]
    guide = (AutoNormal if guide_kind == "normal" else AutoMultivariateNormal)(fn)
    svi = SVI(fn, guide, vitorch.optim.Adam({"lr": LR}), Trace_ELBO())
    return lambda: svi.step(*data)


def pyro_step_fn(guide_kind: str, model: str, data) -> Callable[[], float]:
    pyro.clear_param_store()
    if model == "seed":
        fn = make_seed_model(pyro, pdist)
    else:
        fn = make_blr_model(pyro, pdist, data[2])
        data = data[:2]
    guide = (PAutoNormal if guide_kind == "normal" else PAutoMultivariateNormal)(fn)
    svi = PSVI(fn, guide, pyro.optim.Adam({"lr": LR}), PTrace_ELBO())
    return lambda: svi.step(*data)


def time_steps(step: Callable[[], float], n: int) -> float:
    # CPU time of this process: with one thread it is the cost of the steps, and it does
    # not count time lost to other processes on a shared machine.
    start = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100, help="steps per round")
    parser.add_argument("--quick", action="store_true", help="seed model and d=10 only")
    args = parser.parse_args()

    torch.set_num_threads(1)
    vitorch.enable_validation(False)
    if pyro is not None:
        pyro.enable_validation(False)
    torch.manual_seed(0)
    obs = torch.randn(100) + 3.0
    cases = [("seed", (obs,))]
    for d in (10,) if args.quick else (10, 100, 500):
        X = torch.randn(1000, d)
        y = X @ torch.randn(d) + 0.5 * torch.randn(1000)
        cases.append((f"blr-{d}", (X, y, 0.5)))

    impls = {"torch": torch_step_fn, "vitorch": vitorch_step_fn}
    if pyro is not None:
        impls["pyro"] = pyro_step_fn
    else:
        print("pyro-ppl is not installed: the pyro column is skipped")

    header = f"{'model':<9} {'guide':<7} " + " ".join(f"{k + ' us':>11}" for k in impls)
    header += f" {'vt/torch':>9}" + (f" {'vt/pyro':>8}" if pyro is not None else "")
    print(header)
    for model, data in cases:
        for guide_kind in ("normal", "mvn"):
            steps = {k: make(guide_kind, model.split("-")[0], data) for k, make in impls.items()}
            for step in steps.values():  # warm up: first calls set up guides and optimizers
                for _ in range(10):
                    step()
            times: dict[str, list[float]] = {k: [] for k in steps}
            for _ in range(args.rounds):
                for k, step in steps.items():
                    times[k].append(time_steps(step, args.steps))
            med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
            row = f"{model:<9} {guide_kind:<7} " + " ".join(f"{med[k]:>11.1f}" for k in steps)
            row += f" {med['vitorch'] / med['torch']:>9.2f}"
            if pyro is not None:
                row += f" {med['vitorch'] / med['pyro']:>8.2f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
