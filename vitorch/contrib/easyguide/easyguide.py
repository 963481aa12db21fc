"""``EasyGuide``: hand-written guides that borrow the model's structure.

An autoguide decides everything; a raw guide decides everything by hand. An
:class:`EasyGuide` sits between: its :meth:`~EasyGuide.guide` method is ordinary guide code
(``vitorch.sample``, ``vitorch.param``, torch modules) plus a few statements that know the
model, because the guide traces the model once, on its first call (``prototype_trace``):

- ``self.map_estimate(name)``: a point mass at a learned value for one latent site.
- ``group = self.group(match)``: the latent sites whose names match a regex, seen as one
  flat vector in unconstrained space (``group.event_shape``); ``group.sample(name, fn)``
  draws that vector from any distribution ``fn`` and hands each site its slice, mapped
  to the site's support with the right log-Jacobian.
- ``with self.plate(name, ...)``: the guide's side of a model plate. The statements above
  enter the plates their sites need by themselves, and reuse the ones the guide entered,
  so that subsampled sites see the guide's indices.

Example:
    >>> import torch, vitorch
    >>> import vitorch.distributions as dist
    >>> def model(data):
    ...     loc = vitorch.sample("loc", dist.Normal(0.0, 1.0))
    ...     with vitorch.plate("data", len(data)):
    ...         vitorch.sample("obs", dist.Normal(loc, 1.0), obs=data)
    >>> @easy_guide(model)
    ... def guide(self, data):
    ...     return self.map_estimate("loc")
    >>> guide(torch.zeros(3)).shape
    torch.Size([])
    >>> [name for name, _ in guide.named_pyro_params()]
    ['loc']
"""

from __future__ import annotations

import re
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch

from ...distributions.delta import Delta
from ...handlers.block import BlockMessenger
from ...handlers.guide import ModelRef
from ...handlers.plate import PlateMessenger
from ...handlers.trace import Trace, TraceMessenger
from ...infer.autoguide.base import _hide_non_latent, _Latent, deep_setattr
from ...infer.autoguide.initialization import InitMessenger, init_to_sample
from ...nn.module import PyroModule, PyroParam
from ...primitives import sample
from ...runtime import _STACK, CondIndepStackFrame, Message

__all__ = ["EasyGuide", "Group", "easy_guide"]


class _EasyGuideMeta(type(PyroModule), ABCMeta):  # type: ignore[misc]
    """PyroModule's metaclass with ABC's, so that a subclass without ``guide`` cannot be made."""


def _taken(module: PyroModule, attr: str) -> bool:
    """Whether ``attr`` already means something on ``module`` (method, param, child ...)."""
    return (
        hasattr(type(module), attr)
        or attr in module.__dict__
        or attr in module._parameters
        or attr in module._buffers
        or attr in module._modules
        or attr in module._pyro_params
        or attr in module._pyro_samples
    )


class EasyGuide(ModelRef, PyroModule, metaclass=_EasyGuideMeta):
    """Base class of guides written by hand with model-aware helpers (see module docs).

    Subclasses define :meth:`guide`; call the instance with the model's arguments. They
    may override :meth:`init` (or assign an init strategy such as ``init_to_mean`` to
    ``guide.init``) to choose where ``map_estimate`` starts.

    The guide's own parameters are named ``<ClassName>.<attr>``: the MAP value of site
    ``x`` is ``<ClassName>.x`` in the param store.

    :param model: the model (a callable with ``vitorch.sample`` statements).
    """

    def __init__(self, model: Callable):
        if not callable(model):
            raise TypeError(
                f"{type(self).__name__}: model must be callable, got {type(model).__name__}"
            )
        super().__init__(name=type(self).__name__)
        # A tuple, so that a model that is an nn.Module is not registered as a submodule.
        self._model = (model,)
        self.prototype_trace: Trace | None = None
        self.frames: dict[str, CondIndepStackFrame] = {}
        self.groups: dict[str, Group] = {}
        self.plates: dict[str, PlateMessenger] = {}
        self._latents: dict[str, _Latent] = {}

    # -- what subclasses define ----------------------------------------------------------------
    @abstractmethod
    def guide(self, *args: Any, **kwargs: Any) -> Any:
        """The guide's body, called with the model's arguments."""

    def init(self, site: Message) -> torch.Tensor:
        """Initial constrained value of a latent site (default: a draw from its prior).

        ``map_estimate`` starts from it, and the prototype trace records it.
        """
        return init_to_sample(site)

    # -- running -------------------------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        who = type(self).__name__
        model = InitMessenger(self.init, self.model, who=who)
        tracer = TraceMessenger(BlockMessenger(model, hide_fn=_hide_non_latent))
        with torch.no_grad(), BlockMessenger():
            trace = tracer.get_trace(*args, **kwargs)
        for name, site in trace.iter_stochastic_nodes():
            for frame in site.cond_indep_stack:
                if not frame.vectorized:
                    raise ValueError(
                        f"{who}: sample site {name!r} is inside the sequential plate "
                        f"{frame.name!r} (used as `for i in plate(...)`); EasyGuide needs "
                        f"vectorized plates (`with plate(...)`)"
                    )
                self.frames[frame.name] = frame
        self.prototype_trace = trace

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run :meth:`guide` (tracing the model first, on the first call); returns its result."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        try:
            return self.guide(*args, **kwargs)
        finally:
            # Plates draw their subsample once per object: each call gets fresh ones.
            self.plates.clear()

    def _require_prototype(self, what: str) -> Trace:
        if self.prototype_trace is None:
            raise ValueError(
                f"{type(self).__name__}.{what}() needs the model's structure, which the guide "
                f"learns on its first call: use it inside guide(), or call the guide once first"
            )
        return self.prototype_trace

    def _latent(self, name: str) -> _Latent:
        """The latent site ``name`` of the prototype trace, with its bijection and shapes."""
        latent = self._latents.get(name)
        if latent is None:
            trace = self._require_prototype("map_estimate")
            site = trace.nodes.get(name)
            if site is None or name not in trace.stochastic_nodes:
                raise ValueError(
                    f"{type(self).__name__}: the model has no latent sample site {name!r}; "
                    f"its latent sites are {trace.stochastic_nodes}"
                )
            latent = self._latents[name] = _Latent(site, type(self).__name__)
        return latent

    # -- plates --------------------------------------------------------------------------------
    def plate(
        self,
        name: str,
        size: int | None = None,
        subsample_size: int | None = None,
        subsample: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> PlateMessenger:
        """The guide's plate ``name`` for this call: use it instead of ``vitorch.plate``.

        The first use in a call makes the plate (arguments as ``vitorch.plate``); later uses
        in the same call return that same plate. Without a size, and without ``dim``, the
        model's plate of that name gives them (its full size and subsample size, its dim).
        """
        plate = self.plates.get(name)
        if plate is not None:
            if (size is not None and size != plate.size) or (
                subsample is not None and subsample is not plate.subsample
            ):
                raise ValueError(
                    f"{type(self).__name__}.plate({name!r}): this call of the guide already "
                    f"made plate {name!r} with size {plate.size}, and now asks for size="
                    f"{size!r}, subsample={subsample!r}; a plate is made once per call, "
                    f"so give its arguments only the first time"
                )
            return plate
        frame = self.frames.get(name)
        if size is None and subsample_size is None and subsample is None:
            if frame is None:
                raise ValueError(
                    f"{type(self).__name__}.plate({name!r}): no size given, and the model has "
                    f"no vectorized plate {name!r} over a latent site to take it from "
                    f"(its plates: {sorted(self.frames)}); give a size"
                )
            size, subsample_size = frame.full_size, frame.size
        if frame is not None and not args and "dim" not in kwargs:
            kwargs["dim"] = frame.dim
        plate = PlateMessenger(name, size, subsample_size, subsample, *args, **kwargs)
        self.plates[name] = plate
        return plate

    def _enter_plates(self, stack: ExitStack, latent: _Latent) -> None:
        """Enter the site's plates that the guide has not entered yet."""
        for frame in latent.frames:
            plate = self.plate(frame.name)
            if not any(plate is handler for handler in _STACK):
                stack.enter_context(plate)

    # -- model-aware statements ----------------------------------------------------------------
    def group(self, match: str = ".*") -> Group:
        """The :class:`Group` of latent sites whose names match the regex ``match``.

        As ``re.match``: the pattern must match at the start of the name, not all of it.
        """
        group = self.groups.get(match)
        if group is not None:
            return group
        if not isinstance(match, str):
            raise TypeError(
                f"{type(self).__name__}.group: match must be a regex str, got "
                f"{type(match).__name__}"
            )
        trace = self._require_prototype("group")
        try:
            pattern = re.compile(match)
        except re.error as e:
            raise ValueError(
                f"{type(self).__name__}.group: match={match!r} is not a valid regex ({e})"
            ) from None
        sites = [site for name, site in trace.iter_stochastic_nodes() if pattern.match(name)]
        if not sites:
            raise ValueError(
                f"{type(self).__name__}.group(match={match!r}) matched no latent site of the "
                f"model; its latent sites are {trace.stochastic_nodes}"
            )
        group = self.groups[match] = Group(self, sites)
        return group

    def map_estimate(self, name: str) -> torch.Tensor:
        """Sample site ``name`` from a point mass at a learned value; returns the value.

        The value is the parameter ``<ClassName>.<name>``, in the site's constrained space,
        at the full size of subsampled plates (each call uses the subsample's entries),
        initialized by :meth:`init`.
        """
        latent = self._latent(name)
        if not self._map_param_exists(name):
            value = latent.constrain(latent.init)
            deep_setattr(self, name, PyroParam(value, latent.site.fn.support, latent.event_dim))
        with ExitStack() as stack:
            self._enter_plates(stack, latent)
            # Read inside the plates: a subsampled plate selects the entries in use.
            value = latent.get(self)
            return sample(name, Delta(value, event_dim=latent.event_dim))

    def _map_param_exists(self, name: str) -> bool:
        """Whether the MAP parameter of ``name`` exists; raises if its attribute is taken."""
        owner: Any = self
        *path, last = name.split(".")
        for attr in path:
            child = owner._modules.get(attr)
            if isinstance(child, PyroModule):
                owner = child
                continue
            if child is not None or _taken(owner, attr):
                raise self._clash(name, attr)
            return False
        if last in owner._pyro_params:
            return True
        if _taken(owner, last):
            raise self._clash(name, last)
        return False

    def _clash(self, name: str, attr: str) -> ValueError:
        return ValueError(
            f"{type(self).__name__} keeps the MAP value of site {name!r} as the attribute "
            f"guide.{name}, but {attr!r} is already an attribute there; rename the site"
        )


class Group:
    """Several latent sites of the model, guided jointly as one vector (``self.group(...)``).

    The vector concatenates the sites' values in unconstrained space, flattened, in model
    order; its length is ``event_shape[0]``. Plates shared by all the sites (``common``)
    stay batch dims of the vector, so a subsampled plate makes it a batch of per-item
    vectors; each site's other plates are flattened into it and must lie right of the
    shared ones.

    :ivar torch.Size event_shape: the shape of one vector.
    :ivar list prototype_sites: the sites, from the guide's prototype trace.
    :ivar frozenset common_frames: the plates every site is in.
    """

    def __init__(self, guide: EasyGuide, sites: list[Message]):
        self.guide = guide
        self.prototype_sites = sites
        latents = [guide._latent(site.name) for site in sites]
        self.common_frames = frozenset.intersection(*(frozenset(lt.frames) for lt in latents))
        rightmost = max((f.dim for f in self.common_frames), default=None)
        self._parts: list[tuple[_Latent, torch.Size, torch.Size, int]] = []
        for latent in latents:
            batch_shape = list(latent.site.fn.batch_shape)
            for frame in self.common_frames:
                batch_shape[frame.dim] = 1
            while batch_shape and batch_shape[0] == 1:
                batch_shape.pop(0)
            if rightmost is not None and len(batch_shape) > -rightmost:
                raise ValueError(
                    f"Group expects all per-site plates to be right of all common plates, "
                    f"but site {latent.name!r} has a plate of its own at dim "
                    f"{-len(batch_shape)}, left of the common plate dim {rightmost}"
                )
            u_shape = latent.unconstrained_shape
            event_shape = u_shape[len(u_shape) - latent.unconstrained_event_dim :]
            size = torch.Size(batch_shape).numel() * event_shape.numel()
            self._parts.append((latent, torch.Size(batch_shape), event_shape, size))
        self.event_shape = torch.Size([sum(part[3] for part in self._parts)])

    def sample(
        self, guide_name: str, fn: Any, infer: dict | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw the group's vector from ``fn`` at the auxiliary site ``guide_name``.

        Each model site then gets its slice, mapped to its support, as a point mass that
        carries the log-Jacobian, so the guide's density is that of the sites' values.

        :param guide_name: the name of the guide's (auxiliary) site for the vector.
        :param fn: a distribution with event shape ``self.event_shape``.
        :param infer: optional infer dict of that site (``is_auxiliary`` is set in it).
        :returns: ``(guide_z, model_zs)``: the vector, and ``{site name: value}``.
        """
        if fn.event_shape != self.event_shape:
            raise ValueError(
                f"Group.sample({guide_name!r}): fn must have event_shape "
                f"{tuple(self.event_shape)} (the group's), got {tuple(fn.event_shape)}"
            )
        infer = {} if infer is None else dict(infer)
        infer["is_auxiliary"] = True
        guide_z = sample(guide_name, fn, infer=infer)
        common_batch_shape = guide_z.shape[:-1]
        model_zs = {}
        pos = 0
        for latent, batch_shape, event_shape, size in self._parts:
            shape = torch.broadcast_shapes(common_batch_shape, batch_shape) + event_shape
            unconstrained = guide_z[..., pos : pos + size].reshape(shape)
            pos += size
            value, log_density = latent.constrain_with_log_density(unconstrained)
            with ExitStack() as stack:
                self.guide._enter_plates(stack, latent)
                model_zs[latent.name] = sample(
                    latent.name,
                    Delta(value, log_density=log_density, event_dim=latent.event_dim),
                )
        return guide_z, model_zs

    def map_estimate(self) -> dict[str, torch.Tensor]:
        """``guide.map_estimate`` for every site of the group; returns ``{name: value}``."""
        return {site.name: self.guide.map_estimate(site.name) for site in self.prototype_sites}


def easy_guide(model: Callable) -> Callable[[Callable], EasyGuide]:
    """Decorator: make an :class:`EasyGuide` whose ``guide`` method is the decorated function.

    ``@easy_guide(model)`` over ``def guide(self, *args): ...`` gives an instance of a new
    EasyGuide subclass named after the function (so its parameters are ``guide.<attr>``).
    Such guides cannot be pickled; subclass :class:`EasyGuide` for that.
    """

    def decorator(fn: Callable) -> EasyGuide:
        if not callable(fn):
            raise TypeError(f"easy_guide expects a guide function, got {type(fn).__name__}")
        cls = _EasyGuideMeta(fn.__name__, (EasyGuide,), {"guide": fn, "__doc__": fn.__doc__})
        return cls(model)

    return decorator
