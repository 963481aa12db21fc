"""Tests for ``OMTMultivariateNormal`` and ``AVFMultivariateNormal``.

Every check is against something computed independently: a closed-form expectation, the
plain pathwise gradient on the same draws, a direct Kronecker solve of the Lyapunov
equation, or autograd through a slow per-draw formula of the AVF estimator.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import vitorch.distributions as dist
from vitorch.distributions.avf_mvn import _AVFSample
from vitorch.distributions.omt_mvn import _OMTSample

F64 = torch.float64


def _random_tril(dim: int, *batch: int, dtype: torch.dtype = F64, jitter: float = 0.3):
    a = torch.randn(*batch, dim, dim, dtype=dtype)
    cov = a @ a.mT / dim + jitter * torch.eye(dim, dtype=dtype)
    return torch.linalg.cholesky(cov)


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


# --------------------------------------------------------------------------- references


def _omt_reference(scale_tril: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-draw OMT gradients (N, D, D) by solving S Sigma + Sigma S = R_ab in vec form."""
    dim = scale_tril.shape[-1]
    eye = torch.eye(dim, dtype=F64)
    sigma = scale_tril @ scale_tril.T
    # Row-major vec: vec(S Sigma) = (I kron Sigma^T) vec(S), vec(Sigma S) = (Sigma kron I) vec(S).
    op = torch.kron(eye, sigma.T.contiguous()) + torch.kron(sigma, eye)
    out = torch.zeros(x.shape[0], dim, dim, dtype=F64)
    for a in range(dim):
        for b in range(a + 1):
            rhs = torch.outer(eye[a], scale_tril[:, b]) + torch.outer(scale_tril[:, b], eye[a])
            s = torch.linalg.solve(op, rhs.reshape(-1)).reshape(dim, dim)
            assert torch.allclose(s, s.T, atol=1e-10)  # the solution is symmetric
            out[:, a, b] = torch.einsum("ni,ij,nj->n", g, s, x)
    return out


def _avf_reference(
    scale_tril: torch.Tensor,
    control_var: torch.Tensor,
    eps: torch.Tensor,
    g: torch.Tensor,
    n_sample: int,
) -> torch.Tensor:
    """The AVF ``scale_tril`` gradient written per draw, differentiable in ``control_var``.

    Shapes: eps, g ``sample + batch + (D,)``; the result has the shape of ``scale_tril``.
    """
    lg = torch.einsum("...ka,...k->...a", scale_tril, g)  # (L^T g_n) per draw and member
    per_draw = g.unsqueeze(-1) * eps.unsqueeze(-2)
    xi_draw = lg.unsqueeze(-1) * eps.unsqueeze(-2) - eps.unsqueeze(-1) * lg.unsqueeze(-2)
    dims = tuple(range(n_sample))
    pathwise = per_draw.sum(dims) if dims else per_draw
    xi = xi_draw.sum(dims) if dims else xi_draw
    b_fac, c_fac = control_var[..., 0, :, :], control_var[..., 1, :, :]
    weights = torch.einsum("...la,...lb->...ab", b_fac, c_fac)
    full = pathwise + weights * xi
    return torch.tril(full.sum_to_size(scale_tril.shape))


# --------------------------------------------------------------------------- per-draw checks


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_omt_matches_direct_lyapunov_solve_per_draw(dim: int) -> None:
    loc, scale_tril = _leaves(torch.randn(dim, dtype=F64), _random_tril(dim))
    weights = torch.randn(7, dim, dtype=F64)
    n_draws = weights.shape[0]
    for draw in range(n_draws):
        # One draw per call, so the returned gradient is the per-draw gradient.
        loc.grad = scale_tril.grad = None
        z = dist.OMTMultivariateNormal(loc, scale_tril).rsample()
        (weights[draw] * torch.sin(z)).sum().backward()
        g = (weights[draw] * torch.cos(z)).detach()
        expected = _omt_reference(scale_tril.detach(), (z - loc).detach()[None], g[None])[0]
        torch.testing.assert_close(scale_tril.grad, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(loc.grad, g, rtol=0, atol=0)


@pytest.mark.parametrize("n_draws", [3, 40])  # both internal paths: N < D and N >= D
def test_omt_summed_gradient_matches_reference(n_draws: int) -> None:
    dim = 6
    loc, scale_tril = _leaves(torch.randn(dim, dtype=F64), _random_tril(dim))
    w = torch.randn(n_draws, dim, dtype=F64)
    z = dist.OMTMultivariateNormal(loc, scale_tril).rsample((n_draws,))
    (w * z + 0.5 * z**2).sum().backward()
    g = (w + z).detach()
    expected = _omt_reference(scale_tril.detach(), (z - loc).detach(), g).sum(0)
    torch.testing.assert_close(scale_tril.grad, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("condition", [1.0, 1e3])
def test_omt_float32_close_to_float64(condition: float) -> None:
    dim, n = 8, 50
    rot = torch.linalg.qr(torch.randn(dim, dim, dtype=F64))[0]
    spectrum = torch.logspace(0, math.log10(condition), dim, dtype=F64)
    tril64 = torch.linalg.cholesky(rot @ torch.diag(spectrum**2) @ rot.T)  # cond(L) = condition
    loc64 = torch.randn(dim, dtype=F64)
    eps64 = torch.randn(n, dim, dtype=F64)
    grads = {}
    for dtype in (torch.float32, F64):
        loc, scale_tril = _leaves(loc64.to(dtype), tril64.to(dtype))
        # The same noise in both precisions (the RNG's float32 and float64 streams differ).
        torch.sin(_OMTSample.apply(loc, scale_tril, eps64.to(dtype))).sum().backward()
        grads[dtype] = scale_tril.grad
    assert grads[torch.float32].dtype == torch.float32
    scale = grads[F64].abs().max()
    # cond(Sigma) = condition**2 reaches 1e6 ~ 1 / float32 eps: allow that much relative error.
    tol = 5e-6 if condition == 1.0 else 1e-2
    torch.testing.assert_close(
        grads[torch.float32].double() / scale, grads[F64] / scale, rtol=0, atol=tol
    )


def test_omt_isotropic_case_is_symmetrized_pathwise() -> None:
    # Sigma = I: the Lyapunov solution is S = (e_a l_b^T + l_b e_a^T) / 2, so the gradient is
    # tril(sym(sum_n g_n eps_n^T)) in closed form.
    dim, n = 4, 6
    loc, scale_tril = _leaves(torch.zeros(dim, dtype=F64), torch.eye(dim, dtype=F64))
    w = torch.randn(n, dim, dtype=F64)
    z = dist.OMTMultivariateNormal(loc, scale_tril).rsample((n,))
    (w * z).sum().backward()
    outer = w.T @ z.detach()
    torch.testing.assert_close(scale_tril.grad, torch.tril(outer + outer.T) / 2)


def test_avf_matches_per_draw_reference_including_control_var_grad() -> None:
    dim, n, rank = 5, 9, 3
    loc, scale_tril, control_var = _leaves(
        torch.randn(dim, dtype=F64), _random_tril(dim), torch.randn(2, rank, dim, dtype=F64)
    )
    w = torch.randn(n, dim, dtype=F64)
    z = dist.AVFMultivariateNormal(loc, scale_tril, control_var).rsample((n,))
    (w * torch.sin(z)).sum().backward()
    g = (w * torch.cos(z)).detach()
    eps = torch.linalg.solve_triangular(scale_tril.detach(), (z - loc).detach().T, upper=False).T
    cv = control_var.detach().clone().requires_grad_()
    expected_l = _avf_reference(scale_tril.detach(), cv, eps, g, 1)
    (0.5 * expected_l.pow(2).sum()).backward()
    torch.testing.assert_close(scale_tril.grad, expected_l.detach())
    torch.testing.assert_close(control_var.grad, cv.grad)
    torch.testing.assert_close(loc.grad, g.sum(0))


def test_avf_with_zero_control_var_is_plain_pathwise() -> None:
    dim, n = 4, 5
    loc, scale_tril = _leaves(torch.randn(dim, dtype=F64), _random_tril(dim))
    control_var = torch.zeros(2, 2, dim, dtype=F64)
    torch.manual_seed(1)
    z = dist.AVFMultivariateNormal(loc, scale_tril, control_var).rsample((n,))
    torch.sin(z).sum().backward()
    avf = scale_tril.grad.clone()
    scale_tril.grad = None
    torch.manual_seed(1)
    z_plain = dist.MultivariateNormal(loc, scale_tril=scale_tril).rsample((n,))
    torch.sin(z_plain).sum().backward()
    torch.testing.assert_close(z, z_plain)
    torch.testing.assert_close(avf, torch.tril(scale_tril.grad))


# --------------------------------------------------------------------------- unbiasedness


def _cos_expectation(w, loc, scale_tril):
    """E[cos(w . z)] for z ~ N(loc, L L^T), in closed form."""
    return torch.cos(w @ loc) * torch.exp(-0.5 * (scale_tril.mT @ w).pow(2).sum())


def _make_estimator(kind: str, loc, scale_tril, control_var):
    if kind == "omt":
        return dist.OMTMultivariateNormal(loc, scale_tril)
    if kind == "avf":
        return dist.AVFMultivariateNormal(loc, scale_tril, control_var)
    return dist.MultivariateNormal(loc, scale_tril=scale_tril)


def _repeated_grads(kind, loc, scale_tril, control_var, fn, reps, n):
    """Mean gradients of ``reps`` independent batches of ``n`` draws each."""
    loc_g, tril_g = [], []
    for _ in range(reps):
        loc.grad = scale_tril.grad = None
        z = _make_estimator(kind, loc, scale_tril, control_var).rsample((n,))
        (fn(z).sum() / n).backward()
        loc_g.append(loc.grad.clone())
        tril_g.append(torch.tril(scale_tril.grad))
    return torch.stack(loc_g), torch.stack(tril_g)


def _assert_mean_within(samples: torch.Tensor, target: torch.Tensor, z_max: float = 5.0) -> None:
    mean = samples.mean(0)
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    excess = (mean - target).abs() - z_max * stderr
    assert excess.max() <= 1e-12, (
        f"Monte Carlo mean off by more than {z_max} standard errors:\n"
        f"mean={mean}\ntarget={target}\nstderr={stderr}"
    )


@pytest.mark.parametrize("kind", ["omt", "avf"])
@pytest.mark.parametrize("case", range(4))
def test_cos_expectation_gradient_matches_closed_form(kind: str, case: int) -> None:
    torch.manual_seed(100 + case)
    dim = (2, 3, 4, 5)[case]
    w = torch.randn(dim, dtype=F64) * 0.8
    loc0, tril0 = torch.randn(dim, dtype=F64), _random_tril(dim)
    control_var = 0.5 * torch.randn(2, 2, dim, dtype=F64)  # arbitrary: any value is unbiased
    loc_x, tril_x = _leaves(loc0, tril0)
    exact_loc, exact_tril = torch.autograd.grad(_cos_expectation(w, loc_x, tril_x), [loc_x, tril_x])
    loc, scale_tril = _leaves(loc0, tril0)
    loc_g, tril_g = _repeated_grads(
        kind, loc, scale_tril, control_var, lambda z: torch.cos(z @ w), reps=40, n=2500
    )
    _assert_mean_within(loc_g, exact_loc)
    _assert_mean_within(tril_g, torch.tril(exact_tril))


@pytest.mark.parametrize("kind", ["omt", "avf"])
def test_unbiased_against_plain_pathwise_on_random_smooth_functions(kind: str) -> None:
    for seed in range(3):
        torch.manual_seed(200 + seed)
        dim, width = 4, 6
        proj = torch.randn(width, dim, dtype=F64)
        bias, coef = torch.randn(width, dtype=F64), torch.randn(width, dtype=F64)
        quad = torch.randn(dim, dim, dtype=F64) * 0.3

        def fn(z, proj=proj, bias=bias, coef=coef, quad=quad):
            return torch.tanh(z @ proj.T + bias) @ coef + ((z @ quad) * z).sum(-1)

        loc, scale_tril = _leaves(torch.randn(dim, dtype=F64), _random_tril(dim))
        control_var = 0.5 * torch.randn(2, 1, dim, dtype=F64)
        state = torch.get_rng_state()
        _, ours = _repeated_grads(kind, loc, scale_tril, control_var, fn, reps=30, n=1000)
        # The same draws for the plain estimator: the difference has mean zero and a small
        # standard error, which makes this a sharp test.
        torch.set_rng_state(state)
        _, plain = _repeated_grads("plain", loc, scale_tril, control_var, fn, reps=30, n=1000)
        _assert_mean_within(ours - plain, torch.zeros(dim, dim, dtype=F64))


# --------------------------------------------------------------------------- variance


def _anisotropic_problem():
    gen = torch.Generator().manual_seed(7)
    dim = 10
    rot = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))[0]
    quad = rot @ torch.diag(torch.logspace(-1, 1, dim, dtype=F64)) @ rot.T
    freq = torch.randn(dim, generator=gen, dtype=F64)
    a = torch.randn(dim, dim, generator=gen, dtype=F64)
    scale_tril = torch.linalg.cholesky(a @ a.T / dim + 0.1 * torch.eye(dim, dtype=F64))
    loc = 0.5 * torch.randn(dim, generator=gen, dtype=F64)

    def fn(z):
        return 0.5 * ((z @ quad) * z).sum(-1) + torch.sin(z @ freq)

    return loc, scale_tril, fn


def _per_draw_variance(kind, loc, scale_tril, fn, control_var=None, draws=10000, seed=11):
    """Total variance of the per-draw ``scale_tril`` gradient (one leaf copy of L per draw)."""
    dim = loc.shape[-1]
    tril = scale_tril.expand(draws, dim, dim).clone().requires_grad_()
    torch.manual_seed(seed)
    fn(_make_estimator(kind, loc, tril, control_var).rsample()).sum().backward()
    return torch.tril(tril.grad).var(0).sum().item()


def test_omt_and_adapted_avf_have_lower_variance_than_pathwise() -> None:
    loc, scale_tril, fn = _anisotropic_problem()
    dim = loc.shape[0]
    plain = _per_draw_variance("plain", loc, scale_tril, fn)
    omt = _per_draw_variance("omt", loc, scale_tril, fn)
    assert omt < plain, (omt, plain)

    control_var = torch.full((2, 1, dim), 0.1, dtype=F64, requires_grad=True)
    before = _per_draw_variance("avf", loc, scale_tril, fn, control_var.detach())
    opt = torch.optim.Adam([control_var], lr=0.05, betas=(0.5, 0.999))
    torch.manual_seed(12)
    for _ in range(400):
        fn(dist.AVFMultivariateNormal(loc, scale_tril, control_var).rsample((4,))).sum().backward()
        opt.step()
        opt.zero_grad()
    after = _per_draw_variance("avf", loc, scale_tril, fn, control_var.detach())
    # The constant start can be worse than plain; adapting must beat both.
    assert after < plain and after < before, (after, before, plain)


# --------------------------------------------------------------------------- batches


def test_batched_omt_equals_per_member() -> None:
    dim, n = 3, 4
    loc, scale_tril = _leaves(torch.randn(2, 3, dim, dtype=F64), _random_tril(dim, 3))
    d = dist.OMTMultivariateNormal(loc, scale_tril)
    assert d.batch_shape == (2, 3)
    z = d.rsample((n, 5))
    assert z.shape == (n, 5, 2, 3, dim)
    w = torch.randn(z.shape, dtype=F64)
    (w * torch.sin(z)).sum().backward()
    g = (w * torch.cos(z)).detach()
    x = (z - loc).detach()
    expected_tril = torch.zeros(3, dim, dim, dtype=F64)
    for i in range(2):
        for j in range(3):
            xs, gs = x[:, :, i, j].reshape(-1, dim), g[:, :, i, j].reshape(-1, dim)
            eps = torch.linalg.solve_triangular(scale_tril[j].detach(), xs.T, upper=False).T
            # Through the unbatched Function on the recovered noise, and the slow reference.
            loc_ij, tril_j = _leaves(loc[i, j], scale_tril[j])
            _OMTSample.apply(loc_ij, tril_j, eps).mul(gs).sum().backward()
            torch.testing.assert_close(tril_j.grad, _omt_reference(tril_j.detach(), xs, gs).sum(0))
            torch.testing.assert_close(loc.grad[i, j], loc_ij.grad)
            expected_tril[j] += tril_j.grad
    torch.testing.assert_close(scale_tril.grad, expected_tril)


def test_batched_avf_equals_per_member() -> None:
    dim, n, rank, members = 4, 6, 2, 3
    loc, scale_tril, control_var = _leaves(
        torch.randn(members, dim, dtype=F64),
        _random_tril(dim, members),
        torch.randn(members, 2, rank, dim, dtype=F64),
    )
    z = dist.AVFMultivariateNormal(loc, scale_tril, control_var).rsample((n,))
    w = torch.randn(z.shape, dtype=F64)
    (w * torch.sin(z)).sum().backward()
    for m in range(members):
        eps = torch.linalg.solve_triangular(
            scale_tril[m].detach(), (z[:, m] - loc[m]).detach().T, upper=False
        ).T
        loc_m, tril_m, cv_m = _leaves(loc[m], scale_tril[m], control_var[m])
        out = _AVFSample.apply(loc_m, tril_m, cv_m, eps)
        (w[:, m] * torch.sin(out)).sum().backward()
        torch.testing.assert_close(loc.grad[m], loc_m.grad)
        torch.testing.assert_close(scale_tril.grad[m], tril_m.grad)
        torch.testing.assert_close(control_var.grad[m], cv_m.grad)


@pytest.mark.parametrize(
    "loc_shape, tril_batch, cv_batch",
    [((3, 4), (), ()), ((4,), (2, 1), ()), ((2, 3, 4), (3,), (2, 1)), ((3, 4), (3,), ())],
)
def test_broadcast_avf_matches_autograd_reference(loc_shape, tril_batch, cv_batch) -> None:
    dim, n, rank = loc_shape[-1], 5, 2
    loc, scale_tril, control_var = _leaves(
        torch.randn(loc_shape, dtype=F64),
        _random_tril(dim, *tril_batch),
        0.5 * torch.randn(*cv_batch, 2, rank, dim, dtype=F64),
    )
    d = dist.AVFMultivariateNormal(loc, scale_tril, control_var)
    z = d.rsample((n,))
    w = torch.randn(z.shape, dtype=F64)
    (w * torch.sin(z)).sum().backward()
    g = (w * torch.cos(z)).detach()
    full_tril = scale_tril.detach().expand(d.batch_shape + (dim, dim))
    eps = torch.linalg.solve_triangular(
        full_tril, (z - loc).detach().unsqueeze(-1), upper=False
    ).squeeze(-1)
    cv = control_var.detach().clone().requires_grad_()
    expected = _avf_reference(scale_tril.detach(), cv, eps, g, 1)
    (0.5 * expected.pow(2).sum()).backward()
    torch.testing.assert_close(scale_tril.grad, expected.detach())
    torch.testing.assert_close(control_var.grad, cv.grad)
    torch.testing.assert_close(loc.grad, g.sum(0).sum_to_size(loc.shape))


def test_broadcast_omt_shared_scale_tril_sums_member_gradients() -> None:
    dim, n = 3, 4
    loc, scale_tril = _leaves(torch.randn(5, dim, dtype=F64), _random_tril(dim))
    z = dist.OMTMultivariateNormal(loc, scale_tril).rsample((n,))
    w = torch.randn(z.shape, dtype=F64)
    (w * z).sum().backward()
    x = (z - loc).detach()
    expected = _omt_reference(scale_tril.detach(), x.reshape(-1, dim), w.reshape(-1, dim)).sum(0)
    torch.testing.assert_close(scale_tril.grad, expected)
    torch.testing.assert_close(loc.grad, w.sum(0))


# --------------------------------------------------------------------------- the distribution


@pytest.mark.parametrize("kind", ["omt", "avf"])
def test_same_draws_and_log_prob_as_plain(kind: str) -> None:
    dim = 4
    loc, scale_tril = torch.randn(2, dim), _random_tril(dim, 2, dtype=torch.float32)
    d = _make_estimator(kind, loc, scale_tril, torch.ones(2, 1, dim))
    plain = dist.MultivariateNormal(loc, scale_tril=scale_tril)
    torch.manual_seed(5)
    z = d.rsample((3,))
    torch.manual_seed(5)
    torch.testing.assert_close(z, plain.rsample((3,)))
    torch.testing.assert_close(d.log_prob(z), plain.log_prob(z))
    torch.testing.assert_close(d.entropy(), plain.entropy())
    assert d.sample((3,)).shape == (3, 2, dim)
    assert d.has_rsample


@pytest.mark.parametrize("kind", ["omt", "avf"])
def test_expand_keeps_class_and_control_var(kind: str) -> None:
    dim = 3
    loc, scale_tril, control_var = _leaves(
        torch.randn(dim, dtype=F64), _random_tril(dim), torch.randn(2, 1, dim, dtype=F64)
    )
    d = _make_estimator(kind, loc, scale_tril, control_var).expand((4, 2))
    assert type(d) is (dist.OMTMultivariateNormal if kind == "omt" else dist.AVFMultivariateNormal)
    assert d.batch_shape == (4, 2)
    if kind == "avf":
        assert d.control_var is control_var
    z = d.rsample((3,))
    assert z.shape == (3, 4, 2, dim)
    (z**2).sum().backward()
    assert scale_tril.grad.shape == (dim, dim) and loc.grad.shape == (dim,)
    if kind == "avf":
        assert control_var.grad.shape == control_var.shape
    assert type(d.expand_by((5,))) is type(d)


@pytest.mark.parametrize("kind", ["omt", "avf"])
def test_only_one_parameter_requires_grad(kind: str) -> None:
    dim, n = 3, 4
    loc0, tril0 = torch.randn(dim, dtype=F64), _random_tril(dim)
    control_var = torch.randn(2, 1, dim, dtype=F64)
    ref_loc, ref_tril = _leaves(loc0, tril0)
    torch.manual_seed(9)
    torch.sin(_make_estimator(kind, ref_loc, ref_tril, control_var).rsample((n,))).sum().backward()

    (loc,) = _leaves(loc0)
    torch.manual_seed(9)
    torch.sin(_make_estimator(kind, loc, tril0, control_var).rsample((n,))).sum().backward()
    torch.testing.assert_close(loc.grad, ref_loc.grad)

    (tril,) = _leaves(tril0)
    torch.manual_seed(9)
    torch.sin(_make_estimator(kind, loc0, tril, control_var).rsample((n,))).sum().backward()
    torch.testing.assert_close(tril.grad, ref_tril.grad)


@pytest.mark.parametrize("kind", ["omt", "avf"])
def test_double_backward_raises_clearly(kind: str) -> None:
    dim = 3
    loc, scale_tril, control_var = _leaves(
        torch.randn(dim, dtype=F64), _random_tril(dim), torch.randn(2, 1, dim, dtype=F64)
    )
    z = _make_estimator(kind, loc, scale_tril, control_var).rsample((2,))
    (grad,) = torch.autograd.grad(torch.sin(z).sum(), scale_tril, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


def test_validation_errors_name_shapes() -> None:
    tril = torch.eye(3)
    cases = [
        (lambda: dist.OMTMultivariateNormal(torch.tensor(0.0), tril), r"loc .*\(\)"),
        (lambda: dist.OMTMultivariateNormal(torch.zeros(3), torch.ones(3)), r"\(3,\)"),
        (lambda: dist.OMTMultivariateNormal(torch.zeros(3), torch.ones(3, 4)), r"\(3, 4\)"),
        (lambda: dist.OMTMultivariateNormal(torch.zeros(2), tril), r"\(2, 2\).*\(3, 3\)"),
        (
            lambda: dist.OMTMultivariateNormal(torch.zeros(2, 3), torch.eye(3).expand(4, 3, 3)),
            r"\(2,\).*\(4,\)",
        ),
        (
            lambda: dist.AVFMultivariateNormal(torch.zeros(3), tril, torch.ones(2, 3)),
            r"\(2, L, D\).*D = 3.*\(2, 3\)",
        ),
        (
            lambda: dist.AVFMultivariateNormal(torch.zeros(3), tril, torch.ones(3, 1, 3)),
            r"\(3, 1, 3\)",
        ),
        (
            lambda: dist.AVFMultivariateNormal(torch.zeros(3), tril, torch.ones(2, 1, 4)),
            r"\(2, 1, 4\)",
        ),
        (
            lambda: dist.AVFMultivariateNormal(torch.zeros(3), tril, torch.ones(2, 0, 3)),
            r"L >= 1",
        ),
        (
            lambda: dist.AVFMultivariateNormal(torch.zeros(5, 3), tril, torch.ones(4, 2, 1, 3)),
            r"\(4,\).*\(5,\)",
        ),
    ]
    for make, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            make()
    with pytest.raises(TypeError, match="dtype"):
        dist.OMTMultivariateNormal(torch.zeros(3, dtype=F64), tril)
    with pytest.raises(TypeError, match="float32 or float64"):
        dist.OMTMultivariateNormal(torch.zeros(3, dtype=torch.long), tril)
    with pytest.raises(TypeError, match="control_var"):
        dist.AVFMultivariateNormal(torch.zeros(3), tril, [[0.0]])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_caught_when_validating(bad: float) -> None:
    loc, tril, cv = torch.zeros(3), torch.eye(3), torch.zeros(2, 1, 3)
    bad_loc = loc.clone()
    bad_loc[1] = bad
    bad_tril = tril.clone()
    bad_tril[2, 0] = bad
    bad_cv = cv.clone()
    bad_cv[1, 0, 2] = bad
    for make, name in [
        (lambda v: dist.OMTMultivariateNormal(bad_loc, tril, validate_args=v), "loc"),
        (lambda v: dist.OMTMultivariateNormal(loc, bad_tril, validate_args=v), "scale_tril"),
        (lambda v: dist.AVFMultivariateNormal(loc, tril, bad_cv, validate_args=v), "control_var"),
    ]:
        with pytest.raises(ValueError, match=name):
            make(True)
        make(False)  # validation off: no check, no error
    dist.enable_validation(False)
    try:
        dist.OMTMultivariateNormal(bad_loc, tril)
    finally:
        dist.enable_validation(True)
    with pytest.raises(ValueError, match="loc"):
        dist.OMTMultivariateNormal(bad_loc, tril)


def test_finite_check_has_no_false_alarm_when_the_sum_overflows() -> None:
    big = torch.full((3,), 3e38)  # finite entries whose float32 sum is inf
    dist.OMTMultivariateNormal(big, torch.eye(3), validate_args=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["omt", "avf"])
def test_cuda_matches_cpu(kind: str) -> None:
    dim, n = 5, 7
    loc0, tril0 = torch.randn(dim, dtype=F64), _random_tril(dim)
    cv0 = torch.randn(2, 2, dim, dtype=F64)
    grads = []
    for device in ("cpu", "cuda"):
        loc, tril, cv = (t.detach().to(device).requires_grad_() for t in (loc0, tril0, cv0))
        eps = torch.randn(n, dim, dtype=F64, generator=torch.Generator().manual_seed(0))
        if kind == "omt":
            z = _OMTSample.apply(loc, tril, eps.to(device))
        else:
            z = _AVFSample.apply(loc, tril, cv, eps.to(device))
        torch.sin(z).sum().backward()
        assert tril.grad.device.type == device
        grads.append([loc.grad.cpu(), tril.grad.cpu()] + ([cv.grad.cpu()] if kind == "avf" else []))
    for cpu, gpu in zip(*grads):
        torch.testing.assert_close(cpu, gpu)


# --------------------------------------------------------------------------- the seed pages


def test_seed_example_avf() -> None:
    """The AVF page's example, with ``pyro`` replaced by ``vitorch``."""
    from vitorch.distributions import AVFMultivariateNormal

    D = 5
    L = 3

    loc = torch.zeros(D)
    scale_tril = torch.eye(D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.tensor(tensor) copy warning
        control_var = torch.tensor(0.1 * torch.ones(2, L, D), requires_grad=True)

    opt_cv = torch.optim.Adam([control_var], lr=0.1, betas=(0.5, 0.999))

    for _ in range(1000):
        d = AVFMultivariateNormal(loc, scale_tril, control_var)
        z = d.rsample()
        cost = torch.pow(z, 2.0).sum()
        cost.backward()
        opt_cv.step()
        opt_cv.zero_grad()

    # With loc = 0 and L = I, L^T g = 2 eps, so xi_ab = 2 (eps_a eps_b - eps_b eps_a) = 0:
    # the control variate and its gradient vanish exactly, and Adam never moves control_var.
    assert torch.equal(control_var.detach(), torch.full((2, L, D), 0.1))


def test_seed_example_omt_first_snippet() -> None:
    """The OMT page's first example, with ``pyro`` replaced by ``vitorch``."""
    from vitorch.distributions import OMTMultivariateNormal

    loc = torch.zeros(3, requires_grad=True)
    scale_tril = torch.eye(3, requires_grad=True)

    dist_ = OMTMultivariateNormal(loc, scale_tril)
    sample = dist_.rsample()
    assert sample.shape == torch.Size([3])
    loss = sample.sum()
    loss.backward()

    torch.testing.assert_close(loc.grad, torch.ones(3))
    # Sigma = I: the OMT gradient is tril(sym(g eps^T)) with g = 1 and eps = sample.
    outer = torch.outer(torch.ones(3), sample.detach())
    torch.testing.assert_close(scale_tril.grad, torch.tril(outer + outer.T) / 2)


def test_seed_example_omt_svi() -> None:
    """The OMT page's SVI example, with ``pyro`` replaced by ``vitorch``."""
    import vitorch
    import vitorch.distributions as dist
    from vitorch.infer import SVI, Trace_ELBO
    from vitorch.optim import Adam

    def model():
        vitorch.sample("z", dist.MultivariateNormal(torch.zeros(3), torch.eye(3)))

    def guide():
        loc = vitorch.param("loc", torch.zeros(3))
        scale_tril = vitorch.param(
            "scale_tril", torch.eye(3), constraint=dist.constraints.lower_cholesky
        )
        vitorch.sample("z", dist.OMTMultivariateNormal(loc, scale_tril))

    svi = SVI(model, guide, Adam({"lr": 0.01}), loss=Trace_ELBO())
    # The guide starts at the exact posterior, where log p(z) - log q(z) = 0 for every z.
    assert abs(svi.step()) < 1e-6
    for _ in range(20):
        assert math.isfinite(svi.step())
    store = vitorch.get_param_store()
    # Both parameters were stepped, and stay near the optimum they started at (an Adam
    # step moves an entry by at most about 3 lr) with a valid Cholesky factor.
    assert not torch.equal(store["loc"], torch.zeros(3))
    assert not torch.equal(store["scale_tril"], torch.eye(3))
    assert (store["loc"].abs() <= 21 * 0.01 * 3).all()
    tril = store["scale_tril"]
    assert torch.equal(tril, torch.tril(tril)) and (tril.diagonal() > 0).all()
    assert torch.allclose(tril, torch.eye(3), atol=21 * 0.01 * 3)


def test_svi_with_omt_guide_recovers_exact_gaussian_posterior() -> None:
    import vitorch
    from vitorch.infer import SVI, Trace_ELBO
    from vitorch.optim import Adam

    mean = torch.tensor([1.0, -2.0, 0.5])
    cov_tril = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.2, 0.8]])

    def model():
        vitorch.sample("z", dist.MultivariateNormal(mean, scale_tril=cov_tril))

    def guide():
        loc = vitorch.param("loc", torch.zeros(3))
        scale_tril = vitorch.param(
            "scale_tril", torch.eye(3), constraint=dist.constraints.lower_cholesky
        )
        vitorch.sample("z", dist.OMTMultivariateNormal(loc, scale_tril))

    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
    svi = SVI(model, guide, Adam({"lr": 0.02}), loss=elbo)
    locs, covs = [], []
    for step in range(1000):
        svi.step()
        if step >= 600:
            store = vitorch.get_param_store()
            tril = store["scale_tril"].detach()
            locs.append(store["loc"].detach().clone())
            covs.append(tril @ tril.T)
    # The last 400 iterates average out Adam's jitter (about lr = 0.02 per coordinate).
    torch.testing.assert_close(torch.stack(locs).mean(0), mean, rtol=0, atol=0.05)
    torch.testing.assert_close(torch.stack(covs).mean(0), cov_tril @ cov_tril.T, rtol=0, atol=0.1)
