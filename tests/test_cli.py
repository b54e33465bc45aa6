"""The pyro-prune command on the embedded digits, in a few epochs."""

import json

import pytest

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
