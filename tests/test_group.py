"""Group scale-mixture priors (pyro_prune.model.group_prior) and AutoGroupSparse (pyro_prune.guides.group_sparse)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro import poutine

import pyro_prune as pp
from pyro_prune.guides.scale_mixture import scale_mixture_quantiles
from pyro_prune.infer import kl_term
from pyro_prune.model.layers import local_reparameterization
from tests.helpers import assert_close

KINDS = ["log-uniform", "horseshoe"]


def mlp(d_in=6, hidden=5, out=3):
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, out))


def cnn():
    return nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 2)
    )


def relevant_inputs_problem(n=256, d=8):
    x = torch.randn(n, d)
    y = (x[:, 0] - x[:, 1] + 0.5 * x[:, 2] > 0).long()
    return x, y


# -- model side ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_group_sites_and_shapes(kind):
    model = pp.bayesianize(mlp(), pp.GroupPrior(kind, tau0=0.1), pp.Categorical(dataset_size=10))
    assert set(model.sites) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert model.group_sites["0"].num_groups == 6 and model.group_sites["0"].axis == 1
    assert model.group_sites["2"].num_groups == 5
    per_layer = 1 if kind == "log-uniform" else 4
    assert len(model.scale_sites) == 2 * per_layer
    if kind == "log-uniform":  # the improper p(z) ∝ 1/|z| cannot be sampled: condition on chosen scales
        given = {"0.weight_scale": torch.rand(6) + 0.5, "2.weight_scale": -(torch.rand(5) + 0.5)}
        tr = poutine.trace(poutine.condition(model, data=given)).get_trace(torch.randn(7, 6))
    else:
        tr = poutine.trace(model).get_trace(torch.randn(7, 6))
    # every site of both branches: scale sites (G,) (a horseshoe's global factors (1,)), weights and biases their shape
    for info in model.group_sites.values():
        for sfx, name in info.scale_sites.items():
            expected = (1,) if sfx.startswith("global") else (info.num_groups,)
            assert tr.nodes[name]["value"].shape == expected, (name, tr.nodes[name]["value"].shape)
            assert tr.nodes[name]["fn"].event_shape == expected, name
        for name in (info.weight, info.bias):
            assert tr.nodes[name]["fn"].event_shape == model.sites[name].shape, name
            assert tr.nodes[name]["value"].shape == model.sites[name].shape, name
        # p(w | z) = N(0, z^2) with z per input unit (column): z = scale (log-uniform), sqrt(a b a_s b_s) (horseshoe)
        z = model.group_prior.group_scale({sfx: tr.nodes[n]["value"] for sfx, n in info.scale_sites.items()})
        if kind == "horseshoe":
            vals = {k: tr.nodes[f"{info.weight}_{k}"]["value"] for k in ("scale_a", "scale_b", "global_a", "global_b")}
            assert_close(z, (vals["scale_a"] * vals["scale_b"] * vals["global_a"] * vals["global_b"]).sqrt())
        else:
            assert_close(z, given[info.weight + "_scale"])
        w_shape = model.sites[info.weight].shape
        assert_close(tr.nodes[info.weight]["fn"].base_dist.scale, z.abs().expand(w_shape))


def test_conv_groups_are_output_channels():
    model = pp.bayesianize(cnn(), pp.GroupPrior("horseshoe"), pp.Categorical(dataset_size=10))
    assert model.group_sites["0"].axis == 0 and model.group_sites["0"].num_groups == 4
    assert model.group_sites["2"].num_groups == 3
    assert model.group_sites["5"].axis == 1 and model.group_sites["5"].num_groups == 18
    with pyro.plate("particles", 3, dim=-2):
        tr = poutine.trace(model).get_trace(torch.randn(4, 2, 8))
    assert tr.nodes["_RETURN"]["value"].shape == (3, 4, 2)


def test_bad_group_specifications():
    with pytest.raises(ValueError, match="kind"):
        pp.GroupPrior("laplace")
    for tau0 in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="tau0"):
            pp.GroupPrior("horseshoe", tau0=tau0)
    with pytest.raises(ValueError, match="groups"):
        pp.GroupPrior("horseshoe", groups="weight")
    with pytest.raises(TypeError, match="bias"):
        pp.GroupPrior("horseshoe", bias=1.0)
    grouped = nn.Sequential(nn.Conv1d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="grouped convolutions"):
        pp.bayesianize(grouped, pp.GroupPrior(), pp.Categorical(dataset_size=10))
    plain = pp.bayesianize(mlp(), pp.LogUniform(), pp.Categorical(dataset_size=10))
    with pytest.raises(ValueError, match="GroupPrior"):
        pp.AutoGroupSparse(plain)
    model = pp.bayesianize(mlp(), pp.GroupPrior("log-uniform"), pp.Categorical(dataset_size=10))
    with pytest.raises(ValueError, match="does not match"):
        pp.AutoGroupSparse(model, prior="horseshoe")
    with pytest.raises(ValueError, match="init_log_sigma2"):
        pp.AutoGroupSparse(model, init_log_sigma2=math.nan)
    with pytest.raises(TypeError, match="local_reparameterization"):
        pp.AutoGroupSparse(model, local_reparameterization="yes")
    with pytest.raises(TypeError, match="BayesianModel"):
        pp.AutoGroupSparse(mlp())


# -- guide ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("net_fn, x_shape", [(mlp, (9, 6)), (cnn, (9, 2, 8))])
def test_marginal_shapes(kind, net_fn, x_shape):
    model = pp.bayesianize(net_fn(), pp.GroupPrior(kind), pp.Categorical(dataset_size=9))
    guide = pp.AutoGroupSparse(model)
    x, y = torch.randn(x_shape), torch.randint(0, 2, (9,))
    values = guide(x, y)
    assert set(values) == set(model.sites) | set(model.scale_sites)
    margs = guide.marginals()
    assert set(margs) == set(model.sites)
    for name, info in model.sites.items():
        m = margs[name]
        assert m.loc.shape == m.scale.shape == info.shape
        assert bool((m.scale > 0).all())
        if info.param == "weight":
            g = m.group
            assert isinstance(g, pp.GroupMarginal)
            n = model.group_sites[info.module].num_groups
            for t in (g.log_alpha, g.scale_mean, g.scale_std, g.log_scale_mean):
                assert t.shape == (n,)
    med = guide.median()
    assert set(med) == set(values)
    q = guide.quantiles([0.1, 0.5, 0.9])
    assert q["0.weight"].shape == (3,) + model.sites["0.weight"].shape
    # initialization: E[w] reproduces the network's own weights
    init = model.initial_weights()
    for name in model.sites:
        assert_close(margs[name].loc, init[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_kl_equals_trace_mean_field_kl(kind):
    model = pp.bayesianize(mlp(), pp.GroupPrior(kind, tau0=0.3), pp.Categorical(dataset_size=20))
    guide = pp.AutoGroupSparse(model, init_scale_log_alpha=-2.0, init_log_sigma2=-3.0)
    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    guide(x, y)
    with torch.no_grad():
        for p in guide.parameters():  # move away from the initialization
            p.add_(0.1 * torch.randn_like(p))
    expected = kl_term(model, guide, x, y)  # TraceMeanField_ELBO's analytic (registered) KLs
    assert_close(torch.tensor(float(guide.total_kl().detach())), torch.tensor(expected), rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_local_reparameterization_matches_sampled_weights(kind):
    """Pre-activation mean and variance of the fused path equal those of whole sampled networks (MC)."""
    net = nn.Sequential(nn.Linear(4, 3))
    model = pp.bayesianize(net, pp.GroupPrior(kind), pp.Gaussian(dataset_size=5, scale=1.0))
    guide = pp.AutoGroupSparse(model, init_scale_log_alpha=-1.0, init_log_sigma2=-1.0)
    x = torch.randn(5, 4)
    guide(x, None)
    S = 20000
    with torch.no_grad():
        xs = x.expand(S, 5, 4).reshape(S * 5, 4)
        with local_reparameterization(guide, sample_weights=False):
            lrt = model.run_net(xs).reshape(S, 5, 3)
        with pyro.plate("s", S, dim=-2):
            tr = poutine.trace(guide).get_trace(x, None)
            sampled = poutine.replay(model.run_net, tr)(x)
    assert sampled.shape == (S, 5, 3)
    # tolerance: 4 MC standard errors of the mean; 10 % on the variance (S = 20000)
    se = sampled.std(0) / math.sqrt(S)
    assert bool(((lrt.mean(0) - sampled.mean(0)).abs() < 4 * se * math.sqrt(2) + 1e-4).all())
    assert_close(lrt.var(0), sampled.var(0), rtol=0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_prunes_exactly_the_irrelevant_inputs(kind):
    x, y = relevant_inputs_problem()
    net = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    model = pp.bayesianize(net, pp.GroupPrior(kind, tau0=1e-2), pp.Categorical(dataset_size=len(x)))
    guide = pp.AutoGroupSparse(model)
    pp.fit(model, guide, (x, y), epochs=300, lr=3e-2, progress=False)
    # the default rule reads each prior's criterion over the weights into the hidden units the next layer keeps:
    # log-uniform, the pooled noise-to-signal ratio < 3; horseshoe, the norm of E w_g within a factor 10 of the largest
    keep = pp.rules.GroupLogAlpha().group_masks(guide.marginals())["0.weight"]
    assert keep.tolist() == [True] * 3 + [False] * 5
    acc = (pp.predict(model, guide, x, num_samples=20).labels == y).float().mean()
    assert acc > 0.95


def test_renyi_particles_and_predict_parallel():
    x, y = relevant_inputs_problem(64)
    model = pp.bayesianize(mlp(8, 4, 2), pp.GroupPrior("horseshoe"), pp.Categorical(dataset_size=64))
    guide = pp.AutoGroupSparse(model)
    hist = pp.fit(model, guide, (x, y), epochs=3, alpha=0.5, num_particles=4, progress=False)
    assert all(math.isfinite(r["loss"]) for r in hist.records)
    pred = pp.predict(model, guide, x[:10], num_samples=7)
    assert pred.samples.shape == (7, 10, 2)


def test_float64_and_kl_warmup():
    x, y = relevant_inputs_problem(64)
    model = pp.bayesianize(mlp(8, 4, 2), pp.GroupPrior("log-uniform"), pp.Categorical(dataset_size=64))
    model.to(torch.float64)
    guide = pp.AutoGroupSparse(model)
    pp.fit(model, guide, (x.double(), y), epochs=4, kl_warmup=2, progress=False)
    m = guide.marginals()["0.weight"]
    assert m.loc.dtype == torch.float64 and m.group.log_alpha.dtype == torch.float64
    assert pp.predict(model, guide, x[:5].double(), num_samples=3).samples.dtype == torch.float64


def test_bias_prior_is_used():
    prior = pp.GroupPrior("log-uniform", bias=dist.Normal(0.0, 10.0))
    model = pp.bayesianize(mlp(), prior, pp.Categorical(dataset_size=10))
    assert_close(model.prior("0.bias").base_dist.scale, torch.full((5,), 10.0))


@pytest.mark.parametrize("kind", ["gaussian-crossing-zero", "log-normal"])
def test_scale_mixture_quantiles_against_many_draws(kind):
    """Quantiles of w = z w~ (w~ ~ N(mu, sd^2)): the empirical CDF of 400,000 draws at each computed quantile is its
    level (5 binomial s.e. + 0.002); the mean and the moment-matched Gaussian quantiles are visibly off."""
    g = torch.Generator().manual_seed(0)
    loc = torch.tensor([1.0, -0.5, 0.2, 2.0], dtype=torch.float64)
    sd = torch.tensor([0.1, 0.3, 1.0, 0.05], dtype=torch.float64)
    n = 400_000
    eps = torch.randn(n, 1, generator=g, dtype=torch.float64)
    log_normal = kind == "log-normal"
    if log_normal:
        z_loc = torch.tensor([-1.0, 0.0, 0.5, -0.2], dtype=torch.float64)
        z_scale = torch.tensor([1.0, 0.8, 0.3, 1.2], dtype=torch.float64)
        z = (z_loc + z_scale * eps).exp()
    else:
        z_loc = torch.tensor([0.3, 1.0, 0.1, 0.5], dtype=torch.float64)
        z_scale = torch.tensor([0.4, 0.2, 0.3, 0.6], dtype=torch.float64)
        z = z_loc + z_scale * eps
    w = z * (loc + sd * torch.randn(n, 4, generator=g, dtype=torch.float64))
    levels = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    q = scale_mixture_quantiles(loc, sd, z_loc, z_scale, log_normal, levels)
    assert q.shape == (5, 4) and bool((q[1:] >= q[:-1]).all())
    for level, qs in zip(levels.tolist(), q):
        cdf = (w <= qs).double().mean(0)
        tol = 5 * (level * (1 - level) / n) ** 0.5 + 0.002
        assert_close(cdf, torch.full_like(cdf, level), rtol=0.0, atol=tol, msg=f"CDF at q{level}")
    if kind == "log-normal":  # skewed where log z is spread: the median is far from the mean
        assert bool(((q[2] - w.mean(0)).abs() > 0.05 * w.std(0))[z_scale >= 0.8].all())
