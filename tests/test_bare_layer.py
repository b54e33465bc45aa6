"""A bare layer is a network: ``bayesianize(nn.Linear(d, 1), ...)`` (and bare Conv1d/Conv2d) with sites "weight" and
"bias", through fit (fused and SVI), predict, prune, Laplace (kron/diag/full), marginals, copies and pp.save/load.

The Laplace posterior of Bayesian linear regression with a fixed noise is exact: it is checked against the
closed-form posterior, evidence and predictive."""

import copy
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer import Predictive, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune.fused import can_fuse, fused_loss
from pyro_prune.model.bayesian_layers import BayesianConv1d, BayesianConv2d, BayesianLinear
from pyro_prune.model.layers import local_reparameterization
from pyro_prune.model.likelihoods import Likelihood
from tests.helpers import assert_close

D = torch.float64


def regression(n=60, d=3, sigma=0.3, dtype=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.linspace(-1.5, 2.0, d, dtype=dtype)
    y = x @ w + 0.7 + sigma * torch.randn(n, generator=g, dtype=dtype)
    return x, y


class FlatGaussian(Likelihood):
    """A regression head defined only here for conv outputs ``(B, C, ...)``: independent N(f, 0.1²) entries."""

    task = "regression"
    sigma = 0.1

    def __init__(self, dataset_size, event_dim):
        super().__init__(dataset_size)
        self.event_dim = event_dim

    def distribution(self, output):
        return dist.Normal(output, self.sigma).to_event(self.event_dim)

    def check_target(self, y, output):  # also called with flattened outputs (B, K) by the curvature
        flat = output.dim() == 2 and y.dim() > 2 and output.shape == (y.shape[0], y[0].numel())
        if not flat and y.shape[1:] != output.shape[-self.event_dim :]:
            raise ValueError("y does not fit the output")

    def log_likelihood(self, output, y, check=True):  # also called with flattened outputs (B, K) by the curvature
        if output.dim() == 2 and y.dim() > 2:
            output = output.reshape(y.shape)
        return self.distribution(output).log_prob(y)

    def _batch_size(self, output):
        return output.shape[-1 - self.event_dim]

    def mean_scale(self, output):
        return output, torch.full_like(output, self.sigma)

    def exact_hessian_sqrt(self, f):
        eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device) / self.sigma
        return eye.unsqueeze(1).expand(f.shape[-1], f.shape[0], f.shape[-1])

    def glm_distribution(self, f, cov):
        return dist.Normal(f, (cov.diagonal(dim1=-2, dim2=-1) + self.sigma**2).sqrt()).to_event(1)


def conv_problem(kind):
    torch.manual_seed(0)
    if kind == "conv1d":
        net, x = nn.Conv1d(2, 3, 3), torch.randn(12, 2, 7)
    else:
        net, x = nn.Conv2d(2, 3, 3), torch.randn(12, 2, 4, 4)
    with torch.no_grad():
        out = net(x)
    y = out + 0.1 * torch.randn_like(out)
    return net, x, y, FlatGaussian(12, out.dim() - 1)


# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
def test_a_bare_layer_is_bayesianized_with_sites_weight_and_bias(kind):
    if kind == "linear":
        net, x = nn.Linear(3, 1), regression(dtype=torch.float32)[0]
        lik, cls = pp.Gaussian(60, scale=0.3), BayesianLinear
    else:
        net, x, _, lik = conv_problem(kind)
        cls = BayesianConv1d if kind == "conv1d" else BayesianConv2d
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), lik)
    assert list(model.sites) == ["weight", "bias"] and type(model.net) is cls
    assert model.sites["weight"].module == "" and model.sites["weight"].shape == net.weight.shape
    assert model.prior("bias").event_shape == net.bias.shape
    assert not isinstance(net, pyro.nn.PyroModule), "bayesianize converted the user's layer"
    tr = pyro.poutine.trace(model).get_trace(x)
    assert {k for k, v in tr.nodes.items() if v["type"] == "sample"} == {"weight", "bias", "data", "obs"}
    # the sampled weights are what the layer computed with
    expected = torch.nn.functional.linear if kind == "linear" else getattr(torch.nn.functional, kind)
    assert_close(tr.nodes["_RETURN"]["value"], expected(x, tr.nodes["weight"]["value"], tr.nodes["bias"]["value"]))
    # vectorized draws (parallel Predictive) carry the sample dimension in front
    out = Predictive(model, num_samples=4, parallel=True, return_sites=["_RETURN"])(x)["_RETURN"]
    assert out.shape == (4,) + tuple(net(x).shape)
    assert pp.bayesianize(net, {"weight": dist.Normal(0.0, 2.0), "bias": None}, lik).point_estimates == ("bias",)


def fit_and_prune(model, guide, x, y, example):
    pp.fit(model, guide, (x, y), epochs=20, lr=1e-2, progress=False)
    p = pp.predict(model, guide, example, num_samples=8)
    assert p.mean.shape[0] == example.shape[0] and bool(torch.isfinite(p.mean).all())
    assert set(pp.marginals(guide)) == {"weight", "bias"}
    result = pp.prune(model, guide, pp.rules.Sparsity(0.5, scope="layer"), example_input=example)
    assert type(result.module) is type(model.template()), "the plain pruned module is the bare torch layer"
    mask = result.masks["weight"]
    assert int(mask.sum()) == mask.numel() - round(0.5 * mask.numel())
    med = guide.median() if hasattr(guide, "median") else None
    if med is not None:  # the pruned module is the posterior median with the pruned weights zeroed
        assert_close(result.module.weight.detach(), med["weight"].detach() * mask, rtol=1e-6)
    return result


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
def test_a_bare_layer_fits_fused_and_svi_predicts_and_prunes(kind):
    if kind == "linear":
        x, y = regression(dtype=torch.float32)
        net, lik = nn.Linear(3, 1), pp.Gaussian(60, scale=0.3)
    else:
        net, x, y, lik = conv_problem(kind)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), lik)
    vd = pp.AutoSparseVD(model)
    vd(x, y)
    assert can_fuse(model, vd, 1.0, 1), "AutoSparseVD on a bare layer must take the fused path"
    fit_and_prune(model, vd, x, y, x[:5])
    normal = AutoNormal(model)
    fit_and_prune(model, normal, x, y, x[:5])


def test_fused_objective_on_a_bare_layer_equals_trace_mean_field_elbo():
    x, y = regression()
    model = pp.bayesianize(nn.Linear(3, 1).to(D), dist.Normal(0.0, 1.0), pp.Gaussian(60, scale=0.3))
    vd = pp.AutoSparseVD(model, init_log_sigma2=-3.0)
    vd(x, y)
    with torch.no_grad():
        assert_close(float(vd.total_kl()), pp.infer.kl_term(model, vd, x, y), rtol=1e-10)
        pyro_losses, fused_losses = [], []
        for _ in range(200):
            with local_reparameterization(vd):
                pyro_losses.append(TraceMeanField_ELBO(max_plate_nesting=1).loss(model, vd, x, y))
            fused_losses.append(float(fused_loss(model, vd, x, y, 1.0)[0]))
    a, b = torch.tensor(pyro_losses), torch.tensor(fused_losses)
    se = (a.var() / 200 + b.var() / 200).sqrt()
    assert abs(a.mean() - b.mean()) < 4 * se + 1e-9, (a.mean(), b.mean(), se)


# ---------------------------------------------------------------------------------------------------------
def blr_map(model, x, y):
    """The MAP of ``model`` found by L-BFGS on its own log joint (Pyro's trace), not by the closed form."""
    w = torch.zeros(1, x.shape[1], dtype=D, requires_grad=True)
    b = torch.zeros(1, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        cond = pyro.poutine.condition(model, data={"weight": w, "bias": b})
        loss = -pyro.poutine.trace(cond).get_trace(x, y).log_prob_sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"weight": w.detach(), "bias": b.detach()}


@pytest.mark.parametrize("structure", ["full", "kron", "diag"])
def test_bare_linear_laplace_is_the_closed_form_bayesian_linear_regression(structure):
    r"""y = [x, 1] θ + ε, ε ~ N(0, σ²), θ ~ N(0, τ⁻¹ I): the posterior is N(μ, Σ) with Σ = (ΦᵀΦ/σ² + τ I)⁻¹,
    μ = Σ Φᵀ y / σ², exactly the Laplace approximation (full; kron too: one output, so G is the scalar 1/σ²).
    diag keeps the diagonal of the same precision."""
    n, sigma, tau = 60, 0.3, 2.0
    x, y = regression(n, sigma=sigma)
    phi = torch.cat([x, torch.ones(n, 1, dtype=D)], 1)
    precision = phi.T @ phi / sigma**2 + tau * torch.eye(4, dtype=D)
    cov = torch.linalg.inv(precision)
    mean = cov @ phi.T @ y / sigma**2
    model = pp.bayesianize(nn.Linear(3, 1).to(D), dist.Normal(0.0, tau**-0.5), pp.Gaussian(n, scale=sigma))
    map_values = blr_map(model, x, y)
    assert_close(torch.cat([map_values["weight"].flatten(), map_values["bias"]]), mean, rtol=1e-8, atol=1e-10)
    g = pp.laplace_guide(model, (x, y), structure, map_from=map_values, prior_precision=tau)
    m = g.marginals()
    assert_close(torch.cat([m["weight"].loc.flatten(), m["bias"].loc]), mean, rtol=1e-6, atol=1e-10)
    if structure == "diag":
        assert_close(torch.cat([m["weight"].scale.flatten(), m["bias"].scale]) ** 2, 1 / precision.diagonal())
        return
    dense = g.posteriors["full" if structure == "full" else ""].to_dense()
    assert_close(torch.linalg.inv(dense), cov, rtol=1e-6, atol=1e-12)
    assert_close(torch.cat([m["weight"].scale.flatten(), m["bias"].scale]) ** 2, cov.diagonal(), rtol=1e-6)
    # the evidence: y ~ N(0, σ² I + Φ Φᵀ / τ)
    evidence = dist.MultivariateNormal(torch.zeros(n, dtype=D), sigma**2 * torch.eye(n, dtype=D) + phi @ phi.T / tau)
    assert_close(g.log_marginal_likelihood(), evidence.log_prob(y), rtol=1e-6)
    # the GLM predictive: N(φᵀμ, φᵀΣφ + σ²)
    xs = torch.randn(7, 3, dtype=D)
    phis = torch.cat([xs, torch.ones(7, 1, dtype=D)], 1)
    var = torch.einsum("bi,ij,bj->b", phis, cov, phis)
    f, fcov = g.glm_predictive(xs)
    assert_close(f.squeeze(-1), phis @ mean, rtol=1e-6)
    assert_close(fcov[:, 0, 0], var, rtol=1e-6)
    p = pp.predict(model, g, xs, method="glm")
    assert_close(p.mean, phis @ mean, rtol=1e-6)
    assert_close(p.std**2, var + sigma**2, rtol=1e-6)


@pytest.mark.parametrize("kind", ["conv1d", "conv2d"])
def test_bare_conv_laplace_structures_agree(kind):
    """A conv layer is linear in its weights and the head Gaussian: full and kron (one output channel per
    site row; the KFC factorisation is exact here only in its diagonal blocks) are finite; full's marginal
    variances are the inverse-precision diagonal and diag's the inverse of the precision diagonal."""
    net, x, y, lik = conv_problem(kind)
    model = pp.bayesianize(net.to(D), dist.Normal(0.0, 1.0), lik)
    x, y = x.to(D), y.to(D)
    full = pp.laplace_guide(model, (x, y), "full")
    diag = pp.laplace_guide(model, (x, y), "diag")
    kron = pp.laplace_guide(model, (x, y), "kron")
    precision = full.posteriors["full"].to_dense()
    flat = lambda g: torch.cat([g.marginals()["weight"].scale.flatten(), g.marginals()["bias"].scale]) ** 2  # noqa: E731
    assert_close(flat(full), torch.linalg.inv(precision).diagonal(), rtol=1e-8)
    assert_close(flat(diag), 1 / precision.diagonal(), rtol=1e-8)
    assert bool(torch.isfinite(flat(kron)).all()) and kron.marginals()["weight"].scale.shape == net.weight.shape
    p = pp.predict(model, full, x[:3], method="glm")
    assert p.mean.shape == (3,) + tuple(y.shape[1:]) or p.mean.numel() == y[:3].numel()


# ---------------------------------------------------------------------------------------------------------
def test_bare_linear_model_and_guides_copy_pickle_and_state_dict():
    x, y = regression(dtype=torch.float32)
    model = pp.bayesianize(nn.Linear(3, 1), dist.Normal(0.0, 1.0), pp.Gaussian(60, scale="learned"))
    guide = AutoNormal(model)
    pp.fit(model, guide, (x, y), epochs=5, lr=1e-2, progress=False)
    lap = pp.laplace_guide(model, (x, y), "full", map_from=guide)
    for copied in (copy.deepcopy((model, guide, lap)), pickle.loads(pickle.dumps((model, guide, lap)))):
        m2, g2, l2 = copied
        assert type(m2.net) is BayesianLinear and list(m2.sites) == ["weight", "bias"]
        assert_close(m2.likelihood.scale, model.likelihood.scale)
        assert_close(g2.median()["weight"], guide.median()["weight"])
        assert_close(l2.marginals()["weight"].scale, lap.marginals()["weight"].scale)
    fresh = pp.bayesianize(nn.Linear(3, 1), dist.Normal(0.0, 1.0), pp.Gaussian(60, scale="learned"))
    fresh.load_state_dict(model.state_dict())
    assert_close(fresh.likelihood.scale, model.likelihood.scale)


def test_bare_layers_save_and_load(tmp_path):
    """pp.save/pp.load describe a bare torch.nn layer (no net= needed) and rebuild the same model and guide."""
    x, y = regression(dtype=torch.float32)
    model = pp.bayesianize(nn.Linear(3, 1), dist.Normal(0.0, 1.0), pp.Gaussian(60, scale=0.3))
    vd = pp.AutoSparseVD(model)
    pp.fit(model, vd, (x, y), epochs=5, lr=1e-2, progress=False)
    result = pp.prune(model, vd, pp.rules.Sparsity(0.5), example_input=x[:2])
    lap = pp.laplace_guide(model, (x, y), "kron", map_from=vd.median())
    pp.save(tmp_path / "vd.pt", model, vd, pruned=result)
    pp.save(tmp_path / "lap.pt", model, lap)
    saved = pp.load(tmp_path / "vd.pt")
    assert type(saved.model.net) is BayesianLinear and list(saved.model.sites) == ["weight", "bias"]
    assert_close(saved.guide.median()["weight"], vd.median()["weight"])
    loaded = saved.pruned["pruned"]
    assert type(loaded.module) is nn.Linear and torch.equal(loaded.module.weight, result.module.weight)
    lap2 = pp.load(tmp_path / "lap.pt").guide
    assert_close(lap2.marginals()["weight"].scale, lap.marginals()["weight"].scale)
    # a bare conv too
    net, xc, yc, _ = conv_problem("conv2d")
    conv = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(12))
    pp.save(tmp_path / "conv.pt", conv)
    again = pp.load(tmp_path / "conv.pt").model
    assert type(again.net) is BayesianConv2d and again.sites == conv.sites
