"""The usage examples of the five reference pages, read from the pages themselves.

Each page's code is taken from its text (``../shared/seeds/``, beside the repository),
``pyro`` is replaced by ``vitorch`` and nothing else, and the program runs. The tests that
check what each example gives live beside the features (test_seeds_*.py); this file pins
the contract itself: the pages' code, as published, runs on vitorch.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import vitorch

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

# A code line: indented, blank, a comment, or a statement; section headings are prose.
_CODE = re.compile(
    r"^(\s|$|#|@|import |from |def |class |for |with |if |print\(|return |"
    r"[A-Za-z_][\w.]*(\[[^\]]*\])?\s*(=|\(|\.|,|\+=))"
)


def page_code(prefix: str, start: str, end: str) -> str:
    """The code lines of a page between the ``start`` and ``end`` heading lines."""
    matches = sorted(SEEDS.glob(prefix + "_*.txt"))
    if not matches:
        pytest.skip(f"reference page {prefix} not found beside the repository ({SEEDS})")
    lines = matches[0].read_text().splitlines()
    begin = lines.index(start) + 1
    stop = lines.index(end, begin)
    code = [line for line in lines[begin:stop] if _CODE.match(line)]
    return "\n".join(code).replace("pyro", "vitorch") + "\n"


def run_page(code: str) -> dict:
    # Page 004's first example uses torch without importing it; every other page imports
    # what it uses, so torch is the only name provided.
    namespace: dict = {"torch": torch}
    exec(compile(code, "<reference page>", "exec"), namespace)
    return namespace


def test_page_000_avf(capsys):
    ns = run_page(page_code("000", "Usage Examples", "Related Pages"))
    # The cost is sum(z^2) with loc 0 and L = I: its AVF gradient leaves control_var alone.
    assert torch.equal(ns["control_var"].detach(), torch.full((2, 3, 5), 0.1))


def test_page_001_omt(capsys):
    ns = run_page(page_code("001", "Usage Examples", "Related Pages"))
    assert torch.equal(ns["loc"].grad, torch.ones(3))
    assert ns["scale_tril"].grad is not None
    assert ns["svi"].step() == pytest.approx(0.0, abs=1e-5)  # the guide starts at the model
    assert "torch.Size([3])" in capsys.readouterr().out


def test_page_002_auto_multivariate_normal(capsys):
    vitorch.set_rng_seed(
        0
    )  # the page's settings converge from this seed (see test_seeds_autoguide)
    ns = run_page(page_code("002", "Usage Examples", "Related Pages"))
    quantiles = ns["quantiles"]
    assert set(quantiles) == {"loc", "scale"}
    assert abs(float(quantiles["loc"][1]) - float(ns["data"].mean())) < 0.25
    out = capsys.readouterr().out
    assert "Covariance:" in out and "Correlation matrix:" in out and "loc: 5%=" in out


def test_page_003_amortized_inference():
    ns = run_page(page_code("003", "Example", "Relationship to Other Principles"))
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    loss = ns["svi"].step(x)
    assert loss == loss and loss > 0
    names = set(vitorch.get_param_store().keys())
    assert "encoder$$$fc1.weight" in names and "decoder$$$fc21.bias" in names


def test_page_004_auto_normal(capsys):
    vitorch.set_rng_seed(0)
    ns = run_page(page_code("004", "Usage Examples", "Related Pages"))
    assert set(ns["median"]) == {"loc", "scale"}
    assert abs(float(ns["median"]["loc"]) - float(ns["data"].mean())) < 0.25
    # The last example's guide shares its parameter names with the first one's, so (as in
    # Pyro) it picks up the trained values from the param store rather than its init.
    assert set(ns["guide"](ns["data"])) == {"loc", "scale"}
    assert "loc: loc=" in capsys.readouterr().out
