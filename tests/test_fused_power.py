"""The power-likelihood objective of ``fit(..., alpha_on="likelihood")`` (Li & Gal 2017) on the fused path.

For a bare linear layer with a Gaussian likelihood the expected power likelihood has a closed form: with local
reparameterization the pre-activation is :math:`f \\sim \\mathcal N(m, v)`, :math:`m = x\\theta + \\theta_b`,
:math:`v = x^2\\sigma^2 + \\sigma_b^2`, and

.. math::

    \\mathbb E_f\\big[\\mathcal N(y; f, s^2)^{\\gamma}\\big]
    = (2\\pi s^2)^{-\\gamma/2}\\,(2\\pi s^2/\\gamma)^{1/2}\\,\\mathcal N(y;\\, m,\\, v + s^2/\\gamma),

so the many-particle estimate of :math:`\\frac1\\gamma\\log\\mathbb E[p^\\gamma]`, :math:`\\gamma = 1-\\alpha`, is
checked against it.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune.fused import can_fuse, fused_loss, power_mean_log
from tests.helpers import assert_close

D = torch.float64


def test_power_mean_log_against_the_formula_and_its_limits():
    g = torch.Generator().manual_seed(0)
    ll = -torch.rand(7, 5, generator=g, dtype=D) * 4
    for alpha in (0.0, 0.5, -1.0, 2.0):
        gamma = 1 - alpha
        expected = torch.log(torch.exp(gamma * ll).mean(0)) / gamma
        assert_close(power_mean_log(ll, alpha), expected, rtol=1e-12)
    assert_close(power_mean_log(ll, 1.0), ll.mean(0), rtol=1e-12)
    assert_close(power_mean_log(ll, 1.0 - 1e-7), ll.mean(0), atol=1e-5)  # the ELBO is the limit
    assert_close(power_mean_log(ll[:1], 0.3), ll[0], rtol=1e-12)  # one particle: the log-likelihood itself
    # alpha < 1 weighs the best particles: never below the mean (Jensen), and below the max
    assert (power_mean_log(ll, 0.5) >= ll.mean(0) - 1e-12).all()
    assert (power_mean_log(ll, 0.5) <= ll.max(0).values + 1e-12).all()


def _bare_linear(d=3, n=40, sigma=0.5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g, dtype=D)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=D) + 0.3 + sigma * torch.randn(n, generator=g, dtype=D)
    pyro.set_rng_seed(0)
    model = pp.bayesianize(nn.Linear(d, 1).double(), prior=pp.LogUniform(), likelihood=pp.Gaussian(n, scale=sigma))
    guide = pp.AutoSparseVD(model, init_log_sigma2=-3.0)
    guide(x, y)
    return model, guide, x, y, sigma


@pytest.mark.parametrize("alpha", [0.5, 0.0])
def test_power_likelihood_equals_the_gaussian_closed_form(alpha):
    model, guide, x, y, s = _bare_linear()
    xb, yb = x[:5], y[:5]
    theta, ls2 = guide._params("weight")
    theta_b, ls2_b = guide._params("bias")
    with torch.no_grad():
        m = xb @ theta.reshape(-1) + theta_b.reshape(())
        v = xb.pow(2) @ ls2.exp().reshape(-1) + ls2_b.exp().reshape(())
        gamma = 1 - alpha
        log_e = -gamma / 2 * math.log(2 * math.pi * s**2) + 0.5 * math.log(2 * math.pi * s**2 / gamma)
        log_e = log_e + dist.Normal(m, (v + s**2 / gamma).sqrt()).log_prob(yb)
        expected = -(log_e / gamma).sum() * (model.dataset_size / len(xb))
        pyro.set_rng_seed(3)
        loss, ell = fused_loss(model, guide, xb, yb, beta=0.0, alpha=alpha, num_particles=100000)
    assert_close(loss, expected, rtol=2e-3)
    assert ell < 0


def test_one_particle_at_alpha_one_is_the_fused_elbo():
    model, guide, x, y, _ = _bare_linear()
    pyro.set_rng_seed(5)
    a = fused_loss(model, guide, x, y, beta=1.0)[0]
    pyro.set_rng_seed(5)
    b = fused_loss(model, guide, x, y, beta=1.0, alpha=1.0, num_particles=1)[0]
    assert torch.equal(a, b)


def _digits_model():
    split = pp.data.load_digits()
    x, y = split.x_train[:256], split.y_train[:256]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    model = pp.bayesianize(net, prior=pp.LogUniform(), likelihood=pp.Categorical(len(y)))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=False)
    return model, loader


def test_fit_trains_sparse_vd_with_the_power_likelihood_on_the_fused_path():
    model, loader = _digits_model()
    guide = pp.AutoSparseVD(model)
    pyro.set_rng_seed(0)
    history = pp.fit(model, guide, loader, epochs=3, alpha=0.5, num_particles=4, alpha_on="likelihood", progress=False)
    assert history.state.path == "fused"
    assert can_fuse(model, guide, 0.5, 4, "likelihood") and not can_fuse(model, guide, 0.5, 4)
    assert history["loss"][-1] < history["loss"][0]
    assert all(math.isfinite(v) for v in history["loss"])


def test_joint_renyi_refuses_an_improper_prior_and_likelihood_needs_a_local_reparam_guide():
    model, loader = _digits_model()
    with pytest.raises(ValueError, match="alpha_on='likelihood'.*proper prior|improper"):
        pp.fit(model, pp.AutoSparseVD(model), loader, epochs=1, alpha=0.5, num_particles=2, progress=False)
    proper = pp.bayesianize(model.template(), prior=dist.Normal(0.0, 1.0), likelihood=pp.Categorical(256))
    with pytest.raises(ValueError, match="alpha_on='likelihood' needs"):
        pp.fit(proper, AutoNormal(proper), loader, epochs=1, alpha=0.5, alpha_on="likelihood", progress=False)
    with pytest.raises(ValueError, match="alpha_on"):
        pp.fit(proper, AutoNormal(proper), loader, epochs=1, alpha_on="data", progress=False)
    # the joint bound with a proper prior still runs through Pyro's RenyiELBO
    history = pp.fit(proper, AutoNormal(proper), loader, epochs=1, alpha=0.5, num_particles=2, progress=False)
    assert history.state.path == "svi"
