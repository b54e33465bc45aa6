"""Subnetwork inference: the selection strategies of ``pp.subnet`` (index convention, counts, determinism, errors),
``AutoSubnetwork`` (exact conjugate posterior, fixed weights outside the subnetwork, Rényi particles, parallel
prediction, pruning) and the subnetwork Laplace sharing the same selections."""

import operator

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parameters_to_vector

import pyro_prune as pp
from pyro_prune import subnet as sn
from tests.helpers import assert_close

D = torch.float64


def regression(n=30, sigma=0.5, s0=1.0):
    """Bayesian linear regression y = x w + b + noise (known sigma), prior N(0, s0^2): model and exact posterior
    over the flat vector (w1, w2, b)."""
    torch.manual_seed(0)
    x = torch.randn(n, 2, dtype=D)
    y = x @ torch.tensor([1.0, -2.0], dtype=D) + 0.3 + sigma * torch.randn(n, dtype=D)
    xb = torch.cat([x, torch.ones(n, 1, dtype=D)], 1)
    prec = xb.T @ xb / sigma**2 + torch.eye(3, dtype=D) / s0**2
    cov = torch.linalg.inv(prec)
    mean = cov @ xb.T @ y / sigma**2
    net = nn.Sequential(nn.Linear(2, 1)).to(D)
    model = pp.bayesianize(net, dist.Normal(torch.tensor(0.0, dtype=D), s0), pp.Gaussian(n, scale=sigma))
    return model, x, y, mean, cov, prec


def classifier(dtype=D, n=40, bias=True):
    torch.manual_seed(0)
    x = torch.randn(n, 4, dtype=dtype)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    net = nn.Sequential(nn.Linear(4, 6, bias=bias), nn.Tanh(), nn.Linear(6, 5, bias=bias), nn.Tanh(),
                        nn.Linear(5, 3, bias=bias)).to(dtype)  # fmt: skip
    model = pp.bayesianize(net, dist.Normal(torch.tensor(0.0, dtype=dtype), 1.0), pp.Categorical(n))
    return net, model, x, y


def flat(values, model):
    return sn.flatten_sites(model, values)


# --------------------------------------------------------------------------------------------------
# exact conjugate posterior
# --------------------------------------------------------------------------------------------------
def test_vi_recovers_exact_linear_regression_posterior():
    """Every weight selected (LastLayer = the only layer): fit (ELBO, 128 vectorized particles, 400 full-batch
    steps, lr 0.05 decayed by 0.985 per step, seed 0 from conftest) reaches the exact posterior: mean and
    covariance within 2 % (relative Frobenius error)."""
    model, x, y, mean, cov, _ = regression()
    guide = pp.AutoSubnetwork(model, sn.LastLayer(), init_scale=0.1)
    assert guide.indices.tolist() == [0, 1, 2]
    opt = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.985})
    pp.fit(model, guide, (x, y), epochs=400, num_particles=128, optimizer=opt, progress=False)
    mu = flat(guide.median(), model)
    assert float((mu - mean).norm() / mean.norm()) <= 0.02
    assert float((guide.covariance() - cov).norm() / cov.norm()) <= 0.02
    post = guide.get_posterior()
    assert isinstance(post, dist.MultivariateNormal) and post.event_shape == (3,)
    m = guide.marginals()
    assert_close(flat({k: v.scale for k, v in m.items()}, model) ** 2, guide.covariance().diagonal(), rtol=1e-10)


def test_subnet_laplace_is_exact_linear_regression_posterior():
    """The subnetwork Laplace (structure='full') at the exact posterior mean: every weight selected gives the exact
    covariance; a subset S gives the inverse of the precision's S block (the others fixed)."""
    model, x, y, mean, cov, prec = regression()
    map_from = {"0.weight": mean[:2].reshape(1, 2), "0.bias": mean[2:]}
    for subnet in (sn.LastLayer(), torch.arange(3), {"0.weight": torch.ones(1, 2, dtype=torch.bool)}):
        g = pp.laplace_guide(model, (x, y), "full", map_from=map_from, prior_precision=1.0, subnet=subnet)
        idx = sn.resolve(model, subnet)
        assert_close(torch.linalg.inv(g.posteriors["full"].to_dense()),
                     torch.linalg.inv(prec[idx][:, idx]), rtol=1e-5, atol=1e-12)  # fmt: skip
        if len(idx) == 3:
            assert_close(torch.linalg.inv(g.posteriors["full"].to_dense()), cov, rtol=1e-5, atol=1e-12)
            assert_close(flat({k: v.scale for k, v in g.marginals().items()}, model) ** 2, cov.diagonal(), rtol=1e-5)
    # the strategy object goes through the same parser as indices and masks
    g1 = pp.laplace_guide(model, (x, y), "full", subnet=sn.Indices([0, 2]), prior_precision=1.0)
    g2 = pp.laplace_guide(model, (x, y), "full", subnet=torch.tensor([0, 2]), prior_precision=1.0)
    assert_close(g1.posteriors["full"].to_dense(), g2.posteriors["full"].to_dense(), rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# subset selected: the rest never moves
# --------------------------------------------------------------------------------------------------
def test_weights_outside_the_subnetwork_never_move():
    net, model, x, y = classifier()
    sel = sn.Random(12, seed=3)
    guide = pp.AutoSubnetwork(model, sel)
    idx = sel.select(model)
    init = flat(model.initial_weights(), model)
    outside = torch.ones_like(init, dtype=torch.bool)
    outside[idx] = False
    pp.fit(model, guide, (x, y), epochs=30, lr=1e-2, progress=False)
    after = flat(guide.median(), model)
    assert bool((after[outside] == init[outside]).all())
    assert not bool((after[idx] == init[idx]).all())  # the subnetwork did train
    scale = flat({k: m.scale for k, m in guide.marginals().items()}, model)
    assert bool((scale[outside] == 0).all()) and bool((scale[idx] > 0).all())
    # every draw keeps them at the MAP
    draws = pyro.infer.Predictive(guide, num_samples=5, parallel=True)(x)
    for k, info in model.sites.items():
        assert draws[k].shape == (5,) + tuple(info.shape)
    d = torch.stack([flat({k: draws[k][s] for k in model.sites}, model) for s in range(5)])
    assert bool((d[:, outside] == init[outside]).all())
    assert float(d[:, idx].std(0).min()) > 0
    # with train_rest the other weights are point estimates that train
    g2 = pp.AutoSubnetwork(model, sel, train_rest=True)
    pp.fit(model, g2, (x, y), epochs=30, lr=1e-2, progress=False)
    after2 = flat(g2.median(), model)
    assert not bool((after2[outside] == init[outside]).all())
    assert bool((flat({k: m.scale for k, m in g2.marginals().items()}, model)[outside] == 0).all())


# --------------------------------------------------------------------------------------------------
# index convention
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_index_convention_is_parameters_to_vector(bias):
    net, model, x, y = classifier(bias=bias)
    vec = parameters_to_vector(model.template().parameters())
    assert_close(flat(model.initial_weights(), model), vec, rtol=0)
    assert sn.num_weights(model) == vec.numel()
    idx = sn.LargestMagnitude(7).select(model)
    assert idx.tolist() == sorted(vec.abs().topk(7).indices.tolist())
    # masks <-> indices, and the masks address the same entries of the named parameters
    masks = sn.indices_to_masks(model, idx)
    params = dict(model.template().named_parameters())
    picked = torch.cat([params[k].detach()[masks[k]] for k in model.sites])
    assert_close(picked, vec[idx], rtol=0)
    assert sn.masks_to_indices(model, masks).tolist() == idx.tolist()
    # the guide's means are the same entries
    guide = pp.AutoSubnetwork(model, idx)
    guide(x, y)
    assert_close(guide.loc.detach(), vec[idx], rtol=0)


# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------
def test_strategies_counts_and_determinism():
    net, model, x, y = classifier()
    total = sn.num_weights(model)
    lap = pp.laplace_guide(model, (x, y), "diag")
    for s in (sn.LargestMagnitude(9), sn.Random(9, seed=1), sn.LargestVariance(9, lap)):
        idx = s.select(model)
        assert idx.dtype == torch.long and idx.numel() == 9 and idx.unique().numel() == 9
        assert bool((idx[1:] > idx[:-1]).all()) and 0 <= int(idx.min()) and int(idx.max()) < total
        assert s.select(model).tolist() == idx.tolist()  # deterministic
        assert sum(int(m.sum()) for m in s.masks(model).values()) == 9
    assert sn.Random(9, seed=1).select(model).tolist() != sn.Random(9, seed=2).select(model).tolist()
    assert sn.Random(total, seed=0).select(model).tolist() == list(range(total))
    last = sn.LastLayer().select(model)
    assert last.tolist() == list(range(total - 5 * 3 - 3, total))  # "4.weight" and "4.bias"


def test_largest_variance_from_guide_marginals_and_diag_laplace():
    net, model, x, y = classifier()
    guide = pp.AutoSparseVD(model)
    guide(x, y)
    torch.manual_seed(1)
    with torch.no_grad():
        for k in model.sites:
            p = operator.attrgetter(k)(guide.log_sigma2)  # the guide's own parameter (never in the global store)
            p.copy_(torch.randn_like(p) * 3)
    var = flat({k: m.scale**2 for k, m in guide.marginals().items()}, model)
    idx = sn.LargestVariance(11, source=guide).select(model)
    assert idx.tolist() == sorted(var.topk(11).indices.tolist())
    # a diagonal Laplace guide as the source (the Wasserstein rule)
    lap = pp.laplace_guide(model, (x, y), "diag", prior_precision=2.0)
    lv = flat({k: m.scale**2 for k, m in lap.marginals().items()}, model)
    assert sn.LargestVariance(11, source=lap).select(model).tolist() == sorted(lv.topk(11).indices.tolist())


def test_bad_selections_raise():
    net, model, x, y = classifier()
    total = sn.num_weights(model)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="n must be >= 1"):
            sn.LargestMagnitude(bad)
        with pytest.raises(ValueError, match="n must be >= 1"):
            sn.Random(bad)
    for bad in (1.5, True, "10", None):
        with pytest.raises(TypeError, match="n must be an int"):
            sn.LargestMagnitude(bad)
        with pytest.raises(TypeError, match="n must be an int"):
            sn.Random(bad)
    with pytest.raises(ValueError, match=f"n = {total + 1} exceeds"):
        sn.LargestMagnitude(total + 1).select(model)
    with pytest.raises(ValueError, match=f"n = {total + 1} exceeds"):
        sn.Random(total + 1).select(model)
    with pytest.raises(TypeError, match="source must be a trained guide"):
        sn.LargestVariance(3, source=object())
    with pytest.raises(ValueError, match="seed"):
        sn.Random(3, seed=-1)
    with pytest.raises(ValueError, match="unknown sites"):
        sn.Mask({"9.weight": torch.ones(3, dtype=torch.bool)}).select(model)
    with pytest.raises(ValueError, match=r"shape \(6, 4\)"):
        sn.Mask({"0.weight": torch.ones(4, 6, dtype=torch.bool)}).select(model)
    with pytest.raises(ValueError, match="bool tensor"):
        sn.Mask({"0.weight": torch.ones(6, 4)}).select(model)
    with pytest.raises(ValueError, match="selects no weights"):
        sn.Mask({"0.weight": torch.zeros(6, 4, dtype=torch.bool)}).select(model)
    with pytest.raises(ValueError, match="must lie in"):
        sn.Indices([0, total]).select(model)
    with pytest.raises(ValueError, match="duplicates"):
        sn.Indices([1, 1])
    with pytest.raises(ValueError, match="integer"):
        sn.Indices(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="no weights"):
        sn.Indices(torch.tensor([], dtype=torch.long))
    with pytest.raises(TypeError, match="BayesianModel"):
        sn.LargestMagnitude(3).select(net)
    # the guide checks its arguments too
    with pytest.raises(ValueError, match="must lie in"):
        pp.AutoSubnetwork(model, torch.tensor([total]))
    with pytest.raises(ValueError, match="init_scale"):
        pp.AutoSubnetwork(model, sn.LastLayer(), init_scale=0.0)
    with pytest.raises(TypeError, match="train_rest"):
        pp.AutoSubnetwork(model, sn.LastLayer(), train_rest=1)
    with pytest.raises(TypeError, match="BayesianModel"):
        pp.AutoSubnetwork(net, sn.LastLayer())
    with pytest.raises(ValueError, match="not initialized"):
        pp.AutoSubnetwork(model, sn.LastLayer()).marginals()
    with pytest.raises(ValueError, match="subnet selects 3 of .* whole layers"):  # kron/diag take whole layers only
        pp.laplace_guide(model, (x, y), "kron", subnet=sn.LargestMagnitude(3))


# --------------------------------------------------------------------------------------------------
# Pyro machinery: Rényi particles, parallel prediction, pruning (float64)
# --------------------------------------------------------------------------------------------------
def test_renyi_particles_predict_parallel_and_prune_float64():
    net, model, x, y = classifier()
    guide = pp.AutoSubnetwork(model, sn.LargestMagnitude(20), init_scale=0.05)
    hist = pp.fit(model, guide, (x, y), epochs=5, alpha=0.5, num_particles=4, lr=1e-2, progress=False)
    assert all(torch.isfinite(torch.tensor(hist["loss"])))
    assert guide.loc.dtype == D
    pred = pp.predict(model, guide, x, num_samples=6, parallel=True)
    assert pred.samples.shape == (6, len(x), 3) and pred.samples.dtype == D
    assert_close(pred.probs.sum(-1), torch.ones(len(x), dtype=D), rtol=1e-10)
    seq = pp.predict(model, guide, x, num_samples=6, parallel=False)
    assert seq.samples.shape == (6, len(x), 3)
    q = guide.quantiles([0.1, 0.5, 0.9])
    med = guide.median()
    for k in model.sites:
        assert q[k].shape == (3,) + tuple(model.sites[k].shape)
        assert_close(q[k][1], med[k], rtol=1e-10, atol=1e-12)
    # pruning ranks the subnetwork by SNR; point-estimate weights are never pruned by variance
    res = pp.prune(model, guide, rule=pp.rules.SNR(1e6))
    masks = guide.site_masks()
    for k in res.masks:
        assert bool(res.masks[k][~masks[k]].all())  # outside S: kept
        assert not bool(res.masks[k][masks[k]].any())  # SNR < 1e6 inside S: pruned
    assert pp.predict(model, res.guide, x, num_samples=3).samples.shape == (3, len(x), 3)


def test_log_q_of_draws_is_stable_for_an_ill_conditioned_float32_factor():
    """q's log density of its own draws must not solve with the Cholesky factor: a 300-dim unit-triangular factor
    with off-diagonal entries of 0.2 has an astronomically large inverse, and a float32 solve returns garbage (the
    ELBO then exploits it).  The mean of -log q over draws is the analytic entropy."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 10))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(8))
    x, y = torch.randn(8, 30), torch.randint(0, 10, (8,))
    guide = pp.AutoSubnetwork(model, sn.Random(300, seed=0), init_scale=0.5)
    guide(x, y)
    with torch.no_grad():
        guide.scale_tril = torch.eye(300) + 0.2 * torch.randn(300, 300).tril(-1)
    h = float(guide.get_posterior().entropy().detach())
    logq = []
    with torch.no_grad():
        for _ in range(40):
            tr = pyro.poutine.trace(guide).get_trace(x, y)
            logq.append(
                float(tr.nodes["_AutoSubnetwork_latent"]["fn"].log_prob(tr.nodes["_AutoSubnetwork_latent"]["value"]))
            )
    assert abs(-sum(logq) / len(logq) - h) < 10, (h, logq[:3])


def test_glm_predictive_is_exact_for_a_linear_model():
    model, x, y, mean, cov, _ = regression()
    guide = pp.AutoSubnetwork(model, sn.Indices([0, 2]), init_scale=0.3)
    guide(x, y)
    with torch.no_grad():
        guide.scale_tril = torch.tensor([[1.0, 0.0], [0.7, 1.0]], dtype=D)
    f, fcov = guide.glm_predictive(x[:5])
    w = flat(guide.median(), model)
    xb = torch.cat([x[:5], torch.ones(5, 1, dtype=D)], 1)
    assert_close(f.squeeze(-1), xb @ w, rtol=1e-10)
    xs = xb[:, [0, 2]]
    assert_close(fcov[:, 0, 0], torch.einsum("bi,ij,bj->b", xs, guide.covariance(), xs), rtol=1e-10)
    net, cmodel, cx, cy = classifier()
    g = pp.AutoSubnetwork(cmodel, sn.LargestMagnitude(15))
    g(cx, cy)
    pred = pp.predict(cmodel, g, cx, method="glm")
    assert pred.probs.shape == (len(cx), 3)
    assert_close(pred.probs.sum(-1), torch.ones(len(cx), dtype=D), rtol=1e-10)


def test_sample_latent_returns_the_auxiliary_draw_as_autocontinuous_does():
    """``sample_latent()`` returns w_S (today: the value of the auxiliary site), distributed as q(w_S)."""
    net, model, x, y = classifier()
    guide = pp.AutoSubnetwork(model, sn.LargestMagnitude(6), init_scale=0.3)
    guide(x, y)
    with pyro.poutine.trace() as tr:
        z = guide.sample_latent()
    assert z.shape == (6,)
    assert torch.equal(tr.trace.nodes["_AutoSubnetwork_latent"]["value"], z)
    with pyro.plate("draws", 4000, dim=-1):
        draws = guide.sample_latent()
    assert draws.shape == (4000, 6)
    post = guide.get_posterior()
    assert_close(draws.mean(0), post.mean, rtol=0.0, atol=5 * 0.3 / 4000**0.5)
    assert_close(draws.T.cov(), post.covariance_matrix, rtol=0.0, atol=0.01)
