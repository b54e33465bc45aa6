"""Observation noise in the Laplace evidence (issue 14, point 2): the evidence of a Bayesian linear regression at any
(tau, sigma) against the closed form, the joint (tau, sigma) maximum against a grid search, the tuned sigma in the
posterior, the predictives and the saved state, and the argument errors."""

import copy
import functools
import math

import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from pyro_prune.guides.laplace import LaplaceGuide
from tests import helpers
from tests.helpers import assert_close

D = torch.float64


blr_data = functools.partial(helpers.blr_data, n=40, dtype=D)


def blr_posterior(X, y, tau, sigma):
    """Exact posterior mean and covariance of [w | b] under N(0, 1/tau) priors and N(., sigma^2) noise."""
    Phi = torch.cat([X, torch.ones(len(X), 1, dtype=D)], 1)
    prec = Phi.T @ Phi / sigma**2 + tau * torch.eye(Phi.shape[1], dtype=D)
    cov = torch.linalg.inv(prec)
    return cov @ Phi.T @ y / sigma**2, cov, Phi


def blr_evidence(Phi, y, tau, sigma):
    """log N(y | 0, sigma^2 I + Phi Phi^T / tau): the exact evidence of Bayesian linear regression."""
    n = len(y)
    return dist.MultivariateNormal(
        torch.zeros(n, dtype=D), sigma**2 * torch.eye(n, dtype=D) + Phi @ Phi.T / tau
    ).log_prob(y)


def blr_guide(X, y, tau, sigma, structure, fit_sigma=1.0):
    """A Laplace guide on a bare linear model (nn.Sequential(nn.Linear(d, 1))) whose MAP is the exact posterior mean at
    (tau, sigma), its curvature computed at another noise ``fit_sigma``."""
    mean, cov, Phi = blr_posterior(X, y, tau, sigma)
    d = X.shape[1]
    net = nn.Sequential(nn.Linear(d, 1)).to(D)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Gaussian(len(y), scale=fit_sigma))
    map_from = {"0.weight": mean[:d].reshape(1, d), "0.bias": mean[d:]}
    g = pp.laplace_guide(model, (X, y), structure, map_from=map_from, prior_precision=1.0)
    return model, g, mean, cov, Phi


@pytest.mark.parametrize("structure", ["kron", "full"])
def test_blr_evidence_equals_closed_form_at_any_tau_sigma(structure):
    """Linear model, Gaussian noise: the Laplace evidence at (tau, sigma) is the exact evidence (to 1e-6 in float64),
    although the curvature was computed at sigma = 1; after set_sigma_noise the posterior is the exact one."""
    X, y = blr_data()
    for tau, sigma in [(0.5, 0.4), (3.0, 0.25), (0.05, 1.7)]:
        model, g, mean, cov, Phi = blr_guide(X, y, tau, sigma, structure)
        exact = blr_evidence(Phi, y, tau, sigma)
        assert_close(g.log_marginal_likelihood(tau, sigma), exact, rtol=0, atol=1e-6)
        t = torch.tensor(tau, dtype=D, requires_grad=True)
        s = torch.tensor(sigma, dtype=D, requires_grad=True)
        g.log_marginal_likelihood(t, s).backward()  # differentiable in both
        assert t.grad is not None and s.grad is not None and bool(torch.isfinite(s.grad))
        g.set_sigma_noise(sigma)
        g.set_prior_precision(tau)
        assert float(g.sigma_noise) == pytest.approx(sigma)
        assert_close(g.log_marginal_likelihood(), exact, rtol=0, atol=1e-6)
        m = g.marginals()
        var = torch.cat([m["0.weight"].scale.flatten(), m["0.bias"].scale]) ** 2
        assert_close(var, cov.diagonal(), rtol=1e-8)
        f, fcov = g.glm_predictive(X[:5])
        assert_close(fcov[:, 0, 0], torch.einsum("bi,ij,bj->b", Phi[:5], cov, Phi[:5]), rtol=1e-8)
        p = pp.predict(model, g, X[:5])  # the GLM predictive, with the guide's sigma as the noise
        assert_close(p.std**2, fcov[:, 0, 0] + sigma**2, rtol=1e-10)


def test_blr_tuned_tau_sigma_is_the_exact_evidence_maximum():
    """The joint maximum of the Laplace evidence of a linear model is the maximum of the exact evidence
    (evidence-maximizing tau and sigma by a fixed-point iteration on the closed form: MacKay's updates)."""
    X, y = blr_data(n=60)
    tau, sigma = 1.0, 1.0
    for _ in range(500):  # MacKay 1992: gamma = sum lam/(lam + tau), tau = gamma/|m|^2, sigma^2 = SSR/(N - gamma)
        mean, cov, Phi = blr_posterior(X, y, tau, sigma)
        lam = torch.linalg.eigvalsh(Phi.T @ Phi / sigma**2)
        gamma = float((lam / (lam + tau)).sum())
        tau = gamma / float(mean @ mean)
        sigma = math.sqrt(float((y - Phi @ mean).square().sum()) / (len(y) - gamma))
    model, g, *_ = blr_guide(X, y, tau, sigma, "full")
    g.optimize_prior_precision(sigma_noise=True)
    assert float(g.prior_precision) == pytest.approx(tau, rel=1e-5)
    assert float(g.sigma_noise) == pytest.approx(sigma, rel=1e-6)


def regression_model(n=40, sigma=1.0, dtype=D):
    torch.manual_seed(0)
    x = torch.rand(n, 1, dtype=dtype) * 6
    y = torch.sin(x[:, 0]) + 0.2 * torch.randn(n, dtype=dtype)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    for _ in range(400):
        opt.zero_grad()
        (net(x)[:, 0] - y).pow(2).mean().backward()
        opt.step()
    model = pp.bayesianize(net, dist.Normal(torch.tensor(0.0, dtype=dtype), 1.0), pp.Gaussian(n, scale=sigma))
    return net, model, x, y


def grad_log(g, tau, sigma):
    """d evidence / d (log tau, log sigma) by autograd."""
    lt = tau.detach().log().clone().requires_grad_(True)
    ls = sigma.detach().log().clone().requires_grad_(True)
    g.log_marginal_likelihood(lt.exp(), ls.exp()).backward()
    return lt.grad, ls.grad


@pytest.mark.parametrize("structure", ["kron", "diag", "full"])
def test_joint_tau_sigma_maximum_beats_a_grid_search(structure):
    net, model, x, y = regression_model()
    g = pp.laplace_guide(model, (x, y), structure, prior_precision=1.0)
    grid_t = torch.logspace(-3, 3, 49, dtype=D)
    grid_s = torch.logspace(-1.5, 0.5, 41, dtype=D)
    values = torch.tensor([[float(g.log_marginal_likelihood(t, s)) for s in grid_s] for t in grid_t], dtype=D)
    tau = g.optimize_prior_precision(sigma_noise=True)
    sigma = g.sigma_noise
    top = float(g.log_marginal_likelihood())
    assert top >= float(values.max()) - 1e-9
    i, j = divmod(int(values.argmax()), len(grid_s))  # the grid's best cell holds the optimum
    assert float(grid_t[max(i - 1, 0)]) <= float(tau) <= float(grid_t[min(i + 1, len(grid_t) - 1)])
    assert float(grid_s[max(j - 1, 0)]) <= float(sigma) <= float(grid_s[min(j + 1, len(grid_s) - 1)])
    assert all(abs(float(v)) < 1e-5 for v in grad_log(g, tau, sigma))  # a stationary point
    assert_close(g.log_marginal_likelihood(tau, sigma), top, rtol=1e-12)  # the state is at (tau, sigma)
    # per-layer tau with sigma: at least as good, stationary, and above a coarse (tau_1, tau_2, sigma) grid
    taus = g.optimize_prior_precision("layer", sigma_noise=True)
    best = float(g.log_marginal_likelihood())
    assert taus.shape == (2,) and best >= top - 1e-7
    lt, ls = grad_log(g, taus, g.sigma_noise)
    assert float(lt.abs().max()) < 1e-5 and abs(float(ls)) < 1e-5
    coarse = [(a, b, s) for a in grid_t[::6] for b in grid_t[::6] for s in grid_s[::5]]
    assert best >= max(float(g.log_marginal_likelihood(torch.stack([a, b]), s)) for a, b, s in coarse) - 1e-9


def test_tuned_sigma_drives_the_predictives_and_survives_state_dict_and_save(tmp_path):
    net, model, x, y = regression_model()
    g = pp.laplace_guide(model, (x, y), "kron", prior_precision=1.0)
    g.optimize_prior_precision(sigma_noise=True)
    sigma = g.sigma_noise
    assert 0.1 < float(sigma) < 0.4  # the data's noise is 0.2; the likelihood says 1.0
    glm = pp.predict(model, g, x)
    _, fcov = g.glm_predictive(x)
    assert_close(glm.aleatoric_std, sigma.expand(len(x)), rtol=1e-12)
    assert_close(glm.std**2, fcov[:, 0, 0] + sigma**2, rtol=1e-10)
    with pytest.warns(pp.guides.laplace.guide.LaplaceSamplingWarning):
        mc = pp.predict(model, g, x, num_samples=8, method="mc")
    assert_close(mc.aleatoric_std, sigma.expand(len(x)), rtol=1e-12)
    # held-out tuning scores with the guide's sigma: the GLM log-likelihood under N(f, var + sigma^2)
    tau, scores = pp.guides.laplace.heldout.tune_prior_precision(g, (x, y), grid=[float(g.prior_precision)])
    expected = dist.Normal(glm.mean, glm.std).log_prob(y).mean()
    assert_close(torch.tensor(scores[0][1], dtype=D), expected, rtol=1e-10)
    # the state_dict keeps sigma, the residuals and the rescaled curvature
    empty = LaplaceGuide(model, None, "kron")
    empty.load_state_dict(g.state_dict())
    assert torch.equal(empty.sigma_noise, sigma)
    assert_close(empty.log_marginal_likelihood(), g.log_marginal_likelihood(), rtol=1e-12)
    assert_close(empty.log_marginal_likelihood(0.3, 0.5), g.log_marginal_likelihood(0.3, 0.5), rtol=1e-12)
    for k, m in g.marginals().items():
        assert torch.equal(empty.marginals()[k].scale, m.scale)
    pp.save(tmp_path / "g.pt", model, g)
    saved = pp.load(tmp_path / "g.pt")
    assert torch.equal(saved.guide.sigma_noise, sigma)
    assert_close(pp.predict(saved.model, saved.guide, x).std, glm.std, rtol=1e-12)


def test_set_sigma_noise_round_trip_and_float32():
    net, model, x, y = regression_model()
    g = pp.laplace_guide(model, (x, y), "full", prior_precision=0.7)
    before = {k: m.scale.clone() for k, m in g.marginals().items()}
    ev = g.log_marginal_likelihood()
    g.set_sigma_noise(0.3)
    assert not torch.equal(g.marginals()["2.weight"].scale, before["2.weight"])
    g.set_sigma_noise(1.0)  # back to the fit's noise: the same posterior and evidence
    for k, m in g.marginals().items():
        assert_close(m.scale, before[k], rtol=1e-10)
    assert_close(g.log_marginal_likelihood(), ev, rtol=1e-10)
    model32 = pp.bayesianize(copy.deepcopy(net).float(), dist.Normal(0.0, 1.0), pp.Gaussian(len(y), scale=1.0))
    g32 = pp.laplace_guide(model32, (x.float(), y.float()), "kron", prior_precision=1.0)  # the same MAP, float32
    g32.optimize_prior_precision(sigma_noise=True)
    g64 = pp.laplace_guide(model, (x, y), "kron", prior_precision=1.0)
    g64.optimize_prior_precision(sigma_noise=True)
    assert g32.sigma_noise.dtype == torch.float32
    assert float(g32.sigma_noise) == pytest.approx(float(g64.sigma_noise), rel=1e-3)
    assert float(g32.prior_precision) == pytest.approx(float(g64.prior_precision), rel=1e-2)


def test_noise_argument_errors():
    net, model, x, y = regression_model()
    g = pp.laplace_guide(model, (x, y), prior_precision=1.0)
    for bad, exc in [(-1.0, ValueError), (0.0, ValueError), (math.inf, ValueError), ("big", TypeError),
                     (True, TypeError), (torch.ones(2, dtype=D), ValueError)]:  # fmt: skip
        with pytest.raises(exc, match="sigma_noise"):
            g.log_marginal_likelihood(1.0, bad)
        with pytest.raises(exc, match="sigma_noise"):
            g.set_sigma_noise(bad)
    with pytest.raises(TypeError, match="sigma_noise"):
        g.optimize_prior_precision(sigma_noise="yes")
    with pytest.raises(ValueError, match="sigma_noise=False"):
        g.optimize_prior_precision(method="val", val_data=(x, y), sigma_noise=True)
    torch.manual_seed(0)
    xc, yc = torch.randn(20, 2, dtype=D), torch.randint(0, 3, (20,))
    cmodel = pp.bayesianize(nn.Sequential(nn.Linear(2, 3)).to(D), dist.Normal(0.0, 1.0), pp.Categorical(20))
    gc = pp.laplace_guide(cmodel, (xc, yc), prior_precision=1.0)
    assert gc.sigma_noise is None
    with pytest.raises(ValueError, match="Gaussian likelihood"):
        gc.log_marginal_likelihood(1.0, 0.5)
    with pytest.raises(ValueError, match="Gaussian likelihood"):
        gc.optimize_prior_precision(sigma_noise=True)
    with pytest.raises(ValueError, match="Gaussian likelihood"):
        gc.set_sigma_noise(0.5)
