"""``--device`` of pyro-prune: ``cpu`` runs every subcommand; an unknown string, ``cuda`` without CUDA, or a GPU
index past the last fail before any training with a message naming ``--device``; on a CUDA machine (``-m gpu``)
``compress`` runs on the GPU and the files it writes load on the CPU."""

import json

import numpy as np
import pytest
import torch

import pyro_prune as pp
from pyro_prune.cli import main
from tests.helpers import assert_close

FAST = ["--hidden", "8", "--pretrain-epochs", "2", "--epochs", "1", "--num-samples", "3", "--no-progress"]
SUBCOMMANDS = ("compress", "fit", "prune", "predict", "evaluate")


def _no_training(*args, **kwargs):
    raise AssertionError("training started before --device was checked")


@pytest.fixture
def csv_file(tmp_path):
    g = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = g.normal(size=(90, 4)) + 3.0 * np.eye(3, 4)[y]
    rows = ["a,b,c,d,label"] + [",".join(f"{v!r}" for v in r) + f",{lab}" for r, lab in zip(x.tolist(), y)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "d.csv"


def _argv(command, tmp_path, csv_file, device):
    if command in ("compress", "fit"):
        return [command, "--data", str(csv_file), "--target", "label", "--out", str(tmp_path / "run"), *FAST,
                "--device", device]  # fmt: skip
    tail = ["--data", str(csv_file)] if command in ("predict", "evaluate") else []
    return [command, str(tmp_path / "nowhere"), *tail, "--device", device]


def _refused(argv, capsys, text):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --device" in err and text in err and "Traceback" not in err, err


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr("pyro_prune.cli.pipeline.pretrain", _no_training)
    monkeypatch.setattr("pyro_prune.cli.pipeline.build_posterior", _no_training)


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cpu:1", "", "CUDA", "meta"])
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_bad_device_string_is_refused(tmp_path, csv_file, capsys, no_training, command, bad):
    _refused(_argv(command, tmp_path, csv_file, bad), capsys, "must be cpu, cuda or cuda:N")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: see test_compress_on_cuda")
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_cuda_without_cuda_fails_before_training(tmp_path, csv_file, capsys, no_training, command):
    _refused(_argv(command, tmp_path, csv_file, "cuda"), capsys, "CUDA is not available")
    _refused(_argv(command, tmp_path, csv_file, "cuda:0"), capsys, "CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_gpu_index_past_the_last_is_refused(tmp_path, csv_file, capsys, no_training, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _refused(_argv("compress", tmp_path, csv_file, "cuda:2"), capsys, "there are 2 CUDA devices (cuda:0 to cuda:1)")


def test_device_cpu_runs_every_subcommand(tmp_path, csv_file, capsys):
    run = tmp_path / "run"
    assert main(_argv("fit", tmp_path, csv_file, "cpu") + ["--no-figures"]) == 0
    assert json.loads((run / "report.json").read_text())["device"] == "cpu"
    assert main(["prune", str(run), "--device", "cpu", "--no-figures", "--num-samples", "3", "--speed-batch", "8"]) == 0
    assert json.loads((run / "pruned" / "report.json").read_text())["device"] == "cpu"
    pred = tmp_path / "p.csv"
    assert main(["predict", str(run / "pruned"), "--data", str(csv_file), "--out", str(pred), "--device", "cpu"]) == 0
    js = tmp_path / "s.json"
    argv = ["evaluate", str(run / "pruned"), "--data", str(csv_file), "--json", str(js), "--device", "cpu"]
    assert main(argv) == 0
    assert json.loads(js.read_text())["device"] == "cpu"
    capsys.readouterr()
    default = tmp_path / "default.csv"  # the default is the CPU: the same predictions
    assert main(["predict", str(run / "pruned"), "--data", str(csv_file), "--out", str(default)]) == 0
    assert pred.read_text() == default.read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compress_on_cuda(tmp_path, csv_file, capsys):
    run = tmp_path / "run"
    assert main(_argv("compress", tmp_path, csv_file, "cuda") + ["--speed-batch", "8"]) == 0
    assert json.loads((run / "report.json").read_text())["device"] == "cuda"
    for name in ("network.pt", "network_torch_prune.pt", "network_csr.pt"):  # the files load on the CPU
        state = torch.load(run / name, weights_only=True)
        assert all(v.device.type == "cpu" for v in state.values()), name
    saved = pp.load(run / "posterior.pt")
    assert all(p.device.type == "cpu" for p in saved.pruned["selected"].module.parameters())
    x = torch.randn(5, 4)
    script = torch.jit.load(str(run / "network.ts"))
    assert_close(script(x), saved.pruned["selected"].module.eval()(x), atol=1e-6, rtol=1e-6)
    on = {}
    for device in ("cuda", "cpu"):  # the deterministic pruned network predicts the same on either device
        out = tmp_path / f"p_{device}.npz"
        argv = ["predict", str(run), "--data", str(csv_file), "--use", "network", "--out", str(out)]
        assert main(argv + ["--device", device]) == 0
        on[device] = np.stack([np.load(out)[f"p_{c}"] for c in (0, 1, 2)], 1)
    assert np.allclose(on["cuda"], on["cpu"], atol=1e-5)
    assert main(["evaluate", str(run), "--data", str(csv_file), "--device", "cuda", "--num-samples", "3"]) == 0
