"""The MoL docs stay true: the figure script runs, draws every figure, writes the numbers the
committed docs/mol.md quotes, and the code in docs/layouts.md runs."""

from __future__ import annotations

import re
import runpy
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "scripts" / "mol_figures.py"
EXPECTED = ["mol_logistic", "mol_bin_mass", "mol_edge_bins", "mol_gumbel", "mol_inverse_cdf",
            "mol_mixture", "mol_compat_error"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Run the script once into a temp dir, on a copy of docs/mol.md."""
    out = tmp_path_factory.mktemp("figures")
    doc = out / "mol.md"
    shutil.copy(ROOT / "docs" / "mol.md", doc)
    # stale numbers would survive a failed update: blank every marked block first
    doc.write_text(re.sub(r"(<!-- mol_figures:[\w-]+ -->\n).*?(\n<!-- /mol_figures -->)",
                          r"\1(stale)\2", doc.read_text(), flags=re.S))
    # in-process: torch and matplotlib are imported once for the whole session
    runpy.run_path(str(SCRIPT))["main"](["--out", str(out), "--doc", str(doc)])
    return out, doc


@pytest.mark.parametrize("name", EXPECTED)
def test_figure_is_a_real_image(generated, name):
    import matplotlib.image as mpimg

    path = generated[0] / f"{name}.png"
    assert path.is_file(), f"{name}.png was not written"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 150 and img.shape[1] > 300
    rgb = img[..., :3].reshape(-1, 3)
    assert (rgb != rgb[0]).any(axis=1).mean() > 0.02, f"{name}.png is (almost) one colour"
    assert path.stat().st_size < 200_000


def test_committed_figures_exist():
    for name in EXPECTED:
        assert (ROOT / "docs" / "figures" / f"{name}.png").is_file(), name


def test_doc_numbers_are_current(generated):
    """The tables in docs/mol.md are exactly what the script computes now."""
    fresh = generated[1].read_text()
    assert "(stale)" not in fresh
    assert fresh == (ROOT / "docs" / "mol.md").read_text(), (
        "docs/mol.md is out of date: run python docs/scripts/mol_figures.py"
    )


def test_doc_figures_are_linked():
    text = (ROOT / "docs" / "mol.md").read_text()
    for name in EXPECTED:
        assert f"figures/{name}.png" in text, name


def test_layouts_snippet_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "layouts.md").read_text(), re.S)
    assert blocks, "docs/layouts.md lost its code example"
    for i, code in enumerate(blocks):
        path = tmp_path / f"snippet{i}.py"
        path.write_text(code)
        runpy.run_path(str(path), run_name="__main__")


# ---- docs/compat.md: its figure script runs and its numbers are current ----------------------
COMPAT_SCRIPT = ROOT / "docs" / "scripts" / "compat_figures.py"
COMPAT_FIGURES = ["compat_edge_bins", "compat_fallback_error", "compat_float16"]


@pytest.fixture(scope="module")
def compat_generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("compat")
    doc = out / "compat.md"
    shutil.copy(ROOT / "docs" / "compat.md", doc)
    doc.write_text(re.sub(r"(<!-- compat_figures:[\w-]+ -->\n).*?(\n<!-- /compat_figures -->)",
                          r"\1(stale)\2", doc.read_text(), flags=re.S))
    runpy.run_path(str(COMPAT_SCRIPT))["main"](["--out", str(out), "--doc", str(doc)])
    return out, doc


def test_compat_figures_and_numbers_are_current(compat_generated):
    import matplotlib.image as mpimg

    out, doc = compat_generated
    for name in COMPAT_FIGURES:
        img = mpimg.imread(out / f"{name}.png")
        rgb = img[..., :3].reshape(-1, 3)
        assert img.shape[0] > 150 and (rgb != rgb[0]).any(axis=1).mean() > 0.02, name
        assert f"figures/{name}.png" in doc.read_text(), name
    fresh = doc.read_text()
    assert "(stale)" not in fresh
    # the same text, and the same numbers up to the float32 rounding errors the doc quotes
    # (their last bits differ between CPUs: e.g. 2.3e-06 on one, 1.8e-06 on another)
    number = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
    committed = (ROOT / "docs" / "compat.md").read_text()
    stale = "docs/compat.md is out of date: run python docs/scripts/compat_figures.py"
    assert re.sub(number, "#", fresh) == re.sub(number, "#", committed), stale
    for a, b in zip(re.findall(number, fresh), re.findall(number, committed), strict=True):
        a, b = float(a), float(b)
        assert a == b or (a * b > 0 and 0.5 <= a / b <= 2.0), (a, b, stale)
