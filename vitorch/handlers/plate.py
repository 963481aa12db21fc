"""``plate``: conditional independence, broadcasting and subsampling.

Inside ``with plate("data", N, dim=-1)`` every sample site is independent along tensor
dim -1 of size N: the plate widens the site's batch shape to N there (broadcasting), and
when only ``subsample_size`` of the N items are used it scales the log-density by
N / subsample_size so that the ELBO stays an unbiased estimate of the full-data one.

The subsample indices are drawn through the handler stack as a sample site named after the
plate, so ``trace`` records them and ``replay`` gives the model the guide's indices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..runtime import _STACK, CondIndepStackFrame, Message, Messenger, apply_stack

__all__ = ["PlateMessenger", "plate"]

# dim -> name of the vectorized plate using it, for the plates currently entered.
_DIMS_IN_USE: dict[int, str] = {}
_ARANGE_CACHE: dict[tuple[int, Any], torch.Tensor] = {}


class _Subsample:
    """The 'distribution' of a plate's subsample indices (log-density 0, not a latent)."""

    _is_subsample = True
    has_rsample = False
    batch_shape = torch.Size()
    event_shape = torch.Size()

    def __init__(self, size: int, subsample_size: int, device: Any = None):
        self.size = size
        self.subsample_size = subsample_size
        self.device = device

    def __call__(self) -> torch.Tensor:
        if self.subsample_size >= self.size:
            return _arange(self.size, self.device)
        return torch.randperm(self.size, device=self.device)[: self.subsample_size]

    sample = rsample = __call__

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.zeros(())


def _arange(size: int, device: Any) -> torch.Tensor:
    key = (size, device)
    t = _ARANGE_CACHE.get(key)
    if t is None:
        t = _ARANGE_CACHE[key] = torch.arange(max(size, 0), device=device)  # -1: any size
    return t


class PlateMessenger(Messenger):
    """Declare ``name`` a plate of conditionally independent items.

    Use it as ``with plate(name, size) as idx:`` (vectorized; ``idx`` holds the indices
    of the items in use) or ``for i in plate(name, size):`` (sequential).
    """

    def __init__(
        self,
        name: str,
        size: int | None = None,
        subsample_size: int | None = None,
        subsample: torch.Tensor | None = None,
        dim: int | None = None,
        use_cuda: bool | None = None,
        device: Any = None,
    ):
        super().__init__(None)
        if not isinstance(name, str):
            raise TypeError(f"plate name must be a str, got {type(name).__name__}")
        if subsample is not None:
            if not isinstance(subsample, torch.Tensor) or subsample.dim() != 1:
                raise ValueError(
                    f"plate {name!r}: subsample must be a 1-d tensor of indices, got "
                    f"{getattr(subsample, 'shape', type(subsample).__name__)}"
                )
            if subsample_size is not None and subsample_size != len(subsample):
                raise ValueError(
                    f"plate {name!r}: subsample_size={subsample_size} but the subsample "
                    f"has {len(subsample)} indices"
                )
            subsample_size = len(subsample)
        if size is None:
            if subsample_size is None:
                # Pyro's "any size" plate: a dim for conditional independence, with no
                # broadcasting and no scaling (torch's -1 for "arbitrary size").
                size = subsample_size = -1
            size = subsample_size
        if isinstance(size, torch.Tensor):
            size = int(size)
        if not isinstance(size, int) or size < -1 or (size == -1 and subsample_size != -1):
            raise ValueError(f"plate {name!r}: size must be a non-negative int, got {size!r}")
        if subsample_size is None:
            subsample_size = size
        if size != -1 and (not isinstance(subsample_size, int) or not 0 <= subsample_size <= size):
            raise ValueError(
                f"plate {name!r}: subsample_size must be an int in [0, {size}], got {subsample_size!r}"
            )
        if dim is not None and (not isinstance(dim, int) or dim >= 0):
            raise ValueError(f"plate {name!r}: dim must be a negative int, got {dim!r}")
        if device is None and use_cuda:
            device = torch.device("cuda")
        self.name = name
        self.size = size
        self.subsample_size = subsample_size
        self.subsample = subsample
        self.dim = dim
        self._user_dim = dim
        self.device = device
        self._scale = size / subsample_size if subsample_size else 1.0
        self._indices: torch.Tensor | None = None
        self._frame: CondIndepStackFrame | None = None

    @property
    def subsampling(self) -> bool:
        return self.subsample_size != self.size or self.subsample is not None

    def _draw_indices(self) -> torch.Tensor:
        if not _STACK:
            if self.subsample is not None:
                return self.subsample
            if not self.subsampling:
                return _arange(self.size, self.device)
            return torch.randperm(self.size, device=self.device)[: self.subsample_size]
        # Under handlers the indices are a site even without subsampling, as in Pyro: a
        # model's full-size plate replayed against a guide that subsamples it must use the
        # guide's items (and scale by size / their number).
        msg = Message(
            "sample",
            self.name,
            _Subsample(self.size, self.subsample_size, self.device),
            value=self.subsample,
            is_observed=self.subsample is not None,
        )
        indices = apply_stack(msg).value
        if self.size != -1 and len(indices) != self.subsample_size:
            self.subsample_size = len(indices)
            self._scale = self.size / len(indices) if len(indices) else 1.0
        return indices

    def _allocate_dim(self) -> int:
        if self._user_dim is not None:
            other = _DIMS_IN_USE.get(self._user_dim)
            if other is not None:
                raise ValueError(
                    f"plate {self.name!r} asks for dim={self._user_dim}, which the enclosing "
                    f"plate {other!r} already uses; nested plates need different dims"
                )
            return self._user_dim
        dim = -1
        while dim in _DIMS_IN_USE:
            dim -= 1
        return dim

    def __enter__(self) -> torch.Tensor:  # type: ignore[override]
        if self._frame is not None and self._frame.dim is None:
            # Re-entered by __iter__ for one item of a sequential plate.
            super().__enter__()
            return self._indices  # type: ignore[return-value]
        # One draw per plate object, as in Pyro: entering the same plate again (two
        # blocks over the same items) reuses its subsample rather than drawing a second.
        indices = self._indices
        if indices is None:
            indices = self._indices = self._draw_indices()
        self.dim = self._allocate_dim()
        _DIMS_IN_USE[self.dim] = self.name
        size = len(indices) if self.size != -1 else -1
        self._frame = CondIndepStackFrame(self.name, self.dim, size, 0, self.size)
        super().__enter__()
        return indices

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if self._frame is not None and self._frame.dim is None:
            return
        if self.dim is not None and _DIMS_IN_USE.get(self.dim) == self.name:
            del _DIMS_IN_USE[self.dim]
        self.dim = self._user_dim
        self._frame = None

    def __iter__(self) -> Iterator[int]:
        indices = self._indices
        if indices is None:
            indices = self._indices = self._draw_indices()
        try:
            for i in indices.tolist():
                self._frame = CondIndepStackFrame(self.name, None, 1, i, self.size)
                with self:
                    yield i
        finally:
            self._frame = None

    def _process_message(self, msg: Message) -> None:
        if msg.type != "sample":
            return
        frame = self._frame
        # Handlers see the message innermost first; prepending leaves the outermost plate
        # first and the innermost last, as in Pyro.
        msg.cond_indep_stack = (frame,) + msg.cond_indep_stack  # type: ignore[operator]
        if self._scale != 1.0:
            msg.scale = self._scale * msg.scale
        dim = frame.dim  # type: ignore[union-attr]
        if dim is None or frame.size == -1 or getattr(msg.fn, "_is_subsample", False):  # type: ignore[union-attr]
            return
        fn = msg.fn
        batch_shape = fn.batch_shape
        size = frame.size  # type: ignore[union-attr]
        if len(batch_shape) >= -dim:
            have = batch_shape[dim]
            if have == size:
                return
            if have != 1:
                raise ValueError(
                    f"sample site {msg.name!r}: batch_shape {tuple(batch_shape)} has size "
                    f"{have} at dim {dim}, but plate {self.name!r} there has size {size}; "
                    f"expected {size} or 1 at that dim"
                )
            new_shape = list(batch_shape)
        else:
            new_shape = [1] * (-dim - len(batch_shape)) + list(batch_shape)
        new_shape[dim] = size
        msg.fn = fn.expand(torch.Size(new_shape))

    def _postprocess_message(self, msg: Message) -> None:
        # A param declared with event_dim inside a subsampled plate is sliced to the
        # subsample, so per-item parameters line up with the items in use.
        if msg.type != "param" or not self.subsampling or self.dim is None:
            return
        event_dim = msg.kwargs.get("event_dim")
        if event_dim is None:
            return
        dim = self.dim - event_dim
        value = msg.value
        if value.dim() >= -dim and value.shape[dim] == self.size:
            msg.value = value.index_select(dim, self._indices.to(value.device))


plate = PlateMessenger
