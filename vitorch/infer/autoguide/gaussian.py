"""``AutoGaussian``: a joint Gaussian guide with the model's conditional independence.

Like :class:`~vitorch.infer.autoguide.AutoMultivariateNormal` the guide is one Gaussian over
all latent sites in unconstrained space (each site then scaled by ``scales.<site>`` and
shifted by ``locs.<site>``), but its *precision* is a sum of one small factor per sample
site of the model (observed sites with latent parents included): the factor of site ``d``
is ``prec_sqrt @ prec_sqrt^T`` over ``d`` and the latent sites ``d`` depends on in the
model, and ``prec_sqrt @ white_vec`` is its part of the information vector. The precision
thus has the sparsity of the posterior (the moral graph of the model), with one factor per
plate element rather than one dense block per plate. Plates along which an observed site's
parents are global are "broken": their elements become part of the factor's event.

Only Pyro's ``"dense"`` backend is provided: the factors are scattered into one dense
precision matrix, whose Cholesky factor gives the draw.

Parameters (Pyro's names): ``locs.<site>``, ``scales.<site>`` per latent site and
``white_vecs.<site>``, ``prec_sqrts.<site>`` per factor.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import ExitStack
from operator import attrgetter
from typing import Any

import torch

from ...distributions import constraints
from ...handlers.block import BlockMessenger
from ...handlers.trace import TraceMessenger
from ...nn.module import PyroModule, PyroParam
from ...poutine.runtime import get_mask
from ...primitives import sample
from ..inspect import get_dependencies, is_sample_site
from . import dists
from .base import AutoGuide, _Latent, check_init_scale, deep_setattr, enter_plates
from .initialization import InitMessenger, init_to_feasible

__all__ = ["AutoGaussian"]


def _plates_to_shape(plates: frozenset) -> torch.Size:
    """The batch shape that the plates ``plates`` (vectorized frames) give a site."""
    shape = [1] * max([0] + [-f.dim for f in plates])
    for f in plates:
        shape[f.dim] = f.size
    return torch.Size(shape)


def _break_plates(x: torch.Tensor, all_plates: frozenset, kept: frozenset) -> torch.Tensor:
    """Move the plates of ``x`` (batch ``all_plates``, one event dim) that are not ``kept``
    into its event dim: the result has batch shape ``_plates_to_shape(all & kept)``."""
    kept = kept & all_plates
    broken = all_plates - kept
    if not broken:
        return x
    batch_dims = x.dim() - 1
    broken_axes = sorted(batch_dims + f.dim for f in broken)
    kept_axes = [a for a in range(batch_dims) if a not in broken_axes]
    x = x.permute(kept_axes + broken_axes + [batch_dims])
    return x.reshape(_plates_to_shape(kept) + (-1,))


def _precision_to_scale_tril(precision: torch.Tensor) -> torch.Tensor:
    """The lower-triangular ``L`` with ``L @ L^T = inverse(precision)``.

    With ``J`` the reversal of the coordinates, ``J P J = C C^T`` (Cholesky) gives
    ``P = U U^T`` with ``U = J C J`` upper triangular, so ``inverse(P) = U^-T U^-1`` and
    ``L = U^-T`` is lower triangular.
    """
    chol = torch.linalg.cholesky(precision.flip(-2, -1))
    upper_t = chol.flip(-2, -1).transpose(-2, -1)  # U^T, lower triangular
    eye = torch.eye(precision.size(-1), dtype=precision.dtype, device=precision.device)
    return torch.linalg.solve_triangular(upper_t, eye, upper=False)


class _Factor:
    """One sample site's Gaussian factor: its plates and the sites it couples."""

    __slots__ = ("name", "plates", "upstreams", "event_numel", "is_observed")

    def __init__(self, name: str, plates: frozenset, upstreams: list, numel: int, observed: bool):
        self.name = name
        self.plates = plates
        self.upstreams = upstreams
        self.event_numel = numel
        self.is_observed = observed


class AutoGaussian(AutoGuide):
    """A Gaussian guide whose precision has the model's conditional independence structure.

    ``AutoGaussian(model)`` is an :class:`AutoGaussianDense` (the only backend here).

    :param model: the model; every latent site must have a continuous support and the
        batch shape its plates give it (use ``.to_event()`` for the other dims).
    :param init_loc_fn: per-site initialization of ``locs``.
    :param init_scale: initial ``scale`` of every site in unconstrained space (> 0).
    :param backend: ``"dense"``. Pyro's ``"funsor"`` backend is not supported.

    Example:
        >>> import torch, vitorch, vitorch.distributions as dist
        >>> def model():
        ...     x = vitorch.sample("x", dist.Normal(0.0, 1.0))
        ...     vitorch.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(0.5))
        >>> guide = AutoGaussian(model)
        >>> sorted(guide())
        ['x']
        >>> guide.prec_sqrts.y.shape  # the observation's factor couples x with itself
        torch.Size([1, 1])
    """

    scale_constraint = constraints.softplus_positive

    def __new__(cls, *args: Any, backend: str = "dense", **kwargs: Any) -> AutoGaussian:
        if cls is AutoGaussian:
            if backend == "funsor":
                raise NotImplementedError(
                    'AutoGaussian(..., backend="funsor") is not supported: vitorch has no '
                    'funsor backend; use backend="dense" (the default)'
                )
            if backend != "dense":
                raise ValueError(
                    f"AutoGaussian: backend must be 'dense' (or Pyro's 'funsor', which vitorch "
                    f"does not support), got {backend!r}"
                )
            cls = AutoGaussianDense
        return super().__new__(cls)

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        backend: str = "dense",
    ):
        init_scale = check_init_scale(init_scale, "AutoGaussian")
        super().__init__(model)
        self.init_loc_fn = init_loc_fn
        self._init_scale = init_scale

    # -- setup -------------------------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        self._args = (args, kwargs)
        try:
            super()._setup_prototype(*args, **kwargs)
        finally:
            del self._args

    def _trace_all_sites(self) -> dict[str, Any]:
        """The model's sample sites, observed ones included (latents at their init values)."""
        args, kwargs = self._args
        model = InitMessenger(self.init_loc_fn, self.model, who=type(self).__name__)
        with torch.no_grad(), BlockMessenger():
            tr = TraceMessenger(model).get_trace(*args, **kwargs)
        return {name: site for name, site in tr.nodes.items() if is_sample_site(site)}

    def _setup_params(self) -> None:
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        if not latents:
            raise ValueError(
                "AutoGaussian found no latent sample sites in the model; a model without "
                "latent variables needs no guide (use an empty function)"
            )
        args, kwargs = self._args
        with BlockMessenger():
            dependencies = get_dependencies(self.model, args, kwargs)["prior_dependencies"]
        self.locs = PyroModule()
        self.scales = PyroModule()
        self.white_vecs = PyroModule()
        self.prec_sqrts = PyroModule()
        self._factors: dict[str, _Factor] = {}
        for name, site in self._trace_all_sites().items():
            observed = name not in latents
            upstreams = [u for u in dependencies.get(name, {name: set()}) if u in latents]
            if observed and not upstreams:
                continue  # an observation of constants only: no factor
            self._factors[name] = self._make_factor(site, upstreams, observed)
        for name, latent in latents.items():
            if name not in self._factors:  # a latent point mass: a factor of its own
                self._factors[name] = self._make_factor(latent.site, [name], False)
            event_dim = latent.unconstrained_event_dim
            deep_setattr(self.locs, name, PyroParam(latent.init, constraints.real, event_dim))
            scale = torch.full_like(latent.init, self._init_scale)
            deep_setattr(self.scales, name, PyroParam(scale, self.scale_constraint, event_dim))
        like = next(iter(latents.values())).init
        for factor in self._factors.values():
            u_size = sum(self._broken_numel(u, factor) for u in factor.upstreams)
            d_size = factor.event_numel
            if factor.is_observed:
                d_size = min(d_size, u_size)  # the factor has rank <= u_size anyway
            batch_shape = _plates_to_shape(factor.plates)
            white_vec = like.new_zeros(batch_shape + (d_size,))
            # Small noise: an all-zero coupling would have a zero gradient.
            prec_sqrt = (torch.rand(batch_shape + (u_size, d_size)).to(like) - 0.5) * (
                self._init_scale
            )
            if not factor.is_observed:
                prec_sqrt.diagonal(dim1=-2, dim2=-1).fill_(1.0)  # the [d, d] block comes first
            deep_setattr(self.white_vecs, factor.name, PyroParam(white_vec, event_dim=1))
            deep_setattr(self.prec_sqrts, factor.name, PyroParam(prec_sqrt, event_dim=2))
        self._setup_dense()

    def _make_factor(self, site: Any, upstreams: list, observed: bool) -> _Factor:
        name = site.name
        who = type(self).__name__
        for frame in site.cond_indep_stack:
            if frame.dim is None:
                raise ValueError(
                    f"{who}: sample site {name!r} is inside the sequential plate {frame.name!r}; "
                    f"AutoGaussian needs vectorized plates (`with plate(...)`)"
                )
            if frame.size != frame.full_size:
                raise ValueError(
                    f"{who}: sample site {name!r} is in the subsampled plate {frame.name!r} "
                    f"(size {frame.full_size}, subsample size {frame.size}); AutoGaussian "
                    f"does not support subsampling"
                )
        plates = frozenset(site.cond_indep_stack)
        if site.fn.batch_shape != _plates_to_shape(plates):
            raise ValueError(
                f"{who}: sample site {name!r} has batch shape {tuple(site.fn.batch_shape)}, but "
                f"its plates give {tuple(_plates_to_shape(plates))}; are you missing a plate "
                f"or .to_event()?"
            )
        if observed:
            numel = site.fn.event_shape.numel()
            # Plates along which all of the site's parents are global become event dims.
            plates &= frozenset().union(*(self._factors[u].plates for u in upstreams))
            for frame in frozenset(site.cond_indep_stack) - plates:
                numel *= frame.size
        else:
            latent = self._latents[name]  # type: ignore[index]
            numel = latent.numel // _plates_to_shape(plates).numel()
        return _Factor(name, plates, upstreams, numel, observed)

    def _broken_numel(self, upstream: str, factor: _Factor) -> int:
        """How many entries of ``upstream`` one element of ``factor``'s plates touches."""
        up = self._factors[upstream]
        return _plates_to_shape(up.plates - factor.plates).numel() * up.event_numel

    def _sample(self, plates: dict, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
        aux = self._unflatten(self._sample_aux())
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        compute_density = get_mask() is not False
        result = {}
        for name, latent in latents.items():
            loc, scale = latent.get(self.locs), latent.get(self.scales)
            unconstrained = aux[name] * scale + loc
            log_density: Any = 0.0
            if compute_density:
                value, log_density = latent.constrain_with_log_density(unconstrained)
                log_scale = scale.log()
                if latent.unconstrained_event_dim:
                    log_scale = log_scale.flatten(-latent.unconstrained_event_dim).sum(-1)
                # Expanded over the particle dims that the draw has and the scales lack.
                log_density = (log_density - log_scale).expand(
                    unconstrained.shape[: unconstrained.dim() - latent.unconstrained_event_dim]
                )
            else:
                value = latent.constrain(unconstrained)
            with ExitStack() as stack:
                enter_plates(stack, plates, latent)
                result[name] = sample(name, dists.delta(value, log_density, latent.event_dim))
        return result

    def _sample_aux(self) -> torch.Tensor:
        """Draw the whitened latent vector, at the auxiliary site ``_<name>_latent``."""
        return sample(
            f"_{self._pyro_name}_latent", self.get_posterior(), infer={"is_auxiliary": True}
        )

    def _setup_dense(self) -> None:
        raise NotImplementedError

    def get_posterior(self) -> Any:
        """The joint Gaussian of the whitened latent vector (before scales and locs)."""
        raise NotImplementedError

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each latent site's (whitened, unscaled) unconstrained part of ``flat``."""
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        batch = flat.shape[:-1]
        result = {}
        for latent, piece in zip(latents.values(), flat.split(self._sizes, -1)):
            shape = torch.broadcast_shapes(
                latent.unconstrained_shape, batch + (1,) * latent.unconstrained_event_dim
            )
            result[latent.name] = piece.reshape(shape)
        return result

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The posterior median per site: the Gaussian's mean, scaled, shifted, constrained."""
        latents = self._require_setup(args, kwargs, "median")
        aux = self._unflatten(self.get_posterior().mean)
        return {
            name: latent.constrain(aux[name] * latent.get(self.scales) + latent.get(self.locs))
            for name, latent in latents.items()
        }


class AutoGaussianDense(AutoGaussian):
    """The dense backend of :class:`AutoGaussian`: all factors in one precision matrix.

    ``AutoGaussian(model)`` and ``AutoGaussian(model, backend="dense")`` make one.
    """

    def _setup_dense(self) -> None:
        """Where each factor's entries go in the dense information vector and precision."""
        latents: dict[str, _Latent] = self._latents  # type: ignore[assignment]
        self._sizes = [latent.numel for latent in latents.values()]
        size = sum(self._sizes)
        self._dense_size = size
        positions = {}
        for (name, latent), start in zip(latents.items(), itertools.accumulate([0] + self._sizes)):
            plates = self._factors[name].plates
            positions[name] = torch.arange(start, start + latent.numel).reshape(
                _plates_to_shape(plates) + (-1,)
            )
        self._scatter: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, factor in self._factors.items():
            prec_sqrt = attrgetter(name)(self.prec_sqrts)
            batch_shape, u_size = prec_sqrt.shape[:-2], prec_sqrt.size(-2)
            vec_index = torch.zeros(batch_shape + (u_size,), dtype=torch.long)
            mat_index = torch.zeros(batch_shape + (u_size, u_size), dtype=torch.long)
            blocks = []
            start = 0
            for u in factor.upstreams:
                index = _break_plates(positions[u], self._factors[u].plates, factor.plates)
                blocks.append((slice(start, start + index.size(-1)), index))
                start += index.size(-1)
            for rows, index in blocks:
                vec_index[..., rows] = index
            for (rows, i), (cols, j) in itertools.product(blocks, blocks):
                mat_index[..., rows, cols] = size * i.unsqueeze(-1) + j.unsqueeze(-2)
            self._scatter[name] = vec_index.reshape(-1), mat_index.reshape(-1)

    def get_posterior(self) -> Any:
        """The joint Gaussian (``MultivariateNormal``) of the whitened latent vector."""
        size = self._dense_size
        info_vec = precision = None
        for name, (vec_index, mat_index) in self._scatter.items():
            white_vec = attrgetter(name)(self.white_vecs)
            prec_sqrt = attrgetter(name)(self.prec_sqrts)
            if info_vec is None:
                info_vec = white_vec.new_zeros(size)
                precision = white_vec.new_zeros(size * size)
            part_vec = (prec_sqrt @ white_vec.unsqueeze(-1)).squeeze(-1)
            part_mat = prec_sqrt @ prec_sqrt.transpose(-1, -2)
            info_vec = info_vec.scatter_add(0, vec_index, part_vec.reshape(-1))
            precision = precision.scatter_add(0, mat_index, part_mat.reshape(-1))
        scale_tril = _precision_to_scale_tril(precision.reshape(size, size))
        loc = scale_tril @ (scale_tril.T @ info_vec)
        return dists.multivariate_normal(loc, scale_tril)
