"""Bayesian linear regression with known noise: the test model whose posterior is exact.

The posterior over (w1, w2, b) is Gaussian and known in closed form; the two inputs are
strongly correlated, so the posterior is too (mean-field scales differ from the marginal
ones). Shared by the autoguide tests.
"""

from __future__ import annotations

import torch

import vitorch
import vitorch.distributions as dist

N, SIGMA, TAU = 30, 0.5, 1.0


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(N, generator=g)
    x2 = x1 + 0.4 * torch.randn(N, generator=g)  # strongly correlated with x1
    X = torch.stack([x1, x2], -1)
    y = X @ torch.tensor([1.0, -0.5]) + 0.3 + SIGMA * torch.randn(N, generator=g)
    return X, y


def regression(X: torch.Tensor, y: torch.Tensor) -> None:
    w = vitorch.sample("w", dist.Normal(torch.zeros(2), TAU).to_event(1))
    b = vitorch.sample("b", dist.Normal(0.0, TAU))
    with vitorch.plate("data", N):
        # (X * w).sum(-1) rather than X @ w: w gains a batch dim with vectorized particles.
        vitorch.sample("y", dist.Normal((X * w).sum(-1) + b, SIGMA), obs=y)


def exact_posterior(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of (w1, w2, b), in the order the continuous guides pack them."""
    A = torch.cat([X, torch.ones(N, 1)], 1).double()
    precision = torch.eye(3, dtype=torch.double) / TAU**2 + A.T @ A / SIGMA**2
    cov = torch.linalg.inv(precision)
    return cov @ A.T @ y.double() / SIGMA**2, cov
