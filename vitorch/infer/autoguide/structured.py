"""``AutoStructured``: a guide whose sites depend on each other, with a chosen law per site.

Each latent site ``x`` is flattened in unconstrained space and drawn as
``loc_x + noise_x + sum_u dep_{x,u}(noise_u)``: ``noise_x`` comes from the site's
*conditional* (zero for ``"delta"``, ``scale * eps`` for ``"normal"``, ``scale *
(scale_tril @ eps)`` for ``"mvn"``, or whatever a user callable returns), and each
*dependency* adds a function of an upstream site's noise (``"linear"``: a learned matrix,
zero at first). Sites are visited upstream first, so the map from the independent noises to
the values is triangular: its log-determinant is that of the conditionals alone, whatever
the dependencies are, and the guide's density is exact. With ``"mvn"`` conditionals and
linear dependencies along the posterior's dependency graph, the guide is a full Gaussian in
unconstrained space.

Parameters (Pyro's names): ``locs.<site>`` (flat), ``scales.<site>``,
``scale_trils.<site>``, ``conds.<site>`` (callable conditionals) and
``deps.<downstream>.<upstream>`` (an ``nn.Linear`` without bias for ``"linear"``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from operator import attrgetter
from typing import Any

import torch
from torch import nn

from ...distributions import constraints
from ...distributions.delta import Delta
from ...handlers.block import BlockMessenger
from ...handlers.infer_config import InferConfigMessenger
from ...nn.module import PyroModule, PyroParam
from ...poutine.runtime import get_mask
from ...primitives import sample
from ..inspect import get_dependencies
from . import dists
from .base import AutoGuide, _Latent, check_init_scale, deep_setattr, enter_plates, subsample
from .initialization import init_to_feasible

__all__ = ["AutoStructured"]

_CONDITIONALS = ("delta", "normal", "mvn")


def _auxiliary(msg: Any) -> dict:
    return {"is_auxiliary": True}


def _is_conditional(conditional: Any) -> bool:
    return callable(conditional) or (isinstance(conditional, str) and conditional in _CONDITIONALS)


def _check_conditional(name: str, conditional: Any) -> None:
    if not _is_conditional(conditional):
        raise ValueError(
            f"AutoStructured: conditionals[{name!r}] must be one of {_CONDITIONALS} or a "
            f"callable returning a zero-centred noise sample, got {conditional!r}"
        )


class AutoStructured(AutoGuide):
    """A structured guide: a per-site conditional law plus dependencies between sites.

    :param model: the model.
    :param conditionals: the law of every site's own noise, ``"delta"``, ``"normal"`` or
        ``"mvn"``, or a dict from each latent site to one of those or to a callable that
        takes no arguments and returns a flat, zero-centred noise sample (it may call
        ``vitorch.param`` and ``vitorch.sample``; its sample sites are auxiliary).
    :param dependencies: ``"linear"`` to add a linear dependency along every edge of the
        posterior's dependency graph (each edge directed from the site that comes first
        in the model), or a dict ``{downstream: {upstream: "linear" | callable}}``; a
        callable maps the upstream's flat noise to a flat noise of the downstream site.
        The graph must have no cycles and no self-loops.
    :param init_loc_fn: per-site initialization of ``loc``.
    :param init_scale: initial ``scale`` of every site in unconstrained space (> 0).
    :param create_plates: see :class:`~vitorch.infer.autoguide.AutoGuide`.

    Example:
        >>> import vitorch, vitorch.distributions as dist
        >>> def model():
        ...     x = vitorch.sample("x", dist.Normal(0.0, 1.0))
        ...     vitorch.sample("y", dist.Normal(x, 1.0))
        >>> guide = AutoStructured(model, conditionals={"x": "normal", "y": "delta"},
        ...                        dependencies={"y": {"x": "linear"}})
        >>> sorted(guide())
        ['x', 'y']
        >>> guide.deps.y.x.weight.shape
        torch.Size([1, 1])
    """

    scale_constraint = constraints.softplus_positive
    scale_tril_constraint = constraints.softplus_lower_cholesky

    def __init__(
        self,
        model: Callable,
        *,
        conditionals: str | dict[str, str | Callable] = "mvn",
        dependencies: str | dict[str, dict[str, str | Callable]] = "linear",
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
    ):
        if isinstance(conditionals, dict):
            for name, conditional in conditionals.items():
                _check_conditional(name, conditional)
        elif not isinstance(conditionals, str) or conditionals not in _CONDITIONALS:
            raise ValueError(
                f"AutoStructured: conditionals must be one of {_CONDITIONALS} or a dict from "
                f"site name to conditional, got {conditionals!r}"
            )
        if isinstance(dependencies, dict):
            for downstream, deps in dependencies.items():
                if not isinstance(deps, dict):
                    raise ValueError(
                        f"AutoStructured: dependencies[{downstream!r}] must be a dict from "
                        f"upstream site name to 'linear' or a callable, got {deps!r}"
                    )
                for upstream, dep in deps.items():
                    if upstream == downstream:
                        raise ValueError(
                            f"AutoStructured: dependencies[{downstream!r}] names site "
                            f"{downstream!r} itself; a site cannot depend on itself"
                        )
                    if not (callable(dep) or (isinstance(dep, str) and dep == "linear")):
                        raise ValueError(
                            f"AutoStructured: dependencies[{downstream!r}][{upstream!r}] must "
                            f"be 'linear' or a callable, got {dep!r}"
                        )
        elif not isinstance(dependencies, str) or dependencies != "linear":
            raise ValueError(
                f"AutoStructured: dependencies must be 'linear' or a dict "
                f"{{downstream: {{upstream: 'linear' | callable}}}}, got {dependencies!r}"
            )
        init_scale = check_init_scale(init_scale, "AutoStructured")
        super().__init__(model, create_plates=create_plates)
        self.init_loc_fn = init_loc_fn
        self._init_scale = init_scale
        self.conditionals = conditionals
        self.dependencies = dependencies

    # -- setup -------------------------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        self._args = (args, kwargs)
        try:
            super()._setup_prototype(*args, **kwargs)
        finally:
            del self._args

    def _resolve_structure(self) -> None:
        """Turn the ``conditionals`` and ``dependencies`` options into checked dicts."""
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        known = list(latents)
        if isinstance(self.conditionals, dict):
            for name in self.conditionals:
                if name not in latents:
                    raise ValueError(
                        f"AutoStructured: conditionals names {name!r}, which is not a latent "
                        f"sample site of the model (latent sites: {known})"
                    )
            for name in latents:
                if name not in self.conditionals:
                    raise ValueError(
                        f"AutoStructured: conditionals has no entry for the latent site "
                        f"{name!r}; give every latent site a conditional"
                    )
        else:
            self.conditionals = dict.fromkeys(latents, self.conditionals)
        if isinstance(self.dependencies, dict):
            for downstream, deps in self.dependencies.items():
                for name in (downstream, *deps):
                    if name not in latents:
                        raise ValueError(
                            f"AutoStructured: dependencies names {name!r}, which is not a "
                            f"latent sample site of the model (latent sites: {known})"
                        )
        else:
            self.dependencies = self._posterior_edges(self.dependencies)

    def _posterior_edges(self, dep: str) -> dict[str, dict[str, str]]:
        """The posterior's dependency edges, each pointing from the earlier site in the model."""
        args, kwargs = self._args
        with BlockMessenger():
            posterior = get_dependencies(self.model, args, kwargs)["posterior_dependencies"]
        order = {name: i for i, name in enumerate(self._latents)}  # type: ignore[arg-type]
        edges: dict[str, dict[str, str]] = {}
        for a, others in posterior.items():
            for b in others:
                if a in order and b in order and a != b:
                    up, down = sorted((a, b), key=order.__getitem__)
                    edges.setdefault(down, {})[up] = dep
        return edges

    def _setup_params(self) -> None:
        self._resolve_structure()
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        self.locs = PyroModule()
        self.scales = PyroModule()
        self.scale_trils = PyroModule()
        self.conds = PyroModule()
        self.deps = PyroModule()
        for name, latent in latents.items():
            init = latent.init.reshape(-1)
            deep_setattr(self.locs, name, PyroParam(init, constraints.real))
            conditional = self.conditionals[name]
            if callable(conditional):
                deep_setattr(self.conds, name, conditional)
            if conditional in ("normal", "mvn"):
                scale = torch.full_like(init, self._init_scale)
                deep_setattr(self.scales, name, PyroParam(scale, self.scale_constraint))
            if conditional == "mvn":
                eye = torch.eye(init.numel(), dtype=init.dtype, device=init.device)
                deep_setattr(self.scale_trils, name, PyroParam(eye, self.scale_tril_constraint))
            deps = PyroModule()
            deep_setattr(self.deps, name, deps)
            for upstream, dep in self.dependencies.get(name, {}).items():
                if isinstance(dep, str):
                    dep = nn.Linear(
                        latents[upstream].numel,
                        latent.numel,
                        bias=False,
                        dtype=init.dtype,
                        device=init.device,
                    )
                    nn.init.zeros_(dep.weight)
                deep_setattr(deps, upstream, dep)
        self._order = self._sort_sites()

    def _sort_sites(self) -> list[str]:
        """The latent sites, each after its upstreams (ties: alphabetical, as Pyro)."""
        pending = {name: set(self.dependencies.get(name, {})) for name in self._latents}  # type: ignore[union-attr]
        order: list[str] = []
        while pending:
            ready = sorted(name for name, ups in pending.items() if not ups)
            if not ready:
                raise ValueError(
                    f"AutoStructured: dependencies have a cycle among the sites "
                    f"{sorted(pending)}; each site may only depend on sites drawn before it"
                )
            name = ready[0]
            order.append(name)
            del pending[name]
            for ups in pending.values():
                ups.discard(name)
        return order

    # -- sampling ----------------------------------------------------------------------------
    def _draw(self, names: Any = None) -> dict[str, tuple[torch.Tensor, Any]]:
        """(full-size constrained value, log-density) per site, in dependency order."""
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        compute_density = get_mask() is not False
        noises: dict[str, torch.Tensor] = {}
        result = {}
        with InferConfigMessenger(config_fn=_auxiliary):
            for name in self._order:
                latent = latents[name]
                conditional = self.conditionals[name]
                loc = latent.get(self.locs)
                log_density: Any = 0.0
                log_term = None
                if callable(conditional):
                    noise = latent.get(self.conds)()
                elif conditional == "delta":
                    noise = torch.zeros_like(loc)
                else:
                    eps = sample(
                        f"{name}_aux",
                        dists.normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1),
                    )
                    scale = latent.get(self.scales)
                    if conditional == "normal":
                        noise = eps * scale
                        log_term = -scale.log()
                    else:
                        scale_tril = latent.get(self.scale_trils)
                        noise = (eps @ scale_tril.T) * scale
                        log_term = -scale.log() - scale_tril.diagonal().log()
                # The dependencies see the upstream *noises*, so the map is triangular.
                deps = latent.get(self.deps)
                for upstream in self.dependencies.get(name, {}):
                    noise = noise + attrgetter(upstream)(deps)(noises[upstream])
                noises[name] = noise
                if compute_density and log_term is not None:
                    log_density = log_term.expand_as(noise)
                if names is not None and name not in names:
                    continue
                shape = torch.broadcast_shapes(
                    latent.unconstrained_shape,
                    noise.shape[:-1] + (1,) * latent.unconstrained_event_dim,
                )
                unconstrained = (noise + loc).reshape(shape)
                if isinstance(log_density, torch.Tensor):
                    log_density = log_density.reshape(shape)
                    if latent.unconstrained_event_dim:
                        log_density = log_density.flatten(-latent.unconstrained_event_dim).sum(-1)
                if conditional == "delta" or not compute_density:
                    value = latent.constrain(unconstrained)
                else:
                    value, log_jac = latent.constrain_with_log_density(unconstrained)
                    log_density = log_density + log_jac
                result[name] = (value, log_density)
        return result

    def get_deltas(self, save_params: Any = None) -> dict[str, Delta]:
        """A ``Delta`` per site (full size) at a fresh draw, scored by the guide's density.

        :param save_params: optional names of the sites to return (all by default).
        """
        if self._latents is None:
            raise ValueError(
                "AutoStructured.get_deltas() was called before the guide has run: call the "
                "guide (or svi.step) once with the model's arguments first"
            )
        return {
            name: dists.delta(value, log_density, self._latents[name].event_dim)
            for name, (value, log_density) in self._draw(save_params).items()
        }

    def _sample(self, plates: dict, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        result = {}
        for name, (value, log_density) in self._draw().items():
            latent = latents[name]
            with ExitStack() as stack:
                if latent.frames:
                    entered, indices = enter_plates(stack, plates, latent)
                    value = subsample(value, latent.frames, entered, indices, latent.event_dim)
                    if isinstance(log_density, torch.Tensor):
                        log_density = subsample(log_density, latent.frames, entered, indices, 0)
                result[name] = sample(name, dists.delta(value, log_density, latent.event_dim))
        return result

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """``biject_to(support)(loc)`` per site, at full plate size (the noises at zero)."""
        latents = self._require_setup(args, kwargs, "median")
        return {
            name: latent.constrain(latent.get(self.locs).reshape(latent.unconstrained_shape))
            for name, latent in latents.items()
        }
