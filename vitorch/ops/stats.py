"""Statistics of posterior samples: Pyro's ``pyro.ops.stats``.

MCMC diagnostics (:func:`gelman_rubin`, :func:`split_gelman_rubin`,
:func:`effective_sample_size`, :func:`autocorrelation`, :func:`autocovariance`) take
``input`` with a chain dim and a sample dim and return one value per remaining element.
Interval summaries (:func:`quantile`, :func:`weighed_quantile`, :func:`pi`, :func:`hpdi`)
replace the sample dim ``dim`` by one entry per probability. :func:`waic`,
:func:`fit_generalized_pareto`, :func:`crps_empirical` and :func:`energy_score_empirical`
score models and forecasts from samples::

    x.shape == (chains, samples, 3)
    effective_sample_size(x).shape == (3,)
    quantile(x[0], [0.05, 0.95]).shape == (2, 3)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "autocorrelation",
    "autocovariance",
    "crps_empirical",
    "effective_sample_size",
    "energy_score_empirical",
    "fit_generalized_pareto",
    "gelman_rubin",
    "hpdi",
    "pi",
    "quantile",
    "resample",
    "split_gelman_rubin",
    "waic",
    "weighed_quantile",
]


# -- argument checks -----------------------------------------------------------------------
def _tensor(fn: str, input: object, name: str = "input") -> torch.Tensor:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(input).__name__}")
    return input


def _dim(fn: str, dim: object, ndim: int, name: str = "dim") -> int:
    """``dim`` as a non-negative index into a tensor with ``ndim`` dims."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise ValueError(
            f"{fn}: {name} must be an int in [{-ndim}, {ndim}) for an input with {ndim} dims, "
            f"got {dim!r}"
        )
    return dim % ndim


def _samples(fn: str, input: object, dim: object, at_least: int = 1) -> tuple[torch.Tensor, int]:
    """Checked ``input`` and ``dim``, with at least ``at_least`` samples along ``dim``."""
    x = _tensor(fn, input)
    if x.dim() == 0:
        raise ValueError(f"{fn}: input must have a sample dim, got a 0-dim tensor")
    d = _dim(fn, dim, x.dim())
    if x.size(d) < at_least:
        raise ValueError(
            f"{fn}: input must have at least {at_least} samples along dim={dim}, "
            f"got shape {tuple(x.shape)}"
        )
    return x, d


def _prob(fn: str, prob: object) -> float:
    if isinstance(prob, bool) or not isinstance(prob, numbers.Real) or not 0 <= prob <= 1:
        raise ValueError(f"{fn}: prob must be a number in [0, 1], got {prob!r}")
    return float(prob)


def _probs(fn: str, probs: object, like: torch.Tensor) -> torch.Tensor:
    """``probs`` as a 0-d or 1-d float tensor on ``like``'s device, checked to lie in [0, 1]."""
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    try:
        p = torch.as_tensor(probs, dtype=dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{fn}: probs must be a number, a list of numbers or a tensor, got {probs!r}"
        ) from None
    if p.dim() > 1:
        raise ValueError(f"{fn}: probs must be a number or 1-dim, got shape {tuple(p.shape)}")
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"{fn}: probs must lie in [0, 1], got {probs!r}")
    return p


def _log_weights(fn: str, log_weights: object, input: torch.Tensor, dim: int) -> torch.Tensor:
    lw = torch.as_tensor(_tensor(fn, log_weights, "log_weights"), device=input.device)
    if lw.shape != (input.size(dim),):
        raise ValueError(
            f"{fn}: log_weights must have shape ({input.size(dim)},), one weight per sample "
            f"along dim, got shape {tuple(lw.shape)}"
        )
    return lw


def _chains_first(
    fn: str, input: object, chain_dim: object, sample_dim: object, min_samples: int
) -> torch.Tensor:
    """``input`` rearranged to ``(samples, chains, *rest)``, ``rest`` in its original order."""
    x = _tensor(fn, input)
    if x.dim() < 2:
        raise ValueError(
            f"{fn}: input must have a chain dim and a sample dim, got shape {tuple(x.shape)}"
        )
    c = _dim(fn, chain_dim, x.dim(), "chain_dim")
    s = _dim(fn, sample_dim, x.dim(), "sample_dim")
    if c == s:
        raise ValueError(
            f"{fn}: chain_dim and sample_dim must differ, got {chain_dim!r} and {sample_dim!r}"
        )
    if x.size(s) < min_samples:
        raise ValueError(
            f"{fn}: input must have at least {min_samples} samples along sample_dim="
            f"{sample_dim}, got shape {tuple(x.shape)}"
        )
    return x.movedim((s, c), (0, 1))


# -- MCMC diagnostics ----------------------------------------------------------------------
def _variances(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Within-chain variance W and pooled estimate ``(N-1)/N W + B/N`` of ``x: (N, C, ...)``.

    With one chain, W is replaced by the pooled estimate, so the chain's correlations in
    :func:`effective_sample_size` reduce to its plain autocorrelation.
    """
    n = x.size(0)
    within = x.var(0).mean(0)
    pooled = (n - 1) / n * within
    if x.size(1) == 1:
        return pooled, pooled
    return within, pooled + x.mean(0).var(0)


def gelman_rubin(input: torch.Tensor, chain_dim: int = 0, sample_dim: int = 1) -> torch.Tensor:
    """R-hat (Gelman and Rubin's potential scale reduction) over chains of samples.

    Needs at least 2 chains and 2 samples per chain. Returns ``input``'s shape without the
    chain and sample dims; values near 1 mean the chains agree.
    """
    x = _chains_first("gelman_rubin", input, chain_dim, sample_dim, min_samples=2)
    if x.size(1) < 2:
        raise ValueError(
            f"gelman_rubin: input must have at least 2 chains along chain_dim={chain_dim}, "
            f"got shape {tuple(input.shape)} (split_gelman_rubin works with one chain)"
        )
    within, pooled = _variances(x)
    return (pooled / within).sqrt()


def split_gelman_rubin(
    input: torch.Tensor, chain_dim: int = 0, sample_dim: int = 1
) -> torch.Tensor:
    """R-hat after splitting each chain into its first and last halves (Stan's split R-hat).

    Splitting also catches a chain that drifts. Needs at least 4 samples per chain; with an
    odd count the middle sample is left out.
    """
    x = _chains_first("split_gelman_rubin", input, chain_dim, sample_dim, min_samples=4)
    half = x.size(0) // 2
    return gelman_rubin(torch.cat([x[:half], x[-half:]], dim=1), chain_dim=1, sample_dim=0)


def autocorrelation(input: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Autocorrelation along ``dim``, by FFT in O(N log N), with the shape of ``input``.

    Lag ``k`` is ``mean_t(x_t x_{t+k}) / mean_t(x_t^2)`` for the centred ``x``, the first mean
    over the ``N - k`` pairs at that lag; constant series have autocorrelation 1.
    """
    x, d = _samples("autocorrelation", input, dim)
    n = x.size(d)
    x = x.movedim(d, -1)
    x = x - x.mean(-1, keepdim=True)
    # Zero-padding to >= 2N - 1 turns the FFT's circular correlation into the linear one.
    size = 1 << (2 * n - 2).bit_length()
    spectrum = torch.fft.rfft(x, n=size)
    power = spectrum.real.square() + spectrum.imag.square()
    lags = torch.fft.irfft(power, n=size)[..., :n]
    lags = lags / torch.arange(n, 0, -1, dtype=lags.dtype, device=lags.device)
    var = lags[..., :1]
    constant = var == 0
    result = torch.where(constant, torch.ones_like(lags), lags / torch.where(constant, 1, var))
    return result.movedim(-1, d)


def autocovariance(input: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Autocovariance along ``dim``: :func:`autocorrelation` times the (biased) variance."""
    x, d = _samples("autocovariance", input, dim)
    return autocorrelation(x, d) * x.var(d, unbiased=False, keepdim=True)


def effective_sample_size(
    input: torch.Tensor, chain_dim: int = 0, sample_dim: int = 1
) -> torch.Tensor:
    """Effective sample size over all chains, as in Stan (Geyer's initial monotone sequence).

    The chains' autocorrelations are combined with the between-chain variance; sums of
    pairs of consecutive lags are cut to be non-negative and non-increasing after the first.
    Returns ``input``'s shape without the chain and sample dims.
    """
    x = _chains_first("effective_sample_size", input, chain_dim, sample_dim, min_samples=2)
    n, chains = x.size(0), x.size(1)
    gamma = autocovariance(x, dim=0).mean(1)
    within, pooled = _variances(x)
    rho = (pooled - within + gamma) / pooled
    rho = torch.cat([torch.ones_like(rho[:1]), rho[1:]])
    pairs = rho[: n - n % 2].reshape((n // 2, 2) + rho.shape[1:]).sum(1)
    tail = pairs[1:].clamp(min=0).cummin(0).values
    tau = -1 + 2 * pairs[0] + 2 * tail.sum(0)
    return chains * n / tau


# -- sample intervals ----------------------------------------------------------------------
def resample(
    input: torch.Tensor, num_samples: int, dim: int = 0, replacement: bool = False
) -> torch.Tensor:
    """``num_samples`` entries of ``input`` along ``dim``, drawn uniformly at random.

    Without ``replacement`` every entry is drawn at most once, so ``num_samples`` can be at
    most ``input.size(dim)``.
    """
    x, d = _samples("resample", input, dim)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"resample: num_samples must be a positive int, got {num_samples!r}")
    if not replacement and num_samples > x.size(d):
        raise ValueError(
            f"resample: num_samples={num_samples} is more than the {x.size(d)} samples along "
            f"dim={dim}; pass replacement=True to draw with replacement"
        )
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    weights = torch.ones(x.size(d), dtype=dtype, device=x.device)
    return x.index_select(d, torch.multinomial(weights, num_samples, replacement))


def quantile(
    input: torch.Tensor, probs: float | Sequence[float] | torch.Tensor, dim: int = 0
) -> torch.Tensor:
    """Quantiles of ``input`` along ``dim``, interpolated linearly between order statistics.

    The ``p`` quantile sits at position ``p * (N - 1)`` of the sorted samples (numpy's default
    ``"linear"`` method). ``dim`` becomes one entry per prob, or is dropped for a scalar prob.
    """
    x, d = _samples("quantile", input, dim)
    p = _probs("quantile", probs, x)
    top = x.size(d) - 1
    ordered = x.sort(d).values
    position = p.reshape(-1) * top
    below = position.long()
    above = (below + 1).clamp(max=top)
    shape = [1] * x.dim()
    shape[d] = -1
    frac = (position - below.to(position.dtype)).reshape(shape)
    q = (1 - frac) * ordered.index_select(d, below) + frac * ordered.index_select(d, above)
    return q.squeeze(d) if p.dim() == 0 else q


def weighed_quantile(
    input: torch.Tensor,
    probs: list[float] | tuple[float, ...] | torch.Tensor,
    log_weights: torch.Tensor,
    dim: int = 0,
) -> torch.Tensor:
    """Quantiles of samples weighted by ``exp(log_weights)`` (one weight per entry on ``dim``).

    The sorted samples are placed at their cumulative normalized weight, rescaled so the
    smallest sample sits at 0 and the largest at 1, and quantiles are interpolated linearly
    between those points; equal weights give :func:`quantile`. ``dim`` becomes one entry
    per prob (dropped for a scalar prob).

    >>> x = torch.tensor([[10.0, 50.0, 40.0], [20.0, 30.0, 0.0]])
    >>> w = torch.tensor([0.4, 0.5, 0.1]).log()
    >>> weighed_quantile(x, torch.tensor([0.2, 0.8]), w, -1)
    tensor([[40.4000, 47.6000],
            [ 9.0000, 26.4000]])
    """
    x, d = _samples("weighed_quantile", input, dim)
    p = _probs("weighed_quantile", probs, x)
    lw = _log_weights("weighed_quantile", log_weights, x, d)
    ordered, order = x.sort(d)
    cdf = lw.softmax(0)[order].cumsum(d).movedim(d, -1)
    cdf = cdf - cdf[..., :1]
    cdf = (cdf / cdf[..., -1:]).contiguous()
    ordered = ordered.movedim(d, -1)
    targets = p.reshape(-1).to(cdf.dtype).expand(cdf.shape[:-1] + (p.numel(),)).contiguous()
    # The first sample whose position is past the prob, and the one before it.
    above = torch.searchsorted(cdf, targets, right=True).clamp(max=x.size(d) - 1)
    below = (above - 1).clamp(min=0)
    cdf_above, cdf_below = cdf.gather(-1, above), cdf.gather(-1, below)
    frac_below = (cdf_above - targets) / (cdf_above - cdf_below)
    q = frac_below * ordered.gather(-1, below) + (1 - frac_below) * ordered.gather(-1, above)
    q = q.movedim(-1, d)
    return q.squeeze(d) if p.dim() == 0 else q


def pi(input: torch.Tensor, prob: float, dim: int = 0) -> torch.Tensor:
    """Percentile interval: the quantiles ``(1 - prob) / 2`` and ``(1 + prob) / 2``, which
    leave equal mass in each tail. ``dim`` becomes the 2 interval ends."""
    p = _prob("pi", prob)
    return quantile(input, [(1 - p) / 2, (1 + p) / 2], dim)


def hpdi(input: torch.Tensor, prob: float, dim: int = 0) -> torch.Tensor:
    """Highest posterior density interval: the narrowest interval between two samples that
    spans ``int(prob * N)`` sorted positions. ``dim`` becomes the 2 interval ends (the
    leftmost interval when several are narrowest; ``prob=1`` gives the sample range)."""
    p = _prob("hpdi", prob)
    x, d = _samples("hpdi", input, dim)
    n = x.size(d)
    span = min(int(p * n), n - 1)
    ordered = x.sort(d).values
    widths = ordered.narrow(d, span, n - span) - ordered.narrow(d, 0, n - span)
    start = widths.argmin(d, keepdim=True)
    return ordered.gather(d, torch.cat([start, start + span], d))


# -- model and forecast scores -------------------------------------------------------------
def waic(
    input: torch.Tensor,
    log_weights: torch.Tensor | None = None,
    pointwise: bool = False,
    dim: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WAIC and its effective number of parameters ``p_waic`` (Vehtari and Gelman).

    ``input`` holds log-likelihoods with samples along ``dim``, optionally weighted by
    ``exp(log_weights)``. ``WAIC = -2 (lpd - p_waic)`` per data point, where ``lpd`` is the
    log of the (weighted) mean likelihood and ``p_waic`` the (weighted, unbiased) variance
    of the log-likelihood. Returns ``(waic, p_waic)`` per data point (``input``'s shape
    without ``dim``) if ``pointwise``, else both summed over the data points.
    """
    x, d = _samples("waic", input, dim, at_least=2)
    n = x.size(d)
    if log_weights is None:
        lw = torch.zeros(n, dtype=x.dtype, device=x.device)
    else:
        lw = _log_weights("waic", log_weights, x, d)
    lw_b = lw.reshape((n,) + (1,) * (x.dim() - d - 1))
    lpd = (x + lw_b).logsumexp(d) - lw.logsumexp(0)
    w = lw.softmax(0).reshape(lw_b.shape)
    mean = (x * w).sum(d, keepdim=True)
    p_waic = ((x - mean).square() * w).sum(d) * (n / (n - 1))
    score = -2 * (lpd - p_waic)
    return (score, p_waic) if pointwise else (score.sum(), p_waic.sum())


def fit_generalized_pareto(X: torch.Tensor) -> tuple[float, float]:
    """Estimate ``(k, sigma)`` of a generalized Pareto sample ``X`` (1-dim, location 0).

    Zhang and Stephens' (2009) posterior-mean estimate of ``k / sigma``, with the weak prior
    of Vehtari et al.'s Pareto smoothed importance sampling pulling ``k`` toward 0.5. ``k``
    is the shape with heavy tails for ``k > 0`` (``scipy.stats.genpareto``'s ``c``).
    """
    if not isinstance(X, torch.Tensor) or X.dim() != 1 or X.numel() == 0:
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise ValueError(
            f"fit_generalized_pareto: X must be a non-empty 1-dim torch.Tensor, got {shape}"
        )
    x = X.double().sort().values
    n = x.numel()
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=torch.float64, device=x.device)
    # Candidate theta = -k / sigma on a grid set by the largest sample and the first quartile.
    theta = 1 / x[-1] + (1 - (m / (j - 0.5)).sqrt()) / (3 * x[int(n / 4 - 0.5)])
    k = torch.log1p(-theta[:, None] * x).mean(-1)
    profile_loglik = n * ((-theta / k).log() - k - 1)
    theta_hat = (profile_loglik.softmax(0) * theta).sum()
    k_hat = torch.log1p(-theta_hat * x).mean()
    sigma = -k_hat / theta_hat
    return float((n * k_hat + 5) / (n + 10)), float(sigma)


def crps_empirical(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Negative continuous ranked probability score ``E|pred - truth| - E|pred - pred'| / 2``.

    ``pred`` has the samples on its leftmost dim: shape ``(num_samples,) + truth.shape``.
    Sorting the samples makes the pairwise term O(n log n). One sample gives the absolute
    error. Returns a tensor of ``truth``'s shape.
    """
    pred = _tensor("crps_empirical", pred, "pred")
    truth = _tensor("crps_empirical", truth, "truth")
    extra = pred.dim() - truth.dim() - 1
    if extra < 0 or pred.shape[1:] != (1,) * extra + truth.shape:
        raise ValueError(
            "crps_empirical: pred must have shape (num_samples,) + truth.shape, got pred shape "
            f"{tuple(pred.shape)} and truth shape {tuple(truth.shape)}"
        )
    n = pred.size(0)
    ordered = pred.sort(0).values
    gaps = ordered[1:] - ordered[:-1]
    # The gap above the i-th smallest sample separates i samples from the other n - i.
    i = torch.arange(1, n, dtype=gaps.dtype, device=gaps.device)
    weight = (i * (n - i)).reshape((-1,) + (1,) * (gaps.dim() - 1))
    return (pred - truth).abs().mean(0) - (gaps * weight).sum(0) / n**2


def energy_score_empirical(
    pred: torch.Tensor,
    truth: torch.Tensor,
    pred_batch_size: int | None = None,
    cdist: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.cdist,
) -> torch.Tensor:
    """Negative energy score ``E||pred - truth|| - E||pred - pred'|| / 2`` (multivariate CRPS).

    ``pred`` has shape ``(..., num_samples, D)``; ``truth`` is ``(..., D)`` or
    ``(..., M, D)`` (``M`` truths scored against the same samples). Returns ``truth``'s shape
    without its last dim. ``pred_batch_size`` splits the samples into chunks to bound the
    memory of the pairwise distances; ``cdist`` computes the distance matrices.
    """
    pred = _tensor("energy_score_empirical", pred, "pred")
    truth = _tensor("energy_score_empirical", truth, "truth")
    if pred.dim() < 2 or pred.dim() - truth.dim() not in (0, 1):
        raise ValueError(
            "energy_score_empirical: pred must have shape (..., num_samples, D) and truth "
            "(..., D) or (..., M, D), got pred shape "
            f"{tuple(pred.shape)} and truth shape {tuple(truth.shape)}"
        )
    single = pred.dim() == truth.dim() + 1
    if single:
        truth = truth.unsqueeze(-2)
    n = pred.size(-2)
    if pred_batch_size is None:
        chunks: Sequence[torch.Tensor] = [pred]
    elif (
        isinstance(pred_batch_size, bool)
        or not isinstance(pred_batch_size, int)
        or pred_batch_size < 1
    ):
        raise ValueError(
            f"energy_score_empirical: pred_batch_size must be a positive int or None, "
            f"got {pred_batch_size!r}"
        )
    else:
        chunks = pred.split(pred_batch_size, dim=-2)
    to_truth = sum(cdist(c, truth).sum(-2) for c in chunks) / n
    spread = sum(cdist(a, b).sum((-2, -1)) for a in chunks for b in chunks) / n**2
    score = to_truth - 0.5 * spread[..., None]
    return score.squeeze(-1) if single else score
