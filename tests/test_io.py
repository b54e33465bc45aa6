"""``pp.save`` / ``pp.load`` (issue 12, point 2): a file per posterior, rebuilt in a **fresh process** with
bit-identical predictions under a fixed seed, for every guide of the library, Pyro's ``AutoNormal``/``AutoDelta``,
and ``PruneResult``s (unstructured and structured); a run checkpointed by ``pp.Checkpoint`` and continued in a
fresh process equals the uninterrupted run bit for bit.

The fresh process is one ``python -c`` child for the whole matrix (interpreter start-up is the slow part): the
parent trains and saves every case and the expected outputs; the child loads each file, predicts with the same
seed and writes its outputs; the parent compares them with ``torch.equal``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyro
import pytest
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal

import pyro_prune as pp
from tests.test_durability import GUIDES, data, make_model, predictions, trained

NUM_SAMPLES, SEED = 8, 123

CHILD = """
import sys, torch, pyro
import pyro_prune as pp

names = sys.argv[1].split(",")
x = torch.load("x.pt", weights_only=True)
out = {}
for name in names:
    s = pp.load(name + ".pt")
    pyro.set_rng_seed(123)
    out[name] = {"probs": pp.predict(s.model, s.guide, x, num_samples=8).probs}
    for key, result in s.pruned.items():
        pyro.set_rng_seed(123)
        out[name][key] = {
            "module": result.module(x).detach(),
            "ensemble": pp.predict(s.model, result.guide, x, num_samples=8).probs,
            "compression": torch.tensor(result.report.compression),
            "rule": result.report.rule,
            "structure": repr(result.report.structure),
        }
torch.save(out, "child.pt")
print("ok")
"""


def run_child(script: str, folder, *args: str) -> None:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=folder, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    assert out.stdout.strip().endswith("ok")


def pyro_guide(cls):
    model = make_model("sparse_vd")
    guide = cls(model)
    pp.fit(model, guide, data(), epochs=6, lr=0.05, progress=False)
    return model, guide


def pruned_case(name: str):
    """A trained sparse or group guide with its pruned results (unstructured; structured with an example input)."""
    model, guide = trained(name)
    x, _ = data(1)
    if name == "sparse_vd":
        return model, guide, {"la": pp.prune(model, guide, pp.rules.Sparsity(0.5))}
    return model, guide, {"groups": pp.prune(model, guide, pp.rules.GroupSparsity(0.5), example_input=x[:2])}


def expected_outputs(model, guide, pruned, x) -> dict:
    out = {"probs": predictions(model, guide)}
    for key, result in pruned.items():
        pyro.set_rng_seed(SEED)
        out[key] = {
            "module": result.module(x).detach(),
            "ensemble": pp.predict(model, result.guide, x, num_samples=NUM_SAMPLES).probs,
            "compression": torch.tensor(result.report.compression),
            "rule": result.report.rule,
            "structure": repr(result.report.structure),
        }
    return out


def assert_same(got, want, where: str) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif torch.is_tensor(want):
        assert torch.equal(got, want), f"{where}: the fresh process differs (max |diff| {(got - want).abs().max()})"
    else:
        assert got == want, where


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Every case saved by this process and reloaded by one fresh process: ``(expected, child outputs)``."""
    folder = tmp_path_factory.mktemp("io")
    x, _ = data(1)
    torch.save(x, folder / "x.pt")
    cases = {name: (*trained(name), {}) for name in GUIDES}
    cases.update({f"pruned_{n}": pruned_case(n) for n in ("sparse_vd", "group_log_uniform")})
    cases.update({"autonormal": (*pyro_guide(AutoNormal), {}), "autodelta": (*pyro_guide(AutoDelta), {})})
    cases["meanfield"] = (*pyro_guide(pp.AutoMeanFieldNormal), {})
    expected = {}
    for name, (model, guide, pruned) in cases.items():
        pp.save(folder / f"{name}.pt", model, guide, pruned=pruned)
        expected[name] = expected_outputs(model, guide, pruned, x)
    run_child(CHILD, folder, ",".join(cases))
    pyro.clear_param_store()
    return expected, torch.load(folder / "child.pt", weights_only=True)


CASES = GUIDES + ["pruned_sparse_vd", "pruned_group_log_uniform", "autonormal", "autodelta", "meanfield"]


@pytest.mark.parametrize("name", CASES)
def test_fresh_process_predicts_bit_identically(name, matrix):
    expected, child = matrix
    assert_same(child[name], expected[name], name)


# -- checkpoint and exact continuation in a fresh process ------------------------------------------------------
RESUME_CHILD = """
import torch, pyro
import pyro_prune as pp

x, y = torch.load("data.pt", weights_only=True)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
s = pp.load("ckpt.pt")
s.restore_rng()
history = pp.fit(s.model, s.guide, loader, epochs=2, kl_warmup=3, lr=0.02, progress=False, resume=s.history)
torch.save({"state": s.guide.state_dict(), "loss": torch.tensor(history["loss"], dtype=torch.float64)}, "resumed.pt")
print("ok")
"""


def test_checkpoint_then_fresh_process_continues_the_run_exactly(tmp_path):
    """4 epochs in one run == 2 epochs checkpointed + 2 epochs in a fresh process (Adam moments, the KL warm-up
    position, the shuffling generator: all from the file)."""
    x, y = data()
    torch.save((x, y), tmp_path / "data.pt")

    def run(epochs, callbacks=()):
        pyro.set_rng_seed(5)
        model = make_model("sparse_vd")
        guide = pp.AutoSparseVD(model)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
        history = pp.fit(model, guide, loader, epochs=epochs, kl_warmup=3, lr=0.02, progress=False,
                         callbacks=callbacks)  # fmt: skip
        return guide, history

    whole, whole_history = run(4)
    ckpt = pp.Checkpoint(tmp_path / "ckpt.pt", every=2)
    run(2, [ckpt])
    assert ckpt.last_path == str(tmp_path / "ckpt.pt")
    run_child(RESUME_CHILD, tmp_path)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed["loss"].tolist() == whole_history["loss"]
    want = whole.state_dict()
    for k, v in want.items():
        if torch.is_tensor(v):
            assert torch.equal(resumed["state"][k], v), k


def test_checkpoint_with_epoch_in_the_name_keeps_one_file_per_checkpoint(tmp_path):
    x, y = data()
    model = make_model("sparse_vd")
    guide = pp.AutoSparseVD(model)
    ckpt = pp.Checkpoint(tmp_path / "run-{epoch}.pt", every=2, rng=False)
    pp.fit(model, guide, (x, y), epochs=5, lr=0.02, progress=False, callbacks=[ckpt])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-2.pt", "run-4.pt"]
    s = pp.load(tmp_path / "run-4.pt")
    assert len(s.history) == 4 and s.history.state.epoch == 4 and s.rng is None
    with pytest.raises(ValueError, match="rng=False"):
        s.restore_rng()


@pytest.mark.parametrize("bad, err", [({"every": 0}, ValueError), ({"every": 1.5}, TypeError),
                                      ({"rng": "yes"}, TypeError), ({"path": 3}, TypeError)])  # fmt: skip
def test_checkpoint_rejects_bad_arguments(bad, err, tmp_path):
    kwargs = {"path": tmp_path / "c.pt", **bad}
    with pytest.raises(err):
        pp.Checkpoint(**kwargs)
