"""Subnetwork inference (``pp.AutoSubnetwork`` and the subnetwork Laplace) beside laplace-torch 0.3's
``SubnetLaplace``, on the same MAP network and data, in one process.

Digits MLP 64-300-100-10 of ../shared/TARGETS.md, trained as ../shared/bench/peers.py trains it (100 epochs, Adam
lr 1e-3, weight decay 1e-4, batch 64, seed 0) on the 1437 training digits; scored on the 360 test digits
(NLL, ECE with 15 bins).  Prior :math:`\\mathcal N(0, 1)` (laplace-torch's default prior precision 1) throughout.

* laplace-torch: ``LargestVarianceDiagLaplaceSubnetMask`` (n = 1000, from a diagonal ``Laplace``), then
  ``SubnetLaplace`` (``hessian_structure="full"``), GLM-probit predictive — exactly as peers.py calls it;
* ours, Laplace: ``pp.laplace_guide(model, data, "full", subnet=LargestVariance(1000, diag_laplace))``,
  GLM-probit predictive (``pp.predict(..., method="glm")``);
* ours, VI: ``pp.AutoSubnetwork(model, subnet)`` (same subnetwork) trained by ``pp.fit`` (ELBO) from the MAP;
  100-sample ensemble and the GLM-probit predictive around its mean with its covariance;
* the prior precision chosen on held-out data (a MAP trained the same way on 80 % of the training digits, the
  subnetwork Laplace's GLM log-likelihood of the other 20 %, as bench/laplace.py), then used by both posteriors;
* the selection compared: ``AutoSparseVD`` marginals (mean-field VI with the same prior, started at the MAP),
  diagonal-Laplace variance, magnitude, random — each with the Laplace and the VI posterior;
* 1-D regression with a gap (``pp.data.load_gap_regression()``): MLP 1-50-50-1 (tanh) MAP, then AutoSubnetwork and
  the subnetwork Laplace over the 400 largest-magnitude weights; epistemic std of the predictive mean inside the gap
  vs on the training inputs (target ratio >= 2), figure ``docs/subnetwork_gap.png``; the Laplace ratio for each
  selection (the diagonal-Laplace variance picks weights of saturated units there, whose Jacobian is 0).

laplace-torch is imported here only.  Run it with the peers' interpreter:
``PYTHONPATH=. /work/peers/bin/python bench/subnetwork.py [--out bench/results/subnetwork.json]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from importlib.metadata import version
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

import pyro_prune as pp
from pyro_prune import subnet as sn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from bench import common
from bench.common import held_out_map, mlp, net_scores, run_stamp, scores, tensor_loader, timed, train_map, write_json

common.hide_bench_folder()  # bench/laplace.py would shadow laplace-torch's `laplace`

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fit_vi(model, subnet, loader, epochs, lr, init_scale, lr_tril, seed=0):
    """AutoSubnetwork from the MAP; Adam with a smaller step for the |S|(|S|-1)/2 off-diagonal Cholesky entries
    (Adam moves every entry by about lr per step whatever its gradient, and their noise adds up in the variances)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = pp.AutoSubnetwork(model, subnet, init_scale=init_scale)
    opt = pyro.optim.Adam(lambda module, name: {"lr": lr_tril if name.endswith("scale_tril") else lr})
    _, seconds = timed(pp.fit, model, guide, loader, epochs=epochs, optimizer=opt, progress=False)
    return guide, seconds


def vi_scores(model, guide, x, y, seed=0):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return scores(pp.predict(model, guide, x, num_samples=100).probs, y)


def glm_scores(model, guide, x, y):
    with torch.no_grad():
        return scores(pp.predict(model, guide, x, method="glm").probs, y)


class Setup(NamedTuple):
    """The digits data, the MAP network and what every part of :func:`digits` starts from."""

    split: Any  #: ``pp.data.load_digits()``
    net: nn.Module  #: the MAP network (:func:`train_map`)
    model: Any  #: ``pp.bayesianize(net, Normal(0, 1), Categorical(n_train))``
    loader: Any  #: unshuffled loader of 64 over the training digits (curvature)
    shuffled: Any  #: shuffled loader of ``--vi-batch`` over the training digits (VI)


def load_map(args, x, y) -> nn.Module:
    """The MAP network: :func:`train_map`, or (development only, ``--map-cache``) one it trained and saved before."""
    if args.map_cache and os.path.exists(args.map_cache):
        net = mlp()
        net.load_state_dict(torch.load(args.map_cache))
        net.eval()
    else:
        net = train_map(x, y)
        if args.map_cache:
            torch.save(net.state_dict(), args.map_cache)
    return net


def digits_setup(args, res) -> Setup:
    """Load the digits, train (or load) the MAP; its training time and test scores into ``res``."""
    torch.set_num_threads(args.threads)
    split = pp.data.load_digits()
    t = time.perf_counter()
    net = load_map(args, split.x_train, split.y_train)
    res["config"]["map_train_s"] = round(time.perf_counter() - t, 1)
    res["map"] = net_scores(net, split.x_test, split.y_test)
    tl = tensor_loader(split.x_train, split.y_train, batch_size=64)
    shuffled = tensor_loader(split.x_train, split.y_train, batch_size=args.vi_batch, shuffle=True)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(len(split.x_train)))
    return Setup(split, net, model, tl, shuffled)


def peer_subnet(net, tl, n_sub, x, y):
    """``(row, indices)``: laplace-torch as peers.py calls it, ``LargestVarianceDiagLaplaceSubnetMask`` (n =
    ``n_sub``) from a diagonal ``Laplace``, then ``SubnetLaplace`` (full), GLM-probit predictive on ``x``."""
    # imported here, not at the top: run as ``python bench/subnetwork.py``, the bench/ folder (with its laplace.py)
    # is on sys.path until common.hide_bench_folder() has run
    from laplace import Laplace
    from laplace.utils import LargestVarianceDiagLaplaceSubnetMask

    t0 = time.perf_counter()
    dl = Laplace(copy.deepcopy(net), "classification", subset_of_weights="all", hessian_structure="diag")
    dl.fit(tl)
    mask = LargestVarianceDiagLaplaceSubnetMask(net, n_params_subnet=n_sub, diag_laplace_model=dl)
    peer_idx = mask.select(tl)
    t_sel = time.perf_counter() - t0
    sl = Laplace(copy.deepcopy(net), "classification", subset_of_weights="subnetwork", hessian_structure="full",
                 subnetwork_indices=peer_idx)  # fmt: skip
    _, t_fit = timed(sl.fit, tl)
    with torch.no_grad():
        p_peer = sl(x, pred_type="glm", link_approx="probit")
    return dict(select_s=round(t_sel, 3), fit_s=round(t_fit, 3), **scores(p_peer, y)), peer_idx


def ours_subnet_laplace(model, tl, n_sub, peer_idx, x, y):
    """``(row, indices, guide)``: selection by diagonal-Laplace variance (the diagonal Laplace pass is part of its
    cost), then the subnetwork Laplace (full, prior precision 1); GLM-probit and 100-sample MC (seed 0) scores and
    the overlap with laplace-torch's selection ``peer_idx``."""

    def select_by_diag_laplace():
        return sn.LargestVariance(n_sub, source=pp.laplace_guide(model, tl, "diag")).select(model)

    idx_lap, t_sel = timed(select_by_diag_laplace)
    pyro.clear_param_store()
    lap, t_fit = timed(pp.laplace_guide, model, tl, "full", subnet=idx_lap, prior_precision=1.0)
    peer_set = set(peer_idx.tolist())
    row = dict(select_s=round(t_sel, 3), fit_s=round(t_fit, 3),
               overlap_with_laplace_torch=len(peer_set & set(idx_lap.tolist())) / n_sub,
               **glm_scores(model, lap, x, y))  # fmt: skip
    pyro.set_rng_seed(0)
    with torch.no_grad():
        row["mc100"] = scores(pp.predict(model, lap, x, num_samples=100).probs, y)
    return row, idx_lap, lap


def fit_vi_args(args, model, subnet, loader):
    """:func:`fit_vi` with the command line's VI recipe (epochs, learning rates, initial scale)."""
    return fit_vi(model, subnet, loader, args.vi_epochs, args.vi_lr, args.init_scale, args.vi_lr_tril)


def ours_subnet_vi(args, model, subnet, loader, x, y):
    """``AutoSubnetwork`` VI on ``subnet`` (:func:`fit_vi_args`): 100-sample MC and GLM-probit scores on ``x``."""
    vi, t_vi = fit_vi_args(args, model, subnet, loader)
    row = dict(fit_s=round(t_vi, 3), epochs=args.vi_epochs, batch=args.vi_batch, lr=args.vi_lr,
               lr_tril=args.vi_lr_tril,
               **vi_scores(model, vi, x, y))  # fmt: skip
    row["glm"] = glm_scores(model, vi, x, y)
    return row


def held_out_tau(args, s: Setup, lap, subnet):
    """Held-out prior precision (as bench/laplace.py): a MAP on 80 % of the training digits, tau by the GLM
    log-likelihood of the other 20 % under its subnetwork Laplace; then the full-data subnetwork Laplace ``lap`` at
    that tau (reset to 1 afterwards) and VI with the prior N(0, tau^-1/2) on ``subnet``."""
    xtr, ytr, xte, yte = s.split.x_train, s.split.y_train, s.split.x_test, s.split.y_test
    ho = held_out_map(xtr, ytr)
    model80, tl80, va = ho.model, ho.loader, ho.val_idx
    pyro.clear_param_store()
    sel80 = sn.LargestVariance(args.n, pp.laplace_guide(model80, tl80, "diag"))
    lap80 = pp.laplace_guide(model80, tl80, "full", subnet=sel80, prior_precision=1.0)
    tau = float(lap80.optimize_prior_precision(method="val", val_data=(xtr[va], ytr[va])))
    lap.set_prior_precision(tau)
    held = {"tau": round(tau, 4), "laplace_glm": glm_scores(s.model, lap, xte, yte)}
    model_tau = pp.bayesianize(s.net, dist.Normal(0.0, tau**-0.5), pp.Categorical(len(xtr)))  # tau as the VI prior
    vi_tau, t = fit_vi_args(args, model_tau, subnet, s.shuffled)
    held["vi"] = dict(fit_s=round(t, 3), mc100=vi_scores(model_tau, vi_tau, xte, yte),
                      glm=glm_scores(model_tau, vi_tau, xte, yte))  # fmt: skip
    lap.set_prior_precision(1.0)
    return held


def selection_row(args, s: Setup, name, idx, idx_lap, vi_row):
    """The subnetwork Laplace (GLM) and VI (GLM, MC 100) scores for the selection ``idx``; VI on the
    diagonal-Laplace selection ``idx_lap`` is not refitted (``vi_row``, the main run's)."""
    x, y = s.split.x_test, s.split.y_test
    pyro.clear_param_store()
    g = pp.laplace_guide(s.model, s.loader, "full", subnet=idx, prior_precision=1.0)
    row = {"laplace_glm": glm_scores(s.model, g, x, y)}
    if name == "diag_laplace_variance":
        row["vi_mc100"] = {k: vi_row[k] for k in ("accuracy", "nll", "ece")}
        row["vi_glm"] = vi_row["glm"]
    else:
        g2, t = fit_vi_args(args, s.model, idx, s.shuffled)
        row["vi_mc100"] = dict(fit_s=round(t, 3), **vi_scores(s.model, g2, x, y))
        row["vi_glm"] = glm_scores(s.model, g2, x, y)
    row["overlap_with_diag_laplace"] = len(set(idx.tolist()) & set(idx_lap.tolist())) / args.n
    return row


def selection(args, s: Setup, idx_lap, vi_row):
    """The selections compared: ``AutoSparseVD`` marginals (mean-field VI with the same N(0, 1) prior, from the MAP),
    diagonal-Laplace variance, magnitude, random; a :func:`selection_row` each."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svd = pp.AutoSparseVD(s.model, init_log_sigma2=-4.0)
    _, t_svd = timed(pp.fit, s.model, svd, s.shuffled, epochs=args.svd_epochs, lr=2e-2, progress=False)
    sel_svd = sn.LargestVariance(args.n, source=svd)
    strategies = {
        "autosparsevd_marginals": sel_svd.select(s.model),
        "diag_laplace_variance": idx_lap,
        "magnitude": sn.LargestMagnitude(args.n).select(s.model),
        "random": sn.Random(args.n, seed=0).select(s.model),
    }
    rows = {}
    for name, idx in strategies.items():
        rows[name] = selection_row(args, s, name, idx, idx_lap, vi_row)
        print(json.dumps({name: rows[name]}), flush=True)
    return dict(autosparsevd_fit_s=round(t_svd, 3), autosparsevd_epochs=args.svd_epochs, rows=rows)


def digits(args, res):
    """The digits parts into ``res``: laplace-torch's subnetwork Laplace, ours, VI on the same subnetwork, the
    held-out prior precision, and (unless ``--only-main``) the selection table."""
    s = digits_setup(args, res)
    x, y = s.split.x_test, s.split.y_test
    res["laplace_torch_subnet"], peer_idx = peer_subnet(s.net, s.loader, args.n, x, y)
    res["ours_subnet_laplace"], idx_lap, lap = ours_subnet_laplace(s.model, s.loader, args.n, peer_idx, x, y)
    res["ours_subnet_vi"] = ours_subnet_vi(args, s.model, idx_lap, s.shuffled, x, y)
    print(json.dumps({k: res[k] for k in ("map", "laplace_torch_subnet", "ours_subnet_laplace", "ours_subnet_vi")}),
          flush=True)  # fmt: skip
    res["held_out_tau"] = held = held_out_tau(args, s, lap, idx_lap)
    print(json.dumps({"held_out_tau": held}), flush=True)
    if args.only_main:
        return
    res["selection"] = selection(args, s, idx_lap, res["ours_subnet_vi"])


def gap_map(x, y) -> nn.Module:
    """MLP 1-50-50-1 (tanh), seed 0, 3000 full-batch Adam steps (lr 1e-2) on the squared error plus 1e-4 |w|^2."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 50), nn.Tanh(), nn.Linear(50, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3000):
        opt.zero_grad()
        (F.mse_loss(net(x).squeeze(-1), y) + 1e-4 * sum(p.pow(2).sum() for p in net.parameters())).backward()
        opt.step()
    return net.eval()


def epistemic_ratio(model, guide, split, inside, **kw):
    """Mean epistemic std of the predictive mean inside the gap (``inside``: mask of the test inputs) and on the
    training inputs, and their ratio (seed 0; ``kw`` for ``pp.predict``)."""
    pyro.set_rng_seed(0)
    with torch.no_grad():
        s_gap = float(pp.predict(model, guide, split.x_test, **kw).epistemic_std.reshape(-1)[inside].mean())
        s_train = float(pp.predict(model, guide, split.x_train, **kw).epistemic_std.reshape(-1).mean())
    return dict(std_gap=round(s_gap, 4), std_train=round(s_train, 4), ratio=round(s_gap / max(s_train, 1e-12), 2))


def gap_selections(model, split, inside, n_sub):
    """:func:`epistemic_ratio` of the subnetwork Laplace's GLM predictive (cheap) for each selection."""
    data = (split.x_train, split.y_train)
    by_selection = {}
    for name, sel in (("largest_magnitude", sn.LargestMagnitude(n_sub)), ("random", sn.Random(n_sub, seed=0)),
                      ("diag_laplace_variance", sn.LargestVariance(n_sub, pp.laplace_guide(model, data, "diag"))),
                      ("last_layer", sn.LastLayer()),
                      ("all_weights", torch.arange(sn.num_weights(model)))):  # fmt: skip
        pyro.clear_param_store()
        guide = pp.laplace_guide(model, data, "full", subnet=sel, prior_precision=1.0)
        by_selection[name] = epistemic_ratio(model, guide, split, inside, method="glm")
    return by_selection


def gap_vi(model, idx, data, epochs):
    """``(guide, seconds)``: ``AutoSubnetwork`` on ``idx`` (init_scale 1e-3: the data pin most directions), full
    batch, Adam decayed 10x over the run (ClippedAdam lrd), seed 0."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vi = pp.AutoSubnetwork(model, idx, init_scale=1e-3)
    opt = pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": 0.1 ** (1 / epochs)})
    _, t_vi = timed(pp.fit, model, vi, data, epochs=epochs, optimizer=opt, progress=False)
    return vi, t_vi


def gap_curves(model, guides, split, inside, out):
    """For each ``name: (predict kwargs, guide)``: epistemic std in the gap and on the training inputs, their ratio
    and the test RMSE into ``out[name]``; returns the predictive mean and epistemic std on the test inputs by name."""
    curves = {}
    with torch.no_grad():
        for name, (kw, g) in guides.items():
            pyro.set_rng_seed(0)
            pg = pp.predict(model, g, split.x_test, **kw)
            pt = pp.predict(model, g, split.x_train, **kw)
            mean, std = pg.mean.reshape(-1), pg.epistemic_std.reshape(-1)
            s_train = float(pt.epistemic_std.reshape(-1).mean())
            s_gap = float(std[inside].mean())
            out[name] = dict(std_gap=round(s_gap, 4), std_train=round(s_train, 4), ratio=round(s_gap / s_train, 2),
                             rmse_test=round(float((mean - split.y_test).pow(2).mean().sqrt()), 4))  # fmt: skip
            curves[name] = (mean, std)
    return curves


def gap_figure(path, curves, out, split, n_sub):
    """Predictive mean ± 2 epistemic std of each posterior over the gap data (``docs/subnetwork_gap.png``)."""
    import matplotlib  # only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    titles = {"vi": "AutoSubnetwork (VI, 200 draws)", "laplace_glm": "subnetwork Laplace (GLM)"}
    xs = split.x_test.squeeze(-1)
    for ax, (name, (mean, std)) in zip(axes, curves.items()):
        ax.axvspan(-0.5, 0.5, color="0.92", label="gap")
        ax.fill_between(xs, mean - 2 * std, mean + 2 * std, alpha=0.3, label="±2 epistemic std")
        ax.plot(xs, mean, lw=1.5, label="predictive mean")
        ax.plot(xs, split.y_test, "k--", lw=1, label="f(x)")
        ax.scatter(split.x_train.squeeze(-1), split.y_train, s=6, c="k", alpha=0.5, label="train")
        r = out[name]
        ax.set_title(f"{titles[name]}\nstd gap/train = {r['ratio']}", fontsize=10)
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"1-D regression with a gap, MLP 1-50-50-1, {n_sub} of {out['num_weights']} weights "
                 "(largest magnitude)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def gap(args, res):
    """1-D regression with a gap: MAP (:func:`gap_map`), the Laplace ratio for each selection, then AutoSubnetwork and
    the subnetwork Laplace over the ``--gap-n`` largest-magnitude weights (:func:`gap_curves`, figure)."""
    torch.set_num_threads(args.threads)
    split = pp.data.load_gap_regression()
    x, y = split.x_train, split.y_train
    net = gap_map(x, y)
    noise = 0.1  # the generating noise of load_gap_regression
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Gaussian(len(x), scale=noise))
    n_sub = args.gap_n
    inside = (split.x_test.squeeze(-1) > -0.5) & (split.x_test.squeeze(-1) < 0.5)
    by_selection = gap_selections(model, split, inside, n_sub)
    idx = sn.LargestMagnitude(n_sub).select(model)
    pyro.clear_param_store()
    lap = pp.laplace_guide(model, (x, y), "full", subnet=idx, prior_precision=1.0)
    vi, t_vi = gap_vi(model, idx, (x, y), args.gap_epochs)
    out = {"n_subnet": n_sub, "selection": "largest_magnitude", "num_weights": sn.num_weights(model),
           "vi_fit_s": round(t_vi, 3), "laplace_glm_by_selection": by_selection}  # fmt: skip
    guides = {"vi": (dict(num_samples=200), vi), "laplace_glm": (dict(method="glm"), lap)}
    curves = gap_curves(model, guides, split, inside, out)
    res["gap"] = out
    print(json.dumps({"gap": out}), flush=True)
    if args.figure:
        gap_figure(args.figure, curves, out, split, n_sub)


def gap_lines(g) -> list:
    """The table lines of the gap regression."""
    lines = ["", f"Gap regression: epistemic std of the mean, gap / training inputs (target >= 2), "
                  f"{g['n_subnet']} of {g['num_weights']} weights by {g['selection']}"]  # fmt: skip
    for name in ("vi", "laplace_glm"):
        r = g[name]
        lines.append(f"{name:14s} std gap {r['std_gap']:.4f}  std train {r['std_train']:.4f}  "
                     f"ratio {r['ratio']:.2f}  rmse {r['rmse_test']:.4f}")  # fmt: skip
    lines.append("Laplace GLM ratio by selection: " + ", ".join(
        f"{k} {v['ratio']:.2f}" for k, v in g["laplace_glm_by_selection"].items()))  # fmt: skip
    return lines


def table(res):
    """The plain-text table of every part in ``res``."""
    lines = ["", f"Digits MLP 64-300-100-10, subnetwork of {res['config']['n']} weights, prior N(0, 1)"]
    lines.append(f"{'system':44s} {'fit s':>8s} {'acc':>7s} {'NLL':>7s} {'ECE':>7s}")
    m = res["map"]
    lines.append(f"{'MAP':44s} {'':>8s} {m['accuracy']:7.4f} {m['nll']:7.4f} {m['ece']:7.4f}")
    for key, label in (("laplace_torch_subnet", "laplace-torch SubnetLaplace (GLM probit)"),
                       ("ours_subnet_laplace", "pp subnetwork Laplace (GLM probit)"),
                       ("ours_subnet_vi", "pp AutoSubnetwork VI (MC 100)")):  # fmt: skip
        r = res[key]
        lines.append(f"{label:44s} {r['fit_s']:8.2f} {r['accuracy']:7.4f} {r['nll']:7.4f} {r['ece']:7.4f}")
        for sub, what in (("mc100", "MC 100"), ("glm", "GLM probit")):
            if sub in r:
                m = r[sub]
                lines.append(f"{'  same posterior, ' + what + ' predictive':44s} {'':>8s} {m['accuracy']:7.4f} "
                             f"{m['nll']:7.4f} {m['ece']:7.4f}")  # fmt: skip
    if "held_out_tau" in res:
        h = res["held_out_tau"]
        lines.append(f"held-out prior precision tau = {h['tau']} (MAP on 80 %, tau by the GLM log-likelihood of 20 %):")
        for label, r in (("pp subnetwork Laplace (GLM probit)", h["laplace_glm"]),
                         ("pp AutoSubnetwork VI (MC 100)", h["vi"]["mc100"]),
                         ("pp AutoSubnetwork VI (GLM probit)", h["vi"]["glm"])):  # fmt: skip
            lines.append(f"{'  ' + label:44s} {'':>8s} {r['accuracy']:7.4f} {r['nll']:7.4f} {r['ece']:7.4f}")
    if "selection" in res:
        lines += ["", f"Selection (n = {res['config']['n']})"]
        lines.append("NLL / ECE of the test digits; Laplace: GLM probit; VI: GLM probit and MC 100")
        lines.append(f"{'selection':24s} {'Laplace GLM':>16s} {'VI GLM':>16s} {'VI MC':>16s} {'overlap':>8s}")
        for name, r in res["selection"]["rows"].items():
            cells = [f"{r[k]['nll']:.4f} / {r[k]['ece']:.4f}" for k in ("laplace_glm", "vi_glm", "vi_mc100")]
            lines.append(f"{name:24s} {cells[0]:>16s} {cells[1]:>16s} {cells[2]:>16s} "
                         f"{r['overlap_with_diag_laplace']:8.2f}")  # fmt: skip
    if "gap" in res:
        lines += gap_lines(res["gap"])
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--vi-epochs", type=int, default=30)
    ap.add_argument("--vi-batch", type=int, default=128)
    ap.add_argument("--vi-lr", type=float, default=1e-2)
    ap.add_argument("--vi-lr-tril", type=float, default=1e-3)
    ap.add_argument("--init-scale", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared)")
    ap.add_argument("--svd-epochs", type=int, default=60)
    ap.add_argument("--gap-n", type=int, default=400)
    ap.add_argument("--gap-epochs", type=int, default=2000)
    ap.add_argument("--only-main", action="store_true", help="skip the selection table and the gap regression")
    ap.add_argument("--only-gap", action="store_true")
    ap.add_argument("--map-cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "subnetwork.json"))
    ap.add_argument("--figure", default=os.path.join(ROOT, "docs", "subnetwork_gap.png"))
    args = ap.parse_args(argv)
    res: dict = {"config": dict(vars(args), torch=torch.__version__, laplace_torch=version("laplace-torch"),
                                **run_stamp())}  # fmt: skip
    t0 = time.perf_counter()
    if not args.only_gap:
        digits(args, res)
    if not args.only_main:
        gap(args, res)
    res["config"]["total_s"] = round(time.perf_counter() - t0, 1)
    print(table(res) if not args.only_gap else json.dumps(res.get("gap")))
    if args.out and not args.only_main and not args.only_gap:
        write_json(res, args.out)


if __name__ == "__main__":
    main()
