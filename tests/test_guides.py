"""Guides: the marginals() contract over our guides and Pyro's, AutoSparseVD's parameters, summaries and objective."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal

import pyro_prune as pp
from pyro_prune.fused import fused_loss
from pyro_prune.model.layers import local_reparameterization
from tests.helpers import assert_close


def problem(n=30, dtype=torch.float32):
    x = torch.randn(n, 3, dtype=dtype)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).to(dtype)
    model = pp.bayesianize(net, dist.Normal(torch.tensor(0.0, dtype=dtype), 1.0), pp.Categorical(n))
    return net, model, x, y


GUIDES = [pp.AutoSparseVD, AutoNormal, AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal]


@pytest.mark.parametrize("guide_cls", GUIDES)
def test_marginals_shapes_for_every_guide(guide_cls):
    net, model, x, y = problem()
    guide = guide_cls(model)
    with pytest.raises(ValueError, match="not initialized"):
        pp.marginals(guide)
    pp.fit(model, guide, (x, y), epochs=2, lr=1e-2, progress=False)
    margs = pp.marginals(guide)
    assert list(margs) == list(model.sites)
    for name, m in margs.items():
        assert m.loc.shape == m.scale.shape == model.sites[name].shape
        assert (m.scale >= 0).all()
        assert m.log_alpha.shape == m.loc.shape
    if guide_cls is AutoDelta:
        assert all((m.scale == 0).all() for m in margs.values())


def test_marginals_values_autonormal_and_sparse_vd():
    net, model, x, y = problem()
    g = AutoNormal(model, init_scale=0.05)
    g(x, y)
    m = pp.marginals(g)["0.weight"]
    loc, scale = g._get_loc_and_scale("0.weight")
    assert_close(m.loc, loc.detach())
    assert_close(m.scale, scale.detach())
    pyro.clear_param_store()
    vd = pp.AutoSparseVD(model, init_log_sigma2=-6.0)
    vd(x, y)
    m = vd.marginals()["0.weight"]
    assert_close(m.loc, net[0].weight.detach())  # default init: the network's own weights
    assert_close(m.scale, torch.full_like(m.scale, math.exp(-3.0)))
    expected_la = (-6.0 - (net[0].weight.detach() ** 2 + 1e-8).log()).clamp(-10, 10)
    assert_close(m.log_alpha, expected_la, rtol=1e-5, atol=1e-5)
    assert_close(vd.log_alpha()["0.weight"], expected_la, rtol=1e-5, atol=1e-5)


def test_marginals_rejects_guides_without_them():
    with pytest.raises(TypeError, match="no registered marginals"):
        pp.marginals(lambda x, y: None)


def test_sparse_vd_emits_normal_sites_median_quantiles():
    net, model, x, y = problem()
    vd = pp.AutoSparseVD(model, init_log_sigma2=-4.0)
    tr = pyro.poutine.trace(vd).get_trace(x, y)
    for name in model.sites:
        fn = tr.nodes[name]["fn"]
        assert isinstance(fn, dist.Independent) and isinstance(fn.base_dist, dist.Normal)
    med = vd.median()
    q = vd.quantiles([0.1587, 0.5, 0.8413])  # mean -+ one std
    assert_close(q["0.weight"][1], med["0.weight"], atol=1e-6)
    assert_close(q["0.weight"][2] - q["0.weight"][0], torch.full_like(med["0.weight"], 2 * math.exp(-2.0)), rtol=1e-3)
    with pytest.raises(ValueError, match="quantiles"):
        vd.quantiles([0.0, 0.5])


def test_sparse_vd_bad_arguments():
    net, model, x, y = problem()
    with pytest.raises(ValueError, match="init_log_sigma2"):
        pp.AutoSparseVD(model, init_log_sigma2=float("nan"))
    with pytest.raises(ValueError, match="log_alpha_clip"):
        pp.AutoSparseVD(model, log_alpha_clip=-1.0)
    with pytest.raises(TypeError, match="local_reparameterization"):
        pp.AutoSparseVD(model, local_reparameterization=1)
    with pytest.raises(TypeError, match="init_log_sigma2"):
        pp.AutoSparseVD(model, init_log_sigma2="-10")
    with pytest.raises(ValueError, match="log_alpha_clip"):
        pp.AutoSparseVD(model, log_alpha_clip=math.inf)


def test_fast_params_snapshot_is_the_guides_own_tensors_and_nests():
    net, model, x, y = problem()
    vd = pp.AutoSparseVD(model)
    with pytest.raises(ValueError, match="not initialized"):
        vd.fast_params()
    vd(x, y)
    slow = {name: vd._params(name) for name in model.sites}
    with vd.fast_params() as outer:
        assert len(outer) == 2 * len(model.sites)
        for name in model.sites:
            assert all(a is b for a, b in zip(vd._params(name), slow[name]))  # the same nn.Parameter objects
        with vd.fast_params() as inner:
            assert inner is not outer
        assert vd.__dict__["_pp_fast_params"] is outer  # the outer snapshot is restored
    assert vd.__dict__["_pp_fast_params"] is None
    assert isinstance(vd, pp.guides.LocalReparamGuide) and vd.uses_local_reparameterization


def test_sparse_vd_total_kl_needs_a_bayesian_model():
    def model(x):
        pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    vd = pp.AutoSparseVD(model)
    vd(torch.randn(2))
    assert vd.kl("w", dist.Normal(torch.zeros(3), 1.0).to_event(1)).shape == ()
    with pytest.raises(TypeError, match="BayesianModel"):
        vd.total_kl()


def test_init_from_pretrained_network():
    net, model, x, y = problem()
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    vd = pp.AutoSparseVD(model, init_loc_fn=pp.init_from(other))
    vd(x, y)
    assert_close(vd.median()["2.weight"], other[2].weight.detach())


def test_local_reparameterization_matches_weight_sampling_in_the_model():
    """Under local reparameterization the network's outputs have the mean and variance of sampled-weight outputs."""
    torch.manual_seed(0)
    net, model, x, y = problem(n=4, dtype=torch.float64)
    model = pp.bayesianize(
        nn.Sequential(nn.Linear(3, 2)).double(), dist.Normal(torch.tensor(0.0).double(), 1.0), pp.Categorical(4)
    )
    vd = pp.AutoSparseVD(model, init_log_sigma2=-2.0)
    vd(x, y)
    n = 4000
    with torch.no_grad(), local_reparameterization(vd, sample_weights=False):
        lrt = torch.stack([model.net(x) for _ in range(n)])
    with torch.no_grad():
        sampled = pyro.infer.Predictive(model, guide=vd, num_samples=n, parallel=True, return_sites=["_RETURN"])(x)[
            "_RETURN"
        ]
    assert lrt.shape == sampled.shape == (n, 4, 2)
    # standard errors: mean ~ sd/63, variance ~ 2.2 % relative
    assert_close(lrt.mean(0), sampled.mean(0), atol=0.05, rtol=0)
    assert_close(lrt.var(0), sampled.var(0), rtol=0.12, atol=1e-3)


def test_fused_objective_equals_trace_mean_field_elbo():
    """The fused loss is TraceMeanField_ELBO's estimator: identical KL, same expected data term."""
    torch.manual_seed(0)
    net, model, x, y = problem(dtype=torch.float64)
    vd = pp.AutoSparseVD(model, init_log_sigma2=-3.0)
    vd(x, y)
    with torch.no_grad():
        kl = float(vd.total_kl())
        assert_close(kl, pp.infer.kl_term(model, vd, x, y), rtol=1e-10)
        pyro_losses, fused_losses = [], []
        for _ in range(300):
            with local_reparameterization(vd):
                pyro_losses.append(TraceMeanField_ELBO(max_plate_nesting=1).loss(model, vd, x, y))
            fused_losses.append(float(fused_loss(model, vd, x, y, 1.0)[0]))
    a, b = torch.tensor(pyro_losses), torch.tensor(fused_losses)
    se = (a.var() / 300 + b.var() / 300).sqrt()
    assert abs(a.mean() - b.mean()) < 4 * se + 1e-9, (a.mean(), b.mean(), se)


def test_sparse_vd_trains_with_renyi_vectorized_particles():
    net, model, x, y = problem()
    vd = pp.AutoSparseVD(model)
    h = pp.fit(model, vd, (x, y), epochs=3, alpha=0.5, num_particles=4, progress=False)
    assert all(math.isfinite(r["loss"]) for r in h.records)


def test_fast_kl_equals_registered_kl_for_log_uniform_prior():
    x = torch.randn(10, 3)
    y = (x[:, 0] > 0).long()
    model = pp.bayesianize(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), pp.LogUniform(),
                           pp.Categorical(10))  # fmt: skip
    vd = pp.AutoSparseVD(model, init_log_sigma2=-5.0)
    vd(x, y)
    from pyro.distributions.kl import kl_divergence

    for name in model.sites:
        fast = vd.kl(name, model.prior(name))
        slow = kl_divergence(vd.site_distribution(name), model.prior(name))
        assert_close(fast, slow, rtol=1e-5)


def test_sparse_vd_fit_predict_prune_in_float64():
    net, model, x, y = problem(dtype=torch.float64)
    model = pp.bayesianize(net, pp.LogUniform(), pp.Categorical(30))
    vd = pp.AutoSparseVD(model)
    h = pp.fit(model, vd, (x, y), epochs=3, progress=False)
    assert math.isfinite(h["loss"][-1])
    assert vd.median()["0.weight"].dtype == torch.float64
    res = pp.prune(model, vd, pp.rules.LogAlpha(3.0))
    assert res.module[0].weight.dtype == torch.float64
    assert pp.predict(model, res.guide, x, num_samples=4).probs.dtype == torch.float64


@pytest.mark.parametrize("bad", [[0.0, 0.5], [0.5, 1.0], [[0.5]], [math.nan]])
def test_check_quantiles_shared_by_every_guide(bad):
    from pyro_prune._checks import check_quantiles

    assert check_quantiles([0.1, 0.9]).tolist() == pytest.approx([0.1, 0.9])
    with pytest.raises(ValueError, match="quantiles"):
        check_quantiles(bad)
