"""The README cannot drift: its Python blocks run, and .ci/run runs its test command verbatim."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_two_commands_and_ci_runs_the_test_command():
    cmds = blocks("bash")
    assert len(cmds) >= 2
    first_section = README.split("\n## ")[0]
    assert first_section.count("```bash") == 2, "the README must open with exactly two commands"
    test_cmd = cmds[1].strip()
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci, ".ci/run must run the README's test command verbatim"


@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_readme_python_block_runs(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks("python")[i]
    exec(compile(code, f"README.md[python block {i}]", "exec"), {"__name__": "__readme__"})
