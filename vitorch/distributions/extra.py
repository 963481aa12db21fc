"""Pyro's distributions beyond the ``torch.distributions`` families.

Zero-inflated counts, the conjugate compound families (gamma-Poisson, beta-binomial,
Dirichlet-multinomial), the multivariate Student t, the improper uniform, and the
smooth or skewed real-line families (logistic, asymmetric Laplace, soft Laplace), plus
the folded distribution and the shifted-and-scaled beta. Constructor signatures,
parameter names, supports and shapes follow Pyro, so models written for
``pyro.distributions`` run unchanged.
"""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Distribution
from torch.distributions.transforms import AbsTransform, AffineTransform
from torch.distributions.utils import broadcast_all, lazy_property

from . import constraints
from .distribution import TorchDistribution
from .torch import (
    Beta,
    Binomial,
    Categorical,
    Chi2,
    Dirichlet,
    Gamma,
    NegativeBinomial,
    Poisson,
    TransformedDistribution,
)
from .util import broadcast_shape

__all__ = [
    "AffineBeta",
    "AsymmetricLaplace",
    "BetaBinomial",
    "DirichletMultinomial",
    "FoldedDistribution",
    "GammaPoisson",
    "ImproperUniform",
    "Logistic",
    "MultivariateStudentT",
    "SoftLaplace",
    "ZeroInflatedDistribution",
    "ZeroInflatedNegativeBinomial",
    "ZeroInflatedPoisson",
]

_Shape = torch.Size | tuple[int, ...] | list[int]


def _as_tensor(name: str, cls: str, value, like: torch.Tensor | None = None) -> torch.Tensor:
    """``value`` as a tensor (numbers take ``like``'s dtype and device)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        if like is not None:
            return torch.as_tensor(value, dtype=like.dtype, device=like.device)
        return torch.as_tensor(float(value), dtype=torch.get_default_dtype())
    raise TypeError(f"{cls}: {name} must be a number or a tensor, got {type(value).__name__}")


def _finish_expand(cls: type, new: Distribution, old: Distribution, batch_shape, event_shape):
    """Initialise ``new`` (built by ``expand``) without re-validating, then copy the flag."""
    super(cls, new).__init__(batch_shape, event_shape, validate_args=False)
    new._validate_args = old._validate_args


# --------------------------------------------------------------------------------------
# Zero-inflated counts
# --------------------------------------------------------------------------------------


class ZeroInflatedDistribution(TorchDistribution):
    """A scalar distribution with extra mass at zero.

    A draw is ``0`` with probability ``gate`` and a draw of ``base_dist`` otherwise, so
    ``p(0) = gate + (1 - gate) * base(0)`` and ``p(x) = (1 - gate) * base(x)`` for
    ``x != 0``.

    Args:
        base_dist: a distribution with empty ``event_shape``.
        gate: the probability of an extra zero, in ``[0, 1]``.
        gate_logits: the log-odds of an extra zero (give exactly one of the two).
        validate_args: as for any ``torch.distributions.Distribution``.

    Example:
        >>> import torch
        >>> from vitorch.distributions import Poisson
        >>> d = ZeroInflatedDistribution(Poisson(torch.tensor(2.0)), gate=torch.tensor(0.5))
        >>> round(float(d.log_prob(torch.tensor(0.0)).exp()), 4)
        0.5677
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "gate": constraints.unit_interval,
        "gate_logits": constraints.real,
    }

    def __init__(
        self,
        base_dist: Distribution,
        *,
        gate: torch.Tensor | float | None = None,
        gate_logits: torch.Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        cls = type(self).__name__
        if not isinstance(base_dist, Distribution):
            raise TypeError(
                f"{cls}: base_dist must be a torch Distribution, got {type(base_dist).__name__}"
            )
        if (gate is None) == (gate_logits is None):
            raise ValueError(
                f"{cls}: give exactly one of gate and gate_logits, got "
                f"gate={gate!r}, gate_logits={gate_logits!r}"
            )
        if base_dist.event_shape:
            raise ValueError(
                f"{cls}: base_dist must have an empty event_shape, got "
                f"{tuple(base_dist.event_shape)}"
            )
        try:
            like = base_dist.mean
        except NotImplementedError:
            like = None
        like = like if isinstance(like, torch.Tensor) else None
        if gate is not None:
            gate = _as_tensor("gate", cls, gate, like)
            batch_shape = broadcast_shape(gate.shape, base_dist.batch_shape)
            self.gate = gate.expand(batch_shape)
        else:
            gate_logits = _as_tensor("gate_logits", cls, gate_logits, like)
            batch_shape = broadcast_shape(gate_logits.shape, base_dist.batch_shape)
            self.gate_logits = gate_logits.expand(batch_shape)
        self.base_dist = base_dist.expand(batch_shape)
        super().__init__(batch_shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """The base distribution's support (zero is assumed to lie in it)."""
        return self.base_dist.support

    @lazy_property
    def gate(self) -> torch.Tensor:
        """Probability of an extra zero."""
        return torch.sigmoid(self.gate_logits)

    @lazy_property
    def gate_logits(self) -> torch.Tensor:
        """Log-odds of an extra zero."""
        eps = torch.finfo(self.gate.dtype).eps
        return torch.logit(self.gate, eps)

    def _log_gates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log gate, log(1 - gate))``, from whichever parameter was given."""
        if "gate" in self.__dict__:
            gate = self.gate
            return gate.log(), torch.log1p(-gate)
        logits = self.gate_logits
        # log sigmoid(l) = -softplus(-l): stable for large |l|.
        return -F.softplus(-logits), -F.softplus(logits)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(value)``, mixing the gate's mass into ``value == 0``."""
        if self._validate_args:
            self._validate_sample(value)
        log_gate, log_keep = self._log_gates()
        nonzero = log_keep + self.base_dist.log_prob(value)
        zero = torch.logaddexp(log_gate, nonzero)
        return torch.where(value == 0, zero, nonzero)

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Base draws, replaced by zero where a ``gate`` coin comes up heads."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            base = self.base_dist.sample(sample_shape)
            extra = torch.bernoulli(self.gate.expand(shape)).bool()
            return torch.where(extra, torch.zeros_like(base), base)

    @property
    def mean(self) -> torch.Tensor:
        """``(1 - gate) * base mean``."""
        return (1 - self.gate) * self.base_dist.mean

    @property
    def variance(self) -> torch.Tensor:
        """``(1 - gate) * (base variance + base mean**2) - mean**2``."""
        m = self.base_dist.mean
        return (1 - self.gate) * (self.base_dist.variance + m**2) - self.mean**2

    def expand(self, batch_shape: _Shape, _instance=None) -> ZeroInflatedDistribution:
        """The same distribution over a larger batch shape (keeps the subclass)."""
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        kwargs = (
            {"gate": self.gate.expand(batch_shape)}
            if "gate" in self.__dict__
            else {"gate_logits": self.gate_logits.expand(batch_shape)}
        )
        ZeroInflatedDistribution.__init__(
            new, self.base_dist.expand(batch_shape), validate_args=False, **kwargs
        )
        new._validate_args = self._validate_args
        return new


class ZeroInflatedPoisson(ZeroInflatedDistribution):
    """Poisson counts with extra zeros.

    Args:
        rate: the Poisson rate, positive.
        gate: probability of an extra zero (or ``gate_logits``, its log-odds).
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "rate": constraints.positive,
        "gate": constraints.unit_interval,
        "gate_logits": constraints.real,
    }
    support = constraints.nonnegative_integer

    def __init__(
        self,
        rate: torch.Tensor | float,
        *,
        gate: torch.Tensor | float | None = None,
        gate_logits: torch.Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        # The base is validated through this class's arg_constraints and support.
        base = Poisson(rate=rate, validate_args=False)
        super().__init__(base, gate=gate, gate_logits=gate_logits, validate_args=validate_args)

    @property
    def rate(self) -> torch.Tensor:
        """The Poisson rate."""
        return self.base_dist.rate


class ZeroInflatedNegativeBinomial(ZeroInflatedDistribution):
    """Negative-binomial counts (torch's parameterisation) with extra zeros.

    Args:
        total_count: the number of failures before stopping, non-negative.
        probs: success probability in ``[0, 1)`` (or ``logits``, its log-odds).
        gate: probability of an extra zero (or ``gate_logits``, its log-odds).
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "total_count": constraints.greater_than_eq(0),
        "probs": constraints.half_open_interval(0.0, 1.0),
        "logits": constraints.real,
        "gate": constraints.unit_interval,
        "gate_logits": constraints.real,
    }
    support = constraints.nonnegative_integer

    def __init__(
        self,
        total_count: torch.Tensor | float,
        *,
        probs: torch.Tensor | float | None = None,
        logits: torch.Tensor | float | None = None,
        gate: torch.Tensor | float | None = None,
        gate_logits: torch.Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if (probs is None) == (logits is None):
            raise ValueError(
                "ZeroInflatedNegativeBinomial: give exactly one of probs and logits, got "
                f"probs={probs!r}, logits={logits!r}"
            )
        base = NegativeBinomial(
            total_count=total_count, probs=probs, logits=logits, validate_args=False
        )
        super().__init__(base, gate=gate, gate_logits=gate_logits, validate_args=validate_args)

    @property
    def total_count(self) -> torch.Tensor:
        """The negative binomial's ``total_count``."""
        return self.base_dist.total_count

    @property
    def probs(self) -> torch.Tensor:
        """The negative binomial's success probability."""
        return self.base_dist.probs

    @property
    def logits(self) -> torch.Tensor:
        """The negative binomial's success log-odds."""
        return self.base_dist.logits


# --------------------------------------------------------------------------------------
# Conjugate compound families
# --------------------------------------------------------------------------------------


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


class GammaPoisson(TorchDistribution):
    """Poisson counts whose rate is drawn from ``Gamma(concentration, rate)``.

    The marginal is a negative binomial:
    ``p(k) = Γ(α + k) / (Γ(α) k!) * (β / (1 + β))**α * (1 / (1 + β))**k``.

    Args:
        concentration: the gamma shape ``α``, positive.
        rate: the gamma rate ``β``, positive.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = constraints.nonnegative_integer

    def __init__(
        self,
        concentration: torch.Tensor | float,
        rate: torch.Tensor | float,
        validate_args: bool | None = None,
    ) -> None:
        concentration, rate = broadcast_all(concentration, rate)
        self._gamma = Gamma(concentration, rate, validate_args=False)
        super().__init__(concentration.shape, validate_args=validate_args)

    @property
    def concentration(self) -> torch.Tensor:
        """The gamma shape."""
        return self._gamma.concentration

    @property
    def rate(self) -> torch.Tensor:
        """The gamma rate."""
        return self._gamma.rate

    def expand(self, batch_shape: _Shape, _instance=None) -> GammaPoisson:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(GammaPoisson, _instance)
        batch_shape = torch.Size(batch_shape)
        new._gamma = self._gamma.expand(batch_shape)
        _finish_expand(GammaPoisson, new, self, batch_shape, torch.Size())
        return new

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """A gamma rate, then a Poisson count at that rate."""
        with torch.no_grad():
            lam = self._gamma.sample(sample_shape)
            return torch.poisson(lam)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The negative-binomial pmf at ``value``."""
        if self._validate_args:
            self._validate_sample(value)
        a, b = self.concentration, self.rate
        return (
            torch.lgamma(a + value)
            - torch.lgamma(a)
            - torch.lgamma(value + 1)
            + a * b.log()
            - (a + value) * torch.log1p(b)
        )

    @property
    def mean(self) -> torch.Tensor:
        """``α / β``."""
        return self.concentration / self.rate

    @property
    def variance(self) -> torch.Tensor:
        """``α (1 + β) / β**2``."""
        return self.concentration * (1 + self.rate) / self.rate**2


class BetaBinomial(TorchDistribution):
    """Binomial counts whose success probability is drawn from a beta.

    Args:
        concentration1: the beta's ``α`` (pseudo-successes), positive.
        concentration0: the beta's ``β`` (pseudo-failures), positive.
        total_count: the number of trials, a non-negative integer.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "total_count": constraints.nonnegative_integer,
    }
    has_enumerate_support = True

    def __init__(
        self,
        concentration1: torch.Tensor | float,
        concentration0: torch.Tensor | float,
        total_count: torch.Tensor | int = 1,
        validate_args: bool | None = None,
    ) -> None:
        concentration1, concentration0, total_count = broadcast_all(
            concentration1, concentration0, total_count
        )
        self._beta = Beta(concentration1, concentration0, validate_args=False)
        self.total_count = total_count
        super().__init__(concentration1.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """The integers ``0, ..., total_count``."""
        return constraints.integer_interval(0, self.total_count)

    @property
    def concentration1(self) -> torch.Tensor:
        """The beta's ``α``."""
        return self._beta.concentration1

    @property
    def concentration0(self) -> torch.Tensor:
        """The beta's ``β``."""
        return self._beta.concentration0

    def expand(self, batch_shape: _Shape, _instance=None) -> BetaBinomial:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(BetaBinomial, _instance)
        batch_shape = torch.Size(batch_shape)
        new._beta = self._beta.expand(batch_shape)
        new.total_count = self.total_count.expand(batch_shape)
        _finish_expand(BetaBinomial, new, self, batch_shape, torch.Size())
        return new

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """A beta probability, then a binomial count with it."""
        with torch.no_grad():
            p = self._beta.sample(sample_shape)
            return Binomial(self.total_count.expand(p.shape), p, validate_args=False).sample()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log C(n, k) + log B(k + α, n - k + β) - log B(α, β)``."""
        if self._validate_args:
            self._validate_sample(value)
        n, a, b = self.total_count, self.concentration1, self.concentration0
        log_choose = torch.lgamma(n + 1) - torch.lgamma(value + 1) - torch.lgamma(n - value + 1)
        return log_choose + _log_beta(value + a, n - value + b) - _log_beta(a, b)

    @property
    def mean(self) -> torch.Tensor:
        """``n α / (α + β)``."""
        return self.total_count * self._beta.mean

    @property
    def variance(self) -> torch.Tensor:
        """``n α β (α + β + n) / ((α + β)**2 (α + β + 1))``."""
        a, b, n = self.concentration1, self.concentration0, self.total_count
        return self._beta.variance * n * (a + b + n)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """``0, ..., total_count`` along a new leftmost dim (one common count only)."""
        top = int(self.total_count.max())
        if int(self.total_count.min()) != top:
            raise NotImplementedError(
                "BetaBinomial.enumerate_support needs one total_count across the batch"
            )
        values = torch.arange(
            top + 1, dtype=self.concentration1.dtype, device=self.concentration1.device
        )
        values = values.reshape((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1,) + self.batch_shape) if expand else values


class DirichletMultinomial(TorchDistribution):
    """Multinomial counts whose class probabilities are drawn from a Dirichlet.

    Args:
        concentration: the Dirichlet's concentration, positive, classes on the right.
        total_count: the number of trials, a non-negative integer (per batch element).
        is_sparse: score only the non-zero entries of a value (same result, less work
            when most counts are zero).
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration": constraints.independent(constraints.positive, 1),
        "total_count": constraints.nonnegative_integer,
    }

    def __init__(
        self,
        concentration: torch.Tensor,
        total_count: torch.Tensor | int = 1,
        is_sparse: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(concentration, torch.Tensor) or concentration.dim() < 1:
            raise ValueError(
                "DirichletMultinomial: concentration must be a tensor with at least one "
                f"dim, got {concentration!r}"
            )
        batch_shape = concentration.shape[:-1]
        event_shape = concentration.shape[-1:]
        total_count = _as_tensor("total_count", "DirichletMultinomial", total_count, concentration)
        batch_shape = broadcast_shape(batch_shape, total_count.shape)
        self._dirichlet = Dirichlet(
            concentration.expand(batch_shape + event_shape), validate_args=False
        )
        self.total_count = total_count.expand(batch_shape)
        self.is_sparse = bool(is_sparse)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """Non-negative integer vectors summing to ``total_count``."""
        return constraints.multinomial(self.total_count)

    @property
    def concentration(self) -> torch.Tensor:
        """The Dirichlet's concentration."""
        return self._dirichlet.concentration

    def expand(self, batch_shape: _Shape, _instance=None) -> DirichletMultinomial:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(DirichletMultinomial, _instance)
        batch_shape = torch.Size(batch_shape)
        new._dirichlet = self._dirichlet.expand(batch_shape)
        new.total_count = self.total_count.expand(batch_shape)
        new.is_sparse = self.is_sparse
        _finish_expand(DirichletMultinomial, new, self, batch_shape, self.event_shape)
        return new

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Dirichlet probabilities, then ``total_count`` categorical draws counted per class."""
        with torch.no_grad():
            probs = self._dirichlet.sample(sample_shape)
            n = self.total_count.expand(probs.shape[:-1])
            top = int(n.max()) if n.numel() else 0
            if top == 0:
                return torch.zeros_like(probs)
            draws = Categorical(probs, validate_args=False).sample((top,))
            # Each batch element keeps only its first total_count draws, so unequal
            # counts across the batch need no Python loop.
            keep = torch.arange(top, device=n.device).reshape((top,) + (1,) * n.dim()) < n
            counts = torch.zeros((top,) + probs.shape, dtype=probs.dtype, device=probs.device)
            counts.scatter_(-1, draws.unsqueeze(-1), keep.unsqueeze(-1).to(probs.dtype))
            return counts.sum(0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log[n! Γ(A) / Γ(n + A)] + Σ_i log[Γ(x_i + α_i) / (x_i! Γ(α_i))]``, ``A = Σ α``."""
        if self._validate_args:
            self._validate_sample(value)
        alpha = self.concentration
        n = value.sum(-1)
        big_a = alpha.sum(-1)
        head = torch.lgamma(n + 1) + torch.lgamma(big_a) - torch.lgamma(n + big_a)
        if self.is_sparse:
            # Entries with x_i == 0 contribute exactly zero: evaluate only the others.
            value_b, alpha_b = torch.broadcast_tensors(value, alpha)
            hit = value_b != 0
            terms = torch.zeros_like(value_b)
            x, a = value_b[hit], alpha_b[hit]
            terms = terms.masked_scatter(
                hit, torch.lgamma(x + a) - torch.lgamma(a) - torch.lgamma(x + 1)
            )
        else:
            terms = torch.lgamma(value + alpha) - torch.lgamma(alpha) - torch.lgamma(value + 1)
        return head + terms.sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """``n α / A``."""
        return self.total_count.unsqueeze(-1) * self._dirichlet.mean

    @property
    def variance(self) -> torch.Tensor:
        """``n p (1 - p) (n + A) / (1 + A)`` with ``p = α / A``."""
        n = self.total_count.unsqueeze(-1)
        big_a = self.concentration.sum(-1, keepdim=True)
        p = self.concentration / big_a
        return n * p * (1 - p) * (n + big_a) / (1 + big_a)


# --------------------------------------------------------------------------------------
# Multivariate Student t
# --------------------------------------------------------------------------------------


class MultivariateStudentT(TorchDistribution):
    """Multivariate Student t: ``loc + scale_tril @ z / sqrt(u / df)``, ``z ~ N(0, I)``,
    ``u ~ χ²(df)``.

    Args:
        df: degrees of freedom, positive.
        loc: the location vector (event dim on the right).
        scale_tril: lower-triangular scale with positive diagonal.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "df": constraints.positive,
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        df: torch.Tensor | float,
        loc: torch.Tensor,
        scale_tril: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(loc, torch.Tensor) or loc.dim() < 1:
            raise ValueError(
                f"MultivariateStudentT: loc must be a tensor with at least one dim, got {loc!r}"
            )
        dim = loc.shape[-1]
        if not isinstance(scale_tril, torch.Tensor) or scale_tril.shape[-2:] != (dim, dim):
            got = tuple(scale_tril.shape) if isinstance(scale_tril, torch.Tensor) else scale_tril
            raise ValueError(
                f"MultivariateStudentT: scale_tril must end in ({dim}, {dim}) to match loc, "
                f"got {got}"
            )
        df = _as_tensor("df", "MultivariateStudentT", df, loc)
        batch_shape = broadcast_shape(df.shape, loc.shape[:-1], scale_tril.shape[:-2])
        event_shape = torch.Size((dim,))
        self.df = df.expand(batch_shape)
        self.loc = loc.expand(batch_shape + event_shape)
        self._unbroadcasted_scale_tril = scale_tril
        # Set eagerly (a view) so argument validation sees it: torch skips lazy
        # properties that were never computed.
        self.scale_tril = scale_tril.expand(batch_shape + event_shape + event_shape)
        self._chi2 = Chi2(self.df, validate_args=False)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @lazy_property
    def covariance_matrix(self) -> torch.Tensor:
        """``scale_tril @ scale_tril.T`` (the covariance is this times ``df / (df - 2)``)."""
        L = self._unbroadcasted_scale_tril
        return (L @ L.mT).expand(self.batch_shape + self.event_shape + self.event_shape)

    @lazy_property
    def precision_matrix(self) -> torch.Tensor:
        """The inverse of ``covariance_matrix``."""
        eye = torch.eye(self.event_shape[0], dtype=self.loc.dtype, device=self.loc.device)
        return torch.cholesky_solve(eye, self._unbroadcasted_scale_tril).expand(
            self.batch_shape + self.event_shape + self.event_shape
        )

    def expand(self, batch_shape: _Shape, _instance=None) -> MultivariateStudentT:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(MultivariateStudentT, _instance)
        batch_shape = torch.Size(batch_shape)
        new.df = self.df.expand(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new._unbroadcasted_scale_tril = self._unbroadcasted_scale_tril
        new.scale_tril = self._unbroadcasted_scale_tril.expand(
            batch_shape + self.event_shape + self.event_shape
        )
        new._chi2 = self._chi2.expand(batch_shape)
        _finish_expand(MultivariateStudentT, new, self, batch_shape, self.event_shape)
        return new

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Reparameterized draw (gradients reach ``loc``, ``scale_tril`` and ``df``)."""
        shape = self._extended_shape(sample_shape)
        z = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        u = self._chi2.rsample(sample_shape)
        y = z * torch.rsqrt(u / self.df).unsqueeze(-1)
        return self.loc + (self._unbroadcasted_scale_tril @ y.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The multivariate t density at ``value``."""
        if self._validate_args:
            self._validate_sample(value)
        d = self.event_shape[0]
        diff = (value - self.loc).unsqueeze(-1)
        L = self._unbroadcasted_scale_tril
        shape = broadcast_shape(diff.shape[:-2], L.shape[:-2])
        y = torch.linalg.solve_triangular(
            L.expand(shape + (d, d)), diff.expand(shape + (d, 1)), upper=False
        ).squeeze(-1)
        maha = y.square().sum(-1)
        df = self.df
        log_norm = (
            torch.lgamma(0.5 * (df + d))
            - torch.lgamma(0.5 * df)
            - 0.5 * d * (df.log() + math.log(math.pi))
            - L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        )
        return log_norm - 0.5 * (df + d) * torch.log1p(maha / df)

    @property
    def mean(self) -> torch.Tensor:
        """``loc`` where ``df > 1``, NaN elsewhere."""
        nan = torch.full_like(self.loc, float("nan"))
        return torch.where((self.df > 1).unsqueeze(-1), self.loc, nan)

    @property
    def variance(self) -> torch.Tensor:
        """``diag(scale_tril scale_tril.T) df / (df - 2)``; inf for ``1 < df <= 2``, NaN below."""
        df = self.df.unsqueeze(-1)
        v = self.scale_tril.square().sum(-1) * df / (df - 2)
        v = torch.where(df > 2, v, torch.full_like(v, float("inf")))
        return torch.where(df > 1, v, torch.full_like(v, float("nan")))


# --------------------------------------------------------------------------------------
# Improper uniform
# --------------------------------------------------------------------------------------


class ImproperUniform(TorchDistribution):
    """The flat, unnormalised density on ``support``: ``log_prob`` is zero everywhere.

    It cannot be sampled; use it for a latent that other factors score (Pyro's
    factor-graph style), or with an inference method that initialises from the
    support (e.g. an autoguide).

    Args:
        support: the constraint the values live in.
        batch_shape: the batch shape.
        event_shape: the event shape.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(
        self,
        support: constraints.Constraint,
        batch_shape: _Shape,
        event_shape: _Shape,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(support, constraints.Constraint):
            raise TypeError(
                f"ImproperUniform: support must be a Constraint, got {type(support).__name__}"
            )
        self._support = support
        super().__init__(
            torch.Size(batch_shape), torch.Size(event_shape), validate_args=validate_args
        )

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """The constraint given at construction."""
        return self._support

    def expand(self, batch_shape: _Shape, _instance=None) -> ImproperUniform:
        """The same flat density over a larger batch shape."""
        new = self._get_checked_instance(ImproperUniform, _instance)
        new._support = self._support
        _finish_expand(ImproperUniform, new, self, torch.Size(batch_shape), self.event_shape)
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Zeros of the broadcast batch shape (values outside the support still fail
        validation)."""
        if self._validate_args:
            self._validate_sample(value)
        shape = broadcast_shape(
            value.shape[: value.dim() - len(self.event_shape)], self.batch_shape
        )
        dtype = value.dtype if value.is_floating_point() else torch.get_default_dtype()
        return torch.zeros((), dtype=dtype, device=value.device).expand(shape)

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Always raises: an improper density has nothing to draw from."""
        raise NotImplementedError("ImproperUniform does not support sampling")


# --------------------------------------------------------------------------------------
# Real-line families
# --------------------------------------------------------------------------------------


class _LocScale(TorchDistribution):
    """Shared ``(loc, scale)`` plumbing for the real-line families below."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.real
    has_rsample = True
    _params: ClassVar[tuple[str, ...]] = ("loc", "scale")

    def _set_params(self, values, validate_args) -> None:
        tensors = broadcast_all(*values)
        for name, t in zip(self._params, tensors):
            setattr(self, name, t)
        TorchDistribution.__init__(self, tensors[0].shape, validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None):
        """The same distribution over a larger batch shape."""
        cls = type(self)
        new = self._get_checked_instance(cls, _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self._params:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        TorchDistribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Inverse-cdf draw; gradients reach the parameters."""
        shape = self._extended_shape(sample_shape)
        finfo = torch.finfo(self.loc.dtype)
        # Uniform on the open interval (0, 1): icdf is infinite at both ends.
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        u = u.clamp(finfo.tiny, 1 - finfo.eps / 2)
        return self.icdf(u)


class Logistic(_LocScale):
    """The logistic distribution: density ``e^{-z} / (scale (1 + e^{-z})^2)``,
    ``z = (x - loc) / scale``.

    Args:
        loc: location (mean and median).
        scale: scale, positive.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    def __init__(
        self,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        *,
        validate_args: bool | None = None,
    ) -> None:
        self._set_params((loc, scale), validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``2 log σ(z) - z - log scale``."""
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return 2 * F.logsigmoid(z) - z - self.scale.log()

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        """``σ(z)``."""
        if self._validate_args:
            self._validate_sample(value)
        return torch.sigmoid((value - self.loc) / self.scale)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """``loc + scale * logit(u)``."""
        return self.loc + self.scale * torch.logit(value)

    @property
    def mean(self) -> torch.Tensor:
        """``loc``."""
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """``scale**2 π² / 3``."""
        return self.scale**2 * (math.pi**2 / 3)

    def entropy(self) -> torch.Tensor:
        """``log scale + 2``."""
        return self.scale.log() + 2


class AsymmetricLaplace(_LocScale):
    """A Laplace with different exponential scales left and right of ``loc``.

    The left scale is ``scale * asymmetry`` and the right one ``scale / asymmetry``;
    the density ``exp(-|x - loc| / side_scale) / (left + right)`` is continuous at
    ``loc``.

    Args:
        loc: the mode.
        scale: geometric mean of the two side scales, positive.
        asymmetry: square root of the left/right scale ratio, positive.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "asymmetry": constraints.positive,
    }
    _params = ("loc", "scale", "asymmetry")

    def __init__(
        self,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        asymmetry: torch.Tensor | float,
        *,
        validate_args: bool | None = None,
    ) -> None:
        self._set_params((loc, scale, asymmetry), validate_args)

    @property
    def left_scale(self) -> torch.Tensor:
        """``scale * asymmetry``."""
        return self.scale * self.asymmetry

    @property
    def right_scale(self) -> torch.Tensor:
        """``scale / asymmetry``."""
        return self.scale / self.asymmetry

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``-|x - loc| / side_scale - log(left + right)``."""
        if self._validate_args:
            self._validate_sample(value)
        left, right = self.left_scale, self.right_scale
        d = value - self.loc
        side = torch.where(d < 0, left, right)
        return -d.abs() / side - (left + right).log()

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """``loc - left * e1 + right * e2`` with standard exponentials ``e1, e2``."""
        shape = self._extended_shape(sample_shape)
        e = torch.empty((2,) + shape, dtype=self.loc.dtype, device=self.loc.device)
        e.exponential_()
        return self.loc - self.left_scale * e[0] + self.right_scale * e[1]

    @property
    def mean(self) -> torch.Tensor:
        """``loc + right - left``."""
        return self.loc + self.right_scale - self.left_scale

    @property
    def variance(self) -> torch.Tensor:
        """``left**2 + right**2`` (the two exponentials are independent)."""
        return self.left_scale**2 + self.right_scale**2


class SoftLaplace(_LocScale):
    """A smooth, log-concave density with Laplace tails:
    ``p(x) = 2 / (π scale (e^z + e^{-z}))``, ``z = (x - loc) / scale``.

    Args:
        loc: location (mean and median).
        scale: scale, positive.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    def __init__(
        self,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        *,
        validate_args: bool | None = None,
    ) -> None:
        self._set_params((loc, scale), validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log(2/π) - log scale - logaddexp(z, -z)``."""
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return math.log(2 / math.pi) - self.scale.log() - torch.logaddexp(z, -z)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        """``(2/π) arctan(e^z)``."""
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return torch.atan(torch.exp(z)) * (2 / math.pi)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """``loc + scale log tan(π u / 2)``."""
        return self.loc + self.scale * torch.log(torch.tan(value * (math.pi / 2)))

    @property
    def mean(self) -> torch.Tensor:
        """``loc``."""
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """``(π scale / 2)**2``."""
        return (math.pi / 2 * self.scale) ** 2


# --------------------------------------------------------------------------------------
# Transformed families
# --------------------------------------------------------------------------------------


class FoldedDistribution(TransformedDistribution):
    """``|X|`` for a scalar ``X ~ base_dist``, with ``log_prob`` (``p(x) + p(-x)``).

    Args:
        base_dist: a distribution with empty ``event_shape``.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    support = constraints.positive

    def __init__(self, base_dist: Distribution, validate_args: bool | None = None) -> None:
        if not isinstance(base_dist, Distribution):
            raise TypeError(
                "FoldedDistribution: base_dist must be a torch Distribution, got "
                f"{type(base_dist).__name__}"
            )
        if base_dist.event_shape:
            raise ValueError(
                "FoldedDistribution: base_dist must have an empty event_shape, got "
                f"{tuple(base_dist.event_shape)}"
            )
        super().__init__(base_dist, AbsTransform(), validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> FoldedDistribution:
        """The same folded distribution over a larger batch shape."""
        new = self._get_checked_instance(type(self), _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``logaddexp(base.log_prob(x), base.log_prob(-x))``."""
        if self._validate_args:
            self._validate_sample(value)
        return torch.logaddexp(self.base_dist.log_prob(value), self.base_dist.log_prob(-value))


class AffineBeta(TransformedDistribution):
    """``loc + scale * X`` with ``X ~ Beta(concentration1, concentration0)``.

    Draws are clamped a few ulps inside ``(loc, loc + scale)`` so ``log_prob`` and its
    gradients stay finite at the draws.

    Args:
        concentration1: the beta's ``α``, positive.
        concentration0: the beta's ``β``, positive.
        loc: the lower end of the support.
        scale: the width of the support, positive.
        validate_args: as for any ``torch.distributions.Distribution``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "loc": constraints.real,
        "scale": constraints.positive,
    }

    def __init__(
        self,
        concentration1: torch.Tensor | float,
        concentration0: torch.Tensor | float,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        validate_args: bool | None = None,
    ) -> None:
        c1, c0, loc, scale = broadcast_all(concentration1, concentration0, loc, scale)
        base = Beta(c1, c0, validate_args=validate_args)
        super().__init__(base, AffineTransform(loc=loc, scale=scale), validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance=None) -> AffineBeta:
        """The same distribution over a larger batch shape."""
        new = self._get_checked_instance(AffineBeta, _instance)
        batch_shape = torch.Size(batch_shape)
        # The transform's loc/scale carry the batch shape too: expand them with the base.
        new = super().expand(batch_shape, _instance=new)
        new.transforms = [
            AffineTransform(loc=self.loc.expand(batch_shape), scale=self.scale.expand(batch_shape))
        ]
        return new

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps * self.scale
        return torch.minimum(torch.maximum(x, self.low + eps), self.high - eps)

    def sample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """A beta draw mapped to ``(loc, loc + scale)``."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape: _Shape = torch.Size()) -> torch.Tensor:
        """Reparameterized beta draw mapped to ``(loc, loc + scale)``."""
        x = self.base_dist.rsample(sample_shape)
        return self._clamp(self.loc + self.scale * x)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        """The interval ``(loc, loc + scale)``."""
        return constraints.interval(self.low, self.high)

    @property
    def concentration1(self) -> torch.Tensor:
        """The beta's ``α``."""
        return self.base_dist.concentration1

    @property
    def concentration0(self) -> torch.Tensor:
        """The beta's ``β``."""
        return self.base_dist.concentration0

    @property
    def sample_size(self) -> torch.Tensor:
        """``α + β``."""
        return self.concentration1 + self.concentration0

    @property
    def loc(self) -> torch.Tensor:
        """The lower end of the support."""
        return torch.as_tensor(self.transforms[0].loc)

    @property
    def scale(self) -> torch.Tensor:
        """The width of the support."""
        return torch.as_tensor(self.transforms[0].scale)

    @property
    def low(self) -> torch.Tensor:
        """``loc``."""
        return self.loc

    @property
    def high(self) -> torch.Tensor:
        """``loc + scale``."""
        return self.loc + self.scale

    @property
    def mean(self) -> torch.Tensor:
        """``loc + scale α / (α + β)``."""
        return self.loc + self.scale * self.base_dist.mean

    @property
    def variance(self) -> torch.Tensor:
        """``scale**2`` times the beta's variance."""
        return self.scale**2 * self.base_dist.variance
