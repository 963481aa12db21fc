"""EasyGuide against answers known exactly.

- ``map_estimate`` on conjugate models must reach the posterior mode in closed form.
- A group with a full-rank Normal over all latent sites of Bayesian linear regression must
  reach the exact Gaussian posterior; set to that posterior, every single-sample ELBO equals
  the log evidence (a sharp check of the packing, the plates and the log-Jacobians).
- Subsampled local sites (MAP and amortized group) must give the ELBO written out by hand
  with the N / batch-size factor, from the parameter entries of the subsample.
- With pyro installed, the same guide must make the same parameters and the same loss.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.contrib.easyguide.easyguide import EasyGuide, easy_guide
from vitorch.distributions import constraints
from vitorch.infer import SVI, Trace_ELBO
from vitorch.infer.autoguide import init_to_mean

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infer"))
from _regression import SIGMA, TAU, N, exact_posterior, regression, regression_data  # noqa: E402


def fit(model, guide, loss, steps: int, *args, lr: float = 0.05, final: float = 0.02) -> None:
    """``steps`` SVI steps with the learning rate decaying from ``lr`` to ``lr * final``."""
    optim = vitorch.optim.ClippedAdam({"lr": lr, "lrd": final ** (1 / steps)})
    svi = SVI(model, guide, optim, loss)
    for _ in range(steps):
        svi.step(*args)


# -- MAP ---------------------------------------------------------------------------------------


def conjugate(counts: torch.Tensor, ys: torch.Tensor) -> None:
    rate = vitorch.sample("rate", dist.Gamma(3.0, 2.0))
    loc = vitorch.sample("loc", dist.Normal(0.0, 2.0))
    with vitorch.plate("data", len(counts)):
        vitorch.sample("counts", dist.Poisson(rate), obs=counts)
        vitorch.sample("ys", dist.Normal(loc, 1.0), obs=ys)


class MapGuide(EasyGuide):
    def guide(self, counts, ys):
        return {name: self.map_estimate(name) for name in ["rate", "loc"]}


def test_map_estimate_reaches_the_exact_posterior_mode() -> None:
    counts = torch.tensor([2.0, 5.0, 1.0, 3.0, 4.0, 0.0])
    ys = torch.tensor([0.3, 1.2, 0.8, -0.4, 1.9, 0.7])
    guide = MapGuide(conjugate)
    fit(conjugate, guide, Trace_ELBO(), 600, counts, ys, lr=0.1, final=0.01)
    # Gamma(3 + sum k, 2 + n) has its mode at (a - 1) / b; the Normal's is its mean.
    n = len(counts)
    assert guide.rate.item() == pytest.approx((3.0 + counts.sum().item() - 1) / (2.0 + n), 1e-4)
    assert guide.loc.item() == pytest.approx(ys.sum().item() / (n + 0.25), abs=1e-4)
    # The values live in the param store under the class name.
    assert set(vitorch.get_param_store().keys()) == {"MapGuide.rate", "MapGuide.loc"}
    assert torch.equal(guide(counts, ys)["rate"], guide.rate)


def test_group_map_estimate_is_one_map_estimate_per_site() -> None:
    counts, ys = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.5])

    @easy_guide(conjugate)
    def guide(self, counts, ys):
        return self.group().map_estimate()

    values = guide(counts, ys)
    assert list(values) == ["rate", "loc"]
    assert torch.equal(values["rate"], guide.rate) and torch.equal(values["loc"], guide.loc)


# -- a group over the whole latent space ---------------------------------------------------------


class JointGuide(EasyGuide):
    def guide(self, X, y):
        group = self.group()
        loc = vitorch.param("joint_loc", torch.zeros(group.event_shape))
        scale_tril = vitorch.param(
            "joint_scale_tril", 0.1 * torch.eye(3), constraint=constraints.lower_cholesky
        )
        return group.sample("joint", dist.MultivariateNormal(loc, scale_tril=scale_tril))


def test_group_multivariate_normal_reaches_the_exact_posterior() -> None:
    X, y = regression_data()
    mean, cov = exact_posterior(X, y)
    guide = JointGuide(regression)
    fit(regression, guide, Trace_ELBO(num_particles=16, vectorize_particles=True), 1500, X, y)
    sd = cov.diagonal().sqrt()
    loc = vitorch.param("joint_loc").detach().double()
    assert ((loc - mean) / sd).abs().max() < 0.1, (loc, mean)
    L = vitorch.param("joint_scale_tril").detach().double()
    found = L @ L.T
    found_sd = found.diagonal().sqrt()
    assert ((found_sd / sd) - 1).abs().max() < 0.05, (found_sd, sd)
    corr = found / found_sd[:, None] / found_sd
    assert (corr - cov / sd[:, None] / sd).abs().max() < 0.06


def test_group_at_the_exact_posterior_gives_the_log_evidence_for_every_draw() -> None:
    X, y = regression_data()
    mean, cov = exact_posterior(X, y)
    guide = JointGuide(regression)
    guide(X, y)
    store = vitorch.get_param_store()
    store["joint_loc"] = mean.float()
    store["joint_scale_tril"] = torch.linalg.cholesky(cov).float()
    A = torch.cat([X, torch.ones(N, 1)], 1).double()
    evidence = torch.distributions.MultivariateNormal(
        torch.zeros(N, dtype=torch.double), SIGMA**2 * torch.eye(N) + TAU**2 * A @ A.T
    ).log_prob(y.double())
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
    for _ in range(3):
        assert -elbo.loss(regression, guide, X, y) == pytest.approx(evidence.item(), abs=1e-3)
    (guide_z, model_zs) = guide(X, y)
    assert guide.group().event_shape == (3,)
    assert torch.equal(model_zs["w"], guide_z[:2]) and torch.equal(model_zs["b"], guide_z[2])


def constrained_prior() -> None:
    vitorch.sample("s", dist.LogNormal(0.5, 0.7))
    vitorch.sample("m", dist.Normal(-1.0, 2.0).expand([2]).to_event(1))


def test_group_log_jacobian_makes_the_prior_exact() -> None:
    # q over (log s, m) equal to the prior's underlying Normal: q is the prior, so every
    # draw has log p(z) - log q(z) = 0, which needs the log-Jacobian of exp.
    @easy_guide(constrained_prior)
    def guide(self):
        group = self.group()
        loc, scale = torch.tensor([0.5, -1.0, -1.0]), torch.tensor([0.7, 2.0, 2.0])
        return group.sample("z", dist.Normal(loc, scale).to_event(1))

    for _ in range(3):
        assert Trace_ELBO(num_particles=4).loss(constrained_prior, guide) == pytest.approx(
            0.0, abs=1e-5
        )
    guide_z, model_zs = guide()
    assert torch.allclose(model_zs["s"], guide_z[0].exp())


def test_group_packs_the_unconstrained_shape_of_each_site() -> None:
    def model():
        vitorch.sample("p", dist.Dirichlet(torch.ones(3)))  # 2 unconstrained coordinates
        with vitorch.plate("items", 4):
            vitorch.sample("x", dist.Normal(0.0, 1.0))

    @easy_guide(model)
    def guide(self):
        group = self.group()
        return group.sample("z", dist.Normal(torch.zeros(group.event_shape), 1.0).to_event(1))

    guide_z, model_zs = guide()
    assert guide.group().event_shape == (6,)
    assert model_zs["p"].shape == (3,) and model_zs["p"].sum().item() == pytest.approx(1.0)
    assert torch.equal(model_zs["x"], guide_z[2:])


# -- subsampling and amortization ----------------------------------------------------------------

FULL = 6
DATA = torch.tensor([0.5, -1.0, 2.0, 0.3, -0.7, 1.1])


def local_model(idx: torch.Tensor) -> None:
    mu = vitorch.sample("mu", dist.Normal(0.0, 1.0))
    with vitorch.plate("data", FULL, subsample=idx):
        u = vitorch.sample("u", dist.Normal(0.0, 1.0))
        z = vitorch.sample("z", dist.Normal(mu, 1.0))
        vitorch.sample("x", dist.Normal(z + u, 0.5), obs=DATA[idx])


class LocalGuide(EasyGuide):
    def guide(self, idx):
        self.map_estimate("mu")
        if not hasattr(self, "net"):
            self.net = torch.nn.Linear(1, 1)
        with self.plate("data", FULL, subsample=idx):
            self.map_estimate("u")
            loc = self.net(DATA[idx].unsqueeze(-1))
            self.group("z").sample("z_aux", dist.Normal(loc, 0.3).to_event(1))


def test_subsampled_local_sites_give_the_hand_computed_elbo() -> None:
    idx = torch.tensor([4, 1])
    guide = LocalGuide(local_model)
    guide(idx)
    # Parameters of local sites have the plate's full size.
    assert guide.u.shape == (FULL,)
    mu, u_full = torch.tensor(0.4), torch.tensor([0.1, -0.2, 0.3, -0.4, 0.5, -0.6])
    guide.mu, guide.u = mu, u_full
    with torch.no_grad():
        guide.net.weight.fill_(0.8)
        guide.net.bias.fill_(-0.1)
    vitorch.set_rng_seed(3)
    loss = Trace_ELBO().loss(local_model, guide, idx)
    vitorch.set_rng_seed(3)
    z = handlers.trace(guide).get_trace(idx).nodes["z"].value
    assert z.shape == (2,)

    def lp(d, x):
        return d.log_prob(x).sum()

    x, u = DATA[idx], u_full[idx]
    local = (
        lp(dist.Normal(0.0, 1.0), u)
        + lp(dist.Normal(mu, 1.0), z)
        + lp(dist.Normal(z + u, 0.5), x)
        - lp(dist.Normal(0.8 * x - 0.1, 0.3), z)
    )
    elbo = lp(dist.Normal(0.0, 1.0), mu) + FULL / len(idx) * local
    assert -loss == pytest.approx(elbo.item(), abs=1e-5)


def test_guide_plate_is_shared_and_defaults_to_the_model_plate() -> None:
    def model():
        with vitorch.plate("outer", 3, dim=-2), vitorch.plate("inner", 2, dim=-1):
            vitorch.sample("a", dist.Normal(0.0, 1.0))

    seen = {}

    @easy_guide(model)
    def guide(self):
        with self.plate("inner") as idx:
            seen["same"] = self.plate("inner") is self.plate("inner")
            seen["idx"] = idx
            self.map_estimate("a")

    tr = handlers.trace(guide).get_trace()
    frames = tr.nodes["a"].cond_indep_stack
    # "inner" is entered by the guide, "outer" by map_estimate (inside it).
    assert [(f.name, f.dim, f.size) for f in frames] == [("inner", -1, 2), ("outer", -2, 3)]
    assert seen["same"] and torch.equal(seen["idx"], torch.arange(2))
    assert guide.plates == {}  # fresh plates on every call


# -- the decorator -------------------------------------------------------------------------------


def test_easy_guide_decorator_equals_a_subclass() -> None:
    @easy_guide(conjugate)
    def my_guide(self, counts, ys):
        """Doc."""
        return {name: self.map_estimate(name) for name in ["rate", "loc"]}

    assert isinstance(my_guide, EasyGuide) and type(my_guide).__name__ == "my_guide"
    assert type(my_guide).__doc__ == "Doc."
    counts, ys = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.5])
    subclass_guide = MapGuide(conjugate)
    my_guide.init = subclass_guide.init = init_to_mean
    loss = Trace_ELBO().loss(conjugate, my_guide, counts, ys)
    assert loss == pytest.approx(Trace_ELBO().loss(conjugate, subclass_guide, counts, ys))
    assert {"my_guide.rate", "my_guide.loc"} <= set(vitorch.get_param_store().keys())
    assert my_guide.rate.item() == pytest.approx(1.5)  # the prior mean, from init_to_mean


def test_subclass_guide_pickles() -> None:
    counts, ys = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.5])
    guide = MapGuide(conjugate)
    guide(counts, ys)
    guide.loc = torch.tensor(0.25)
    loaded = pickle.loads(pickle.dumps(guide))
    assert loaded(counts, ys)["loc"].item() == 0.25


# -- against pyro --------------------------------------------------------------------------------


def _drift_model(lib, dist_mod, batch, subsample, full_size):
    drift = lib.sample("drift", dist_mod.LogNormal(-1.0, 0.5))
    with lib.plate("data", full_size, subsample=subsample):
        z = 0.0
        for t in range(len(batch)):
            z = lib.sample(f"state_{t}", dist_mod.Normal(z, drift))
            lib.sample(f"obs_{t}", dist_mod.Bernoulli(logits=z), obs=batch[t])


def _guides(lib, dist_mod, easy_guide_fn, model):
    @easy_guide_fn(model)
    def guide(self, batch, subsample, full_size):
        self.map_estimate("drift")
        with self.plate("data", full_size, subsample=subsample):
            self.group(match="state_[0-9]*").map_estimate()

    @easy_guide_fn(model)
    def lowrank(self, batch, subsample, full_size):
        self.map_estimate("drift")
        group = self.group(match="state_[0-9]*")
        diag = lib.param(
            "cov_diag", torch.full(group.event_shape, 0.1), constraint=constraints.positive
        )
        factor = lib.param("cov_factor", torch.full(group.event_shape + (2,), 0.01))
        with self.plate("data", full_size, subsample=subsample):
            loc = lib.param("loc", torch.zeros((full_size,) + group.event_shape), event_dim=1)
            group.sample("states", dist_mod.LowRankMultivariateNormal(loc, factor, diag))

    guide.init = lowrank.init = init_to_mean
    return guide, lowrank


def test_parameters_and_loss_match_pyro() -> None:
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist
    from pyro.contrib.easyguide import easy_guide as pyro_easy_guide
    from pyro.infer.autoguide.initialization import init_to_mean as pyro_init_to_mean

    batch = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    subsample = torch.tensor([0, 3, 4])
    results = []
    for lib, dist_mod, deco, clear in [
        (vitorch, dist, easy_guide, vitorch.clear_param_store),
        (pyro, pdist, pyro_easy_guide, pyro.clear_param_store),
    ]:
        clear()

        def model(batch, subsample, full_size, lib=lib, dist_mod=dist_mod):
            _drift_model(lib, dist_mod, batch, subsample, full_size)

        guide, lowrank = _guides(lib, dist_mod, deco, model)
        if lib is pyro:
            guide.init = lowrank.init = pyro_init_to_mean
        store = lib.get_param_store()
        loss = lib.infer.Trace_ELBO().loss(model, guide, batch, subsample, 5)
        lowrank(batch, subsample, 5)
        shapes = {k: tuple(v.shape) for k, v in store.items()}
        results.append((loss, shapes, guide.group("state_[0-9]*").event_shape))
    (loss, shapes, event_shape), (pyro_loss, pyro_shapes, pyro_event_shape) = results
    assert shapes == pyro_shapes
    assert shapes["guide.state_1"] == (5,) and "lowrank.drift" in shapes
    assert event_shape == pyro_event_shape == (2,)
    assert loss == pytest.approx(pyro_loss, rel=1e-6)


# -- errors --------------------------------------------------------------------------------------


def test_errors_name_the_problem() -> None:
    counts, ys = torch.tensor([1.0]), torch.tensor([0.5])
    with pytest.raises(TypeError, match="abstract"):
        EasyGuide(conjugate)  # type: ignore[abstract]
    with pytest.raises(TypeError, match="model must be callable, got int"):
        MapGuide(3)

    def guide_with(body):
        return easy_guide(conjugate)(lambda self, counts, ys: body(self))

    cases = [
        (lambda g: g.group("scale"), "group\\(match='scale'\\) matched no latent site.*'rate'"),
        (lambda g: g.group("("), "not a valid regex"),
        (lambda g: g.map_estimate("counts"), "no latent sample site 'counts'"),
        (lambda g: g.plate("batch"), "no size given.*no vectorized plate 'batch'"),
        (lambda g: (g.plate("p", 3), g.plate("p", 4)), "already made plate 'p' with size 3"),
        (
            lambda g: g.group().sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1)),
            r"event_shape \(2,\) \(the group's\), got \(3,\)",
        ),
    ]
    for body, message in cases:
        with pytest.raises(ValueError, match=message):
            guide_with(body)(counts, ys)
    assert vitorch.runtime._STACK == []
    with pytest.raises(ValueError, match="learns on its first call"):
        MapGuide(conjugate).group()


def test_model_structure_errors() -> None:
    def sequential():
        for i in vitorch.plate("seq", 2):
            vitorch.sample(f"x{i}", dist.Normal(0.0, 1.0))

    @easy_guide(sequential)
    def guide(self):
        pass

    with pytest.raises(ValueError, match="sequential plate 'seq'"):
        guide()

    def clash():
        vitorch.sample("plate", dist.Normal(0.0, 1.0))

    @easy_guide(clash)
    def guide2(self):
        self.map_estimate("plate")

    with pytest.raises(ValueError, match="MAP value of site 'plate'.*already an attribute"):
        guide2()

    def crossed():
        with vitorch.plate("shared", 3, dim=-1):
            vitorch.sample("x", dist.Normal(0.0, 1.0))
            with vitorch.plate("own", 2, dim=-2):
                vitorch.sample("y", dist.Normal(0.0, 1.0))

    @easy_guide(crossed)
    def guide3(self):
        self.group()

    with pytest.raises(ValueError, match="per-site plates to be right of all common plates"):
        guide3()
