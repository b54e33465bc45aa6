"""Durable objects (issue 12, the object half of point 2): ``copy.deepcopy``, a pickle round trip, ``state_dict`` /
``load_state_dict`` into a freshly constructed model and guide, and ``.to(torch.float64)`` keep every guide of the
library whole, with the same predictions (bit-identical under a fixed seed; float64 within float32 round-off).

Guides: ``AutoSparseVD``, ``AutoGroupSparse`` with both group priors, ``AutoSubnetwork``, and ``laplace_guide`` with
``kron``, ``diag``, ``full`` and a ``full`` subnetwork.  The model has a BatchNorm layer (point estimates and
running statistics that must travel too), except for the group priors (which cover Linear layers only).
"""

from __future__ import annotations

import copy
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune import subnet as sn
from pyro_prune.model.bayesian_layers import BayesianLinear
from tests.helpers import assert_close

N = 64
GUIDES = ["sparse_vd", "group_log_uniform", "group_horseshoe", "subnetwork", "kron", "diag", "full", "full_subnet"]
COPIES = ["deepcopy", "pickle", "state_dict", "float64"]


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 4, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def make_model(name: str, seed: int = 0) -> pp.BayesianModel:
    torch.manual_seed(seed)
    group = name.startswith("group")
    mid = [] if group else [nn.BatchNorm1d(6)]
    net = nn.Sequential(nn.Linear(4, 6), *mid, nn.Tanh(), nn.Linear(6, 3))
    prior = {
        "group_log_uniform": pp.GroupPrior("log-uniform"),
        "group_horseshoe": pp.GroupPrior("horseshoe", tau0=1.0),
    }.get(name, dist.Normal(0.0, 1.0))
    return pp.bayesianize(net, prior, pp.Categorical(dataset_size=N))


def empty_guide(name: str, model: pp.BayesianModel):
    """A freshly constructed guide of kind ``name`` (untrained, Laplace without data), to load a state into."""
    if name == "sparse_vd":
        return pp.AutoSparseVD(model)
    if name.startswith("group"):
        return pp.AutoGroupSparse(model)
    if name == "subnetwork":
        return pp.AutoSubnetwork(model, sn.Random(5, seed=7))  # another subnetwork: the loaded one replaces it
    structure = "full" if name.startswith("full") else name
    return pp.LaplaceGuide(model, None, structure)


def trained(name: str):
    model = make_model(name)
    x, y = data()
    if name in ("kron", "diag", "full", "full_subnet"):
        subnet = sn.LargestMagnitude(10) if name == "full_subnet" else None
        structure = "full" if name.startswith("full") else name
        return model, pp.laplace_guide(model, (x, y), structure, prior_precision="marglik", subnet=subnet)
    guide = pp.AutoSubnetwork(model, sn.LargestMagnitude(12)) if name == "subnetwork" else empty_guide(name, model)
    pp.fit(model, guide, (x, y), epochs=8, lr=0.05, progress=False)
    return model, guide


def predictions(model, guide, dtype=torch.float32) -> torch.Tensor:
    x, _ = data(1)
    pyro.set_rng_seed(123)
    return pp.predict(model, guide, x.to(dtype), num_samples=8).probs


def copied(how: str, model, guide):
    if how == "deepcopy":
        return copy.deepcopy((model, guide))
    if how == "pickle":
        return pickle.loads(pickle.dumps((model, guide)))
    fresh_model = make_model(guide_name(guide), seed=99)  # other initial weights: everything must come from the state
    fresh_model.load_state_dict(model.state_dict())
    fresh = empty_guide(guide_name(guide), fresh_model)
    fresh.load_state_dict(guide.state_dict())
    return fresh_model, fresh


def tensors(state) -> list:
    """Every tensor of a (nested) state: parameters, buffers and those of the guides' extra state."""
    if torch.is_tensor(state):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in tensors(v)]
    return []


def guide_name(guide) -> str:
    return guide._pp_test_name


@pytest.fixture(scope="module")
def fitted():
    """``name -> (model, guide)``, trained once per module (the copies below never change the originals)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = trained(name)
            cache[name][1]._pp_test_name = name
        return cache[name]

    return get


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("name", GUIDES)
def test_copies_predict_like_the_original(name, how, fitted):
    model, guide = fitted(name)
    before = predictions(model, guide)
    if how == "float64":
        model2, guide2 = copy.deepcopy((model, guide))
        model2.to(torch.float64)
        guide2.to(torch.float64)
        assert all(t.dtype == torch.float64 for t in tensors(guide2.state_dict()) if t.is_floating_point())
        p64 = predictions(model2, guide2, torch.float64)  # float64 draws: another random stream than float32's
        assert p64.dtype == torch.float64 and bool(torch.isfinite(p64).all())
        m32, m64 = pp.marginals(guide), pp.marginals(guide2)
        for k, m in m32.items():
            assert m64[k].loc.dtype == torch.float64
            assert_close(m64[k].loc, m.loc.double(), rtol=1e-5, atol=1e-6, msg=f"{name}: {k} mean in float64")
            assert_close(m64[k].scale, m.scale.double(), rtol=1e-4, atol=1e-6, msg=f"{name}: {k} scale in float64")
        model2.to(torch.float32)
        guide2.to(torch.float32)
        assert torch.equal(predictions(model2, guide2), before)  # a float32 round trip is exact
        return
    model2, guide2 = copied(how, model, guide)
    assert type(model2.net[0]) is BayesianLinear
    assert guide2.model is not None and guide2.prototype_trace is not None
    assert torch.equal(predictions(model2, guide2), before), f"{name}/{how}"
    assert torch.equal(predictions(model, guide), before)  # the original is untouched (Pyro nulled its model)
    sd, sd2 = guide.state_dict(), guide2.state_dict()
    assert set(sd) == set(sd2)
    flat, flat2 = tensors(sd), tensors(sd2)
    assert len(flat) == len(flat2) and all(torch.equal(a, b) for a, b in zip(flat, flat2))


def test_model_alone_round_trips_and_keeps_its_priors():
    """deepcopy/pickle of a BayesianModel keep its Bayesian layers and priors (PyroModule's reduction made them
    plain PyroLinear, then '_pp_prior' failed); state_dict loads into a fresh model; .to(float64) moves the priors."""
    model = make_model("sparse_vd")
    for m in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(m.net[0]) is BayesianLinear and type(m.net[3]) is BayesianLinear
        assert_close(
            m.prior("0.weight").log_prob(torch.zeros(6, 4)), model.prior("0.weight").log_prob(torch.zeros(6, 4))
        )
        x, y = data()
        with pyro.poutine.trace() as tr:
            m(x, y)
        assert set(model.sites) <= set(tr.trace.nodes)
    fresh = make_model("sparse_vd", seed=5)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.net[1].running_var, model.net[1].running_var)
    m64 = copy.deepcopy(model).to(torch.float64)
    assert m64.prior("0.weight").log_prob(torch.zeros(6, 4, dtype=torch.float64)).dtype == torch.float64


def test_group_guide_pickles_and_a_fresh_guide_needs_a_recorded_setup():
    model, guide = trained("group_log_uniform")
    guide._pp_test_name = "group_log_uniform"
    g = pickle.loads(pickle.dumps(guide))  # a closure as init_loc_fn made this fail
    assert g.prototype_trace is not None
    state = guide.state_dict()
    state["_extra_state"] = {"example": None}
    with pytest.raises(ValueError, match="call guide"):
        pp.AutoGroupSparse(model).load_state_dict(state)


def test_laplace_state_dict_holds_the_curvature_and_rejects_another_structure():
    model, guide = trained("kron")
    extra = guide.state_dict()["_extra_state"]
    layer = guide.layer_names[0]
    kron = extra["posterior"]["precisions"][layer]
    assert kron["kind"] == "kron" and kron["vec_a"].shape == (5, 5)  # 4 inputs + the bias column
    assert torch.equal(extra["prior_precision"], guide.prior_precision)
    with pytest.raises(ValueError, match="structure='kron'"):
        pp.LaplaceGuide(model, None, "diag").load_state_dict(guide.state_dict())


def test_unpickled_autonormal_passes_the_guide_check():
    """Pyro drops an AutoGuide's model when pickling; predict's guide check accepts that (the sites still match)."""
    model = make_model("sparse_vd")
    guide = AutoNormal(model)
    pp.fit(model, guide, data(), epochs=2, progress=False)
    model2, guide2 = pickle.loads(pickle.dumps((model, guide)))
    pyro.clear_param_store()
    out = pp.predict(model2, guide2, data(1)[0], num_samples=3)
    assert out.probs.shape == (N, 3)
