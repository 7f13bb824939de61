"""Shared helper of the ``build_*.py`` scripts: cells -> notebook, optionally executed in place.

A build script defines ``CELLS`` (a list of ``("md" | "code", source)``) and calls
:func:`main`. ``python tutorials/build_0N_name.py`` writes the notebook without outputs;
``--execute`` also runs it (nbclient, ``python3`` kernel, the repository root on ``PYTHONPATH``)
and stores the outputs and figures, as the committed tutorials are; ``--refresh-markdown``
rewrites only the markdown cells of the committed notebook and keeps its outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent

#: The first code cell of every tutorial starts these clocks; the last one prints them.
TIMER_START = """import time
_tutorial_wall, _tutorial_cpu = time.perf_counter(), time.process_time()

import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("png")  # show the matplotlib Figures that cells return, inline"""
TIMER_END = """print(f"this notebook: {time.perf_counter() - _tutorial_wall:.0f} s wall, "
      f"{time.process_time() - _tutorial_cpu:.0f} s CPU (all threads of the kernel)")"""


def build(cells: Sequence[tuple[str, str]], id_prefix: str) -> nbformat.NotebookNode:
    """A notebook of ``cells`` with stable cell ids (rebuilding gives the same file)."""
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    for number, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell["id"] = f"{id_prefix}-{number:02d}"
        notebook.cells.append(cell)
    return notebook


def execute(notebook: nbformat.NotebookNode, workdir: Path, timeout: int | None = None) -> float:
    """Run ``notebook`` in place (outputs stored); returns the wall seconds."""
    import nbclient

    os.environ.setdefault("MPLBACKEND", "Agg")
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    client = nbclient.NotebookClient(
        notebook, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main(cells: Sequence[tuple[str, str]], filename: str, id_prefix: str) -> None:
    parser = argparse.ArgumentParser(description=f"Build tutorials/{filename}.")
    parser.add_argument("--execute", action="store_true",
                        help="also run the notebook and store its outputs")
    parser.add_argument("--refresh-markdown", action="store_true",
                        help="update the markdown cells of the existing notebook, keeping its "
                             "outputs (the code cells must be unchanged)")
    args = parser.parse_args()
    path = Path(__file__).resolve().parent / filename
    notebook = build(cells, id_prefix)
    if args.refresh_markdown:
        old = nbformat.read(path, as_version=4)
        if [c.source for c in old.cells if c.cell_type == "code"] != [
                c.source for c in notebook.cells if c.cell_type == "code"]:
            sys.exit("the code cells changed: rebuild with --execute")
        for new_cell, old_cell in zip(notebook.cells, old.cells):
            if new_cell.cell_type == "code":
                new_cell.outputs = old_cell.outputs
                new_cell.execution_count = old_cell.execution_count
        notebook.metadata = old.metadata
    elif args.execute:
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            seconds = execute(notebook, Path(workdir))
        print(f"executed in {seconds:.1f} s", file=sys.stderr)
    nbformat.write(notebook, path)
    print(f"wrote {path}")
