"""Reparameterizers for :func:`vitorch.poutine.reparam` (Pyro's ``pyro.infer.reparam``).

Each rewrites a sample site into auxiliary sites with the same joint density of the
original site (an exact change of variables, or an auxiliary-variable representation).
``AutoReparam`` and ``MinimalReparam`` (strategies) choose one per site.
"""

from .discrete_cosine import DiscreteCosineReparam, HaarReparam
from .loc_scale import LocScaleReparam
from .neutra import NeuTraReparam
from .projected_normal import ProjectedNormalReparam
from .reparam import Reparam
from .softmax import GumbelSoftmaxReparam
from .split import SplitReparam
from .stable import LatentStableReparam, StableReparam, SymmetricStableReparam
from .strategies import AutoReparam, MinimalReparam
from .studentt import StudentTReparam
from .transform import TransformReparam
from .unit_jacobian import UnitJacobianReparam

__all__ = [
    "AutoReparam",
    "DiscreteCosineReparam",
    "GumbelSoftmaxReparam",
    "HaarReparam",
    "LatentStableReparam",
    "LocScaleReparam",
    "MinimalReparam",
    "NeuTraReparam",
    "ProjectedNormalReparam",
    "Reparam",
    "SplitReparam",
    "StableReparam",
    "StudentTReparam",
    "SymmetricStableReparam",
    "TransformReparam",
    "UnitJacobianReparam",
]
