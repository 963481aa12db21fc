"""``AutoIAFNormal``: a standard Normal pushed through inverse autoregressive flows.

The guide's distribution over the flattened unconstrained latent vector (see
:class:`~vitorch.infer.autoguide.AutoContinuous`) is ``Normal(0, I)`` mapped by
``num_transforms`` :class:`~vitorch.distributions.transforms.AffineAutoregressive`
layers and then shifted by ``loc``. Sampling is one network call per layer, and the
density of a draw comes with it (each layer caches its log-scales), so SVI never runs the
slow inverse.

One affine layer whose network ends in a linear map can already represent any Gaussian
(its Jacobian is a triangular matrix); stacked layers with nonlinear networks give skewed,
heavy-tailed or curved posteriors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions.transforms import AffineTransform, ComposeTransform, Transform

from ...distributions.affine_autoregressive import affine_autoregressive
from .continuous import AutoContinuous
from .flow import AutoNormalizingFlow
from .initialization import init_to_feasible, init_to_median

__all__ = ["AutoIAFNormal"]

_TRANSFORM_KWARGS = ("log_scale_min_clip", "log_scale_max_clip", "sigmoid_bias", "stable")


class _ComposeTransformModule(ComposeTransform, nn.ModuleList):
    """A ``ComposeTransform`` whose parts are also the entries of an ``nn.ModuleList``.

    Holding the flows this way makes their networks submodules of the guide (named
    ``transform.0.arn...``, as in Pyro), so ``parameters()``, ``state_dict`` and the param
    store see them, while the object is still the composed map.
    """

    def __init__(self, parts: list[Transform]) -> None:
        super().__init__(parts)
        for part in parts:
            if isinstance(part, nn.Module):
                self.append(part)

    # ComposeTransform compares by parts, which would leave the class unhashable; modules
    # must be hashable (named_modules keeps them in a set).
    def __hash__(self) -> int:
        return id(self)

    def __getstate__(self) -> dict:
        state = nn.Module.__getstate__(self)
        state["_inv"] = None
        return state


class AutoIAFNormal(AutoNormalizingFlow):
    """A guide over the latent vector: ``loc + IAF_n(... IAF_1(eps))``, ``eps ~ Normal(0, I)``.

    Usage::

        guide = AutoIAFNormal(model, hidden_dim=[20], num_transforms=2)
        svi = SVI(model, guide, optim, Trace_ELBO())

    Parameters: the networks of the flows, ``transform.<k>.arn.layers.<l>.weight`` and
    ``.bias`` (in the param store as ``AutoIAFNormal.transform$$$<k>.arn...``, Pyro's
    names), and ``loc``, the vector's shift. Pyro's ``AutoIAFNormal`` has no ``loc`` and
    ignores ``init_loc_fn`` (it starts around zero); here ``loc`` starts at the values of
    ``init_loc_fn``, so the guide starts near them, as the other continuous guides do. The
    flows' networks start at random (their orders are random permutations).

    :meth:`median` and :meth:`quantiles` have no closed form for a flow: they are the
    empirical marginal quantiles of 4096 draws made from a fixed scrambled Sobol sequence
    (deterministic, and with an error far below that of as many random draws).

    :param model: the model; every latent site must have a continuous support.
    :param hidden_dim: hidden layer sizes of each flow's
        :class:`~vitorch.nn.AutoRegressiveNN`, an int or a list of ints, each at least
        the latent dimension; default ``[3 * latent_dim + 1]`` (Pyro's default).
    :param init_loc_fn: per-site initial value of ``loc`` (default: prior median; ``None``
        gives ``init_to_feasible``, zero in unconstrained space, where Pyro starts).
    :param num_transforms: number of
        :class:`~vitorch.distributions.transforms.AffineAutoregressive` layers.
    :param init_transform_kwargs: ``log_scale_min_clip``, ``log_scale_max_clip``,
        ``sigmoid_bias``, ``stable``, passed to every layer.
    """

    num_summary_draws = 4096

    def __init__(
        self,
        model: Callable,
        hidden_dim: int | Sequence[int] | None = None,
        init_loc_fn: Callable | None = init_to_median,
        num_transforms: int = 1,
        **init_transform_kwargs: Any,
    ) -> None:
        if init_loc_fn is None:
            # Pyro's default (its guide ignores the argument): start ``loc`` at zero.
            init_loc_fn = init_to_feasible
        if isinstance(hidden_dim, int) and not isinstance(hidden_dim, bool):
            hidden_dim = [hidden_dim]
        if hidden_dim is not None:
            if (
                isinstance(hidden_dim, (str, bytes))
                or not isinstance(hidden_dim, Sequence)
                or len(hidden_dim) == 0
                or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden_dim)
            ):
                raise ValueError(
                    f"AutoIAFNormal: hidden_dim must be None, a positive int or a non-empty "
                    f"list of positive ints, got {hidden_dim!r}"
                )
            hidden_dim = list(hidden_dim)
        if (
            isinstance(num_transforms, bool)
            or not isinstance(num_transforms, int)
            or num_transforms < 1
        ):
            raise ValueError(
                f"AutoIAFNormal: num_transforms must be an int >= 1, got {num_transforms!r}"
            )
        unknown = sorted(set(init_transform_kwargs) - set(_TRANSFORM_KWARGS))
        if unknown:
            raise TypeError(
                f"AutoIAFNormal: unexpected keyword arguments {unknown}; the transform takes "
                f"{list(_TRANSFORM_KWARGS)}"
            )
        if not callable(init_loc_fn):
            raise TypeError(
                f"AutoIAFNormal: init_loc_fn must be callable, got {type(init_loc_fn).__name__}"
            )
        # Not AutoNormalizingFlow.__init__: the flow is built here (_make_transform) and
        # ``loc`` starts at init_loc_fn's values.
        AutoContinuous.__init__(self, model, init_loc_fn=init_loc_fn)
        self._hidden_dim = hidden_dim
        self.num_transforms = num_transforms
        self._init_transform_kwargs = init_transform_kwargs

    def _make_transform(self, latent_dim: int) -> Transform:
        hidden = [3 * latent_dim + 1] if self._hidden_dim is None else self._hidden_dim
        if min(hidden) < latent_dim:
            raise ValueError(
                f"AutoIAFNormal: every entry of hidden_dim must be at least the latent "
                f"dimension {latent_dim} (a narrower layer cannot connect every output), "
                f"got {hidden}"
            )
        flows = [
            affine_autoregressive(latent_dim, hidden, **self._init_transform_kwargs)
            for _ in range(self.num_transforms)
        ]
        return _ComposeTransformModule(flows)

    def _setup_posterior(self, init_loc: torch.Tensor) -> None:
        super()._setup_posterior(init_loc)
        self.loc = nn.Parameter(init_loc)

    def _parts(self) -> list[Transform]:
        # The shift caches its pair too: otherwise scoring a draw would invert the shift
        # into a new tensor, which the last flow's cache would not recognise.
        shift = AffineTransform(self.loc, 1.0, event_dim=1, cache_size=1)
        return [*self.transform.parts, shift]

    def get_transform(self, *args: Any, **kwargs: Any) -> Any:
        """The flows followed by the shift by ``loc``, as one ``ComposeTransform``."""
        return ComposeTransform(self._parts())
