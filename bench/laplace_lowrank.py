"""Low-rank Laplace (``structure="lowrank"``) against Kron and full on the digits MLP 64-100-10 (7,510 weights).

The MAP network of ``bench/laplace_parity.py`` (sklearn digits; Adam 1e-3, weight decay 1e-4, batch 64, 100
epochs, seed ``s``, on a seeded 80 % of the 1,437 training digits), one per ``--seeds`` entry (the seed also draws
the 80 % split).  For each posterior: ``lowrank`` at ranks ``--ranks`` (default 10, 50, 200; eigensolver defaults:
oversampling 10, 4 power steps, seed 0, i.e. 5 passes over the data), ``kron`` and ``full``:

* memory: bytes of the posterior's tensors (its ``state()``: for ``full`` the 7,510² GGN and its eigenvalues; the
  Cholesky factor, another 7,510², is made on first use by the predictive and is not counted);
* fit seconds (curvature at τ = 1) and marglik-tuning seconds (``optimize_prior_precision()``, scalar τ, L-BFGS);
* τ and log evidence at it; test NLL / ECE / accuracy of the GLM-probit predictive (``pp.predict`` default) on the
  360 test digits;
* for ``lowrank``: the largest relative error of its k eigenvalues against ``full``'s exact ones (same network).

torch threads 1.  Run: ``PYTHONPATH=. .venv/bin/python bench/laplace_lowrank.py [--seeds 0 1 2] [--quick]``;
writes ``bench/results/laplace_lowrank.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import pyro.distributions as dist
import torch
import torch.nn as nn

import pyro_prune as pp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from bench import common  # noqa: E402
from bench.common import run_stamp, scores, tensor_loader, write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def digits_map(seed: int, epochs: int):
    """The MAP MLP 64-100-10 on a seeded 80 % of the training digits; ``(net, train, test)``."""
    split = pp.data.load_digits()
    x, y = split.x_train, split.y_train
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr = perm[: int(0.8 * len(x))]
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    common.train_dense(net, tensor_loader(x[tr], y[tr], batch_size=64, shuffle=True), epochs, wd=1e-4)
    return net.eval(), (x[tr], y[tr]), (split.x_test, split.y_test)


def posterior_bytes(guide) -> int:
    """Bytes of every tensor in the posterior's precisions' states."""
    total = 0
    for prec in guide.posteriors.values():
        total += sum(t.numel() * t.element_size() for t in prec.state().values() if torch.is_tensor(t))
    return total


def one_line(net, train, test, structure: str, rank=None) -> tuple:
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(len(train[0])))
    loader = tensor_loader(*train, batch_size=64)
    t0 = time.perf_counter()
    kw = {} if rank is None else {"rank": rank}
    guide = pp.laplace_guide(model, loader, structure, **kw)
    t1 = time.perf_counter()
    tau = guide.optimize_prior_precision()
    t2 = time.perf_counter()
    with torch.no_grad():
        probs = pp.predict(model, guide, test[0]).probs
    t3 = time.perf_counter()
    row = dict(structure=structure, rank=rank, bytes=posterior_bytes(guide), fit_s=round(t1 - t0, 3),
               tune_s=round(t2 - t1, 3), predict_s=round(t3 - t2, 3), tau=round(float(tau), 5),
               log_evidence=round(float(guide.log_marginal_likelihood()), 3), **scores(probs, test[1]))  # fmt: skip
    return row, guide


def run_seed(seed: int, ranks, epochs: int, full: bool) -> list:
    net, train, test = digits_map(seed, epochs)
    rows = []
    exact = None
    if full:
        row, g = one_line(net, train, test, "full")
        exact = g.posteriors["full"].curvature_eigenvalues().double().sort(descending=True).values
        rows.append(row)
        del g
    rows.append(one_line(net, train, test, "kron")[0])
    for k in ranks:
        row, g = one_line(net, train, test, "lowrank", k)
        if exact is not None:
            lam = g.posteriors["lowrank"].curvature_eigenvalues()[:k].double()
            row["eig_max_rel_err"] = float(((lam - exact[:k]).abs() / exact[:k]).max())
        rows.append(row)
    for r in rows:
        r["seed"] = seed
        print(r, flush=True)
    return rows


def label(r: dict) -> str:
    return r["structure"] if r["rank"] is None else f"lowrank k={r['rank']}"


def summary(rows: list) -> list:
    """Per line: mean and sd over seeds of each number."""
    out = []
    for name in dict.fromkeys(label(r) for r in rows):
        mine = [r for r in rows if label(r) == name]
        line = {"line": name, "seeds": len(mine)}
        for key in ("bytes", "fit_s", "tune_s", "predict_s", "tau", "log_evidence", "nll", "ece", "accuracy",
                    "eig_max_rel_err"):  # fmt: skip
            vals = [r[key] for r in mine if key in r]
            if vals:
                line[key] = statistics.mean(vals)
                line[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(line)
    return out


def markdown(summ: list, meta: dict) -> str:
    def f(line, key, fmt):
        if key not in line:
            return ""
        sd = line.get(key + "_sd")
        return format(line[key], fmt) + ("" if sd is None else " ± " + format(sd, fmt))

    head = (
        "| posterior | memory (MB) | fit s | tune s | τ | log evidence | NLL | ECE | accuracy | top-k eig rel. err |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {s['line']} | {s['bytes'] / 2**20:.3f} | {f(s, 'fit_s', '.2f')} | {f(s, 'tune_s', '.3f')} | "
        f"{f(s, 'tau', '.3f')} | {f(s, 'log_evidence', '.1f')} | {f(s, 'nll', '.4f')} | {f(s, 'ece', '.4f')} | "
        f"{f(s, 'accuracy', '.4f')} | {f(s, 'eig_max_rel_err', '.2e')} |\n"
        for s in summ
    )
    return (
        f"# Low-rank Laplace vs Kron and full, digits MLP 64-100-10 (7,510 weights)\n\n{meta['command']}\n\n"
        f"Seeds (MAP network and 80 % split each): {meta['seeds']}; mean ± sd over seeds where more than one. "
        f"Runtime {meta['runtime_s']:.0f} s, torch threads 1, {meta['stamp']}.\n\n" + head + body + "\n"
        "Memory: bytes of the posterior's tensors (full: GGN + eigenvalues; its Cholesky factor, made by the "
        "predictive, doubles it). τ by the Laplace marginal likelihood for each line; GLM-probit predictive on the 360 "
        "test digits.\n"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--no-full", action="store_true", help="skip structure='full' (7,510² dense)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 MAP epochs, written to *_quick.*")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        rows += run_seed(seed, args.ranks, 10 if args.quick else 100, not args.no_full)
    summ = summary(rows)
    meta = dict(command="PYTHONPATH=. .venv/bin/python bench/laplace_lowrank.py " + " ".join(sys.argv[1:]),
                seeds=args.seeds, runtime_s=time.perf_counter() - t0, stamp=run_stamp())  # fmt: skip
    name = "laplace_lowrank_quick" if args.quick else "laplace_lowrank"
    write_json(dict(meta=meta, rows=rows, summary=summ), os.path.join(RESULTS, name + ".json"))
    with open(os.path.join(RESULTS, name + ".md"), "w") as fh:
        fh.write(markdown(summ, meta))
    print(markdown(summ, meta))


if __name__ == "__main__":
    main()
