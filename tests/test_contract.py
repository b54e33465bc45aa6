"""The guide contract, checked once for every guide of the library (as Pyro's tests parametrize over its autoguides
and laplace-torch's over its flavors).

Guides: Pyro's ``AutoNormal``, ``AutoSparseVD``, ``AutoGroupSparse`` with the log-uniform and the horseshoe group
priors, ``AutoSubnetwork`` (20 of 51 weights), and ``laplace_guide`` with ``structure`` ``"kron"``, ``"diag"``,
``"full"`` and ``"lowrank"`` (rank 10 of 51).  The problem: an MLP 4-6-3 (tanh) on 200 synthetic 3-class points,
float64, seeded by conftest; trainable guides take five full-batch ``pp.fit`` steps; Laplace guides are built from
the data around a network trained towards the MAP (50 full-batch Adam steps), so that their posterior is narrower
than the prior.

The contract, each part checked against an independent answer so that a do-nothing implementation fails:

* sites: the guide draws exactly the model's weight sites (plus the scale sites of group priors), shaped like them;
* ``median()``: every site, its shape, finite, equal to the marginal means;
* ``quantiles([0.1, 0.5, 0.9])``: ordered, the middle one the median, the spread :math:`z_{0.9}\\,\\sigma` of the
  Gaussian marginal; for the weights of group guides (:math:`w = z\\tilde w`, a scale mixture) the empirical CDF of
  40,000 draws at each quantile;
* ``pp.marginals(guide)``: a ``Marginal`` per site, ``scale >= 0`` and not all zero, :math:`\\log\\alpha` of the
  moments (clipped where the guide clips it), a ``GroupMarginal`` per weight site of group guides;
* ``pp.predict``: an ensemble of softmax probabilities whose members differ, whose mean output agrees (Monte Carlo,
  5 standard errors) with networks replayed from the guide's own draws;
* ``method="glm"``: the linearized predictive around the marginal means where the guide has one, the documented
  ``ValueError`` where it has none;
* ``pp.prune(..., Sparsity(0.5))``: half the weights kept, the lowest :math:`-\\log\\alpha` pruned, a module whose
  pruned weights are exactly zero and kept weights the marginal means, a pruned guide whose draws are zero there.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro import poutine
from pyro.infer.autoguide import AutoGuideList, AutoNormal
from pyro.infer.autoguide.initialization import InitMessenger, init_to_sample

import pyro_prune as pp
from pyro_prune import subnet as sn
from pyro_prune.guides.laplace import LaplaceSamplingWarning
from tests.helpers import assert_close

D = torch.float64
N = 200  # data points
QUANTILES = [0.1, 0.5, 0.9]
Z90 = 1.2815515655446004  # Phi^{-1}(0.9)
LOG_ALPHA_EPS = 1e-8  # the documented log alpha = log sigma^2 - log(mu^2 + 1e-8)


class Case(NamedTuple):
    """One guide of the contract: how to build its model's prior and the guide, and what it offers."""

    prior: Callable[[], object]
    build: Callable  # (model, x, y) -> guide
    trains: bool  # fitted by pp.fit (else built from data)
    glm: bool  # has a linearized (GLM) predictive


def _normal():
    return dist.Normal(torch.tensor(0.0, dtype=D), 1.0)


CASES = {
    "AutoNormal": Case(_normal, lambda m, x, y: AutoNormal(m, init_scale=0.05), True, False),
    "AutoSparseVD": Case(pp.LogUniform, lambda m, x, y: pp.AutoSparseVD(m), True, False),
    "AutoMeanFieldNormal": Case(_normal, lambda m, x, y: pp.AutoMeanFieldNormal(m, init_scale=0.05), True, False),
    "laplace-last-layer-kron": Case(
        _normal, lambda m, x, y: pp.laplace_guide(m, (x, y), "kron", subnet=sn.LastLayer()), False, True
    ),
    "AutoGroupSparse-log-uniform": Case(
        lambda: pp.GroupPrior("log-uniform"), lambda m, x, y: pp.AutoGroupSparse(m), True, False
    ),
    "AutoGroupSparse-horseshoe": Case(
        lambda: pp.GroupPrior("horseshoe", tau0=0.1), lambda m, x, y: pp.AutoGroupSparse(m), True, False
    ),
    "AutoSubnetwork": Case(
        _normal, lambda m, x, y: pp.AutoSubnetwork(m, sn.LargestMagnitude(20), init_scale=0.05), True, True
    ),
    "laplace-kron": Case(_normal, lambda m, x, y: pp.laplace_guide(m, (x, y), "kron"), False, True),
    "laplace-diag": Case(_normal, lambda m, x, y: pp.laplace_guide(m, (x, y), "diag"), False, True),
    "laplace-full": Case(_normal, lambda m, x, y: pp.laplace_guide(m, (x, y), "full"), False, True),
    "laplace-lowrank": Case(_normal, lambda m, x, y: pp.laplace_guide(m, (x, y), "lowrank", rank=10), False, True),
}


def train_map(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 50) -> None:
    r"""The MAP under the :math:`\mathcal N(0, 1)` prior, in place: full-batch Adam on
    :math:`\frac1N\sum_i -\log p(y_i \mid x_i, w) + \frac{1}{2N}\lVert w\rVert^2`."""
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        penalty = sum(p.pow(2).sum() for p in net.parameters()) / (2 * len(x))
        (nn.functional.cross_entropy(net(x), y) + penalty).backward()
        opt.step()


def fitted(name: str, prior=None):
    """``(model, guide, x, y)``: the 3-class problem (seeded by conftest) and the guide, trained or built (on a
    model with ``prior`` instead of the case's when given)."""
    case = CASES[name]
    x = torch.randn(N, 4, dtype=D)
    y = (x[:, 0] > 0).long() + (x[:, 1] - x[:, 2] > 0.5).long()
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)
    if not case.trains:
        train_map(net, x, y)
    model = pp.bayesianize(net, case.prior() if prior is None else prior, pp.Categorical(N))
    guide = case.build(model, x, y)
    if case.trains:
        pp.fit(model, guide, (x, y), epochs=5, lr=1e-2, progress=False)
    return model, guide, x, y


def latent_sites(model) -> set:
    """The sites a guide must draw: the weight sites, plus the scale sites of a group prior."""
    return set(model.sites) | set(getattr(model, "scale_sites", None) or ())


def weight_sites(model) -> list:
    """The sites ``pp.prune`` prunes by default: the weights (not biases)."""
    return [s for s, info in model.sites.items() if info.param == "weight"]


def site_shape(model, guide, site) -> tuple:
    """A weight site's shape from the model; a scale site's from the model trace the guide was set up on (the
    improper log-uniform scale prior cannot be sampled to trace the model afresh)."""
    if site in model.sites:
        return tuple(model.sites[site].shape)
    return tuple(guide.prototype_trace.nodes[site]["value"].shape)


guide_names = pytest.mark.parametrize("name", list(CASES))


@guide_names
def test_sites_median_quantiles_marginals(name):
    model, guide, x, y = fitted(name)
    sites = latent_sites(model)
    draw = guide(x, y)
    assert set(draw) == sites
    tr = poutine.trace(guide).get_trace(x, y)
    drawn = {k for k, v in tr.nodes.items() if v["type"] == "sample" and not v["infer"].get("is_auxiliary")}
    assert drawn == sites
    med = guide.median()
    margs = pp.marginals(guide)
    q = guide.quantiles(QUANTILES)
    group_weights = {info.weight for info in (getattr(model, "group_sites", None) or {}).values()}
    assert set(med) == set(q) == sites
    for s in sites:
        shape = site_shape(model, guide, s)
        assert tuple(draw[s].shape) == tuple(med[s].shape) == shape, s
        assert bool(torch.isfinite(med[s]).all()), s
        assert tuple(q[s].shape) == (3,) + shape, s
        assert bool((q[s][0] <= q[s][1]).all() and (q[s][1] <= q[s][2]).all()), s
        assert_close(q[s][1], med[s], rtol=1e-9, atol=1e-12, msg=f"{s}: q50 vs median")
        if s in group_weights:  # w = z w~ is a Gaussian scale mixture: its quantiles against many draws
            check_quantiles_against_draws(guide, x, y, s, q[s])
        elif s in model.sites:  # a Gaussian marginal
            assert_close(med[s], margs[s].loc, rtol=1e-9, atol=1e-12, msg=f"{s}: median vs marginal mean")
            assert_close(q[s][2] - q[s][1], Z90 * margs[s].scale, rtol=1e-6, atol=1e-12, msg=f"{s}: q90 - q50")
            assert_close(q[s][1] - q[s][0], q[s][2] - q[s][1], rtol=1e-6, atol=1e-12, msg=f"{s}: symmetry")
    init = model.initial_weights()
    if CASES[name].trains:  # five steps moved the posterior away from the initial network
        assert any(not torch.equal(med[s], init[s].to(D)) for s in model.sites)
    else:  # a Laplace posterior is centred at the MAP: here the network's own weights
        for s in model.sites:
            assert_close(med[s], init[s].to(D), rtol=1e-12, atol=0.0, msg=f"{s}: Laplace median vs MAP")
    check_marginals(model, guide, margs)


def check_quantiles_against_draws(guide, x, y, site, q, num=40000):
    """The empirical CDF of ``num`` draws of the guide at each reported quantile is that quantile's level (within
    5 binomial standard errors plus 0.002 for the quadrature); a moment-matched Gaussian is off by ~0.05-0.1."""
    torch.manual_seed(3)
    draws = pyro.infer.Predictive(guide, num_samples=num, parallel=True)(x[:2], y[:2])[site].reshape(
        (num,) + q.shape[1:]
    )
    for level, qs in zip(QUANTILES, q):
        cdf = (draws <= qs).double().mean(0)
        tol = 5 * math.sqrt(level * (1 - level) / num) + 0.002
        assert_close(cdf, torch.full_like(cdf, level), rtol=0.0, atol=tol, msg=f"{site}: empirical CDF at q{level}")


def check_marginals(model, guide, margs):
    """A ``Marginal`` per site of the model, shaped like it, with the log alpha of its moments."""
    assert set(margs) == set(model.sites)
    clip = getattr(guide, "log_alpha_clip", math.inf)
    grouped = getattr(model, "group_sites", None) or {}
    for s, m in margs.items():
        shape = tuple(model.sites[s].shape)
        assert isinstance(m, pp.Marginal)
        assert tuple(m.loc.shape) == tuple(m.scale.shape) == tuple(m.log_alpha.shape) == shape, s
        assert bool((m.scale >= 0).all()) and not bool(torch.isnan(m.log_alpha).any()), s
        loc, scale = m.loc.double(), m.scale.double()
        expected = (2 * scale.log() - (loc.pow(2) + LOG_ALPHA_EPS).log()).clamp(-clip, clip)
        assert_close(m.log_alpha.double(), expected, rtol=1e-6, atol=1e-9, msg=f"{s}: log_alpha")
        info = model.sites[s]
        if info.param == "weight" and info.module in grouped:
            assert isinstance(m.group, pp.GroupMarginal), s
            assert tuple(m.group.log_alpha.shape) == (grouped[info.module].num_groups,)
        else:
            assert m.group is None, s
    assert any(bool((m.scale > 0).any()) for m in margs.values())  # a posterior, not a point estimate


def _replayed_outputs(model, guide, x, y, num_samples):
    """Network outputs of ``num_samples`` networks drawn from the guide by hand (trace, then replay)."""
    outs = []
    with torch.no_grad():
        for _ in range(num_samples):
            tr = poutine.trace(guide).get_trace(x, y)
            outs.append(poutine.replay(model, trace=tr)(x))
    return torch.stack(outs)


@guide_names
def test_predict(name):
    model, guide, x, y = fitted(name)
    S, R = 64, 24
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", LaplaceSamplingWarning)  # sampled networks asked for
        pred = pp.predict(model, guide, x, num_samples=S, method="mc")  # Laplace guides default to the GLM
    assert tuple(pred.samples.shape) == (S, N, 3) and tuple(pred.probs.shape) == (N, 3)
    assert_close(pred.probs.sum(-1), torch.ones(N, dtype=D), rtol=1e-10)
    assert_close(pred.samples, pred.outputs.softmax(-1), rtol=1e-10, atol=1e-12, msg="members are softmax(logits)")
    assert_close(pred.probs, pred.samples.mean(0), rtol=1e-10, atol=1e-12, msg="probs are the ensemble mean")
    assert float(pred.samples.std(0).max()) > 1e-6  # the members differ
    # the ensemble is drawn from the guide: its mean output agrees with networks replayed from the guide's draws
    ref = _replayed_outputs(model, guide, x, y, R)
    se = (pred.outputs.var(0) / S + ref.var(0) / R).sqrt()
    gap = (pred.outputs.mean(0) - ref.mean(0)).abs()
    assert bool((gap <= 5 * se + 1e-9).all()), f"max gap / se = {float((gap / se).max()):.2f}"
    ratio = float(pred.outputs.std(0).mean() / ref.std(0).mean())
    assert 0.7 < ratio < 1.4, ratio
    check_glm(model, guide, x, CASES[name].glm)


def check_glm(model, guide, x, has_glm):
    """``method="glm"``: the linearized predictive around the marginal means, or the documented ``ValueError``."""
    if not has_glm:
        with pytest.raises(ValueError, match="linearized predictive"):
            pp.predict(model, guide, x, method="glm")
        return
    pred = pp.predict(model, guide, x, method="glm")
    assert pred.method == "glm" and tuple(pred.samples.shape) == (1, N, 3)
    assert_close(pred.probs.sum(-1), torch.ones(N, dtype=D), rtol=1e-10)
    # linearized around the marginal means: f is the mean network's output, its covariance symmetric PSD
    mean_net = pp.prune(model, guide, rule=pp.rules.Sparsity(0.0)).module
    with torch.no_grad():
        assert_close(pred.outputs[0], mean_net(x), rtol=1e-8, atol=1e-10, msg="GLM mean output")
    cov = pred.output_cov
    assert tuple(cov.shape) == (N, 3, 3)
    assert_close(cov, cov.transpose(-1, -2), rtol=1e-8, atol=1e-12)
    assert float(torch.linalg.eigvalsh(cov).min()) > -1e-10


@guide_names
def test_prune(name):
    model, guide, x, y = fitted(name)
    res = pp.prune(model, guide, rule=pp.rules.Sparsity(0.5))
    sites = weight_sites(model)
    assert set(res.masks) == set(sites)
    total = sum(model.sites[s].numel for s in sites)
    kept = sum(int(res.masks[s].sum()) for s in sites)
    assert kept == total - round(0.5 * total)
    assert res.report.sparsity == pytest.approx(1 - kept / total)
    margs = pp.marginals(guide)
    score = torch.cat([-margs[s].log_alpha.double().flatten() for s in sites])
    keep = torch.cat([res.masks[s].flatten() for s in sites])
    assert float(score[~keep].max()) <= float(score[keep].min())  # the lowest -log alpha (SNR) go
    state = res.module.state_dict()
    for s in sites:
        mask = res.masks[s]
        assert mask.dtype == torch.bool and tuple(mask.shape) == tuple(model.sites[s].shape)
        assert bool((state[s][~mask] == 0).all()), s
        assert_close(state[s][mask], margs[s].loc[mask], rtol=1e-12, atol=0.0, msg=f"{s}: kept weights")
    with torch.no_grad():
        assert tuple(res.module(x).shape) == (N, 3)
    draw = poutine.trace(res.guide).get_trace(x, y)
    for s in sites:
        assert bool((draw.nodes[s]["value"][~res.masks[s]] == 0).all()), s
    pred = pp.predict(model, res.guide, x, num_samples=4)
    assert tuple(pred.probs.shape) == (N, 3)
    assert_close(pred.probs.sum(-1), torch.ones(N, dtype=D), rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Pyro's AutoGuide contract on improper priors: Predictive(parallel=True) and AutoGuideList
# ---------------------------------------------------------------------------------------------------------------
OURS = [name for name in CASES if name != "AutoNormal"]


def improper_prior(name: str):
    """The improper prior each of our guides takes: ``GroupPrior("log-uniform")`` for group guides (the horseshoe
    stays: it is proper), ``LogUniform()`` (p(w) ∝ 1/|w|) otherwise."""
    if name == "AutoGroupSparse-horseshoe":
        return CASES[name].prior()
    return pp.GroupPrior("log-uniform") if name.startswith("AutoGroupSparse") else pp.LogUniform()


def check_predictive(model, guide, x, num=4):
    """``Predictive(model, guide=guide, parallel=True)`` runs (Pyro's plate-counting pass samples the prior) and its
    outputs are the plain network's outputs at the weights it reports."""
    sites = sorted(model.sites)
    res = pyro.infer.Predictive(model, guide=guide, num_samples=num, parallel=True, return_sites=sites + ["_RETURN"])(x)
    assert res["_RETURN"].shape == (num, N, 3)
    net = model.template()
    for i in range(num):
        weights = {k: res[k].reshape((num,) + tuple(model.sites[k].shape))[i] for k in sites}
        out = torch.func.functional_call(net, weights, (x,))
        assert_close(res["_RETURN"][i], out, rtol=1e-9, atol=1e-10, msg=f"draw {i}")


@pytest.mark.parametrize("name", OURS)
def test_predictive_parallel_and_autoguidelist_on_improper_priors(name):
    model, guide, x, y = fitted(name, prior=improper_prior(name))
    if name != "AutoGroupSparse-horseshoe":  # an improper prior itself still cannot be drawn
        with pytest.raises(NotImplementedError, match="cannot be sampled"):
            pyro.infer.Predictive(model, num_samples=2)(x)
    check_predictive(model, guide, x)
    # AutoGuideList: its own prototype pass draws the prior, so the list gets the model under init_to_sample
    guides = AutoGuideList(InitMessenger(init_to_sample)(model))
    part = CASES[name].build(model, x, y)
    guides.append(part)
    if CASES[name].trains:
        pp.fit(model, guides, (x, y), epochs=2, lr=1e-2, progress=False)
    else:
        guides(x, y)
    assert set(guides(x, y)) == latent_sites(model)
    assert set(guides.median()) == latent_sites(model)
    check_predictive(model, guides, x)
