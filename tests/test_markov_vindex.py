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
