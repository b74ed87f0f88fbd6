"""The notebooks run top to bottom on the tiny preset (nbclient), and are stored clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("quickstart", "figures_from_a_run", "bring_your_own_method")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_and_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("WSL_BENCH_TINY" in c.source for c in code)  # the tests' tiny switch


def _execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.slow
def test_notebooks_run_on_the_tiny_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("WSL_BENCH_TINY", "1")
    monkeypatch.setenv("WSL_BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")

    quick = _execute("quickstart", tmp_path)
    run = tmp_path / "runs" / "quickstart"
    assert (run / "report" / "index.html").is_file()
    assert "preset tiny" in _text(quick) and "prior-lung" in _text(quick)

    figs = _execute("figures_from_a_run", tmp_path)  # reuses the quickstart run
    assert "\\toprule" in _text(figs)
    assert (tmp_path / "runs" / "quickstart-vs-random" / "tables" / "significance.csv").is_file()

    byom = _execute("bring_your_own_method", tmp_path)
    text = _text(byom)
    assert "torch.Size([2, 14]) torch.Size([2, 2, 16, 16])" in text
    scores = tmp_path / "runs" / "lse-cam" / "scores"
    assert (scores / "lse-cam" / "summary.json").is_file() and (scores / "random" / "summary.json").is_file()
