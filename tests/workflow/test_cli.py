"""The ``vitorch`` command: ``fit`` end to end (in-process and as a script) and its errors."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vitorch.checkpoint import load_checkpoint
from vitorch.cli import main

# Normal observations with a known scale and a Normal prior: the posterior of loc is
# Normal(sum(x) / (n + 1/100), 1 / sqrt(n + 1/100)) exactly.
MODEL = """
import torch
import vitorch
import vitorch.distributions as dist

def model(x):
    loc = vitorch.sample("loc", dist.Normal(0.0, 10.0))
    with vitorch.plate("data", len(x)):
        vitorch.sample("obs", dist.Normal(loc, 1.0), obs=x)

def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(50, generator=g) + 2.0
"""


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def exact_posterior():
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, generator=g) + 2.0
    precision = 50 + 0.01
    return float(x.sum()) / precision, 1 / math.sqrt(precision)


def read_csv(path):
    with open(path) as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_fit_end_to_end_in_process(tmp_path, capsys):
    path = write(tmp_path, "m.py", MODEL)
    out = tmp_path / "out"
    code = main(
        ["fit", path, "--steps", "1500", "--lr", "0.05", "--out", str(out), "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("loss.png", "posterior.png", "summary.csv", "summary.txt", "checkpoint.pt"):
        assert (out / name).is_file(), name
    rows = read_csv(out / "summary.csv")
    assert list(rows) == ["loc"]
    mean, sd = exact_posterior()
    fitted_mean, fitted_sd = float(rows["loc"]["mean"]), float(rows["loc"]["sd"])
    # The fit is Monte Carlo: allow half a posterior sd for the mean and 30% for the sd.
    assert abs(fitted_mean - mean) < 0.5 * sd
    assert abs(fitted_sd - sd) < 0.3 * sd
    # The printed table shows the same numbers as the CSV.
    assert "loc" in captured.out and f"{fitted_mean:.4g}" in captured.out
    assert (out / "summary.txt").read_text().splitlines()[1].split()[1] == f"{fitted_mean:.4g}"
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 1500


def test_fit_resume_continues_exactly(tmp_path, capsys):
    path = write(tmp_path, "m.py", MODEL)
    common = ["--lr", "0.05", "--no-progress", "--num-samples", "10", "--seed", "3"]
    assert main(["fit", path, "--steps", "300", "--out", str(tmp_path / "full"), *common]) == 0
    part = str(tmp_path / "part")
    assert main(["fit", path, "--steps", "120", "--out", part, *common]) == 0
    assert main(["fit", path, "--steps", "300", "--out", part, "--resume", *common]) == 0
    capsys.readouterr()
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert resumed["step"] == 300 and resumed["losses"] == full["losses"]


def test_fit_with_kwargs_data_a_file_guide_and_another_autoguide(tmp_path, capsys):
    text = MODEL.replace(
        "return torch.randn(50, generator=g) + 2.0",
        "return {'x': torch.randn(50, generator=g) + 2.0}",
    )
    text += textwrap.dedent(
        """
        def guide(x):
            m = vitorch.param("m", torch.tensor(0.0))
            vitorch.sample("loc", dist.Normal(m, 0.14))
        """
    )
    path = write(tmp_path, "m.py", text)
    assert main(["fit", path, "--steps", "20", "--no-progress", "--num-samples", "5"]) == 0
    assert "m" in __import__("vitorch").get_param_store()  # the file's own guide was used
    assert main(["fit", path, "--steps", "20", "--no-progress", "--guide", "AutoDelta"]) == 0
    out = capsys.readouterr().out
    assert out.count("posterior (") == 2


def test_console_script_runs_fit(tmp_path):
    script = Path(sys.executable).parent / "vitorch"
    if not script.exists():
        pytest.skip("the vitorch console script is not installed in this environment")
    path = write(tmp_path, "m.py", MODEL)
    proc = subprocess.run(
        [str(script), "fit", path, "--steps", "50", "--no-progress", "--num-samples", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "posterior (20 samples" in proc.stdout and "loc" in proc.stdout
    bad = subprocess.run(
        [str(script), "fit", str(tmp_path / "missing.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "no such file" in bad.stderr and "Traceback" not in bad.stderr


# -- errors ------------------------------------------------------------------------------
SHAPE_BUG = """
import torch
import vitorch
import vitorch.distributions as dist

def model(x, y):
    w = vitorch.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with vitorch.plate("data", len(y)):
        vitorch.sample("obs", dist.Normal(x @ w, 1.0), obs=y)

data = (torch.zeros(10, 4), torch.zeros(10))
"""

OBS_SHAPE_BUG = """
import torch
import vitorch
import vitorch.distributions as dist

def model(y):
    loc = vitorch.sample("loc", dist.Normal(0.0, 1.0))
    vitorch.sample("obs", dist.Normal(loc.expand(3), 1.0).to_event(1), obs=y)

data = torch.zeros(5)
"""


@pytest.mark.parametrize(
    "name, text, extra, words",
    [
        ("missing.py", None, [], ["no such file", "missing.py"]),
        ("m.py", "import torch\nx = 1\n", [], ["defines no `model`"]),
        ("m.py", "model = 3\n", [], ["`model`", "must be callable"]),
        ("m.py", "def model(:\n", [], ["syntax error", "line 1"]),
        (
            "m.py",
            "import torch\nraise RuntimeError('boom')\n",
            [],
            ["failed while loading", "line 2", "boom"],
        ),
        (
            "m.py",
            "def model(x): pass\ndef data():\n    return 1 / 0\n",
            [],
            ["data()", "ZeroDivisionError", "line 3"],
        ),
        (
            "m.py",
            SHAPE_BUG,
            [],
            [
                "failed on its data",
                "the last site it reached was 'w'",
                "line 9",
                "Tensor(10, 4)",
                "Trace Shapes",
                "w dist",
            ],
        ),
        (
            "m.py",
            OBS_SHAPE_BUG,
            [],
            [
                "failed on its data",
                "reached was 'obs'",
                "line 8",
                "Trace Shapes",
                "obs dist",
                "value  | 5",
            ],
        ),
        (
            "m.py",
            MODEL,
            ["--guide", "AutoNope"],
            ["AutoNope", "AutoNormal", "AutoMultivariateNormal"],
        ),
        ("m.py", MODEL, ["--resume"], ["--resume needs --out"]),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(
    tmp_path, capsys, name, text, extra, words
):
    path = str(tmp_path / name) if text is None else write(tmp_path, name, text)
    code = main(["fit", path, "--steps", "5", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vitorch fit: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["fit", "m.py", "--steps", "0"], "positive integer"),
        (["fit", "m.py", "--lr", "-1"], "positive number"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_command_lines_exit_2(capsys, argv, words):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_the_model_file_does_not_run_as_main(tmp_path, capsys):
    text = MODEL + "\nif __name__ == '__main__':\n    raise SystemExit('ran as main')\n"
    path = write(tmp_path, "m.py", text)
    assert main(["fit", path, "--steps", "5", "--no-progress", "--num-samples", "5"]) == 0
    capsys.readouterr()
    assert os.path.exists(path)


# -- demo --------------------------------------------------------------------------------
def test_quick_demo_writes_its_figures(tmp_path, capsys, monkeypatch):
    import vitorch.demo

    # As in a non-editable install, where examples/ is not next to the package.
    monkeypatch.setattr(vitorch.demo, "_find_vae", lambda: None)
    assert main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for section in ("== 1. loc/scale", "== 2. Bayesian linear regression", "== 3. variational"):
        assert section in out
    assert "examples/vae.py was not found" in out and "skipping" in out
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [
        "diabetes-regression-loss.png",
        "diabetes-regression-posterior.png",
        "loc_scale-AutoMultivariateNormal-loss.png",
        "loc_scale-AutoMultivariateNormal-posterior.png",
        "loc_scale-AutoNormal-loss.png",
        "loc_scale-AutoNormal-posterior.png",
    ]
