"""The ``vitorch`` command: ``vitorch fit MODEL.py`` and ``vitorch demo``.

``vitorch fit model.py --guide AutoNormal --steps 2000 --out fit/`` loads ``model.py``,
which defines ``model`` and its data: ``data`` (a value) or ``data()`` (a function
returning it). The data are the model's arguments: a tuple of positional arguments, a dict
of keyword arguments, or a single value (the only argument). The file may define ``guide``
too; otherwise (or with ``--guide``) an autoguide of :mod:`vitorch.infer.autoguide` is
built. The posterior summary is printed at the end; with ``--out`` the loss curve,
posterior marginals, the summary (CSV and text) and a checkpoint are written there, and
``--resume`` continues from that checkpoint.

Errors in the user's input (a missing file, no ``model``, a model that fails on its data)
are reported in one message on stderr with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]

EXIT_USAGE = 2


class CLIError(Exception):
    """A problem with the user's input: reported on stderr, exit status 2."""


# -- loading the model file --------------------------------------------------------------
def _where_in(path: str, exc: BaseException) -> str:
    """' (MODEL.py, line N)' for the deepest frame of the user's file in exc's traceback."""
    real = os.path.realpath(path)
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename) == real:
            line = frame.lineno
    return f" ({os.path.basename(path)}, line {line})" if line is not None else ""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def load_model_file(path: str) -> dict[str, Any]:
    """Execute the file at ``path`` (not as ``__main__``) and return its globals."""
    if not os.path.exists(path):
        raise CLIError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a directory; expected a Python file defining `model`")
    try:
        return runpy.run_path(path, run_name="__vitorch_fit__")
    except SyntaxError as e:
        raise CLIError(f"{path} has a syntax error (line {e.lineno}): {e.msg}") from None
    except Exception as e:
        raise CLIError(f"{path} failed while loading{_where_in(path, e)}: {_describe(e)}") from None


def model_arguments(namespace: dict[str, Any], path: str) -> tuple[tuple, dict]:
    """The model's (args, kwargs) from the file's ``data`` value or ``data()`` function."""
    if "data" not in namespace:
        return (), {}
    data = namespace["data"]
    if callable(data):
        try:
            data = data()
        except Exception as e:
            raise CLIError(f"data() in {path} failed{_where_in(path, e)}: {_describe(e)}") from None
    if isinstance(data, tuple):
        return data, {}
    if isinstance(data, dict):
        bad = [k for k in data if not isinstance(k, str)]
        if bad:
            raise CLIError(
                f"data in {path} is a dict, so it is taken as keyword arguments of the "
                f"model, but it has non-string keys {bad!r}"
            )
        return (), data
    return (data,), {}


def _shapes(args: tuple, kwargs: dict) -> str:
    def one(x: Any) -> str:
        shape = getattr(x, "shape", None)
        return f"{type(x).__name__}{tuple(shape)}" if shape is not None else type(x).__name__

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts) or "no arguments"


def check_model(model: Callable, args: tuple, kwargs: dict, path: str) -> None:
    """Run the model once on its data; turn a failure into a message naming the site."""
    from .handlers.trace import TraceMessenger

    class _Watch(TraceMessenger):
        current: str | None = None

        def _process_message(self, msg: Any) -> None:
            if not getattr(msg.fn, "_is_subsample", False):  # a plate's indices: not a site
                self.current = msg.name
            super()._process_message(msg)

    tracer = _Watch()
    stage = "running the model"
    try:
        with tracer:
            model(*args, **kwargs)
        # Shape errors between a value and its distribution only show in log_prob.
        stage = "computing its log-densities"
        tracer.trace.compute_log_prob()
    except Exception as e:
        trace = tracer.trace
        if tracer.current is not None:
            where = f"; the last site it reached was {tracer.current!r}"
        else:
            where = "; it failed before its first site"
        try:
            shapes = trace.format_shapes()
        except Exception:
            shapes = "(the shapes could not be listed)"
        raise CLIError(
            f"the model in {path} failed on its data ({_shapes(args, kwargs)}) while {stage}"
            f"{_where_in(path, e)}{where}:\n  {_describe(e)}\n{shapes}"
        ) from None


def make_guide(name: str | None, namespace: dict[str, Any], model: Callable, path: str) -> Any:
    """The file's ``guide`` (when no ``--guide`` is given) or the autoguide called ``name``."""
    if name is None:
        user_guide = namespace.get("guide")
        if callable(user_guide):
            return user_guide
        name = "AutoNormal"
    from .infer import autoguide

    base = autoguide.AutoGuide
    abstract = {"AutoGuide", "AutoContinuous", "AutoCallable", "AutoGuideList"}
    choices = sorted(
        n
        for n, v in vars(autoguide).items()
        if isinstance(v, type) and issubclass(v, base) and n not in abstract
    )
    cls = getattr(autoguide, name, None)
    if name not in choices or cls is None:
        raise CLIError(f"--guide {name!r} is not an autoguide; choose one of {', '.join(choices)}")
    try:
        return cls(model)
    except Exception as e:
        raise CLIError(f"could not build {name} for the model in {path}: {_describe(e)}") from None


# -- commands ----------------------------------------------------------------------------
def cmd_fit(opts: argparse.Namespace) -> int:
    import vitorch

    from .infer import SVI, NonFiniteLossError, Trace_ELBO
    from .infer.summary import summary

    path = opts.model
    namespace = load_model_file(path)
    model = namespace.get("model")
    if model is None:
        raise CLIError(f"{path} defines no `model`; define a function `model(...)` in it")
    if not callable(model):
        raise CLIError(f"`model` in {path} must be callable, got {type(model).__name__}")
    args, kwargs = model_arguments(namespace, path)
    if opts.resume and opts.out is None:
        raise CLIError("--resume needs --out DIR (the checkpoint is DIR/checkpoint.pt)")

    vitorch.clear_param_store()
    vitorch.set_rng_seed(opts.seed)
    check_model(model, args, kwargs, path)
    guide = make_guide(opts.guide, namespace, model, path)
    # Seeded again so that the draws above do not shift the fit's random numbers.
    vitorch.set_rng_seed(opts.seed)
    elbo = Trace_ELBO(num_particles=opts.particles)
    svi = SVI(model, guide, vitorch.optim.Adam({"lr": opts.lr}), elbo)

    ckpt = None
    if opts.out is not None:
        os.makedirs(opts.out, exist_ok=True)
        ckpt = os.path.join(opts.out, "checkpoint.pt")
    try:
        result = svi.run(
            opts.steps,
            *args,
            progress=not opts.no_progress,
            convergence=opts.convergence,
            checkpoint=ckpt,
            checkpoint_every=opts.checkpoint_every if ckpt else None,
            resume=bool(opts.resume),
            **kwargs,
        )
    except NonFiniteLossError as e:
        print(f"vitorch fit: {e}", file=sys.stderr)
        return 1
    post = summary(guide, *args, num_samples=opts.num_samples, model=model, **kwargs)
    print(
        f"\n{os.path.basename(path)}: {result.num_steps} steps "
        f"({result.stop_reason}{', ' + result.message if result.message else ''}), "
        f"final loss {result.final_loss:.6g}"
        + (f", {result.num_skipped} skipped" if result.num_skipped else "")
    )
    print(f"posterior ({opts.num_samples} samples from the guide):")
    print(post.table(max_rows_per_site=opts.max_rows))
    if opts.out is not None:
        from .plotting import plot_losses, plot_marginals

        out = opts.out
        post.to_csv(os.path.join(out, "summary.csv"))
        with open(os.path.join(out, "summary.txt"), "w") as f:
            f.write(post.table(max_rows_per_site=None) + "\n")
        plot_losses(result, os.path.join(out, "loss.png"))
        if post.samples:
            plot_marginals(post.samples, os.path.join(out, "posterior.png"))
        print(f"wrote loss.png, posterior.png, summary.csv, summary.txt, checkpoint.pt to {out}/")
    return 0


def cmd_demo(opts: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=opts.out, progress=not opts.no_progress, quick=opts.quick)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


_FIT_DESCRIPTION = (
    "Fit the model of a Python file with SVI. The file defines `model` and its data: `data` "
    "(a value) or `data()` (a function returning it): a tuple of positional arguments, a "
    "dict of keyword arguments, or the only argument. The guide is the autoguide named by "
    "--guide, else the file's `guide` if it defines one, else AutoNormal. Prints "
    "the posterior summary; with --out also writes loss.png, posterior.png, summary.csv, "
    "summary.txt and checkpoint.pt there."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vitorch`` command."""
    parser = argparse.ArgumentParser(
        prog="vitorch", description="Variational inference with Pyro's programming model."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,demo}")
    fit = sub.add_parser(
        "fit",
        help="fit a model defined in a Python file",
        description=_FIT_DESCRIPTION,
    )
    fit.add_argument("model", help="a Python file defining `model` and `data` (or `data()`)")
    fit.add_argument(
        "--guide",
        default=None,
        help="an autoguide by name (default: the file's `guide`, else AutoNormal)",
    )
    fit.add_argument("--steps", type=_positive_int, default=2000, help="SVI steps (default 2000)")
    fit.add_argument("--lr", type=_positive_float, default=0.01, help="Adam learning rate (0.01)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (0)")
    fit.add_argument("--particles", type=_positive_int, default=1, help="ELBO particles (1)")
    fit.add_argument("--out", default=None, help="folder for plots, summary and checkpoint")
    fit.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    fit.add_argument(
        "--convergence",
        type=_positive_float,
        default=None,
        help="stop when the windowed mean loss changes by less than this (relative)",
    )
    fit.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=500,
        help="steps between checkpoints in OUT (500)",
    )
    fit.add_argument(
        "--num-samples",
        type=_positive_int,
        default=1000,
        help="posterior samples for the summary (1000)",
    )
    fit.add_argument(
        "--max-rows",
        type=_positive_int,
        default=10,
        help="rows per site in the printed summary (10)",
    )
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    fit.set_defaults(run=cmd_fit)
    demo = sub.add_parser("demo", help="fit the showcase models on data that ships with packages")
    demo.add_argument("--out", default="vitorch-demo", help="folder for the figures (vitorch-demo)")
    demo.add_argument("--quick", action="store_true", help="fewer steps (a smoke test)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vitorch`` command; returns the exit status."""
    parser = build_parser()
    try:
        opts = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as e:  # argparse reports usage errors itself, with status 2
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        return int(opts.run(opts))
    except CLIError as e:
        print(f"vitorch {opts.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"vitorch {opts.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
