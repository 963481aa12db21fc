"""Distributions with Pyro's conventions (``vitorch.distributions``, usually ``dist``)."""

import contextlib

from torch.distributions import Distribution, ExponentialFamily

from . import constraints, kl, transforms
from .avf_mvn import AVFMultivariateNormal
from .delta import Delta
from .directional import ProjectedNormal, SineBivariateVonMises, SineSkewed, VonMises3D
from .distribution import TorchDistribution, TorchDistributionMixin
from .extra import (
    AffineBeta,
    AsymmetricLaplace,
    BetaBinomial,
    DirichletMultinomial,
    FoldedDistribution,
    GammaPoisson,
    ImproperUniform,
    Logistic,
    MultivariateStudentT,
    SoftLaplace,
    ZeroInflatedDistribution,
    ZeroInflatedNegativeBinomial,
    ZeroInflatedPoisson,
)
from .families import (
    ExtendedBetaBinomial,
    ExtendedBinomial,
    GaussianScaleMixture,
    LogNormalNegativeBinomial,
    MixtureOfDiagNormals,
    MixtureOfDiagNormalsSharedCovariance,
    NanMaskedMultivariateNormal,
    NanMaskedNormal,
    SkewLogistic,
    SoftAsymmetricLaplace,
)
from .flows import (
    ComposeTransformModule,
    ConditionalDistribution,
    ConditionalTransform,
    ConditionalTransformedDistribution,
    ConditionalTransformModule,
    TransformModule,
)
from .hmm import DiscreteHMM
from .kl import kl_divergence, register_kl
from .masked import MaskedDistribution
from .misc import ExpandedDistribution, GroupedNormalNormal, TruncatedPolyaGamma
from .omt_mvn import OMTMultivariateNormal
from .ordinal import LKJ, Empirical, LKJCorrCholesky, OrderedLogistic, Rejector
from .relaxed import (
    MaskedMixture,
    RelaxedBernoulliStraightThrough,
    RelaxedOneHotCategoricalStraightThrough,
)
from .stable import Stable, StableWithLogProb
from .torch import *  # noqa: F403
from .torch import __all__ as _torch_all
from .transforms import biject_to, transform_to
from .unit import Unit
from .util import broadcast_shape, sum_rightmost


def enable_validation(is_validate: bool = True) -> None:
    """Switch argument and support checks of every distribution on or off."""
    Distribution.set_default_validate_args(is_validate)


def is_validation_enabled() -> bool:
    return bool(Distribution._validate_args)


@contextlib.contextmanager
def validation_enabled(is_validate: bool = True):
    """Within the block, distributions validate (or not) their arguments and values."""
    old = is_validation_enabled()
    enable_validation(is_validate)
    try:
        yield
    finally:
        enable_validation(old)


__all__ = [
    "AVFMultivariateNormal",
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
    "ExpandedDistribution",
    "GroupedNormalNormal",
    "TruncatedPolyaGamma",
    "MaskedMixture",
    "RelaxedBernoulliStraightThrough",
    "RelaxedOneHotCategoricalStraightThrough",
    "Stable",
    "StableWithLogProb",
    "Unit",
    "ExponentialFamily",
    "ComposeTransformModule",
    "ConditionalDistribution",
    "ConditionalTransform",
    "ConditionalTransformedDistribution",
    "ConditionalTransformModule",
    "TransformModule",
    "ProjectedNormal",
    "SineBivariateVonMises",
    "SineSkewed",
    "VonMises3D",
    "ExtendedBetaBinomial",
    "ExtendedBinomial",
    "GaussianScaleMixture",
    "LogNormalNegativeBinomial",
    "MixtureOfDiagNormals",
    "MixtureOfDiagNormalsSharedCovariance",
    "NanMaskedMultivariateNormal",
    "NanMaskedNormal",
    "SkewLogistic",
    "SoftAsymmetricLaplace",
    "DiscreteHMM",
    "LKJ",
    "Empirical",
    "LKJCorrCholesky",
    "OrderedLogistic",
    "Rejector",
    "Delta",
    "Distribution",
    "MaskedDistribution",
    "OMTMultivariateNormal",
    "TorchDistribution",
    "TorchDistributionMixin",
    "biject_to",
    "broadcast_shape",
    "constraints",
    "enable_validation",
    "is_validation_enabled",
    "kl",
    "kl_divergence",
    "register_kl",
    "sum_rightmost",
    "transform_to",
    "transforms",
    "validation_enabled",
    *_torch_all,
]
