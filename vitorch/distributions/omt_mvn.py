r"""Multivariate normal whose ``rsample`` carries optimal-transport (OMT) gradients.

A draw is ``z = loc + L eps`` with ``eps ~ N(0, I)`` and ``Sigma = L L^T``. The gradient
for ``loc`` is the ordinary pathwise one, ``sum_n g_n``, where ``g_n = dloss/dz_n`` is the
upstream gradient of draw ``n``. Only the gradient for the Cholesky factor ``L`` changes.

Derivation
----------
Moving one entry ``L_ab`` (``a >= b``) changes the covariance by
``dSigma = e_a l_b^T + l_b e_a^T`` (``l_b`` is column ``b`` of ``L``). Any velocity field
``v(z)`` that satisfies the continuity equation of this change of the Gaussian gives an
unbiased estimate ``g^T v(z)``; the reparameterization ``v = e_a eps_b`` is one of them,
the optimal-transport field is the linear one ``v(z) = S (z - loc)`` with ``S`` symmetric and

    S Sigma + Sigma S = e_a l_b^T + l_b e_a^T                         (Lyapunov)

Write ``x_n = z_n - loc`` and ``A_sym = sym(sum_n x_n g_n^T)``. Summed over draws the
gradient is ``sum_n g_n^T S x_n = <S, A_sym>`` (Frobenius product; ``S`` is symmetric).
The Lyapunov operator ``Lyap(S) = S Sigma + Sigma S`` is self-adjoint for that product, so

    <Lyap^{-1}(R_ab), A_sym> = <R_ab, Y>   with   Y Sigma + Sigma Y = A_sym,

i.e. ONE Lyapunov solve serves all ``D (D + 1) / 2`` entries, and
``<e_a l_b^T + l_b e_a^T, Y> = 2 (Y L)_ab``. In the eigenbasis ``Sigma = U diag(lam) U^T``
the solve is element-wise: with primed quantities ``g' = U^T g``, ``x' = U^T x``,

    K = sum_n g'_n x'_n^T,   P_ij = K_ij / (lam_i + lam_j),   2 Y = U (P + P^T) U^T,

    grad_L = tril(U (P + P^T) U^T L).

Two forms of ``K`` are used, whichever is cheaper: from the draws,
``K = (G U)^T (E A^T)`` with ``A = U^T L`` (rows of ``G`` and ``E`` are ``g_n`` and
``eps_n``: ``3 N D^2`` flops), or from the pathwise statistic ``C = sum_n g_n eps_n^T``,
``K = U^T C A^T`` (``N D^2 + 2 D^3``). Either way the backward costs
``O(N D^2 + D^3)`` time and ``O(N D + D^2)`` memory: one symmetric eigendecomposition
(``torch.linalg.eigh``), a handful of ``D x D`` products and no per-draw ``D x D`` matrix.

Accuracy: the Lyapunov operator has condition number ``cond(Sigma) = cond(L)^2``, so the
gradient carries a relative error of about ``cond(L)^2 * finfo.eps`` whatever the method.
An eigenvalue below ``finfo.eps * max(lam)`` is below ``eigh``'s resolution (it can even
come back zero or negative), so eigenvalues are floored there: ``P`` stays finite, and
since ``x'_j`` and row ``j`` of ``A`` both scale like ``sqrt(lam_j)`` every term of the
result stays bounded by ``|g'|``; only directions the dtype cannot resolve are touched.

Batches: ``loc`` of shape ``batch + (D,)`` and ``scale_tril`` of ``batch + (D, D)`` broadcast
against each other; one Lyapunov solve is done per distinct ``L``. Double backward through
``rsample`` is not supported (the gradient is computed outside autograd).
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.distributions import Distribution
from torch.distributions.utils import _standard_normal

from .torch import MultivariateNormal

__all__ = ["OMTMultivariateNormal"]


def _check_loc_scale_tril(cls_name: str, loc: torch.Tensor, scale_tril: torch.Tensor) -> torch.Size:
    """Validate shapes/dtypes of ``loc`` and ``scale_tril``; return the broadcast batch shape."""
    for name, value in (("loc", loc), ("scale_tril", scale_tril)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{cls_name}: {name} must be a torch.Tensor, got {type(value).__name__}"
            )
        if value.dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"{cls_name}: {name} must be float32 or float64, got dtype {value.dtype}"
            )
    if loc.dim() < 1:
        raise ValueError(
            f"{cls_name}: loc must have shape batch_shape + (D,), got a scalar of shape "
            f"{tuple(loc.shape)}"
        )
    dim = loc.shape[-1]
    if scale_tril.dim() < 2 or scale_tril.shape[-1] != scale_tril.shape[-2]:
        raise ValueError(
            f"{cls_name}: scale_tril must have shape batch_shape + (D, D), got shape "
            f"{tuple(scale_tril.shape)}"
        )
    if scale_tril.shape[-1] != dim:
        raise ValueError(
            f"{cls_name}: loc has shape {tuple(loc.shape)} (D={dim}), so scale_tril must "
            f"have shape batch_shape + ({dim}, {dim}); got {tuple(scale_tril.shape)}"
        )
    if loc.dtype != scale_tril.dtype:
        raise TypeError(
            f"{cls_name}: loc and scale_tril must share a dtype, got {loc.dtype} and "
            f"{scale_tril.dtype}"
        )
    if loc.device != scale_tril.device:
        raise ValueError(
            f"{cls_name}: loc and scale_tril must be on one device, got {loc.device} and "
            f"{scale_tril.device}"
        )
    try:
        return torch.broadcast_shapes(loc.shape[:-1], scale_tril.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"{cls_name}: batch shapes do not broadcast: loc has shape {tuple(loc.shape)} "
            f"(batch {tuple(loc.shape[:-1])}), scale_tril has shape "
            f"{tuple(scale_tril.shape)} (batch {tuple(scale_tril.shape[:-2])})"
        ) from None


def _check_finite(cls_name: str, validate_args: bool | None, **tensors: torch.Tensor) -> None:
    """When validation is on, reject NaN/inf, which the ``real`` constraints let through."""
    if not (Distribution._validate_args if validate_args is None else validate_args):
        return
    for name, value in tensors.items():
        # A finite sum proves every entry finite and is ~10x cheaper than isfinite().all();
        # only an overflowing (or truly non-finite) sum pays for the exact check.
        if not bool(torch.isfinite(value.sum())) and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{cls_name}: {name} must be finite, got a tensor of shape "
                f"{tuple(value.shape)} containing NaN or inf"
            )


def _affine(loc: torch.Tensor, scale_tril: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``loc + scale_tril @ eps`` for every draw, without a per-draw copy of ``scale_tril``."""
    dim = eps.shape[-1]
    if scale_tril.dim() == 2:
        # One GEMM over all leading dims; the unbatched loc rides along as the bias.
        flat = eps.reshape(-1, dim)
        if loc.dim() == 1:
            return torch.addmm(loc, flat, scale_tril.mT).reshape(eps.shape)
        return (flat @ scale_tril.mT).reshape(eps.shape) + loc
    # Batched L: put the draws in the columns so each batch member is one (D, D) @ (D, N).
    n_sample = eps.dim() - loc.dim()
    batch = eps.shape[n_sample:-1]
    cols = eps.reshape((-1,) + batch + (dim,)).movedim(0, -1)
    out = torch.matmul(scale_tril, cols).movedim(-1, 0).reshape(eps.shape)
    return out + loc


def _sum_samples(value: torch.Tensor, n_sample: int) -> torch.Tensor:
    """Sum over the leading ``n_sample`` (draw) dims."""
    return value.sum(dim=tuple(range(n_sample))) if n_sample else value


def _outer_sum(g: torch.Tensor, eps: torch.Tensor, n_sample: int) -> torch.Tensor:
    """``sum_n g_n eps_n^T`` over the draw dims: shape ``batch + (D, D)``, ``O(N D^2)``."""
    dim = g.shape[-1]
    batch = g.shape[n_sample:-1]
    members = batch.numel()
    if members == 1:
        g2 = g.reshape(-1, dim)
        return (g2.mT @ eps.reshape(-1, dim)).reshape(batch + (dim, dim))
    g3 = g.reshape(-1, members, dim).permute(1, 2, 0)
    e3 = eps.reshape(-1, members, dim).transpose(0, 1)
    return torch.bmm(g3, e3).reshape(batch + (dim, dim))


def _sum_to(value: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """Reduce the batch dims of ``value`` (``... + (D, D)``) to broadcast-compatible ``batch``."""
    target = batch + value.shape[-2:]
    return value if value.shape == target else value.sum_to_size(target)


def _omt_scale_tril_grad(
    scale_tril: torch.Tensor,
    g: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    outer: torch.Tensor | None = None,
) -> torch.Tensor:
    """The OMT gradient for ``scale_tril`` (module docstring), batched over its leading dims.

    Either ``outer = sum_n g_n eps_n^T`` (shape of ``scale_tril``) or, for an unbatched
    ``scale_tril``, the draws ``g`` and ``eps`` flattened to ``(N, D)``.
    """
    sigma = scale_tril @ scale_tril.mT
    lam, u = torch.linalg.eigh(sigma)
    del sigma
    # eigh sorts ascending, so the largest eigenvalue is the last one.
    lam = torch.maximum(lam, lam[..., -1:] * torch.finfo(lam.dtype).eps)
    a = u.mT @ scale_tril  # U^T L
    if outer is None:
        assert g is not None and eps is not None
        k = (g @ u).mT @ (eps @ a.mT)
    else:
        k = (u.mT @ outer) @ a.mT
        del outer  # the caller passes its only reference: free it before the next D x D
    k.div_(lam.unsqueeze(-1) + lam.unsqueeze(-2))
    q = k + k.mT
    del k
    return (u @ (q @ a)).tril_()


class _OMTSample(torch.autograd.Function):
    """``loc + L eps`` with the pathwise ``loc`` gradient and the OMT ``L`` gradient."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, loc: torch.Tensor, scale_tril: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(scale_tril, eps)
        ctx.n_sample = eps.dim() - loc.dim()  # type: ignore[attr-defined]
        return _affine(loc, scale_tril, eps)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scale_tril, eps = ctx.saved_tensors  # type: ignore[attr-defined]
        n_sample: int = ctx.n_sample  # type: ignore[attr-defined]
        need_loc, need_l, _ = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_loc = _sum_samples(grad, n_sample) if need_loc else None
        grad_l = None
        if need_l:
            dim = grad.shape[-1]
            if scale_tril.dim() == 2:
                g2 = grad.reshape(-1, dim)
                e2 = eps.reshape(-1, dim)
                if g2.shape[0] < dim:
                    grad_l = _omt_scale_tril_grad(scale_tril, g=g2, eps=e2)
                else:
                    grad_l = _omt_scale_tril_grad(scale_tril, outer=g2.mT @ e2)
            else:
                grad_l = _omt_scale_tril_grad(
                    scale_tril,
                    outer=_sum_to(_outer_sum(grad, eps, n_sample), scale_tril.shape[:-2]),
                )
        return grad_loc, grad_l, None


class OMTMultivariateNormal(MultivariateNormal):
    r"""Multivariate normal with optimal-transport gradients for ``scale_tril``.

    Same distribution as :class:`MultivariateNormal` (``log_prob``, ``entropy``, ... are
    inherited); only :meth:`rsample` differs, and only in its backward: the ``loc``
    gradient is the pathwise one and the ``scale_tril`` gradient is the optimal-transport
    one (see the module docstring for the derivation). Same expectation, usually lower
    variance; the backward costs one ``D x D`` eigendecomposition more.

    :param loc: mean, shape ``batch_shape + (D,)``.
    :param scale_tril: lower Cholesky factor of the covariance, shape
        ``batch_shape + (D, D)``; batch shapes broadcast.
    :param validate_args: check the arguments (default: the global setting).

    Example::

        >>> loc = torch.zeros(3, requires_grad=True)
        >>> scale_tril = torch.eye(3, requires_grad=True)
        >>> z = OMTMultivariateNormal(loc, scale_tril).rsample((10,))
        >>> z.pow(2).sum().backward()
        >>> scale_tril.grad.shape
        torch.Size([3, 3])
    """

    def __init__(
        self,
        loc: torch.Tensor,
        scale_tril: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        _check_loc_scale_tril(type(self).__name__, loc, scale_tril)
        _check_finite(type(self).__name__, validate_args, loc=loc, scale_tril=scale_tril)
        super().__init__(loc, scale_tril=scale_tril, validate_args=validate_args)

    def expand(
        self, batch_shape: torch.Size | tuple[int, ...], _instance: object = None
    ) -> OMTMultivariateNormal:
        """Broadcast to a larger ``batch_shape``; the result is still OMT."""
        new = self._get_checked_instance(OMTMultivariateNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Reparameterized draws of shape ``sample_shape + batch_shape + (D,)``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return _OMTSample.apply(self.loc, self._unbroadcasted_scale_tril, eps)
