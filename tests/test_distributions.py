"""Sparsity priors against scipy / quadrature / Monte Carlo; KL registrations; shapes; validation."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate as integrate
import scipy.stats as st
import torch
import torch.nn as nn
from pyro.distributions.kl import kl_divergence
from pyro.infer import TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroSample
from scipy.special import exp1

from pyro_prune.distributions import (
    MOLCHANOV_K,
    HalfCauchyScaleMixture,
    Horseshoe,
    ImproperLogUniform,
    LogUniform,
    LogUniformScaleMixture,
    half_cauchy_noncentred,
    log_exp1_scaled,
    molchanov_kl,
)
from tests.helpers import assert_close

DTYPES = [torch.float32, torch.float64]


# ------------------------------------------------------------------------------------------ log-uniform
@pytest.mark.parametrize("low,high", [(1e-3, 1.0), (0.5, 2.0), (1e-6, 10.0)])
def test_log_uniform_density_matches_scipy(low, high):
    d = LogUniform(low, high)
    w = torch.tensor([-high, -0.9 * high, -low * 1.5, low * 1.5, 0.7 * high, high], dtype=torch.float64)
    # |w| ~ scipy loguniform; the symmetric density halves it
    expected = np.log(0.5 * st.loguniform(low, high).pdf(np.abs(w.numpy())))
    assert_close(d.log_prob(w.float()).double(), torch.tensor(expected), rtol=1e-5)
    assert d.log_prob(torch.tensor(0.5 * low)).item() == -math.inf
    assert d.log_prob(torch.tensor(2.0 * high)).item() == -math.inf


def test_log_uniform_integrates_to_one_and_moments():
    d = LogUniform(torch.tensor(0.01, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    pdf = lambda w: math.exp(d.log_prob(torch.tensor(w, dtype=torch.float64)).item())  # noqa: E731
    mass = integrate.quad(pdf, 0.01, 2.0)[0] * 2
    assert mass == pytest.approx(1.0, abs=1e-8)
    var = 2 * integrate.quad(lambda w: w * w * pdf(w), 0.01, 2.0)[0]
    assert d.variance.item() == pytest.approx(var, rel=1e-7)
    ent = -2 * integrate.quad(lambda w: pdf(w) * math.log(pdf(w)), 0.01, 2.0, limit=200)[0]
    assert d.entropy().item() == pytest.approx(ent, rel=1e-6)
    assert d.mean.item() == 0.0


def test_log_uniform_sampling_ks_and_cdf_icdf():
    d = LogUniform(torch.tensor(1e-3, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    x = d.sample((20000,))
    assert (x.abs() >= 1e-3).all() and (x.abs() <= 1).all()
    ks = st.kstest(x.numpy(), lambda v: d.cdf(torch.tensor(v)).numpy())
    assert ks.pvalue > 0.01
    assert abs(float((x > 0).double().mean()) - 0.5) < 0.02
    u = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    assert_close(d.cdf(d.icdf(u)), u, rtol=1e-10, atol=1e-12)
    assert_close(x.pow(2).mean(), d.variance, rtol=0.05)


def test_improper_log_uniform():
    d = LogUniform()
    assert isinstance(d, ImproperLogUniform)
    w = torch.tensor([-2.0, 0.5, 3.0])
    assert_close(d.log_prob(w), -w.abs().log())
    with pytest.raises(NotImplementedError, match="cannot be sampled"):
        d.sample()
    e = d.expand([3, 2]).to_event(2)
    assert e.batch_shape == () and e.event_shape == (3, 2)
    assert e.log_prob(torch.ones(3, 2)).item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_shapes_expand_broadcast_and_dtype(dtype):
    low = torch.tensor([0.1, 0.2], dtype=dtype)
    d = LogUniform(low, 1.0)
    assert d.batch_shape == (2,) and d.sample((5,)).shape == (5, 2) and d.sample().dtype == dtype
    e = d.expand([3, 2])
    assert e.batch_shape == (3, 2) and e.log_prob(torch.full((3, 2), 0.5, dtype=dtype)).shape == (3, 2)
    assert e.to_event(1).event_shape == (2,)
    h = Horseshoe(torch.tensor([1.0, 2.0], dtype=dtype)).expand([4, 2])
    assert h.sample().shape == (4, 2) and h.log_prob(torch.ones(4, 2, dtype=dtype)).dtype == dtype


def test_bad_parameters_raise_under_validation():
    with pytest.raises(ValueError):
        LogUniform(1.0, 0.5)
    with pytest.raises(ValueError):
        LogUniform(1.0, 1.0)
    with pytest.raises(ValueError):
        LogUniform(float("nan"), 1.0)
    with pytest.raises(ValueError):
        LogUniform(-1.0, 1.0)
    with pytest.raises(ValueError, match="both"):
        LogUniform(1.0)
    with pytest.raises(ValueError):
        Horseshoe(0.0)
    with pytest.raises(ValueError):
        Horseshoe(float("nan"))
    with pytest.raises(ValueError, match="positive"):
        half_cauchy_noncentred(-1.0)


# ------------------------------------------------------------------------------------------ horseshoe
def test_exp1_scaled_against_scipy_across_scales():
    u = torch.tensor([1e-300, 1e-30, 1e-8, 1e-3, 0.3, 0.999, 1.0, 1.001, 2.5, 40.0, 600.0], dtype=torch.float64)
    ref = torch.tensor([math.log(math.exp(v) * exp1(v)) for v in u.tolist()], dtype=torch.float64)
    assert_close(log_exp1_scaled(u), ref, rtol=1e-10, atol=1e-12)
    big = torch.tensor([1e4, 1e8, 1e100], dtype=torch.float64)  # e^u E1(u) ~ 1/u (1 - 1/u + 2/u^2 - 6/u^3)
    assert_close(log_exp1_scaled(big), -big.log() + torch.log1p(-1 / big + 2 / big**2 - 6 / big**3), rtol=1e-12)


def test_horseshoe_density_matches_mixture_quadrature_and_integrates_to_one():
    s = 0.7
    d = HalfCauchyScaleMixture(torch.tensor(s, dtype=torch.float64))
    for w in (0.01, 0.3, 1.0, 5.0):
        # p(w) = int_0^inf N(w; 0, (z s)^2) * 2 / (pi (1 + z^2)) dz
        mix = integrate.quad(lambda z, w=w: st.norm.pdf(w, scale=z * s) * 2 / (math.pi * (1 + z * z)), 0, np.inf)[0]
        assert d.log_prob(torch.tensor(w, dtype=torch.float64)).exp().item() == pytest.approx(mix, rel=1e-7)
    pdf = lambda w: d.log_prob(torch.tensor(w, dtype=torch.float64)).exp().item()  # noqa: E731
    mass = 2 * (integrate.quad(pdf, 0, 1, limit=200)[0] + integrate.quad(pdf, 1, np.inf, limit=200)[0])
    assert mass == pytest.approx(1.0, abs=1e-6)


def test_horseshoe_sampling_matches_density():
    torch.manual_seed(0)
    d = Horseshoe(torch.tensor(1.0, dtype=torch.float64))
    x = d.sample((20000,))
    cdf = lambda v: integrate.quad(lambda w: d.log_prob(torch.tensor(w)).exp().item(), 0, abs(v))[0]  # noqa: E731
    # compare P(|w| < t) at a few points with the sample frequency (binomial standard error ~0.0035)
    for t in (0.1, 1.0, 5.0):
        assert abs(float((x.abs() < t).double().mean()) - 2 * cdf(t)) < 0.015


@pytest.mark.parametrize("dtype", DTYPES)
def test_horseshoe_gradients_finite_at_the_edges(dtype):
    w = torch.tensor([1e-6, -1e-3, 1e3, -1e6], dtype=dtype, requires_grad=True)
    lp = Horseshoe(torch.tensor(1.0, dtype=dtype)).log_prob(w)
    assert torch.isfinite(lp).all()
    (g,) = torch.autograd.grad(lp.sum(), w)
    assert torch.isfinite(g).all()
    w2 = torch.tensor([1e-6, 5.0], dtype=dtype, requires_grad=True)
    (g2,) = torch.autograd.grad(LogUniform(1e-7, 10.0).log_prob(w2).sum(), w2)
    assert torch.isfinite(g2).all()


def test_noncentred_decomposition_reproduces_half_cauchy():
    torch.manual_seed(0)
    b = 1.5
    ga, ig = half_cauchy_noncentred(torch.tensor(b, dtype=torch.float64))
    z = (ga.sample((40000,)) * ig.sample((40000,))).sqrt()
    ks = st.kstest(z.numpy(), st.halfcauchy(scale=b).cdf)
    assert ks.pvalue > 0.01


def test_log_uniform_scale_mixture_pieces():
    m = LogUniformScaleMixture([5])
    assert isinstance(m.scale_prior(), ImproperLogUniform) and m.scale_prior().batch_shape == (5,)
    c = m.conditional(torch.tensor([-2.0, 0.5]))
    assert_close(c.scale, torch.tensor([2.0, 0.5]))
    assert m.marginal([3, 5]).batch_shape == (3, 5)


# ------------------------------------------------------------------------------------------ KL
def test_molchanov_kl_within_0_01_of_exact_over_log_alpha_grid():
    """KL(N(mu, alpha mu^2) || 1/|w|) = const - log(alpha)/2 + E log|1 + sqrt(alpha) eps| (quadrature);
    the approximation's constant makes KL -> 0 as alpha -> inf, where the exact part tends to E log|eps|."""
    c = -(0.5772156649015329 + math.log(2)) / 2  # E log|eps|, eps ~ N(0, 1)
    worst = 0.0
    for la in np.linspace(-8, 8, 33):
        a = math.exp(la)
        f = lambda e, a=a: math.log(abs(1 + math.sqrt(a) * e)) * st.norm.pdf(e)  # noqa: E731
        pole = -1 / math.sqrt(a)
        e_log = sum(integrate.quad(f, lo, hi, limit=400)[0] for lo, hi in ((-np.inf, pole), (pole, np.inf)))
        exact = -0.5 * la + e_log - c
        approx = molchanov_kl(torch.tensor(la, dtype=torch.float64)).item()
        worst = max(worst, abs(approx - exact))
    assert worst < 0.01, worst


def test_registered_normal_log_uniform_kl_and_trace_mean_field_uses_it():
    loc = torch.tensor([[0.5, -1.0], [2.0, 0.1]])
    scale = torch.tensor([[0.1, 0.3], [0.5, 0.2]])
    q = dist.Normal(loc, scale).to_event(2)
    p = LogUniform().expand([2, 2]).to_event(2)
    la = 2 * scale.log() - (loc.pow(2) + 1e-8).log()
    k1, k2, k3 = MOLCHANOV_K
    expected = (k1 - k1 * torch.sigmoid(k2 + k3 * la) + 0.5 * torch.log1p(torch.exp(-la))).sum()
    assert_close(kl_divergence(q, p), expected, rtol=1e-5)

    def model():
        pyro.sample("w", LogUniform().expand([2, 2]).to_event(2))

    def guide():
        pyro.sample("w", dist.Normal(loc, scale).to_event(2))

    assert_close(TraceMeanField_ELBO().differentiable_loss(model, guide), expected, rtol=1e-5)


@pytest.mark.parametrize("p_cls", ["gamma", "inverse_gamma"])
def test_lognormal_kls_match_monte_carlo(p_cls):
    torch.manual_seed(0)
    q = dist.LogNormal(torch.tensor(-0.3, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64))
    a, b = torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    p = dist.Gamma(a, b) if p_cls == "gamma" else dist.InverseGamma(a, b)
    z = q.sample((200000,))
    terms = q.log_prob(z) - p.log_prob(z)
    se = terms.std() / math.sqrt(len(z))
    assert abs(kl_divergence(q, p) - terms.mean()) < 3 * se
    # through Independent as well
    qi = dist.LogNormal(q.loc.expand(3), q.scale.expand(3)).to_event(1)
    pi = (dist.Gamma(a, b) if p_cls == "gamma" else dist.InverseGamma(a, b)).expand([3]).to_event(1)
    assert_close(kl_divergence(qi, pi), 3 * kl_divergence(q, p), rtol=1e-10)


def test_priors_as_pyro_sample_inside_a_pyro_module():
    class Net(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[nn.Linear](3, 2)
            self.fc.weight = PyroSample(LogUniform(1e-3, 1.0).expand([2, 3]).to_event(2))
            self.fc.bias = PyroSample(Horseshoe(1.0).expand([2]).to_event(1))

        def forward(self, x):
            return self.fc(x)

    tr = pyro.poutine.trace(Net()).get_trace(torch.randn(4, 3))
    assert tr.nodes["fc.weight"]["value"].shape == (2, 3)
    tr.compute_log_prob()
    assert torch.isfinite(tr.nodes["fc.weight"]["log_prob_sum"]) and torch.isfinite(tr.nodes["fc.bias"]["log_prob_sum"])
