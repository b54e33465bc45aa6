"""Isolation by construction (issue 12, point 1): every guide of the library, and ``BayesianModel`` itself, keeps its
parameters on itself, whatever ``pyro.settings`` ``module_local_params`` says.

For each guide class, a guide A is trained (or fitted) and its predictions recorded (``pp.predict``, fixed seed);
then a guide B is built and trained -- of the same class on a model of the *same* network (the worst case: the
same parameter names), with and without ``pyro.clear_param_store()`` between them, with the global flag off and on,
and of another class.  A's predictions must be bit-identical afterwards, and B must start from its own network's
weights, not from A's posterior (before the fix, B started from A's trained values and A's probabilities moved by
up to 0.9).  A BatchNorm model checks the model's own point estimates, and Pyro's ``AutoNormal`` keeps Pyro's
semantics (shared store: documented).
"""

from __future__ import annotations

import contextlib
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune import subnet as sn
from pyro_prune.model.local_params import has_local_params
from tests.helpers import assert_close

N = 64
GUIDES = ["sparse_vd", "group_log_uniform", "group_horseshoe", "subnetwork", "laplace_kron"]


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def network(seed: int, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    mid = [nn.BatchNorm1d(6)] if batchnorm else []
    return nn.Sequential(nn.Linear(4, 6), *mid, nn.Tanh(), nn.Linear(6, 3))


def prior_of(name: str):
    if name == "group_log_uniform":
        return pp.GroupPrior("log-uniform")
    if name == "group_horseshoe":
        return pp.GroupPrior("horseshoe", tau0=1.0)
    return dist.Normal(0.0, 1.0)


def build(name: str, net: nn.Module, train_epochs: int, lr: float = 0.05, tau: float = 1.0):
    """``(model, guide)`` of kind ``name`` on ``net``, trained ``train_epochs`` full-batch steps (Laplace: fitted
    with prior precision ``tau``)."""
    x, y = data()
    model = pp.bayesianize(net, prior_of(name), pp.Categorical(dataset_size=N))
    if name == "laplace_kron":
        return model, pp.laplace_guide(model, (x, y), "kron", prior_precision=tau)
    if name == "subnetwork":
        guide = pp.AutoSubnetwork(model, sn.LargestMagnitude(12))
    elif name == "sparse_vd":
        guide = pp.AutoSparseVD(model)
    else:
        guide = pp.AutoGroupSparse(model)
    if train_epochs:
        pp.fit(model, guide, (x, y), epochs=train_epochs, lr=lr, progress=False)
    return model, guide


def predictions(model, guide) -> torch.Tensor:
    x, _ = data(1)
    pyro.set_rng_seed(123)
    return pp.predict(model, guide, x, num_samples=8).probs


def start_of(model, guide) -> dict:
    """The guide's posterior means right after setup (``guide(x, y)`` once, no training)."""
    x, y = data()
    guide(x, y)
    return {k: m.loc for k, m in pp.marginals(guide).items()}


@contextlib.contextmanager
def flag(local: bool):
    with pyro.settings.context(module_local_params=local):
        yield


@pytest.mark.parametrize("local", [False, True], ids=["global-flag", "local-flag"])
@pytest.mark.parametrize("clear", [False, True], ids=["no-clear", "clear"])
@pytest.mark.parametrize("name", GUIDES)
def test_a_second_guide_of_the_same_class_on_the_same_network_shares_nothing(name, clear, local):
    with flag(local):
        model_a, guide_a = build(name, network(0), train_epochs=20)
        before = predictions(model_a, guide_a)
        assert has_local_params(guide_a) and has_local_params(model_a)
        if clear:
            pyro.clear_param_store()
        model_b, guide_b = build(name, network(0), train_epochs=0, tau=20.0)
        if name != "laplace_kron":  # B starts at its own network's weights, not at A's trained posterior
            start = start_of(model_b, guide_b)
            init = model_b.initial_weights()
            trained = {k: m.loc for k, m in pp.marginals(guide_a).items()}
            for k in model_b.sites:
                assert_close(start[k], init[k], rtol=1e-5, atol=1e-6, msg=f"{name}: B's start at {k}")
            assert any(float((trained[k] - init[k]).abs().max()) > 1e-3 for k in model_b.sites)  # A did move
            pp.fit(model_b, guide_b, data(), epochs=30, lr=0.1, progress=False)
        after = predictions(model_a, guide_a)
        assert torch.equal(before, after), f"{name}: A's predictions moved by {float((before - after).abs().max())}"
        assert not torch.equal(predictions(model_b, guide_b), before)
        assert len(pyro.get_param_store().keys()) == 0  # nothing of ours is left in the global store


@pytest.mark.parametrize("local", [False, True], ids=["global-flag", "local-flag"])
@pytest.mark.parametrize("order", ["forward", "backward"])
def test_guides_of_different_classes_in_either_order_share_nothing(order, local):
    names = GUIDES if order == "forward" else GUIDES[::-1]
    built, before = [], []
    with flag(local):
        check_in_turn(names, built, before)


def check_in_turn(names, built, before):
    """Build, train, evaluate and prune each guide in turn; after each, every earlier guide predicts as before."""
    for i, name in enumerate(names):
        model, guide = build(name, network(i % 2), train_epochs=10)
        built.append((model, guide))
        before.append(predictions(model, guide))
        # every earlier guide is untouched by this one (and by pruning and evaluating it)
        pp.evaluate(model, guide, data(), num_samples=4)
        if name != "laplace_kron":
            pp.prune(model, guide, pp.rules.Sparsity(0.5))
        for (m, g), p in zip(built, before):
            assert torch.equal(predictions(m, g), p)


def test_model_point_estimates_stay_on_the_model_in_both_flag_settings():
    """Two BatchNorm models of one network: training the second's BatchNorm affine parameters (AutoSparseVD fits
    them with the weights) leaves the first's BatchNorm, and its predictions, untouched."""
    for local in (False, True):
        with flag(local):
            model_a, guide_a = build("sparse_vd", network(0, batchnorm=True), train_epochs=5)
            bn_a = {k: v.clone() for k, v in model_a.net[1].state_dict().items()}
            before = predictions(model_a, guide_a)
            model_b, guide_b = build("sparse_vd", network(0, batchnorm=True), train_epochs=30, lr=0.2)
            assert not torch.equal(model_b.net[1].weight, model_a.net[1].weight)
            for k, v in model_a.net[1].state_dict().items():
                assert torch.equal(v, bn_a[k]), k
            assert torch.equal(predictions(model_a, guide_a), before)
        pyro.clear_param_store()


def test_pyro_autonormal_keeps_pyro_semantics_beside_our_guides():
    """Pyro's AutoNormal still lives in the global store (documented hazard): our guides neither read nor clear it."""
    model_a = pp.bayesianize(network(0), dist.Normal(0.0, 1.0), pp.Categorical(dataset_size=N))
    auto = AutoNormal(model_a)
    pp.fit(model_a, auto, data(), epochs=5, lr=0.05, progress=False)
    names = set(pyro.get_param_store().keys())
    assert names and all(n.startswith("AutoNormal.") for n in names)
    before = predictions(model_a, auto)
    for name in ("sparse_vd", "subnetwork", "laplace_kron"):
        build(name, network(0), train_epochs=5)
    assert set(pyro.get_param_store().keys()) == names
    assert torch.equal(predictions(model_a, auto), before)


def test_a_shared_store_hazard_of_pyro_autonormal_is_detected_and_warned():
    """Two AutoNormals of one name: using the first after the second wrote the global store warns (the first would
    read the second's values); a single AutoNormal, and Pyro's local mode, do not warn."""
    model_a = pp.bayesianize(network(0), dist.Normal(0.0, 1.0), pp.Categorical(dataset_size=N))
    auto_a = AutoNormal(model_a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pp.fit(model_a, auto_a, data(), epochs=2, progress=False)
        predictions(model_a, auto_a)
    pyro.clear_param_store()  # as the README used to advise: it does not protect auto_a
    model_b = pp.bayesianize(network(1), dist.Normal(0.0, 1.0), pp.Categorical(dataset_size=N))
    pp.fit(model_b, AutoNormal(model_b), data(), epochs=2, progress=False)
    with pytest.warns(UserWarning, match="global param store.*another guide of the same name"):
        predictions(model_a, auto_a)
    pyro.clear_param_store()
    with flag(True), warnings.catch_warnings():
        warnings.simplefilter("error")
        model_c = pp.bayesianize(network(0), dist.Normal(0.0, 1.0), pp.Categorical(dataset_size=N))
        auto_c = AutoNormal(model_c)
        pp.fit(model_c, auto_c, data(), epochs=2, progress=False)
        pp.fit(model_b, AutoNormal(model_b), data(), epochs=2, progress=False)
        predictions(model_c, auto_c)
