"""What every autoguide shares: find the model's latent sites, unconstrain them, plates.

On its first call an :class:`AutoGuide` runs the model once (``prototype_trace``), hidden
from every outer handler, with each latent site set by the guide's ``init_loc_fn``. For each
latent site it records a :class:`_Latent`: the bijection ``biject_to(support)`` (looked up
once, here), the shapes on both sides of it, the site's plates, and the initial value in
unconstrained space at the plates' *full* size. A guide then only says what differs: which
parameters it makes from those initial values, and how it samples.

Subsampled plates: parameters keep the full size of the plate, and each call of the guide
selects the entries of the subsample it draws; the model, replayed against the guide, sees
the same indices.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import torch
from torch.distributions import biject_to
from torch.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    IndependentTransform,
    Transform,
)

from ...handlers.block import BlockMessenger
from ...handlers.guide import ModelRef as _ModelRef
from ...handlers.plate import PlateMessenger
from ...handlers.trace import Trace, TraceMessenger
from ...nn.module import PyroModule
from ...runtime import CondIndepStackFrame, Message
from .initialization import InitMessenger, helpful_support_errors

__all__ = ["AutoGuide", "AutoGuideList", "AutoCallable"]

# The plates of the AutoGuideList being called, so that its parts share them (one subsample
# per plate per call) without holding references to the list.
_SHARED_PLATES: list[dict[str, PlateMessenger]] = []


def _parts(t: Transform) -> list[Transform]:
    """``t`` as a flat list of elementary transforms, without the ones that do nothing.

    torch's ``biject_to(positive)`` is ``exp`` followed by ``+ 0``; flattening and dropping
    identities saves work at every step, and a plain ``[ExpTransform()]`` matches a
    ``LogNormal`` prior, so ``TraceMeanField_ELBO`` finds the analytic KL.
    """
    if isinstance(t, ComposeTransform):
        return [p for part in t.parts for p in _parts(part)]
    if isinstance(t, IndependentTransform):
        # Site shapes carry the event dims; the log-Jacobian sums below use them.
        return _parts(t.base_transform)
    if isinstance(t, AffineTransform) and _is_number(t.loc, 0.0) and _is_number(t.scale, 1.0):
        return []
    return [t]


def _is_number(x: Any, number: float) -> bool:
    if isinstance(x, torch.Tensor):
        return x.numel() == 1 and float(x) == number
    return x == number


def _hide_non_latent(msg: Message) -> bool:
    return msg.type != "sample" or msg.is_observed or getattr(msg.fn, "_is_subsample", False)


def _repeat_to(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Repeat ``x`` periodically along ``dim`` until it has ``size`` entries there."""
    n = x.size(dim)
    if n == size:
        return x
    reps = [1] * x.dim()
    reps[dim] = -(-size // n)
    return x.repeat(reps).narrow(dim, 0, size)


def check_init_scale(init_scale: Any, who: str) -> float:
    """``init_scale`` must be a positive finite number; returns it as a float."""
    if (
        isinstance(init_scale, bool)
        or not isinstance(init_scale, (int, float))
        or not 0 < init_scale < float("inf")
    ):
        raise ValueError(f"{who}: init_scale must be a number > 0, got {init_scale!r}")
    return float(init_scale)


def deep_setattr(obj: torch.nn.Module, key: str, value: Any) -> None:
    """``setattr`` along a dotted ``key``, making the missing modules on the way PyroModules."""
    *path, last = key.split(".")
    for attr in path:
        child = getattr(obj, attr, None)
        if child is None:
            setattr(obj, attr, PyroModule())
            child = getattr(obj, attr)
        obj = child
    setattr(obj, last, value)


class _Latent:
    """One latent site of the model, as the guide sees it (set up once, read every call).

    ``shape``/``unconstrained_shape`` and ``init`` are at the plates' full sizes.
    """

    __slots__ = (
        "name",
        "site",
        "transform",
        "parts",
        "_sum_dims",
        "is_identity",
        "event_dim",
        "unconstrained_event_dim",
        "shape",
        "event_shape",
        "unconstrained_shape",
        "numel",
        "frames",
        "init",
        "get",
    )

    def __init__(self, site: Message, who: str):
        name = site.name
        fn = site.fn
        value = site.value.detach()
        with helpful_support_errors(site, who):
            transform = biject_to(fn.support)
            unconstrained = transform.inv(value)
        event_dim = len(fn.event_shape)
        u_event_dim = event_dim + unconstrained.dim() - value.dim()
        frames = []
        shape = list(value.shape)
        for frame in site.cond_indep_stack:
            if frame.dim is None:
                raise ValueError(
                    f"{who}: sample site {name!r} is inside the sequential plate "
                    f"{frame.name!r} (used as `for i in plate(...)`); autoguides need "
                    f"vectorized plates (`with plate(...)`)"
                )
            frames.append(frame)
            if frame.full_size != frame.size:
                unconstrained = _repeat_to(unconstrained, frame.full_size, frame.dim - u_event_dim)
                shape[frame.dim - event_dim] = frame.full_size
        parts = _parts(transform)
        # Each part's log-Jacobian is summed over the event dims of the site that the part
        # itself leaves as batch dims, so that every term has the site's batch shape.
        sum_dims = []
        dims = u_event_dim
        for part in parts:
            sum_dims.append(dims - part.domain.event_dim)
            dims += part.codomain.event_dim - part.domain.event_dim
        self.name = name
        self.site = site
        self.parts = tuple(parts)
        self._sum_dims = tuple(sum_dims)
        self.transform = parts[0] if len(parts) == 1 else ComposeTransform(parts)
        self.is_identity = not parts
        self.event_dim = event_dim
        self.unconstrained_event_dim = u_event_dim
        self.shape = torch.Size(shape)
        self.event_shape = self.shape[len(shape) - event_dim :]
        self.unconstrained_shape = unconstrained.shape
        self.numel = unconstrained.numel()
        self.frames: tuple[CondIndepStackFrame, ...] = tuple(frames)
        self.init = unconstrained.detach().contiguous()
        self.get = operator.attrgetter(name)

    def constrain(self, unconstrained: torch.Tensor) -> torch.Tensor:
        """The constrained value of ``unconstrained`` (a new tensor, never a parameter)."""
        if self.is_identity:
            return unconstrained.clone()
        return self.transform(unconstrained)

    def constrain_with_log_density(self, unconstrained: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(value, ``-log|det d value / d unconstrained|``), the log term of the site's shape.

        The log term is 0.0 for real sites.
        """
        if self.is_identity:
            return unconstrained, 0.0
        x = unconstrained
        log_density: Any = 0.0
        for part, n in zip(self.parts, self._sum_dims):
            y = part(x)
            ldj = part.log_abs_det_jacobian(x, y)
            if n > 0:
                ldj = ldj.sum(tuple(range(-n, 0)))
            log_density = log_density - ldj
            x = y
        return x, log_density


def subsample(
    x: torch.Tensor, frames: tuple, plates: list[PlateMessenger], indices: list, event_dim: int
) -> torch.Tensor:
    """Select the entries of a full-size tensor that the entered plates use now."""
    for frame, plate, idx in zip(frames, plates, indices):
        if plate.subsampling:
            dim = frame.dim - event_dim
            if x.size(dim) != plate.size:
                raise ValueError(
                    f"plate {frame.name!r} has size {plate.size} in this call but "
                    f"{x.size(dim)} when the guide was set up; an autoguide's parameters "
                    f"are sized once, on its first call"
                )
            x = x.index_select(dim, idx)
    return x


class AutoGuide(_ModelRef, PyroModule):
    """Base class of the automatic guides. Call it with the model's arguments.

    The first call runs the model once to find its latent sites and creates the guide's
    parameters; every call returns a dict from latent site name to a constrained sample.

    :param model: the model (a callable with ``vitorch.sample`` statements).
    :param create_plates: optional ``create_plates(*args, **kwargs)`` returning a
        ``vitorch.plate`` (or a list of them) to use instead of the plates the guide would
        make from the model's; this is how a guide follows the model's subsampling.
    """

    init_loc_fn: Callable | None = None

    def __init__(self, model: Callable, *, create_plates: Callable | None = None):
        if not callable(model):
            raise TypeError(
                f"{type(self).__name__}: model must be callable, got {type(model).__name__}"
            )
        if create_plates is not None and not callable(create_plates):
            raise TypeError(
                f"{type(self).__name__}: create_plates must be a callable returning plates, "
                f"got {type(create_plates).__name__}"
            )
        super().__init__(name=type(self).__name__)
        # A tuple, so that a model that is an nn.Module is not registered as a submodule.
        self._model = (model,)
        self.create_plates = create_plates
        self.prototype_trace: Trace | None = None
        self._latents: dict[str, _Latent] | None = None
        self._frames: dict[str, CondIndepStackFrame] = {}

    # -- discovery ---------------------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        model = self.model
        if self.init_loc_fn is not None:
            model = InitMessenger(self.init_loc_fn, model, who=type(self).__name__)
        tracer = TraceMessenger(BlockMessenger(model, hide_fn=_hide_non_latent))
        with torch.no_grad(), BlockMessenger():
            self.prototype_trace = tracer.get_trace(*args, **kwargs)
        who = type(self).__name__
        latents = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            latents[name] = latent = _Latent(site, who)
            for frame in latent.frames:
                self._frames[frame.name] = frame
        self._latents = latents
        self._setup_params()

    def _setup_params(self) -> None:
        """Create the guide's parameters from ``self._latents`` (called once)."""

    def _require_setup(self, args: tuple, kwargs: dict, what: str) -> dict[str, _Latent]:
        if self._latents is None:
            if not args and not kwargs:
                raise ValueError(
                    f"{type(self).__name__}.{what}() was called before the guide has run: call "
                    f"the guide (or svi.step) once with the model's arguments first, or pass "
                    f"them here: guide.{what}(*args)"
                )
            self._setup_prototype(*args, **kwargs)
        return self._latents  # type: ignore[return-value]

    # -- plates ------------------------------------------------------------------------------
    def _create_plates(self, *args: Any, **kwargs: Any) -> dict[str, PlateMessenger]:
        """The plates for this call: shared with an enclosing AutoGuideList, else fresh."""
        if _SHARED_PLATES:
            plates = _SHARED_PLATES[-1]
        else:
            plates = {}
            if self.create_plates is not None:
                plates.update(
                    _user_plates(self.create_plates(*args, **kwargs), type(self).__name__)
                )
        for name, frame in self._frames.items():
            if name not in plates:
                plates[name] = PlateMessenger(
                    name, frame.full_size, subsample_size=frame.size, dim=frame.dim
                )
        return plates

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site; returns ``{name: constrained value}``."""
        if self._latents is None:
            self._setup_prototype(*args, **kwargs)
        return self._sample(self._create_plates(*args, **kwargs), args, kwargs)

    def _sample(self, plates: dict, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The posterior median of each latent site (constrained)."""
        raise NotImplementedError

    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Posterior quantiles of each latent site, stacked along a new leftmost dim."""
        raise NotImplementedError(f"{type(self).__name__} has no quantiles")


def enter_plates(stack: ExitStack, plates: dict, latent: _Latent) -> tuple[list, list]:
    """Enter ``latent``'s plates (outermost first); returns (plates, their indices)."""
    entered = [plates[frame.name] for frame in latent.frames]
    return entered, [stack.enter_context(p) for p in entered]


def _user_plates(result: Any, who: str) -> dict[str, PlateMessenger]:
    items = [result] if isinstance(result, PlateMessenger) else result
    try:
        items = list(items)
    except TypeError:
        items = None
    if items is None or not all(isinstance(p, PlateMessenger) for p in items):
        raise TypeError(
            f"{who}: create_plates must return a vitorch.plate or a list of them, got {result!r}"
        )
    return {p.name: p for p in items}


class AutoCallable(AutoGuide):
    """An ordinary guide function as a part of an :class:`AutoGuideList`.

    :param model: the model.
    :param guide: a guide for some of the model's sites; returns a dict or None.
    :param median: optional ``median(*args, **kwargs) -> dict`` for :meth:`median`.
    """

    def __init__(self, model: Callable, guide: Callable, median: Callable | None = None):
        if not callable(guide):
            raise TypeError(f"AutoCallable: guide must be callable, got {type(guide).__name__}")
        super().__init__(model)
        self._guide = (guide,)
        self._median = (median,)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Call the wrapped guide."""
        result = self._guide[0](*args, **kwargs)
        return {} if result is None else result

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The wrapped ``median`` callable's result, or ``{}``."""
        return {} if self._median[0] is None else self._median[0](*args, **kwargs)

    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """``{}``: a plain guide function has no quantiles."""
        return {}


class AutoGuideList(AutoGuide):
    """Several guides, each over its own sites of one model, called as one guide.

    Example:
        >>> import vitorch
        >>> from vitorch.infer.autoguide import AutoDelta, AutoGuideList, AutoNormal
        >>> def model(): ...
        >>> guide = AutoGuideList(model)
        >>> guide.append(AutoDelta(vitorch.poutine.block(model, expose=["a"])))
        >>> guide.append(AutoNormal(vitorch.poutine.block(model, hide=["a"])))
        >>> len(guide)
        2

    Parts are numbered submodules (``guide[0]``, ``state_dict`` keys ``"0.loc"`` ...). Plates
    are made once per call, here, and shared by the parts, so they draw one subsample.
    """

    def append(self, part: Callable) -> None:
        """Add a guide for some of the sites (an AutoGuide, or any guide function)."""
        if not isinstance(part, AutoGuide):
            if not callable(part):
                raise TypeError(
                    f"AutoGuideList.append expects an AutoGuide or a guide function, got "
                    f"{type(part).__name__}"
                )
            part = AutoCallable(self.model, part)
        if part.create_plates is not None:
            raise ValueError(
                "AutoGuideList.append: give create_plates to the AutoGuideList, not to its "
                f"parts ({type(part).__name__} has one)"
            )
        if any(part is p for p in self):
            raise ValueError(
                f"AutoGuideList.append: this {type(part).__name__} is already in the list"
            )
        setattr(self, str(len(self)), part)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[AutoGuide]:
        return iter(self._modules.values())  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> AutoGuide:
        parts = list(self._modules.values())
        try:
            return parts[index]  # type: ignore[return-value]
        except (IndexError, TypeError):
            raise IndexError(
                f"AutoGuideList index {index!r} out of range (it has {len(parts)} parts)"
            ) from None

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Call every part with the model's arguments; returns their samples merged."""
        # A list inside a list shares the outer one's plates.
        plates = self._create_plates(*args, **kwargs)
        _SHARED_PLATES.append(plates)
        try:
            result: dict[str, torch.Tensor] = {}
            for part in self:
                out = part(*args, **kwargs)
                for name in out:
                    if name in result:
                        raise ValueError(
                            f"AutoGuideList: sample site {name!r} is guided by two parts; "
                            f"block it out of all but one (vitorch.poutine.block(model, "
                            f"hide=[{name!r}]))"
                        )
                result.update(out)
        finally:
            _SHARED_PLATES.pop()
        return result

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The parts' medians, merged."""
        result: dict[str, torch.Tensor] = {}
        for part in self:
            result.update(part.median(*args, **kwargs))
        return result

    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The parts' quantiles, merged."""
        result: dict[str, torch.Tensor] = {}
        for part in self:
            result.update(part.quantiles(quantiles, *args, **kwargs))
        return result
