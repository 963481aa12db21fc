"""The transforms and constraints in vitorch.distributions.transforms_extra.

Every bijection is checked for ``inv(t(x)) == x``, for its codomain, and for its
log-Jacobian against the autograd Jacobian (float64) over the free coordinates of
its domain; the DCT against ``scipy.fft.dct(norm="ortho")``; the DCT and Haar
transforms for orthogonality. Pyro is used only for cross-checks, behind
``importorskip``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
from torch.autograd.functional import jacobian
from torch.distributions import biject_to, transform_to
from torch.distributions import constraints as tc
from torch.distributions.transforms import ComposeTransform, CorrCholeskyTransform, ExpTransform

from vitorch.distributions.constraints import (
    corr_cholesky_constraint,
    corr_matrix,
    integer,
    ordered_vector,
    positive_ordered_vector,
    sphere,
)
from vitorch.distributions.transforms_extra import (
    CholeskyTransform,
    CorrLCholeskyTransform,
    CorrMatrixCholeskyTransform,
    DiscreteCosineTransform,
    ELUTransform,
    HaarTransform,
    LeakyReLUTransform,
    Normalize,
    OrderedTransform,
    PositivePowerTransform,
    SimplexToOrderedTransform,
    elu,
    leaky_relu,
    register_extra_transforms,
)

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _logdet(f, x: torch.Tensor) -> float:
    """``log|det J|`` of ``f`` at the vector ``x``, from the autograd Jacobian."""
    return torch.linalg.slogdet(jacobian(f, x))[1].item()


def _corr_matrix(n: int, seed: int) -> torch.Tensor:
    a = _randn(n, n + 2, seed=seed)
    cov = a @ a.T
    d = cov.diagonal().rsqrt()
    return cov * d.unsqueeze(-1) * d


# --------------------------------------------------------------------------- elementwise


@pytest.mark.parametrize(
    "t",
    [
        ELUTransform(),
        LeakyReLUTransform(),
        PositivePowerTransform(2.5),
        PositivePowerTransform(0.4),
    ],
    ids=["elu", "leaky", "pow2.5", "pow0.4"],
)
def test_elementwise_bijections(t) -> None:
    x = torch.tensor([-3.0, -0.7, -1e-3, 2e-3, 0.4, 5.0], dtype=F64)
    y = t(x)
    torch.testing.assert_close(t.inv(y), x)
    assert t.codomain.check(y).all()
    # Each output depends only on its own input: the Jacobian is diagonal.
    jac = jacobian(t, x)
    torch.testing.assert_close(jac, torch.diag(jac.diagonal()))
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), jac.diagonal().abs().log())


def test_elementwise_values() -> None:
    x = torch.tensor([-2.0, 0.0, 3.0], dtype=F64)
    torch.testing.assert_close(elu()(x), torch.tensor([math.expm1(-2.0), 0.0, 3.0], dtype=F64))
    torch.testing.assert_close(leaky_relu()(x), torch.tensor([-0.02, 0.0, 3.0], dtype=F64))
    assert isinstance(elu(), ELUTransform) and elu() == ELUTransform()
    assert isinstance(leaky_relu(), LeakyReLUTransform)
    # ELU's codomain is (-1, inf): below -1 is outside, negatives above it inside.
    assert ELUTransform().codomain.check(torch.tensor([-0.5])).all()
    assert not ELUTransform().codomain.check(torch.tensor([-1.5])).any()
    p = PositivePowerTransform(torch.tensor([1.0, 3.0], dtype=F64))
    torch.testing.assert_close(
        p(torch.tensor([-2.0, -2.0], dtype=F64)), torch.tensor([-2.0, -8.0], dtype=F64)
    )
    assert p.forward_shape((4, 1)) == (4, 2)
    assert p.with_cache(1)._cache_size == 1


def test_positive_power_errors() -> None:
    with pytest.raises(ValueError, match="exponent must be > 0"):
        PositivePowerTransform(-1.0, validate_args=True)
    with pytest.raises(TypeError, match="exponent must be a number or a tensor, got str"):
        PositivePowerTransform("2")
    PositivePowerTransform(-1.0, validate_args=False)  # validation can be switched off


# --------------------------------------------------------------------------- ordered


def test_ordered_transform() -> None:
    t = OrderedTransform()
    x = _randn(5, seed=1)
    y = t(x)
    assert ordered_vector.check(y) and t.codomain is ordered_vector
    torch.testing.assert_close(t.inv(y), x)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y).item(), _logdet(t, x))
    batch = _randn(3, 4, seed=2)
    assert t.log_abs_det_jacobian(batch, t(batch)).shape == (3,)


@pytest.mark.parametrize("anchor", [None, 0.7])
def test_simplex_to_ordered(anchor) -> None:
    t = SimplexToOrderedTransform(anchor)
    x = torch.softmax(_randn(5, seed=3), -1)
    y = t(x)
    assert y.shape == (4,) and ordered_vector.check(y)
    torch.testing.assert_close(t.inv(y), x)
    assert tc.simplex.check(t.inv(y))

    def on_free(free: torch.Tensor) -> torch.Tensor:
        return t(torch.cat([free, 1 - free.sum(-1, keepdim=True)]))

    torch.testing.assert_close(t.log_abs_det_jacobian(x, y).item(), _logdet(on_free, x[:-1]))
    assert t.forward_shape((2, 5)) == (2, 4) and t.inverse_shape((2, 4)) == (2, 5)
    anchor_t = torch.tensor([0.0, 1.0], dtype=F64)
    tb = SimplexToOrderedTransform(anchor_t)
    xb = torch.softmax(_randn(2, 5, seed=4), -1)
    torch.testing.assert_close(tb(xb)[1], SimplexToOrderedTransform(1.0)(xb[1]))


# --------------------------------------------------------------------------- Cholesky


def _tril_entries(m: torch.Tensor, offset: int = 0) -> torch.Tensor:
    n = m.size(-1)
    rows, cols = torch.tril_indices(n, n, offset)
    return m[..., rows, cols]


def _symmetric_from(v: torch.Tensor, n: int, offset: int = 0, diag: float = 0.0):
    """Symmetric matrix whose lower triangle (from ``offset``) is ``v``, plus ``diag * I``."""
    rows, cols = torch.tril_indices(n, n, offset)
    lower = torch.zeros(n, n, dtype=v.dtype).index_put((rows, cols), v)
    return lower + lower.tril(-1).T + diag * torch.eye(n, dtype=v.dtype)


def test_cholesky_transform() -> None:
    n = 4
    a = _randn(n, n, seed=5)
    x = a @ a.T + n * torch.eye(n, dtype=F64)
    t = CholeskyTransform()
    y = t(x)
    assert tc.lower_cholesky.check(y)
    torch.testing.assert_close(t.inv(y), x)
    # Free coordinates: the lower triangle (with diagonal) of x and of y.
    lower = _tril_entries(x)

    def on_free(v: torch.Tensor) -> torch.Tensor:
        m = _symmetric_from(v, n)
        return _tril_entries(t(m))

    torch.testing.assert_close(t.log_abs_det_jacobian(x, y).item(), _logdet(on_free, lower))
    torch.testing.assert_close(torch.linalg.cholesky(x), y)


def test_corr_matrix_cholesky_transform() -> None:
    n = 4
    x = _corr_matrix(n, seed=6)
    assert corr_matrix.check(x)
    t = CorrMatrixCholeskyTransform()
    y = t(x)
    assert corr_cholesky_constraint.check(y) and t.codomain is tc.corr_cholesky
    torch.testing.assert_close(t.inv(y), x)

    def on_free(v: torch.Tensor) -> torch.Tensor:
        return _tril_entries(t(_symmetric_from(v, n, offset=-1, diag=1.0)), -1)

    logdet = _logdet(on_free, _tril_entries(x, -1))
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y).item(), logdet)


def test_corr_l_cholesky_is_torch_corr_cholesky() -> None:
    with pytest.warns(FutureWarning, match="CorrCholeskyTransform"):
        t = CorrLCholeskyTransform()
    x = _randn(2, 6, seed=7)
    ref = CorrCholeskyTransform()
    torch.testing.assert_close(t(x), ref(x))
    torch.testing.assert_close(t.log_abs_det_jacobian(x, t(x)), ref.log_abs_det_jacobian(x, ref(x)))
    assert isinstance(t.with_cache(1), CorrCholeskyTransform)


# --------------------------------------------------------------------------- DCT and Haar


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_dct_matches_scipy(n: int) -> None:
    x = _randn(3, n, seed=n)
    t = DiscreteCosineTransform()
    y = t(x)
    np.testing.assert_allclose(y.numpy(), scipy.fft.dct(x.numpy(), norm="ortho"), atol=1e-12)
    torch.testing.assert_close(t.inv(y), x)
    np.testing.assert_allclose(
        t.inv(x).numpy(), scipy.fft.idct(x.numpy(), norm="ortho"), atol=1e-12
    )
    y2 = DiscreteCosineTransform(dim=-2)(x.T)
    np.testing.assert_allclose(
        y2.numpy(), scipy.fft.dct(x.T.numpy(), axis=0, norm="ortho"), atol=1e-12
    )


def _matrix_of(t, n: int) -> torch.Tensor:
    """Matrix ``M`` with ``t(x) = M x`` (column ``j`` is the image of ``e_j``)."""
    return t(torch.eye(n, dtype=F64)).T


@pytest.mark.parametrize("n", [1, 2, 3, 6, 8, 11])
def test_dct_and_haar_are_orthogonal(n: int) -> None:
    for t in (DiscreteCosineTransform(), HaarTransform(), HaarTransform(flip=True)):
        m = _matrix_of(t, n)
        torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=F64))
        x = _randn(4, n, seed=n)
        torch.testing.assert_close(t.inv(t(x)), x)
        assert t.log_abs_det_jacobian(x, t(x)).shape == (4,)
        assert (t.log_abs_det_jacobian(x, t(x)) == 0).all()


def test_haar_values_and_dims() -> None:
    x = torch.tensor([1.0, 3.0, 5.0, 11.0], dtype=F64)
    r = math.sqrt(0.5)
    # Pair sums and differences, then the same for the sums.
    want = torch.tensor([20 * r * r, (4 - 16) * r * r, (1 - 3) * r, (5 - 11) * r], dtype=F64)
    torch.testing.assert_close(HaarTransform()(x), want)
    torch.testing.assert_close(HaarTransform(flip=True)(x), HaarTransform()(x.flip(0)))
    x3 = _randn(2, 5, 3, seed=9)
    t = HaarTransform(dim=-2)
    assert t.domain.event_dim == 2
    torch.testing.assert_close(t(x3), HaarTransform()(x3.transpose(-1, -2)).transpose(-1, -2))
    torch.testing.assert_close(t.inv(t(x3)), x3)
    assert t.log_abs_det_jacobian(x3, t(x3)).shape == (2,)


@pytest.mark.parametrize("smooth", [1.0, -0.5, 2.0])
def test_dct_smooth_has_unit_determinant(smooth: float) -> None:
    n = 7
    t = DiscreteCosineTransform(smooth=smooth)
    m = _matrix_of(t, n)
    torch.testing.assert_close(torch.linalg.slogdet(m)[1], torch.tensor(0.0, dtype=F64))
    # Coefficient k scaled by (k + 1/2)**smooth relative to the plain DCT.
    plain = _matrix_of(DiscreteCosineTransform(), n)
    ratio = (m / plain)[:, 0]
    freq = torch.arange(n, dtype=F64) + 0.5
    torch.testing.assert_close(ratio / ratio[0], (freq / 0.5) ** smooth)
    x = _randn(n, seed=10)
    torch.testing.assert_close(t.inv(t(x)), x)


def test_dct_haar_errors_and_equality() -> None:
    with pytest.raises(ValueError, match="dim must be a negative int.*got 0"):
        DiscreteCosineTransform(dim=0)
    with pytest.raises(ValueError, match="dim must be a negative int.*got 1"):
        HaarTransform(dim=1)
    with pytest.raises(TypeError, match="smooth must be a real number"):
        DiscreteCosineTransform(smooth="1")
    with pytest.raises(ValueError, match="too few dims"):
        DiscreteCosineTransform(dim=-3).forward_shape((4, 4))
    assert DiscreteCosineTransform(-2, 1.0) == DiscreteCosineTransform(-2, 1.0)
    assert DiscreteCosineTransform(-2, 1.0) != DiscreteCosineTransform(-1, 1.0)
    assert HaarTransform(flip=True) != HaarTransform()
    assert HaarTransform().with_cache(1)._cache_size == 1


# --------------------------------------------------------------------------- Normalize and constraints


def test_normalize() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1.0, 1.0]], dtype=F64)
    y = Normalize()(x)
    torch.testing.assert_close(y[0], torch.tensor([0.6, 0.8], dtype=F64))
    torch.testing.assert_close(y[1], torch.tensor([1.0, 0.0], dtype=F64))
    assert sphere.check(y).all()
    y1 = Normalize(p=1)(x)
    torch.testing.assert_close(y1[2], torch.tensor([-0.5, 0.5], dtype=F64))
    assert Normalize().inv(y) is y
    assert not Normalize.bijective
    with pytest.raises(ValueError, match="p must be a non-negative number, got -1"):
        Normalize(p=-1)


def test_constraints() -> None:
    assert ordered_vector.check(torch.tensor([[-1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])).tolist() == [
        True,
        False,
    ]
    assert ordered_vector.check(torch.tensor([5.0])) and not ordered_vector.check(torch.tensor(1.0))
    assert positive_ordered_vector.check(torch.tensor([[0.5, 1.0], [-0.5, 1.0]])).tolist() == [
        True,
        False,
    ]
    assert ordered_vector.event_dim == 1 and positive_ordered_vector.event_dim == 1
    assert sphere.check(torch.tensor([[0.6, 0.8], [0.6, 0.81]])).tolist() == [True, False]
    c = _corr_matrix(3, seed=11)
    assert corr_matrix.check(torch.stack([c, 2 * c])).tolist() == [True, False]
    assert integer.check(torch.tensor([-3.0, 0.0, 2.5])).tolist() == [True, True, False]
    assert integer.is_discrete and corr_matrix.event_dim == 2


def test_registrations() -> None:
    register_extra_transforms()
    register_extra_transforms()  # idempotent
    x = _randn(2, 4, seed=12)
    assert isinstance(biject_to(ordered_vector), OrderedTransform)
    assert ordered_vector.check(transform_to(ordered_vector)(x)).all()
    pos = biject_to(positive_ordered_vector)
    assert isinstance(pos, ComposeTransform) and isinstance(pos.parts[1], ExpTransform)
    assert positive_ordered_vector.check(pos(x)).all()
    corr = biject_to(corr_matrix)
    c = corr(_randn(2, 6, seed=13))
    assert c.shape == (2, 4, 4) and corr_matrix.check(c).all()
    torch.testing.assert_close(corr.inv(c), _randn(2, 6, seed=13))
    assert corr_matrix.check(transform_to(corr_matrix)(_randn(6, seed=16)))
    assert isinstance(transform_to(sphere), Normalize)
    with pytest.raises(NotImplementedError):
        biject_to(sphere)


# --------------------------------------------------------------------------- Pyro cross-checks


def test_cross_check_with_pyro() -> None:
    pytest.importorskip("pyro")
    import pyro.distributions.transforms as pt

    x = _randn(3, 6, seed=14)
    pairs = [
        (DiscreteCosineTransform(smooth=1.5), pt.DiscreteCosineTransform(smooth=1.5), x),
        (HaarTransform(dim=-2, flip=True), pt.HaarTransform(dim=-2, flip=True), x),
        (OrderedTransform(), pt.OrderedTransform(), x),
        (ELUTransform(), pt.ELUTransform(), x),
        (LeakyReLUTransform(), pt.LeakyReLUTransform(), x),
        (PositivePowerTransform(1.7), pt.PositivePowerTransform(1.7), x),
        (SimplexToOrderedTransform(), pt.SimplexToOrderedTransform(), torch.softmax(x, -1)),
        (Normalize(), pt.Normalize(), x),
    ]
    for ours, theirs, v in pairs:
        torch.testing.assert_close(ours(v), theirs(v))
        if ours.bijective and not isinstance(ours, PositivePowerTransform):
            y = ours(v)
            torch.testing.assert_close(
                ours.log_abs_det_jacobian(v, y), theirs.log_abs_det_jacobian(v, y)
            )
    c = _corr_matrix(4, seed=15)
    for ours, theirs in [
        (CholeskyTransform(), pt.CholeskyTransform()),
        (CorrMatrixCholeskyTransform(), pt.CorrMatrixCholeskyTransform()),
    ]:
        y = ours(c)
        torch.testing.assert_close(y, theirs(c))
        torch.testing.assert_close(
            ours.log_abs_det_jacobian(c, y), theirs.log_abs_det_jacobian(c, y)
        )
