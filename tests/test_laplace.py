"""laplace_guide: exact Bayesian linear regression, full GGN vs torch.func, GLM predictive vs dense algebra,
Pyro prediction and pruning, BatchNorm, the memory guard and argument errors."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoDelta
from torch.func import jacrev

import pyro_prune as pp
from pyro_prune import curvature as cv
from tests.helpers import assert_close

D = torch.float64


def classifier(dtype=D, n=40, bn=False):
    torch.manual_seed(0)
    x = torch.randn(n, 4, dtype=dtype)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    layers = [nn.Linear(4, 6)] + ([nn.BatchNorm1d(6)] if bn else []) + [nn.Tanh(), nn.Linear(6, 3)]
    net = nn.Sequential(*layers).to(dtype)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    model = pp.bayesianize(net, dist.Normal(torch.tensor(0.0, dtype=dtype), 1.0), pp.Categorical(n))
    return net, model, x, y


def test_bayesian_linear_regression_is_exact():
    """One bias-free Linear layer, Gaussian noise: the Laplace posterior is the exact conjugate posterior, and its
    log marginal likelihood the exact evidence."""
    torch.manual_seed(0)
    n, sigma, tau = 50, 0.5, 2.0
    X = torch.randn(n, 3, dtype=D)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=D) + sigma * torch.randn(n, dtype=D)
    prec = X.T @ X / sigma**2 + tau * torch.eye(3, dtype=D)
    cov = torch.linalg.inv(prec)
    mean = cov @ X.T @ y / sigma**2
    model = pp.bayesianize(nn.Sequential(nn.Linear(3, 1, bias=False)).to(D), dist.Normal(0.0, 1.0),
                           pp.Gaussian(n, scale=sigma))  # fmt: skip
    for structure in ("kron", "full"):
        g = pp.laplace_guide(model, (X, y), structure, map_from={"0.weight": mean.reshape(1, 3)}, prior_precision=tau)
        post = g.posteriors["0" if structure == "kron" else "full"]
        assert_close(torch.linalg.inv(post.to_dense()), cov, rtol=1e-5, atol=1e-12)
        m = g.marginals()["0.weight"]
        assert_close(m.loc.flatten(), mean, rtol=1e-5)
        assert_close(m.scale.flatten() ** 2, cov.diagonal(), rtol=1e-5)
        evidence = dist.MultivariateNormal(torch.zeros(n, dtype=D), sigma**2 * torch.eye(n, dtype=D) + X @ X.T / tau)
        assert_close(g.log_marginal_likelihood(), evidence.log_prob(y), rtol=1e-5)
        # the GLM predictive of a linear model is exact: x Σ xᵀ
        f, fcov = g.glm_predictive(X[:4])
        assert_close(f.squeeze(-1), X[:4] @ mean, rtol=1e-5)
        assert_close(fcov[:, 0, 0], torch.einsum("bi,ij,bj->b", X[:4], cov, X[:4]), rtol=1e-5)
    # marglik: the optimum is a stationary point of the exact evidence
    t = g.optimize_prior_precision()
    for eps in (0.99, 1.01):
        assert float(g.log_marginal_likelihood(t * eps)) <= float(g.log_marginal_likelihood(t)) + 1e-9


def flat_mlp(x, theta, sizes):
    """A 4-6-3 tanh MLP from a flat parameter vector (named_parameters order), written by hand."""
    pos, ps = 0, []
    for shape in sizes:
        k = math.prod(shape)
        ps.append(theta[pos : pos + k].reshape(shape))
        pos += k
    w0, b0, w1, b1 = ps
    return torch.tanh(x @ w0.T + b0) @ w1.T + b1


def test_full_equals_inverse_of_dense_ggn_by_jacrev():
    net, model, x, y = classifier()
    tau = 0.8
    g = pp.laplace_guide(model, (x, y), "full", prior_precision=tau)
    theta = torch.cat([p.detach().flatten() for p in net.parameters()])
    sizes = [p.shape for p in net.parameters()]
    J = jacrev(lambda t: flat_mlp(x, t, sizes))(theta)  # (B, C, P)
    p = flat_mlp(x, theta, sizes).softmax(-1)
    H = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    ggn = torch.einsum("bcp,bcd,bdq->pq", J, H, J)
    cov = torch.linalg.inv(ggn + tau * torch.eye(len(theta), dtype=D))
    assert_close(g.posteriors["full"].covariance(), cov, rtol=1e-6, atol=1e-10)
    margs = g.marginals()
    flat_scale = torch.cat([margs[k].scale.flatten() for k in model.sites])
    assert_close(flat_scale**2, cov.diagonal(), rtol=1e-6)
    # GLM predictive: J Σ Jᵀ
    f, fcov = g.glm_predictive(x[:5])
    assert_close(fcov, torch.einsum("bcp,pq,bdq->bcd", J[:5], cov, J[:5]), rtol=1e-6, atol=1e-10)


def dense_posterior_cov(g, net, layer_names):
    """Block-diagonal covariance over [W | b] matrices of each layer, in the order of layer_names."""
    blocks = [torch.linalg.inv(g.posteriors[n].to_dense()) for n in layer_names]
    return torch.block_diag(*blocks)


def layer_jacobian(net, x):
    """(B, C, P) Jacobian over [W0 | b0], [W1 | b1] (row-major), by jacrev on the plain network."""
    params = dict(net.named_parameters())
    J = jacrev(lambda p: torch.func.functional_call(net, p, (x,)))({k: v.detach() for k, v in params.items()})
    cols = []
    for name in ("0", "2"):
        w, b = J[f"{name}.weight"], J[f"{name}.bias"]
        cols.append(torch.cat([w, b.unsqueeze(-1)], -1).reshape(x.shape[0], w.shape[1], -1))
    return torch.cat(cols, -1)


@pytest.mark.parametrize("structure", ["kron", "diag"])
def test_glm_predictive_equals_dense_jacobian_algebra(structure):
    net, model, x, y = classifier()
    g = pp.laplace_guide(model, (x, y), structure, prior_precision=[0.5, 2.0])
    J = layer_jacobian(net, x[:6])
    cov = dense_posterior_cov(g, net, ["0", "2"])
    f, fcov = g.glm_predictive(x[:6])
    assert_close(f, net(x[:6]).detach(), rtol=1e-10)
    assert_close(fcov, torch.einsum("bcp,pq,bdq->bcd", J, cov, J), rtol=1e-8, atol=1e-12)


def test_glm_predictive_conv_positions():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(15, 2)).to(D)
    x, y = torch.randn(12, 2, 5, dtype=D), torch.randint(0, 2, (12,))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(12))
    g = pp.laplace_guide(model, (x, y), "kron", prior_precision=1.5)
    params = dict(net.named_parameters())
    J = jacrev(lambda p: torch.func.functional_call(net, p, (x[:4],)))({k: v.detach() for k, v in params.items()})
    cols = [torch.cat([J["0.weight"].reshape(4, 2, 3, -1), J["0.bias"].unsqueeze(-1)], -1).reshape(4, 2, -1),
            torch.cat([J["3.weight"], J["3.bias"].unsqueeze(-1)], -1).reshape(4, 2, -1)]  # fmt: skip
    J = torch.cat(cols, -1)
    cov = dense_posterior_cov(g, net, ["0", "3"])
    _, fcov = g.glm_predictive(x[:4])
    assert_close(fcov, torch.einsum("bcp,pq,bdq->bcd", J, cov, J), rtol=1e-8, atol=1e-12)
    assert pp.predict(model, g, x[:4], num_samples=5, method="mc").probs.shape == (4, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_predict_mc_and_glm_prune_marginals(dtype):
    net, model, x, y = classifier(dtype)
    g = pp.laplace_guide(model, (x, y), prior_precision="marglik")
    margs = pp.marginals(g)
    assert list(margs) == list(model.sites)
    for k, m in margs.items():
        assert m.loc.shape == m.scale.shape == model.sites[k].shape and m.loc.dtype == dtype
        assert bool((m.scale > 0).all())
    mc = pp.predict(model, g, x, num_samples=30, method="mc")
    assert mc.samples.shape == (30, len(x), 3) and mc.probs.dtype == dtype
    glm = pp.predict(model, g, x, method="glm")
    assert glm.probs.shape == (len(x), 3) and glm.method == "glm"
    assert_close(glm.probs.sum(-1), torch.ones(len(x), dtype=dtype), rtol=1e-5)
    scores = pp.evaluate(model, g, (x, y), method="glm")
    assert scores["accuracy"] > 0.8
    with pytest.raises(AttributeError, match="mc"):
        _ = glm.mutual_information
    res = pp.prune(model, g, rule=pp.rules.SNR(1.0))
    assert 0 < res.report.sparsity < 1
    res = pp.prune(model, g, rule=pp.rules.Sparsity(0.5))
    assert res.report.sparsity == pytest.approx(0.5, abs=0.02)
    assert pp.predict(model, res.guide, x, num_samples=4).samples.shape == (4, len(x), 3)  # sampled (mc)


def test_mc_draws_have_the_kron_covariance():
    """Draws through Predictive(parallel=True): mean at the MAP, per-weight variance = exact marginal variance."""
    net, model, x, y = classifier()
    g = pp.laplace_guide(model, (x, y), prior_precision=3.0)
    draws = pyro.infer.Predictive(g, num_samples=20_000, parallel=True)(x)
    m = g.marginals()
    for site in ("0.weight", "2.bias"):
        s = draws[site]
        assert s.shape == (20_000,) + model.sites[site].shape
        assert_close(s.mean(0), m[site].loc, rtol=0, atol=4 * float(m[site].scale.max()) / math.sqrt(20_000))
        assert_close(s.var(0), m[site].scale ** 2, rtol=0.05)  # 5 %: ~5 std errors of a variance at n=20k
    # a joint sample: weight and bias of one layer are correlated as the Kron covariance says
    post = g.posteriors["2"]
    full_cov = torch.linalg.inv(post.to_dense())
    joint = torch.cat([draws["2.weight"], draws["2.bias"].unsqueeze(-1)], -1).reshape(20_000, -1)
    emp = torch.cov(joint.T)
    assert_close(emp, full_cov, rtol=0, atol=0.06 * float(full_cov.abs().max()))


def marglik_grad_log_tau(g, tau):
    """d log p(D | tau) / d log tau at ``tau`` (scalar or per layer), by autograd."""
    log_tau = tau.detach().log().clone().requires_grad_(True)
    g.log_marginal_likelihood(log_tau.exp()).backward()
    return log_tau.grad


@pytest.mark.parametrize("structure", ["kron", "diag", "full"])
def test_marglik_optimization_scalar_and_layer(structure):
    """The optimum is stationary (gradient wrt log tau ~ 0) and beats a dense grid of tau values."""
    net, model, x, y = classifier()
    g = pp.laplace_guide(model, (x, y), structure, prior_precision=1.0)
    before = float(g.log_marginal_likelihood())
    t = g.optimize_prior_precision("scalar")
    mid = float(g.log_marginal_likelihood())
    assert t.dim() == 0 and mid > before
    assert abs(float(marglik_grad_log_tau(g, t))) < 1e-5
    grid = torch.logspace(-4, 4, 161, dtype=D)
    assert mid >= max(float(g.log_marginal_likelihood(float(v))) for v in grid) - 1e-9
    t = g.optimize_prior_precision("layer")
    top = float(g.log_marginal_likelihood())
    assert t.shape == (2,) and top >= mid - 1e-6
    assert float(marglik_grad_log_tau(g, t).abs().max()) < 1e-5
    pairs = torch.cartesian_prod(grid[::4], grid[::4])
    assert top >= max(float(g.log_marginal_likelihood(p)) for p in pairs) - 1e-9
    g2 = pp.laplace_guide(model, (x, y), structure, prior_precision="marglik", prior_structure="layer")
    assert_close(g2.prior_precision, t, rtol=1e-3)


def test_batchnorm_model_fits_predicts_prunes():
    net, model, x, y = classifier(bn=True)
    assert not model.vectorizable
    for structure in ("kron", "diag", "full"):
        g = pp.laplace_guide(model, (x, y), structure, prior_precision=2.0)
        assert "1.weight" not in g.marginals()  # BatchNorm stays a point estimate
        assert pp.predict(model, g, x[:5], num_samples=3, method="mc").samples.shape == (3, 5, 3)
        assert pp.predict(model, g, x[:5], method="glm").probs.shape == (5, 3)
        # the BatchNorm statistics are used: GLM mean equals the network's output
        assert_close(g.glm_predictive(x[:5])[0], net(x[:5]).detach(), rtol=1e-8)
        pp.prune(model, g, rule=pp.rules.SNR(1.0))


def test_map_from_guide_module_and_state_dict():
    net, model, x, y = classifier()
    delta = AutoDelta(model)
    pp.fit(model, delta, (x, y), epochs=3, lr=1e-2, progress=False)
    g = pp.laplace_guide(model, (x, y), map_from=delta)
    for k, v in delta.median().items():
        assert_close(g.median()[k], v.detach())
    g2 = pp.laplace_guide(model, (x, y), map_from=net.state_dict())
    g3 = pp.laplace_guide(model, (x, y), map_from=net)
    g4 = pp.laplace_guide(model, (x, y))
    for k in model.sites:
        assert_close(g2.median()[k], net.state_dict()[k])
        assert_close(g3.marginals()[k].scale, g4.marginals()[k].scale)


def test_subnet_full_mask_and_indices():
    net, model, x, y = classifier()
    masks = {k: torch.zeros(info.shape, dtype=torch.bool) for k, info in model.sites.items()}
    masks["2.weight"][0] = True
    masks["0.bias"][:2] = True
    g = pp.laplace_guide(model, (x, y), "full", subnet=masks, prior_precision=1.0)
    m = g.marginals()
    for k in model.sites:
        assert bool((m[k].scale[~masks[k]] == 0).all()) and bool((m[k].scale[masks[k]] > 0).all())
    flat = torch.cat([masks[k].flatten() for k in model.sites]).nonzero().squeeze(-1)
    gi = pp.laplace_guide(model, (x, y), "full", subnet=flat, prior_precision=1.0)
    for k in model.sites:
        assert_close(gi.marginals()[k].scale, m[k].scale)
    draws = pyro.infer.Predictive(g, num_samples=7, parallel=True)(x)
    assert bool((draws["0.weight"] == net[0].weight.detach()).all())  # outside the subnet: the MAP
    assert pp.predict(model, g, x, method="glm").probs.shape == (len(x), 3)
    assert pp.prune(model, g, rule=pp.rules.SNR(2.0)).report.kept >= 40 - 7  # subnet-only pruning


def test_regression_and_bernoulli_glm():
    torch.manual_seed(0)
    x = torch.randn(30, 2, dtype=D)
    yr = x[:, 0] - x[:, 1] ** 2
    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(D)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Gaussian(30, scale=0.3))
    g = pp.laplace_guide(model, (x, yr), prior_precision=1.0)
    p = pp.predict(model, g, x, method="glm")
    _, fcov = g.glm_predictive(x)
    assert_close(p.std**2, fcov[:, 0, 0] + 0.09, rtol=1e-8)
    assert_close(p.mean, net(x).detach().squeeze(-1), rtol=1e-8)
    assert set(pp.evaluate(model, g, (x, yr), method="glm")) == {"rmse", "nll"}
    yb = (x[:, 0] > 0).to(D)
    modelb = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Bernoulli(30))
    gb = pp.laplace_guide(modelb, (x, yb), "diag", prior_precision=1.0)
    pb = pp.predict(modelb, gb, x, method="glm")
    f, c = gb.glm_predictive(x)
    kappa = (1 + math.pi / 8 * c[:, 0, 0]).rsqrt()
    assert_close(pb.probs[:, 1], torch.sigmoid(kappa * f[:, 0]), rtol=1e-8)


def test_memory_guard():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(10))
    x, y = torch.randn(10, 100), torch.randint(0, 10, (10,))
    with pytest.raises(MemoryError, match=r"11,110 parameters.*kron.*subnet"):
        pp.laplace_guide(model, (x, y), "full", max_memory=2**20)
    g = pp.laplace_guide(model, (x, y), "full", subnet=torch.arange(50), max_memory=2**20)
    assert g.posteriors["full"].numel == 50


def test_bad_arguments():
    net, model, x, y = classifier()
    cases = [
        (dict(structure="dense"), ValueError, "structure"),
        (dict(prior_precision=0.0), ValueError, "prior_precision"),
        (dict(prior_precision=-1.0), ValueError, "prior_precision"),
        (dict(prior_precision=math.nan), ValueError, "prior_precision"),
        (dict(prior_precision="evidence"), ValueError, "prior_precision"),
        (dict(prior_precision=[1.0, 2.0, 3.0]), ValueError, "one entry per layer"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature="hot"), TypeError, "temperature"),
        (dict(map_from=lambda: None), TypeError, "map_from"),
        (dict(map_from={"0.weight": torch.zeros(2, 2, dtype=D)}), ValueError, "map_from"),
        (dict(subnet=torch.arange(3)), ValueError, "subnet"),
        (dict(fisher="empirical"), ValueError, "fisher"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            pp.laplace_guide(model, (x, y), **kwargs)
    with pytest.raises(ValueError, match="no examples"):
        pp.laplace_guide(model, [])
    with pytest.raises(ValueError, match="NaN"):
        pp.laplace_guide(model, (x * math.nan, y))
    with pytest.raises(TypeError, match="BayesianModel"):
        pp.laplace_guide(net, (x, y))
    with pytest.raises(ValueError, match="not initialized"):
        pp.laplace_guide(model, (x, y), map_from=AutoDelta(model))
    hetero = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Gaussian(40, scale="heteroscedastic"))
    with pytest.raises(ValueError, match="likelihood"):
        pp.laplace_guide(hetero, (x, torch.randn(40, dtype=D)))
    g = pp.laplace_guide(model, (x, y))
    with pytest.raises(ValueError, match="method"):
        pp.predict(model, g, x, method="laplace")
    delta = AutoDelta(model)
    delta(x, y)
    with pytest.raises(ValueError, match="glm"):
        pp.predict(model, delta, x, method="glm")
    with pytest.raises(ValueError, match="prior_precision"):
        g.set_prior_precision(-2.0)
    assert isinstance(cv.Kron, type)


def test_validation_tuning_picks_the_best_grid_point():
    net, model, x, y = classifier(n=60)
    g = pp.laplace_guide(model, (x[:40], y[:40]), prior_precision=1.0)
    tau, scores = pp.guides.laplace.heldout.tune_prior_precision(g, (x[40:], y[40:]), grid=[0.01, 1.0, 100.0])
    assert float(tau) == max(scores, key=lambda s: s[1])[0]
    # the score is the held-out GLM probit log-likelihood
    g.set_prior_precision(float(tau))
    p = pp.predict(model, g, x[40:], method="glm").probs
    best = max(s for _, s in scores)
    assert_close(p[torch.arange(20), y[40:]].log().mean(), best, rtol=1e-8)
    tau2 = g.optimize_prior_precision(method="val", val_data=(x[40:], y[40:]))  # default grid: 1e-4 .. 1e6
    p2 = pp.predict(model, g, x[40:], method="glm").probs
    assert 1e-4 <= float(tau2) <= 1e6
    assert float(p2[torch.arange(20), y[40:]].log().mean()) >= best - 1e-9
    with pytest.raises(ValueError, match="val_data"):
        g.optimize_prior_precision(method="val")
    with pytest.raises(ValueError, match="grid"):
        pp.guides.laplace.heldout.tune_prior_precision(g, (x[40:], y[40:]), grid=[-1.0])


def test_chunked_prediction_and_mc_fisher():
    net, model, x, y = classifier()
    g = pp.laplace_guide(model, (x, y), fisher="mc", prior_precision=2.0)
    assert all(float(g.marginals()[k].scale.min()) > 0 for k in model.sites)
    whole = pp.predict(model, g, x, method="glm")
    chunked = pp.predict(model, g, x, method="glm", batch_size=7)
    assert_close(chunked.probs, whole.probs, rtol=1e-10)
    assert pp.predict(model, g, x, num_samples=6, batch_size=16, method="mc").samples.shape == (6, len(x), 3)


def test_integer_inputs_and_out_of_range_validation_labels_raise_clearly():
    """int64 x gives a TypeError naming the dtype (not torch's matmul RuntimeError); an out-of-range held-out label
    in method='val' gives a ValueError naming the label (not an index RuntimeError)."""
    net, model, x, y = classifier()
    with pytest.raises(TypeError, match="x has dtype torch.int64.*floating"):
        pp.laplace_guide(model, (x.round().long(), y), "kron")
    guide = pp.laplace_guide(model, (x, y), "kron")
    bad = y.clone()
    bad[3] = 7
    tau = guide.prior_precision.clone()
    with pytest.raises(ValueError, match=r"val_data: y has labels outside \[0, 3\).*label 7"):
        guide.optimize_prior_precision(method="val", val_data=(x, bad))
    assert torch.equal(guide.prior_precision, tau)
