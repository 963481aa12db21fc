r"""Multivariate normal whose ``rsample`` carries adaptive-velocity-field (AVF) gradients.

A draw is ``z = loc + L eps`` with ``eps ~ N(0, I)``; ``g_n = dloss/dz_n`` is the upstream
gradient of draw ``n``. The ``loc`` gradient is the pathwise ``sum_n g_n``; the ``L``
gradient is the pathwise one plus a zero-mean control variate whose shape is learned.

The control variate
-------------------
For an antisymmetric ``W`` the field ``eps -> W eps`` is an infinitesimal rotation, and a
rotation leaves ``N(0, I)`` unchanged, so ``E[grad_eps f(eps)^T W eps] = 0`` for any smooth
``f`` (Stein's identity: ``E[grad f^T W eps] = E[f (eps^T W eps - tr W)] = 0``). With
``grad_eps f = L^T g`` and ``W = e_a e_b^T - e_b e_a^T`` this says that

    xi_ab = sum_n (L^T g_n)_a eps_nb - (L^T g_n)_b eps_na

has mean zero for every pair ``(a, b)``. Any fixed weights ``M_ab`` can therefore be added
without bias:

    grad_L = tril(sum_n g_n eps_n^T + M * xi),    M_ab = sum_l B_la C_lb,

with ``(B, C) = (control_var[0], control_var[1])`` of shape ``(L, D)`` each (``*`` is the
element-wise product; ``M`` has rank at most ``L``). ``xi = E - E^T`` with
``E = L^T (sum_n g_n eps_n^T)``, so the whole backward is ``O(N D^2 + D^3)`` and needs no
per-draw ``D x D`` matrix.

Adapting ``control_var``
------------------------
Because the mean of ``G = grad_L`` does not depend on ``M``, lowering ``E ||G||^2`` lowers
the variance. The gradient returned for ``control_var`` is the one of ``1/2 ||G||^2`` for the
estimate ``G`` being returned: with ``H = G * xi`` (lower triangular, since ``G`` is),

    d/dB_la = sum_b H_ab C_lb = (C H^T)_la,      d/dC_lb = sum_a B_la H_ab = (B H)_lb.

Stepping an optimizer on ``control_var`` with these gradients is stochastic gradient
descent on the second moment of the estimator. ``control_var = 0`` gives back the plain
pathwise gradient but is a stationary point (both factor gradients vanish), so start from
``B = 0.1``, ``C = 0``: exactly the pathwise estimator at first, and ``C`` gets a gradient
at once. ``L = 1`` is usually enough (on the tests' anisotropic problem, L = 1 already
comes within noise of the best full-rank ``M``); for ``L > 1`` give the rows of ``B``
different values (e.g. ``0.1 * randn``), since rows that start equal stay equal.

Batches: ``control_var`` may carry leading batch dims, ``batch + (2, L, D)``, that
broadcast against the distribution's batch shape. When ``scale_tril`` or ``control_var`` is
shared across batch members, ``G`` is the summed gradient that is actually returned for it.
Double backward through ``rsample`` is not supported.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.distributions import constraints
from torch.distributions.utils import _standard_normal

from .omt_mvn import (
    _affine,
    _check_finite,
    _check_loc_scale_tril,
    _outer_sum,
    _sum_samples,
    _sum_to,
)
from .torch import MultivariateNormal

__all__ = ["AVFMultivariateNormal"]


def _check_control_var(
    cls_name: str, control_var: torch.Tensor, loc: torch.Tensor, batch_shape: torch.Size
) -> None:
    if not isinstance(control_var, torch.Tensor):
        raise TypeError(
            f"{cls_name}: control_var must be a torch.Tensor, got {type(control_var).__name__}"
        )
    dim = loc.shape[-1]
    if (
        control_var.dim() < 3
        or control_var.shape[-3] != 2
        or control_var.shape[-1] != dim
        or control_var.shape[-2] < 1
    ):
        raise ValueError(
            f"{cls_name}: control_var must have shape (2, L, D) (optionally with leading batch "
            f"dims) with L >= 1 and D = {dim} from loc of shape {tuple(loc.shape)}; got "
            f"{tuple(control_var.shape)}"
        )
    if control_var.dtype != loc.dtype:
        raise TypeError(
            f"{cls_name}: control_var must have the dtype of loc ({loc.dtype}), got "
            f"{control_var.dtype}"
        )
    if control_var.device != loc.device:
        raise ValueError(
            f"{cls_name}: control_var must be on the device of loc ({loc.device}), got "
            f"{control_var.device}"
        )
    cv_batch = control_var.shape[:-3]
    try:
        ok = torch.broadcast_shapes(cv_batch, batch_shape) == batch_shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{cls_name}: control_var of shape {tuple(control_var.shape)} has batch dims "
            f"{tuple(cv_batch)} that do not broadcast to the batch shape {tuple(batch_shape)} "
            "of loc and scale_tril"
        )


class _AVFSample(torch.autograd.Function):
    """``loc + L eps`` with the pathwise gradients plus the AVF control variate for ``L``."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        loc: torch.Tensor,
        scale_tril: torch.Tensor,
        control_var: torch.Tensor,
        eps: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(scale_tril, control_var, eps)
        ctx.n_sample = eps.dim() - loc.dim()  # type: ignore[attr-defined]
        return _affine(loc, scale_tril, eps)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scale_tril, control_var, eps = ctx.saved_tensors  # type: ignore[attr-defined]
        n_sample: int = ctx.n_sample  # type: ignore[attr-defined]
        need_loc, need_l, need_cv, _ = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_loc = _sum_samples(grad, n_sample) if need_loc else None
        if not (need_l or need_cv):
            return grad_loc, None, None, None
        dim = grad.shape[-1]
        b_fac, c_fac = control_var.select(-3, 0), control_var.select(-3, 1)
        if scale_tril.dim() == 2 and control_var.dim() == 3:
            # Everything is shared by the batch members: fold them into the draws.
            g2 = grad.reshape(-1, dim)
            e2 = eps.reshape(-1, dim)
            outer = g2.mT @ e2
            if 2 * g2.shape[0] < dim:
                e_mat = (g2 @ scale_tril).mT @ e2
            else:
                e_mat = scale_tril.mT @ outer
        else:
            outer = _outer_sum(grad, eps, n_sample)
            e_mat = scale_tril.mT @ outer
        xi = e_mat - e_mat.mT
        del e_mat
        full = outer.addcmul_(b_fac.mT @ c_fac, xi)  # pathwise + M * xi, per batch member
        grad_l = _sum_to(full, scale_tril.shape[:-2]).tril_()
        grad_cv = None
        if need_cv:
            h = _sum_to(grad_l * xi, control_var.shape[:-3])
            grad_cv = torch.stack((c_fac @ h.mT, b_fac @ h), dim=-3)
        return grad_loc, grad_l if need_l else None, grad_cv, None


class AVFMultivariateNormal(MultivariateNormal):
    r"""Multivariate normal with adaptive-velocity-field control variates for ``scale_tril``.

    Same distribution as :class:`MultivariateNormal` (``log_prob`` and the rest are
    inherited); :meth:`rsample` returns the same kind of draw, but its backward adds a
    zero-mean control variate, weighted by ``control_var``, to the ``scale_tril``
    gradient, and gives ``control_var`` the gradient of half the squared norm of that
    estimate, so that optimizing ``control_var`` alongside the other parameters lowers
    the variance (derivation in the module docstring).

    :param loc: mean, shape ``batch_shape + (D,)``.
    :param scale_tril: lower Cholesky factor of the covariance, ``batch_shape + (D, D)``.
    :param control_var: ``(2, L, D)`` tensor (``L >= 1``; leading batch dims that
        broadcast to ``batch_shape`` are allowed). Zero gives the plain pathwise
        gradient; ``L = 1`` with ``control_var[0] = 0.1`` and ``control_var[1] = 0`` is a
        good start (see the module docstring).
    :param validate_args: check the arguments (default: the global setting).

    Example::

        >>> D, L = 5, 3
        >>> control_var = torch.full((2, L, D), 0.1, requires_grad=True)
        >>> opt_cv = torch.optim.Adam([control_var], lr=0.1, betas=(0.5, 0.999))
        >>> for _ in range(10):
        ...     d = AVFMultivariateNormal(torch.zeros(D), torch.eye(D), control_var)
        ...     d.rsample().pow(2).sum().backward()
        ...     opt_cv.step()
        ...     opt_cv.zero_grad()
    """

    arg_constraints = {
        **MultivariateNormal.arg_constraints,
        "control_var": constraints.real,
    }

    def __init__(
        self,
        loc: torch.Tensor,
        scale_tril: torch.Tensor,
        control_var: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        name = type(self).__name__
        batch_shape = _check_loc_scale_tril(name, loc, scale_tril)
        _check_control_var(name, control_var, loc, batch_shape)
        _check_finite(name, validate_args, loc=loc, scale_tril=scale_tril, control_var=control_var)
        self.control_var = control_var
        super().__init__(loc, scale_tril=scale_tril, validate_args=validate_args)

    def expand(
        self, batch_shape: torch.Size | tuple[int, ...], _instance: object = None
    ) -> AVFMultivariateNormal:
        """Broadcast to a larger ``batch_shape``, keeping ``control_var`` and the class."""
        new = self._get_checked_instance(AVFMultivariateNormal, _instance)
        new.control_var = self.control_var
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Reparameterized draws of shape ``sample_shape + batch_shape + (D,)``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return _AVFSample.apply(self.loc, self._unbroadcasted_scale_tril, self.control_var, eps)
