"""``infer_discrete`` against brute-force enumeration of every joint assignment.

MAP assignments (``temperature=0``) are compared with the argmax of the joint log-density
written out by hand over all assignments; posterior samples (``temperature=1``) with the
exact posterior through a seeded Pearson chi-square test (cells with small expected counts
pooled, threshold the chi-square quantile at 1 - 1e-4 for the resulting degrees of
freedom).
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import scipy.stats
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import handlers
from vitorch.infer.discrete import infer_discrete
from vitorch.infer.traceenum_elbo import config_enumerate
from vitorch.ops.indexing import Vindex
from vitorch.poutine.util import site_is_subsample

Normal = torch.distributions.Normal


def _chi2_ok(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """Pearson statistic and its 1 - 1e-4 quantile, cells with expected count < 5 pooled."""
    n = counts.sum().item()
    expected = probs * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)]).double()
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)]).double()
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    stat = ((obs - exp) ** 2 / exp).sum().item()
    return stat, float(scipy.stats.chi2.ppf(1 - 1e-4, len(exp) - 1))


# -- a global discrete variable and a plate of local ones ----------------------------------
PG = torch.tensor([0.3, 0.7])
PZ = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])  # p(z | g)
LOCS = torch.tensor([[-1.0, 0.0, 1.0], [-0.5, 0.5, 1.5]])  # loc(g, z)


def global_local_model(P, D, vindex, data):
    g = P.sample("g", D.Categorical(PG), infer={"enumerate": "parallel"})
    with P.plate("items", len(data), dim=-1):
        z = P.sample("z", D.Categorical(vindex(PZ)[..., g, :]), infer={"enumerate": "parallel"})
        P.sample("x", D.Normal(vindex(LOCS)[..., g, z], 1.0), obs=data)
    return g, z


def _model_a(data):
    return global_local_model(vitorch, dist, Vindex, data)


def _brute_force_a(data: torch.Tensor) -> tuple[list[tuple], torch.Tensor]:
    """All (g, z_1..z_N) and their exact posterior probabilities."""
    states, logp = [], []
    for g in range(2):
        for zs in itertools.product(range(3), repeat=len(data)):
            lp = PG[g].log()
            for x, z in zip(data, zs):
                lp = lp + PZ[g, z].log() + Normal(LOCS[g, z], 1.0).log_prob(x)
            states.append((g,) + zs)
            logp.append(lp)
    return states, torch.softmax(torch.stack(logp), 0)


@pytest.mark.parametrize("first_available_dim", [-2, -3])
def test_map_of_global_and_local_variables_is_the_brute_force_argmax(first_available_dim):
    torch.manual_seed(0)
    decode = infer_discrete(_model_a, first_available_dim=first_available_dim, temperature=0)
    for _ in range(5):
        data = torch.randn(3) * 1.5
        states, post = _brute_force_a(data)
        g, z = decode(data)
        assert (int(g),) + tuple(z.tolist()) == states[int(post.argmax())]


def test_samples_of_global_and_local_variables_match_the_brute_force_posterior():
    data = torch.tensor([1.2, -0.3, 0.4])
    states, post = _brute_force_a(data)
    index = {s: i for i, s in enumerate(states)}
    sampler = infer_discrete(_model_a, first_available_dim=-2, temperature=1)
    torch.manual_seed(1)
    counts = torch.zeros(len(states))
    for _ in range(600):
        g, z = sampler(data)
        counts[index[(int(g),) + tuple(z.tolist())]] += 1
    stat, limit = _chi2_ok(counts, post)
    assert stat < limit, (stat, limit)


def test_samples_in_a_replicate_plate_match_the_brute_force_posterior():
    """20000 independent joint draws at once: the model replicated along an outer plate."""
    data = torch.tensor([1.2, -0.3, 0.4])
    states, post = _brute_force_a(data)

    def replicated(data, copies):
        with vitorch.plate("copies", copies, dim=-2):
            return global_local_model(vitorch, dist, Vindex, data)

    torch.manual_seed(2)
    g, z = infer_discrete(replicated, first_available_dim=-3)(data, 20000)
    assert g.shape == (20000, 1) and z.shape == (20000, 3)
    code = g[:, 0] * 27 + z[:, 0] * 9 + z[:, 1] * 3 + z[:, 2]
    counts = torch.bincount(code, minlength=54).double()
    expected = torch.tensor([g_ * 27 + a * 9 + b * 3 + c for g_, a, b, c in states])
    stat, limit = _chi2_ok(counts[expected], post.double())
    assert stat < limit, (stat, limit)
    # The prior alone would fail the same test.
    prior = torch.tensor(
        [PG[s[0]] * PZ[s[0], s[1]] * PZ[s[0], s[2]] * PZ[s[0], s[3]] for s in states]
    )
    stat, limit = _chi2_ok(counts[expected], prior.double())
    assert stat > limit


# -- the Gaussian mixture of Pyro's GMM tutorial ----------------------------------------------
K = 2
WEIGHTS = torch.tensor([0.375, 0.625])
GMM_LOCS = torch.tensor([0.49, 10.98])
SCALE = torch.tensor(0.65)
GMM_DATA = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0, 5.6, 5.8, 6.0])


@config_enumerate
def gmm_model(data, mask=True):
    weights = vitorch.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = vitorch.sample("scale", dist.LogNormal(0.0, 2.0))
    with vitorch.plate("components", K):
        locs = vitorch.sample("locs", dist.Normal(0.0, 10.0))
    with vitorch.plate("data", len(data)):
        assignment = vitorch.sample("assignment", dist.Categorical(weights))
        with handlers.mask(mask=mask):
            vitorch.sample("obs", dist.Normal(locs[assignment], scale), obs=data)
    return assignment


def gmm_guide(data):
    vitorch.sample("weights", dist.Delta(WEIGHTS).to_event(1))
    vitorch.sample("scale", dist.Delta(SCALE))
    with vitorch.plate("components", K):
        vitorch.sample("locs", dist.Delta(GMM_LOCS))


def _gmm_trained():
    guide_trace = handlers.trace(gmm_guide).get_trace(GMM_DATA)
    return handlers.replay(gmm_model, trace=guide_trace)


def _gmm_posterior(data: torch.Tensor) -> torch.Tensor:
    return torch.softmax(WEIGHTS.log() + Normal(GMM_LOCS, SCALE).log_prob(data[:, None]), -1)


def test_gmm_map_assignments_are_the_per_point_argmax():
    assignment = infer_discrete(_gmm_trained(), temperature=0, first_available_dim=-2)(GMM_DATA)
    expected = _gmm_posterior(GMM_DATA).argmax(-1)
    assert torch.equal(assignment, expected)
    assert set(expected.tolist()) == {0, 1}  # both components used


def test_gmm_masked_observation_falls_back_to_the_prior():
    mask = torch.ones(len(GMM_DATA), dtype=torch.bool)
    mask[0] = False  # x = 0 would pick component 0; the prior weight picks component 1
    decode = infer_discrete(_gmm_trained(), temperature=0, first_available_dim=-2)
    assignment = decode(GMM_DATA, mask)
    expected = _gmm_posterior(GMM_DATA).argmax(-1)
    expected[0] = int(WEIGHTS.argmax())
    assert torch.equal(assignment, expected)


def test_gmm_sampled_assignments_match_the_per_point_posterior():
    data = GMM_DATA[5:]  # the ambiguous points
    guide_trace = handlers.trace(gmm_guide).get_trace(data)
    sampler = infer_discrete(handlers.replay(gmm_model, trace=guide_trace), first_available_dim=-2)
    torch.manual_seed(3)
    draws = torch.stack([sampler(data) for _ in range(400)])
    post = _gmm_posterior(data)
    for i in range(len(data)):
        counts = torch.bincount(draws[:, i], minlength=K).double()
        stat, limit = _chi2_ok(counts, post[i].double())
        assert stat < limit, (i, stat, limit)


# -- an HMM with vitorch.markov ---------------------------------------------------------------
T, S = 6, 3
INIT = torch.tensor([0.5, 0.3, 0.2])
TRANS = torch.tensor([[0.7, 0.2, 0.1], [0.15, 0.7, 0.15], [0.1, 0.3, 0.6]])
EMIT_LOCS = torch.tensor([-1.0, 0.0, 1.0])
HMM_DATA = torch.tensor([-1.2, -0.4, 0.3, 0.1, 1.4, 0.2])


def hmm(P, D, vindex, data):
    """Hidden states x_t; a batch of independent copies when run inside a plate."""
    states = []
    probs = INIT
    for t in P.markov(range(len(data))):
        x = P.sample(f"x_{t}", D.Categorical(probs), infer={"enumerate": "parallel"})
        P.sample(f"y_{t}", D.Normal(vindex(EMIT_LOCS)[..., x], 1.0), obs=data[t])
        probs = vindex(TRANS)[..., x, :]
        states.append(x)
    return states


def _hmm_posterior(data: torch.Tensor) -> tuple[list[tuple], torch.Tensor]:
    paths = list(itertools.product(range(S), repeat=len(data)))
    p = torch.tensor(paths)
    logp = INIT.log()[p[:, 0]] + TRANS.log()[p[:, :-1], p[:, 1:]].sum(-1)
    logp = logp + Normal(EMIT_LOCS[p], 1.0).log_prob(data).sum(-1)
    return paths, torch.softmax(logp, 0)


def test_hmm_map_is_the_brute_force_viterbi_path():
    torch.manual_seed(4)
    decode = infer_discrete(first_available_dim=-1, temperature=0)(
        lambda data: hmm(vitorch, dist, Vindex, data)
    )
    for data in [HMM_DATA, torch.randn(T), torch.randn(T) * 2]:
        paths, post = _hmm_posterior(data)
        path = tuple(int(x) for x in decode(data))
        assert path == paths[int(post.argmax())]


def test_hmm_sampled_paths_match_the_brute_force_posterior():
    paths, post = _hmm_posterior(HMM_DATA)

    def copies(data, n):
        with vitorch.plate("copies", n, dim=-1):
            return hmm(vitorch, dist, Vindex, data)

    torch.manual_seed(5)
    states = infer_discrete(copies, first_available_dim=-2)(HMM_DATA, 20000)
    assert all(x.shape == (20000,) for x in states)
    code = sum(x * S ** (T - 1 - t) for t, x in enumerate(states))
    counts = torch.bincount(code, minlength=S**T).double()  # paths are in base-S order
    stat, limit = _chi2_ok(counts, post.double())
    assert stat < limit, (stat, limit)
    # The same draws fail against the product of the per-step posterior marginals: the
    # test sees the dependence between steps, not only the marginals.
    p = torch.tensor(paths)
    marginals = [torch.zeros(S).index_add_(0, p[:, t], post) for t in range(T)]
    independent = torch.stack([marginals[t][p[:, t]] for t in range(T)]).prod(0)
    stat, limit = _chi2_ok(counts, independent.double())
    assert stat > limit


# -- the returned value and the trace -----------------------------------------------------------
def test_sampled_sites_have_their_plates_batch_shape():
    @config_enumerate
    def model():
        g = vitorch.sample("g", dist.Categorical(torch.ones(3) / 3))
        with vitorch.plate("outer", 2, dim=-2):
            w = vitorch.sample("w", dist.Bernoulli(0.4))
            with vitorch.plate("inner", 4, dim=-1):
                u = vitorch.sample("u", dist.Categorical(torch.ones(2) / 2))
                vitorch.sample("y", dist.Normal(g + w + u, 1.0), obs=torch.zeros(2, 4))
        with vitorch.plate("inner", 4, dim=-1):
            z = vitorch.sample("z", dist.OneHotCategorical(torch.ones(3) / 3))
            vitorch.sample("v", dist.Normal((z * torch.arange(3.0)).sum(-1), 1.0), obs=g)
        return g * 100 + w * 10 + u + z.argmax(-1)

    torch.manual_seed(6)
    for first_available_dim in (-3, -5):
        tracer = handlers.trace(infer_discrete(model, first_available_dim=first_available_dim))
        tr = tracer.get_trace()
        shapes = {
            n: tuple(s.value.shape)
            for n, s in tr.nodes.items()
            if s.type == "sample" and not site_is_subsample(s)
        }
        assert shapes == {"g": (), "w": (2, 1), "u": (2, 4), "y": (2, 4), "z": (4, 3), "v": ()}
        for name in ("g", "w", "u", "z"):
            site = tr.nodes[name]
            assert "_enumerate_dim" not in site.infer and not site.is_observed
        values = {n: tr.nodes[n].value for n in ("g", "w", "u", "z")}
        expected = values["g"] * 100 + values["w"] * 10 + values["u"] + values["z"].argmax(-1)
        assert torch.equal(tr.nodes["_RETURN"].value, expected)
        assert torch.equal(values["z"].sum(-1), torch.ones(4))  # one-hot rows
        assert set(values["w"].flatten().tolist()) <= {0.0, 1.0}


def test_non_enumerated_sites_run_as_usual():
    @config_enumerate
    def model(data):
        loc = vitorch.sample("loc", dist.Normal(0.0, 1.0))
        z = vitorch.sample("z", dist.Categorical(torch.ones(2) / 2))
        vitorch.sample("x", dist.Normal(loc + 10.0 * z, 0.1), obs=data)
        return loc, z

    # An observation of 10 is explained by z = 1 whatever loc's draw.
    loc, z = infer_discrete(model, first_available_dim=-1, temperature=0)(torch.tensor(10.0))
    assert loc.shape == () and z.shape == () and int(z) == 1


def test_subsampled_plate_keeps_the_items_the_choices_were_made_for():
    data = torch.tensor([0.0, 5.0, 0.2, 4.8, -0.1, 5.3, 0.1, 4.9])

    @config_enumerate
    def model():
        with vitorch.plate("data", len(data), subsample_size=4) as idx:
            z = vitorch.sample("z", dist.Bernoulli(0.5))
            vitorch.sample("x", dist.Normal(5.0 * z, 1.0), obs=data[idx])
        return idx, z

    torch.manual_seed(8)
    decode = infer_discrete(model, first_available_dim=-2, temperature=0)
    for _ in range(5):
        idx, z = decode()
        assert torch.equal(z, (data[idx] > 2.5).float())


# -- the decorator form and bad input -------------------------------------------------------------
def test_decorator_form_matches_the_functional_form():
    @infer_discrete(first_available_dim=-1, temperature=0)
    def decode(data):
        return hmm(vitorch, dist, Vindex, data)

    direct = infer_discrete(
        lambda data: hmm(vitorch, dist, Vindex, data), first_available_dim=-1, temperature=0
    )
    assert [int(x) for x in decode(HMM_DATA)] == [int(x) for x in direct(HMM_DATA)]
    assert decode.__name__ == "decode"


@pytest.mark.parametrize("bad", [None, 0, 1, -1.0, True])
def test_first_available_dim_must_be_a_negative_int(bad):
    with pytest.raises(ValueError, match=r"first_available_dim must be a negative int.*got"):
        infer_discrete(_model_a, first_available_dim=bad)
    with pytest.raises(ValueError, match="first_available_dim"):
        infer_discrete(first_available_dim=bad)


def test_other_bad_input():
    with pytest.raises(ValueError, match=r"temperature must be 0 \(MAP\) or 1.*got 0.5"):
        infer_discrete(_model_a, first_available_dim=-2, temperature=0.5)
    with pytest.raises(TypeError, match="fn must be a callable model, got int"):
        infer_discrete(3, first_available_dim=-2)

    @config_enumerate
    def model(data):
        g = vitorch.sample("g", dist.Categorical(PG))
        vitorch.sample("y", dist.Normal(g.float(), 1.0), obs=torch.tensor(0.5))
        with vitorch.plate("items", 3, dim=-1):
            vitorch.sample("x", dist.Normal(0.0, 1.0), obs=data)

    # The plate at dim -1 overlaps the enumeration dims.
    with pytest.raises(ValueError, match=r"plate 'items' at dim -1.*first_available_dim=-2"):
        infer_discrete(model, first_available_dim=-1)(torch.zeros(3))
    assert infer_discrete(model, first_available_dim=-2, temperature=0)(torch.zeros(3)) is None


def test_unsupported_structure_names_the_site():
    @config_enumerate
    def model():
        with vitorch.plate("a", 3, dim=-1):
            z = vitorch.sample("z", dist.Categorical(torch.ones(2) / 2))
        with vitorch.plate("b", 3, dim=-2):
            vitorch.sample("y", dist.Normal(z.float(), 1.0), obs=torch.zeros(3, 1))

    with pytest.raises(ValueError, match=r"site 'y' depends on the enumerated variable 'z'"):
        infer_discrete(model, first_available_dim=-3)()


def test_warns_when_nothing_is_enumerated():
    def model():
        return vitorch.sample("x", dist.Normal(0.0, 1.0))

    with pytest.warns(UserWarning, match="found no sample site marked for enumeration"):
        assert infer_discrete(model, first_available_dim=-1)().shape == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infer_discrete(model, first_available_dim=-1, strict_enumeration_warning=False)()


# -- cross-check with Pyro ---------------------------------------------------------------------
def test_map_matches_pyro():
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist
    from pyro.infer import infer_discrete as pyro_infer_discrete
    from pyro.ops.indexing import Vindex as PyroVindex

    torch.manual_seed(7)
    for _ in range(3):
        data = torch.randn(3) * 1.5
        ours = infer_discrete(_model_a, first_available_dim=-2, temperature=0)(data)
        theirs = pyro_infer_discrete(
            lambda d: global_local_model(pyro, pdist, PyroVindex, d),
            first_available_dim=-2,
            temperature=0,
        )(data)
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape and torch.equal(a, b)
        hmm_data = torch.randn(T)
        ours = infer_discrete(
            lambda d: hmm(vitorch, dist, Vindex, d), first_available_dim=-1, temperature=0
        )(hmm_data)
        theirs = pyro_infer_discrete(
            lambda d: hmm(pyro, pdist, PyroVindex, d), first_available_dim=-1, temperature=0
        )(hmm_data)
        assert [int(x) for x in ours] == [int(x) for x in theirs]


# -- long chains (dim recycling) and masked enumerated sites ----------------------------------
def _viterbi(log_init, log_trans, emit):
    """The MAP path by hand: emit is (T, K); plain max-product with back-pointers."""
    delta = log_init + emit[0]
    back = []
    for t in range(1, len(emit)):
        scores = delta[:, None] + log_trans  # [previous, next]
        back.append(scores.argmax(0))
        delta = scores.amax(0) + emit[t]
    path = [int(delta.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return path[::-1]


def test_viterbi_on_a_chain_of_100_steps_in_a_plate_of_sequences():
    torch.manual_seed(11)
    T, K, B = 100, 3, 3
    dt = torch.float64
    log_init = torch.randn(K, dtype=dt).log_softmax(-1)
    log_trans = (torch.randn(K, K, dtype=dt) * 2).log_softmax(-1)
    locs = torch.tensor([-1.5, 0.0, 1.5], dtype=dt)
    data = torch.randn(T, B, dtype=dt) * 1.5

    def model():
        with vitorch.plate("seqs", B, dim=-1):
            x, states = None, []
            for t in vitorch.markov(range(T)):
                logits = log_init if t == 0 else Vindex(log_trans)[..., x, :]
                x = vitorch.sample(
                    f"x_{t}", dist.Categorical(logits=logits), infer={"enumerate": "parallel"}
                )
                vitorch.sample(f"y_{t}", dist.Normal(Vindex(locs)[..., x], 1.0), obs=data[t])
                states.append(x)
        return states

    states = infer_discrete(model, first_available_dim=-2, temperature=0)()
    assert all(x.shape == (B,) for x in states)
    emit = Normal(locs, 1.0).log_prob(data[..., None])  # (T, B, K)
    for b in range(B):
        assert [int(x[b]) for x in states] == _viterbi(log_init, log_trans, emit[:, b])


def test_masked_enumerated_site_map_is_its_prior_argmax():
    # Masked items: z's own factor still counts (unmasked), the observation does not, so
    # the MAP is the prior's argmax (2), not a tie broken at 0.
    weights = torch.tensor([0.2, 0.3, 0.5])
    locs = torch.tensor([-3.0, 0.0, 3.0])
    data = torch.tensor([-3.1, 0.1, -2.9, 0.2])
    mask = torch.tensor([True, False, True, False])

    def model():
        with vitorch.plate("data", 4), handlers.mask(mask=mask):
            z = vitorch.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
            vitorch.sample("x", dist.Normal(locs[z], 0.5), obs=data)
        return z

    z = infer_discrete(model, first_available_dim=-2, temperature=0)()
    assert z.tolist() == [0, 2, 0, 2]
