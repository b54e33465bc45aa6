"""Both group priors on synthetic problems where a few inputs matter among many (issue 13, point 3).

A problem: ``x ~ N(0, I_d)``, the label is the sign of :math:`\\sum_{j<r} \\pm x_j` (the first ``r`` inputs, signs
alternating), the network ``d - hidden - 2`` with tanh. After a fixed, modest budget (500 full-batch Adam steps, lr
3e-2, KL warm-up over the first 100; a few seconds on one core) the
default rule ``GroupLogAlpha()`` must keep exactly the ``r`` relevant inputs for the log-uniform prior and for the
horseshoe, at the paper's :math:`\\tau_0 = 10^{-5}` too, whose global-scale KL must stay bounded.
"""

import math

import pytest
import torch
import torch.nn as nn
from pyro.distributions import Gamma, InverseGamma, LogNormal
from torch.distributions import kl_divergence

import pyro_prune as pp
from pyro_prune.distributions.horseshoe import optimal_factor_locs
from pyro_prune.marginals import GroupMarginal, Marginal
from tests.helpers import assert_close

#: (examples, inputs, relevant inputs, hidden units, epochs); KL warm-up over the first WARMUP epochs
SMALL = (256, 12, 3, 16, 500)
LARGE = (512, 40, 4, 32, 500)
WARMUP = 100


def few_relevant(n, d, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    signs = torch.tensor([(-1.0) ** j for j in range(r)])
    return x, (x[:, :r] @ signs > 0).long()


def trained(kind, size, tau0=1e-5, seed=0):
    n, d, r, hidden, epochs = size
    x, y = few_relevant(n, d, r, seed)
    net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 2))
    model = pp.bayesianize(net, pp.GroupPrior(kind, tau0=tau0), pp.Categorical(dataset_size=n))
    guide = pp.AutoGroupSparse(model)
    hist = pp.fit(model, guide, (x, y), epochs=epochs, lr=3e-2, kl_warmup=WARMUP, progress=False)
    return model, guide, hist, x, y


# Measured (issue 13, this budget, seeds 0-3): the log-uniform scale's own log alpha left irrelevant inputs at
# 0.8 .. 2.7 (< its threshold 3: Adam's jitter of mu_z about 0 over a tiny sigma_z); the rule's pooled
# noise-to-signal ratio over the weights into kept units puts relevant inputs at -7.7 .. -0.3 and irrelevant ones
# at 6.9 .. 9.3 (see GroupLogAlpha). The horseshoe's default, the relative norm log max_h |E w_h| - log |E w_g|,
# puts relevant inputs at <= 0.12 and irrelevant ones at >= 3.08 (threshold log 10 = 2.30; seeds 0-7,
# bench/horseshoe_rule.py), where its pooled ratio has irrelevant inputs at -0.1 .. 10.
KINDS = ["log-uniform", "horseshoe"]


def check_keeps_exactly_the_relevant_inputs(kind, size):
    n, d, r, hidden, _ = size
    model, guide, hist, x, y = trained(kind, size)
    assert all(math.isfinite(rec["loss"]) for rec in hist.records)
    margs = guide.marginals()
    keep = pp.rules.GroupLogAlpha().group_masks(margs)["0.weight"]
    scores = pp.rules.group_scores(margs)["0.weight"]
    assert keep.tolist() == [True] * r + [False] * (d - r), f"{kind}: default group scores {scores.tolist()}"
    assert torch.equal(keep, scores < pp.rules.GROUP_DEFAULTS[kind].threshold)
    res = pp.prune(model, guide, pp.rules.GroupLogAlpha())
    assert res.group_masks["0.weight"].tolist() == keep.tolist()
    with torch.no_grad():
        acc = (res.module(x).argmax(-1) == y).float().mean()
    assert acc > 0.95, f"{kind}: pruned network accuracy {acc:.3f}"
    return guide, hist


@pytest.mark.parametrize("kind", KINDS)
def test_keeps_exactly_the_relevant_inputs_small(kind):
    check_keeps_exactly_the_relevant_inputs(kind, SMALL)


@pytest.mark.parametrize("kind", KINDS)
def test_keeps_exactly_the_relevant_inputs_large(kind):
    check_keeps_exactly_the_relevant_inputs(kind, LARGE)


def test_paper_tau0_trains_like_a_moderate_one():
    """tau0 = 1e-5: the global scale's KL at initialization is of order 10 nats, not 10^9 (the Gamma factor starts
    at its prior's scale), and training ends where tau0 = 1e-2 does: the two KLs differ by the constant
    log(1e-2 / 1e-5) ≈ 6.9 nats while the global scale s >> tau0 (optimal_factor_locs)."""
    ends = {}
    for tau0 in (1e-5, 1e-2):
        model, guide, hist, x, y = trained("horseshoe", SMALL, tau0=tau0)
        ends[tau0] = hist.records[-1]["loss"]
    assert abs(ends[1e-5] - ends[1e-2]) < 0.1, ends
    fresh = pp.AutoGroupSparse(
        pp.bayesianize(nn.Linear(12, 2), pp.GroupPrior("horseshoe", tau0=1e-5), pp.Categorical(8))
    )
    fresh(*few_relevant(8, 12, 3))
    assert float(fresh.total_kl().detach()) < 1e3


@pytest.mark.parametrize("rate", [1.0, 1e10])
@pytest.mark.parametrize("m, sigma", [(-3.0, 0.1), (0.0, 0.5), (4.0, 1.0)])
def test_optimal_factor_locs_minimize_the_pair_kl(rate, m, sigma):
    """The closed-form split is the minimum of KL(q(a)|Gamma(1/2, rate)) + KL(q(c)|InvGamma(1/2, 1)) over mu_a with
    mu_a + mu_c = m (torch's registered KLs on a fine grid, float64)."""
    m_t, s_t = torch.tensor(m, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
    mu_a, mu_c = optimal_factor_locs(m_t, s_t, rate)
    assert_close(mu_a + mu_c, m_t)
    pa, pc = (
        Gamma(torch.tensor(0.5).double(), torch.tensor(rate).double()),
        InverseGamma(torch.tensor(0.5).double(), 1.0),
    )
    grid = mu_a + torch.linspace(-2, 2, 40001, dtype=torch.float64)
    kl = kl_divergence(LogNormal(grid, s_t), pa) + kl_divergence(LogNormal(m_t - grid, s_t), pc)
    assert abs(float(grid[kl.argmin()] - mu_a)) < 2e-4
    at = kl_divergence(LogNormal(mu_a, s_t), pa) + kl_divergence(LogNormal(mu_c, s_t), pc)
    assert_close(at, kl.min(), rtol=0, atol=1e-9)


def _margs(prior, la, loc=None):
    one = torch.ones_like(la)
    g = GroupMarginal(axis=1, log_alpha=la, scale_mean=one, scale_std=one, log_scale_mean=one, prior=prior)
    loc = torch.ones(2, la.numel()) if loc is None else loc
    return {"0.weight": Marginal(loc, torch.ones_like(loc), None, g)}


def test_default_group_rule_follows_the_prior():
    la = torch.tensor([-4.0, -0.5, 0.5, 2.0, 4.0])
    # column norms 0.01, 1, 0.5, 0.2, 0.05 (rows 0.6 and 0.8 of each): log max - log norm = 4.6, 0, 0.69, 1.61, 3.0
    loc = torch.tensor([[0.6], [0.8]]) * torch.tensor([0.01, 1.0, 0.5, 0.2, 0.05])
    keep = {p: pp.rules.GroupLogAlpha().group_masks(_margs(p, la, loc))["0.weight"].tolist() for p in KINDS}
    assert keep == {"log-uniform": [1, 1, 1, 1, 0], "horseshoe": [0, 1, 1, 1, 0]}
    # an explicit threshold is on the pooled log alpha for both priors
    assert pp.rules.GroupLogAlpha(1.0).group_masks(_margs("horseshoe", la, loc))["0.weight"].tolist() == [1, 1, 1, 0, 0]
    assert pp.rules.GroupLogAlpha(0.0).group_masks(_margs("horseshoe", la, loc))["0.weight"].tolist() == [1, 1, 0, 0, 0]
    assert_close(pp.rules.group_scores(_margs("horseshoe", la, loc))["0.weight"], -torch.tensor(
        [0.01, 1.0, 0.5, 0.2, 0.05]).log(), rtol=0, atol=1e-6)  # fmt: skip
    assert_close(pp.rules.group_scores(_margs("log-uniform", la, loc))["0.weight"], la)
    assert {k: c.threshold for k, c in pp.rules.GROUP_DEFAULTS.items()} == {
        "log-uniform": 3.0,
        "horseshoe": math.log(10),
    }
    assert dict(pp.rules.GROUP_THRESHOLDS) == {"log-uniform": 3.0, "horseshoe": 0.0}
    assert repr(pp.rules.GroupLogAlpha()) == "GroupLogAlpha()" and repr(pp.rules.GroupLogAlpha(3)) == "GroupLogAlpha(3)"
    with pytest.raises(ValueError, match="no default GroupLogAlpha criterion.*'spike'"):
        pp.rules.GroupLogAlpha().group_masks(_margs("spike", la))
    with pytest.raises(TypeError):
        pp.rules.GROUP_DEFAULTS["horseshoe"] = pp.rules.GROUP_DEFAULTS["log-uniform"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relative_group_norm_against_a_direct_computation(dtype):
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 3, 2, 2, generator=g, dtype=dtype)  # a Conv2d weight: groups are output channels (axis 0)
    loc[2] = 0.0
    z, o = torch.zeros(4, dtype=dtype), torch.ones(4, dtype=dtype)
    gm = GroupMarginal(axis=0, log_alpha=z, scale_mean=o, scale_std=o, log_scale_mean=z, prior="horseshoe")
    m = Marginal(loc, torch.ones_like(loc), None, gm)
    norms = [math.sqrt(sum(float(v) ** 2 for v in loc[c].flatten())) for c in range(4)]
    want = [math.log(max(norms)) - math.log(n) if n > 0 else 10.0 for n in norms]  # a zero norm scores the clip
    got = pp.rules.relative_group_norm(m)
    assert got.dtype == dtype
    assert_close(got, torch.tensor(want, dtype=dtype), rtol=1e-6, atol=1e-6)
    # a Linear weight over kept rows only (axis 1: input units)
    w = torch.tensor([[3.0, 1.0], [0.0, 4.0], [100.0, 100.0]])
    lin = Marginal(w, torch.ones_like(w), None, GroupMarginal(1, torch.zeros(2), torch.ones(2), torch.ones(2),
                                                               torch.zeros(2), "horseshoe"))  # fmt: skip
    rows = torch.tensor([True, True, False])
    assert_close(pp.rules.relative_group_norm(lin, rows), torch.tensor([math.log(math.sqrt(17) / 3), 0.0]))
    dead = Marginal(torch.zeros(2, 2), torch.ones(2, 2), None, lin.group)
    assert pp.rules.relative_group_norm(dead).tolist() == [10.0, 10.0]
