"""Every tutorial notebook runs from top to bottom (each is meant to take under ~90 s on a quiet
2-core CPU), within a per-notebook time limit.

The limit is ``CAPTUM_EXT_TUTORIAL_TIMEOUT`` seconds per notebook (default 600: room for a shared
machine); each cell gets whatever time the notebook has left.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIAL_DIR = Path(__file__).resolve().parent.parent / "tutorials"
TUTORIALS = sorted(TUTORIAL_DIR.glob("*.ipynb"))
NOTEBOOK_TIMEOUT = float(os.environ.get("CAPTUM_EXT_TUTORIAL_TIMEOUT", "600"))


def run_notebook(path: Path, workdir: Path, limit: float) -> tuple[nbformat.NotebookNode, float]:
    """Execute ``path`` in ``workdir`` with at most ``limit`` seconds for the whole notebook."""
    notebook = nbformat.read(path, as_version=4)
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        notebook, timeout=int(limit), kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.monotonic()
    client.reset_execution_trackers()
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            remaining = limit - (time.monotonic() - start)
            if remaining <= 0:
                pytest.fail(f"{path.name} ran out of its {limit:.0f} s before cell {index}")
            client.timeout = max(1, int(remaining))
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
    return notebook, time.monotonic() - start


@pytest.mark.real_model
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    notebook, seconds = run_notebook(path, tmp_path, NOTEBOOK_TIMEOUT)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    print(f"{path.name}: {seconds:.1f} s")


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 1


def test_build_scripts_match_the_notebooks():
    """The committed notebooks have the cells their build script writes (outputs aside)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(TUTORIAL_DIR))
    try:
        for script in sorted(TUTORIAL_DIR.glob("build_0[2-6]_*.py")):
            spec = importlib.util.spec_from_file_location(script.stem, script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            notebook = nbformat.read(TUTORIAL_DIR / (script.stem.removeprefix("build_") + ".ipynb"),
                                     as_version=4)
            assert [c.source for c in notebook.cells] == [s for _, s in module.CELLS], script.name
    finally:
        sys.path.remove(str(TUTORIAL_DIR))
