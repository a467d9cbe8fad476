"""The course notebooks: each runs top to bottom with the tiny model within its time budget, and they are committed
clean (no outputs) and in step with ``notebooks/build_notebooks.py``, which writes them.

Notebook 04 runs a short training when ``WORKBENCH_TEST_RUN=1`` (set here); its default run is the full one.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("01_rewards_and_matching.ipynb", "02_rollouts_and_advantages.ipynb", "03_one_grpo_step.ipynb",
         "04_train.ipynb")
BUDGET_S = 180  # per notebook, on 2 CPU cores


def _build_script():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_listed():
    on_disk = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert on_disk == sorted(NAMES), f"expected exactly {sorted(NAMES)} in notebooks/, found {on_disk}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{name}: code cells {dirty} carry outputs or execution counts; clear them "
                       f"(python notebooks/build_notebooks.py rewrites every notebook clean)")
    assert "widgets" not in nb.metadata, f"{name}: widget state in the notebook metadata"


@pytest.mark.parametrize("name", NAMES)
def test_in_step_with_the_build_script(name):
    def cells(nb):
        return [(c.cell_type, c.get("id"), c.source) for c in nb.cells]

    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    built = _build_script().build(name)
    assert cells(committed) == cells(built), (
        f"{name} differs from notebooks/build_notebooks.py; edit the script and run it, not the notebook")


@pytest.mark.parametrize("name", NAMES)
def test_starts_with_the_model_choice_and_what_it_teaches(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    first_md = nb.cells[0]
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_md.cell_type == "markdown" and "What this notebook teaches" in first_md.source
    assert "MODEL = None" in first_code.source
    assert nb.cells[-1].cell_type == "markdown" and "What to try next" in nb.cells[-1].source
    assert any(c.cell_type == "code" and "assert " in c.source for c in nb.cells), f"{name}: no assertion cell"


@pytest.mark.slow
@pytest.mark.timeout(4 * BUDGET_S)
@pytest.mark.parametrize("name", NAMES)
def test_executes_top_to_bottom(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from workbench import models

    if not (models.TINY_MODEL / "config.json").is_file():
        pytest.fail(f"the shipped tiny model is missing from {models.TINY_MODEL}; build it with `make tiny-model`")
    # The kernel inherits this environment: a short training run, runs written under tmp_path, no GUI backend.
    monkeypatch.setenv("WORKBENCH_TEST_RUN", "1")
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=BUDGET_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name} failed:\n{str(error)[-4000:]}")
    elapsed = time.perf_counter() - start
    print(f"{name}: {elapsed:.1f} s")
    assert elapsed <= BUDGET_S, f"{name} took {elapsed:.0f} s; the budget is {BUDGET_S} s on 2 CPU cores"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
