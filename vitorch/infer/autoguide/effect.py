"""Effect-based autoguides: the model itself, run with its latent priors swapped out.

An :class:`AutoMessenger` is both a PyroModule (it owns the guide's parameters) and a
handler. Calling it runs the *model* under the handler: at each latent sample site the
prior, already evaluated at the upstream draws, is replaced by a learned posterior built
from it (lazily, so the parameters of a site are created the first time it is seen). A site
whose prior depends on upstream values therefore gets a posterior that depends on them too,
and models whose latent structure changes with upstream values are supported.

The guide's trace holds the latent sites, the parameters and the plates' subsample sites
(so that the model, replayed against the guide, uses the same subsample); the model's
observed and deterministic sites are hidden from it, as in Pyro's ``get_traces``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

import torch
from torch.distributions import biject_to

from ...distributions import constraints
from ...distributions.torch import Normal, TransformedDistribution
from ...distributions.transforms import AffineTransform
from ...handlers.guide import GuideMessenger
from ...handlers.plate import PlateMessenger
from ...nn.module import PyroModule, PyroParam
from ...runtime import Message, get_stack
from .base import _parts, _repeat_to, check_init_scale, deep_setattr
from .initialization import helpful_support_errors, init_to_feasible, init_to_mean

__all__ = [
    "AutoMessenger",
    "AutoNormalMessenger",
    "AutoHierarchicalNormalMessenger",
    "AutoRegressiveMessenger",
]


# Pyro's default: the prior mean, else a feasible point (a module-level value, so that the
# default is one shared function rather than a call in each signature).
_INIT_TO_MEAN = init_to_mean(fallback=init_to_feasible)


def _check_init_loc_fn(init_loc_fn: Any, who: str) -> None:
    if not callable(init_loc_fn):
        raise TypeError(
            f"{who}: init_loc_fn must be an init strategy (a callable taking a site), "
            f"got {type(init_loc_fn).__name__}"
        )


def _active_frames() -> list:
    """The vectorized plates entered now, outermost first."""
    return [
        h._frame
        for h in get_stack()
        if isinstance(h, PlateMessenger) and h._frame is not None and h._frame.dim is not None
    ]


def _event_dim(fn: Any) -> int:
    return len(fn.event_shape)


def _check_names(value: Any, arg: str, who: str, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{who}: {arg} must be a list or tuple of names, got {value!r}")
    value = tuple(value)
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"{who}: {arg} must contain only site/plate names (str), got {value!r}")
    return value


class AutoMessenger(GuideMessenger, PyroModule):
    """Base class of the effect-based autoguides (Pyro's ``AutoMessenger``).

    Subclasses define :meth:`get_posterior`. Calling the guide with the model's arguments
    runs the model with every latent site drawn from ``get_posterior(name, prior)`` and
    returns ``{name: value}`` for every sample site of the model (latent, observed and
    deterministic), as Pyro's does.

    :param model: the model.
    :param amortized_plates: names of plates over which the guide's parameters are shared
        (one value for all items, rather than one per item).

    Inside :meth:`get_posterior`: ``self.upstream_value(name)`` is the value of an earlier
    site of this run, ``self.trace`` the trace of the sites so far, and
    ``self.args_kwargs`` the model's arguments.
    """

    def __init__(self, model: Callable, *, amortized_plates: Iterable[str] = ()):
        who = type(self).__name__
        if not callable(model):
            raise TypeError(f"{who}: model must be callable, got {type(model).__name__}")
        amortized_plates = _check_names(amortized_plates, "amortized_plates", who)
        # Pyro names these parameters "locs.<site>", without a prefix.
        PyroModule.__init__(self)
        GuideMessenger.__init__(self, model)
        self.amortized_plates = amortized_plates
        self._outer_plates: tuple[str, ...] = ()

    # nn.Module's call (hooks, PyroModule's parameter context), not the handler's.
    __call__ = PyroModule.__call__

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the model with the latent sites drawn from the posterior.

        Returns ``{name: value}`` for every sample site of the model.
        """
        # Plates outside the model (particles, Predictive's samples) must not size the
        # parameters created lazily here.
        self._outer_plates = tuple(f.name for f in _active_frames())
        try:
            return GuideMessenger.forward(self, *args, **kwargs)
        finally:
            self._outer_plates = ()

    # -- parameter initialization -------------------------------------------------------------
    @torch.no_grad()
    def _adjust_plates(self, value: torch.Tensor, event_dim: int) -> torch.Tensor:
        """``value`` (at the current plates) as an initial parameter: full plate size, no
        particle dims, one entry along amortized plates."""
        for frame in _active_frames():
            dim = frame.dim - event_dim
            if frame.name in self._outer_plates or frame.name in self.amortized_plates:
                if -value.dim() <= dim:
                    value = value.mean(dim, keepdim=True)
            elif frame.size != frame.full_size and -value.dim() <= dim:
                value = _repeat_to(value, frame.full_size, dim)
        # Dims left of every plate are dropped; the plates broadcast the parameter.
        while value.dim() > event_dim and value.size(0) == 1:
            value = value.squeeze(0)
        return value.contiguous()

    def _init_unconstrained(self, name: str, prior: Any, transform: Any) -> torch.Tensor:
        """``init_loc_fn``'s value for the site, unconstrained and sized for the parameter."""
        site = Message("sample", name, prior)
        with torch.no_grad():
            constrained = self.init_loc_fn(site).detach()
            unconstrained = transform.inv(constrained)
        return self._adjust_plates(unconstrained, transform.domain.event_dim)

    def _loc_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``locs.<name>`` and ``scales.<name>`` (AttributeError before they exist)."""
        return attrgetter(name)(self.locs), attrgetter(name)(self.scales)

    def _new_loc_scale(
        self, name: str, init_loc: torch.Tensor, event_dim: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Create ``locs.<name>`` at ``init_loc`` and ``scales.<name>`` at ``init_scale``."""
        init_scale = torch.full_like(init_loc, self._init_scale)
        deep_setattr(self, "locs." + name, PyroParam(init_loc, constraints.real, event_dim))
        deep_setattr(self, "scales." + name, PyroParam(init_scale, constraints.positive, event_dim))
        return self._loc_scale(name)

    def _transform(self, name: str, prior: Any) -> Any:
        with helpful_support_errors({"name": name, "fn": prior}, type(self).__name__):
            return biject_to(prior.support)


def _init_loc_scale_guide(
    guide: AutoMessenger,
    model: Callable,
    init_loc_fn: Callable,
    init_scale: float,
    amortized_plates: Iterable[str],
) -> None:
    """The constructor shared by the guides with a ``loc`` and a ``scale`` per site."""
    init_scale = check_init_scale(init_scale, type(guide).__name__)
    _check_init_loc_fn(init_loc_fn, type(guide).__name__)
    AutoMessenger.__init__(guide, model, amortized_plates=amortized_plates)
    guide.init_loc_fn = init_loc_fn
    guide._init_scale = init_scale


def _posterior(loc: torch.Tensor, scale: torch.Tensor, transform: Any) -> Any:
    base = Normal(loc, scale).to_event(transform.domain.event_dim)
    parts = _parts(transform)
    if not parts:
        # A real site: the Normal itself, so TraceMeanField_ELBO finds the analytic KL.
        return base
    return TransformedDistribution(base, [t.with_cache(1) for t in parts])


class AutoNormalMessenger(AutoMessenger):
    """Mean-field Normal posterior in unconstrained space (Pyro's ``AutoNormalMessenger``).

    At each latent site the posterior is ``Normal(loc, scale)`` pushed through
    ``biject_to(prior.support)``; it matches :class:`~vitorch.infer.autoguide.AutoNormal`
    but, built from the model's own run, can be customized per site by overriding
    :meth:`get_posterior`.

    :param model: the model.
    :param init_loc_fn: per-site initialization of ``loc`` (default: prior mean, else a
        feasible point).
    :param init_scale: initial ``scale`` of every site in unconstrained space (> 0).
    :param amortized_plates: see :class:`AutoMessenger`.

    Parameters: ``guide.locs.<site>`` and ``guide.scales.<site>`` (positive), named
    ``locs.<site>`` / ``scales.<site>`` in the param store.
    """

    # Set by median() for the duration of its run of the model.
    _computing_median = False

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = _INIT_TO_MEAN,
        init_scale: float = 0.1,
        amortized_plates: Iterable[str] = (),
    ):
        _init_loc_scale_guide(self, model, init_loc_fn, init_scale, amortized_plates)

    def get_posterior(self, name: str, prior: Any) -> Any:
        """``Normal(locs.<name>, scales.<name>)`` pushed into the prior's support."""
        transform = self._transform(name, prior)
        loc, scale = self._get_params(name, prior)
        if self._computing_median:
            return transform(loc)
        return _posterior(loc, scale, transform)

    def _get_params(self, name: str, prior: Any) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self._loc_scale(name)
        except AttributeError:
            pass
        transform = self._transform(name, prior)
        init_loc = self._init_unconstrained(name, prior, transform)
        return self._new_loc_scale(name, init_loc, transform.domain.event_dim)

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the model with each latent site at its posterior median, in order.

        Returns ``{name: value}`` for every sample site, like a call of the guide.
        """
        self._computing_median = True
        try:
            return self(*args, **kwargs)
        finally:
            self._computing_median = False


class AutoHierarchicalNormalMessenger(AutoNormalMessenger):
    """Normal posterior whose mean follows the prior mean given the upstream draws.

    Pyro's ``AutoHierarchicalNormalMessenger``: at a hierarchical site the unconstrained
    posterior is ``Normal(loc + weight * transform.inv(prior.mean), scale)`` with
    ``transform = biject_to(prior.support)`` and a learned positive ``weight`` per element,
    so the posterior moves with the values of the sites the prior depends on. Sites not
    in ``hierarchical_sites`` get the mean-field posterior of :class:`AutoNormalMessenger`.

    :param init_weight: initial ``weight``.
    :param hierarchical_sites: the sites to treat this way (None: all of them).

    Parameters: as :class:`AutoNormalMessenger`, plus ``weights.<site>``. ``loc`` starts at
    ``init - init_weight * transform.inv(prior.mean)``, so the first posterior mean is the
    initial value.
    """

    # Pyro's class attribute: "element-wise" (a weight per element) or "scalar".
    weight_type = "element-wise"

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = _INIT_TO_MEAN,
        init_scale: float = 0.1,
        amortized_plates: Iterable[str] = (),
        init_weight: float = 1.0,
        hierarchical_sites: Iterable[str] | None = None,
    ):
        who = type(self).__name__
        if (
            isinstance(init_weight, bool)
            or not isinstance(init_weight, (int, float))
            or not 0 < init_weight < float("inf")
        ):
            raise ValueError(f"{who}: init_weight must be a number > 0, got {init_weight!r}")
        hierarchical_sites = _check_names(hierarchical_sites, "hierarchical_sites", who, True)
        super().__init__(
            model,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            amortized_plates=amortized_plates,
        )
        self._init_weight = float(init_weight)
        self._hierarchical_sites = hierarchical_sites

    def _is_hierarchical(self, name: str) -> bool:
        return self._hierarchical_sites is None or name in self._hierarchical_sites

    def get_posterior(self, name: str, prior: Any) -> Any:
        """The Normal with mean ``loc + weight * transform.inv(prior.mean)``, transformed."""
        if not self._is_hierarchical(name):
            return super().get_posterior(name, prior)
        transform = self._transform(name, prior)
        loc, scale, weight = self._get_hier_params(name, prior, transform)
        loc = loc + transform.inv(prior.mean) * weight
        if self._computing_median:
            return transform(loc)
        return _posterior(loc, scale, transform)

    def _get_hier_params(self, name: str, prior: Any, transform: Any) -> tuple:
        try:
            return (*self._loc_scale(name), attrgetter(name)(self.weights))
        except AttributeError:
            pass
        if self.weight_type not in ("element-wise", "scalar"):
            raise ValueError(
                f"{type(self).__name__}.weight_type must be 'element-wise' or 'scalar', got "
                f"{self.weight_type!r}"
            )
        event_dim = transform.domain.event_dim
        init_loc = self._init_unconstrained(name, prior, transform)
        with torch.no_grad():
            prior_mean = self._adjust_plates(transform.inv(prior.mean.detach()), event_dim)
        if self.weight_type == "scalar":
            init_weight = torch.full((), self._init_weight)
            weight_event_dim = None
        else:
            init_weight = torch.full_like(init_loc, self._init_weight)
            weight_event_dim = event_dim
        self._new_loc_scale(name, init_loc - init_weight * prior_mean, event_dim)
        deep_setattr(
            self,
            "weights." + name,
            PyroParam(init_weight, constraints.positive, weight_event_dim),
        )
        return self._get_hier_params(name, prior, transform)


class AutoRegressiveMessenger(AutoMessenger):
    """The prior, affinely transformed in unconstrained space (Pyro's
    ``AutoRegressiveMessenger``).

    At each site the posterior is the prior (at the upstream draws) mapped to
    unconstrained space, scaled by ``scales.<site>`` and shifted by ``locs.<site>``, and
    mapped back. It starts as ``init_scale * prior + (1 - init_scale) * init``.
    """

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = _INIT_TO_MEAN,
        init_scale: float = 0.1,
        amortized_plates: Iterable[str] = (),
    ):
        _init_loc_scale_guide(self, model, init_loc_fn, init_scale, amortized_plates)

    def get_posterior(self, name: str, prior: Any) -> Any:
        """``prior`` pushed through ``inv(t)``, ``x -> loc + scale * x`` and ``t``."""
        transform = self._transform(name, prior)
        loc, scale = self._get_params(name, prior, transform)
        affine = AffineTransform(loc, scale, event_dim=transform.domain.event_dim, cache_size=1)
        return TransformedDistribution(
            prior, [transform.inv.with_cache(1), affine, transform.with_cache(1)]
        )

    def _get_params(self, name: str, prior: Any, transform: Any) -> tuple:
        try:
            return self._loc_scale(name)
        except AttributeError:
            pass
        init_loc = self._init_unconstrained(name, prior, transform) * (1 - self._init_scale)
        return self._new_loc_scale(name, init_loc, transform.domain.event_dim)
