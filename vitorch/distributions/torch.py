"""vitorch versions of every ``torch.distributions`` family, with Pyro's methods.

Each class subclasses the torch class and :class:`TorchDistributionMixin` and adds no
``__init__`` of its own, so torch's ``expand`` builds the vitorch class back.
"""

from __future__ import annotations

import math

import torch
import torch.distributions as _td
import torch.nn.functional as F
from torch.distributions.utils import _standard_normal, broadcast_all, lazy_property

from .distribution import TorchDistributionMixin

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

__all__ = [
    "Bernoulli",
    "Beta",
    "Binomial",
    "Categorical",
    "Cauchy",
    "Chi2",
    "ContinuousBernoulli",
    "Dirichlet",
    "Exponential",
    "FisherSnedecor",
    "Gamma",
    "Geometric",
    "Gumbel",
    "HalfCauchy",
    "HalfNormal",
    "Independent",
    "InverseGamma",
    "Kumaraswamy",
    "LKJCholesky",
    "Laplace",
    "LogNormal",
    "LogisticNormal",
    "LowRankMultivariateNormal",
    "MixtureSameFamily",
    "Multinomial",
    "MultivariateNormal",
    "NegativeBinomial",
    "Normal",
    "OneHotCategorical",
    "OneHotCategoricalStraightThrough",
    "Pareto",
    "Poisson",
    "RelaxedBernoulli",
    "RelaxedOneHotCategorical",
    "StudentT",
    "TransformedDistribution",
    "Uniform",
    "VonMises",
    "Weibull",
    "Wishart",
    "GeneralizedPareto",
]


class Bernoulli(_td.Bernoulli, TorchDistributionMixin):
    __doc__ = _td.Bernoulli.__doc__

    def __init__(self, probs=None, logits=None, validate_args=None):
        # torch's, without broadcast_all (and its alias node in the graph) for one tensor.
        if (probs is None) != (logits is None):
            param = logits if probs is None else probs
            if type(param) is torch.Tensor:
                if probs is None:
                    self.logits = param
                else:
                    self.probs = param
                self._param = param
                _td.Distribution.__init__(self, param.shape, validate_args=validate_args)
                return
        super().__init__(probs, logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """Broadcast to ``batch_shape`` (torch's, kept for this class's ``__init__``)."""
        new = self._get_checked_instance(Bernoulli, _instance)
        return super().expand(batch_shape, _instance=new)

    @lazy_property
    def logits(self):
        # log p - log(1 - p) with p clamped to [eps, 1 - eps], as torch's probs_to_logits,
        # in one kernel instead of five (values agree to float rounding, gradients too).
        probs = self.probs
        return torch.logit(probs, torch.finfo(probs.dtype).eps)

    def log_prob(self, value):
        # torch's, without broadcast_all when the shapes already agree (the usual case).
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if not (isinstance(value, torch.Tensor) and value.shape == logits.shape):
            logits, value = broadcast_all(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")

    def _log_prob_sum(self, value):
        """``log_prob(value).sum()`` in one reduction (the ELBO's per-site total)."""
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if not (isinstance(value, torch.Tensor) and value.shape == logits.shape):
            return self.log_prob(value).sum()
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="sum")


class Beta(_td.Beta, TorchDistributionMixin):
    __doc__ = _td.Beta.__doc__


class Binomial(_td.Binomial, TorchDistributionMixin):
    __doc__ = _td.Binomial.__doc__


class Categorical(_td.Categorical, TorchDistributionMixin):
    __doc__ = _td.Categorical.__doc__


class Cauchy(_td.Cauchy, TorchDistributionMixin):
    __doc__ = _td.Cauchy.__doc__


class Chi2(_td.Chi2, TorchDistributionMixin):
    __doc__ = _td.Chi2.__doc__


class ContinuousBernoulli(_td.ContinuousBernoulli, TorchDistributionMixin):
    __doc__ = _td.ContinuousBernoulli.__doc__


class Dirichlet(_td.Dirichlet, TorchDistributionMixin):
    __doc__ = _td.Dirichlet.__doc__


class Exponential(_td.Exponential, TorchDistributionMixin):
    __doc__ = _td.Exponential.__doc__


class FisherSnedecor(_td.FisherSnedecor, TorchDistributionMixin):
    __doc__ = _td.FisherSnedecor.__doc__


class Gamma(_td.Gamma, TorchDistributionMixin):
    __doc__ = _td.Gamma.__doc__


class Geometric(_td.Geometric, TorchDistributionMixin):
    __doc__ = _td.Geometric.__doc__


class Gumbel(_td.Gumbel, TorchDistributionMixin):
    __doc__ = _td.Gumbel.__doc__


class HalfCauchy(_td.HalfCauchy, TorchDistributionMixin):
    __doc__ = _td.HalfCauchy.__doc__


class HalfNormal(_td.HalfNormal, TorchDistributionMixin):
    __doc__ = _td.HalfNormal.__doc__


class Independent(_td.Independent, TorchDistributionMixin):
    __doc__ = _td.Independent.__doc__


class InverseGamma(_td.InverseGamma, TorchDistributionMixin):
    __doc__ = _td.InverseGamma.__doc__


class Kumaraswamy(_td.Kumaraswamy, TorchDistributionMixin):
    __doc__ = _td.Kumaraswamy.__doc__


def _onion_cholesky(
    dim: int, concentration: torch.Tensor, sample_shape: torch.Size
) -> torch.Tensor:
    """Cholesky factors of LKJ draws by the onion method (Lewandowski et al. 2009, 3.2).

    Row ``i >= 1`` is ``sqrt(y) u`` then ``sqrt(1 - y)`` on the diagonal, with ``u``
    uniform on the sphere ``S^{i-1}`` and ``y ~ Beta(i/2, η + (dim-2)/2 - (i-1)/2)``.
    (torch's ``LKJCholesky.sample`` uses ``Beta(i - 1/2, ...)`` for ``i >= 2``, which
    makes the rows beyond the second too correlated.)
    """
    shape = torch.Size(sample_shape) + concentration.shape
    conc = concentration.detach().expand(shape).unsqueeze(-1)
    rows = torch.arange(1, dim, dtype=conc.dtype, device=conc.device)
    beta = torch.distributions.Beta(rows / 2, conc + (dim - 2) / 2 - (rows - 1) / 2)
    y = beta.sample().unsqueeze(-1)  # shape + (dim - 1, 1)
    u = torch.randn(shape + (dim, dim), dtype=conc.dtype, device=conc.device).tril(-1)[..., 1:, :]
    u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    chol = torch.zeros(shape + (dim, dim), dtype=conc.dtype, device=conc.device)
    chol[..., 0, 0] = 1
    chol[..., 1:, :] = y.sqrt() * u
    diag = (1 - y.squeeze(-1)).clamp(min=torch.finfo(conc.dtype).tiny).sqrt()
    index = torch.arange(1, dim, device=conc.device)
    chol[..., index, index] = diag
    return chol


class LKJCholesky(_td.LKJCholesky, TorchDistributionMixin):
    __doc__ = _td.LKJCholesky.__doc__

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        # torch 2.13's sampler draws rows 2.. too correlated (Var of an off-diagonal
        # entry of a 3x3 draw at eta = 1 comes out 0.30, not 0.25); the onion method is exact.
        with torch.no_grad():
            return _onion_cholesky(self.dim, self.concentration, torch.Size(sample_shape))


class Laplace(_td.Laplace, TorchDistributionMixin):
    __doc__ = _td.Laplace.__doc__


class LogNormal(_td.LogNormal, TorchDistributionMixin):
    __doc__ = _td.LogNormal.__doc__

    def log_prob(self, value):
        # log N(log y; loc, scale) - log y, written out: the generic transformed-
        # distribution path walks the transform list and builds twice the autograd nodes.
        if self._validate_args:
            self._validate_sample(value)
        x = value.log()
        scale = self.scale
        z = (x - self.loc) / scale
        return z.square().mul(-0.5).sub(scale.log()).sub(x).sub(_HALF_LOG_2PI)


class LogisticNormal(_td.LogisticNormal, TorchDistributionMixin):
    __doc__ = _td.LogisticNormal.__doc__


class LowRankMultivariateNormal(_td.LowRankMultivariateNormal, TorchDistributionMixin):
    __doc__ = _td.LowRankMultivariateNormal.__doc__


class MixtureSameFamily(_td.MixtureSameFamily, TorchDistributionMixin):
    __doc__ = _td.MixtureSameFamily.__doc__


class Multinomial(_td.Multinomial, TorchDistributionMixin):
    __doc__ = _td.Multinomial.__doc__


class MultivariateNormal(_td.MultivariateNormal, TorchDistributionMixin):
    __doc__ = _td.MultivariateNormal.__doc__


class NegativeBinomial(_td.NegativeBinomial, TorchDistributionMixin):
    __doc__ = _td.NegativeBinomial.__doc__


class Normal(_td.Normal, TorchDistributionMixin):
    __doc__ = _td.Normal.__doc__

    # (draw, its noise, the draw's version counter) of the last rsample, see log_prob.
    _draw: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def __init__(self, loc, scale, validate_args=None):
        # torch's, minus broadcast_all's generic checks in the two usual cases: two
        # tensors of one shape, or a tensor and a Python number (Normal(mu, 1.0)).
        if type(loc) is torch.Tensor:
            if type(scale) is torch.Tensor:
                if loc.shape == scale.shape:
                    self.loc, self.scale = loc, scale
                    _td.Distribution.__init__(self, loc.shape, validate_args=validate_args)
                    return
            elif type(scale) in (float, int):
                self.loc = loc
                self.scale = torch.tensor(scale, dtype=loc.dtype, device=loc.device).expand(
                    loc.shape
                )
                _td.Distribution.__init__(self, loc.shape, validate_args=validate_args)
                return
        super().__init__(loc, scale, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """Broadcast to ``batch_shape`` (torch's, kept for this class's ``__init__``)."""
        new = self._get_checked_instance(Normal, _instance)
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + eps * self.scale
        self._draw = (value, eps, value._version)
        return value

    def log_prob(self, value):
        # A draw of this very distribution, z = loc + eps * scale, scores as
        # -eps^2 / 2 - log(scale) - log(2 pi) / 2: as a function of loc and scale (and of
        # anything upstream of them) that is the general formula exactly, so the value and
        # every gradient through z are the same, at half the autograd nodes. This is what
        # a guide does at every step: score its own sample. Any other value (or a draw
        # modified in place since) takes the general formula.
        if self._validate_args:
            self._validate_sample(value)
        draw = self._draw
        if draw is not None and value is draw[0] and value._version == draw[2]:
            return draw[1].square().mul_(-0.5).sub(self.scale.log()).sub(_HALF_LOG_2PI)
        # Same density as torch's, with tensor methods only: torch's version goes through
        # Python-level reflected operators (rsub, rpow) that cost more than the math.
        scale = self.scale
        z = (value - self.loc) / scale
        return z.square().mul(-0.5).sub(scale.log()).sub(_HALF_LOG_2PI)


class OneHotCategorical(_td.OneHotCategorical, TorchDistributionMixin):
    __doc__ = _td.OneHotCategorical.__doc__


class OneHotCategoricalStraightThrough(
    _td.OneHotCategoricalStraightThrough, TorchDistributionMixin
):
    __doc__ = _td.OneHotCategoricalStraightThrough.__doc__


class Pareto(_td.Pareto, TorchDistributionMixin):
    __doc__ = _td.Pareto.__doc__


class Poisson(_td.Poisson, TorchDistributionMixin):
    __doc__ = _td.Poisson.__doc__


class RelaxedBernoulli(_td.RelaxedBernoulli, TorchDistributionMixin):
    __doc__ = _td.RelaxedBernoulli.__doc__


class RelaxedOneHotCategorical(_td.RelaxedOneHotCategorical, TorchDistributionMixin):
    __doc__ = _td.RelaxedOneHotCategorical.__doc__


class StudentT(_td.StudentT, TorchDistributionMixin):
    __doc__ = _td.StudentT.__doc__


class TransformedDistribution(_td.TransformedDistribution, TorchDistributionMixin):
    __doc__ = _td.TransformedDistribution.__doc__

    def clear_cache(self) -> None:
        """Drop the cached input/output pairs of the transforms (Pyro's method).

        A learnable flow caches ``x -> y``; after an optimizer step changes its parameters,
        scoring the same tensor again would reuse the old pair. Call this after each step.
        """
        for t in self.transforms:
            clear = getattr(t, "clear_cache", None)
            if clear is not None:
                clear()


class Uniform(_td.Uniform, TorchDistributionMixin):
    __doc__ = _td.Uniform.__doc__


class VonMises(_td.VonMises, TorchDistributionMixin):
    __doc__ = _td.VonMises.__doc__


class Weibull(_td.Weibull, TorchDistributionMixin):
    __doc__ = _td.Weibull.__doc__


class Wishart(_td.Wishart, TorchDistributionMixin):
    __doc__ = _td.Wishart.__doc__


class GeneralizedPareto(_td.GeneralizedPareto, TorchDistributionMixin):
    __doc__ = _td.GeneralizedPareto.__doc__
