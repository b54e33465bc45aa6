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


def _make_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tutorials_make", TUTORIALS / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_has_a_source_and_equals_it():
    make = _make_module()
    sources = {p.stem for p in (TUTORIALS / "src").glob("*.py")}
    assert sources == {p.stem for p in NOTEBOOKS}
    stale = [p.name for p in sorted((TUTORIALS / "src").glob("*.py")) if not make.in_sync(p)]
    assert not stale, f"notebooks differ from their sources (run python tutorials/make.py <NN>): {stale}"


def test_percent_format_parser_round_trip():
    make = _make_module()
    text = "# %% [markdown]\n# # Title\n#\n# text $x$\n\n# %%\nx = 1  # comment\n%matplotlib inline\n\n# %%\nprint(x)\n"
    assert make.parse(text) == [
        ("markdown", "# Title\n\ntext $x$"),
        ("code", "x = 1  # comment\n%matplotlib inline"),
        ("code", "print(x)"),
    ]
    with pytest.raises(ValueError, match="markdown cell line"):
        make.parse("# %% [markdown]\nnot a comment\n")
