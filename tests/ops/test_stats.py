"""vitorch.ops.stats against numpy, brute-force formulas, known limits and pyro.ops.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitorch.ops.stats import (
    autocorrelation,
    autocovariance,
    crps_empirical,
    effective_sample_size,
    energy_score_empirical,
    fit_generalized_pareto,
    gelman_rubin,
    hpdi,
    pi,
    quantile,
    resample,
    split_gelman_rubin,
    waic,
    weighed_quantile,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def ar1_chains(chains: int, n: int, phi: float, seed: int = 0) -> torch.Tensor:
    """``chains`` AR(1) series of length ``n``, with chain-specific offsets."""
    noise = randn(chains, n, seed=seed)
    x = torch.zeros_like(noise)
    x[:, 0] = noise[:, 0]
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x + 0.3 * randn(chains, 1, seed=seed + 1)


# -- numpy references of the formulas --------------------------------------------------------
def np_autocov(x: np.ndarray) -> np.ndarray:
    """Lag-k autocovariance of a 1-d series: mean of the N - k centred products at lag k."""
    n = len(x)
    xc = x - x.mean()
    return np.array([np.sum(xc[: n - k] * xc[k:]) / (n - k) for k in range(n)])


def np_variances(chains: np.ndarray) -> tuple[float, float]:
    """(within-chain variance W, pooled variance (N-1)/N W + var(chain means)) of (C, N)."""
    n = chains.shape[1]
    w = chains.var(axis=1, ddof=1).mean()
    pooled = (n - 1) / n * w + chains.mean(axis=1).var(ddof=1)
    return w, pooled


def np_rhat(chains: np.ndarray) -> float:
    w, pooled = np_variances(chains)
    return math.sqrt(pooled / w)


def np_ess(chains: np.ndarray) -> float:
    """Stan's ESS with Geyer's initial monotone sequence, on (C, N) chains."""
    c, n = chains.shape
    # One chain: its (biased) variance for both, so rho is its plain autocorrelation.
    w, pooled = np_variances(chains) if c > 1 else (chains[0].var(),) * 2
    gamma = np.mean([np_autocov(ch) for ch in chains], axis=0)
    rho = 1 - (w - gamma) / pooled
    rho[0] = 1.0
    tau = -1 + 2 * (rho[0] + rho[1])
    bound = math.inf
    for m in range(1, n // 2):
        bound = min(bound, max(rho[2 * m] + rho[2 * m + 1], 0.0))
        tau += 2 * bound
    return c * n / tau


# -- quantile, pi, hpdi ----------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_quantile_matches_numpy(dim):
    x = randn(7, 11, 5)
    probs = [0.0, 0.05, 0.29, 0.5, 0.7, 0.95, 1.0]
    expected = np.moveaxis(np.quantile(x.numpy(), probs, axis=dim), 0, dim)
    np.testing.assert_allclose(quantile(x, probs, dim), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        quantile(x, torch.tensor(probs, dtype=torch.float64), dim), expected, atol=1e-12
    )


def test_quantile_scalar_prob_drops_dim_and_hand_values():
    x = torch.tensor([[4.0, 1.0, 3.0, 2.0], [10.0, 40.0, 20.0, 30.0]])
    assert quantile(x, 0.5, dim=1).tolist() == [2.5, 25.0]
    assert quantile(x, torch.tensor(0.5), dim=1).shape == (2,)
    # positions 1/3 * 3 = 1 and 0.5 * 3 = 1.5 of the sorted rows
    torch.testing.assert_close(
        quantile(x, [1 / 3, 0.5], dim=1), torch.tensor([[2.0, 2.5], [20.0, 25.0]])
    )
    assert quantile(x, [0.0, 1.0], dim=0).tolist() == [[4.0, 1.0, 3.0, 2.0], [10.0, 40.0, 20, 30]]


def test_pi_matches_numpy():
    x = randn(1000, 3)
    expected = np.quantile(x.numpy(), [0.05, 0.95], axis=0)
    np.testing.assert_allclose(pi(x, 0.9), expected, atol=1e-12)
    np.testing.assert_allclose(pi(x.T, 0.5, dim=1).T, np.quantile(x, [0.25, 0.75], 0), atol=1e-12)


def brute_hpdi(x: np.ndarray, prob: float) -> tuple[float, float]:
    """Narrowest [s_i, s_{i+span}] over the sorted samples, span = int(prob * N)."""
    s = np.sort(x)
    span = int(prob * len(s))
    best = min(range(len(s) - span), key=lambda i: (s[i + span] - s[i], i))
    return s[best], s[best + span]


def test_hpdi_hand_case():
    x = torch.tensor([5.0, 1.1, 0.0, 1.3, 1.0, 1.2], dtype=torch.float64)
    # int(0.5 * 6) = 3: windows [0, 1.2], [1.0, 1.3], [1.1, 5.0]; the middle one is narrowest.
    assert hpdi(x, 0.5).tolist() == [1.0, 1.3]
    assert hpdi(x, 1.0).tolist() == [0.0, 5.0]  # the whole range (Pyro fails here)


@pytest.mark.parametrize("prob", [0.5, 0.8, 0.9])
def test_hpdi_is_shortest_interval_and_holds_the_mass(prob):
    x = torch.distributions.Gamma(2.0, 1.0).sample((301, 4)).double()
    result = hpdi(x, prob)
    assert result.shape == (2, 4)
    for j in range(4):
        assert tuple(result[:, j].tolist()) == brute_hpdi(x[:, j].numpy(), prob)
        inside = ((x[:, j] >= result[0, j]) & (x[:, j] <= result[1, j])).double().mean()
        assert inside >= prob
    # along dim=1 the same intervals
    assert torch.equal(hpdi(x.T, prob, dim=1), result.T)
    # skewed: narrower than the equal-tailed interval
    assert ((result[1] - result[0]) <= (pi(x, prob)[1] - pi(x, prob)[0])).all()


# -- weighed_quantile --------------------------------------------------------------------------
def test_weighed_quantile_docstring_example():
    x = torch.tensor([[10.0, 50.0, 40.0], [20.0, 30.0, 0.0]])
    log_weights = torch.tensor([0.4, 0.5, 0.1]).log()
    result = weighed_quantile(x, torch.tensor([0.2, 0.8]), log_weights, -1)
    torch.testing.assert_close(result, torch.tensor([[40.4, 47.6], [9.0, 26.4]]))


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_weighed_quantile_equal_weights_is_quantile(dim):
    x = randn(6, 9, 5)
    probs = [0.0, 0.1, 0.5, 0.77, 1.0]
    log_weights = torch.full((x.size(dim),), -3.0, dtype=torch.float64)
    torch.testing.assert_close(
        weighed_quantile(x, probs, log_weights, dim), quantile(x, probs, dim)
    )


def test_weighed_quantile_interpolates_between_weighted_points():
    """The sorted samples sit at their cumulative weight, rescaled to [0, 1]; np.interp."""
    x = randn(12, seed=3)
    w = torch.rand(12, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) + 0.1
    probs = torch.linspace(0, 1, 23, dtype=torch.float64)
    order = x.argsort()
    cdf = (w[order] / w.sum()).cumsum(0).numpy()
    knots = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    expected = np.interp(probs.numpy(), knots, x[order].numpy())
    np.testing.assert_allclose(weighed_quantile(x, probs, w.log()), expected, atol=1e-12)
    # weights only matter up to a constant factor
    torch.testing.assert_close(
        weighed_quantile(x, probs, w.log() + 7.0), weighed_quantile(x, probs, w.log())
    )


def test_weighed_quantile_integer_weights_repeat_samples():
    """Integer weights act as repeated samples at the weighted points: with weight 1 on the
    smallest sample, the prob (C_i - 1) / (W - 1) (C_i the cumulative count up to the i-th
    smallest sample, W the total) gives that sample for both. In between, the weighted
    quantile interpolates between distinct samples while the repeated one is flat."""
    x = torch.tensor([0.0, 3.0, 1.0, 7.0, 2.0], dtype=torch.float64)
    counts = torch.tensor([1, 3, 2, 4, 1])  # sorted order 0, 1, 2, 3, 7 -> counts 1, 2, 1, 3, 4
    repeated = x.repeat_interleave(counts)
    total = int(counts.sum())
    cumulative = counts[x.argsort()].cumsum(0)
    probs = (cumulative.double() - 1) / (total - 1)
    torch.testing.assert_close(
        weighed_quantile(x, probs, counts.double().log()), quantile(repeated, probs)
    )
    torch.testing.assert_close(quantile(repeated, probs), x.sort().values)


def test_weighed_quantile_scalar_prob():
    x = randn(20, 3)
    lw = randn(20, seed=1)
    torch.testing.assert_close(weighed_quantile(x, 0.3, lw), weighed_quantile(x, [0.3], lw)[0])


# -- autocorrelation, autocovariance ----------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 32, 33])
def test_autocorrelation_matches_direct_sum(n):
    x = randn(3, n, 2)
    acov = autocovariance(x, dim=1)
    acorr = autocorrelation(x, dim=1)
    assert acov.shape == acorr.shape == x.shape
    for i in range(3):
        for j in range(2):
            expected = np_autocov(x[i, :, j].numpy())
            np.testing.assert_allclose(acov[i, :, j], expected, atol=1e-12)
            if expected[0] > 0:
                np.testing.assert_allclose(acorr[i, :, j], expected / expected[0], atol=1e-12)


def test_autocorrelation_of_constant_series():
    x = torch.stack([torch.full((6,), 2.5), torch.arange(6.0)], dim=-1)
    assert torch.equal(autocorrelation(x)[:, 0], torch.ones(6))
    assert torch.equal(autocovariance(x)[:, 0], torch.zeros(6))
    assert autocorrelation(x)[0, 1] == 1


# -- gelman_rubin, split_gelman_rubin, effective_sample_size -----------------------------------
def test_gelman_rubin_matches_numpy():
    x = ar1_chains(4, 60, 0.6)  # (chains, samples)
    expected = np_rhat(x.numpy())
    assert gelman_rubin(x).item() == pytest.approx(expected, rel=1e-12)
    assert gelman_rubin(x.T, chain_dim=1, sample_dim=0).item() == pytest.approx(expected, rel=1e-12)
    # extra dims are kept, in order, around the chain and sample dims
    y = torch.stack([x, 2 * x + 1, x.flip(1)], dim=1)  # (chains, 3, samples)
    r = gelman_rubin(y, chain_dim=0, sample_dim=2)
    assert r.shape == (3,)
    torch.testing.assert_close(r[:2], torch.full((2,), expected, dtype=torch.float64))


def test_gelman_rubin_limits():
    n = 50
    chain = randn(n)
    # identical chains: no between-chain variance, R-hat = sqrt((N - 1) / N)
    same = chain.expand(3, n)
    torch.testing.assert_close(gelman_rubin(same), torch.tensor(math.sqrt((n - 1) / n)).double())
    # within variance 1 and chain-mean variance 1/N: the pooled variance is 1, R-hat = 1
    z = randn(4, n)
    z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True)
    offsets = randn(4, seed=5)
    offsets = (offsets - offsets.mean()) / offsets.std() / math.sqrt(n)
    torch.testing.assert_close(gelman_rubin(z + offsets[:, None]), torch.tensor(1.0).double())
    # chains stuck in different places: R-hat far above 1
    assert gelman_rubin(randn(4, n) + torch.arange(4.0).double()[:, None] * 3) > 2


@pytest.mark.parametrize("n", [40, 41])
def test_split_gelman_rubin_matches_numpy(n):
    x = ar1_chains(3, n, 0.5)
    half = n // 2
    halves = np.concatenate([x[:, :half].numpy(), x[:, n - half :].numpy()])
    expected = np_rhat(halves)
    assert split_gelman_rubin(x).item() == pytest.approx(expected, rel=1e-12)
    assert split_gelman_rubin(x[:1]).item() == pytest.approx(np_rhat(halves[[0, 3]]), rel=1e-12)
    # a chain whose two halves are the same series: R-hat = sqrt((h - 1) / h)
    twice = randn(half).repeat(2).expand(2, 2 * half)
    torch.testing.assert_close(
        split_gelman_rubin(twice), torch.tensor(math.sqrt((half - 1) / half)).double()
    )


@pytest.mark.parametrize("chains, n", [(4, 200), (3, 201), (1, 150)])
def test_effective_sample_size_matches_numpy(chains, n):
    x = ar1_chains(chains, n, 0.7, seed=chains)
    expected = np_ess(x.numpy())
    assert effective_sample_size(x).item() == pytest.approx(expected, rel=1e-9)
    y = torch.stack([x, -x], dim=-1).transpose(0, 1)  # (samples, chains, 2)
    torch.testing.assert_close(
        effective_sample_size(y, chain_dim=1, sample_dim=0),
        torch.full((2,), expected, dtype=torch.float64),
    )
    # AR(1) with phi = 0.7 is correlated: far fewer effective samples than draws
    assert expected < 0.5 * chains * n


def test_effective_sample_size_of_iid_chains_is_about_n():
    chains, n = 4, 1000
    ess = effective_sample_size(randn(chains, n, 3))
    # For iid draws tau = N C / ESS is 1 plus sample autocorrelations of size 1/sqrt(NC);
    # its spread is about 3/sqrt(NC), and 20/sqrt(NC) (about 7 of those) bounds the error.
    tolerance = 20 / math.sqrt(chains * n)
    assert ((ess / (chains * n) - 1).abs() < tolerance).all(), ess


# -- resample ------------------------------------------------------------------------------------
def test_resample_without_replacement():
    x = torch.arange(10.0)[:, None].expand(10, 3) * torch.tensor([1.0, 10.0, 100.0])
    draw = resample(x, 6)
    assert draw.shape == (6, 3)
    rows = draw[:, 0].long()
    assert len(set(rows.tolist())) == 6  # no entry twice
    assert torch.equal(draw, x[rows])  # whole slices along dim move together
    assert sorted(resample(x, 10)[:, 0].tolist()) == list(range(10))  # a permutation
    assert resample(x.T, 4, dim=1).shape == (3, 4)


def test_resample_with_replacement():
    x = torch.arange(5.0)
    draw = resample(x, 400, replacement=True)
    assert draw.shape == (400,)
    assert set(draw.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}  # P(missing one) < 5 * 0.8**400


# -- waic ------------------------------------------------------------------------------------------
def test_waic_matches_numpy():
    ll = -randn(200, 6).abs() - 0.5  # log-likelihood per (sample, data point)
    a = ll.numpy()
    lpd = np.log(np.mean(np.exp(a), axis=0))
    p_waic = np.var(a, axis=0, ddof=1)
    w_point, p_point = waic(ll, pointwise=True)
    np.testing.assert_allclose(w_point, -2 * (lpd - p_waic), rtol=1e-12)
    np.testing.assert_allclose(p_point, p_waic, rtol=1e-12)
    w_sum, p_sum = waic(ll)
    assert w_sum.shape == p_sum.shape == ()
    assert w_sum.item() == pytest.approx(np.sum(-2 * (lpd - p_waic)), rel=1e-12)
    # samples on dim 1
    torch.testing.assert_close(waic(ll.T, pointwise=True, dim=1)[0], w_point)


def test_waic_with_weights():
    ll = -randn(4, 50, 3).abs()  # samples on dim 1
    lw = randn(50, seed=2)
    w = np.exp(lw.numpy()) / np.exp(lw.numpy()).sum()
    a = ll.numpy()
    lpd = np.log(np.einsum("s,isj->ij", w, np.exp(a)))
    mean = np.einsum("s,isj->ij", w, a)
    p_waic = np.einsum("s,isj->ij", w, (a - mean[:, None]) ** 2) * 50 / 49
    score, p = waic(ll, lw, pointwise=True, dim=1)
    np.testing.assert_allclose(score, -2 * (lpd - p_waic), rtol=1e-12)
    np.testing.assert_allclose(p, p_waic, rtol=1e-12)


# -- fit_generalized_pareto --------------------------------------------------------------------
@pytest.mark.parametrize("k, sigma", [(0.5, 2.0), (-0.2, 1.0)])
def test_fit_generalized_pareto_recovers_parameters(k, sigma):
    n = 20000
    u = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = sigma / k * (u.pow(-k) - 1)  # inverse CDF of the generalized Pareto
    k_hat, sigma_hat = fit_generalized_pareto(x)
    assert isinstance(k_hat, float) and isinstance(sigma_hat, float)
    # Asymptotic (maximum-likelihood) standard errors; the estimate is near efficient.
    assert abs(k_hat - k) < 5 * (1 + k) / math.sqrt(n)
    assert abs(sigma_hat - sigma) < 5 * sigma * math.sqrt(2 * (1 + k) / n)


# -- crps_empirical, energy_score_empirical ----------------------------------------------------
def brute_crps(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    first = np.abs(pred - truth).mean(0)
    pairs = np.abs(pred[:, None] - pred[None, :]).mean((0, 1))
    return first - pairs / 2


@pytest.mark.parametrize("n", [1, 2, 17])
def test_crps_empirical_matches_pairwise(n):
    pred, truth = randn(n, 3, 4), randn(3, 4, seed=1)
    result = crps_empirical(pred, truth)
    assert result.shape == (3, 4)
    np.testing.assert_allclose(result, brute_crps(pred.numpy(), truth.numpy()), atol=1e-12)
    if n == 1:
        torch.testing.assert_close(result, (pred[0] - truth).abs())
    # extra size-1 dims between the sample dim and truth's shape broadcast
    assert crps_empirical(pred[:, None], truth).shape == (1, 3, 4)


def brute_energy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """pred (B, N, D), truth (B, M, D) -> (B, M)."""
    to_truth = np.linalg.norm(pred[:, :, None] - truth[:, None], axis=-1).mean(1)
    spread = np.linalg.norm(pred[:, :, None] - pred[:, None], axis=-1).mean((1, 2))
    return to_truth - spread[:, None] / 2


@pytest.mark.parametrize("batch", [None, 1, 4, 9])
def test_energy_score_matches_pairwise(batch):
    pred, truth = randn(2, 9, 3), randn(2, 5, 3, seed=1)
    expected = brute_energy(pred.numpy(), truth.numpy())
    np.testing.assert_allclose(energy_score_empirical(pred, truth, batch), expected, atol=1e-12)
    single = energy_score_empirical(pred, truth[:, 0], batch)
    assert single.shape == (2,)
    np.testing.assert_allclose(single, expected[:, 0], atol=1e-12)


def test_energy_score_univariate_is_crps_and_uses_cdist():
    pred, truth = randn(30, 1), randn(1, seed=1)
    torch.testing.assert_close(energy_score_empirical(pred, truth), crps_empirical(pred, truth)[0])
    calls = []

    def l1(a, b):
        calls.append((a.shape, b.shape))
        return torch.cdist(a, b, p=1)

    result = energy_score_empirical(randn(8, 2), randn(2, seed=3), pred_batch_size=3, cdist=l1)
    assert calls and all(a[-2] <= 3 for a, _ in calls)
    p, t = randn(8, 2).numpy(), randn(2, seed=3).numpy()
    l1_expected = np.abs(p - t).sum(-1).mean() - np.abs(p[:, None] - p).sum(-1).mean() / 2
    assert result.item() == pytest.approx(l1_expected, rel=1e-12)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: gelman_rubin(torch.randn(10)), "input"),
        (lambda: gelman_rubin(torch.randn(1, 10)), "2 chains"),
        (lambda: gelman_rubin(torch.randn(3, 10), chain_dim=1, sample_dim=-1), "chain_dim"),
        (lambda: split_gelman_rubin(torch.randn(2, 3)), "sample_dim"),
        (lambda: effective_sample_size(torch.randn(2, 5), sample_dim=2), "sample_dim"),
        (lambda: quantile(torch.randn(5), [0.5, 1.5]), "probs"),
        (lambda: quantile(torch.randn(5), torch.ones(2, 2)), "probs"),
        (lambda: quantile(torch.randn(5, 2), 0.5, dim=2), "dim"),
        (lambda: weighed_quantile(torch.randn(5), [-0.1], torch.zeros(5)), "probs"),
        (lambda: weighed_quantile(torch.randn(5), [0.5], torch.zeros(4)), "log_weights"),
        (lambda: pi(torch.randn(5), 1.2), "prob"),
        (lambda: hpdi(torch.randn(5), -0.5), "prob"),
        (lambda: resample(torch.randn(5), 6), "num_samples"),
        (lambda: resample(torch.randn(5), 0, replacement=True), "num_samples"),
        (lambda: waic(torch.randn(1, 3)), "input"),
        (lambda: waic(torch.randn(4, 3), torch.zeros(3)), "log_weights"),
        (lambda: fit_generalized_pareto(torch.rand(3, 3)), "X"),
        (lambda: crps_empirical(torch.randn(5, 3), torch.randn(4)), "pred"),
        (lambda: energy_score_empirical(torch.randn(5, 3), torch.randn(1, 1, 3)), "pred"),
        (lambda: energy_score_empirical(torch.randn(5, 3), torch.randn(3), 0), "pred_batch_size"),
    ],
)
def test_bad_input_raises_value_error(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_error_messages_say_what_was_given():
    with pytest.raises(ValueError, match=r"num_samples=6 is more than the 5 samples"):
        resample(torch.randn(5), 6)
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\], got \[0.5, 1.5\]"):
        quantile(torch.randn(5), [0.5, 1.5])
    with pytest.raises(ValueError, match=r"must have shape \(5,\).*got shape \(4,\)"):
        waic(torch.randn(5, 2), torch.zeros(4))
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got list"):
        quantile([1.0, 2.0], 0.5)


# -- cross-check with Pyro -------------------------------------------------------------------------
def test_matches_pyro():
    pytest.importorskip("pyro")
    from pyro.ops import stats as pyro_stats

    chains = torch.stack([ar1_chains(3, 41, 0.6, seed=s) for s in range(2)], dim=-1)  # (3, 41, 2)
    for name in ["gelman_rubin", "split_gelman_rubin", "effective_sample_size"]:
        for dims in [(0, 1), (1, 0), (-1, 1), (0, -2)]:
            x = chains if dims[0] != 1 else chains.transpose(0, 1)
            if name == "split_gelman_rubin" or min(x.size(dims[0]), x.size(dims[1])) >= 2:
                mine = globals()[name](x, *dims)
                torch.testing.assert_close(mine, getattr(pyro_stats, name)(x, *dims))
    ess_one = chains[:1]
    torch.testing.assert_close(
        effective_sample_size(ess_one), pyro_stats.effective_sample_size(ess_one)
    )
    for fn in ["autocorrelation", "autocovariance"]:
        for dim in [0, 1, -1]:
            torch.testing.assert_close(
                globals()[fn](chains, dim), getattr(pyro_stats, fn)(chains, dim)
            )

    x = randn(25, 4, 3)
    probs = [0.0, 0.1, 0.5, 0.93, 1.0]
    for dim in [0, 1, -1]:
        torch.testing.assert_close(quantile(x, probs, dim), pyro_stats.quantile(x, probs, dim))
        torch.testing.assert_close(quantile(x, 0.3, dim), pyro_stats.quantile(x, 0.3, dim))
        torch.testing.assert_close(pi(x, 0.8, dim), pyro_stats.pi(x, 0.8, dim))
        torch.testing.assert_close(hpdi(x, 0.7, dim), pyro_stats.hpdi(x, 0.7, dim))
        lw = randn(x.size(dim), seed=dim + 7)
        torch.testing.assert_close(
            weighed_quantile(x, probs, lw, dim), pyro_stats.weighed_quantile(x, probs, lw, dim)
        )
        for pointwise in [False, True]:
            for weights in [None, lw]:
                for mine, theirs in zip(
                    waic(x, weights, pointwise, dim), pyro_stats.waic(x, weights, pointwise, dim)
                ):
                    torch.testing.assert_close(mine, theirs)

    sample = torch.distributions.Exponential(1.0).sample((500,)).double()
    mine, theirs = fit_generalized_pareto(sample), pyro_stats.fit_generalized_pareto(sample)
    assert mine == pytest.approx(theirs, rel=1e-10)

    pred, truth = randn(30, 2, 3), randn(2, 3, seed=1)
    torch.testing.assert_close(crps_empirical(pred, truth), pyro_stats.crps_empirical(pred, truth))
    pred = pred.transpose(0, 1)  # (batch, samples, D)
    truth_m = randn(2, 4, 3, seed=2)
    for batch in [None, 7]:
        for t in [truth, truth_m]:
            torch.testing.assert_close(
                energy_score_empirical(pred, t, batch),
                pyro_stats.energy_score_empirical(pred, t, batch),
            )

    for replacement, num in [(False, 4), (True, 40)]:
        torch.manual_seed(3)
        mine = resample(x, num, 1, replacement)
        torch.manual_seed(3)
        assert torch.equal(mine, pyro_stats.resample(x, num, 1, replacement))
