"""The fused path's flat parameters (FlatLayout), its one-call KL, and the mean-field Gaussian guide it trains.

Each fused objective is compared to Pyro's ``TraceMeanField_ELBO`` on the same noise draws (value and gradient),
and the flat KL to the per-site sum of registered KLs.
"""

import copy
import pickle

import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

import pyro_prune as pp
from pyro_prune.fused import fused_loss
from pyro_prune.guides.base import flat_normal_kl
from pyro_prune.guides.mean_field import AutoMeanFieldNormal
from pyro_prune.model import layers
from pyro_prune.model.layers import local_reparameterization
from tests.helpers import assert_close

PRIORS = {"normal": lambda: dist.Normal(torch.tensor(0.0, dtype=torch.float64), 0.7), "log_uniform": pp.LogUniform}


def problem(prior, bias=True, n=24):
    x = torch.randn(n, 4, dtype=torch.float64)
    y = (x[:, 0] - x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(4, 6, bias=bias), nn.Tanh(), nn.Linear(6, 2, bias=bias)).double()
    return pp.bayesianize(net, prior(), pp.Categorical(n)), x, y


def guide_for(kind, model, x, y):
    guide = (
        AutoMeanFieldNormal(model, init_scale=0.3) if kind == "normal" else pp.AutoSparseVD(model, init_log_sigma2=-3.0)
    )
    guide(x, y)
    with torch.no_grad():  # move the means off the prior's mean so that every term of the KL matters
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return guide


def per_site_kl(guide, model):
    """The KL as Pyro computes it: the registered KL of each site's q against its prior, summed."""
    return sum(kl_divergence(guide.site_distribution(n), model.prior(n)).sum() for n in model.sites)


@pytest.mark.parametrize("kind", sorted(PRIORS))
def test_flat_kl_equals_the_per_site_registered_kls_in_value_and_gradient(kind):
    model, x, y = problem(PRIORS[kind])
    guide = guide_for(kind, model, x, y)
    expected = per_site_kl(guide, model)
    grads = torch.autograd.grad(expected, list(guide.parameters()))
    layout = guide.flat_layout()
    try:
        kl = guide.total_kl()
        names = list(model.sites)
        # the flat path was taken: the KL is a function of the flat leaf, not of the per-site parameters
        direct = flat_normal_kl(layout, [guide._params(n)[0] for n in names], [guide._params(n)[1] for n in names],
                                lambda: [model.prior(n) for n in names])  # fmt: skip
        assert direct is not None and kl.grad_fn is not None
        assert_close(kl.detach(), expected.detach(), rtol=1e-10)
        kl.backward()
        for p, g in zip(guide.parameters(), grads):
            assert_close(p.grad, g, rtol=1e-8, atol=1e-12)  # the per-site views of the flat gradient buffer
    finally:
        guide.release_layout()


def test_flat_layout_views_one_buffer_and_release_gives_each_parameter_its_storage():
    model, x, y = problem(PRIORS["normal"])
    guide = guide_for("normal", model, x, y)
    before = {k: v.clone() for k, v in guide.state_dict().items() if torch.is_tensor(v)}
    layout = guide.flat_layout()
    (leaf,) = layout.leaves.values()
    params = [p for _, p in guide._flat_order()]
    assert leaf.numel() == sum(p.numel() for p in params)
    assert all(p.untyped_storage().data_ptr() == leaf.untyped_storage().data_ptr() for p in params)
    with torch.no_grad():
        leaf.add_(1.0)  # an optimizer step on the leaf moves every site
    assert all(torch.equal(p, before[k] + 1.0) for k, p in guide.state_dict().items() if k in before)
    guide.release_layout()
    ptrs = {p.untyped_storage().data_ptr() for p in params}
    assert len(ptrs) == len(params) and all(p.grad is None for p in params)
    assert guide.active_layout() is None
    assert all(torch.equal(p, before[k] + 1.0) for k, p in guide.state_dict().items() if k in before)


@pytest.mark.parametrize("kind", sorted(PRIORS))
def test_fused_objective_equals_trace_mean_field_elbo_on_the_same_draws(kind, monkeypatch):
    """Same noise for both: Pyro's TraceMeanField_ELBO (layers under local reparameterization, weights drawn by the
    guide and unused) and the fused loss under the flat layout agree in value and in every gradient."""
    model, x, y = problem(PRIORS[kind], bias=False)  # a sampled bias would enter Pyro's outputs, not the fused ones
    guide = guide_for(kind, model, x, y)
    gen = torch.Generator()
    monkeypatch.setattr(
        layers, "_noise_like", lambda mean, *_: torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
    )
    gen.manual_seed(5)
    with local_reparameterization(guide):
        pyro_loss = TraceMeanField_ELBO(max_plate_nesting=1).loss_and_grads(model, guide, x, y)
    pyro_grads = [p.grad.clone() for p in guide.parameters()]
    for p in guide.parameters():
        p.grad = None
    layout = guide.flat_layout()
    try:
        gen.manual_seed(5)
        with guide.fast_params():
            loss, _ = fused_loss(model, guide, x, y, 1.0)
        loss.backward()
        assert_close(loss.detach(), torch.tensor(pyro_loss, dtype=torch.float64), rtol=1e-10)
        for p, g in zip(guide.parameters(), pyro_grads):
            assert_close(p.grad, g, rtol=1e-8, atol=1e-10)
        assert_close(next(iter(layout.leaves.values())).grad.sum(), sum(g.sum() for g in pyro_grads), rtol=1e-8)
    finally:
        guide.release_layout()


def test_mean_field_normal_trains_on_the_fused_path_and_stays_durable():
    torch.manual_seed(0)
    model, x, y = problem(PRIORS["normal"], n=64)
    guide = AutoMeanFieldNormal(model, init_scale=0.05)
    assert isinstance(guide, pp.guides.LocalReparamGuide)
    h = pp.fit(model, guide, (x, y), epochs=60, lr=3e-2, progress=False)
    assert h.state.path == "fused" and h["loss"][-1] < 0.6 * h["loss"][0]
    assert_close(torch.tensor(h["kl"][-1]), per_site_kl(guide, model).detach(), rtol=1e-6)
    # after fit every parameter owns its storage again: copies and pickles hold one site each
    params = list(guide.parameters())
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    assert all(p.untyped_storage().nbytes() == p.numel() * p.element_size() for p in params)
    fresh = AutoMeanFieldNormal(model)
    fresh.load_state_dict(copy.deepcopy(guide.state_dict()))
    assert_close(fresh.median()["2.weight"], guide.median()["2.weight"])
    clone = pickle.loads(pickle.dumps(guide))
    assert_close(clone.quantiles([0.9])["0.weight"], guide.quantiles([0.9])["0.weight"])
    probs = pp.predict(model, guide, x, num_samples=10).probs
    assert float((probs.argmax(-1) == y).double().mean()) > 0.8


def test_mean_field_normal_checks_init_scale():
    model, x, y = problem(PRIORS["normal"])
    with pytest.raises(ValueError, match="init_scale"):
        AutoMeanFieldNormal(model, init_scale=0.0)
    with pytest.raises(TypeError, match="init_scale"):
        AutoMeanFieldNormal(model, init_scale="0.1")


def test_a_non_finite_gradient_in_the_flat_buffer_names_its_site():
    model, x, y = problem(PRIORS["log_uniform"], n=32)
    guide = pp.AutoSparseVD(model)
    guide(x, y)
    target = guide.log_sigma2.__getattr__("2").weight_unconstrained
    hook = target.register_hook(lambda g: g * float("nan"))
    with pytest.raises(pp.NonFiniteError) as info:
        pp.fit(model, guide, (x, y), epochs=1, progress=False)
    hook.remove()
    assert "log_sigma2.2.weight" in info.value.cause
    assert all(p.grad is None for p in guide.parameters()) and guide.active_layout() is None
