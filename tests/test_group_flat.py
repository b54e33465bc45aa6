"""AutoGroupSparse on the fused path's flat layout: each KL family in one call over contiguous flat segments, equal
to the per-layer KL and to TraceMeanField_ELBO's registered KLs (value and gradient), for both group priors."""

import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from pyro_prune.infer import kl_term
from tests.helpers import assert_close

KINDS = ["log-uniform", "horseshoe"]


def problem(kind, bias=True, n=20):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5, bias=bias), nn.ReLU(), nn.Linear(5, 4, bias=bias), nn.ReLU(), nn.Linear(4, 3))
    model = pp.bayesianize(net.double(), pp.GroupPrior(kind, tau0=0.3), pp.Categorical(dataset_size=n))
    guide = pp.AutoGroupSparse(model, init_scale_log_alpha=-2.0, init_log_sigma2=-3.0)
    x, y = torch.randn(n, 6, dtype=torch.float64), torch.randint(0, 3, (n,))
    guide(x, y)
    with torch.no_grad():  # move every parameter off its initialization so that every KL term matters
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, guide, x, y


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_flat_kl_equals_the_per_layer_kl_in_value_and_gradient(kind, bias):
    model, guide, x, y = problem(kind, bias)
    expected = guide.total_kl()  # no layout: the sum over layers
    grads = torch.autograd.grad(expected, list(guide.parameters()))
    registered = kl_term(model, guide, x, y)  # TraceMeanField_ELBO's analytic KLs, independent of the guide's code
    layout = guide.flat_layout()
    try:
        assert guide._flat_kl(layout) is not None  # every family is contiguous: the flat path is taken
        kl = guide.total_kl()
        assert_close(kl.detach(), expected.detach(), rtol=1e-10)
        assert_close(kl.detach(), torch.tensor(registered, dtype=torch.float64), rtol=1e-6)
        kl.backward()
        for p, g in zip(guide.parameters(), grads):
            assert_close(p.grad, g, rtol=1e-8, atol=1e-12)  # views of the flat gradient buffer
    finally:
        guide.release_layout()


@pytest.mark.parametrize("kind", KINDS)
def test_flat_order_makes_each_kl_family_one_contiguous_segment(kind):
    model, guide, x, y = problem(kind)
    order = guide._flat_order()
    assert sorted(n for n, _ in order) == sorted(n for n, _ in guide.named_parameters())  # each parameter once
    layout = guide.flat_layout()
    try:
        (leaf,) = layout.leaves.values()
        assert leaf.numel() == sum(p.numel() for p in guide.parameters())
        families = guide._segments()
        for name, keys in families.items():
            seg = layout.segment([guide._param(k) for k in keys])
            assert (seg is not None) == bool(keys), name
        assert bool(families["pairs"]) == (kind == "horseshoe")
        weights = layout.segment([guide._param(k) for k in families["loc"]])
        assert weights.data_ptr() == leaf.data_ptr()  # all weight means first
    finally:
        guide.release_layout()


@pytest.mark.parametrize("kind", KINDS)
def test_fused_fit_trains_through_the_flat_kl_and_reports_it(kind):
    model, guide, x, y = problem(kind, n=64)
    y = (x[:, 0] > 0).long()
    h = pp.fit(model, guide, (x, y), epochs=30, lr=3e-2, progress=False)
    assert h.state.path == "fused" and guide.active_layout() is None
    assert h["loss"][-1] < h["loss"][0]
    assert_close(torch.tensor(h["kl"][-1]), guide.total_kl().detach(), rtol=1e-6)  # per-layer KL after release
    params = list(guide.parameters())
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
