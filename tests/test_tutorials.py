"""Every tutorial notebook runs top to bottom in smoke mode (tiny epochs and ensembles).

The notebooks are executed in memory with nbclient, in a fresh ``python3`` kernel whose working directory is
``tutorials/`` and whose environment has ``PYRO_PRUNE_SMOKE=1`` and this checkout on ``PYTHONPATH``; the files on
disk (saved with the outputs of a full run) are never rewritten.
"""

import os
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in IPython tracebacks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_runs_in_smoke_mode(path, monkeypatch):
    # The kernel is a subprocess that inherits os.environ at start-up.
    monkeypatch.setenv("PYRO_PRUNE_SMOKE", "1")
    python_path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), python_path] if python_path else [str(ROOT)]))
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
    )
    error = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        error = ANSI.sub("", str(e))
    if error is not None:
        pytest.fail(f"{path.name} failed in smoke mode:\n{error}", pytrace=False)
    assert path.read_bytes() == before, f"executing {path.name} modified the file on disk"
