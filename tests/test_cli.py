"""The pyro-prune command: subcommands on CSV and NPZ files the tests write, compress end to end on the embedded
digits, predict from the saved posterior equal to the in-process prediction, the pruned network's forms (state_dict,
torch.export, TorchScript, torch prune convention, CSR), and
bad arguments refused before any training (tiny networks, 1-2 epochs)."""

import json

import numpy as np
import pytest
import torch
from torch.nn.utils import prune as torch_prune

import pyro_prune as pp
from pyro_prune.cli import build_parser, cmd_train, main
from pyro_prune.cli.network import mlp
from pyro_prune.cli.pipeline import cli_meta, write_fit
from pyro_prune.cli.scoring import predict_arrays
from pyro_prune.pruning.export import to_sparse
from tests.helpers import assert_close

FAST = ["--hidden", "8", "--pretrain-epochs", "2", "--epochs", "1", "--num-samples", "3", "--no-progress"]  # fmt: skip


def _blobs(n=150, seed=0):
    g = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = g.normal(size=(n, 4)) + 3.0 * np.eye(3, 4)[y] + 10.0  # an offset that standardization removes
    return x, y


@pytest.fixture
def csv_file(tmp_path):
    x, y = _blobs()
    path = tmp_path / "blobs.csv"
    labels = np.array(["ant", "bee", "cat"])[y]
    rows = ["a,b,c,d,label"] + [",".join(f"{v!r}" for v in r) + f",{lab}" for r, lab in zip(x.tolist(), labels)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def npz_file(tmp_path):
    g = np.random.default_rng(1)
    x = g.normal(size=(120, 3))
    np.savez(tmp_path / "reg.npz", x=x, y=x @ np.array([1.0, -2.0, 0.5]) + 0.1 * g.normal(size=120))
    return tmp_path / "reg.npz"


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "--hidden HIDDEN",
        "(default: 300,100)",
        "(default: sparse-vd)",
        "(default: 0.15)",
        "(default: val)",
        "(default: auto)",
        "(default: digits)",
    ):
        assert text in " ".join(out.split()), text
    assert main([]) == 2
    for command in ("compress", "fit", "prune", "predict", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--device DEVICE" in text and "cuda:N" in text and "(default: cpu)" in text, command
        assert ("input_shape" in text) == (command in ("compress", "fit")), command  # the --model factory's arguments


def test_compress_embedded_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compress", "--data", "digits", "--out", str(out), "--speed-batch", "16", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "CompressionReport" in printed and "test pruned" in printed and "accuracy" in printed
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    expected = {
        "posterior.pt",
        "network.pt",
        "network.pt2",
        "network.ts",
        "network_torch_prune.pt",
        "network_csr.pt",
        "report.json",
        "report.md",
        "figures/masks.png",
        "figures/reliability.png",
        "figures/compression_curve.png",
        "figures/log_alpha.png",
    }
    assert expected <= names, expected - names
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["sizes"] == {"train": 1168, "val": 270, "test": 359}
    assert report["compression"]["compression"] >= 1 and report["speedup"]["speedup"] > 0
    chosen = report["selection"]["chosen"]
    assert chosen["rule"].startswith("LogAlpha") and len(report["selection"]["candidates"]) == 9
    ok = [c for c in report["selection"]["candidates"] if c["within_tolerance"]]
    if ok:  # the stated rule: the most compression among the candidates within tolerance
        assert chosen["compression"] == max(c["compression"] for c in ok)
    assert "## Threshold selection" in (out / "report.md").read_text()
    _check_network_forms(out)


def _check_network_forms(out):
    """The three pruned forms load and give result.module's outputs; prune.remove works."""
    saved = pp.load(out / "posterior.pt")
    result = saved.pruned["selected"]
    x = torch.randn(7, 64)
    expected = result.module.eval()(x)
    assert_close(torch.export.load(str(out / "network.pt2")).module()(x), expected)
    script = json.loads((out / "report.json").read_text())["torchscript"]
    assert script["method"] == "script" and script["file"] == "network.ts" and script["max_abs_diff"] <= 1e-6
    assert_close(torch.jit.load(str(out / "network.ts"))(x), expected, atol=1e-6, rtol=1e-6)
    plain = mlp(64, [8], 10)
    plain.load_state_dict(torch.load(out / "network.pt", weights_only=True))
    assert_close(plain(x), expected)
    conv = mlp(64, [8], 10)
    for layer in (conv[0], conv[2]):
        torch_prune.identity(layer, "weight")
    conv.load_state_dict(torch.load(out / "network_torch_prune.pt", weights_only=True))
    assert torch.equal(conv[0].weight_mask.bool(), result.masks["0.weight"])
    assert_close(conv(x), expected)
    for layer in (conv[0], conv[2]):
        torch_prune.remove(layer, "weight")
    assert_close(conv(x), expected)
    sparse = to_sparse(mlp(64, [8], 10), {k: torch.ones_like(v) for k, v in result.masks.items()})
    sparse.load_state_dict(torch.load(out / "network_csr.pt", weights_only=True))
    assert sparse[0].weight.layout == torch.sparse_csr
    assert_close(sparse(x), expected, atol=1e-5, rtol=1e-5)


def test_predict_from_saved_equals_in_process(tmp_path, csv_file):
    parser = build_parser()
    args = parser.parse_args(
        [
            "fit",
            "--data",
            str(csv_file),
            "--target",
            "label",
            "--guide",
            "normal",
            "--out",
            str(tmp_path / "fit"),
            "--no-figures",
            *FAST,
        ]
    )
    folder, dataset, post, noise, report = cmd_train._fit(args._parsers["fit"], args, "fit")
    write_fit(args, post, dataset, folder, report, cli_meta(args, post, noise))
    inproc = predict_arrays(post.model, post.guide, dataset.x["test"], dataset.task, 3, 0)["probs"]
    lines = csv_file.read_text().splitlines()  # the raw (unstandardized) test rows, in the split's order
    test_csv = tmp_path / "test_rows.csv"
    test_csv.write_text("\n".join([lines[0]] + [lines[1 + i] for i in dataset.indices["test"].tolist()]) + "\n")
    pred = tmp_path / "pred.csv"
    assert main(["predict", folder, "--data", str(test_csv), "--num-samples", "3", "--out", str(pred)]) == 0
    rows = [r.split(",") for r in pred.read_text().splitlines()]
    assert rows[0][:4] == ["prediction", "p_ant", "p_bee", "p_cat"]
    saved = torch.tensor([[float(v) for v in r[1:4]] for r in rows[1:]])
    assert_close(saved, inproc.float(), atol=1e-6, rtol=1e-6)
    assert [r[0] for r in rows[1:]] == [["ant", "bee", "cat"][i] for i in inproc.argmax(1).tolist()]


def test_subcommands_on_csv(tmp_path, csv_file, capsys):
    run = tmp_path / "run"
    assert main(["fit", "--data", str(csv_file), "--target", "label", "--out", str(run), *FAST]) == 0
    assert {"posterior.pt", "report.json", "report.md"} <= {p.name for p in run.iterdir()}
    assert main(["prune", str(run), "--num-samples", "3", "--no-progress", "--no-figures", "--speed-batch", "8"]) == 0
    assert (run / "pruned" / "network_csr.pt").exists()
    capsys.readouterr()
    js = tmp_path / "scores.json"
    assert (
        main(["evaluate", str(run / "pruned"), "--data", str(csv_file), "--num-samples", "3", "--json", str(js)]) == 0
    )
    scores = json.loads(js.read_text())
    assert scores["use"] == "pruned" and scores["n"] == 150 and 0 <= scores["accuracy"] <= 1
    assert "accuracy" in capsys.readouterr().out
    pred = tmp_path / "p.npz"
    assert main(["predict", str(run), "--data", str(csv_file), "--use", "posterior", "--out", str(pred)]) == 0
    probs = np.stack([np.load(pred)[f"p_{c}"] for c in ("ant", "bee", "cat")], 1)
    assert probs.shape == (150, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_subcommands_on_npz_regression(tmp_path, npz_file):
    run = tmp_path / "run"
    args = [
        "compress",
        "--data",
        str(npz_file),
        "--guide",
        "laplace-kron",
        "--out",
        str(run),
        "--no-figures",
        "--speed-batch",
        "8",
    ]
    assert main(args + FAST) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["data"]["task"] == "regression" and "rmse" in report["scores"]["test pruned"]
    assert report["pruned_predictive"] == "pruned MAP network"
    pred = tmp_path / "p.csv"
    assert main(["predict", str(run), "--data", str(npz_file), "--use", "posterior", "--out", str(pred)]) == 0
    header = pred.read_text().splitlines()[0].split(",")
    assert header == ["prediction", "mean", "std", "epistemic_std", "aleatoric_std"]
    assert main(["evaluate", str(run), "--data", str(npz_file), "--use", "network"]) == 0


def test_user_model_and_weights(tmp_path, csv_file, monkeypatch):
    (tmp_path / "user_nets.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, d, k):\n"
        "        super().__init__()\n"
        "        self.body = nn.Linear(d, 6)\n"
        "        self.head = nn.Linear(6, k)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.body(x).relu())\n"
        "def make(in_features, out_features):\n"
        "    return Net(in_features, out_features)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_nets

    torch.save(user_nets.make(4, 3).state_dict(), tmp_path / "w.pt")
    run = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "--data",
                str(csv_file),
                "--target",
                "label",
                "--model",
                "user_nets:make",
                "--weights",
                str(tmp_path / "w.pt"),
                "--guide",
                "sparse-vd",
                "--out",
                str(run),
                "--no-figures",
                *FAST,
            ]
        )
        == 0
    )
    assert main(["predict", str(run), "--data", str(csv_file), "--out", str(tmp_path / "p.csv")]) == 0


def test_selection_keeps_nothing_pruned_when_no_rule_meets_the_tolerance():
    """A rule that fails the validation tolerance is never applied: the fallback prunes nothing (compression 1)."""
    from types import SimpleNamespace

    import pyro.distributions as pdist
    import torch.nn as tnn

    from pyro_prune.cli.selection import select

    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = pp.bayesianize(tnn.Sequential(tnn.Linear(4, 8), tnn.ReLU(), tnn.Linear(8, 2)), pdist.Normal(0.0, 1.0),
                           pp.Categorical(60))  # fmt: skip
    guide = pp.AutoMeanFieldNormal(model, init_scale=1e-3)
    pp.fit(model, guide, (x, y), epochs=60, lr=3e-2, progress=False)
    args = SimpleNamespace(num_samples=5, seed=0, tolerance=0.0, accuracy_tolerance=0.0)
    post = SimpleNamespace(model=model, guide=guide)
    sel = select(post, [pp.rules.Sparsity(0.97)], (x, y), "classification", args)
    assert sel.chosen.compression == 1.0 and "nothing pruned" in sel.rule_text
    assert not sel.within and sel.candidates[0].compression > 10
