"""Build the tutorial notebooks from their sources and run them in full mode.

Each notebook ``tutorials/NN_name.ipynb`` has a plain-Python source ``tutorials/src/NN_name.py`` in the "percent"
format (the one Jupytext and VS Code read): a line ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell
whose lines are comments (``# `` stripped). Edit the source, then::

    python tutorials/make.py 03            # rebuild 03_*.ipynb from its source (outputs cleared)
    python tutorials/make.py 03 --execute  # rebuild and run it in full mode, saving the outputs and the run time
    python tutorials/make.py --check       # every notebook's cells equal its source (tests/test_tutorials.py)

Full mode is the default of every notebook; ``PYRO_PRUNE_SMOKE=1`` (set by the test suite) shrinks epochs and
ensembles so the notebook runs in seconds.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import List, Tuple

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE / "src"
KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
CELL_TIMEOUT = 3600


def parse(text: str) -> List[Tuple[str, str]]:
    """``[(cell_type, source)]`` of a percent-format script (the lines before the first marker are dropped)."""
    cells: List[Tuple[str, List[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                if line and not line.startswith("#"):
                    raise ValueError(f"markdown cell line does not start with '#': {line!r}")
                line = line[2:] if line.startswith("# ") else line[1:]
            lines.append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build(source: pathlib.Path) -> nbformat.NotebookNode:
    """The notebook (no outputs) of one source file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNEL)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    for i, (kind, text) in enumerate(parse(source.read_text())):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell["id"] = f"{source.stem[:2]}-{i:03d}"  # stable ids: rebuilding does not churn the diff
        nb.cells.append(cell)
    return nb


def notebook_path(source: pathlib.Path) -> pathlib.Path:
    return HERE / (source.stem + ".ipynb")


def in_sync(source: pathlib.Path) -> bool:
    """Whether the notebook on disk has exactly the source's cells (types and text; outputs ignored)."""
    path = notebook_path(source)
    if not path.exists():
        return False
    saved = nbformat.read(path, as_version=4)
    ours = build(source)
    pairs = [(c.cell_type, c.source) for c in saved.cells]
    return pairs == [(c.cell_type, c.source) for c in ours.cells]


def execute(nb: nbformat.NotebookNode) -> float:
    """Run ``nb`` in place in full mode (``PYRO_PRUNE_SMOKE`` unset), in ``tutorials/``; returns seconds."""
    import nbclient  # optional: only needed to execute

    env_smoke = os.environ.pop("PYRO_PRUNE_SMOKE", None)
    root = str(HERE.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    try:
        start = time.perf_counter()
        nbclient.NotebookClient(
            nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        ).execute()
        return time.perf_counter() - start
    finally:
        if env_smoke is not None:
            os.environ["PYRO_PRUNE_SMOKE"] = env_smoke


def sources(selected: List[str]) -> List[pathlib.Path]:
    found = sorted(SRC.glob("*.py"))
    if not selected:
        return found
    chosen = [s for s in found if any(s.stem.startswith(p) for p in selected)]
    if len(chosen) != len(selected):
        raise SystemExit(f"no single source for each of {selected}; sources: {[s.stem for s in found]}")
    return chosen


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="number prefixes (e.g. 03 05); default: all")
    ap.add_argument("--execute", action="store_true", help="run in full mode and save the outputs")
    ap.add_argument("--check", action="store_true", help="only check that notebooks equal their sources")
    args = ap.parse_args(argv)
    if args.check:
        stale = [s.name for s in sources(args.notebooks) if not in_sync(s)]
        print("out of sync: " + ", ".join(stale) if stale else "all notebooks equal their sources")
        return 1 if stale else 0
    for source in sources(args.notebooks):
        nb = build(source)
        if args.execute:
            seconds = execute(nb)
            print(f"{source.stem}: full mode ran in {seconds / 60:.1f} min")
        nbformat.write(nb, notebook_path(source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
