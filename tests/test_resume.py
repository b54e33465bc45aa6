"""Exact resume: fit for 2 epochs, then resume for 2 more, equals 4 epochs in one call bit for bit (same seed, same
data order, KL warm-up spanning the split), on the fused path (AutoSparseVD, AutoGroupSparse) and the SVI path
(AutoNormal, Rényi AutoSparseVD), with the state round-tripped through torch.save / torch.load(weights_only=True).
Without resume the split run differs (the test would catch a resume that dropped the optimizer state)."""

import io

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune.training import History, TrainingState

N, BATCH = 40, 10

CASES = [
    # (id, prior, guide factory, fit keywords, path)
    ("fused-sparse-vd", lambda: dist.Normal(0.0, 1.0), pp.AutoSparseVD, {}, "fused"),
    ("fused-group-sparse", lambda: pp.GroupPrior("log-uniform"), pp.AutoGroupSparse, {}, "fused"),
    ("svi-autonormal", lambda: dist.Normal(0.0, 1.0), AutoNormal, {}, "svi"),
    ("svi-renyi-sparse-vd", lambda: dist.Normal(0.0, 1.0), pp.AutoSparseVD, {"alpha": 0.5, "num_particles": 2}, "svi"),
]
IDS = [c[0] for c in CASES]
FIT = {"lr": 1e-2, "kl_warmup": 3, "progress": False}  # warm-up over 12 steps: still ramping at the 2 + 2 split


@pytest.fixture(params=[False, True], ids=["global-params", "module-local-params"])
def local_params(request):
    with pyro.settings.context(module_local_params=request.param):
        yield request.param


def setup(prior, make_guide, hidden=8):
    """A fresh model, guide and shuffling loader, all from the same seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    x = torch.randn(N, 3)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 2))
    model = pp.bayesianize(net, prior(), pp.Categorical(N))
    gen = torch.Generator().manual_seed(3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=gen
    )
    return model, make_guide(model), loader


def params(model, guide):
    out = {f"guide.{k}": v for k, v in guide.named_parameters()}
    out.update({f"model.{k}": v for k, v in model.named_parameters()})
    out.update({f"store.{k}": v for k, v in pyro.get_param_store().items()})
    return {k: v.detach().clone() for k, v in out.items()}


def assert_equal_params(a, b, equal=True):
    assert a.keys() == b.keys() and a
    same = all(torch.equal(a[k], b[k]) for k in a)
    assert same == equal, "parameters differ" if equal else "parameters are equal, expected a difference"


def saved_and_loaded(history):
    """History round trip through torch.save and torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save({"history": history.to_dict(), "state": history.state.to_dict()}, buf)
    buf.seek(0)
    blob = torch.load(buf, weights_only=True)
    return History.from_dict(blob["history"], state=blob["state"])


@pytest.mark.parametrize("name, prior, make_guide, kw, path", CASES, ids=IDS)
def test_two_plus_two_epochs_equal_four(local_params, name, prior, make_guide, kw, path):
    model, guide, loader = setup(prior, make_guide)
    whole = pp.fit(model, guide, loader, epochs=4, **FIT, **kw)
    expected = params(model, guide)

    model, guide, loader = setup(prior, make_guide)
    first = pp.fit(model, guide, loader, epochs=2, **FIT, **kw)
    assert first.state.path == path and first.state.epoch == 2 and first.state.step == 8
    assert all(isinstance(k, str) for k in first.state.optimizer["state"])  # keyed by names, not object ids
    second = pp.fit(model, guide, loader, epochs=2, resume=saved_and_loaded(first), **FIT, **kw)
    assert_equal_params(params(model, guide), expected)
    assert second["epoch"] == [0, 1, 2, 3]  # the resumed History continues the epoch count
    for key in ("loss", "ell", "kl", "beta"):
        assert second[key] == whole[key], key
    assert whole["beta"][1] < 1.0 and whole["beta"][2] < 1.0  # the warm-up spans the split
    assert second.state.step == whole.state.step == 16


def test_without_resume_the_split_run_differs():
    """The control: a second fit that restarts Adam and the warm-up does not reproduce the 4-epoch run."""
    prior, make_guide = CASES[0][1], CASES[0][2]
    model, guide, loader = setup(prior, make_guide)
    pp.fit(model, guide, loader, epochs=4, **FIT)
    expected = params(model, guide)
    model, guide, loader = setup(prior, make_guide)
    pp.fit(model, guide, loader, epochs=2, **FIT)
    pp.fit(model, guide, loader, epochs=2, **FIT)
    assert_equal_params(params(model, guide), expected, equal=False)


def test_resume_from_a_training_state_numbers_epochs_from_it():
    model, guide, loader = setup(CASES[0][1], pp.AutoSparseVD)
    first = pp.fit(model, guide, loader, epochs=2, **FIT)
    state = TrainingState.from_dict(first.state.to_dict())
    second = pp.fit(model, guide, loader, epochs=1, resume=state, **FIT)
    assert second["epoch"] == [2] and second.state.epoch == 3 and second.state.step == 12
    # the resumed History was not changed by the second run; resuming from it twice is allowed
    assert first.state.epoch == 2 and len(first) == 2


def test_resume_with_another_guide_model_or_path_raises():
    model, guide, loader = setup(CASES[0][1], pp.AutoSparseVD)
    h = pp.fit(model, guide, loader, epochs=1, **FIT)
    with pytest.raises(ValueError, match="recorded for a AutoSparseVD guide, not AutoNormal"):
        pp.fit(model, AutoNormal(model), loader, epochs=1, resume=h, **FIT)
    wider, wider_guide, wider_loader = setup(CASES[0][1], pp.AutoSparseVD, hidden=16)
    with pytest.raises(ValueError, match="shape .* another model or guide"):
        pp.fit(wider, wider_guide, wider_loader, epochs=1, resume=h, **FIT)
    with pytest.raises(ValueError, match="fused path, this fit takes the svi path"):
        pp.fit(model, guide, loader, epochs=1, resume=h, alpha=0.5, **FIT)
    svi = pp.fit(model, AutoNormal(model), loader, epochs=1, **FIT)
    with pytest.raises(ValueError, match="not AutoSparseVD"):
        pp.fit(model, guide, loader, epochs=1, resume=svi, **FIT)


def test_resume_argument_checks():
    model, guide, loader = setup(CASES[0][1], pp.AutoSparseVD)
    with pytest.raises(ValueError, match="no training state"):
        pp.fit(model, guide, loader, epochs=1, resume=History(), **FIT)
    with pytest.raises(TypeError, match="resume must be a History or a TrainingState"):
        pp.fit(model, guide, loader, epochs=1, resume=3, **FIT)
    h = pp.fit(model, guide, loader, epochs=1, **FIT)
    with pytest.warns(UserWarning, match="kl_warmup=0"):
        pp.fit(model, guide, loader, epochs=1, resume=h, lr=1e-2, progress=False)
    with pytest.raises(ValueError, match="version"):
        TrainingState.from_dict({**h.state.to_dict(), "version": 99})
