"""The pieces of the posterior file (``pyro_prune.io``): descriptions of networks and priors, the likelihood and guide
registries, what a file must refuse, and that saving and loading never touch the caller's objects or RNG."""

from __future__ import annotations

import os
import pickle
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from pyro_prune.io import FORMAT, specs
from pyro_prune.io.specs import TensorStore, build_distribution, build_net, describe_distribution, describe_net

NETS = [
    nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 3, bias=False)),
    nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.LayerNorm(12), nn.Linear(12, 2)),
    nn.Sequential(
        nn.Conv1d(2, 4, 5, stride=2, padding="valid"), nn.GELU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 1)
    ),  # fmt: skip
    nn.ModuleList([nn.Linear(2, 2), nn.Tanh()]),
]


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


class Boom:
    """An object whose unpickling would run code: a safe loader must refuse it without calling it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize("net", NETS, ids=range(len(NETS)))
def test_torch_nn_networks_are_described_and_rebuilt_exactly(net):
    spec = describe_net(net)
    assert spec is not None
    rebuilt = build_net(spec)
    assert repr(rebuilt) == repr(net)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_describe_net_neither_allocates_nor_draws_from_the_generator():
    before = torch.get_rng_state()
    assert describe_net(NETS[0]) is not None
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    "net", [MyNet(), nn.Sequential(MyNet()), nn.Sequential(nn.Linear(2, 2), nn.MultiheadAttention(2, 1))]
)
def test_networks_outside_torch_nn_are_not_described(net):
    assert describe_net(net) is None


def test_build_net_looks_classes_up_in_torch_nn_only():
    with pytest.raises(specs.SpecError, match="torch.nn only"):
        build_net({"class": "os.system", "args": {}})
    with pytest.raises(specs.SpecError, match="cannot rebuild"):
        build_net({"class": "Linear", "args": {"in_features": 2}})


PRIORS = [
    dist.Normal(0.0, 0.5),
    dist.Laplace(torch.zeros(3), torch.ones(3)),
    dist.StudentT(3.0, 0.0, 2.0),
    pp.LogUniform(),
    pp.LogUniform(1e-3, 1e2),
    dist.Normal(0.0, 1.0).expand([4, 3]).to_event(2),
    pp.HalfCauchyScaleMixture(torch.tensor(0.3)),
]


@pytest.mark.parametrize("prior", PRIORS, ids=[type(p).__name__ for p in PRIORS])
def test_priors_are_described_and_rebuilt_exactly(prior):
    store = TensorStore()
    spec = describe_distribution(prior, store, "the prior")
    rebuilt = build_distribution(spec, TensorStore(dict(store.tensors)))
    assert type(rebuilt) is type(prior)
    assert rebuilt.batch_shape == prior.batch_shape and rebuilt.event_shape == prior.event_shape
    if type(prior).__name__ != "ImproperLogUniform":
        value = prior.sample()
        assert torch.equal(rebuilt.log_prob(value), prior.log_prob(value))


def test_a_prior_outside_the_known_namespaces_is_refused_at_save(tmp_path):
    class MyNormal(dist.Normal):
        pass

    model = pp.bayesianize(nn.Sequential(nn.Linear(2, 2)), MyNormal(0.0, 1.0), pp.Categorical(4))
    with pytest.raises(ValueError, match="MyNormal.*pass prior"):
        pp.save(tmp_path / "m.pt", model)
    assert not list(tmp_path.iterdir())  # nothing written


def test_build_distribution_looks_classes_up_in_known_namespaces_only():
    with pytest.raises(specs.SpecError, match="unknown distribution"):
        build_distribution({"class": "builtins.eval", "params": {}}, TensorStore())
    with pytest.raises(specs.SpecError, match="does not hold"):
        build_distribution({"class": "pyro.distributions.Normal", "params": {"loc": {"tensor": "x"}}}, TensorStore())


# -- models --------------------------------------------------------------------------------------------------
def small_model(prior=None, likelihood=None, net=None):
    torch.manual_seed(0)
    net = net if net is not None else nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    return pp.bayesianize(net, prior or dist.Normal(0.0, 1.0), likelihood or pp.Categorical(16))


def test_callable_prior_is_saved_as_the_resolved_priors(tmp_path):
    def prior(name, module, param):
        return dist.Normal(0.0, 0.1) if name.endswith("weight") else None

    model = small_model(prior=prior)
    pp.save(tmp_path / "m.pt", model)
    loaded = pp.load(tmp_path / "m.pt").model
    assert loaded.point_estimates == model.point_estimates and list(loaded.sites) == list(model.sites)
    for name in model.sites:
        value = torch.randn(model.sites[name].shape)
        assert torch.equal(loaded.prior(name).log_prob(value), model.prior(name).log_prob(value))
    for k, v in model.initial_weights().items():
        assert torch.equal(loaded.initial_weights()[k], v)


def test_gaussian_learned_scale_float64_model_and_metadata_round_trip(tmp_path):
    model = small_model(likelihood=pp.Gaussian(16, scale="learned"), net=nn.Sequential(nn.Linear(3, 1))).double()
    with torch.no_grad():
        model.likelihood.scale = torch.tensor(0.37, dtype=torch.float64)
    meta = {"standardize": {"mean": [0.5, 1.0], "std": [2.0, 3.0]}, "target": "y"}
    pp.save(tmp_path / "m.pt", model, metadata=meta, extra={"mean": torch.arange(3.0)})
    s = pp.load(tmp_path / "m.pt")
    assert s.model.dtype == torch.float64 and s.model.likelihood.mode == "learned"
    assert float(s.model.likelihood.scale.detach()) == pytest.approx(0.37, abs=0)
    assert s.metadata == meta and torch.equal(s.extra["mean"], torch.arange(3.0)) and s.guide is None
    assert s.info["format"] == FORMAT and s.info["version"] == pp.io.FORMAT_VERSION


def test_a_custom_network_needs_net_and_it_is_checked_and_copied(tmp_path):
    model = small_model(net=MyNet())
    pp.save(tmp_path / "m.pt", model)
    with pytest.raises(ValueError, match="pass net="):
        pp.load(tmp_path / "m.pt")
    wrong = nn.Sequential(nn.Linear(3, 5))
    with pytest.raises(ValueError, match="does not match"):
        pp.load(tmp_path / "m.pt", net=wrong)
    mine = MyNet()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    s = pp.load(tmp_path / "m.pt", net=mine)
    assert all(torch.equal(mine.state_dict()[k], v) for k, v in before.items())  # the user's net is untouched
    assert torch.equal(s.model.initial_weights()["fc.weight"], model.initial_weights()["fc.weight"])


def test_a_custom_likelihood_needs_likelihood_or_registration(tmp_path):
    class Poissonish(pp.Gaussian):
        pass

    model = small_model(likelihood=Poissonish(16), net=nn.Sequential(nn.Linear(3, 1)))
    pp.save(tmp_path / "m.pt", model)
    with pytest.raises(ValueError, match="likelihood="):
        pp.load(tmp_path / "m.pt")
    assert type(pp.load(tmp_path / "m.pt", likelihood=Poissonish(16)).model.likelihood) is Poissonish
    with pytest.raises(TypeError, match="Likelihood subclass"):
        pp.io.register_likelihood(dict, lambda lik: {})
    with pytest.raises(ValueError, match="taken"):
        pp.io.register_likelihood(Poissonish, lambda lik: {}, name="Gaussian")


def test_an_unregistered_guide_class_cannot_be_saved(tmp_path):
    model = small_model()
    guide = pyro.infer.autoguide.AutoLaplaceApproximation(model)
    with pytest.raises(TypeError, match="not registered"):
        pp.save(tmp_path / "m.pt", model, guide)


# -- what a file must refuse ---------------------------------------------------------------------------------
def test_a_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    torch.save({"format": FORMAT, "version": 1, "meta": "{}", "evil": Boom()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="without running code"):
        pp.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned.txt").exists() and not os.path.exists("pwned.txt")


def test_other_files_and_newer_versions_are_refused(tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pyro_prune posterior"):
        pp.load(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a pyro_prune file"):
        pp.load(tmp_path / "text.pt")
    torch.save({"format": FORMAT, "version": 99, "meta": "{}"}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="version 99"):
        pp.load(tmp_path / "new.pt")
    with pytest.raises(FileNotFoundError):
        pp.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "kwargs, err",
    [({"metadata": {"f": lambda: 0}}, ValueError), ({"metadata": [1]}, TypeError), ({"extra": {"a": 1}}, TypeError),
     ({"history": {}}, TypeError), ({"pruned": 3}, TypeError), ({"rng": 1}, TypeError)],
)  # fmt: skip
def test_save_rejects_bad_arguments_and_keeps_the_old_file(kwargs, err, tmp_path):
    model = small_model()
    pp.save(tmp_path / "m.pt", model)
    before = (tmp_path / "m.pt").read_bytes()
    with pytest.raises(err):
        pp.save(tmp_path / "m.pt", model, **kwargs)
    assert (tmp_path / "m.pt").read_bytes() == before and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(TypeError, match="BayesianModel"):
        pp.save(tmp_path / "m.pt", nn.Linear(2, 2))


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    model = small_model()
    pp.save(tmp_path / "m.pt", model)
    before = (tmp_path / "m.pt").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        pp.save(tmp_path / "m.pt", model, metadata={"new": 1})
    assert (tmp_path / "m.pt").read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_save_and_load_leave_the_objects_and_the_generator_alone(tmp_path):
    model = small_model()
    guide = pp.AutoSparseVD(model)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    pp.fit(model, guide, (x, y), epochs=2, progress=False)
    state = pickle.dumps((model.state_dict(), guide.state_dict()))
    rng = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        pp.save(tmp_path / "m.pt", model, guide)
        s = pp.load(tmp_path / "m.pt")
    assert torch.equal(torch.get_rng_state(), rng)
    assert pickle.dumps((model.state_dict(), guide.state_dict())) == state
    assert s.model is not model and s.guide is not guide
    assert set(dict(s.guide.named_parameters())) == set(dict(guide.named_parameters()))
