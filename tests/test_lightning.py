"""pyro_prune.lightning: the LightningModule trains as ``fit`` does (same records with the same seed, on every path),
its checkpoints bridge to ``pp.save``/``pp.load``, and ``import pyro_prune`` does not import Lightning."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from tests.helpers import assert_close

pytest.importorskip("lightning")
import lightning.pytorch as pl  # noqa: E402

from pyro_prune.lightning import (  # noqa: E402
    BayesianLightningModule,
    StepObjective,
    from_saved,
    load_checkpoint,
    save_posterior,
)

#: The README's "Training at scale" example, read from README.md (tests/test_readme.py runs every block; this test
#: checks what the example produced)
README_EXAMPLE = next(
    block
    for block in re.findall(r"```python\n(.*?)```", (pathlib.Path(__file__).parents[1] / "README.md").read_text(), re.S)
    if "BayesianLightningModule" in block
)


def test_readme_training_at_scale_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__readme__"}
    exec(compile(README_EXAMPLE, "README_EXAMPLE", "exec"), scope)
    history = scope["module"].history
    assert [r["epoch"] for r in history.records] == [0, 1]
    assert {"loss", "ell", "kl", "beta", "seconds", "val_accuracy", "val_nll", "val_ece"} <= set(history.last)
    assert history.last["val_accuracy"] > 0.5
    loaded = pp.load(tmp_path / "posterior.pt")
    assert len(loaded.history.records) == 2
    assert (tmp_path / "runs").is_dir()


def _trainer(epochs: int, **kw) -> pl.Trainer:
    kw = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, **kw}
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, enable_model_summary=False, **kw)


def _setup(kind: str):
    pyro.clear_param_store()  # the second AutoNormal would otherwise take the first one's parameters from the store
    pyro.set_rng_seed(0)
    split = pp.data.load_digits()
    train, test = split.loaders(batch_size=128, seed=0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    prior = pp.LogUniform() if kind == "sparse_vd" else dist.Normal(0.0, 1.0)
    model = pp.bayesianize(net, prior=prior, likelihood=pp.Categorical(split.dataset_size))
    guide = pp.AutoSparseVD(model) if kind == "sparse_vd" else pyro.infer.autoguide.AutoNormal(model, init_scale=0.05)
    with torch.no_grad():
        guide(*next(iter(train)))  # set up as fit sets up a LocalReparamGuide (the loader's generator moves alike)
    return model, guide, train, test


#: (guide, options): the fused path with warm-up and tempering, Pyro's ELBO, the joint Rényi bound (manual steps)
PATHS = {
    "fused": ("sparse_vd", dict(kl_warmup=1, kl_weight=0.5)),
    "elbo": ("normal", dict(kl_warmup=1)),
    "renyi": ("normal", dict(alpha=0.5, num_particles=2)),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_same_records_as_fit_with_the_same_seed(path):
    kind, options = PATHS[path]
    model, guide, train, test = _setup(kind)
    expected = pp.fit(model, guide, train, epochs=2, lr=3e-3, val_data=test, val_samples=5, progress=False, **options)
    model, guide, train, test = _setup(kind)
    module = BayesianLightningModule(model, guide, lr=3e-3, val_samples=5, **options)
    assert module.objective.path == path
    _trainer(2).fit(module, train, test)
    got = module.history
    assert len(got) == len(expected) == 2
    for mine, theirs in zip(got.records, expected.records):
        assert set(mine) == set(theirs)
        for key in ("loss", "ell", "kl", "beta", "val_nll"):
            assert_close(mine[key], theirs[key], rtol=1e-4, msg=f"{path} epoch {theirs['epoch']} {key}:")
        assert abs(mine["val_accuracy"] - theirs["val_accuracy"]) <= 0.01


def test_same_compression_as_fit():
    model, guide, train, test = _setup("sparse_vd")
    pp.fit(model, guide, train, epochs=2, lr=3e-3, kl_warmup=1, progress=False)
    expected = pp.prune(model, guide, rule=pp.rules.LogAlpha(3.0)).report
    model, guide, train, test = _setup("sparse_vd")
    module = BayesianLightningModule(model, guide, lr=3e-3, kl_warmup=1)
    _trainer(2).fit(module, train)
    got = pp.prune(model, guide, rule=pp.rules.LogAlpha(3.0)).report
    assert abs(got.compression - expected.compression) <= 0.02 * expected.compression


def test_checkpoint_bridge_round_trips(tmp_path):
    model, guide, train, test = _setup("sparse_vd")
    module = BayesianLightningModule(model, guide, lr=3e-3, kl_weight=0.5)
    trainer = _trainer(1)
    trainer.fit(module, train)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    # Lightning checkpoint -> fresh model and guide (not set up) -> posterior file -> pp.load
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fresh = pp.bayesianize(net, prior=pp.LogUniform(), likelihood=pp.Categorical(model.dataset_size))
    restored = load_checkpoint(tmp_path / "run.ckpt", fresh, pp.AutoSparseVD(fresh))
    assert restored.kl_weight == 0.5 and restored.history.records == module.history.records
    save_posterior(restored, tmp_path / "posterior.pt")
    loaded = pp.load(tmp_path / "posterior.pt")
    for name, m in pp.marginals(guide).items():
        assert_close(pp.marginals(loaded.guide)[name].loc, m.loc, rtol=0, atol=0, msg=name)
        assert_close(pp.marginals(loaded.guide)[name].scale, m.scale, rtol=0, atol=0, msg=name)
    # posterior file -> module: training goes on from the saved posterior
    again = from_saved(loaded, lr=1e-3)
    assert again.guide is loaded.guide and again.objective.path == "fused"
    _trainer(1).fit(again, train)
    assert len(again.history) == 1


def test_arguments_and_setup_are_checked():
    model, guide, train, _ = _setup("sparse_vd")
    fresh = BayesianLightningModule(model, pp.AutoSparseVD(model))
    with pytest.raises(ValueError, match="guide is not set up"):
        _trainer(1).fit(fresh, train)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        BayesianLightningModule(lambda x, y: None, guide)
    with pytest.raises(ValueError, match="lr"):
        BayesianLightningModule(model, guide, lr=-1.0, example=next(iter(train)))
    with pytest.raises(ValueError, match="alpha_on"):
        BayesianLightningModule(model, guide, alpha_on="both", example=next(iter(train)))
    with pytest.raises(TypeError, match="saved must be"):
        from_saved(guide)


def test_a_non_finite_gradient_stops_training_before_the_step():
    model, guide, train, _ = _setup("sparse_vd")
    module = BayesianLightningModule(model, guide)
    with torch.no_grad():
        next(guide.parameters()).fill_(float("nan"))
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    with pytest.raises(pp.NonFiniteError, match="not finite"):
        _trainer(1).fit(module, train)
    for n, p in module.named_parameters():
        assert torch.equal(p.detach().isnan(), before[n].isnan()) and torch.equal(
            p.nan_to_num(), before[n].nan_to_num()
        )


def test_import_pyro_prune_does_not_import_lightning():
    code = "import sys, pyro_prune; print('lightning' in sys.modules, 'pyro_prune.lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("alpha_on", ["joint", "likelihood"])
def test_joint_renyi_on_an_improper_prior_is_refused_as_fit_refuses_it(alpha_on):
    model, guide, train, _ = _setup("sparse_vd")
    if alpha_on == "likelihood":  # the power likelihood keeps the KL in closed form: allowed, as in fit
        assert BayesianLightningModule(model, guide, alpha=0.5, alpha_on=alpha_on).objective.path == "fused"
        return
    with pytest.raises(ValueError, match="alpha_on='joint'.*proper prior") as from_fit:
        pp.fit(model, guide, train, epochs=1, alpha=0.5, progress=False)
    with pytest.raises(ValueError, match="alpha_on='joint'.*proper prior") as from_module:
        BayesianLightningModule(model, guide, alpha=0.5)
    assert str(from_module.value) == str(from_fit.value)
    with pytest.raises(ValueError, match="alpha_on='joint'.*proper prior"):
        StepObjective(model, guide, alpha=0.5)
