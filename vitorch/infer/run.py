"""``SVI.run``: a training loop with progress, early stopping, NaN handling and checkpoints.

>>> svi = SVI(model, guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())  # doctest: +SKIP
>>> result = svi.run(5000, data, convergence=1e-4, checkpoint="fit.pt")  # doctest: +SKIP
>>> result.losses[-1], result.converged, result.num_steps  # doctest: +SKIP

The loop adds little to a bare ``for _ in range(n): svi.step(...)``: per step it appends the
loss, updates an exponential moving average and the convergence criteria (O(1) each), and
looks at the clock only every 1% of the steps; the progress bar is redrawn at most every
0.1 s. Steps are counted from 1: "step k" means k steps have been taken.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._io import atomic_save
from ..checkpoint import capture_checkpoint, load_checkpoint, restore_checkpoint
from ..params import _PARAM_STORE
from .elbo import NonFiniteLossError

__all__ = [
    "Convergence",
    "RelativeLossChange",
    "ParamChange",
    "SVIResult",
    "run_svi",
]

_ON_NONFINITE = ("raise", "skip")
# Weight of the newest loss in the progress bar's moving average (about 50 steps' memory).
_EMA_WEIGHT = 0.02


# -- convergence criteria ----------------------------------------------------------------
class Convergence:
    """A stopping rule. ``update(step, loss)`` is called after every step that produced a
    finite loss and returns True once the run has converged.

    Subclasses keep their state in plain data so that a checkpoint can hold it:
    ``state_dict()`` / ``load_state_dict(state)``; ``reset()`` starts over.
    """

    def reset(self) -> None:
        """Forget everything seen so far."""

    def update(self, step: int, loss: float) -> bool:
        """Record step ``step`` (its loss ``loss``); True when converged."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The criterion's state as tensors, numbers and containers."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""

    def describe(self) -> str:
        """Why the run stopped, in words (after ``update`` returned True)."""
        return f"{type(self).__name__} satisfied"


def _check_positive(owner: str, name: str, value: Any, integer: bool) -> None:
    if integer:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        what = "a positive int"
    else:
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf
        )
        what = "a positive finite number"
    if not ok:
        raise ValueError(f"{owner}: {name} must be {what}, got {value!r}")


class RelativeLossChange(Convergence):
    """Converged when the mean loss over a window of steps has stopped moving.

    At step ``t`` the relative change of the windowed mean is
    ``r_t = |mean(L[t-w:t]) - mean(L[t-2w:t-w])| / |mean(L[t-2w:t-w])|`` (``w = window``).
    The run has converged once ``r_t < tol`` has held at each of the last ``w`` steps.

    Requiring it for a whole window is what keeps Monte Carlo noise from stopping a run that
    is still improving: a noisy difference of means crosses zero often, but does not stay
    near zero for ``w`` steps unless the noise itself is below ``tol``. So choose ``tol``
    above the relative noise of a windowed mean, a few times ``sd(loss) / (sqrt(w) * |loss|)``.
    Cost per step: O(1) (two running sums over a ring buffer).
    """

    def __init__(self, tol: float = 1e-4, window: int = 100) -> None:
        _check_positive("RelativeLossChange", "tol", tol, integer=False)
        _check_positive("RelativeLossChange", "window", window, integer=True)
        self.tol = float(tol)
        self.window = window
        self.reset()

    def reset(self) -> None:
        self._buf = [0.0] * (2 * self.window)
        self._n = 0
        self._recent = 0.0  # sum of the last `window` losses
        self._previous = 0.0  # sum of the `window` losses before those
        self._rel = math.inf
        self._calm = 0  # consecutive steps with r_t < tol

    def update(self, step: int, loss: float) -> bool:
        w = self.window
        buf = self._buf
        n = self._n
        i = n % (2 * w)
        if n >= 2 * w:
            self._previous -= buf[i]
        if n >= w:
            moving = buf[i - w]  # negative index wraps around the ring
            self._recent -= moving
            self._previous += moving
        buf[i] = loss
        self._recent += loss
        n += 1
        self._n = n
        if n < 2 * w:
            return False
        if i == 2 * w - 1:
            # Running sums drift by rounding; recompute them exactly once per lap (amortized O(1)).
            self._previous = math.fsum(buf[:w])
            self._recent = math.fsum(buf[w:])
        previous = self._previous
        change = abs(self._recent - previous)
        self._rel = change / abs(previous) if previous else (0.0 if change == 0 else math.inf)
        if change < self.tol * abs(previous) or change == 0:
            self._calm += 1
        else:
            self._calm = 0
        return self._calm >= w

    @property
    def relative_change(self) -> float:
        """The last relative change of the windowed mean (inf before 2 * window steps)."""
        return self._rel

    def state_dict(self) -> dict[str, Any]:
        return {
            "buf": torch.tensor(self._buf, dtype=torch.float64),
            "n": self._n,
            "recent": self._recent,
            "previous": self._previous,
            "rel": self._rel,
            "calm": self._calm,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buf = [float(x) for x in state["buf"].tolist()]
        if len(buf) != 2 * self.window:
            raise ValueError(
                f"RelativeLossChange: the saved state has window {len(buf) // 2}, this "
                f"criterion has window {self.window}"
            )
        self._buf = buf
        self._n = int(state["n"])
        self._recent = float(state["recent"])
        self._previous = float(state["previous"])
        self._rel = float(state["rel"])
        self._calm = int(state["calm"])

    def describe(self) -> str:
        return (
            f"for {self.window} steps the mean loss over {self.window} steps changed by less "
            f"than tol={self.tol:g} (relative; last {self._rel:.3g})"
        )

    def __repr__(self) -> str:
        return f"RelativeLossChange(tol={self.tol!r}, window={self.window!r})"


class ParamChange(Convergence):
    """Converged when the parameters moved by less than ``tol`` over ``every`` steps:
    ``||theta_t - theta_(t-every)|| < tol * ||theta_(t-every)||`` (Euclidean norm over all
    unconstrained parameters of the param store together; ``||theta|| < 1e-12`` counts as 1).

    Checked once every ``every`` steps, so it costs O(number of parameters / every) per
    step. With a constant learning rate the parameters keep jittering by about ``lr`` per
    step around the optimum; choose ``tol`` above that or decay the learning rate.
    """

    def __init__(self, tol: float = 1e-3, every: int = 100) -> None:
        _check_positive("ParamChange", "tol", tol, integer=False)
        _check_positive("ParamChange", "every", every, integer=True)
        self.tol = float(tol)
        self.every = every
        self.reset()

    def reset(self) -> None:
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._next = self.every  # checks at steps every, 2 * every, ...
        self._rel = math.inf

    @staticmethod
    def _current() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in _PARAM_STORE._params.items()}

    def update(self, step: int, loss: float) -> bool:
        if step < self._next:
            return False
        self._next = step + self.every
        current = self._current()
        previous = self._snapshot
        self._snapshot = current
        if previous is None or previous.keys() != current.keys():
            return False  # first look, or parameters appeared: nothing to compare yet
        diff_sq = 0.0
        norm_sq = 0.0
        with torch.no_grad():
            for name, value in current.items():
                old = previous[name]
                if old.shape != value.shape:
                    return False
                diff_sq += float(((value - old).double() ** 2).sum())
                norm_sq += float((old.double() ** 2).sum())
        norm = math.sqrt(norm_sq) if norm_sq > 1e-24 else 1.0
        self._rel = math.sqrt(diff_sq) / norm
        return self._rel < self.tol

    @property
    def relative_change(self) -> float:
        """The last relative parameter change (inf before the second check)."""
        return self._rel

    def state_dict(self) -> dict[str, Any]:
        return {"snapshot": self._snapshot, "next": self._next, "rel": self._rel}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        snap = state["snapshot"]
        self._snapshot = None if snap is None else {k: v.clone() for k, v in snap.items()}
        self._next = int(state["next"])
        self._rel = float(state["rel"])

    def describe(self) -> str:
        return (
            f"the parameters moved by {self._rel:.3g} (relative) over {self.every} steps "
            f"< tol={self.tol:g}"
        )

    def __repr__(self) -> str:
        return f"ParamChange(tol={self.tol!r}, every={self.every!r})"


def _as_criteria(convergence: Any) -> list[Convergence]:
    if convergence is None:
        return []
    if isinstance(convergence, Convergence):
        return [convergence]
    if isinstance(convergence, (int, float)) and not isinstance(convergence, bool):
        return [RelativeLossChange(tol=float(convergence))]
    if isinstance(convergence, (list, tuple)) and all(
        isinstance(c, Convergence) for c in convergence
    ):
        return list(convergence)
    raise TypeError(
        "SVI.run: convergence must be None, a tolerance (float, for "
        "RelativeLossChange(tol=...)), a Convergence such as RelativeLossChange(...) or "
        f"ParamChange(...), or a list of them; got {convergence!r}"
    )


# -- the result --------------------------------------------------------------------------
@dataclass
class SVIResult:
    """What :meth:`SVI.run` returns.

    ``losses[i]`` is the loss of step ``i + 1`` (NaN for skipped steps), including the
    steps of the run a checkpoint resumed from. ``stop_reason`` is ``"completed"``,
    ``"converged"`` (a criterion fired; ``message`` says which) or ``"callback"``.
    """

    losses: list[float] = field(default_factory=list)
    converged: bool = False
    stop_reason: str = "completed"
    message: str = ""
    skipped_steps: list[int] = field(default_factory=list)
    start_step: int = 0
    elapsed: float = 0.0
    checkpoint: str | None = None

    @property
    def num_steps(self) -> int:
        """Steps taken in all (those of a resumed checkpoint included)."""
        return len(self.losses)

    @property
    def num_skipped(self) -> int:
        """Steps skipped because the loss was not finite (``on_nonfinite="skip"``)."""
        return len(self.skipped_steps)

    @property
    def final_loss(self) -> float:
        """The mean of the last (up to) 100 finite losses; NaN if there are none."""
        tail = [x for x in self.losses[-100:] if math.isfinite(x)]
        return math.fsum(tail) / len(tail) if tail else math.nan

    def __repr__(self) -> str:
        return (
            f"SVIResult(num_steps={self.num_steps}, final_loss={self.final_loss:.6g}, "
            f"stop_reason={self.stop_reason!r}, num_skipped={self.num_skipped})"
        )


# -- Ctrl-C ------------------------------------------------------------------------------
class _DeferredInterrupt:
    """While active, the first Ctrl-C is held until the current step has finished, so the
    checkpoint written for it is consistent; a second Ctrl-C interrupts at once."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nvitorch: stopping after this step to write the checkpoint "
            "(press Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    def __enter__(self) -> _DeferredInterrupt:
        # Only replace Python's own handler, and only where signals can be handled.
        if (
            self.enabled
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


# -- the loop ----------------------------------------------------------------------------
def _check_options(
    num_steps: Any,
    callbacks: Any,
    on_nonfinite: Any,
    checkpoint: Any,
    checkpoint_every: Any,
    resume: Any,
) -> tuple[tuple[Callable, ...], str | None]:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"SVI.run: num_steps must be a non-negative int, got {num_steps!r}")
    if on_nonfinite not in _ON_NONFINITE:
        raise ValueError(f"SVI.run: on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
    if callable(callbacks):
        callbacks = (callbacks,)
    if not isinstance(callbacks, Iterable) or isinstance(callbacks, (str, bytes)):
        raise TypeError(
            f"SVI.run: callbacks must be a sequence of callables (step, loss) -> bool | None, "
            f"got {type(callbacks).__name__}"
        )
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"SVI.run: every callback must be callable, got {cb!r}")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"SVI.run: checkpoint must be a file path (str or PathLike), got "
            f"{type(checkpoint).__name__}"
        )
    if checkpoint_every is not None:
        if (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, int)
            or checkpoint_every < 1
        ):
            raise ValueError(
                f"SVI.run: checkpoint_every must be a positive int or None, got {checkpoint_every!r}"
            )
        if checkpoint is None:
            raise ValueError("SVI.run: checkpoint_every needs checkpoint=PATH")
    if not isinstance(resume, (bool, str, os.PathLike)):
        raise TypeError(
            f"SVI.run: resume must be a bool or a checkpoint path, got {type(resume).__name__}"
        )
    if resume is True and checkpoint is None:
        raise ValueError("SVI.run: resume=True needs checkpoint=PATH (or pass resume=PATH)")
    return callbacks, None if checkpoint is None else os.fspath(checkpoint)


def _materialize_params(svi: Any, args: tuple, kwargs: dict) -> None:
    """Run the model and guide once so every parameter exists before values are restored.

    Modules and autoguides create their parameters on first use and would otherwise
    replace restored values with fresh initial ones. The RNG draws made here do not
    matter: the RNG state is restored afterwards.
    """
    try:
        svi.evaluate_loss(*args, **kwargs)
    except NonFiniteLossError:
        pass  # the parameters exist; the restored values are what counts


def _restore_criteria(criteria: list[Convergence], saved: Any) -> None:
    if not criteria:
        return
    if (
        isinstance(saved, list)
        and len(saved) == len(criteria)
        and all(
            isinstance(s, dict) and s.get("type") == type(c).__name__
            for s, c in zip(saved, criteria)
        )
    ):
        for c, s in zip(criteria, saved):
            c.load_state_dict(s["state"])
        return
    warnings.warn(
        "SVI.run: the checkpoint's convergence criteria differ from this run's; they start "
        "afresh from the resumed step",
        UserWarning,
        stacklevel=4,
    )
    for c in criteria:
        c.reset()


def run_svi(
    svi: Any,
    num_steps: int,
    *args: Any,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, float], Any]] = (),
    convergence: Convergence | float | Sequence[Convergence] | None = None,
    on_nonfinite: str = "raise",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool | str | os.PathLike = False,
    **kwargs: Any,
) -> SVIResult:
    """Run ``svi.step(*args, **kwargs)`` until step ``num_steps`` (or convergence).

    :param num_steps: the step to stop at, counted over resumed runs too: resuming a
        checkpoint of step 600 with ``num_steps=1000`` takes 400 more steps.
    :param progress: show a tqdm progress bar with the smoothed loss (on stderr).
    :param callbacks: callables ``cb(step, loss)`` called after every step; one returning
        True stops the run (``stop_reason="callback"``).
    :param convergence: None, a :class:`Convergence` (``RelativeLossChange(tol, window)``,
        ``ParamChange(tol, every)``), a list of them (the first to fire stops the run), or a
        float ``tol`` as shorthand for ``RelativeLossChange(tol=tol)``.
    :param on_nonfinite: ``"raise"``: a NaN/infinite loss raises
        :class:`~vitorch.infer.elbo.NonFiniteLossError` naming the offending sites (its
        ``sites``; its ``step`` is the step number). ``"skip"``: that step makes no update,
        its loss is recorded as NaN and its number in ``result.skipped_steps``.
    :param checkpoint: a file to save the state to (atomically; see
        :mod:`vitorch.checkpoint`) at the end, every ``checkpoint_every`` steps and on
        Ctrl-C. A Ctrl-C waits for the current step to finish (a second one does not).
    :param resume: True to continue from ``checkpoint`` if that file exists (starting
        afresh otherwise), or the path of a checkpoint to continue from. A resumed run
        reproduces the uninterrupted run's losses exactly (same model, guide, optimizer
        settings and data).
    :returns: an :class:`SVIResult` with the loss history.
    """
    callbacks, ckpt_path = _check_options(
        num_steps, callbacks, on_nonfinite, checkpoint, checkpoint_every, resume
    )
    criteria = _as_criteria(convergence)
    optim = getattr(svi, "optim", None)

    losses: list[float] = []
    skipped: list[int] = []
    start = 0
    resumed_from: str | None = None
    if resume is not False:
        path = ckpt_path if resume is True else os.fspath(resume)
        assert path is not None  # _check_options guarantees it for resume=True
        if os.path.exists(path) or resume is not True:
            # CPU first: restoring moves each tensor to its parameter's device.
            state = load_checkpoint(path, map_location="cpu")
            _materialize_params(svi, args, kwargs)
            _restore_criteria(criteria, state.get("convergence"))
            losses = list(state["losses"])
            skipped = list(state["skipped_steps"])
            start = int(state["step"])
            # Last, so that nothing above consumes random numbers after the restore.
            restore_checkpoint(state, optim)
            resumed_from = path
    else:
        for c in criteria:
            c.reset()

    result = SVIResult(losses=losses, skipped_steps=skipped, start_step=start, checkpoint=ckpt_path)

    def save(step: int) -> None:
        if ckpt_path is None:
            return
        state = capture_checkpoint(
            optim,
            step=step,
            losses=losses,
            skipped_steps=skipped,
            convergence=[{"type": type(c).__name__, "state": c.state_dict()} for c in criteria],
            converged=result.converged,
            extra={"num_steps": num_steps},
        )
        atomic_save(state, ckpt_path)

    # The progress bar's moving average, warmed up on the resumed history.
    ema = 0.0
    ema_n = 0
    keep = 1.0 - _EMA_WEIGHT
    for x in losses[-500:]:
        if math.isfinite(x):
            ema = keep * ema + _EMA_WEIGHT * x
            ema_n += 1

    pbar = None
    if progress and num_steps > start:
        from tqdm.auto import tqdm

        pbar = tqdm(
            total=num_steps,
            initial=start,
            unit="step",
            desc="svi" if resumed_from is None else f"svi (resumed at {start})",
            mininterval=0.1,
            dynamic_ncols=True,
            file=sys.stderr,
        )
    shown = start
    stride = max(1, (num_steps - start) // 100)
    next_look = start + stride
    next_draw = 0.0

    svi_step = svi.step
    record = losses.append
    skip = on_nonfinite == "skip"
    step = start
    in_step = False
    saved_at = -1
    t0 = time.perf_counter()
    guard = _DeferredInterrupt(enabled=ckpt_path is not None)
    try:
        with guard:
            while step < num_steps:
                in_step = True
                try:
                    loss = svi_step(*args, **kwargs)
                except NonFiniteLossError as e:
                    if not skip:
                        err = NonFiniteLossError(f"step {step + 1}: {e}", e.sites)
                        err.step = step + 1  # type: ignore[attr-defined]
                        raise err from None
                    step += 1
                    loss = math.nan
                    record(loss)
                    skipped.append(step)
                    in_step = False
                else:
                    step += 1
                    record(loss)
                    in_step = False
                    ema = keep * ema + _EMA_WEIGHT * loss
                    ema_n += 1
                    for c in criteria:
                        if c.update(step, loss):
                            result.converged = True
                            result.stop_reason = "converged"
                            result.message = f"converged at step {step}: {c.describe()}"
                            break
                for cb in callbacks:
                    if cb(step, loss) is True and not result.converged:
                        result.stop_reason = "callback"
                        result.message = f"stopped by a callback at step {step}"
                if guard.requested:
                    raise KeyboardInterrupt
                if checkpoint_every is not None and step % checkpoint_every == 0:
                    save(step)
                    saved_at = step
                if pbar is not None and step >= next_look:
                    next_look = step + stride
                    now = time.perf_counter()
                    if now >= next_draw:
                        next_draw = now + 0.1
                        _draw(pbar, step - shown, ema, ema_n, len(skipped))
                        shown = step
                if result.stop_reason != "completed":
                    break
    except KeyboardInterrupt:
        if ckpt_path is not None:
            if in_step:
                print(
                    f"vitorch: interrupted inside step {step + 1}; the checkpoint "
                    f"{ckpt_path!r} was not updated",
                    file=sys.stderr,
                )
            else:
                save(step)
                print(
                    f"vitorch: interrupted after step {step}; checkpoint written to "
                    f"{ckpt_path!r} (continue with resume=True)",
                    file=sys.stderr,
                )
        raise
    finally:
        if pbar is not None:
            _draw(pbar, step - shown, ema, ema_n, len(skipped))
            pbar.close()
    result.elapsed = time.perf_counter() - t0
    if saved_at != step:
        save(step)
    if progress and result.message:
        print(f"vitorch: {result.message}", file=sys.stderr)
    return result


def _draw(pbar: Any, advance: int, ema: float, ema_n: int, num_skipped: int) -> None:
    if ema_n:
        smoothed = ema / (1.0 - (1.0 - _EMA_WEIGHT) ** ema_n)
        postfix = f"loss={smoothed:.4g}"
        if num_skipped:
            postfix += f", skipped={num_skipped}"
        pbar.set_postfix_str(postfix, refresh=False)
    pbar.update(advance)
