"""Sparsity priors against scipy / quadrature / Monte Carlo; KL registrations; shapes; validation; Pyro use."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate as integrate
import scipy.stats as st
import torch
import torch.nn as nn
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from scipy.special import digamma, exp1
from torch.distributions import kl_divergence

from pyro_prune.distributions import (
    LOG_ALPHA_CLIP,
    MOLCHANOV_K,
    HalfCauchyScaleMixture,
    Horseshoe,
    ImproperLogUniform,
    LogUniform,
    LogUniformScaleMixture,
    half_cauchy_noncentred,
    init_improper_to_zero,
    log_exp1_scaled,
    molchanov_kl,
    molchanov_kl_sum,
    normal_log_alpha,
)
from tests.helpers import assert_close

DTYPES = [torch.float32, torch.float64]
F64 = torch.float64
E_LOG_ABS_EPS = -(0.5772156649015329 + math.log(2)) / 2  # E log|eps|, eps ~ N(0, 1)


def t64(x):
    return torch.as_tensor(x, dtype=F64)


# ================================================================================================ log-uniform
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("low,high", [(1e-3, 1.0), (0.5, 2.0), (1e-6, 10.0)])
def test_log_uniform_log_prob_matches_scipy(low, high, dtype):
    d = LogUniform(torch.tensor(low, dtype=dtype), torch.tensor(high, dtype=dtype))
    w = np.array([-high, -0.9 * high, -1.5 * low, 1.5 * low, 0.7 * high, high])
    # |w| ~ scipy's loguniform; the random sign halves the density
    expected = np.log(0.5 * st.loguniform(low, high).pdf(np.abs(w)))
    lp = d.log_prob(torch.tensor(w, dtype=dtype))
    assert lp.dtype == dtype
    assert_close(lp.double(), torch.tensor(expected), rtol=1e-5 if dtype == torch.float32 else 1e-12)
    outside = torch.tensor([0.0, 0.5 * low, -0.5 * low, 2.0 * high, -2.0 * high], dtype=dtype)
    assert (d.log_prob(outside) == -math.inf).all()


def test_log_uniform_integrates_to_one_and_moments_by_quadrature():
    lo, hi = 0.01, 2.0
    d = LogUniform(t64(lo), t64(hi))

    def pdf(w):
        return math.exp(d.log_prob(t64(w)).item())

    assert 2 * integrate.quad(pdf, lo, hi)[0] == pytest.approx(1.0, abs=1e-10)
    assert 2 * integrate.quad(lambda w: w * w * pdf(w), lo, hi)[0] == pytest.approx(d.variance.item(), rel=1e-9)
    ent = -2 * integrate.quad(lambda w: pdf(w) * math.log(pdf(w)), lo, hi, limit=200)[0]
    assert d.entropy().item() == pytest.approx(ent, rel=1e-9)
    assert d.mean.item() == 0.0 and d.stddev.item() == pytest.approx(math.sqrt(d.variance.item()))
    # the cdf is the integral of the density
    for w in (-1.5, -0.02, 0.0, 0.005, 0.3, 1.9, 3.0):
        expected = 0.5 + math.copysign(integrate.quad(pdf, lo, max(lo, min(hi, abs(w))))[0], w)
        assert d.cdf(t64(w)).item() == pytest.approx(expected, abs=1e-10)


def test_log_uniform_sampling_ks_moments_and_cdf_icdf():
    d = LogUniform(t64(1e-3), t64(1.0))
    x = d.sample((20000,))
    assert x.dtype == F64 and (x.abs() >= 1e-3).all() and (x.abs() <= 1).all()
    assert st.kstest(x.numpy(), lambda v: d.cdf(t64(v)).numpy()).pvalue > 0.01
    assert st.kstest(x.abs().numpy(), st.loguniform(1e-3, 1.0).cdf).pvalue > 0.01
    n = len(x)
    assert abs(x.mean().item()) < 4 * math.sqrt(d.variance.item() / n)
    se2 = x.pow(2).std().item() / math.sqrt(n)
    assert abs(x.pow(2).mean().item() - d.variance.item()) < 4 * se2
    assert abs((x > 0).double().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(n)
    u = torch.linspace(0.001, 0.999, 101, dtype=F64)
    assert_close(d.cdf(d.icdf(u)), u, rtol=1e-12, atol=1e-12)
    w = torch.cat([-d.icdf(u[:40]).abs(), d.icdf(u[60:])])
    assert_close(d.icdf(d.cdf(w)), w, rtol=1e-10)


def test_log_uniform_rsample_gradients():
    low = t64(0.1).requires_grad_()
    high = t64(5.0).requires_grad_()
    x = LogUniform(low, high).rsample((1000,))
    g = torch.autograd.grad(x.abs().mean(), (low, high))
    assert all(torch.isfinite(gi) and gi > 0 for gi in g)


def test_improper_log_uniform():
    d = LogUniform()
    assert type(d) is ImproperLogUniform and d.batch_shape == () and d.support is dist.constraints.real
    w = torch.tensor([-2.0, 0.5, 3.0, 1e-30])
    assert_close(d.log_prob(w), -w.abs().log())
    assert d.log_prob(torch.tensor(0.0)).item() == math.inf
    with pytest.raises(NotImplementedError, match="cannot be sampled"):
        d.sample()
    with pytest.raises(NotImplementedError, match="no normalizer"):
        d.rsample((3,))
    with pytest.raises(NotImplementedError):
        d.mean  # noqa: B018
    e = d.expand([3, 2])
    assert type(e) is ImproperLogUniform and e.batch_shape == (3, 2)
    assert e.log_prob(torch.tensor(2.0)).shape == (3, 2)  # broadcast like a distribution with parameters
    f = e.to_event(2)
    assert f.batch_shape == () and f.event_shape == (3, 2)
    assert_close(f.log_prob(torch.full((4, 3, 2), math.e)), torch.full((4,), -6.0))

    def model():
        pyro.sample("w", LogUniform().expand([2]).to_event(1))

    with pytest.raises(NotImplementedError, match="cannot be sampled"):
        model()


def test_pickle_and_deepcopy_keep_the_bounds():
    d = LogUniform(torch.tensor([0.1, 0.2]), 3.0).expand([4, 2])
    for e in (copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert type(e) is LogUniform and e.batch_shape == (4, 2)
        assert_close(e.low, d.low) and assert_close(e.high, d.high)
    assert type(copy.deepcopy(LogUniform())) is ImproperLogUniform
    h = pickle.loads(pickle.dumps(Horseshoe(2.0).expand([3])))
    assert type(h) is HalfCauchyScaleMixture and h.batch_shape == (3,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
def test_shapes_expand_broadcast_and_dtype(dtype, sample_shape):
    low = torch.tensor([0.1, 0.2], dtype=dtype)
    d = LogUniform(low, 1.0)  # float high broadcasts against a tensor low
    assert d.batch_shape == (2,) and d.high.dtype == dtype
    x = d.sample(sample_shape)
    assert x.shape == sample_shape + (2,) and x.dtype == dtype and d.log_prob(x).shape == sample_shape + (2,)
    e = d.expand([3, 2])
    assert e.batch_shape == (3, 2) and e.sample(sample_shape).shape == sample_shape + (3, 2)
    assert e.log_prob(torch.full((3, 2), 0.5, dtype=dtype)).shape == (3, 2)
    assert e.to_event(1).event_shape == (2,) and e.to_event(1).batch_shape == (3,)
    assert e.to_event(2).log_prob(e.sample(sample_shape)).shape == sample_shape
    one = torch.tensor(1.0, dtype=dtype)
    for h in (Horseshoe(torch.stack([one, 2 * one])).expand([4, 2]), Horseshoe(one)):
        y = h.sample(sample_shape)
        assert y.shape == sample_shape + h.batch_shape and y.dtype == dtype
        assert h.log_prob(y).shape == sample_shape + h.batch_shape and h.log_prob(y).dtype == dtype
    assert ImproperLogUniform([2]).log_prob(torch.ones(sample_shape + (2,), dtype=dtype)).dtype == dtype


def test_bad_parameters_raise_under_validation():
    for low, high in [(1.0, 0.5), (1.0, 1.0), (float("nan"), 1.0), (0.1, float("nan")), (-1.0, 1.0), (0.0, 1.0)]:
        with pytest.raises(ValueError):
            LogUniform(low, high)
    with pytest.raises(ValueError, match="low < high"):
        LogUniform(torch.tensor([0.1, 2.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="both"):
        LogUniform(1.0)
    with pytest.raises(ValueError, match="both"):
        LogUniform(high=1.0)
    for s in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            Horseshoe(s)
    for s in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive"):
            half_cauchy_noncentred(s)
    with pytest.raises(ValueError, match="scale_in"):
        half_cauchy_noncentred(1.0, scale_in="beta")
    with pytest.raises(ValueError, match="group_dim"):
        LogUniformScaleMixture((3, 2), group_dim=2)
    with pytest.raises(ValueError, match="non-empty"):
        LogUniformScaleMixture(())
    with pytest.raises(ValueError):  # a NaN value fails the real support under validation
        LogUniform(0.1, 1.0).log_prob(torch.tensor(float("nan")))
    # without validation the constructor does not check
    LogUniform(1.0, 0.5, validate_args=False)
    Horseshoe(-1.0, validate_args=False)


# ================================================================================================ horseshoe
def test_exp1_scaled_against_scipy_across_scales():
    u = torch.cat([torch.logspace(-300, 2.8, 400, dtype=F64), torch.linspace(0.9, 1.1, 41, dtype=F64)])
    ref = torch.tensor([math.log(math.exp(v) * exp1(v)) for v in u.tolist()], dtype=F64)
    assert_close(log_exp1_scaled(u), ref, rtol=0, atol=5e-15)
    f32 = u > 1e-37  # float32's range
    assert_close(log_exp1_scaled(u[f32].float()).double(), ref[f32], rtol=0, atol=2e-6)
    big = torch.tensor([1e4, 1e6, 1.0001e6, 1e8, 1e100, 1e300], dtype=F64)  # e^u E1(u) ~ (1 - 1/u + 2/u^2 - 6/u^3)/u
    assert_close(log_exp1_scaled(big), -big.log() + torch.log1p(-1 / big + 2 / big**2 - 6 / big**3), rtol=1e-15)
    assert torch.isnan(log_exp1_scaled(torch.tensor([float("nan"), 1.0]))[0])


def test_exp1_scaled_accurate_on_both_sides_of_the_branch_switches():
    u = t64([1 - 1e-12, 1.0, 1 + 1e-12])
    ref = t64([math.log(math.exp(v) * exp1(v)) for v in u.tolist()])
    assert_close(log_exp1_scaled(u), ref, rtol=0, atol=3e-15)
    u = t64(1e6) * t64([1 - 1e-12, 1.0, 1 + 1e-12])  # five terms of the asymptotic series are exact to 1e-30 here
    ref = torch.log(sum((-1) ** k * math.factorial(k) / u ** (k + 1) for k in range(5)))
    assert_close(log_exp1_scaled(u), ref, rtol=1e-15)


def test_horseshoe_density_matches_scipy_quadrature_and_integrates_to_one():
    s = 0.7
    d = HalfCauchyScaleMixture(t64(s))
    for w in (1e-8, 0.01, 0.3, 1.0, 5.0, 15.0):
        # p(w) = int_0^inf N(w; 0, (z s)^2) 2 / (pi (1 + z^2)) dz, and the closed form with scipy's E1
        mix = integrate.quad(lambda z, w=w: st.norm.pdf(w, scale=z * s) * 2 / (math.pi * (1 + z * z)), 0, np.inf)[0]
        u = w * w / (2 * s * s)
        closed = math.exp(u) * exp1(u) / (math.sqrt(2 * math.pi**3) * s)
        lp = d.log_prob(t64(w)).item()
        assert lp == pytest.approx(math.log(closed), abs=1e-12)
        assert math.exp(lp) == pytest.approx(mix, rel=1e-6)
        # Carvalho et al. (2010), theorem 1: K/2 log(1 + 4/x^2) < s p(w) < K log(1 + 2/x^2), x = w/s
        k, x2 = 1 / math.sqrt(2 * math.pi**3), (w / s) ** 2
        assert k / 2 * math.log1p(4 / x2) < s * math.exp(lp) < k * math.log1p(2 / x2)
    assert_close(d.log_prob(t64([-1.3, 1.3]))[0], d.log_prob(t64(1.3)))

    def pdf(w):
        return math.exp(d.log_prob(t64(w)).item())

    mass = 2 * (integrate.quad(pdf, 0, 1, limit=200)[0] + integrate.quad(pdf, 1, np.inf, limit=200)[0])
    assert mass == pytest.approx(1.0, abs=1e-8)


def test_horseshoe_sampling_histogram_matches_density():
    """Chi-square test of the sampled |w| on 12 bins whose probabilities come from quadrature of the density."""
    d = Horseshoe(t64(1.5))
    x = d.sample((20000,)).abs().numpy()
    edges = np.concatenate([[0.0], 1.5 * np.logspace(-3, 3, 11), [np.inf]])
    counts = np.histogram(x, edges)[0]

    def pdf(w):
        return 2 * math.exp(d.log_prob(t64(w)).item())

    probs = np.array([integrate.quad(pdf, a, b, limit=200)[0] for a, b in zip(edges[:-1], edges[1:])])
    assert probs.sum() == pytest.approx(1.0, abs=1e-7)
    assert st.chisquare(counts, probs / probs.sum() * len(x)).pvalue > 0.001
    assert np.isnan(d.mean.item()) and d.variance.item() == math.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_finite_at_the_edges(dtype):
    w = torch.tensor([1e-30, -1e-6, 1e-3, 1.4, 1.5, 1e3, -1e6, 1e30], dtype=dtype, requires_grad=True)
    for d in (Horseshoe(torch.tensor(1.0, dtype=dtype)), LogUniform().expand([8])):
        lp = d.log_prob(w)
        assert lp.dtype == dtype and torch.isfinite(lp).all()
        (g,) = torch.autograd.grad(lp.sum(), w)
        assert torch.isfinite(g).all()
    # horseshoe: a finite (log) pole at 0 with zero gradient there
    z = torch.zeros(2, dtype=dtype, requires_grad=True)
    lp = Horseshoe(torch.tensor(1.0, dtype=dtype)).log_prob(z)
    (g,) = torch.autograd.grad(lp.sum(), z)
    assert torch.isfinite(lp).all() and (g == 0).all()
    # bounded log-uniform: -inf outside with zero (not NaN) gradient, finite inside near the bounds
    v = torch.tensor([0.0, 1e-8, 2e-7, 9.99, 11.0], dtype=dtype, requires_grad=True)
    lp = LogUniform(torch.tensor(1e-7, dtype=dtype), torch.tensor(10.0, dtype=dtype)).log_prob(v)
    (g,) = torch.autograd.grad(lp.sum(), v)
    assert torch.isfinite(g).all() and (g[[0, 1, 4]] == 0).all() and torch.isfinite(lp[[2, 3]]).all()


def test_horseshoe_log_prob_gradcheck_across_branches():
    # u = w^2 / 2 crosses the series / continued-fraction (u = 1) and continued-fraction / asymptotic (1e6) switches
    w = torch.tensor([1e-3, 0.9, 1.5, 30.0, 1500.0], dtype=F64, requires_grad=True)
    scale = t64(1.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, s: Horseshoe(s).log_prob(w), (w, scale))


@pytest.mark.parametrize("scale_in", ["inverse_gamma", "gamma"])
def test_noncentred_decomposition_reproduces_half_cauchy(scale_in):
    b = 1.5
    ga, ig = half_cauchy_noncentred(t64(b), scale_in=scale_in)
    assert isinstance(ga, dist.Gamma) and isinstance(ig, dist.InverseGamma) and ga.concentration.dtype == F64
    z = (ga.sample((20000,)) * ig.sample((20000,))).sqrt()
    assert st.kstest(z.numpy(), st.halfcauchy(scale=b).cdf).pvalue > 0.01
    pair = half_cauchy_noncentred(torch.ones(3))
    assert pair.gamma.batch_shape == (3,) and pair.inverse_gamma.batch_shape == (3,)


# ================================================================================================ scale mixture
@pytest.mark.parametrize("group_dim", [0, 1, -1])
def test_log_uniform_scale_mixture_log_prob(group_dim):
    d = LogUniformScaleMixture((3, 4), group_dim=group_dim)
    assert d.event_shape == (3, 4) and d.batch_shape == () and d.support is dist.constraints.real
    n_groups = 3 if group_dim == 0 else 4
    assert d.num_groups == n_groups and d.group_size == 12 // n_groups
    w = torch.randn(5, 3, 4, dtype=F64)
    norms = w.pow(2).sum(2 if group_dim == 0 else 1).sqrt()
    assert_close(d.log_prob(w), -(12 // n_groups) * norms.log().sum(-1))
    # one weight per group: the improper log-uniform
    e = LogUniformScaleMixture((6,))
    v = torch.randn(6)
    assert_close(e.log_prob(v), ImproperLogUniform([6]).to_event(1).log_prob(v))


def test_log_uniform_scale_mixture_is_the_marginal_of_the_hierarchy():
    """p(w_g) = int N(w_g; 0, z^2 I) dz / z by quadrature, up to a constant: compare log-density differences."""
    n = 3
    d = LogUniformScaleMixture((1, n), group_dim=0)  # one group of n weights

    def marginal(w):
        r2 = float((w**2).sum())

        def integrand(z):
            return (2 * math.pi * z * z) ** (-n / 2) * math.exp(-r2 / (2 * z * z)) / z

        return integrate.quad(integrand, 0, np.inf)[0]

    a, b = np.array([[0.3, -0.1, 0.2]]), np.array([[2.0, 1.0, -0.5]])
    expected = math.log(marginal(a)) - math.log(marginal(b))
    got = d.log_prob(t64(a)) - d.log_prob(t64(b))
    assert got.item() == pytest.approx(expected, abs=1e-8)


def test_log_uniform_scale_mixture_pieces_and_pyro_use():
    d = LogUniformScaleMixture((2, 5), group_dim=1)
    sp = d.scale_prior()
    assert type(sp) is ImproperLogUniform and sp.batch_shape == (5,)
    z = torch.tensor([[-2.0, 0.5, 1.0, 3.0, 0.1]]).expand(4, 5)
    c = d.conditional(z)
    assert c.batch_shape == (4,) and c.event_shape == (2, 5)
    assert_close(c.base_dist.scale[0], z[0].abs().expand(2, 5))
    with pytest.raises(ValueError, match="shape"):
        d.conditional(torch.ones(2))
    with pytest.raises(NotImplementedError, match="improper"):
        d.sample()
    e = d.expand([7])
    assert e.batch_shape == (7,) and e.group_dim == 1 and e.scale_prior().batch_shape == (7, 5)
    assert e.log_prob(torch.randn(2, 5)).shape == (7,)
    # the conditional KL does not depend on z
    mu, ls2 = torch.randn(2, 5, dtype=F64), torch.randn(2, 5, dtype=F64)
    for zz in (0.3, 4.0):
        q = dist.Normal(zz * mu, zz * (0.5 * ls2).exp())
        p = dist.Normal(torch.zeros_like(mu), torch.full_like(mu, zz))
        assert_close(LogUniformScaleMixture.conditional_kl(mu, ls2), kl_divergence(q, p), rtol=1e-12)

    def model():
        pyro.sample("w", LogUniformScaleMixture((2, 5), group_dim=1))

    guide = AutoNormal(model, init_loc_fn=init_improper_to_zero)
    loss = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()).step()
    assert math.isfinite(loss)


# ================================================================================================ KL
def _exact_kl_log_uniform(log_alpha: float) -> float:
    """KL(N(mu, alpha mu^2) || 1/|w|) with the additive constant making it 0 as alpha -> inf:
    E log|eps + alpha^(-1/2)| - E log|eps| = (E_K psi(1/2 + K) - psi(1/2)) / 2, K ~ Poisson(1 / (2 alpha))."""
    lam = 0.5 * math.exp(-log_alpha)
    k = np.arange(int(lam + 20 * math.sqrt(lam) + 50))
    return 0.5 * (float(np.sum(st.poisson.pmf(k, lam) * digamma(0.5 + k))) - digamma(0.5))


def test_exact_kl_reference_matches_quadrature():
    for la in (-6.0, -2.0, 0.0, 3.0):
        m = math.exp(-la / 2)
        f = lambda x, m=m: math.log(abs(x)) * st.norm.pdf(x - m)  # noqa: E731
        quad = sum(integrate.quad(f, a, b, limit=400)[0] for a, b in ((-np.inf, 0), (0, m), (m, np.inf)))
        assert _exact_kl_log_uniform(la) == pytest.approx(quad - E_LOG_ABS_EPS, abs=1e-9)


def test_molchanov_kl_within_0_01_of_exact_over_log_alpha_grid():
    grid = np.linspace(-8, 8, 321)
    approx = molchanov_kl(torch.tensor(grid, dtype=F64)).numpy()
    err = approx - np.array([_exact_kl_log_uniform(la) for la in grid])
    worst = np.abs(err).max()
    # measured: max |error| 0.00937 at log alpha = -3.5; 0.0006 as alpha -> 0 (k1 vs (gamma + log 2) / 2)
    assert worst < 0.01, (worst, grid[np.abs(err).argmax()])
    assert 0.009 < worst  # the paper's approximation is not better than that: catches a changed constant
    assert abs(err[0]) < 1e-3 and abs(err[-1]) < 1e-5
    # as alpha -> 0 the exact KL tends to -log(alpha)/2 + (gamma + log 2)/2, the approximation to -log(alpha)/2 + k1
    assert MOLCHANOV_K[0] + E_LOG_ABS_EPS == pytest.approx(0.00058, abs=1e-5)


def test_molchanov_kl_against_monte_carlo_of_the_registered_kl():
    """MC of E_q[log q(w) + log|w|] for q = N(mu, alpha mu^2) at several mu (the KL is free of mu), minus the
    constant -log(2 pi e)/2 + E log|eps|, against the registered KL: within 0.01 + 3 standard errors."""
    n = 400_000
    for la in np.linspace(-8, 8, 9):
        for mu in (-0.05, 3.0):
            q = dist.Normal(t64(mu), t64(abs(mu) * math.exp(la / 2)))
            w = q.sample((n,))
            terms = q.log_prob(w) + w.abs().log()
            mc = terms.mean().item() - (-0.5 * math.log(2 * math.pi * math.e) + E_LOG_ABS_EPS)
            se = terms.std().item() / math.sqrt(n)
            kl = kl_divergence(q, LogUniform()).item()
            assert abs(kl - mc) < 0.01 + 3 * se, (la, mu, kl, mc, se)
            assert abs(_exact_kl_log_uniform(la) - mc) < 4 * se + 1e-9, (la, mu)


def test_molchanov_kl_clip_and_formula():
    la = torch.tensor([-30.0, -LOG_ALPHA_CLIP, 0.0, LOG_ALPHA_CLIP, 30.0], dtype=F64)
    kl = molchanov_kl(la)
    assert kl[0] == kl[1] and kl[3] == kl[4]
    k1, k2, k3 = MOLCHANOV_K
    lac = la.clamp(-10, 10)
    expected = -(k1 * torch.sigmoid(k2 + k3 * lac) - 0.5 * torch.log1p(torch.exp(-lac)) - k1)
    assert_close(kl, expected, rtol=1e-14)
    assert molchanov_kl(torch.tensor(8.0), clip=8.0) == molchanov_kl(torch.tensor(20.0), clip=8.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_registered_normal_log_uniform_kl_through_independent_and_expand(dtype):
    loc = torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.1, -3.0]], dtype=dtype)
    scale = torch.tensor([[0.1, 0.3, 1.0], [0.5, 0.2, 0.01]], dtype=dtype)
    la = 2 * scale.log() - (loc.pow(2) + 1e-8).log()
    assert_close(normal_log_alpha(loc, scale), la)
    k1, k2, k3 = MOLCHANOV_K
    la_c = la.clamp(-10, 10)
    per_weight = k1 - k1 * torch.sigmoid(k2 + k3 * la_c) + 0.5 * torch.log1p(torch.exp(-la_c))
    kl = kl_divergence(dist.Normal(loc, scale), LogUniform())
    assert kl.shape == (2, 3) and kl.dtype == dtype
    assert_close(kl, per_weight, rtol=1e-5)
    q = dist.Normal(loc, scale).to_event(2)
    for p in (LogUniform().expand([2, 3]).to_event(2), ImproperLogUniform([3]).to_event(1).expand([2]).to_event(1)):
        assert_close(kl_divergence(q, p), per_weight.sum(), rtol=1e-5)
    # q expanded from a scalar; p broader than q in the batch
    qe = dist.Normal(torch.tensor(1.0, dtype=dtype), torch.tensor(0.5, dtype=dtype)).expand([4])
    assert kl_divergence(qe, LogUniform().expand([4])).shape == (4,)
    assert kl_divergence(qe.to_event(1), LogUniform().expand([4]).to_event(1)).shape == ()


def test_trace_mean_field_elbo_uses_the_molchanov_kl():
    x = torch.randn(6, 3)
    y = torch.randn(6)
    loc = torch.tensor([[0.5, -1.0, 0.2], [2.0, 0.1, -0.3]], requires_grad=True)
    scale = torch.tensor([[0.1, 0.3, 0.2], [0.5, 0.2, 0.05]], requires_grad=True)

    def model():
        w = pyro.sample("w", LogUniform().expand([2, 3]).to_event(2))
        with pyro.plate("data", 6):
            pyro.sample("y", dist.Normal((x @ w.T).sum(-1), 1.0), obs=y)

    def guide():
        pyro.sample("w", dist.Normal(loc, scale).to_event(2))

    pyro.set_rng_seed(7)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    pyro.set_rng_seed(7)
    guide_tr = pyro.poutine.trace(guide).get_trace()
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_tr)).get_trace()
    loglik = model_tr.nodes["y"]["fn"].log_prob(y).sum()
    kl = molchanov_kl(2 * scale.log() - (loc.pow(2) + 1e-8).log()).sum()
    assert_close(loss, kl - loglik, rtol=1e-6)
    grads = torch.autograd.grad(loss, (loc, scale))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "family,mu,sigma,a,b",
    [
        ("gamma", -0.3, 0.4, 0.5, 2.0),
        ("gamma", 1.0, 1.0, 0.5, 1.0),
        ("gamma", 0.2, 0.1, 3.0, 0.5),
        ("inverse_gamma", -0.3, 0.4, 0.5, 2.0),
        ("inverse_gamma", 1.0, 0.7, 0.5, 1.0),
        ("inverse_gamma", -1.0, 0.2, 2.0, 0.3),
    ],
)
def test_lognormal_kls_match_monte_carlo(family, mu, sigma, a, b):
    q = dist.LogNormal(t64(mu), t64(sigma))
    p = dist.Gamma(t64(a), t64(b)) if family == "gamma" else dist.InverseGamma(t64(a), t64(b))
    z = q.sample((200_000,))
    terms = q.log_prob(z) - p.log_prob(z)
    se = terms.std().item() / math.sqrt(len(z))
    kl = kl_divergence(q, p)
    assert abs(kl.item() - terms.mean().item()) < 3 * se
    # through to_event and expand
    qi = dist.LogNormal(q.loc.expand(3), q.scale.expand(3)).to_event(1)
    assert_close(kl_divergence(qi, p.expand([3]).to_event(1)), 3 * kl, rtol=1e-12)
    if family == "inverse_gamma":  # torch's InverseGamma (Pyro's is a subclass) dispatches too
        tp = torch.distributions.InverseGamma(t64(a), t64(b))
        assert_close(kl_divergence(q, tp), kl, rtol=1e-12)


def test_trace_mean_field_elbo_for_the_noncentred_horseshoe():
    """Model: a ~ Gamma(1/2, 1), c ~ InvGamma(1/2, b^2) per group; guide: log-normals. Loss = sum of closed-form KLs."""
    ga, ig = half_cauchy_noncentred(torch.full((4,), 0.3))
    mu_a, s_a = torch.zeros(4, requires_grad=True), torch.full((4,), 0.5)
    mu_c, s_c = torch.full((4,), -1.0), torch.full((4,), 0.2, requires_grad=True)

    def model():
        pyro.sample("a", ga.to_event(1))
        pyro.sample("c", ig.to_event(1))

    def guide():
        pyro.sample("a", dist.LogNormal(mu_a, s_a).to_event(1))
        pyro.sample("c", dist.LogNormal(mu_c, s_c).to_event(1))

    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    expected = kl_divergence(dist.LogNormal(mu_a, s_a), ga).sum() + kl_divergence(dist.LogNormal(mu_c, s_c), ig).sum()
    assert_close(loss, expected, rtol=1e-6)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, (mu_a, s_c)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_molchanov_kl_sum_value_and_gradients(dtype):
    loc = (torch.randn(50, dtype=dtype) * torch.logspace(-6, 1, 50, dtype=dtype)).requires_grad_()
    log_sigma2 = (torch.randn(50, dtype=dtype) * 8).requires_grad_()  # covers the clipped range too
    ref = molchanov_kl(log_sigma2 - (loc.pow(2) + 1e-8).log()).sum()
    g_ref = torch.autograd.grad(ref, (loc, log_sigma2))
    out = molchanov_kl_sum(loc, log_sigma2)
    g = torch.autograd.grad(out, (loc, log_sigma2))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    assert out.dtype == dtype and out.shape == ()
    assert_close(out, ref, **tol)
    for a, b in zip(g, g_ref):
        assert_close(a, b, **tol)
    if dtype == torch.float64:
        inputs = (loc.detach()[:5].requires_grad_(), log_sigma2.detach()[:5].clamp(-9, 9).requires_grad_())
        assert torch.autograd.gradcheck(molchanov_kl_sum, inputs)
        # broadcasting: one log sigma^2 per row
        loc2 = torch.randn(3, 4, dtype=dtype, requires_grad=True)
        ls2 = torch.randn(3, 1, dtype=dtype, requires_grad=True)
        assert torch.autograd.gradcheck(molchanov_kl_sum, (loc2, ls2))
        # only one input needs a gradient
        (gl,) = torch.autograd.grad(molchanov_kl_sum(loc2, ls2.detach()), (loc2,))
        assert gl.shape == loc2.shape


# ================================================================================================ Pyro modules
@pytest.mark.parametrize("dtype", DTYPES)
def test_priors_as_pyro_sample_inside_a_pyro_module(dtype):
    class Net(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[nn.Linear](3, 2).to(dtype)
            low, high = torch.tensor(1e-3, dtype=dtype), torch.tensor(1.0, dtype=dtype)
            self.fc.weight = PyroSample(LogUniform(low, high).expand([2, 3]).to_event(2))
            self.fc.bias = PyroSample(Horseshoe(torch.tensor(1.0, dtype=dtype)).expand([2]).to_event(1))

        def forward(self, x):
            return self.fc(x)

    net = Net()
    tr = pyro.poutine.trace(net).get_trace(torch.randn(4, 3, dtype=dtype))
    assert tr.nodes["fc.weight"]["value"].shape == (2, 3) and tr.nodes["fc.weight"]["value"].dtype == dtype
    assert tr.nodes["_RETURN"]["value"].shape == (4, 2)
    tr.compute_log_prob()
    for site in ("fc.weight", "fc.bias"):
        assert tr.nodes[site]["log_prob_sum"].shape == () and torch.isfinite(tr.nodes[site]["log_prob_sum"])


def test_improper_prior_in_a_pyro_module_with_pyro_guides():
    """The improper prior works with raw Pyro: AutoNormal (init falls back from sampling) and a mean-field guide."""

    class Net(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[nn.Linear](3, 1)
            self.fc.weight = PyroSample(LogUniform().expand([1, 3]).to_event(2))
            self.fc.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

        def forward(self, x, y=None):
            mean = self.fc(x).squeeze(-1)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("y", dist.Normal(mean, 0.1), obs=y)

    x = torch.randn(32, 3)
    y = x @ torch.tensor([1.0, 0.0, -2.0])
    net = Net()
    with pytest.raises(NotImplementedError, match="cannot be sampled"):  # Pyro's default init samples the prior
        SVI(net, AutoNormal(net), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()).step(x, y)
    pyro.clear_param_store()
    guide = AutoNormal(net, init_loc_fn=init_improper_to_zero)
    svi = SVI(net, guide, pyro.optim.Adam({"lr": 0.05}), TraceMeanField_ELBO())
    losses = [svi.step(x, y) for _ in range(30)]
    assert all(math.isfinite(v) for v in losses)
    assert guide.locs.fc.weight.shape == (1, 3)
    with pytest.raises(NotImplementedError, match="cannot be sampled"):
        net(x)
