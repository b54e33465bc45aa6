"""The pyro-prune command on the embedded digits, in a few epochs."""

import json

import pytest

from pyro_prune import cli
from pyro_prune.cli import main


@pytest.mark.parametrize("guide", ["normal", "sparse-vd"])
def test_cli_runs_and_writes_json(tmp_path, capsys, guide):
    out = tmp_path / "r.json"
    args = ["--pretrain-epochs", "2", "--epochs", "2", "--num-samples", "5", "--hidden", "32", "--no-progress"]
    assert main(args + ["--guide", guide, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["architecture"] == "64-32-10"
    assert 0 <= result["accuracy"] <= 1 and result["nll"] > 0 and "ece" in printed
    if guide == "sparse-vd":
        assert "CompressionReport" in printed and result["compression"] >= 1


def test_cli_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--epochs", "0"])
    with pytest.raises(SystemExit):
        main(["--hidden", "a,b"])
    with pytest.raises(SystemExit):
        main(["--dataset", "cifar"])


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--hidden", "0"),
        ("--hidden", "-5"),
        ("--hidden", "32,0"),
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--lr", "0"),
        ("--lr", "inf"),
        ("--prior-scale", "0"),
        ("--prior-scale", "nan"),
        ("--seed", "-1"),
        ("--seed", str(2**32)),
        ("--seed", "1.5"),
        ("--threshold", "nan"),
        ("--threshold", "x"),
        ("--epochs", "0"),
        ("--pretrain-epochs", "-1"),
        ("--num-samples", "0"),
    ],
)
def test_cli_rejects_bad_values_up_front(flag, value, capsys, monkeypatch):
    monkeypatch.setattr("pyro_prune.cli._pretrain", _no_training)  # nothing may run before the check
    with pytest.raises(SystemExit) as exc:
        main([flag, value, "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err, err


def _no_training(*args, **kwargs):
    raise AssertionError("training started before the arguments were checked")


@pytest.mark.parametrize("where", ["missing_dir", "a_directory", "under_a_file"])
def test_cli_checks_the_json_path_before_training(where, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("pyro_prune.cli._pretrain", _no_training)
    (tmp_path / "file").write_text("x")
    path = {
        "missing_dir": tmp_path / "nope" / "r.json",
        "a_directory": tmp_path,
        "under_a_file": tmp_path / "file" / "r.json",
    }
    with pytest.raises(SystemExit) as exc:
        main(["--json", str(path[where]), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --json" in err and "cannot write" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing left behind


def test_cli_json_check_leaves_no_file_and_keeps_an_existing_one(tmp_path, monkeypatch):
    fresh, old = tmp_path / "new.json", tmp_path / "old.json"
    old.write_text("keep")
    for path in (fresh, old):
        args, hidden = cli._parse(["--json", str(path), "--hidden", "8,4", "--threshold", "inf"])
        assert hidden == [8, 4] and args.threshold == float("inf")
    assert not fresh.exists() and old.read_text() == "keep"
