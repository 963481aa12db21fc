"""vitorch.infer.mcmc.util.summary: Pyro's sample summary, from vitorch.ops.stats."""

from __future__ import annotations

import pytest
import torch

from vitorch.infer.mcmc.util import print_summary, summary
from vitorch.ops import stats


def _samples():
    gen = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(2, 500, generator=gen, dtype=torch.float64),
        "b": torch.randn(2, 500, 3, generator=gen, dtype=torch.float64) * 2 + 1,
    }


def test_columns_and_values_follow_their_definitions():
    samples = _samples()
    table = summary(samples, prob=0.8)
    assert list(table["a"]) == ["mean", "std", "median", "10.0%", "90.0%", "n_eff", "r_hat"]
    b = samples["b"]
    flat = b.reshape(-1, 3)
    row = table["b"]
    assert torch.equal(row["mean"], flat.mean(0)) and torch.equal(row["std"], flat.std(0))
    assert torch.equal(row["median"], flat.median(0)[0])
    lo, hi = stats.hpdi(flat, prob=0.8)
    assert torch.equal(row["10.0%"], lo) and torch.equal(row["90.0%"], hi)
    assert torch.equal(row["n_eff"], stats.effective_sample_size(b))
    assert torch.equal(row["r_hat"], stats.split_gelman_rubin(b))
    one_chain = summary({"a": samples["a"][0]}, group_by_chain=False)
    assert torch.equal(one_chain["a"]["mean"], samples["a"][0].mean())


def test_print_summary_rows(capsys):
    print_summary(_samples())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0].split() == ["mean", "std", "median", "5.0%", "95.0%", "n_eff", "r_hat"]
    assert [line.split()[0] for line in lines[1:]] == ["a", "b[0]", "b[1]", "b[2]"]


def test_matches_pyro_and_errors():
    pyro_util = pytest.importorskip("pyro.infer.mcmc.util")
    samples = _samples()
    ours, theirs = summary(samples), pyro_util.summary(samples)
    for name in samples:
        assert list(ours[name]) == list(theirs[name])
        for key in ours[name]:
            assert torch.allclose(ours[name][key], theirs[name][key], rtol=1e-6, equal_nan=True)


def test_bad_input_and_mcmc_names():
    with pytest.raises(ValueError, match="prob must lie in"):
        summary(_samples(), prob=1.5)
    with pytest.raises(ValueError, match=r"samples\['x'\] must have shape \(chains, draws"):
        summary({"x": torch.zeros(5)})
    with pytest.raises(ImportError, match="vitorch has no MCMC"):
        from vitorch.infer.mcmc import NUTS  # noqa: F401
