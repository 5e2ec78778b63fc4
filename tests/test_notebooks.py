"""The course notebooks: each runs top to bottom in small mode in a real Jupyter kernel, and is stored stripped.

Every `notebooks/*.ipynb` is picked up by the glob, so a new notebook is tested as soon as it is added.
Small mode (GENZOO_NOTEBOOK_SMALL=1) is each notebook's own switch to tiny step counts; the runs it makes go
to a temporary folder (GENZOO_NOTEBOOK_RUNS), never into the tree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import require
from genzoo.datasets import importers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 300  # per notebook in small mode (they take well under a minute on 2 idle cores)
STRIP = "python tools/strip_notebooks.py"


def _ids(paths):
    return [p.stem for p in paths]


@pytest.fixture
def this_python_kernel(tmp_path_factory, monkeypatch):
    """A `python3` kernelspec that starts this interpreter (the venv's), first on JUPYTER_PATH.

    The venv's own spec (installed by ipykernel) says `python`, which jupyter_client replaces by
    sys.executable; pinning it here also wins over any user-level python3 spec found on a machine.
    """
    spec = tmp_path_factory.getbasetemp() / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (genzoo tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(spec.parents[1]))


def _client(nb, cwd: Path, timeout: int) -> NotebookClient:
    return NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                          resources={"metadata": {"path": str(cwd)}})


def test_the_notebook_kernel_is_this_python(tmp_path, this_python_kernel):
    """The `python3` kernel runs the interpreter running the tests (the venv's, with genzoo), not another one."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys, genzoo; print(sys.executable)")])
    _client(nb, tmp_path, 60).execute()
    printed = nb.cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_in_small_mode(path, tmp_path, tmp_path_factory, monkeypatch, this_python_kernel):
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    monkeypatch.setenv("GENZOO_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("GENZOO_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    # shared by the notebooks of one session: MNIST is imported and its reference features computed once
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path_factory.getbasetemp() / "notebook-cache"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    try:
        _client(nb, path.parent, TIMEOUT_S).execute()
    except CellExecutionError as e:  # the message holds the failing cell's source and traceback
        pytest.fail(f"{path.name} failed in small mode:\n{e}", pytrace=False)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every code cell ran"
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in code for o in c.outputs), f"{path.name} shows no picture"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_stripped(path):
    """No outputs, no execution counts, no widget state in git: diffs stay readable and nothing stale is shown."""
    raw = json.loads(path.read_text())
    nb = nbformat.reads(json.dumps(raw), as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert dirty == [], f"{path.name}: code cells {dirty} hold outputs or execution counts; run `{STRIP}`"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state; run `{STRIP}`"
    assert not [i for i, c in enumerate(nb.cells) if "execution" in c.metadata], \
        f"{path.name} stores execution timings; run `{STRIP}`"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


def test_the_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= {"00_overview.ipynb", "01_vae.ipynb", "02_gan.ipynb", "03_autoregressive.ipynb",
                                           "04_diffusion.ipynb", "05_latent_diffusion_and_dit.ipynb",
                                           "06_compare.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebooks_share_their_helpers_instead_of_copying_them(path):
    """Showing a grid, training once or reusing a run, reading metrics.jsonl live in genzoo.notebook, written once."""
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert "from genzoo import notebook as nb" in code[0], f"{path.name}: its first code cell imports genzoo.notebook"
    copies = [f"def {name}(" for name in ("show", "train_once", "read_metrics", "labels_for", "n_params",
                                          "markdown_table") if any(f"def {name}(" in src for src in code)]
    assert copies == [], f"{path.name} defines its own {copies}: use genzoo.notebook's"
    assert not any('"metrics.jsonl"' in src for src in code), f"{path.name} opens metrics.jsonl itself"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_the_title_cell_states_run_times_not_placeholders(path):
    """The first cell tells a student how long the notebook takes; a template placeholder must not ship."""
    title = "".join(nbformat.read(path, as_version=4).cells[0].source)
    assert "Run time" in title and "RUNTIME_" not in title, f"fill in the run times in {path.name}'s first cell"
