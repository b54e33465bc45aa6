"""The layout rules of issue 11, checked on the package source so they cannot drift.

* no module over 600 lines;
* no function over 60 *code lines* -- counted as the lines of the ``def`` (signature included) that are neither blank,
  nor comments, nor part of the docstring;
* no import of the package's own modules inside a function (the tell-tale of an import circle being dodged);
* ``import pyro_prune`` does not import matplotlib (plots load lazily).
"""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pyro_prune"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 600
MAX_FUNCTION_CODE_LINES = 60


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def code_lines(source: str, fn: ast.AST) -> int:
    """Lines of ``fn`` that are not blank, not comments and not its docstring."""
    doc = set()
    first = fn.body[0] if fn.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        doc = set(range(first.lineno, first.end_lineno + 1))
    lines = source.splitlines()[fn.lineno - 1 : fn.end_lineno]
    return sum(
        1
        for i, line in enumerate(lines, start=fn.lineno)
        if line.strip() and not line.strip().startswith("#") and i not in doc
    )


def test_counter_counts_code_lines_only():
    src = 'def f(a,\n      b):\n    """Doc\n\n    more."""\n    # comment\n\n    x = 1\n    return x\n'
    (fn,) = _functions(ast.parse(src))
    assert code_lines(src, fn) == 4  # two signature lines, two statements


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {n} lines (limit {MAX_MODULE_LINES}): split it"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_function_size(path):
    src = path.read_text()
    long = [
        f"{fn.name} (line {fn.lineno}): {code_lines(src, fn)}"
        for fn in _functions(ast.parse(src))
        if code_lines(src, fn) > MAX_FUNCTION_CODE_LINES
    ]
    assert not long, f"{path.relative_to(PACKAGE)}: functions over {MAX_FUNCTION_CODE_LINES} code lines: {long}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_package_import_inside_functions(path):
    inner = []
    for fn in _functions(ast.parse(path.read_text())):
        for node in ast.walk(fn):
            own = isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("pyro_prune"))
            own = own or (isinstance(node, ast.Import) and any(a.name.startswith("pyro_prune") for a in node.names))
            if own:
                inner.append(f"{fn.name} (line {node.lineno})")
    assert not inner, f"{path.relative_to(PACKAGE)} imports the package inside functions: {inner}"


def test_import_does_not_load_matplotlib_and_plots_load_on_demand():
    code = (
        "import sys, pyro_prune as pp\n"
        "assert not any(m == 'matplotlib' or m.startswith('matplotlib.') for m in sys.modules), 'matplotlib imported'\n"
        "pp.plots\n"
        "assert 'matplotlib.pyplot' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
