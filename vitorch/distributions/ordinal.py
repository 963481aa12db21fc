"""Ordinal categories, correlation matrices, empirical and rejection-sampled distributions.

``OrderedLogistic`` (cumulative-logit categories), ``LKJ`` (a prior over correlation
matrices) and its Cholesky alias ``LKJCorrCholesky``, ``Empirical`` (a weighted set of
samples) and ``Rejector`` (a proposal thinned by an acceptance probability), with
Pyro's names, signatures and shapes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ClassVar

import torch
from torch.distributions import Distribution

from . import constraints
from .distribution import TorchDistribution
from .torch import Categorical, LKJCholesky, _onion_cholesky
from .util import broadcast_shape

__all__ = ["Empirical", "LKJ", "LKJCorrCholesky", "OrderedLogistic", "Rejector"]

_Shape = torch.Size | tuple[int, ...] | list[int]


def _tensor(cls: str, name: str, x, dim: int = 0) -> torch.Tensor:
    if isinstance(x, torch.Tensor) and x.dim() >= dim:
        return x
    got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
    raise ValueError(f"{cls}: {name} must be a tensor with at least {dim} dims, got {got}")


# --------------------------------------------------------------------------------------
# Ordinal categories
# --------------------------------------------------------------------------------------


class OrderedLogistic(Categorical):
    """Ordered categories ``0..K`` from a latent logistic: ``P(y <= k) = σ(c_k - η)``.

    ``P(y = k) = σ(c_k - η) - σ(c_{k-1} - η)`` with ``c_{-1} = -∞`` and ``c_K = +∞``.

    Args:
        predictor: ``η``, any shape.
        cutpoints: the ``K`` increasing cut points ``c`` on the right; the dims on their
            left broadcast with ``predictor``.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "predictor": constraints.real,
        "cutpoints": constraints.ordered_vector,
    }

    def __init__(
        self,
        predictor: torch.Tensor,
        cutpoints: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        predictor = _tensor("OrderedLogistic", "predictor", predictor)
        cutpoints = _tensor("OrderedLogistic", "cutpoints", cutpoints, 1)
        batch_shape = broadcast_shape(predictor.shape, cutpoints.shape[:-1])
        self.predictor = predictor.expand(batch_shape)
        self.cutpoints = cutpoints.expand(batch_shape + cutpoints.shape[-1:])
        below = torch.sigmoid(self.cutpoints - self.predictor.unsqueeze(-1))
        ends = torch.zeros_like(below[..., :1])
        cdf = torch.cat([ends, below, ends + 1], dim=-1)
        super().__init__(probs=cdf[..., 1:] - cdf[..., :-1], validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> OrderedLogistic:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(OrderedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.predictor = self.predictor.expand(batch_shape)
        new.cutpoints = self.cutpoints.expand(batch_shape + self.cutpoints.shape[-1:])
        return Categorical.expand(self, batch_shape, _instance=new)


# --------------------------------------------------------------------------------------
# Correlation matrices
# --------------------------------------------------------------------------------------


class LKJ(TorchDistribution):
    """The LKJ distribution over ``dim x dim`` correlation matrices: ``p(C) ∝ det(C)^(η-1)``.

    ``η = 1`` is uniform over correlation matrices; larger ``η`` favours matrices near the
    identity. The density is with respect to Lebesgue measure on the entries above the
    diagonal. Draws are ``L Lᵀ`` with ``L ~ LKJCholesky(dim, η)``.

    Args:
        dim: the matrix size, at least 2.
        concentration: ``η``, positive.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration": constraints.positive
    }
    support = constraints.corr_matrix

    def __init__(
        self,
        dim: int,
        concentration: torch.Tensor | float = 1.0,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2:
            raise ValueError(f"LKJ: dim must be an int >= 2, got {dim!r}")
        self._cholesky = LKJCholesky(dim, concentration, validate_args=False)
        self.dim = dim
        self.concentration = self._cholesky.concentration
        shape = self.concentration.shape
        super().__init__(shape, torch.Size((dim, dim)), validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> LKJ:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(LKJ, _instance)
        batch_shape = torch.Size(batch_shape)
        new._cholesky = self._cholesky.expand(batch_shape)
        new.dim = self.dim
        new.concentration = new._cholesky.concentration
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """``L Lᵀ`` for a draw ``L`` of the Cholesky factor."""
        with torch.no_grad():
            chol = _onion_cholesky(self.dim, self.concentration, torch.Size(sample_shape))
            return chol @ chol.mT

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The Cholesky factor's density, divided by the Jacobian of ``L -> L Lᵀ``.

        On the unit-row-norm factors that Jacobian is ``Π_i L_ii^(dim - 1 - i)``, which
        leaves ``(η - 1) log det C`` minus the normaliser.
        """
        if self._validate_args:
            self._validate_sample(value)
        chol = torch.linalg.cholesky(value)
        log_diag = chol.diagonal(dim1=-2, dim2=-1).log()
        powers = torch.arange(self.dim - 1, -1, -1, dtype=value.dtype, device=value.device)
        return self._cholesky.log_prob(chol) - (powers * log_diag).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """The identity (the law is invariant under flipping the sign of any variable)."""
        eye = torch.eye(self.dim, dtype=self.concentration.dtype, device=self.concentration.device)
        return eye.expand(self.batch_shape + self.event_shape)


class LKJCorrCholesky(LKJCholesky):
    """Deprecated alias of :class:`LKJCholesky` with Pyro's old argument names ``d, eta``."""

    def __init__(
        self, d: int, eta: torch.Tensor | float, validate_args: bool | None = None
    ) -> None:
        warnings.warn(
            "LKJCorrCholesky(d, eta) is deprecated; use LKJCholesky(dim, concentration)",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(d, concentration=eta, validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> LKJCorrCholesky:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(LKJCorrCholesky, _instance)
        return super().expand(batch_shape, _instance=new)

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """A Cholesky factor by the onion method (see ``_onion_cholesky``)."""
        with torch.no_grad():
            return _onion_cholesky(self.dim, self.concentration, torch.Size(sample_shape))


# --------------------------------------------------------------------------------------
# Empirical and rejection-sampled distributions
# --------------------------------------------------------------------------------------


class Empirical(TorchDistribution):
    """A weighted set of samples: draw ``samples[i]`` with probability ``∝ exp(log_weights[i])``.

    ``log_weights`` has shape ``batch_shape + (N,)`` and ``samples`` has shape
    ``batch_shape + (N,) + event_shape``: the rightmost dim of ``log_weights`` indexes the
    ``N`` support points. Repeated points add their weights.

    Args:
        samples: the support points.
        log_weights: their unnormalised log weights.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.real
    has_enumerate_support = True

    def __init__(
        self,
        samples: torch.Tensor,
        log_weights: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        samples = _tensor("Empirical", "samples", samples, 1)
        log_weights = _tensor("Empirical", "log_weights", log_weights, 1)
        lead = samples.shape[: log_weights.dim()]
        if lead != log_weights.shape:
            raise ValueError(
                f"Empirical: log_weights must have the leftmost shape of samples "
                f"{tuple(samples.shape)}, got log_weights of shape {tuple(log_weights.shape)}"
            )
        self._samples = samples
        self._log_weights = log_weights
        self._aggregation_dim = log_weights.dim() - 1
        self._categorical = Categorical(logits=log_weights, validate_args=False)
        event_shape = samples.shape[log_weights.dim() :]
        super().__init__(log_weights.shape[:-1], event_shape, validate_args=validate_args)

    @property
    def sample_size(self) -> int:
        """The number of stored samples (across the batch)."""
        return self._log_weights.numel()

    @property
    def log_weights(self) -> torch.Tensor:
        """The unnormalised log weights, as given."""
        return self._log_weights

    def expand(self, batch_shape: _Shape, _instance=None) -> Empirical:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(Empirical, _instance)
        batch_shape = torch.Size(batch_shape)
        size = self._log_weights.shape[-1:]
        Empirical.__init__(
            new,
            self._samples.expand(batch_shape + size + self.event_shape),
            self._log_weights.expand(batch_shape + size),
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Pick support points by weight, independently per batch element."""
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            index = self._categorical.sample(sample_shape)  # sample + batch
            lead = index.dim()
            pool = self._samples.expand(sample_shape + self._samples.shape)
            index = index.reshape(index.shape + (1,) * (1 + len(self.event_shape)))
            index = index.expand(index.shape[: lead + 1] + self.event_shape)
            return pool.gather(lead, index).squeeze(lead)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The total normalised weight of the support points equal to ``value``
        (``-inf`` off the support)."""
        event_dim = len(self.event_shape)
        if self._validate_args:
            if value.shape[value.dim() - event_dim :] != self.event_shape:
                raise ValueError(
                    f"Empirical: value must end in the event shape {tuple(self.event_shape)}, "
                    f"got shape {tuple(value.shape)}"
                )
            broadcast_shape(value.shape[: value.dim() - event_dim], self.batch_shape)
        hit = self._samples == value.unsqueeze(-1 - event_dim)
        if event_dim:
            hit = hit.flatten(-event_dim).all(-1)
        logw = self._log_weights
        picked = torch.where(hit, logw, torch.full_like(logw, -float("inf")))
        return picked.logsumexp(-1) - logw.logsumexp(-1)

    def _weighted_mean(self, value: torch.Tensor) -> torch.Tensor:
        probs = self._categorical.probs
        probs = probs.reshape(probs.shape + (1,) * len(self.event_shape))
        return (probs * value).sum(self._aggregation_dim)

    def _check_float(self, what: str) -> None:
        if not self._samples.is_floating_point():
            raise ValueError(
                f"Empirical: the {what} of samples of dtype {self._samples.dtype} is "
                "undefined; convert the samples to a floating dtype (one-hot for categories)"
            )

    @property
    def mean(self) -> torch.Tensor:
        """The weighted mean of the samples."""
        self._check_float("mean")
        return self._weighted_mean(self._samples)

    @property
    def variance(self) -> torch.Tensor:
        """The weighted variance of the samples (normalised weights, no bias correction)."""
        self._check_float("variance")
        centred = self._samples - self.mean.unsqueeze(self._aggregation_dim)
        return self._weighted_mean(centred.square())

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """The stored samples, as given."""
        return self._samples


class Rejector(TorchDistribution):
    """Rejection sampling: propose ``x``, accept it with probability ``exp(log_prob_accept(x))``.

    The accepted draws have density ``propose(x) * accept(x) / Z`` with
    ``log_scale = log Z``, the total acceptance probability.

    Args:
        propose: the proposal; called as ``propose(sample_shape)`` (or ``propose()``).
        log_prob_accept: maps a batch of proposals to their log acceptance probabilities.
        log_scale: ``log Z``.
        batch_shape: defaults to the proposal's.
        event_shape: defaults to the proposal's.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    has_rsample = True

    def __init__(
        self,
        propose: Distribution,
        log_prob_accept: Callable[[torch.Tensor], torch.Tensor],
        log_scale: torch.Tensor | float,
        *,
        batch_shape: _Shape | None = None,
        event_shape: _Shape | None = None,
    ) -> None:
        if not callable(propose) or not callable(log_prob_accept):
            raise TypeError(
                "Rejector: propose and log_prob_accept must be callable, got "
                f"{type(propose).__name__} and {type(log_prob_accept).__name__}"
            )
        self.propose = propose
        self.log_prob_accept = log_prob_accept
        self._log_scale = log_scale
        batch_shape = propose.batch_shape if batch_shape is None else batch_shape
        event_shape = propose.event_shape if event_shape is None else event_shape
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape))

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """The proposal's support."""
        return self.propose.support

    def _draw(self, sample_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.propose(sample_shape) if sample_shape else self.propose()
        prob = self.log_prob_accept(x).exp().clamp(0.0, 1.0)
        return x, torch.bernoulli(prob.detach()).bool()

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Propose until every element has had one proposal accepted."""
        x, done = self._draw(torch.Size(sample_shape))
        pad = (1,) * len(self.event_shape)
        while not bool(done.all()):
            proposal, accept = self._draw(torch.Size(sample_shape))
            accept = accept & ~done
            x = torch.where(accept.reshape(accept.shape + pad), proposal, x)
            done = done | accept
        return x

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``propose.log_prob(x) + log_prob_accept(x) - log_scale``."""
        return self.propose.log_prob(value) + self.log_prob_accept(value) - self._log_scale
