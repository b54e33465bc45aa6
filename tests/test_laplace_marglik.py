"""Online evidence maximization while training (issue 14, point 5): ``fit_marglik``.

The final (tau, sigma) of a Bayesian linear regression against MacKay's fixed point at the final weights (and the
final weights against the exact posterior mean), one MAP step against an independently written objective, tau moving
the right way from a far too large and a far too small start, argument errors, and the result's guide through
deepcopy and pp.save/pp.load in float32 and float64."""

import copy
import functools
import math

import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import pyro_prune as pp
from pyro_prune.guides.laplace import LaplaceGuide
from pyro_prune.guides.laplace.layer_view import make_layers
from pyro_prune.guides.laplace.marglik import MarglikResult, fit_marglik, map_objective
from tests import helpers
from tests.helpers import assert_close

D = torch.float64


blr_data = functools.partial(helpers.blr_data, n=60, dtype=D)


def sgd(params):
    """Full-batch gradient descent at lr 0.2: the MAP steps of a linear-Gaussian model converge."""
    return torch.optim.SGD(params, lr=0.2)


def mackay_fixed_point(Phi, y, w, sigma=None, iters=3000):
    """The maximizer of the evidence of a linear-Gaussian model at fixed weights ``w`` (MacKay 1992):
    gamma = sum lam/(lam + tau) over the eigenvalues lam of Phi^T Phi / sigma^2, tau = gamma/|w|^2 and, when sigma is
    not given, sigma^2 = SSR/(N - gamma), iterated to the fixed point."""
    ssr = float((y - Phi @ w).square().sum())
    tau, s = 1.0, 1.0 if sigma is None else sigma
    eig = torch.linalg.eigvalsh(Phi.T @ Phi)
    for _ in range(iters):
        lam = eig / s**2
        gamma = float((lam / (lam + tau)).sum())
        tau = gamma / float(w @ w)
        if sigma is None:
            s = math.sqrt(ssr / (len(y) - gamma))
    return tau, s


@pytest.mark.parametrize("structure,tune_sigma", [("full", True), ("kron", True), ("kron", False)])
def test_blr_final_tau_sigma_are_the_evidence_maximum_at_the_final_weights(structure, tune_sigma):
    X, y = blr_data()
    d, n = X.shape[1], len(y)
    model = pp.bayesianize(nn.Linear(d, 1).to(D), dist.Normal(0.0, 1.0), pp.Gaussian(n, scale=0.7))
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    r = fit_marglik(model, (X, y), 100, structure=structure, optimizer=sgd, hyper_steps=10, prior_structure="scalar",
                    sigma_noise=tune_sigma, progress=False)  # fmt: skip
    assert isinstance(r, MarglikResult) and isinstance(r.guide, LaplaceGuide)
    m = r.guide.median()
    w = torch.cat([m["weight"].flatten(), m["bias"]])
    Phi = torch.cat([X, torch.ones(n, 1, dtype=D)], 1)
    tau_star, sigma_star = mackay_fixed_point(Phi, y, w, None if tune_sigma else 0.7)
    assert float(r.prior_precision) == pytest.approx(tau_star, rel=1e-8)
    assert float(r.sigma_noise) == pytest.approx(sigma_star, rel=1e-8)
    # the MAP steps converged to the exact posterior mean at the final (tau, sigma)
    tau, sigma = float(r.prior_precision), float(r.sigma_noise)
    mean = torch.linalg.solve(Phi.T @ Phi / sigma**2 + tau * torch.eye(d + 1, dtype=D), Phi.T @ y / sigma**2)
    assert_close(w, mean, rtol=0, atol=1e-8)
    # the history: one evidence step per epoch, the last one at the result's tau and evidence
    assert len(r.evidence_steps) == 100
    assert r.history.last["log_tau"] == pytest.approx(math.log(tau), rel=1e-12)
    assert r.history.last["log_marglik"] == pytest.approx(float(r.guide.log_marginal_likelihood()), rel=1e-12)
    # the trained network is the result's copy; the model's network is untouched
    assert_close(r.net.weight.flatten(), m["weight"].flatten(), rtol=0, atol=0)
    assert all(torch.equal(v, before[k]) for k, v in model.net.state_dict().items())


def tiny_classifier(dtype=D, n=64, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 2, dtype=dtype)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).to(dtype)
    return pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(n)), x, y


def test_one_map_step_is_sgd_on_the_stated_objective():
    """Epoch 1 of one full batch with plain SGD: the weights move by -lr times the autograd gradient of
    CE(f(x), y) + tau/(2N) |theta|^2 written here independently; the epoch's loss is that objective."""
    model, x, y = tiny_classifier()
    n, lr, tau = len(y), 0.3, 2.5
    net = copy.deepcopy(model.template())
    loss = F.cross_entropy(net(x), y) + tau / (2 * n) * sum(p.square().sum() for p in net.parameters())
    grads = torch.autograd.grad(loss, list(net.parameters()))
    r = fit_marglik(model, (x, y), 1, optimizer=lambda ps: torch.optim.SGD(ps, lr=lr), prior_precision=tau,
                    progress=False)  # fmt: skip
    for (name, p), g in zip(net.named_parameters(), grads):
        assert_close(r.guide.median()[name], p.detach() - lr * g, rtol=1e-12, atol=1e-14)
    assert r.history.records[0]["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)


def test_map_objective_per_layer_tau_and_gaussian_sigma():
    """map_objective with one tau per layer and a Gaussian sigma against the written-out formula."""
    torch.manual_seed(0)
    x, y = torch.randn(10, 3, dtype=D), torch.randn(10, dtype=D)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).to(D)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Gaussian(25, scale=1.0))
    tau, sigma = torch.tensor([0.5, 3.0], dtype=D), torch.tensor(0.3, dtype=D)
    got = map_objective(net, x, y, model.likelihood, make_layers(model), tau, 25, sigma)
    nll = (0.5 * ((y - net(x)[:, 0]) / sigma) ** 2 + sigma.log() + 0.5 * math.log(2 * math.pi)).mean()
    first = net[0].weight.square().sum() + net[0].bias.square().sum()
    last = net[2].weight.square().sum() + net[2].bias.square().sum()
    assert_close(got, nll + (0.5 * first + 3.0 * last) / (2 * 25), rtol=1e-12)


@pytest.mark.parametrize("start", [1e4, 1e-4])
@pytest.mark.parametrize("prior_structure", ["scalar", "layer"])
def test_tau_moves_towards_the_evidence_from_a_wrong_start(start, prior_structure):
    model, x, y = tiny_classifier()
    r = fit_marglik(model, (x, y), 12, lr=0.02, hyper_steps=10, prior_structure=prior_structure,
                    prior_precision=start, progress=False)  # fmt: skip
    steps = [torch.tensor(s["log_tau"], dtype=D) for s in r.evidence_steps]
    sign = -1 if start > 1 else 1  # far too big: down; far too small: up
    assert bool((sign * (steps[0] - math.log(start)) > 0).all())
    assert bool((sign * (steps[-1] - steps[0]) > 0).all())
    assert float(r.guide.log_marginal_likelihood()) > float(r.guide.log_marginal_likelihood(start))
    assert r.prior_precision.shape == (() if prior_structure == "scalar" else (2,))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(epochs=0), "epochs"),
        (dict(structure="lowrank"), "structure"),
        (dict(lr=0.0), "lr"),
        (dict(hyper_lr=-1.0), "hyper_lr"),
        (dict(hyper_steps=0), "hyper_steps"),
        (dict(marglik_every=0), "marglik_every"),
        (dict(burn_in=-1), "burn_in"),
        (dict(prior_structure="diag"), "prior_structure"),
        (dict(prior_precision=0.0), "prior_precision"),
        (dict(sigma_noise=True), "sigma_noise"),
        (dict(optimizer=lambda ps: torch.optim.Adam(ps, weight_decay=1e-4)), "weight_decay"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, match):
    model, x, y = tiny_classifier()
    args = dict(epochs=2, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_marglik(model, (x, y), **args)


def test_bad_argument_types():
    model, x, y = tiny_classifier()
    with pytest.raises(TypeError, match="model"):
        fit_marglik(nn.Linear(2, 2), (x, y), 2)
    with pytest.raises(TypeError, match="sigma_noise"):
        fit_marglik(model, (x, y), 2, sigma_noise=1)
    with pytest.raises(TypeError, match="optimizer"):
        fit_marglik(model, (x, y), 2, optimizer="adam", progress=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_result_guide_survives_deepcopy_and_save_load(tmp_path, dtype):
    model, x, y = tiny_classifier(dtype)
    r = fit_marglik(model, (x, y), 6, lr=0.02, burn_in=2, marglik_every=2, progress=False, val_data=(x, y))
    assert [s["epoch"] for s in r.evidence_steps] == [3, 5]  # after burn-in, every 2nd epoch, and the last
    assert {"val_nll", "val_accuracy"} <= set(r.history.last)
    assert r.prior_precision.dtype == dtype
    p = pp.predict(model, r.guide, x)
    model2, twin = copy.deepcopy((model, r.guide))
    assert_close(pp.predict(model2, twin, x).probs, p.probs, rtol=0, atol=0)
    pp.save(tmp_path / "m.pt", model, r.guide)
    saved = pp.load(tmp_path / "m.pt")
    assert torch.equal(saved.guide.prior_precision, r.prior_precision)
    assert_close(pp.predict(saved.model, saved.guide, x).probs, p.probs, rtol=1e-6 if dtype == torch.float32 else 1e-12)
    assert_close(saved.guide.log_marginal_likelihood(), r.guide.log_marginal_likelihood(), rtol=1e-6)
    pruned = pp.prune(model, r.guide, rule=pp.rules.Sparsity(0.5))
    assert pruned is not None


def test_gaussian_sigma_survives_save_load(tmp_path):
    X, y = blr_data()
    model = pp.bayesianize(nn.Linear(3, 1).to(D), dist.Normal(0.0, 1.0), pp.Gaussian(len(y), scale=1.0))
    r = fit_marglik(model, (X, y), 40, optimizer=sgd, sigma_noise=True, progress=False)
    assert float(r.sigma_noise) < 0.9  # moved from 1.0 towards the data's 0.4
    pp.save(tmp_path / "g.pt", model, r.guide)
    saved = pp.load(tmp_path / "g.pt")
    assert torch.equal(saved.guide.sigma_noise, r.sigma_noise)
    assert_close(pp.predict(saved.model, saved.guide, X).std, pp.predict(model, r.guide, X).std, rtol=1e-12)
