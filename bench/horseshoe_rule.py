r"""Which default group rule for the horseshoe? (issue 13, point 3)

Trains the horseshoe group prior (``AutoGroupSparse``) on

* the synthetic few-relevant-inputs problems of ``tests/test_horseshoe.py`` (12 inputs / 3 relevant and 40 inputs /
  4 relevant, seeds 0-3; 500 full-batch Adam steps, lr 3e-2, KL warm-up 100, :math:`\tau_0 = 10^{-5}`), and
* digits (``bench.protocol.digits_splits``, splits 0-2; the validation part carved from training is the only data
  scored here, the test part is never touched): the dense MLP 64-300-100-10 of the protocol (100 epochs), then the
  group fit of ``bench/front.py`` (200 epochs, lr 3e-3, warm-up 50, KL weight 0.5, :math:`\tau_0 = 1`),

and scores every candidate rule on the same trained posteriors: on synthetic, how many relevant and irrelevant
inputs each keeps (and the pruned net's accuracy on fresh data); on digits, the pruned net's validation accuracy and
compression against the unpruned posterior mean. The log-uniform prior is trained on synthetic too, to show that
its default is unchanged.

Run from the repository root: ``python bench/horseshoe_rule.py`` (``--quick``: one seed, one split, few epochs;
a smoke run). Trained posteriors are cached in ``--cache`` (default ``/tmp/horseshoe_rule``). Writes
``bench/results/horseshoe_rule.{json,md}``.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import pyro_prune as pp  # noqa: E402
from bench import protocol  # noqa: E402
from bench.common import mlp, write_json  # noqa: E402
from pyro_prune import compare, rules  # noqa: E402

#: (examples, inputs, relevant inputs, hidden units, epochs), as tests/test_horseshoe.py
SIZES = {"12in": (256, 12, 3, 16, 500), "40in": (512, 40, 4, 32, 500)}
WARMUP = 100


def few_relevant(n, d, r, seed=0):
    """``x ~ N(0, I_d)``, label = sign of the alternating sum of the first ``r`` inputs (tests/test_horseshoe.py)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    signs = torch.tensor([(-1.0) ** j for j in range(r)])
    return x, (x[:, :r] @ signs > 0).long()


def cached(path, fn, *args):
    """``fn(*args)``, pickled to ``path`` on the first call and read back afterwards."""
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)
    out = fn(*args)
    with open(path, "wb") as fh:
        pickle.dump(out, fh)
    return out


def train_synthetic(kind, size, seed, epochs):
    n, d, r, hidden, _ = size
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    x, y = few_relevant(n, d, r, seed)
    net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 2))
    model = pp.bayesianize(net, pp.GroupPrior(kind, tau0=1e-5), pp.Categorical(dataset_size=n))
    guide = pp.AutoGroupSparse(model)
    pp.fit(model, guide, (x, y), epochs=epochs, lr=3e-2, kl_warmup=min(WARMUP, epochs // 5), progress=False)
    return model, guide


def train_digits(split, dense_epochs, epochs):
    dense = protocol.train_dense_baseline(mlp, split, dense_epochs)
    pyro.clear_param_store()
    pyro.set_rng_seed(split.index)
    model = pp.bayesianize(dense, pp.GroupPrior("horseshoe", tau0=1.0), pp.Categorical(split.dataset_size))
    guide = pp.AutoGroupSparse(model)
    pp.fit(model, guide, split.loader(seed=4), epochs=epochs, lr=3e-3, kl_warmup=max(1, epochs // 4), kl_weight=0.5,
           progress=False)  # fmt: skip
    return dense, model, guide


# -- candidate scores (keep a group where score < threshold) ------------------------------------------------------
def _rows(m, rows):
    loc, var = m.loc, m.scale.pow(2)
    return (loc, var) if rows is None else (loc[rows], var[rows])


def _tilde(m, rows):
    r""":math:`(\tilde\mu, \tilde\sigma^2)` recovered from the moments of :math:`w = z\tilde w`:
    :math:`\tilde\mu = \mathbb E w / \mathbb E z`, :math:`\tilde\sigma^2 = (\mathrm{Var}\,w + (\mathbb E w)^2) /
    \mathbb E z^2 - \tilde\mu^2`."""
    loc, var = _rows(m, rows)
    g = m.group
    shape = [1] * loc.dim()
    shape[g.axis] = -1
    ez = g.scale_mean.reshape(shape)
    ez2 = ez.pow(2) + g.scale_std.reshape(shape).pow(2)
    mt = loc / ez
    return mt, ((var + loc.pow(2)) / ez2 - mt.pow(2)).clamp_min(0)


def _reduce_dims(m, t):
    return [d for d in range(t.dim()) if d != m.group.axis]


def median_scale_ratio(m, rows):
    r"""The pooled ratio with :math:`z_g` at its posterior median (log-normal: :math:`e^{\mathbb E\log z}`; a fixed
    :math:`z` cancels): :math:`\log\sum\tilde\sigma^2 - \log\sum\tilde\mu^2`."""
    mt, st2 = _tilde(m, rows)
    dims = _reduce_dims(m, mt)
    return (st2.sum(dims) + 1e-12).log() - (mt.pow(2).sum(dims) + 1e-12).log()


def shrinkage_kappa(m, rows):
    r"""Mean-field shrinkage factor :math:`\kappa_g`, the mean over the group of :math:`\tilde\sigma^2 = 1/(1 + P
    z^2)` (posterior over prior variance of :math:`\tilde w \sim \mathcal N(0, 1)`; Carvalho et al. 2010's
    :math:`\kappa = 1/(1 + \tau^2\lambda^2 s)`); remove where :math:`\kappa_g > 1/2`."""
    mt, st2 = _tilde(m, rows)
    return st2.mean(_reduce_dims(m, mt))


def log_scale_below_max(m, rows):
    r""":math:`\max_h \mathbb E\log z_h - \mathbb E\log z_g` (nats below the layer's largest scale)."""
    lz = m.group.log_scale_mean
    return lz.max() - lz


class Candidate(rules.GroupRule):
    """Keep the groups with ``score(marginal, rows) < threshold`` in every layer (chained as ``GroupLogAlpha``)."""

    def __init__(self, score, threshold):
        self.score, self.threshold = score, threshold

    def group_masks(self, marginals):
        return rules._chain_scores(self._groups(marginals), lambda n, s: s < self.threshold, self.score)


def candidates():
    """``{label: rule}``; the new default ``GroupLogAlpha()`` is ``relative norm < log 10``."""
    return {
        "pooled log α < 0 (old horseshoe default)": rules.GroupLogAlpha(0.0),
        "pooled log α < 3 (log-uniform default)": rules.GroupLogAlpha(3.0),
        "median-scale pooled log α < 0": Candidate(median_scale_ratio, 0.0),
        "median-scale pooled log α < 3": Candidate(median_scale_ratio, 3.0),
        "shrinkage κ < 1/2": Candidate(shrinkage_kappa, 0.5),
        "E log z within 1 nat of layer max": Candidate(log_scale_below_max, 1.0),
        "E log z within 2 nats of layer max": Candidate(log_scale_below_max, 2.0),
        "relative norm < log 5": Candidate(rules.relative_group_norm, math.log(5.0)),
        "relative norm < log 10 (new default GroupLogAlpha())": rules.GroupLogAlpha(),
        "relative norm < log 20": Candidate(rules.relative_group_norm, math.log(20.0)),
    }


# -- evaluation ------------------------------------------------------------------------------------------------------
def accuracy(net, x, y):
    with torch.no_grad():
        return float((net(x).argmax(-1) == y).double().mean())


def synthetic_rows(args):
    """One row per (prior, size, seed, candidate): relevant and irrelevant inputs kept, hidden units kept, accuracy
    of the pruned net on 4,000 fresh points."""
    out = []
    for name, size in SIZES.items():
        n, d, r, hidden, epochs = size
        for seed in range(args.seeds):
            for kind in ("horseshoe", "log-uniform"):
                path = os.path.join(args.cache, f"syn_{kind}_{name}_{seed}_{args.syn_epochs}.pkl")
                model, guide = cached(path, train_synthetic, kind, size, seed, args.syn_epochs)
                x, y = few_relevant(4000, d, r, seed=1000 + seed)
                labels = candidates() if kind == "horseshoe" else {"GroupLogAlpha() (pooled log α < 3)": None}
                for label, rule in labels.items():
                    res = pp.prune(model, guide, rules.GroupLogAlpha() if rule is None else rule)
                    keep = res.group_masks["0.weight"]
                    out.append(dict(prior=kind, size=name, seed=seed, rule=label, relevant=int(keep[:r].sum()),
                                    irrelevant=int(keep[r:].sum()), of=(r, d - r),
                                    hidden=int(res.group_masks["2.weight"].sum()),
                                    exact=bool(keep.tolist() == [True] * r + [False] * (d - r)),
                                    accuracy=accuracy(res.module, x, y)))  # fmt: skip
    return out


def digits_rows(args):
    """One row per (split, candidate): validation accuracy and compression of the pruned net, with the unpruned
    posterior mean's and the dense net's validation accuracy (test data is never scored)."""
    out = []
    for split in protocol.digits_splits(k=args.splits):
        path = os.path.join(args.cache, f"digits_{split.index}_{args.dense_epochs}_{args.epochs}.pkl")
        dense, model, guide = cached(path, train_digits, split, args.dense_epochs, args.epochs)
        full = pp.prune(model, guide, rules.GroupLogAlpha(math.inf))
        base = dict(split=split.index, dense=protocol.val_accuracy(dense, split),
                    unpruned=protocol.val_accuracy(full.module, split))  # fmt: skip
        for label, rule in candidates().items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "removes every group": the pruner keeps one, recorded as is
                res = pp.prune(model, guide, rule)
            out.append(dict(base, rule=label, val_accuracy=protocol.val_accuracy(res.module, split),
                            compression=res.report.compression,
                            groups=[int(g.sum()) for g in res.group_masks.values()]))  # fmt: skip
    return out


def _mean_sd(v):
    t = torch.tensor(v, dtype=torch.float64)
    return f"{float(t.mean()):.2f} ± {float(t.std()) if len(v) > 1 else 0.0:.2f}"


def markdown(syn, dig, meta):
    lines = ["# Which default group rule for the horseshoe? (issue 13, point 3)", "",
             f"Generated by `python bench/horseshoe_rule.py --seeds 8` ({meta['minutes']:.1f} min wall time of this "
             "run, torch threads 1, posteriors already in `--cache` reused; about 10 min from scratch on one core); "
             f"{meta['seeds']} seeds × 2 sizes synthetic, {meta['splits']} digits splits (validation data only).", "",
             "## Synthetic (few relevant inputs; 500 full-batch steps, τ₀ = 1e-5)", "",
             "| prior | rule | size | runs exact | relevant kept | irrelevant kept | hidden kept | pruned acc % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for key in dict.fromkeys((r["prior"], r["rule"], r["size"]) for r in syn):
        rs = [r for r in syn if (r["prior"], r["rule"], r["size"]) == key]
        r0 = rs[0]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {sum(r['exact'] for r in rs)}/{len(rs)} | "
                     f"{_mean_sd([r['relevant'] for r in rs])} of {r0['of'][0]} | "
                     f"{_mean_sd([r['irrelevant'] for r in rs])} of {r0['of'][1]} | "
                     f"{_mean_sd([r['hidden'] for r in rs])} | "
                     f"{_mean_sd([100 * r['accuracy'] for r in rs])} |")  # fmt: skip
    lines += ["", "## Digits (MLP 64-300-100-10; validation accuracy, never test)", "",
              "Δ is pruned − unpruned posterior mean, paired over splits (95 % t CI).", "",
              "| rule | val accuracy % | Δ vs unpruned (pp) | compression × | groups kept per layer (split 0) |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    per = {s: [r for r in dig if r["split"] == s] for s in dict.fromkeys(r["split"] for r in dig)}
    unp = [100 * rs[0]["unpruned"] for rs in per.values()]
    lines.append(f"| dense | {_mean_sd([100 * rs[0]['dense'] for rs in per.values()])} | | 1 | |")
    lines.append(f"| unpruned horseshoe posterior mean | {_mean_sd(unp)} | | 1 | |")
    for label in dict.fromkeys(r["rule"] for r in dig):
        rs = [r for r in dig if r["rule"] == label]
        acc = [100 * r["val_accuracy"] for r in rs]
        diff = compare.paired_difference(acc, unp) if len(acc) > 1 else None
        ci = f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]" if diff else f"{acc[0] - unp[0]:+.2f}"
        lines.append(f"| {label} | {_mean_sd(acc)} | {ci} | {_mean_sd([r['compression'] for r in rs])} | "
                     f"{rs[0]['groups']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--syn-epochs", type=int, default=500)
    ap.add_argument("--dense-epochs", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--cache", default="/tmp/horseshoe_rule")
    ap.add_argument("--out", default="bench/results/horseshoe_rule")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.splits, args.syn_epochs, args.dense_epochs, args.epochs = 1, 1, 50, 5, 4
        args.out = "/tmp/horseshoe_rule_quick"
    torch.set_num_threads(1)
    os.makedirs(args.cache, exist_ok=True)
    t = time.perf_counter()
    syn, dig = synthetic_rows(args), digits_rows(args)
    meta = dict(seeds=args.seeds, splits=args.splits, syn_epochs=args.syn_epochs, dense_epochs=args.dense_epochs,
                epochs=args.epochs, minutes=(time.perf_counter() - t) / 60)  # fmt: skip
    write_json({"meta": meta, "synthetic": syn, "digits": dig}, args.out + ".json")
    md = markdown(syn, dig, meta)
    with open(args.out + ".md", "w") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    main()
