"""Vectorized layers equal a Python loop over samples; local reparameterization matches MC moments."""

import threading

import pytest
import torch
import torch.nn.functional as F

from pyro_prune import layers
from tests.helpers import assert_close

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_sampled", [False, True])
def test_linear_matches_loop(dtype, bias, x_sampled):
    S = (3, 1)
    w = torch.randn(S + (5, 4), dtype=dtype)
    b = torch.randn(S + (5,), dtype=dtype) if bias else None
    x = torch.randn((S if x_sampled else ()) + (6, 4), dtype=dtype)
    out = layers.linear(x, w, b)
    assert out.shape == S + (6, 5)
    for i in range(3):
        xi = x[i, 0] if x_sampled else x
        expected = F.linear(xi, w[i, 0], None if b is None else b[i, 0])
        assert_close(out[i, 0], expected, **_tol(dtype))


def test_linear_unbatched_weight_fast_path_keeps_x_sample_dims():
    x = torch.randn(2, 1, 6, 4)
    w, b = torch.randn(5, 4), torch.randn(5)
    assert_close(layers.linear(x, w, b), F.linear(x, w, b))


def test_linear_point_bias_with_sampled_weight():
    w = torch.randn(4, 1, 3, 2)
    b = torch.randn(3)
    x = torch.randn(7, 2)
    out = layers.linear(x, w, b)
    for i in range(4):
        assert_close(out[i, 0], F.linear(x, w[i, 0], b), rtol=1e-5, atol=1e-6)


CONV_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=1, padding=2, dilation=2, groups=2),
]


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("kw", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_sampled", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_matches_loop(nd, kw, bias, x_sampled, dtype):
    S = (3, 1)
    C, n_out, k = 4, 6, 3
    spatial = (9,) * nd
    w = torch.randn(S + (n_out, C // kw["groups"]) + (k,) * nd, dtype=dtype)
    b = torch.randn(S + (n_out,), dtype=dtype) if bias else None
    x = torch.randn((S if x_sampled else ()) + (2, C) + spatial, dtype=dtype)
    out = layers.conv(x, w, b, nd=nd, **kw)
    fn = F.conv1d if nd == 1 else F.conv2d
    for i in range(3):
        xi = x[i, 0] if x_sampled else x
        expected = fn(xi, w[i, 0], None if b is None else b[i, 0], **kw)
        assert out.shape[:2] == S
        assert_close(out[i, 0], expected, **_tol(dtype))


@pytest.mark.parametrize("nd", [1, 2])
def test_conv_unbatched_weight_with_sampled_input(nd):
    x = torch.randn((2, 1, 3, 4) + (8,) * nd)
    w = torch.randn((5, 4) + (3,) * nd)
    b = torch.randn(5)
    out = layers.conv(x, w, b, nd=nd, padding=1)
    fn = F.conv1d if nd == 1 else F.conv2d
    for i in range(2):
        assert_close(out[i, 0], fn(x[i, 0], w, b, padding=1), rtol=1e-5, atol=1e-5)


def test_conv_wrappers():
    x, w = torch.randn(2, 3, 10), torch.randn(4, 3, 3)
    assert_close(layers.conv1d(x, w), F.conv1d(x, w), rtol=1e-5, atol=1e-6)
    x2, w2 = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    assert_close(layers.conv2d(x2, w2, padding=1), F.conv2d(x2, w2, padding=1), rtol=1e-5, atol=1e-6)


def test_local_reparam_linear_matches_weight_sampling_moments():
    """Mean and variance of LRT pre-activations equal those of sampled-weight outputs (MC, 20k draws)."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64)
    loc = torch.randn(2, 4, dtype=torch.float64)
    var = torch.rand(2, 4, dtype=torch.float64) * 0.5
    b = torch.randn(2, dtype=torch.float64)
    n = 20000
    lrt = layers.local_reparam_linear(x, loc, var, b, sample_shape=torch.Size([n]))
    assert lrt.shape == (n, 3, 2)
    w = loc + var.sqrt() * torch.randn(n, 2, 4, dtype=torch.float64)
    sampled = layers.linear(x, w, b)
    exact_mean = F.linear(x, loc, b)
    exact_var = F.linear(x * x, var)
    # standard error of the mean is sqrt(var / n) ~ 0.01; of the variance ~ var * sqrt(2 / n) ~ 1 %
    for est in (lrt, sampled):
        assert_close(est.mean(0), exact_mean, atol=0.05, rtol=0)
        assert_close(est.var(0), exact_var, rtol=0.06, atol=1e-3)


def test_local_reparam_conv_moments():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    loc = torch.randn(4, 3, 3, dtype=torch.float64)
    var = torch.rand(4, 3, 3, dtype=torch.float64) * 0.3
    n = 20000
    out = layers.local_reparam_conv(x, loc, var, None, sample_shape=torch.Size([n]), nd=1, padding=1)
    assert out.shape == (n, 2, 4, 7)
    assert_close(out.mean(0), F.conv1d(x, loc, padding=1), atol=0.06, rtol=0)
    assert_close(out.var(0), F.conv1d(x * x, var, padding=1), rtol=0.06, atol=1e-3)


class _Source:
    """A minimal local-reparameterization source: no moments for any site."""

    def local_reparam_moments(self, site):
        return None


def test_local_reparameterization_context_nests_and_restores():
    assert layers.local_reparam_source() is None and layers.local_reparam_samples_weights()
    a, b = _Source(), _Source()
    with layers.local_reparameterization(a) as entered:
        assert entered is a and layers.local_reparam_source() is a
        with layers.local_reparameterization(b, sample_weights=False):
            assert layers.local_reparam_source() is b and not layers.local_reparam_samples_weights()
        assert layers.local_reparam_source() is a and layers.local_reparam_samples_weights()
    assert layers.local_reparam_source() is None


def test_local_reparameterization_restored_after_exception():
    a = _Source()
    with layers.local_reparameterization(a):
        with pytest.raises(RuntimeError, match="boom"):
            with layers.local_reparameterization(_Source(), sample_weights=False):
                raise RuntimeError("boom")
        assert layers.local_reparam_source() is a and layers.local_reparam_samples_weights()
    with pytest.raises(KeyError):
        with layers.local_reparameterization(a, sample_weights=False):
            raise KeyError("x")
    assert layers.local_reparam_source() is None and layers.local_reparam_samples_weights()


def test_local_reparameterization_checks_arguments():
    with pytest.raises(TypeError, match="local_reparam_moments"):
        with layers.local_reparameterization(object()):
            pass
    with pytest.raises(TypeError, match="sample_weights"):
        with layers.local_reparameterization(_Source(), sample_weights=1):
            pass
    assert layers.local_reparam_source() is None


def test_local_reparameterization_is_invisible_to_other_threads():
    """The active source is context-local: a thread started inside the block does not see it."""
    seen = {}
    started, release = threading.Event(), threading.Event()

    def other():
        started.set()
        release.wait(5)
        seen["other"] = layers.local_reparam_source()
        with layers.local_reparameterization(b):
            seen["other_inner"] = layers.local_reparam_source()

    a, b = _Source(), _Source()
    with layers.local_reparameterization(a):
        t = threading.Thread(target=other)
        t.start()
        started.wait(5)
        release.set()
        t.join(5)
        assert layers.local_reparam_source() is a  # the thread's own block did not leak here
    assert seen == {"other": None, "other_inner": b}


def test_local_reparam_conv_out_scale_matches_scaled_kernels():
    """out_scale z: the mean is conv(x, z_c w_c) + b, the variance z_c^2 conv(x^2, s^2) + bias variance (MC, 4 %)."""
    x = torch.randn(3, 2, 9, dtype=torch.float64)
    loc = torch.randn(4, 2, 3, dtype=torch.float64)
    var = torch.rand(4, 2, 3, dtype=torch.float64)
    bias, bias_var = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    z = torch.rand(3, 4, dtype=torch.float64) + 0.5
    S = 40000
    xs = x.repeat(S, 1, 1)
    out = layers.local_reparam_conv(xs, loc, var, bias, bias_var=bias_var, out_scale=z.repeat(S, 1), nd=1, padding=1)
    out = out.reshape(S, 3, 4, 9)
    zc = z[..., None]
    mean = zc * F.conv1d(x, loc, padding=1) + bias[:, None]
    variance = zc**2 * F.conv1d(x * x, var, padding=1) + bias_var[:, None]
    assert_close(out.mean(0), mean, rtol=0.0, atol=float(4 * (variance.max() / S) ** 0.5))
    assert_close(out.var(0), variance, rtol=0.04)
