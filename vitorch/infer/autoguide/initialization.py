"""Where an autoguide starts: per-site initialization strategies.

An initialization strategy is a function ``init_fn(site) -> value`` that takes the message
of one latent sample site of the model (``site["name"]``, ``site["fn"]`` ...) and returns a
*constrained* initial value of the site's shape. Strategies with options return a strategy
when called without a site: ``init_to_median(num_samples=31)`` is itself an ``init_fn``.

:class:`InitMessenger` runs a model with every latent site set by such a function; an
autoguide traces its model under it once, and the values it records become the guide's
initial parameters.

Example:
    >>> import torch, vitorch
    >>> import vitorch.distributions as dist
    >>> from vitorch.infer.autoguide.initialization import InitMessenger, init_to_mean
    >>> def model():
    ...     return vitorch.sample("x", dist.Normal(3.0, 1.0))
    >>> InitMessenger(init_to_mean)(model)()
    tensor(3.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributions import Independent, transform_to

from ...distributions.masked import MaskedDistribution
from ...runtime import Message, Messenger

__all__ = [
    "InitMessenger",
    "helpful_support_errors",
    "init_to_feasible",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
]

InitFn = Callable[[Any], torch.Tensor]


@contextmanager
def helpful_support_errors(site: Any, who: str = "an autoguide") -> Iterator[None]:
    """Turn 'no transform for this support' into an error that names the site and a fix."""
    try:
        yield
    except NotImplementedError:
        fn = site["fn"]
        name = site["name"]
        try:
            support = fn.support
        except NotImplementedError:
            support = None
        if support is not None and support.is_discrete:
            raise ValueError(
                f"{who} cannot handle the discrete sample site {name!r} (support {support}): "
                f"continuous guides have no density over it. Marginalize it out of the model "
                f"by hand, or hide it from this guide with "
                f"vitorch.poutine.block(model, hide=[{name!r}]) and give it its own guide in "
                f"an AutoGuideList."
            ) from None
        raise ValueError(
            f"{who} cannot handle sample site {name!r}: its support {support} has no "
            f"bijection to unconstrained space (biject_to has no transform registered for "
            f"{type(support).__name__}). Register one with "
            f"vitorch.distributions.biject_to.register, or hide the site from this guide "
            f"with vitorch.poutine.block(model, hide=[{name!r}])."
        ) from None


def _is_multivariate(fn: Any) -> bool:
    while isinstance(fn, (Independent, MaskedDistribution)):
        fn = fn.base_dist
    return any(size > 1 for size in fn.event_shape)


def _usable(site: Any, value: torch.Tensor) -> bool:
    """A finite value inside the support (the checks a strategy needs before trusting it)."""
    if not bool(torch.isfinite(value).all()):
        return False
    try:
        return bool(site["fn"].support.check(value).all())
    except NotImplementedError:
        return True


def _check_fallback(fallback: Any) -> None:
    if fallback is not None and not callable(fallback):
        raise TypeError(
            f"fallback must be an init strategy (a callable taking a site) or None, "
            f"got {type(fallback).__name__}"
        )


def _no_strategy(site: Any) -> ValueError:
    return ValueError(
        f"no initial value for sample site {site['name']!r}: its strategy failed and fallback=None"
    )


def init_to_feasible(site: Any = None) -> Any:
    """Some point in the support that ignores the distribution's parameters.

    It is the image of zero under ``transform_to(support)``: 0 for reals, 1 for positive
    values, 1/2 on the unit interval, the centre of the simplex, the identity matrix.
    """
    if site is None:
        return init_to_feasible
    fn = site["fn"]
    t = transform_to(fn.support)
    value = fn.sample().detach()
    return t(torch.zeros_like(t.inv(value)))


def init_to_sample(site: Any = None) -> Any:
    """A draw from the prior."""
    if site is None:
        return init_to_sample
    return site["fn"].sample().detach()


def init_to_median(
    site: Any = None, num_samples: int = 15, *, fallback: InitFn | None = init_to_feasible
) -> Any:
    """The median of ``num_samples`` prior draws; ``fallback`` where that fails.

    Multivariate sites (event size above one) have no median and go to ``fallback`` too.
    """
    if site is None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"init_to_median: num_samples must be a positive int, got {num_samples!r}"
            )
        _check_fallback(fallback)
        return functools.partial(init_to_median, num_samples=num_samples, fallback=fallback)
    fn = site["fn"]
    if not _is_multivariate(fn):
        try:
            value = fn.sample((num_samples,)).median(dim=0).values.detach()
        except (RuntimeError, ValueError, NotImplementedError):
            value = None
        if value is not None and _usable(site, value):
            return value
    if fallback is None:
        raise _no_strategy(site)
    return fallback(site)


def init_to_mean(site: Any = None, *, fallback: InitFn | None = init_to_median) -> Any:
    """The prior mean; ``fallback`` where it is undefined or infinite (e.g. a Cauchy)."""
    if site is None:
        _check_fallback(fallback)
        return functools.partial(init_to_mean, fallback=fallback)
    try:
        value = site["fn"].mean.detach()
    except (NotImplementedError, ValueError, RuntimeError):
        value = None
    if value is not None and _usable(site, value):
        return value
    if fallback is None:
        raise _no_strategy(site)
    return fallback(site)


def init_to_uniform(site: Any = None, radius: float = 2.0) -> Any:
    """Uniform in ``(-radius, radius)`` in unconstrained space, mapped to the support."""
    if site is None:
        if (
            isinstance(radius, bool)
            or not isinstance(radius, (int, float))
            or not (0 < radius < math.inf)
        ):
            raise ValueError(f"init_to_uniform: radius must be a positive number, got {radius!r}")
        return functools.partial(init_to_uniform, radius=float(radius))
    fn = site["fn"]
    t = transform_to(fn.support)
    unconstrained = t.inv(fn.sample().detach())
    return t(torch.rand_like(unconstrained) * (2 * radius) - radius)


def init_to_value(
    site: Any = None,
    values: dict[str, torch.Tensor] | None = None,
    *,
    fallback: InitFn | None = init_to_uniform,
) -> Any:
    """The value given for the site in ``values`` (constrained); ``fallback`` for the rest.

    Example:
        >>> import torch
        >>> init_fn = init_to_value(values={"loc": torch.tensor(2.0)})
    """
    values = {} if values is None else values
    if site is None:
        if not isinstance(values, dict):
            raise TypeError(
                f"init_to_value: values must be a dict from site name to tensor, "
                f"got {type(values).__name__}"
            )
        _check_fallback(fallback)
        return functools.partial(init_to_value, values=values, fallback=fallback)
    name = site["name"]
    if name in values:
        value = values[name]
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if fallback is None:
        raise ValueError(
            f"init_to_value: no value given for sample site {name!r} and fallback=None "
            f"(values has {sorted(values)})"
        )
    return fallback(site)


class InitMessenger(Messenger):
    """Set every latent sample site that has no value yet to ``init_fn(site)``.

    The value is checked once, here: it must be a tensor that broadcasts to the site's
    shape (it is expanded to it) and lies in the site's support, else a ``ValueError``
    names the site.
    """

    def __init__(self, init_fn: InitFn, fn: Callable | None = None, who: str = "an autoguide"):
        if not callable(init_fn):
            raise TypeError(
                f"init_loc_fn must be a callable taking a site (e.g. init_to_median), "
                f"got {type(init_fn).__name__}"
            )
        super().__init__(fn)
        self.init_fn = init_fn
        self.who = who

    def _pyro_sample(self, msg: Message) -> None:
        if msg.value is not None or getattr(msg.fn, "_is_subsample", False):
            return
        with torch.no_grad(), helpful_support_errors(msg, self.who):
            value = self.init_fn(msg)
        msg.value = _checked(msg, value, self.init_fn)


def _checked(msg: Message, value: Any, init_fn: Any) -> torch.Tensor:
    name = getattr(init_fn, "__name__", None) or getattr(
        getattr(init_fn, "func", None), "__name__", repr(init_fn)
    )
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} returned {type(value).__name__} for sample site {msg.name!r}; "
            f"an init strategy must return a tensor"
        )
    fn = msg.fn
    shape = fn.batch_shape + fn.event_shape
    if value.shape != shape:
        try:
            value = value.expand(shape)
        except RuntimeError:
            raise ValueError(
                f"{name} gave sample site {msg.name!r} a value of shape {tuple(value.shape)}; "
                f"the site has shape {tuple(shape)}"
            ) from None
    if not _usable(msg, value):
        raise ValueError(
            f"{name} gave sample site {msg.name!r} a value outside its support "
            f"{fn.support} (or not finite): {value}"
        )
    return value.detach()
