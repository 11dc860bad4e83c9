"""The tutorial notebook runs top to bottom (so it never goes stale) and is committed without outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "units-vs-timesteps.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert 8 <= len(nb["cells"]) <= 24 and code
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code)


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec that runs this interpreter (the venv's), whatever other kernels the machine has."""
    name = "rnnlab-tests"
    spec = tmp_path / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "rnnlab (tests)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return name


def test_notebook_runs(venv_kernel):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=venv_kernel, timeout=180, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "scan == hand loop: True" in text
    assert "T=2000 with the same layer: (2000, 10)" in text
    assert "parameters for T=20: 610 | for T=2000: 610" in text
    assert "units changed per step: [30]" in text and "units changed per step: [10]" in text
    assert "matrix: (24, 8) = (p units, T words)" in text
