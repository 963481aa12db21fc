"""AutoStructured against Gaussian posteriors known in closed form.

The test models are linear-Gaussian, so the posterior is Gaussian and exact:

- ``chain``: x ~ N(0, 1), y | x ~ N(A x, S), d ~ N(x + y, SIGMA) observed. The posterior
  correlation of (x, y) is about -0.93, so the mean-field scales are far from the marginal
  ones and a guide without the dependency cannot fit the covariance.
- ``hierarchical``: mu ~ N(0, 1), z_i | mu ~ N(mu, TAU) in a plate, x_i ~ N(z_i, SIGMA_H).

With "mvn" (or, for scalar sites, "normal") conditionals and a linear dependency along the
posterior's edge the guide family contains the posterior, so SVI must find its mean and
covariance; "delta" conditionals give the MAP (the mean), and "normal" conditionals without
dependencies the mean-field optimum: the mean, and scales ``1 / sqrt(diag(precision))``.
Fits use 800 steps of 16 vectorized particles and a decaying learning rate; the tolerances
(a tenth of a posterior sd for means, 5% for sds, 0.06 for correlations) are those of the
other autoguide tests, about twice the largest error seen over several seeds. The guide's density is checked exactly against the
Gaussian it implies.
"""

from __future__ import annotations

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide.structured import AutoStructured

A, S, SIGMA, D = -0.5, 0.5, 0.3, 1.2
N, TAU, SIGMA_H = 3, 0.7, 0.5
X_H = torch.tensor([0.8, -0.3, 1.5])


def chain(d: torch.Tensor) -> None:
    x = vitorch.sample("x", dist.Normal(0.0, 1.0))
    y = vitorch.sample("y", dist.Normal(A * x, S))
    vitorch.sample("d", dist.Normal(x + y, SIGMA), obs=d)


def chain_posterior() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of (x, y): the precision is that of the quadratic log-joint."""
    p = 1 / SIGMA**2
    precision = torch.tensor(
        [[1 + A**2 / S**2 + p, -A / S**2 + p], [-A / S**2 + p, 1 / S**2 + p]],
        dtype=torch.double,
    )
    cov = torch.linalg.inv(precision)
    return cov @ torch.tensor([D * p, D * p], dtype=torch.double), cov


def hierarchical(x: torch.Tensor) -> None:
    mu = vitorch.sample("mu", dist.Normal(0.0, 1.0))
    with vitorch.plate("data", N):
        z = vitorch.sample("z", dist.Normal(mu, TAU))
        vitorch.sample("x", dist.Normal(z, SIGMA_H), obs=x)


def hierarchical_posterior() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of (mu, z_1 .. z_N)."""
    precision = torch.zeros(N + 1, N + 1, dtype=torch.double)
    precision[0, 0] = 1 + N / TAU**2
    precision[0, 1:] = precision[1:, 0] = -1 / TAU**2
    precision[1:, 1:] = torch.eye(N, dtype=torch.double) * (1 / TAU**2 + 1 / SIGMA_H**2)
    cov = torch.linalg.inv(precision)
    rhs = torch.cat([torch.zeros(1), X_H / SIGMA_H**2]).double()
    return cov @ rhs, cov


def fit(model, guide, steps: int, *args, particles: int = 16, lr: float = 0.05) -> None:
    """``steps`` SVI steps, the learning rate decaying to 2% of ``lr``."""
    optim = vitorch.optim.ClippedAdam({"lr": lr, "lrd": 0.02 ** (1 / steps)})
    loss = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1)
    svi = SVI(model, guide, optim, loss)
    for _ in range(steps):
        svi.step(*args)


def implied_gaussian(guide: AutoStructured, order: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the flat unconstrained values, for linear dependencies.

    Each site's noise is ``own @ eps_site + sum_u W_u @ noise_u``; stacking the rows of
    the map from all the eps gives the factor ``F`` of the covariance ``F F^T``.
    """
    sizes = {name: getattr(guide.locs, name).numel() for name in order}
    total = sum(sizes.values())
    rows: dict[str, torch.Tensor] = {}
    start = 0
    for name in order:
        n = sizes[name]
        row = torch.zeros(n, total, dtype=torch.double)
        conditional = guide.conditionals[name]
        if conditional != "delta":
            own = torch.diag(getattr(guide.scales, name)).double()
            if conditional == "mvn":
                own = own @ getattr(guide.scale_trils, name).double()
            row[:, start : start + n] = own
        for upstream in guide.dependencies.get(name, {}):
            weight = getattr(getattr(guide.deps, name), upstream).weight.double()
            row = row + weight @ rows[upstream]
        rows[name] = row
        start += n
    factor = torch.cat([rows[name] for name in order]).detach()
    mean = torch.cat([getattr(guide.locs, name) for name in order]).double().detach()
    return mean, factor @ factor.T


def check_gaussian(mean, cov, exact_mean, exact_cov) -> None:
    sd = exact_cov.diagonal().sqrt()
    assert ((mean - exact_mean) / sd).abs().max() < 0.1, (mean, exact_mean)
    found_sd = cov.diagonal().sqrt()
    assert (found_sd / sd - 1).abs().max() < 0.05, (found_sd, sd)
    corr = exact_cov / sd[:, None] / sd
    found_corr = cov / found_sd[:, None] / found_sd
    assert (found_corr - corr).abs().max() < 0.06, (found_corr, corr)


# -- exact posteriors -------------------------------------------------------------------------


@pytest.mark.parametrize("conditional", ["mvn", "normal"])
def test_linear_dependency_recovers_the_exact_joint_posterior(conditional: str) -> None:
    mean, cov = chain_posterior()
    assert cov[0, 1] / cov.diagonal().prod().sqrt() < -0.9
    guide = AutoStructured(chain, conditionals=conditional)
    fit(chain, guide, 800, torch.tensor(D))
    assert guide.dependencies == {"y": {"x": "linear"}}
    check_gaussian(*implied_gaussian(guide, ["x", "y"]), mean, cov)
    median = guide.median()
    assert torch.equal(median["x"], guide.locs.x.detach().reshape(()))


def test_delta_conditionals_find_the_map() -> None:
    # A Delta guide's ELBO is the log joint itself: no noise in the gradient, so the fit
    # reaches the mode (the Gaussian posterior's mean) to optimizer precision.
    mean, _ = chain_posterior()
    guide = AutoStructured(chain, conditionals="delta")
    fit(chain, guide, 800, torch.tensor(D), particles=1, lr=0.1)
    found = torch.cat([guide.locs.x, guide.locs.y]).double().detach()
    assert torch.allclose(found, mean, atol=1e-3), (found, mean)
    assert not hasattr(guide.scales, "x") and not hasattr(guide.scale_trils, "x")


def test_normal_conditionals_without_dependencies_give_the_mean_field_optimum() -> None:
    mean, cov = chain_posterior()
    mean_field = torch.linalg.inv(cov).diagonal().rsqrt()
    assert (cov.diagonal().sqrt() / mean_field).min() > 2  # far from the marginal sds
    guide = AutoStructured(chain, conditionals="normal", dependencies={})
    fit(chain, guide, 800, torch.tensor(D))
    found = torch.cat([guide.locs.x, guide.locs.y]).double().detach()
    assert ((found - mean) / cov.diagonal().sqrt()).abs().max() < 0.1
    scales = torch.cat([guide.scales.x, guide.scales.y]).double().detach()
    assert (scales / mean_field - 1).abs().max() < 0.05, (scales, mean_field)


def test_local_latents_in_a_plate_depend_on_the_global_one() -> None:
    mean, cov = hierarchical_posterior()
    guide = AutoStructured(hierarchical)
    fit(hierarchical, guide, 800, X_H)
    assert guide.dependencies == {"z": {"mu": "linear"}}
    assert guide.deps.z.mu.weight.shape == (N, 1)
    assert guide.scale_trils.z.shape == (N, N)
    check_gaussian(*implied_gaussian(guide, ["mu", "z"]), mean, cov)


# -- the guide's density ----------------------------------------------------------------------


def mixed(data: torch.Tensor) -> None:
    s = vitorch.sample("s", dist.LogNormal(0.0, 1.0))
    with vitorch.plate("p", 2):
        u = vitorch.sample("u", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    vitorch.sample("obs", dist.Normal(u.sum() * s, 1.0), obs=data)


def test_guide_density_is_the_implied_gaussian_with_the_change_of_variables() -> None:
    guide = AutoStructured(mixed, dependencies={"u": {"s": "linear"}})
    data = torch.tensor(0.5)
    guide(data)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in guide.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    tr = handlers.trace(guide).get_trace(data)
    mean, cov = implied_gaussian(guide, ["s", "u"])
    s, u = tr.nodes["s"]["value"], tr.nodes["u"]["value"]
    assert u.shape == (2, 3)
    flat = torch.cat([s.log().reshape(1), u.reshape(-1)]).double()
    # log q(s, u) = log N(log s, u) - log s (the Jacobian of exp).
    expected = dist.MultivariateNormal(mean, cov).log_prob(flat) - s.log().double()
    total = tr.log_prob_sum()
    assert torch.allclose(total.double(), expected, atol=1e-4), (total, expected)
    assert tr.nodes["s_aux"]["infer"]["is_auxiliary"]


def test_callable_conditional_and_callable_dependency() -> None:
    def noise():
        return vitorch.sample("x_noise", dist.Normal(torch.zeros(1), 0.3).to_event(1))

    guide = AutoStructured(
        chain,
        conditionals={"x": noise, "y": "delta"},
        dependencies={"y": {"x": lambda u: 2 * u}},
    )
    tr = handlers.trace(guide).get_trace(torch.tensor(D))
    assert tr.nodes["x_noise"]["infer"]["is_auxiliary"]
    eps = tr.nodes["x_noise"]["value"]
    x, y = tr.nodes["x"]["value"], tr.nodes["y"]["value"]
    assert torch.allclose(x, guide.locs.x + eps)
    assert torch.allclose(y, guide.locs.y + 2 * eps)


def test_subsampled_plate_uses_the_subsample_of_full_size_parameters() -> None:
    def model(idx):
        with vitorch.plate("data", 5, subsample=idx):
            vitorch.sample("z", dist.Normal(0.0, 1.0))

    guide = AutoStructured(
        model,
        conditionals="delta",
        create_plates=lambda idx: vitorch.plate("data", 5, subsample=idx),
    )
    idx = torch.tensor([3, 1])
    tr = handlers.trace(guide).get_trace(idx)
    assert guide.locs.z.shape == (5,)
    assert torch.equal(tr.nodes["z"]["value"], guide.locs.z[idx])


# -- Pyro's parameter names -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"conditionals": "normal"},
        {"conditionals": "delta", "dependencies": {}},
        {"conditionals": {"mu": "delta", "z": "mvn"}, "dependencies": {"z": {"mu": "linear"}}},
    ],
)
def test_parameter_names_and_shapes_match_pyro(options) -> None:
    pyro = pytest.importorskip("pyro")
    from pyro.infer.autoguide import AutoStructured as PyroAutoStructured

    def pyro_hierarchical(x):
        mu = pyro.sample("mu", pyro.distributions.Normal(0.0, 1.0))
        with pyro.plate("data", N):
            z = pyro.sample("z", pyro.distributions.Normal(mu, TAU))
            pyro.sample("x", pyro.distributions.Normal(z, SIGMA_H), obs=x)

    def shapes(store):
        return {name: tuple(store[name].shape) for name in store.keys()}

    guide = AutoStructured(hierarchical, **options)
    guide(X_H)
    pyro.clear_param_store()
    pyro_guide = PyroAutoStructured(pyro_hierarchical, **options)
    pyro_guide(X_H)
    assert shapes(vitorch.get_param_store()) == shapes(pyro.get_param_store())
    assert guide.dependencies == pyro_guide.dependencies
    assert guide._order == [name for name, _ in pyro_guide._sorted_sites]


# -- bad options ------------------------------------------------------------------------------


def test_bad_options_name_the_site() -> None:
    with pytest.raises(ValueError, match=r"conditionals\['x'\].*'gauss'"):
        AutoStructured(chain, conditionals={"x": "gauss", "y": "mvn"})
    with pytest.raises(ValueError, match=r"conditionals must be one of .* got 'full'"):
        AutoStructured(chain, conditionals="full")
    with pytest.raises(ValueError, match=r"dependencies\['y'\]\['x'\].*'quadratic'"):
        AutoStructured(chain, dependencies={"y": {"x": "quadratic"}})
    with pytest.raises(ValueError, match=r"dependencies\['y'\] names site 'y' itself"):
        AutoStructured(chain, dependencies={"y": {"y": "linear"}})
    with pytest.raises(ValueError, match=r"dependencies must be 'linear' or a dict"):
        AutoStructured(chain, dependencies="nonlinear")
    with pytest.raises(ValueError, match="init_scale"):
        AutoStructured(chain, init_scale=0.0)
    d = torch.tensor(D)
    with pytest.raises(ValueError, match=r"no entry for the latent site 'y'"):
        AutoStructured(chain, conditionals={"x": "mvn"})(d)
    with pytest.raises(ValueError, match=r"conditionals names 'w'.*latent sites: \['x', 'y'\]"):
        AutoStructured(chain, conditionals={"x": "mvn", "y": "mvn", "w": "mvn"})(d)
    with pytest.raises(ValueError, match=r"dependencies names 'w'"):
        AutoStructured(chain, dependencies={"y": {"w": "linear"}})(d)
    with pytest.raises(ValueError, match=r"cycle among the sites \['x', 'y'\]"):
        AutoStructured(chain, dependencies={"y": {"x": "linear"}, "x": {"y": "linear"}})(d)
    with pytest.raises(ValueError, match=r"get_deltas\(\) was called before"):
        AutoStructured(chain).get_deltas()
