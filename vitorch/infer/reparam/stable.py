"""Auxiliary-variable reparameterizers for ``Stable`` sites, whose density is costly.

All three draw the stable variable by the Chambers-Mallows-Stuck (CMS) transform of
parameter-free noise ``u ~ Uniform(-pi/2, pi/2)``, ``e ~ Exponential(1)``:

- :class:`LatentStableReparam`: the site is the CMS transform itself (latent sites).
- :class:`SymmetricStableReparam`: a symmetric stable variable is a Gaussian scale mixture,
  ``X = loc + scale * sqrt(2 A) * G`` with ``A`` totally skewed stable of index
  ``alpha / 2`` (Samorodnitsky and Taqqu 1994, Prop. 1.3.1); the site stays a Normal
  given ``A``, so it may be observed.
- :class:`StableReparam`: any stable variable is a symmetric one plus an independent
  totally skewed one (Zolotarev 1986, Property 2.3.a); the skewed part is drawn by CMS,
  the symmetric part as above, so the site is again a Normal given the noise.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...distributions import Exponential, Normal, Stable, StableWithLogProb, Uniform
from ...distributions.stable import _s1_shift, _standard_s0
from .reparam import Reparam, ReparamMessage, ReparamResult

__all__ = ["LatentStableReparam", "StableReparam", "SymmetricStableReparam"]


def _check_stable(who: str, name: str, fn: Any) -> None:
    if not isinstance(fn, Stable) or isinstance(fn, StableWithLogProb):
        raise ValueError(
            f"{who} at site {name!r}: expected a Stable distribution (not StableWithLogProb, "
            f"optionally wrapped in Independent), got {type(fn).__name__}"
        )


def _noise(reparam: Reparam, prefix: str, fn: Any, event_dim: int) -> tuple:
    """Sample ``{prefix}_uniform ~ U(-pi/2, pi/2)`` and ``{prefix}_exponential ~ Exp(1)``."""
    proto = fn.stability
    half_pi = torch.full_like(proto, math.pi / 2)
    u = reparam._sample_aux(
        f"{prefix}_uniform", reparam._wrap(Uniform(-half_pi, half_pi), event_dim), None, False
    )
    e = reparam._sample_aux(
        f"{prefix}_exponential",
        reparam._wrap(Exponential(torch.ones_like(proto)), event_dim),
        None,
        False,
    )
    return u, e


def _mixing(alpha: torch.Tensor, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``A >= 0`` with ``sqrt(2 A) G ~ S0(alpha, 0, 1, 0)`` for ``G ~ N(0, 1)``.

    ``A = cos(pi alpha / 4) ** (2 / alpha) * Z`` with ``Z`` totally skewed stable of index
    ``a = alpha / 2`` in the classic parameterization; written out, the CMS transform of
    ``Z`` loses its ``tan(pi a / 2)`` factors, so ``A`` is exact up to ``alpha == 2``
    (where it is 1).
    """
    a = alpha / 2
    tilt = a * (u + math.pi / 2)
    eps = torch.finfo(u.dtype).eps
    tail = ((u - tilt).cos().clamp(min=eps) / e).pow((1 - a) / a)
    return tilt.sin() / u.cos().clamp(min=eps).pow(1 / a) * tail


def _skew_shift(alpha: torch.Tensor, skew: torch.Tensor, skew_abs: torch.Tensor) -> torch.Tensor:
    """``(sign(skew) |skew| ** (1 / alpha) - skew) tan(pi alpha / 2)``, continuous at 1.

    With ``d = alpha - 1`` and ``L = log|skew|`` the product is
    ``skew (L / alpha) E(-d L / alpha) (2 / pi) cos(pi d / 2) / sinc(d / 2)``, ``E(x) =
    expm1(x) / x``, a form without the 0 * inf of the original at ``alpha == 1``.
    """
    log_abs = skew_abs.log()
    x = -(alpha - 1) * log_abs / alpha
    small = x.abs() < 1e-6
    x_safe = torch.where(small, torch.ones_like(x), x)
    expm1_ratio = torch.where(small, 1 + x / 2, torch.expm1(x_safe) / x_safe)
    d = alpha - 1
    return (
        skew
        * (log_abs / alpha)
        * expm1_ratio
        * (2 / math.pi)
        * (math.pi / 2 * d).cos()
        / torch.sinc(d / 2)
    )


class LatentStableReparam(Reparam):
    """Reparameterize a latent ``Stable`` site as the CMS transform of the auxiliary sites
    ``{name}_uniform`` and ``{name}_exponential``, which have simple densities.

    Latent sites only (see :class:`StableReparam` for observed ones).
    """

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample the noise and return the site as its CMS transform."""
        name = msg["name"]
        fn, event_dim = self._unwrap(msg["fn"])
        _check_stable("LatentStableReparam", name, fn)
        if msg["is_observed"]:
            raise NotImplementedError(
                f"LatentStableReparam at site {name!r}: observed sites are not supported; "
                f"use StableReparam or SymmetricStableReparam"
            )
        u, e = _noise(self, name, fn, event_dim)
        z = _standard_s0(fn.stability, fn.skew, u, e)
        if fn.coords == "S":
            z = z + _s1_shift(fn.stability, fn.skew)
        return self._deterministic_result(fn.loc + fn.scale * z, event_dim)


class SymmetricStableReparam(Reparam):
    """Reparameterize a symmetric (``skew == 0``) ``Stable`` site as a Normal whose variance
    is drawn from the auxiliary sites ``{name}_uniform`` and ``{name}_exponential``.

    The site keeps its value and may be observed.
    """

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample the mixing noise and return the site as the conditional Normal."""
        name = msg["name"]
        fn, event_dim = self._unwrap(msg["fn"])
        _check_stable("SymmetricStableReparam", name, fn)
        if not bool((fn.skew == 0).all()):
            raise ValueError(
                f"SymmetricStableReparam at site {name!r}: expected skew == 0, got skew "
                f"{fn.skew.detach().unique().tolist()}; use StableReparam"
            )
        u, e = _noise(self, name, fn, event_dim)
        a = _mixing(fn.stability, u, e)
        scale = (fn.scale * (2 * a).sqrt()).clamp(min=torch.finfo(a.dtype).tiny)
        new_fn = self._wrap(Normal(fn.loc, scale), event_dim)
        return {"fn": new_fn, "value": msg["value"], "is_observed": msg["is_observed"]}


class StableReparam(Reparam):
    """Reparameterize any ``Stable`` site (``coords="S0"``) as a Normal given four auxiliary
    sites: ``{name}_z_uniform``, ``{name}_z_exponential`` (the symmetric part's variance)
    and ``{name}_t_uniform``, ``{name}_t_exponential`` (the totally skewed part).

    With ``s = scale`` and ``b = skew``: ``X = loc + s (S + sign(b) |b| ** (1/alpha) T +
    shift)``, ``S ~ S0(alpha, 0, (1 - |b|) ** (1/alpha))`` and ``T ~ S0(alpha, 1, 1)``.
    The site keeps its value and may be observed.
    """

    def apply(self, msg: ReparamMessage) -> ReparamResult:
        """Sample the noise and return the site as the conditional Normal."""
        name = msg["name"]
        fn, event_dim = self._unwrap(msg["fn"])
        _check_stable("StableReparam", name, fn)
        if fn.coords != "S0":
            raise ValueError(
                f"StableReparam at site {name!r}: expected coords='S0', got {fn.coords!r}"
            )
        zu, ze = _noise(self, f"{name}_z", fn, event_dim)
        tu, te = _noise(self, f"{name}_t", fn, event_dim)

        alpha, skew = fn.stability, fn.skew
        eps = torch.finfo(alpha.dtype).eps
        skew_abs = skew.abs().clamp(min=eps, max=1 - eps)
        t_scale = skew_abs.pow(1 / alpha)
        s_scale = (1 - skew_abs).pow(1 / alpha)
        t = _standard_s0(alpha, torch.ones_like(alpha), tu, te)
        shift = _skew_shift(alpha, skew, skew_abs)
        loc = fn.loc + fn.scale * (skew.sign() * t_scale * t + shift)
        a = _mixing(alpha, zu, ze)
        scale = (fn.scale * s_scale * (2 * a).sqrt()).clamp(min=torch.finfo(a.dtype).tiny)
        new_fn = self._wrap(Normal(loc, scale), event_dim)
        return {"fn": new_fn, "value": msg["value"], "is_observed": msg["is_observed"]}
