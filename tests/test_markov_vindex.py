"""markov, Vindex and plate_stack: Pyro's helpers for chains and batched indexing."""

from __future__ import annotations

import pytest
import torch

import vitorch
import vitorch.distributions as dist
from vitorch import poutine
from vitorch.infer import TraceEnum_ELBO
from vitorch.ops.indexing import Vindex


# -- an HMM summed out exactly ------------------------------------------------------------
def hmm_model(data, init, trans, locs):
    x = vitorch.sample("x_0", dist.Categorical(init), infer={"enumerate": "parallel"})
    vitorch.sample("y_0", dist.Normal(Vindex(locs)[..., x], 1.0), obs=data[0])
    for t in vitorch.markov(range(1, len(data))):
        x = vitorch.sample(
            f"x_{t}", dist.Categorical(Vindex(trans)[..., x, :]), infer={"enumerate": "parallel"}
        )
        vitorch.sample(f"y_{t}", dist.Normal(Vindex(locs)[..., x], 1.0), obs=data[t])


def forward_algorithm(data, init, trans, locs):
    emit = torch.distributions.Normal(locs, 1.0).log_prob(data[:, None])  # (T, K)
    alpha = init.log() + emit[0]
    for t in range(1, len(data)):
        alpha = torch.logsumexp(alpha[:, None] + trans.log(), 0) + emit[t]
    return torch.logsumexp(alpha, 0)


def test_hmm_marginal_and_gradient_match_the_forward_algorithm():
    torch.manual_seed(0)
    T, K = 40, 3
    data = torch.randn(T) * 2
    init = torch.softmax(torch.randn(K), 0)
    raw = torch.randn(K, K, requires_grad=True)
    locs = torch.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    trans = torch.softmax(raw, -1)
    loss = TraceEnum_ELBO(max_plate_nesting=0).differentiable_loss(
        hmm_model, lambda *a: None, data, init, trans, locs
    )
    exact = -forward_algorithm(data, init, trans, locs)
    torch.testing.assert_close(loss, exact, rtol=1e-5, atol=1e-4)
    g_loss = torch.autograd.grad(loss, (raw, locs), retain_graph=True)
    g_exact = torch.autograd.grad(exact, (raw, locs))
    for a, b in zip(g_loss, g_exact):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -- markov's three forms --------------------------------------------------------------------------
def test_markov_as_iterator_context_and_decorator():
    assert list(vitorch.markov(range(3))) == [0, 1, 2]
    with vitorch.markov():
        x = vitorch.sample("x", dist.Normal(0.0, 1.0))
    assert x.shape == ()

    @vitorch.markov
    def step():
        return vitorch.sample("y", dist.Normal(0.0, 1.0))

    tr = poutine.trace(step).get_trace()
    assert "y" in tr.nodes
    with pytest.raises(TypeError, match="iterable"):
        vitorch.markov(3)
    with pytest.raises(ValueError, match="history"):
        vitorch.markov(history=-1)


# -- Vindex ------------------------------------------------------------------------------------------
def test_vindex_broadcasts_indices_with_the_batch_dims():
    torch.manual_seed(1)
    x = torch.randn(4, 5, 6, 7)
    i = torch.randint(5, (3, 1, 1))
    j = torch.randint(7, (2, 1))
    out = Vindex(x)[..., i, :, j]
    assert out.shape == (3, 2, 4, 6)
    for a in range(3):
        for b in range(2):
            for c in range(4):
                torch.testing.assert_close(out[a, b, c], x[c, i[a, 0, 0], :, j[b, 0]])
    # An enumerated value (support in a dim on the left) picks rows of a table.
    table = torch.randn(3, 3)
    z = torch.arange(3).reshape(3, 1)
    assert torch.equal(Vindex(table)[..., z, :], table.reshape(3, 1, 3))
    with pytest.raises(TypeError, match="integers"):
        Vindex(table)[..., torch.tensor([0.5]), :]


def test_vindex_matches_pyro():
    pyro_indexing = pytest.importorskip("pyro.ops.indexing")
    torch.manual_seed(2)
    x = torch.randn(4, 5, 6, 7)
    i = torch.randint(5, (3, 1, 1))
    j = torch.randint(7, (2, 1))
    for args in [(Ellipsis, i, slice(None), j), (Ellipsis, 2, slice(None), j), (Ellipsis, j)]:
        try:
            expected = pyro_indexing.Vindex(x)[args]
        except (IndexError, RuntimeError, ValueError):
            with pytest.raises((IndexError, RuntimeError, ValueError)):
                Vindex(x)[args]
            continue
        assert torch.equal(Vindex(x)[args], expected)


# -- plate_stack ---------------------------------------------------------------------------------
def test_plate_stack_makes_nested_plates():
    def model():
        with vitorch.plate_stack("batch", (2, 3)):
            return vitorch.sample("z", dist.Normal(0.0, 1.0))

    tr = poutine.trace(model).get_trace()
    site = tr.nodes["z"]
    assert site["value"].shape == (2, 3)
    frames = {f.name: (f.dim, f.size) for f in site["cond_indep_stack"]}
    assert frames == {"batch_0": (-1, 3), "batch_1": (-2, 2)}
    with pytest.raises(ValueError, match="rightmost_dim"):
        with vitorch.plate_stack("b", (2,), rightmost_dim=0):
            pass


def test_vindex_without_ellipsis_indexes_from_the_left():
    from vitorch.ops.indexing import Vindex

    x = torch.arange(24.0).reshape(2, 3, 4)
    g = torch.tensor([[1], [0]])
    assert torch.equal(Vindex(x)[g], x[g])  # (2, 1, 3, 4)
    assert torch.equal(Vindex(x)[torch.tensor(1)], x[1])
    i, j = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1])
    assert torch.equal(Vindex(x)[i, j], x[i, j])


@pytest.mark.parametrize("seed", range(5))
def test_vindex_index_patterns_match_pyro(seed):
    pyro_indexing = pytest.importorskip("pyro.ops.indexing")
    from vitorch.ops.indexing import Vindex

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 5, generator=gen)
    i = torch.randint(3, (6, 1, 1), generator=gen)
    j = torch.randint(4, (7, 1), generator=gen)
    cases = [
        (..., i, j, slice(None)),
        (..., j.reshape(7, 1, 1, 1)),
        (..., i, slice(None), slice(None)),
        (slice(None), i),
        (torch.tensor([[1], [0]]),),
        (0, i, j),
    ]
    for args in cases:
        assert torch.equal(Vindex(x)[args], pyro_indexing.Vindex(x)[args]), args


# -- dim recycling along markov chains ---------------------------------------------------------
PARALLEL = {"enumerate": "parallel"}


def _chain_model(data, init, trans, locs, history=1, plate_size=None):
    """An HMM (history=1) or second-order chain (history=2) with Normal emissions.

    ``data`` is (T,) or, with ``plate_size``, (T, plate_size) sequences in a plate.
    ``trans`` is (K, K) logits for history 1, (K, K, K) for history 2 (indexed by
    x_{t-2}, x_{t-1}); ``init`` holds the logits of x_0 (and, for history 2, a (K, K)
    table for x_1 given x_0 as ``init[1]``).
    """
    T = data.shape[0]
    with vitorch.plate("seqs", plate_size if plate_size else 1, dim=-1):
        prev = []
        for t in vitorch.markov(range(T), history=history):
            if t == 0:
                logits = init[0]
            elif t == 1 and history == 2:
                logits = Vindex(init[1])[..., prev[-1], :]
            elif history == 1:
                logits = Vindex(trans)[..., prev[-1], :]
            else:
                logits = Vindex(trans)[..., prev[-2], prev[-1], :]
            x = vitorch.sample(f"x_{t}", dist.Categorical(logits=logits), infer=PARALLEL)
            vitorch.sample(f"y_{t}", dist.Normal(Vindex(locs)[..., x], 1.0), obs=data[t])
            prev = (prev + [x])[-2:]


def _forward_first_order(data, init, trans, locs):
    """log p(data) of each sequence (data (T, B)) by the forward algorithm."""
    emit = torch.distributions.Normal(locs, 1.0).log_prob(data[..., None])  # (T, B, K)
    log_trans = trans.log_softmax(-1)
    alpha = init[0].log_softmax(-1) + emit[0]
    for t in range(1, len(data)):
        alpha = torch.logsumexp(alpha[..., :, None] + log_trans, -2) + emit[t]
    return torch.logsumexp(alpha, -1)


def _forward_second_order(data, init, trans, locs):
    """The forward algorithm on pairs (x_{t-1}, x_t) of a second-order chain."""
    emit = torch.distributions.Normal(locs, 1.0).log_prob(data[..., None])  # (T, B, K)
    a0 = init[0].log_softmax(-1) + emit[0]  # (B, K)
    alpha = a0[..., :, None] + init[1].log_softmax(-1) + emit[1][..., None, :]  # (B, K, K)
    log_trans = trans.log_softmax(-1)  # [x_{t-2}, x_{t-1}, x_t]
    for t in range(2, len(data)):
        alpha = torch.logsumexp(alpha[..., :, :, None] + log_trans, -3) + emit[t][..., None, :]
    return torch.logsumexp(alpha.flatten(-2), -1)


@pytest.mark.parametrize("history, plate_size", [(1, None), (2, None), (1, 4), (2, 3)])
def test_long_chain_recycles_dims_and_matches_the_forward_algorithm(history, plate_size):
    # T=200 enumerated variables would need 200 tensor dims without recycling (torch: 64).
    torch.manual_seed(history + (plate_size or 0))
    T, K = 200, 3
    dt = torch.float64
    data = torch.randn(T, plate_size or 1, dtype=dt) * 2
    init0 = torch.randn(K, dtype=dt, requires_grad=True)
    init1 = torch.randn(K, K, dtype=dt, requires_grad=True)
    trans = torch.randn(*(K,) * (history + 1), dtype=dt, requires_grad=True)
    locs = torch.tensor([-2.0, 0.0, 2.0], dtype=dt, requires_grad=True)
    init = (init0, init1)
    args = (data, init, trans, locs, history, plate_size)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        _chain_model, lambda *a: None, *args
    )
    forward = _forward_first_order if history == 1 else _forward_second_order
    exact = -forward(data, init, trans, locs).sum()
    params = (init0, trans, locs) + ((init1,) if history == 2 else ())
    torch.testing.assert_close(loss, exact, rtol=1e-6, atol=1e-6)
    for a, b in zip(
        torch.autograd.grad(loss, params, retain_graph=True), torch.autograd.grad(exact, params)
    ):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_enum_recycles_dims_in_a_chain_and_gives_each_variable_its_own_id():
    def model():
        x = 0
        for t in vitorch.markov(range(6)):
            x = vitorch.sample(f"x_{t}", dist.Categorical(torch.ones(3, 3)[x]), infer=PARALLEL)
        vitorch.sample("g", dist.Bernoulli(0.5), infer=PARALLEL)  # outside: a fresh dim

    tr = poutine.trace(poutine.enum(model, first_available_dim=-2)).get_trace()
    dims = [tr.nodes[f"x_{t}"]["infer"]["_enumerate_dim"] for t in range(6)]
    assert dims == [-2, -3, -2, -3, -2, -3]
    ids = [tr.nodes[f"x_{t}"]["infer"]["_enumerate_id"] for t in range(6)]
    assert len(set(ids)) == 6
    # x_3 sees x_2 at its dim -2 and itself at -3.
    assert tr.nodes["x_3"]["infer"]["_dim_to_id"] == {-2: ids[2], -3: ids[3]}
    assert tr.nodes["g"]["infer"]["_enumerate_dim"] == -2


def test_history_two_keeps_three_dims_and_history_zero_one():
    def chain(history):
        def model():
            for t in vitorch.markov(range(5), history=history):
                vitorch.sample(f"x_{t}", dist.Bernoulli(0.5), infer=PARALLEL)

        tr = poutine.trace(poutine.enum(model, first_available_dim=-1)).get_trace()
        return [tr.nodes[f"x_{t}"]["infer"]["_enumerate_dim"] for t in range(5)]

    assert chain(2) == [-1, -2, -3, -1, -2]
    assert chain(0) == [-1] * 5


def test_markov_contexts_reset_between_runs_and_reject_bad_keep():
    m = vitorch.markov(history=1)
    for _ in range(2):
        with m:
            with m:
                assert m._pos == 1
        assert m._pos == -1 and m._steps == []
    with pytest.raises(TypeError, match="keep must be True or False, got 'yes'"):
        vitorch.markov(keep="yes")


@pytest.mark.parametrize("keep", [False, True])
def test_keep_lets_sibling_steps_see_each_other(keep):
    # Siblings b and c are both one step below a. With keep=True c may depend on b (its
    # dim is not recycled); with keep=False c reuses b's dim, so c must not use b.
    pa = torch.tensor([0.3, 0.7], dtype=torch.float64)
    pb = torch.tensor([[0.6, 0.4], [0.1, 0.9]], dtype=torch.float64)
    pc = torch.tensor([[[0.5, 0.5], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]], dtype=torch.float64)
    locs = torch.tensor([-1.0, 0.5], dtype=torch.float64)

    def model():
        m = vitorch.markov(keep=keep)
        with m:
            a = vitorch.sample("a", dist.Categorical(pa), infer=PARALLEL)
            with m:
                b = vitorch.sample("b", dist.Categorical(pb[a]), infer=PARALLEL)
                vitorch.sample("yb", dist.Normal(locs[b], 1.0), obs=torch.tensor(0.3).double())
            with m:
                probs = pc[a, b] if keep else pc[a, 0]
                c = vitorch.sample("c", dist.Categorical(probs), infer=PARALLEL)
                vitorch.sample("yc", dist.Normal(locs[c], 1.0), obs=torch.tensor(-0.2).double())

    tr = poutine.trace(poutine.enum(model, first_available_dim=-1)).get_trace()
    assert [tr.nodes[n]["infer"]["_enumerate_dim"] for n in "abc"] == (
        [-1, -2, -3] if keep else [-1, -2, -2]
    )
    emit_b = torch.distributions.Normal(locs, 1.0).log_prob(torch.tensor(0.3).double()).exp()
    emit_c = torch.distributions.Normal(locs, 1.0).log_prob(torch.tensor(-0.2).double()).exp()
    total = sum(
        pa[a] * pb[a, b] * emit_b[b] * (pc[a, b, c] if keep else pc[a, 0, c]) * emit_c[c]
        for a in range(2)
        for b in range(2)
        for c in range(2)
    )
    loss = TraceEnum_ELBO(max_plate_nesting=0).loss(model, lambda: None)
    assert loss == pytest.approx(-total.log().item(), rel=1e-9)
