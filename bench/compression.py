"""Compression benchmark: AutoSparseVD + prune beside magnitude pruning and a plain-PyTorch Sparse VD, one process.

Digits MLP 64-300-100-10 of ../shared/TARGETS.md (1437 train / 360 test, Adam lr 1e-3, batch 64):

1. dense baseline: 100 epochs, weight decay 1e-4 (the network every method starts from);
2. ours: ``AutoSparseVD`` started at the dense weights, improper log-uniform prior, ``fit`` (600 epochs, KL warm-up
   100), then ``prune`` with ``LogAlpha(3)`` (the paper's rule), ``LogAlpha(1)`` and ``Sparsity(0.98)`` (50x,
   ranking by log alpha), plus the accuracy of the pruned mean network over thresholds 0..4;
   the pruned ensemble (100 samples of the restricted guide) and the pruned posterior-mean network are scored;
3. magnitude pruning (``torch.nn.utils.prune.global_unstructured`` L1) + 20 epochs fine-tune, at our sparsity and 98 %;
4. the plain-PyTorch Sparse VD reference of ../shared/bench/peers.py (same recipe as there: 200 epochs, warm-up 50);
5. speed: an AutoSparseVD ``fit`` epoch / a dense epoch, interleaved, median of rounds.

Optionally (``--mnist1d``) the same pipeline on a small Conv1d network on the mnist1d generator.

``--part groups`` (or ``all``) runs structured pruning ("Bayesian Compression"): ``AutoGroupSparse`` with the
log-uniform and the horseshoe group priors on the same dense MLP (600 epochs, lr 3e-3, KL warm-up 150 epochs to a
final KL weight of 0.5, i.e. a tempered posterior: with weight 1 the posterior keeps ~10 neurons per layer and loses
accuracy), pruned with ``GroupLogAlpha(3)`` into a physically
smaller network (neurons kept per layer, FLOPs, parameters, bits per layer, accuracy of the compact network and of
the pruned ensemble), beside structured magnitude pruning (``torch.nn.utils.prune.ln_structured`` on neurons, L2,
at the same neuron counts, + 20 epochs fine-tune), the inference time of the compact network / the dense one
(interleaved, same process), and the Conv1d network on mnist1d (channels kept, accuracy vs dense).

Writes ``bench/results/compression.json`` (a part run alone updates its own key) and prints a table.
``--quick`` runs a short smoke version.

This script measures ONE split (360 test digits: one digit is 0.28 pp, differences below ~1.8 pp are not
resolved): it records the recipes, compression reports, structure, figures and inference speed. Accuracy
*comparisons* between methods are made by the paired multi-split protocol (``bench/protocol.py``, statistics by
``pyro_prune.compare``) in ``bench/front.py``, which supersedes the accuracy columns here; do not quote them as
differences between methods.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune

import pyro_prune as pp
from pyro_prune import rules

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: bench.common
from bench.common import LinearSVDO, mlp, net_scores, print_table, scores, train_dense, write_json  # noqa: E402


def cnn1d():
    return nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(32 * 10, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


def weight_layers(net):
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def magnitude(dense, loader, x_test, y_test, sparsity, finetune):
    m = copy.deepcopy(dense)
    layers = [(layer, "weight") for layer in weight_layers(m)]
    tprune.global_unstructured(layers, pruning_method=tprune.L1Unstructured, amount=sparsity)
    before = net_scores(m, x_test, y_test, keys=None)
    train_dense(m, loader, finetune)
    after = net_scores(m, x_test, y_test, keys=None)
    return {"sparsity": round(sparsity, 4), "compression": round(1 / (1 - sparsity), 1), "no_finetune": before,
            f"finetune{finetune}": after}  # fmt: skip


def finetune_masked(module, masks, loader, x_test, y_test, epochs):
    """Fine-tune the exported network with its masks fixed (``torch.nn.utils.prune.custom_from_mask``), as magnitude
    pruning is fine-tuned."""
    m = copy.deepcopy(module)
    named = dict(m.named_modules())
    for name, mask in masks.items():
        tprune.custom_from_mask(named[name.rsplit(".", 1)[0]], "weight", mask)
    train_dense(m, loader, epochs)
    return net_scores(m, x_test, y_test, keys=None)


def plain_torch_svd(dense, loader, n, x_test, y_test, epochs, warmup):
    """The reference of ../shared/bench/peers.py (Molchanov et al.'s LinearSVDO), for Linear layers."""

    svd = nn.Sequential(LinearSVDO(64, 300), nn.ReLU(), LinearSVDO(300, 100), nn.ReLU(), LinearSVDO(100, 10))
    svd.load_state_dict({k.replace("weight", "theta"): v for k, v in dense.state_dict().items()}, strict=False)
    opt = torch.optim.Adam(svd.parameters(), lr=1e-3)
    t = time.perf_counter()
    for ep in range(epochs):
        beta = min(1.0, ep / warmup)
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(svd(xb), yb) * n + beta * sum(m.kl() for m in svd if isinstance(m, LinearSVDO))
            (loss / n).backward()
            opt.step()
    secs = (time.perf_counter() - t) / epochs
    svd.eval()
    with torch.no_grad():
        kept = sum(int((m.log_alpha() < 3).sum()) for m in svd if isinstance(m, LinearSVDO))
        total = sum(m.theta.numel() for m in svd if isinstance(m, LinearSVDO))
        out = scores(svd(x_test).softmax(-1), y_test, keys=None)
    return {"epochs": epochs, "s_per_epoch": round(secs, 4), "sparsity": round(1 - kept / total, 4),
            "compression": round(total / kept, 1), **out}  # fmt: skip


def fit_sparse_vd(dense, split, loader, epochs, warmup, lr, prior):
    """``(model, guide, out)``: ``AutoSparseVD`` started at ``dense`` under ``prior``, fitted by ``pp.fit`` with a KL
    warm-up; ``out`` holds the recipe, the seconds per epoch and the final loss."""
    pyro.clear_param_store()
    model = pp.bayesianize(dense, prior, pp.Categorical(split.dataset_size))
    guide = pp.AutoSparseVD(model)
    t = time.perf_counter()
    history = pp.fit(model, guide, loader, epochs=epochs, lr=lr, kl_warmup=warmup, progress=False)
    secs = (time.perf_counter() - t) / epochs
    out = {"epochs": epochs, "kl_warmup": warmup, "lr": lr, "s_per_epoch": round(secs, 4),
           "final_loss": round(history.last["loss"], 4)}  # fmt: skip
    return model, guide, out


def threshold_curve(model, guide, x_test, y_test):
    """Compression and test accuracy of the pruned posterior-mean network for log-alpha thresholds 0, 1, ..., 4."""
    curve = []
    for th in (0.0, 1.0, 2.0, 3.0, 4.0):
        res = pp.prune(model, guide, rules.LogAlpha(th))
        with torch.no_grad():
            acc = (res.module(x_test).argmax(-1) == y_test).float().mean().item()
        curve.append({"log_alpha_threshold": th, "compression": round(res.report.compression, 1), "accuracy": acc})
    return curve


def train_nll(model, guide, rule, x_train, y_train):
    """Training cross-entropy of the posterior-mean network pruned by ``rule``."""
    with torch.no_grad():
        net = pp.prune(model, guide, rule).module
        return F.cross_entropy(net(x_train), y_train).item()


def train_selected_threshold(model, guide, x_train, y_train):
    """A threshold chosen without the test set: the most aggressive log-alpha threshold of the grid -2, -1.5, ..., 4
    whose pruned posterior-mean network keeps its training NLL within 5 % of the unpruned posterior mean's."""
    base = train_nll(model, guide, rules.Sparsity(0.0), x_train, y_train)
    grid = [t / 2 for t in range(-4, 9)]  # -2 ... 4
    return next(t for t in grid if train_nll(model, guide, rules.LogAlpha(t), x_train, y_train) <= 1.05 * base)


def pruned_scores(model, guide, rule, example_input, loader, x_test, y_test):
    """``(row, result)``: ``pp.prune`` by ``rule``; the row holds the report's sparsity, compression, FLOPs reduction
    and per-layer sparsity, and the scores of the posterior-mean network, of the 100-sample pruned ensemble (seed 0)
    and of the mean network after 20 epochs of fine-tuning with its masks fixed."""
    res = pp.prune(model, guide, rule, example_input=example_input)
    mean_net = net_scores(res.module, x_test, y_test, keys=None)
    torch.manual_seed(0)
    ens = pp.predict(model, res.guide, x_test, num_samples=100)
    row = {
        "sparsity": round(res.report.sparsity, 4),
        "compression": round(res.report.compression, 1),
        "flops_reduction": round(res.report.flops_reduction, 1),
        "layer_sparsity": [round(layer.sparsity, 4) for layer in res.report.layers],
        "posterior_mean_net": mean_net,
        "ensemble100": scores(ens.probs, y_test, keys=None),
        "finetune20": finetune_masked(res.module, res.masks, loader, x_test, y_test, 20),
    }
    return row, res


def ours(dense, split, loader, epochs, warmup, lr, example_input, prior):
    """``(out, model, guide)``: :func:`fit_sparse_vd`, its :func:`threshold_curve`, the
    :func:`train_selected_threshold`, and :func:`pruned_scores` for ``LogAlpha(3)``, ``LogAlpha(1)``, the
    train-selected threshold and ``Sparsity(0.98)`` (the report of ``LogAlpha(3)`` kept and printed)."""
    model, guide, out = fit_sparse_vd(dense, split, loader, epochs, warmup, lr, prior)
    out["threshold_curve"] = threshold_curve(model, guide, split.x_test, split.y_test)
    chosen = train_selected_threshold(model, guide, split.x_train, split.y_train)
    out["train_selected_threshold"] = chosen
    labelled = (
        ("log_alpha_3", rules.LogAlpha(3.0)),
        ("log_alpha_1", rules.LogAlpha(1.0)),
        ("train_selected", rules.LogAlpha(chosen)),
        ("sparsity_0.98", rules.Sparsity(0.98)),
    )
    for label, rule in labelled:
        out[label], res = pruned_scores(model, guide, rule, example_input, loader, split.x_test, split.y_test)
        if label == "log_alpha_3":
            out["report"] = res.report.to_dict()
            print(res.report)
    return out, model, guide


def speed(split, loader, prior, rounds, epochs=5):
    """Median epoch time of dense training and of ``fit(AutoSparseVD)``, interleaved over ``rounds``.

    Our epoch time is ``History["seconds"]`` (one epoch: the steps, the epoch-end KL and bookkeeping); the
    one-time guide setup of each ``fit`` call is reported apart as ``setup_s``.
    """
    times = {"dense": [], "svd": []}
    setup = []
    for _ in range(rounds):
        net = mlp()
        for _ in range(epochs):
            t = time.perf_counter()
            train_dense(net, loader, 1)
            times["dense"].append(time.perf_counter() - t)
        pyro.clear_param_store()
        model = pp.bayesianize(net, prior, pp.Categorical(split.dataset_size))
        guide = pp.AutoSparseVD(model)
        t = time.perf_counter()
        history = pp.fit(model, guide, loader, epochs=epochs, progress=False)
        total = time.perf_counter() - t
        times["svd"].extend(history["seconds"])
        setup.append(total - sum(history["seconds"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "s_per_epoch": {k: round(v, 4) for k, v in med.items()},
        "svd_vs_dense": round(med["svd"] / med["dense"], 2),
        "setup_s": round(statistics.median(setup), 4),
    }


def dense_baseline(split, make_net, epochs):
    """``(split, loader, dense, dense_scores)``: the split's loader (batch 64, seed 0) and the dense network every
    method starts from (``make_net()`` after ``torch.manual_seed(0)``, ``epochs`` epochs of Adam, wd 1e-4)."""
    loader, _ = split.loaders(batch_size=64, seed=0)
    torch.manual_seed(0)
    dense = train_dense(make_net(), loader, epochs, wd=1e-4)
    return split, loader, dense, net_scores(dense, split.x_test, split.y_test, keys=None)


def dense_digits(args):
    """The digits split, its loader and the dense MLP every method starts from (100 epochs by default)."""
    return dense_baseline(pp.data.load_digits(), mlp, args.dense_epochs)


def run_digits(args, prior):
    split, loader, dense, dense_scores = dense_digits(args)
    x_test, y_test = split.x_test, split.y_test
    res = {"dense": dense_scores}
    res["ours"], model, guide = ours(dense, split, loader, args.epochs, args.warmup, args.lr, None, prior)
    sp = res["ours"]["log_alpha_3"]["sparsity"]
    res["magnitude_at_our_sparsity"] = magnitude(dense, loader, x_test, y_test, sp, 20)
    res["magnitude_at_50x"] = magnitude(dense, loader, x_test, y_test, 0.98, 20)
    res["plain_torch_svd"] = plain_torch_svd(dense, loader, split.dataset_size, x_test, y_test, args.ref_epochs, 50)
    res["speed"] = speed(split, loader, prior, args.rounds)
    if args.figures:
        import matplotlib

        matplotlib.use("Agg")
        from pyro_prune import plots

        plots.log_alpha_histogram(guide.log_alpha()).savefig(os.path.join(args.figures, "svd_log_alpha.png"), dpi=90)
        masks = pp.prune(model, guide, rules.LogAlpha(3.0)).masks
        plots.mask_images(masks).savefig(os.path.join(args.figures, "svd_masks.png"), dpi=90)
    return res


def dense_mnist1d(args):
    """The mnist1d split (4000 samples), its loader and the dense Conv1d network."""
    return dense_baseline(pp.data.load_mnist1d(num_samples=4000), cnn1d, args.mnist1d_dense_epochs)


def run_mnist1d(args, prior):
    split, loader, dense, dense_scores = dense_mnist1d(args)
    res = {"dense": dense_scores}
    res["ours"], *_ = ours(
        dense, split, loader, args.mnist1d_epochs, args.mnist1d_epochs // 4, args.lr, split.x_test[:1], prior
    )
    sp = res["ours"]["log_alpha_3"]["sparsity"]
    res["magnitude_at_our_sparsity"] = magnitude(dense, loader, split.x_test, split.y_test, sp, 20)
    return res


# -- structured pruning ----------------------------------------------------------------------------------------
def groups_ours(dense, split, loader, kind, tau0, epochs, warmup, lr, threshold, kl_weight, example_input=None):
    pyro.clear_param_store()
    model = pp.bayesianize(dense, pp.GroupPrior(kind, tau0=tau0), pp.Categorical(split.dataset_size))
    guide = pp.AutoGroupSparse(model)
    t = time.perf_counter()
    history = pp.fit(model, guide, loader, epochs=epochs, lr=lr, kl_warmup=warmup, kl_weight=kl_weight, progress=False)
    secs = (time.perf_counter() - t) / epochs
    res = pp.prune(model, guide, rules.GroupLogAlpha(threshold), example_input=example_input)
    x_test, y_test = split.x_test, split.y_test
    compact_scores = net_scores(res.module, x_test, y_test, keys=None)
    torch.manual_seed(0)
    ens = pp.predict(model, res.guide, x_test, num_samples=100)
    st = res.report.structure
    print(res.report)
    return {
        "prior": kind,
        "tau0": tau0,
        "epochs": epochs,
        "kl_warmup": warmup,
        "lr": lr,
        "kl_weight": kl_weight,
        "threshold": threshold,
        "s_per_epoch": round(secs, 4),
        "final_loss": round(history.last["loss"], 4),
        "groups_kept": {k: list(v) for k, v in st["groups_kept"].items()},
        "before": st["before"],
        "after": st["after"],
        "params_before": st["params_before"],
        "params_after": st["params_after"],
        "flops_reduction": round(st["flops_before"] / st["flops_after"], 1),
        "params_reduction": round(st["params_before"] / st["params_after"], 1),
        "bits": st["bits"],
        "masked_only": st["masked_only"],
        "compact_net": compact_scores,
        "ensemble100": scores(ens.probs, y_test, keys=None),
    }, res


def structured_magnitude(dense, loader, x_test, y_test, kept, finetune=20):
    """``ln_structured`` (L2) removing neurons so each layer keeps ``kept[i]`` groups like ours: input units of
    Linear layer ``i`` are the columns of its weight (``dim=1``), then 20 epochs fine-tune with the masks fixed."""
    m = copy.deepcopy(dense)
    linears = [layer for layer in m.modules() if isinstance(layer, nn.Linear)]
    for layer, k in zip(linears, kept):
        n_in = layer.in_features
        if k < n_in:
            tprune.ln_structured(layer, "weight", amount=n_in - k, n=2, dim=1)
    before = net_scores(m, x_test, y_test, keys=None)
    train_dense(m, loader, finetune)
    after = net_scores(m, x_test, y_test, keys=None)
    return {"groups_kept": list(kept), "no_finetune": before, f"finetune{finetune}": after}


def inference_ratio(dense, small, x, rounds=7, reps=200):
    """Median time of ``reps`` forward passes of the compact network / the dense one, interleaved."""
    ratios = []
    with torch.no_grad():
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(reps):
                dense(x)
            td = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(reps):
                small(x)
            ratios.append((time.perf_counter() - t) / td)
    return round(statistics.median(ratios), 3)


def run_groups(args):
    split, loader, dense, dense_scores = dense_digits(args)
    x_test, y_test = split.x_test, split.y_test
    out = {"dense": dense_scores}
    for kind, tau0 in (("log-uniform", 1.0), ("horseshoe", args.tau0)):
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        r, res = groups_ours(dense, split, loader, kind, tau0, args.group_epochs, args.group_epochs // 4,
                             args.group_lr, args.group_threshold, args.group_kl_weight)  # fmt: skip
        kept = [v[0] for v in r["groups_kept"].values()]
        r["structured_magnitude"] = structured_magnitude(dense, loader, x_test, y_test, kept)
        r["inference_time_compact_vs_dense"] = inference_ratio(dense, res.module, x_test)
        out[kind] = r
        if args.figures:
            import matplotlib

            matplotlib.use("Agg")
            from pyro_prune import plots

            tag = kind.replace("-", "_")
            plots.kept_groups(res.group_masks).savefig(os.path.join(args.figures, f"groups_kept_{tag}.png"), dpi=90)
            la = rules.group_log_alpha(res.guide.guide.marginals())
            fig = plots.group_log_alpha(la, threshold=args.group_threshold)
            fig.savefig(os.path.join(args.figures, f"groups_log_alpha_{tag}.png"), dpi=90)
    if args.mnist1d:
        split, loader, dense, dense_scores = dense_mnist1d(args)
        m1 = {"dense": dense_scores}
        torch.manual_seed(0)
        r, res = groups_ours(dense, split, loader, "log-uniform", 1.0, args.mnist1d_epochs, args.mnist1d_epochs // 4,
                             args.group_lr, args.group_threshold, args.group_kl_weight,
                             example_input=split.x_test[:1])  # fmt: skip
        r["inference_time_compact_vs_dense"] = inference_ratio(dense, res.module, split.x_test)
        m1["log-uniform"] = r
        out["mnist1d"] = m1
    return out


def groups_table(g):
    rows = [("structured (digits MLP)", "arch after", "FLOPs", "params", "acc", "nll", "ece")]
    rows.append(("dense", "64-300-100-10", "1x", "1x", *(f"{g['dense'][k]:.4f}" for k in ("accuracy", "nll", "ece"))))
    for kind in ("log-uniform", "horseshoe"):
        if kind not in g:
            continue
        r = g[kind]
        for label in ("compact_net", "ensemble100"):
            rows.append((f"ours {kind} {label}", r["after"], f"{r['flops_reduction']}x", f"{r['params_reduction']}x",
                         *(f"{r[label][k]:.4f}" for k in ("accuracy", "nll", "ece"))))  # fmt: skip
        sm = r["structured_magnitude"]["finetune20"]
        rows.append(("ln_structured same neurons +ft20", r["after"], "", "",
                     *(f"{sm[k]:.4f}" for k in ("accuracy", "nll", "ece"))))  # fmt: skip
    if "mnist1d" in g:
        m = g["mnist1d"]
        metric = ("accuracy", "nll", "ece")
        rows.append(("mnist1d Conv1d dense", "", "1x", "1x", *(f"{m['dense'][k]:.4f}" for k in metric)))
        r = m["log-uniform"]
        rows.append(("mnist1d ours log-uniform compact", r["after"], f"{r['flops_reduction']}x",
                     f"{r['params_reduction']}x", *(f"{r['compact_net'][k]:.4f}" for k in metric)))  # fmt: skip
    print_table(rows)
    for kind in ("log-uniform", "horseshoe"):
        if kind in g:
            r = g[kind]
            print(f"{kind}: groups kept {r['groups_kept']}, bits {r['bits']}, "
                  f"compact/dense inference time {r['inference_time_compact_vs_dense']}")  # fmt: skip


def table(res):
    rows = [("digits MLP", "sparsity", "compress", "acc", "nll", "ece")]
    d = res["digits"]
    rows.append(("dense", "0", "1x", *(f"{d['dense'][k]:.4f}" for k in ("accuracy", "nll", "ece"))))
    for label in ("log_alpha_3", "log_alpha_1", "train_selected", "sparsity_0.98"):
        o = d["ours"][label]
        for kind in ("posterior_mean_net", "ensemble100", "finetune20"):
            rows.append((f"ours {label} {kind}", f"{o['sparsity']:.4f}", f"{o['compression']}x",
                         *(f"{o[kind][k]:.4f}" for k in ("accuracy", "nll", "ece"))))  # fmt: skip
    for label in ("magnitude_at_our_sparsity", "magnitude_at_50x"):
        m = d[label]
        ft = m["finetune20"]
        rows.append((label + " +ft20", f"{m['sparsity']:.4f}", f"{m['compression']}x",
                     *(f"{ft[k]:.4f}" for k in ("accuracy", "nll", "ece"))))  # fmt: skip
    r = d["plain_torch_svd"]
    rows.append(("plain-torch SVD ref", f"{r['sparsity']:.4f}", f"{r['compression']}x",
                 *(f"{r[k]:.4f}" for k in ("accuracy", "nll", "ece"))))  # fmt: skip
    print_table(rows)
    s = d["speed"]
    print(f"AutoSparseVD epoch / dense epoch: {s['svd_vs_dense']}x  ({s['s_per_epoch']})")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; ``--quick`` shortens every run to a few epochs and one speed round."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dense-epochs", type=int, default=100)
    ap.add_argument("--ref-epochs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mnist1d", action="store_true", help="also run the Conv1d network on mnist1d")
    ap.add_argument("--mnist1d-epochs", type=int, default=100)
    ap.add_argument("--mnist1d-dense-epochs", type=int, default=50)
    ap.add_argument("--part", choices=("svd", "groups", "all"), default="all")
    ap.add_argument("--group-epochs", type=int, default=600)
    ap.add_argument("--group-lr", type=float, default=3e-3)
    ap.add_argument("--group-threshold", type=float, default=None, help="default: each prior's GroupLogAlpha threshold")
    ap.add_argument("--group-kl-weight", type=float, default=0.5, help="final KL weight (tempered posterior)")
    ap.add_argument("--tau0", type=float, default=1.0, help="global scale of the horseshoe")
    ap.add_argument("--quick", action="store_true", help="smoke run with few epochs")
    ap.add_argument("--figures", default=None, help="folder for PNG figures")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "compression.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.warmup, args.dense_epochs, args.ref_epochs, args.rounds = 4, 2, 4, 4, 1
        args.mnist1d_epochs, args.mnist1d_dense_epochs = 4, 4
        args.group_epochs = 4
    return args


def main(argv=None):
    """Run the parts chosen by ``--part``, print their tables and write the JSON (a part run alone keeps the other
    part's stored results); returns the results."""
    args = parse_args(argv)
    torch.set_num_threads(2)
    pyro.set_rng_seed(0)
    prior = pp.distributions.LogUniform()
    res = {}
    if os.path.exists(args.out) and args.part != "all":
        with open(args.out) as f:
            res = json.load(f)  # keep the other part's results
    res.update(torch=torch.__version__, pyro=pyro.__version__)
    if args.part in ("svd", "all"):
        res["digits"] = run_digits(args, prior)
        if args.mnist1d:
            res["mnist1d"] = run_mnist1d(args, prior)
        table(res)
    if args.part in ("groups", "all"):
        res["groups"] = run_groups(args)
        groups_table(res["groups"])
    write_json(res, args.out)
    return res


if __name__ == "__main__":
    main()
