"""KL divergences: torch's registry plus the pairs vitorch's own types need.

:func:`kl_divergence` and :func:`register_kl` are torch's own, so every pair
torch knows (Normal/Normal, MultivariateNormal/MultivariateNormal, ...) works
for vitorch's subclasses too: torch dispatches on the most specific
registered pair along both classes' MROs. Added here:

- ``Delta`` against anything: ``log_density - q.log_prob(v)``.
- ``MaskedDistribution`` on either side: the base KL, zero where masked out.
- ``Independent`` against ``Independent`` when the two wrap their bases a
  different number of times (``Normal.to_event(2)`` vs
  ``Normal.to_event(1).to_event(1)``), which torch refuses.
- ``Independent(Normal)`` against ``Normal`` (either order): the Normal's
  rightmost batch dims are read as the matching event dims.
- ``MultivariateNormal`` against ``Independent(Normal, 1)`` (either order).

Example:
    >>> import torch
    >>> from vitorch.distributions import Normal
    >>> p = Normal(torch.zeros(3), 1.0).to_event(1)
    >>> q = Normal(torch.zeros(3), 1.0)
    >>> kl_divergence(p, q)
    tensor(0.)
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution
from torch.distributions.kl import kl_divergence, register_kl

from .delta import Delta
from .masked import MaskedDistribution
from .torch import Independent, MultivariateNormal
from .util import sum_rightmost

__all__ = ["kl_divergence", "register_kl"]


@register_kl(Delta, Distribution)
def _kl_delta_any(p: Delta, q: Distribution) -> torch.Tensor:
    return p.log_density - q.log_prob(p.v)


def _masked_kl(p: Distribution, q: Distribution, mask: torch.Tensor | bool) -> torch.Tensor:
    if mask is True:
        return kl_divergence(p, q)
    if mask is False:
        shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
        return torch.zeros(shape)
    kl = kl_divergence(p, q)
    return torch.where(mask, kl, kl.new_zeros(()))


def _combine_masks(a: torch.Tensor | bool, b: torch.Tensor | bool) -> torch.Tensor | bool:
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    return a & b


@register_kl(MaskedDistribution, MaskedDistribution)
def _kl_masked_masked(p: MaskedDistribution, q: MaskedDistribution) -> torch.Tensor:
    return _masked_kl(p.base_dist, q.base_dist, _combine_masks(p._mask, q._mask))


@register_kl(MaskedDistribution, Distribution)
def _kl_masked_any(p: MaskedDistribution, q: Distribution) -> torch.Tensor:
    return _masked_kl(p.base_dist, q, p._mask)


@register_kl(Distribution, MaskedDistribution)
def _kl_any_masked(p: Distribution, q: MaskedDistribution) -> torch.Tensor:
    return _masked_kl(p, q.base_dist, q._mask)


# Without this pair, (Delta, Distribution) and (Distribution, MaskedDistribution)
# would tie and torch would warn and pick one.
@register_kl(Delta, MaskedDistribution)
def _kl_delta_masked(p: Delta, q: MaskedDistribution) -> torch.Tensor:
    return _masked_kl(p, q.base_dist, q._mask)


def _unwrap_independent(
    d: Distribution,
) -> tuple[Distribution, int]:
    """Strip nested ``Independent`` layers; return the base and the dims they added."""
    ndims = 0
    while isinstance(d, torch.distributions.Independent):
        ndims += d.reinterpreted_batch_ndims
        d = d.base_dist
    return d, ndims


def _check_event_shapes(p: Distribution, q: Distribution) -> None:
    if p.event_shape != q.event_shape:
        raise ValueError(
            "kl_divergence needs equal event shapes, got "
            f"{tuple(p.event_shape)} and {tuple(q.event_shape)}"
        )


@register_kl(Independent, Independent)
def _kl_independent_independent(p: Independent, q: Independent) -> torch.Tensor:
    _check_event_shapes(p, q)
    p_base, p_ndims = _unwrap_independent(p)
    q_base, q_ndims = _unwrap_independent(q)
    # Re-wrap the base with the larger event_dim's partner so both bases have
    # the same event dims, then sum out the dims that both wrappings added.
    shared = min(p_ndims, q_ndims)
    if p_ndims > shared:
        p_base = Independent(p_base, p_ndims - shared)
    if q_ndims > shared:
        q_base = Independent(q_base, q_ndims - shared)
    return sum_rightmost(kl_divergence(p_base, q_base), shared)


@register_kl(torch.distributions.Independent, torch.distributions.Normal)
def _kl_independent_normal(
    p: torch.distributions.Independent, q: torch.distributions.Normal
) -> torch.Tensor:
    p_base, ndims = _unwrap_independent(p)
    if not isinstance(p_base, torch.distributions.Normal):
        raise NotImplementedError(f"kl_divergence(Independent({type(p_base).__name__}), Normal)")
    return sum_rightmost(kl_divergence(p_base, q), ndims)


@register_kl(torch.distributions.Normal, torch.distributions.Independent)
def _kl_normal_independent(
    p: torch.distributions.Normal, q: torch.distributions.Independent
) -> torch.Tensor:
    q_base, ndims = _unwrap_independent(q)
    if not isinstance(q_base, torch.distributions.Normal):
        raise NotImplementedError(f"kl_divergence(Normal, Independent({type(q_base).__name__}))")
    return sum_rightmost(kl_divergence(p, q_base), ndims)


def _as_mvn(d: Independent) -> torch.distributions.MultivariateNormal:
    """``Independent(Normal, 1)`` as the equal ``MultivariateNormal``."""
    base, ndims = _unwrap_independent(d)
    if ndims != 1 or not isinstance(base, torch.distributions.Normal):
        raise NotImplementedError(
            "kl_divergence between MultivariateNormal and Independent needs "
            f"Independent(Normal, 1), got Independent({type(base).__name__}, {ndims})"
        )
    return MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale))


@register_kl(torch.distributions.MultivariateNormal, torch.distributions.Independent)
def _kl_mvn_independent(p: MultivariateNormal, q: Independent) -> torch.Tensor:
    _check_event_shapes(p, q)
    return kl_divergence(p, _as_mvn(q))


@register_kl(torch.distributions.Independent, torch.distributions.MultivariateNormal)
def _kl_independent_mvn(p: Independent, q: MultivariateNormal) -> torch.Tensor:
    _check_event_shapes(p, q)
    return kl_divergence(_as_mvn(p), q)
