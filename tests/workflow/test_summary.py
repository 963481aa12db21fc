"""Posterior summaries (vitorch.infer.summary) and the PNG figures (vitorch.plotting)."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch.distributions import constraints

import vitorch
import vitorch.distributions as dist
from vitorch.infer import SVI, Trace_ELBO, summary
from vitorch.infer.autoguide import AutoMultivariateNormal
from vitorch.plotting import moving_average, plot_losses, plot_marginals

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# 101 evenly spaced samples: the 5%, 50% and 95% quantiles fall exactly on samples.
GRID = torch.arange(101, dtype=torch.float64) / 100
# sd with the n - 1 divisor: sum_{k=-50}^{50} (k/100)^2 / 100 = 2 * 42925 / 1e4 / 100.
GRID_SD = math.sqrt(2 * 42925 / 1e4 / 100)


def test_statistics_of_a_dict_of_samples_are_exact():
    block = GRID[:, None, None] * torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 10.0]]) + 7.0
    s = summary({"a": GRID, "b": block})
    assert list(s) == ["a", "b"] and s.columns == ("mean", "sd", "5%", "50%", "95%")
    assert float(s["a"]["mean"]) == pytest.approx(0.5, abs=1e-15)
    assert float(s["a"]["sd"]) == pytest.approx(GRID_SD, rel=1e-14)
    for col, q in (("5%", 0.05), ("50%", 0.5), ("95%", 0.95)):
        assert float(s["a"][col]) == pytest.approx(q, abs=1e-15)
    scale = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 10.0]], dtype=torch.float64)
    assert s["b"]["mean"].shape == (2, 3)
    torch.testing.assert_close(s["b"]["mean"], 0.5 * scale + 7.0, rtol=0, atol=1e-13)
    torch.testing.assert_close(s["b"]["sd"], GRID_SD * scale.abs(), rtol=1e-13, atol=1e-13)
    # For a negative multiplier the 5% quantile is the image of the 95% one.
    torch.testing.assert_close(
        s["b"]["5%"], torch.where(scale < 0, 0.95 * scale, 0.05 * scale) + 7.0, rtol=0, atol=1e-13
    )


def test_table_csv_and_dict_agree(tmp_path):
    s = summary({"a": GRID, "w": GRID[:, None] * torch.arange(1.0, 4.0, dtype=torch.float64)})
    text = str(s)
    lines = text.splitlines()
    assert lines[0].split() == ["mean", "sd", "5%", "50%", "95%"]
    assert [ln.split()[0] for ln in lines[1:]] == ["a", "w[0]", "w[1]", "w[2]"]
    assert lines[3].split()[1:] == ["1", f"{2 * GRID_SD:.4g}", "0.1", "1", "1.9"]

    path = tmp_path / "s.csv"
    s.to_csv(path)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "w[0]", "w[1]", "w[2]"]
    assert [r["index"] for r in rows] == ["", "0", "1", "2"]
    for r in rows:
        site, index = r["site"], tuple(int(i) for i in r["index"].split())
        for col in s.columns:
            assert float(r[col]) == float(s[site][col][index])  # repr round-trips exactly

    d = s.to_dict()
    assert set(d) == {"a", "w"} and set(d["w"]) == set(s.columns)
    d["a"]["mean"].fill_(99.0)  # a copy
    assert float(s["a"]["mean"]) != 99.0


def test_long_sites_are_cut_in_the_table_but_not_in_the_csv(tmp_path):
    s = summary({"z": torch.randn(50, 30)})
    text = s.table(max_rows_per_site=4)
    assert "z[3]" in text and "z[4]" not in text and "(26 more elements of 'z')" in text
    s.to_csv(tmp_path / "z.csv")
    with open(tmp_path / "z.csv") as f:
        assert len(f.read().splitlines()) == 31
    assert len(s.table(max_rows_per_site=None).splitlines()) == 31


def conjugate_model(data):
    loc = vitorch.sample("loc", dist.Normal(0.0, 10.0))
    scale = vitorch.sample("scale", dist.LogNormal(0.0, 1.0))
    with vitorch.plate("data", len(data)):
        vitorch.sample("obs", dist.Normal(loc, scale), obs=data)


def fixed_guide(data):
    # A guide with known marginals: loc ~ N(2, 0.5), scale ~ LogNormal(0, 0.25).
    m = vitorch.param("m", torch.tensor(2.0))
    s = vitorch.param("s", torch.tensor(0.5), constraint=constraints.positive)
    vitorch.sample("loc", dist.Normal(m, s))
    vitorch.sample("scale", dist.LogNormal(0.0, 0.25))
    vitorch.sample("_aux", dist.Normal(0.0, 1.0))


def test_summary_of_a_guide_matches_its_known_marginals():
    n = 4000
    s = summary(fixed_guide, torch.zeros(3), num_samples=n)
    assert list(s) == ["loc", "scale"]  # "_aux" is auxiliary: left out without a model
    z95 = 1.6448536269514722
    # Five Monte Carlo standard errors: sd / sqrt(n) for the mean, sqrt(q(1-q)/n) / pdf for
    # a quantile, sd / sqrt(2n) for the sd.
    se_mean = 0.5 / math.sqrt(n)
    se_q = math.sqrt(0.05 * 0.95 / n) / (math.exp(-(z95**2) / 2) / math.sqrt(2 * math.pi) / 0.5)
    loc = s["loc"]
    assert abs(float(loc["mean"]) - 2.0) < 5 * se_mean
    assert abs(float(loc["sd"]) - 0.5) < 5 * 0.5 / math.sqrt(2 * n)
    assert abs(float(loc["5%"]) - (2.0 - z95 * 0.5)) < 5 * se_q
    assert abs(float(loc["95%"]) - (2.0 + z95 * 0.5)) < 5 * se_q
    median_se = math.sqrt(0.25 / n) / (1 / math.sqrt(2 * math.pi) / 0.25)
    assert abs(float(s["scale"]["50%"]) - 1.0) < 5 * median_se  # LogNormal median = e^0
    assert s.samples["loc"].shape == (n,)


def test_with_a_model_the_model_sites_are_summarized():
    s = summary(fixed_guide, torch.zeros(3), num_samples=10, model=conjugate_model)
    assert list(s) == ["loc", "scale"]
    s = summary(fixed_guide, torch.zeros(3), num_samples=10, sites=["_aux"])
    assert list(s) == ["_aux"]
    with pytest.raises(ValueError, match="nope"):
        summary(fixed_guide, torch.zeros(3), num_samples=10, sites=["nope"])


def test_an_autoguide_summary_leaves_out_its_packed_latent():
    torch.manual_seed(0)
    data = torch.randn(30) + 3.0
    guide = AutoMultivariateNormal(conjugate_model)
    svi = SVI(conjugate_model, guide, vitorch.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(data)
    s = summary(guide, data, num_samples=20)
    assert list(s) == ["loc", "scale"]
    assert s.samples["scale"].min() > 0  # constrained values, not the unconstrained ones


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: summary(42), TypeError, "guide or a dict"),
        (lambda: summary({"a": torch.zeros(1)}), ValueError, "num_samples >= 2"),
        (lambda: summary({"a": GRID}, quantiles=(1.5,)), ValueError, "quantiles"),
        (lambda: summary({"a": GRID}, torch.zeros(3)), TypeError, "only used with a guide"),
        (lambda: summary(fixed_guide, num_samples=0), ValueError, "num_samples"),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


# -- plots -------------------------------------------------------------------------------
def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_plot_losses_writes_a_png_from_a_result_or_a_list(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    losses = [100.0 / (i + 1) + 1.0 for i in range(300)]
    losses[10] = math.nan  # a skipped step
    from vitorch.infer.run import SVIResult

    a = plot_losses(SVIResult(losses=losses), tmp_path / "a.png")
    b = plot_losses(torch.tensor(losses), tmp_path / "sub" / "b.png", window=10, log_scale=False)
    assert _png_size(a) == (700, 400) and _png_size(b) == (700, 400)
    assert matplotlib.get_backend() == backend  # the user's backend is left alone
    with pytest.raises(TypeError, match="SVIResult or a sequence"):
        plot_losses(3.0, tmp_path / "c.png")
    with pytest.raises(ValueError, match="window"):
        plot_losses(losses, tmp_path / "c.png", window=0)
    with pytest.raises(ValueError, match="non-empty"):
        plot_losses([], tmp_path / "c.png")


def test_plot_marginals_draws_one_panel_per_element_up_to_the_limit(tmp_path):
    samples = {"a": torch.randn(200), "w": torch.randn(200, 3)}
    w, h = _png_size(plot_marginals(samples, tmp_path / "m.png"))
    assert (w, h) == (1280, 300)  # 4 panels in one row
    w, h = _png_size(plot_marginals(summary(samples), tmp_path / "n.png", max_panels=2))
    assert (w, h) == (640, 300)
    with pytest.raises(TypeError, match="dict of samples"):
        plot_marginals({}, tmp_path / "x.png")


def test_moving_average_skips_nans_exactly():
    out = moving_average([1.0, math.nan, 3.0, 5.0], 2)
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 3.0 and out[3] == 4.0
