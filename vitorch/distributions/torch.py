"""vitorch versions of every ``torch.distributions`` family, with Pyro's methods.

Each class subclasses the torch class and :class:`TorchDistributionMixin` and adds no
``__init__`` of its own, so torch's ``expand`` builds the vitorch class back.
"""

from __future__ import annotations

import math

import torch.distributions as _td

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


class LKJCholesky(_td.LKJCholesky, TorchDistributionMixin):
    __doc__ = _td.LKJCholesky.__doc__


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

    def log_prob(self, value):
        # Same density as torch's, with tensor methods only: torch's version goes through
        # Python-level reflected operators (rsub, rpow) that cost more than the math.
        if self._validate_args:
            self._validate_sample(value)
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
