"""Safe, atomic persistence shared by the parameter store, optimizers and checkpoints.

Files are written with ``torch.save`` to a temporary file in the target folder, flushed
to disk, then moved over the target with ``os.replace``: a crash or an exception half-way
leaves the previous file untouched. Files are read with ``torch.load(weights_only=True)``,
which only rebuilds tensors, numbers, strings and plain containers and refuses any pickle
that would import or call arbitrary code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any

import torch

__all__ = ["atomic_save", "safe_load", "UnsafeFileError"]


class UnsafeFileError(ValueError):
    """Raised when a file holds something other than plain tensors and containers."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` so that ``path`` is either the old file or the whole new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave a stray temp file.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safe_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """Load a file written by :func:`atomic_save` without running any code from it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"refused to load {path!r}: it holds objects other than tensors and plain "
            f"containers, which could run code when loaded ({e})"
        ) from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path!r} is not a readable vitorch/torch file: {e}") from None
