"""pyro-prune on inputs that are not flat: the user's Conv1d (``--model module:factory``) on an NPZ ``x`` of shape
``(N, 2, 16)``. The per-example shape is saved with the posterior, the standardization is per feature of the
flattened example (fitted on the training rows), predict from the saved posterior equals the in-process prediction,
and an input of another shape is refused naming ``--data``."""

import json

import numpy as np
import pytest
import torch

import pyro_prune as pp
from pyro_prune.cli import build_parser, cmd_train, main
from pyro_prune.cli.pipeline import cli_meta, write_fit
from pyro_prune.cli.scoring import predict_arrays
from tests.helpers import assert_close

FAST = ["--pretrain-epochs", "2", "--epochs", "1", "--num-samples", "3", "--no-progress", "--no-figures"]

CONV_NETS = """
import torch.nn as nn

def make(input_shape, out_features):
    channels, length = input_shape
    return nn.Sequential(
        nn.Conv1d(channels, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * (length - 2), out_features)
    )
"""


@pytest.fixture
def conv_npz(tmp_path, monkeypatch):
    """A (N, 2, 16) NPZ (two classes; the channels have different offsets and scales) and the factory module."""
    (tmp_path / "shape_user_nets.py").write_text(CONV_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    g = np.random.default_rng(0)
    y = np.arange(120) % 2
    x = g.normal(size=(120, 2, 16)) * np.array([1.0, 3.0])[:, None] + np.array([5.0, -2.0])[:, None]
    x[:, 0, :8] += 2.0 * y[:, None]
    np.savez(tmp_path / "conv.npz", x=x, y=y)
    return tmp_path / "conv.npz", x


def _fit(tmp_path, data):
    parser = build_parser()
    argv = ["fit", "--data", str(data), "--model", "shape_user_nets:make", "--guide", "sparse-vd"]
    args = parser.parse_args(argv + ["--out", str(tmp_path / "fit"), *FAST])
    folder, dataset, post, noise, report = cmd_train._fit(args._parsers["fit"], args, "fit")
    write_fit(args, post, dataset, folder, report, cli_meta(args, post, noise))
    return folder, dataset, post


def test_conv1d_fit_predict_on_shaped_npz(tmp_path, conv_npz):
    data, x_raw = conv_npz
    folder, dataset, post = _fit(tmp_path, data)
    assert dataset.x["train"].shape[1:] == (2, 16)
    saved = pp.load(f"{folder}/posterior.pt", net=post.model.template())
    assert saved.metadata["cli"]["input_shape"] == [2, 16]
    train_rows = torch.as_tensor(x_raw[dataset.indices["train"].numpy()].reshape(-1, 32), dtype=torch.float32)
    assert_close(saved.extra["input_mean"].reshape(-1), train_rows.mean(0), atol=1e-5, rtol=1e-5)
    assert_close(saved.extra["input_std"].reshape(-1), train_rows.std(0, unbiased=False), atol=1e-5, rtol=1e-5)
    raw_test = torch.as_tensor(x_raw[dataset.indices["test"].numpy()].reshape(-1, 32), dtype=torch.float32)
    standardized = ((raw_test - train_rows.mean(0)) / train_rows.std(0, unbiased=False)).reshape(-1, 2, 16)
    assert_close(dataset.x["test"], standardized, atol=1e-5, rtol=1e-5)

    inproc = predict_arrays(post.model, post.guide, dataset.x["test"], dataset.task, 3, 0)["probs"]
    test_npz = tmp_path / "test_rows.npz"
    np.savez(test_npz, x=x_raw[dataset.indices["test"].numpy()])
    pred = tmp_path / "pred.npz"
    assert main(["predict", folder, "--data", str(test_npz), "--num-samples", "3", "--out", str(pred)]) == 0
    probs = torch.as_tensor(np.stack([np.load(pred)[f"p_{c}"] for c in (0, 1)], 1))
    assert_close(probs, inproc.float(), atol=1e-6, rtol=1e-6)


def test_wrong_shape_is_refused_naming_the_input(tmp_path, conv_npz, capsys):
    data, _ = conv_npz
    run = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--model", "shape_user_nets:make", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 3, 16)), y=np.zeros(5, dtype=int))
    np.savez(tmp_path / "flat.npz", x=np.zeros((5, 32)), y=np.zeros(5, dtype=int))
    for name in ("wrong.npz", "flat.npz"):
        for cmd in ("predict", "evaluate"):
            argv = [cmd, str(run), "--data", str(tmp_path / name)]
            argv += ["--out", str(tmp_path / "p.csv")] if cmd == "predict" else []
            with pytest.raises(SystemExit) as exc:
                main(argv)
            err = capsys.readouterr().err
            assert exc.value.code == 2 and "argument --data" in err and name in err and "(2, 16)" in err, err
    assert not (tmp_path / "p.csv").exists()


def test_conv1d_compress_prune_evaluate(tmp_path, conv_npz, capsys):
    import shape_user_nets  # written by the fixture, on sys.path

    data, _ = conv_npz
    run = tmp_path / "run"
    argv = ["compress", "--data", str(data), "--model", "shape_user_nets:make", "--out", str(run), "--speed-batch", "8"]
    assert main(argv + FAST) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["data"]["sizes"]["test"] == 24 and report["compression"]["compression"] >= 1
    assert report["torchscript"]["method"] == "script" and "network.ts" in report["files"]
    pruned = pp.load(run / "posterior.pt", net=shape_user_nets.make((2, 16), 2)).pruned["selected"].module.eval()
    x = torch.randn(5, 2, 16)
    assert_close(torch.jit.load(str(run / "network.ts"))(x), pruned(x), atol=1e-6, rtol=1e-6)
    assert main(["prune", str(run), "--no-figures", "--num-samples", "3", "--speed-batch", "8"]) == 0
    capsys.readouterr()
    js = tmp_path / "s.json"
    assert main(["evaluate", str(run / "pruned"), "--data", str(data), "--num-samples", "3", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["n"] == 120
