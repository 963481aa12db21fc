"""``DiscreteCosineReparam`` and ``HaarReparam``: frequency-domain views of time series."""

from __future__ import annotations

from ...distributions.transforms import DiscreteCosineTransform, HaarTransform
from .unit_jacobian import UnitJacobianReparam

__all__ = ["DiscreteCosineReparam", "HaarReparam"]


class DiscreteCosineReparam(UnitJacobianReparam):
    """Sample a site in the frequency domain of an orthonormal DCT, at ``{name}_dct``.

    Coupling along a time-like dim (e.g. a random walk) gives long-range posterior
    correlations; its DCT coefficients are much closer to independent, which suits
    diagonal guides and diagonal HMC mass matrices. Use ``smooth=1`` for a site that is
    roughly continuous in time, ``smooth=2`` for roughly differentiable.

    :param dim: the (negative) dim to transform.
    :param smooth: the spectral weighting exponent of
        :class:`~vitorch.distributions.transforms.DiscreteCosineTransform`.
    :param experimental_allow_batch: see :class:`UnitJacobianReparam`.
    """

    def __init__(
        self, dim: int = -1, smooth: float = 0.0, *, experimental_allow_batch: bool = False
    ) -> None:
        super().__init__(
            DiscreteCosineTransform(dim=dim, smooth=smooth),
            suffix="dct",
            experimental_allow_batch=experimental_allow_batch,
        )


class HaarReparam(UnitJacobianReparam):
    """Sample a site in the domain of an orthonormal Haar wavelet transform, at
    ``{name}_haar`` (same purpose as :class:`DiscreteCosineReparam`).

    :param dim: the (negative) dim to transform.
    :param flip: reverse the time dim before transforming.
    :param experimental_allow_batch: see :class:`UnitJacobianReparam`.
    """

    def __init__(
        self, dim: int = -1, flip: bool = False, *, experimental_allow_batch: bool = False
    ) -> None:
        super().__init__(
            HaarTransform(dim=dim, flip=flip),
            suffix="haar",
            experimental_allow_batch=experimental_allow_batch,
        )
