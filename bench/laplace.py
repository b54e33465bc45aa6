"""KFAC Laplace (``pp.laplace_guide``) beside laplace-torch 0.3 on the same MAP network and data, in one process.

Digits MLP 64-300-100-10 of ../shared/TARGETS.md, trained as ../shared/bench/peers.py trains it (100 epochs, Adam
lr 1e-3, weight decay 1e-4, batch 64, seed 0) on the 1437 training digits; scored on the 360 test digits.

* ``fit``: curvature time of ``pp.laplace_guide(structure="kron")`` ÷ laplace-torch ``KronLaplace.fit``
  (interleaved rounds; ratio of medians and ratio of bests);
* prior precision by the Laplace marginal likelihood (scalar and per layer; laplace-torch's marglik as peers.py
  calls it), GLM-probit and 100-sample MC predictives: time for the 360 test digits (ours: best of 3 calls;
  laplace-torch: one call), NLL, ECE, accuracy;
* held-out tuning: a second MAP network trained the same way on 80 % of the training digits, the prior precision
  chosen on the other 20 % (GLM log-likelihood), scored on the test digits; laplace-torch's GLM at the same τ on the
  same network as a cross-check;
* pruning at 90 % / 95 % sparsity: ``pp.prune(model, guide, rule=pp.rules.Sparsity(s))`` (lowest |μ|/σ under the
  Laplace marginals) vs global magnitude pruning, accuracy without fine-tuning;
* MLP 784-1200-1200-10 on random inputs: kron fit time and peak memory (each in a fresh subprocess; peak resident
  set size ``VmHWM`` after resetting it just before the fit, minus the resident size then; report only).

laplace-torch is imported here only.  Run it with the peers' interpreter:
``PYTHONPATH=. /work/peers/bin/python bench/laplace.py [--rounds 5] [--out bench/results/laplace.json]
[--figure docs/laplace_reliability.png]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from importlib.metadata import version

import pyro.distributions as dist
import torch
import torch.nn as nn

import pyro_prune as pp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from bench import common
from bench.common import held_out_map, net_scores, run_stamp, scores, tensor_loader, timed, train_map, write_json

common.hide_bench_folder()  # bench/laplace.py would shadow laplace-torch's `laplace`


def fit_ours(model, loader, **kw):
    return pp.laplace_guide(model, loader, "kron", **kw)


def fit_peer(net, loader, structure="kron"):
    from laplace import Laplace

    la = Laplace(copy.deepcopy(net), "classification", subset_of_weights="all", hessian_structure=structure)
    la.fit(loader)
    return la


def ours_predict(model, guide, x, y, rows, label, probs, repeats=3):
    """GLM and 100-sample MC predictives into ``rows[f"{label}_glm"]`` and ``rows[f"{label}_mc100"]`` (their
    probabilities into ``probs``, kept for the figure); seconds: the best of ``repeats`` calls (scores: the first)."""
    with torch.no_grad():
        for name, kw in (("glm", dict(method="glm")), ("mc100", dict(num_samples=100))):
            runs = [timed(pp.predict, model, guide, x, **kw) for _ in range(repeats)]
            seconds = min(t for _, t in runs)
            rows[f"{label}_{name}"] = dict(seconds=round(seconds, 4), **scores(runs[0][0].probs, y))
            probs[f"{label}_{name}"] = runs[0][0].probs


def peer_glm(la, x, y):
    """Seconds and scores of laplace-torch's GLM-probit predictive of ``la`` on ``x``."""
    with torch.no_grad():
        p, t = timed(la, x, pred_type="glm", link_approx="probit")
    return dict(seconds=round(t, 3), **scores(p, y))


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM (peak resident set size) to the current RSS
        return True
    except OSError:
        return False


def big_mlp(which: str) -> dict:
    """Fit kron curvature of an MLP 784-1200-1200-10 on 2,000 random inputs (batch 128); time and peak RSS."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 1200), nn.ReLU(), nn.Linear(1200, 1200), nn.ReLU(), nn.Linear(1200, 10)).eval()
    x, y = torch.randn(2000, 784), torch.randint(0, 10, (2000,))
    loader = tensor_loader(x, y, batch_size=128)
    reset = _reset_peak_rss()
    rss0 = _status_kb("VmRSS")
    t = time.perf_counter()
    if which == "ours":
        model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(2000))
        pp.laplace_guide(model, loader, "kron")
    else:
        fit_peer(net, loader)
    seconds = time.perf_counter() - t
    peak = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in net.parameters())
    return dict(system=which, params=params, fit_s=round(seconds, 3), peak_rss_mb=round(peak / 1024, 1),
                peak_rss_increase_mb=round((peak - rss0) / 1024, 1), peak_reset=reset)  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (``--big`` is the subprocess entry of :func:`big_runs`)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "laplace.json"))
    ap.add_argument("--figure", default=None, help="write reliability diagrams (MAP, marglik, held-out tau) here")
    ap.add_argument("--big", choices=["ours", "laplace-torch"], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def map_model(xtr, ytr, xte, yte, probs):
    """``(net, loader, model, map_scores)``: the MAP network (:func:`train_map`), an unshuffled loader of 64 over the
    training digits, the Bayesian model with prior N(0, 1), and the MAP's test scores (probabilities into ``probs``)."""
    net = train_map(xtr, ytr)
    with torch.no_grad():
        probs["map"] = net(xte).softmax(-1)
        map_scores = scores(probs["map"], yte)
    tl = tensor_loader(xtr, ytr, batch_size=64)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(len(xtr)))
    return net, tl, model, map_scores


def fit_times(model, net, tl, rounds):
    """``(guide, la, times)``: ``rounds`` interleaved kron fits, ours then laplace-torch's; the last fit of each is
    returned, with the medians, bests, their ratios and every time."""
    ours_t, peer_t = [], []
    for _ in range(rounds):
        guide, t = timed(fit_ours, model, tl)
        ours_t.append(t)
        la, t = timed(fit_peer, net, tl)
        peer_t.append(t)
    times = dict(ours_s=round(statistics.median(ours_t), 4), laplace_torch_s=round(statistics.median(peer_t), 4),
                 ratio=round(statistics.median(ours_t) / statistics.median(peer_t), 3),
                 ours_best_s=round(min(ours_t), 4), laplace_torch_best_s=round(min(peer_t), 4),
                 ratio_best=round(min(ours_t) / min(peer_t), 3),
                 ours_all_s=[round(t, 3) for t in ours_t],
                 laplace_torch_all_s=[round(t, 3) for t in peer_t])  # fmt: skip
    return guide, la, times


def peer_marglik(la, xte, yte):
    """laplace-torch's marginal-likelihood prior precision as peers.py calls it; its GLM-probit and 100-sample MC
    (``pred_type="nn"``) predictives on the test digits, one call each."""
    _, t = timed(la.optimize_prior_precision, method="marglik", pred_type="glm", link_approx="probit")
    peer = dict(tune_s=round(t, 3), tau=[round(v, 4) for v in la.prior_precision.reshape(-1).tolist()[:3]])
    peer["glm"] = peer_glm(la, xte, yte)
    with torch.no_grad():
        p, t = timed(la, xte, pred_type="nn", link_approx="mc", n_samples=100)
    peer["mc100"] = dict(seconds=round(t, 3), **scores(p, yte))
    return peer


def marglik_rows(model, guide, la, xte, yte, probs):
    """Our prior precision by the Laplace marginal likelihood, scalar then per layer (the guide keeps the last), with
    the predictives of each (:func:`ours_predict`); then laplace-torch's (:func:`peer_marglik`)."""
    rows: dict = {}
    for structure in ("scalar", "layer"):
        tau, t = timed(guide.optimize_prior_precision, structure, init=1.0)
        rows[f"marglik_{structure}"] = dict(tau=[round(v, 4) for v in tau.reshape(-1).tolist()], tune_s=round(t, 3),
                                            log_marglik=round(float(guide.log_marginal_likelihood()), 2))  # fmt: skip
        ours_predict(model, guide, xte, yte, rows, f"ours_marglik_{structure}", probs)
    rows["laplace_torch_marglik"] = peer_marglik(la, xte, yte)
    return rows


def magnitude_pruned(net, sparsity):
    """A copy of ``net`` with the fraction ``sparsity`` of smallest-|w| weights of all its Linear layers (one global
    cut, the ``round(sparsity * n)``-th smallest |w|) set to zero."""
    mag = copy.deepcopy(net)
    ws = torch.cat([m.weight.detach().abs().flatten() for m in mag if isinstance(m, nn.Linear)])
    k = round(sparsity * ws.numel())
    cut = torch.kthvalue(ws, k).values
    with torch.no_grad():
        for m in mag:
            if isinstance(m, nn.Linear):
                m.weight.mul_((m.weight.abs() > cut).to(m.weight.dtype))
    return mag


def prune_rows(model, net, guide, tl, tau, xte, yte):
    """Test accuracy at 90 % / 95 % sparsity without fine-tuning: ``pp.prune`` by ``Sparsity`` under the kron guide
    at prior precision ``tau`` and under a diagonal guide (marglik prior), beside global magnitude pruning."""
    guide.set_prior_precision(tau)
    dguide = pp.laplace_guide(model, tl, "diag", prior_precision="marglik")
    rows = {"tau_kron": tau, "tau_diag": round(float(dguide.prior_precision), 4)}
    for sp in (0.9, 0.95):
        acc_lap = {}
        for name, gd in (("kron", guide), ("diag", dguide)):
            r = pp.prune(model, gd, rule=pp.rules.Sparsity(sp))
            acc_lap[name] = net_scores(r.module, xte, yte)["accuracy"]
        acc_mag = net_scores(magnitude_pruned(net, sp), xte, yte)["accuracy"]
        rows[str(sp)] = dict(
            kron_snr_acc=acc_lap["kron"], diag_snr_acc=acc_lap["diag"], magnitude_acc=acc_mag,
            sparsity=round(r.report.sparsity, 4),
        )  # fmt: skip
    return rows


def validation_tuned(xtr, ytr, xte, yte, model, guide, la, probs):
    """Held-out tuning: a MAP on 80 % of the training digits, tau by the GLM log-likelihood of the other 20 %; our
    predictives there (and at that network's marglik tau) and laplace-torch's GLM at the same tau; then the held-out
    tau on the MAP trained on all training digits (hyperparameter chosen on held-out data, then the model refit on
    everything): ours (``guide``) and laplace-torch's (``la``) at that tau."""
    ho = held_out_map(xtr, ytr)
    net80, model80, tl80, va = ho.net, ho.model, ho.loader, ho.val_idx
    g80 = pp.laplace_guide(model80, tl80, "kron")
    val: dict = {"map80": net_scores(net80, xte, yte)}
    tau, t = timed(g80.optimize_prior_precision, method="val", val_data=(xtr[va], ytr[va]))
    val["tau"], val["tune_s"] = round(float(tau), 3), round(t, 3)
    ours_predict(model80, g80, xte, yte, val, "ours_val", probs)
    tau_ml = g80.optimize_prior_precision("scalar", init=1.0)
    val["marglik_tau_on_this_net"] = round(float(tau_ml), 4)
    ours_predict(model80, g80, xte, yte, val, "ours_marglik", probs)
    la80 = fit_peer(net80, tl80)
    la80.prior_precision = float(tau)
    val["laplace_torch_glm_same_tau"] = peer_glm(la80, xte, yte)
    guide.set_prior_precision(float(tau))
    ours_predict(model, guide, xte, yte, val, "full_ours_val", probs)
    la.prior_precision = float(tau)
    val["full_laplace_torch_glm_same_tau"] = peer_glm(la, xte, yte)
    return val


def digits_results(split, rounds, probs) -> dict:
    """Every digits part, in order: config, MAP, fit times, marglik predictives (with our predictive times as ratios
    to laplace-torch's GLM-probit one: machines are noisy), pruning, held-out tuning."""
    xtr, ytr, xte, yte = split.x_train, split.y_train, split.x_test, split.y_test
    res: dict = {"config": dict(torch=torch.__version__, threads=torch.get_num_threads(), rounds=rounds,
                                laplace_torch=version("laplace-torch"), **run_stamp())}  # fmt: skip
    t0 = time.perf_counter()
    net, tl, model, res["map"] = map_model(xtr, ytr, xte, yte, probs)
    guide, la, res["fit"] = fit_times(model, net, tl, rounds)
    rows = res["marglik"] = marglik_rows(model, guide, la, xte, yte, probs)
    lt = rows["laplace_torch_marglik"]["glm"]["seconds"]
    res["predict_ratio_to_laplace_torch_glm"] = {
        k: round(rows[f"ours_marglik_scalar_{k}"]["seconds"] / lt, 4) for k in ("glm", "mc100")
    }
    res["prune"] = prune_rows(model, net, guide, tl, rows["marglik_scalar"]["tau"][0], xte, yte)
    res["validation_tuned"] = validation_tuned(xtr, ytr, xte, yte, model, guide, la, probs)
    res["digits_total_s"] = round(time.perf_counter() - t0, 1)
    return res


def big_runs() -> list:
    """:func:`big_mlp` for ours and laplace-torch, each in a fresh subprocess (``--big``)."""
    big = []
    for which in ("ours", "laplace-torch"):
        out = subprocess.run([sys.executable, __file__, "--big", which], capture_output=True, text=True, check=True,
                             env=dict(os.environ))  # fmt: skip
        big.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return big


def main(argv=None):
    """Run the digits parts and the big-MLP runs, print the report, write the JSON (and the figure)."""
    args = parse_args(argv)
    if args.big:
        print(json.dumps(big_mlp(args.big)))
        return
    torch.set_num_threads(2)
    split = pp.data.load_digits()
    probs: dict = {}  # test-set probabilities kept for the figure
    res = digits_results(split, args.rounds, probs)
    res["mlp_784_1200_1200_10"] = big_runs()
    report(res)
    write_json(res, args.out)
    print(f"wrote {args.out}")
    if args.figure:
        figure(res, split.y_test, args.figure, probs)


def figure(res: dict, y: torch.Tensor, path: str, probs: dict) -> None:
    """Reliability diagrams of the MAP, the kron GLM at the marglik tau and at the held-out tau (``probs``: the
    test-set probabilities by key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("MAP", "map", res["map"]), ("kron, marglik tau, GLM", "ours_marglik_scalar_glm",
              res["marglik"]["ours_marglik_scalar_glm"]), ("kron, held-out tau, GLM", "full_ours_val_glm",
              res["validation_tuned"]["full_ours_val_glm"])]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, (title, key, sc) in zip(axes, panels):
        pp.plots.reliability_diagram(probs[key], y, ax=ax)
        ax.set_title(f"{title}\nNLL {sc['nll']:.3f}, ECE {sc['ece']:.3f}", fontsize=9)
    fig.suptitle("Digits MLP 64-300-100-10, 360 test digits", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def report(res: dict) -> None:
    f = res["fit"]
    print(f"MAP MLP 64-300-100-10: {res['map']}")
    print(f"fit (kron curvature), median of {len(f['ours_all_s'])}: ours {f['ours_s']:.3f} s, laplace-torch "
          f"{f['laplace_torch_s']:.3f} s, ratio {f['ratio']:.2f}; best: {f['ours_best_s']:.3f} s vs "
          f"{f['laplace_torch_best_s']:.3f} s, ratio {f['ratio_best']:.2f} (target <= 1.0)")  # fmt: skip
    print(f"\n{'predictive (360 test digits; ours best of 3)':44s} {'seconds':>8s} {'acc':>7s} {'NLL':>7s} {'ECE':>7s}")
    line = lambda name, r: print(f"{name:44s} {r['seconds']:8.3f} {r['accuracy']:7.4f} {r['nll']:7.4f} {r['ece']:7.4f}")  # noqa: E731
    m = res["marglik"]
    for s in ("scalar", "layer"):
        print(f"-- marglik {s}: tau={m['marglik_' + s]['tau']} (tuned in {m['marglik_' + s]['tune_s']} s)")
        line(f"ours kron, marglik {s}, GLM probit", m[f"ours_marglik_{s}_glm"])
        line(f"ours kron, marglik {s}, MC 100", m[f"ours_marglik_{s}_mc100"])
    line("laplace-torch kron, marglik, GLM probit", m["laplace_torch_marglik"]["glm"])
    line("laplace-torch kron, marglik, MC 100 (nn)", m["laplace_torch_marglik"]["mc100"])
    r = res["predict_ratio_to_laplace_torch_glm"]
    print(f"   ours / laplace-torch GLM-probit time: GLM {r['glm']:.4f}, MC 100 {r['mc100']:.4f} "
          f"(load average {res['config']['load_average_1min']} at the start)")  # fmt: skip
    v = res["validation_tuned"]
    print(f"-- held-out tau (MAP on 80 %, tau on 20 %): tau={v['tau']}, MAP alone {v['map80']}")
    line("ours kron, held-out tau, GLM probit", v["ours_val_glm"])
    line("ours kron, held-out tau, MC 100", v["ours_val_mc100"])
    line("laplace-torch kron, same tau, GLM probit", v["laplace_torch_glm_same_tau"])
    line(f"ours kron, marglik tau={v['marglik_tau_on_this_net']}, GLM probit", v["ours_marglik_glm"])
    print(f"-- the held-out tau={v['tau']} on the MAP trained on all 1437 training digits")
    line("ours kron, held-out tau, GLM probit", v["full_ours_val_glm"])
    line("ours kron, held-out tau, MC 100", v["full_ours_val_mc100"])
    line("laplace-torch kron, same tau, GLM probit", v["full_laplace_torch_glm_same_tau"])
    pr = res["prune"]
    print(f"\npruning, test accuracy without fine-tuning (SNR |mu|/sigma of the marginals at the marglik tau: "
          f"kron {pr['tau_kron']}, diag {pr['tau_diag']})")  # fmt: skip
    print(f"{'':16s} {'kron SNR':>9s} {'diag SNR':>9s} {'magnitude':>10s}")
    for sp in ("0.9", "0.95"):
        r = pr[sp]
        print(f"{'sparsity ' + sp:16s} {r['kron_snr_acc']:9.4f} {r['diag_snr_acc']:9.4f} {r['magnitude_acc']:10.4f}")
    print("\nMLP 784-1200-1200-10, 2,000 random inputs, kron fit (fresh process each):")
    for b in res["mlp_784_1200_1200_10"]:
        print(f"  {b['system']:14s} {b['fit_s']:7.2f} s   peak RSS {b['peak_rss_mb']:8.1f} MB "
              f"(+{b['peak_rss_increase_mb']:.1f} MB during the fit)")  # fmt: skip


if __name__ == "__main__":
    main()
