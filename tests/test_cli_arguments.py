"""Bad arguments of pyro-prune fail before any training, with a message naming the flag (exit code 2)."""

import numpy as np
import pytest
import torch

from pyro_prune.cli import main
from pyro_prune.cli.guides import candidate_rules
from pyro_prune.pruning.rules import GroupLogAlpha


def _no_training(*args, **kwargs):
    raise AssertionError("training started before the arguments were checked")


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setattr("pyro_prune.cli.pipeline.pretrain", _no_training)
    monkeypatch.setattr("pyro_prune.cli.pipeline.build_posterior", _no_training)
    x = np.random.default_rng(0).normal(size=(40, 3))
    rows = ["a,b,c,y"] + [f"{r[0]},{r[1]},{r[2]},{i % 2}" for i, r in enumerate(x.tolist())]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "other.csv").write_text("a,z,c,y\n1,2,3,0\n1,2,3,1\n")
    torch.save({"nope": torch.zeros(2)}, tmp_path / "bad_weights.pt")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    return tmp_path


CASES = [
    ("--hidden", ["--hidden", "0"]),
    ("--hidden", ["--hidden", "-5"]),
    ("--hidden", ["--hidden", "32,a"]),
    ("--lr", ["--lr", "nan"]),
    ("--lr", ["--lr", "0"]),
    ("--lr", ["--lr", "-1"]),
    ("--epochs", ["--epochs", "0"]),
    ("--pretrain-epochs", ["--pretrain-epochs", "-1"]),
    ("--batch-size", ["--batch-size", "0"]),
    ("--num-samples", ["--num-samples", "0"]),
    ("--seed", ["--seed", "-1"]),
    ("--val-fraction", ["--val-fraction", "0"]),
    ("--val-fraction", ["--val-fraction", "1.5"]),
    ("--test-fraction", ["--test-fraction", "nan"]),
    ("--prior-scale", ["--prior-scale", "nan"]),
    ("--prior-precision", ["--prior-precision", "-1"]),
    ("--threshold", ["--threshold", "nan"]),
    ("--threshold", ["--guide", "normal", "--threshold", "1.5"]),
    ("--tolerance", ["--tolerance", "inf"]),
    ("--guide", ["--guide", "bogus"]),
    ("--data", ["--data", "{tmp}/missing.csv"]),
    ("--data", ["--data", "{tmp}/d.txt"]),
    ("--target", ["--target", "nope"]),
    ("--target", []),  # a CSV without --target
    ("--test", ["--test", "{tmp}/missing.csv"]),
    ("--test", ["--test", "{tmp}/other.csv"]),
    ("--weights", ["--weights", "{tmp}/missing.pt"]),
    ("--weights", ["--weights", "{tmp}/bad_weights.pt"]),
    ("--model", ["--model", "no_such_module_xyz:make"]),
    ("--model", ["--model", "torch.nn:NoSuchFactory"]),
    ("--out", ["--out", "{tmp}/full"]),
]


@pytest.mark.parametrize("flag, extra", CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CASES)])
def test_bad_argument_fails_before_training(files, flag, extra, capsys):
    (files / "d.txt").write_text("a,b\n")
    target = [] if extra == [] else ["--target", "y"]
    argv = ["compress", "--data", str(files / "d.csv"), *target, "--out", str(files / "run"), "--no-progress"]
    argv += [e.format(tmp=files) for e in extra]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err, err
    assert not (files / "run").exists()  # nothing written either


def test_apply_commands_check_their_inputs(files, capsys):
    for argv, flag in (
        (["predict", str(files / "nowhere"), "--data", str(files / "d.csv")], "argument source"),
        (["evaluate", str(files / "full"), "--data", str(files / "d.csv")], "argument source"),
        (["prune", str(files / "nowhere")], "argument source"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and flag in capsys.readouterr().err


def test_group_candidates_include_each_priors_default_criterion():
    for name in ("group-log-uniform", "group-horseshoe"):
        cands = candidate_rules(name)
        assert any(isinstance(r, GroupLogAlpha) and r.threshold is None for r in cands), name
        assert sum(isinstance(r, GroupLogAlpha) and r.threshold is not None for r in cands) == 8
