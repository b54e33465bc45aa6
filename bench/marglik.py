"""Online evidence maximization (``fit_marglik``, Immer et al. 2021) against held-out and post-hoc prior tuning.

Digits MLP 64-300-100-10 (``bench.common.mlp``, the network of ``bench/laplace.py``) on ``k`` paired digits splits
(``bench.protocol.digits_splits``: 1437 training digits, of which 20 % are carved out as validation, 360 test
digits), every method trained for the same number of epochs (default 100, Adam lr 1e-3, batch 64, network seeded by
the split index), every posterior KFAC with the GLM (probit) predictive on the test digits:

* ``online_marglik``: ``fit_marglik`` on the training part, per-layer tau tuned by the KFAC evidence after every
  epoch (laplace-torch's ``marglik_training`` defaults: 10 Adam steps at lr 0.1, no burn-in); no validation data;
* ``online_marglik_all``: the same on training + validation (what a user without a validation split trains on;
  not paired in data with the others, reported beside them);
* ``heldout``: MAP with a fixed weight decay 1e-4 (``protocol.train_dense_baseline``), then a KFAC Laplace with a
  scalar tau chosen on the validation part (``optimize_prior_precision(method="val")``: the GLM log-likelihood);
  the reference of the paired differences;
* ``posthoc_marglik``: the same MAP, per-layer tau by the KFAC evidence (``optimize_prior_precision("layer")``);
* ``map`` and ``online_marglik_net``: the two trained networks' own softmax (no Laplace), for reference.

Accuracy, NLL and ECE: mean ± sd over the splits, paired 95 % CIs of each method minus ``heldout``
(``pyro_prune.compare``) and McNemar on the pooled per-example correctness; seconds per method and split.

Run: ``.venv/bin/python bench/marglik.py [--splits 10] [--epochs 100] [--quick]`` (torch threads 1); writes
``bench/results/marglik.json`` (a checkpoint after each split; ``--resume`` continues) and ``marglik.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import pyro.distributions as dist
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import pyro_prune as pp
from bench import protocol
from bench.common import mlp, run_stamp, tensor_loader, write_json
from pyro_prune.guides.laplace.marglik import fit_marglik

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LABELS = ["heldout", "online_marglik", "posthoc_marglik", "map", "online_marglik_net", "online_marglik_all"]
#: fit_marglik's settings: laplace-torch 0.3's marglik_training defaults (Immer et al. 2021), fixed a priori.
ONLINE = dict(hyper_lr=0.1, hyper_steps=10, marglik_every=1, burn_in=0, prior_structure="layer", lr=1e-3)


def glm_record(model, guide, split, **extra):
    """:func:`protocol.record` of the GLM (probit) predictive on the split's test digits, with the guide's tau."""
    with torch.no_grad():
        probs = pp.predict(model, guide, split.x_test).probs
    tau = [round(v, 4) for v in guide.prior_precision.reshape(-1).tolist()]
    return protocol.record(probs, split.y_test, tau=tau, **extra)


def online(split, x, y, epochs, label):
    """``fit_marglik`` from ``mlp()`` seeded by the split index, on ``(x, y)`` (shuffled batches of 64)."""
    torch.manual_seed(split.index)
    net = mlp()
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(len(x)))
    g = torch.Generator().manual_seed(1000 * split.index)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True, generator=g)
    t = time.perf_counter()
    res = fit_marglik(model, loader, epochs, progress=False, **ONLINE)
    seconds = time.perf_counter() - t
    out = {label: glm_record(model, res.guide, split, seconds=round(seconds, 2),
                             log_marglik=res.history.last["log_marglik"])}  # fmt: skip
    if label == "online_marglik":
        out[f"{label}_net"] = protocol.net_record(res.net, split.x_test, split.y_test)
    return out


def methods(epochs):
    """The methods of the run, ``{name: fn(split, cache) -> {label: record}}``."""

    def online_train(split, cache):
        return online(split, split.x_train, split.y_train, epochs, "online_marglik")

    def online_all(split, cache):
        x, y = torch.cat([split.x_train, split.x_val]), torch.cat([split.y_train, split.y_val])
        return online(split, x, y, epochs, "online_marglik_all")

    def heldout(split, cache):
        t = time.perf_counter()
        net = protocol.train_dense_baseline(mlp, split, epochs)
        model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(split.dataset_size))
        guide = pp.laplace_guide(model, tensor_loader(split.x_train, split.y_train), "kron")
        cache.update(net=net, model=model, guide=guide, fit_s=time.perf_counter() - t)
        guide.optimize_prior_precision(method="val", val_data=(split.x_val, split.y_val))
        out = {"heldout": glm_record(model, guide, split, seconds=round(time.perf_counter() - t, 2))}
        out["map"] = protocol.net_record(net, split.x_test, split.y_test)
        return out

    def posthoc(split, cache):
        t = time.perf_counter()
        guide = cache["guide"]
        guide.optimize_prior_precision("layer", init=1.0)
        seconds = cache["fit_s"] + time.perf_counter() - t
        return {"posthoc_marglik": glm_record(cache["model"], guide, split, seconds=round(seconds, 2),
                                              log_marglik=float(guide.log_marginal_likelihood()))}  # fmt: skip

    return {"online_marglik": online_train, "heldout": heldout, "posthoc_marglik": posthoc,
            "online_marglik_all": online_all}  # fmt: skip


def peer_check(epochs: int) -> dict:
    """Split 0: laplace-torch 0.3's ``marglik_training`` (Kron, layerwise, its defaults) beside ``fit_marglik`` from
    the same initial network and batches; tau per layer, test NLL / ECE / accuracy of each's GLM probit predictive.
    Needs the peers' interpreter (``PYTHONPATH=. /work/peers/bin/python bench/marglik.py --peer``)."""
    from bench.common import hide_bench_folder

    hide_bench_folder()  # bench/laplace.py would shadow laplace-torch's `laplace`
    from laplace.marglik_training import marglik_training

    split = protocol.digits_splits(1)[0]
    out = {}
    for system in ("laplace-torch", "pyro_prune"):
        torch.manual_seed(split.index)
        net = mlp()
        loader = split.loader(seed=0)
        t = time.perf_counter()
        if system == "laplace-torch":
            la, net, _, _ = marglik_training(net, loader, "classification", "kron", n_epochs=epochs,
                                             optimizer_kwargs={"lr": 1e-3})  # fmt: skip
            seconds = time.perf_counter() - t
            with torch.no_grad():
                probs = la(split.x_test, pred_type="glm", link_approx="probit")
            tau = la.prior_precision.reshape(-1).tolist()
        else:
            model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(split.dataset_size))
            res = fit_marglik(model, loader, epochs, progress=False, **ONLINE)
            seconds = time.perf_counter() - t
            with torch.no_grad():
                probs = pp.predict(model, res.guide, split.x_test).probs
            tau = res.prior_precision.reshape(-1).tolist()
        rec = protocol.record(probs, split.y_test)
        out[system] = dict(tau=[round(v, 4) for v in tau], seconds=round(seconds, 1),
                           **{k: round(rec[k], 4) for k in ("accuracy", "nll", "ece")})  # fmt: skip
        print(system, out[system], flush=True)
    return out


def add_peer_check(peer: dict, out: str, epochs: int) -> None:
    """Store :func:`peer_check`'s result under ``"peer_check"`` in the results JSON and as a table in the markdown."""
    results = {}
    if os.path.exists(out):
        with open(out) as fh:
            results = json.load(fh)
    write_json({**results, "peer_check": {"epochs": epochs, **peer}}, out)
    md_path = os.path.splitext(out)[0] + ".md"
    md = open(md_path).read().split("\n## Cross-check")[0] if os.path.exists(md_path) else ""
    command = f"PYTHONPATH=. /work/peers/bin/python bench/marglik.py --peer --epochs {epochs}"
    lines = [
        "",
        "## Cross-check: laplace-torch 0.3's marglik_training on split 0",
        "",
        f"`{command}`: the same initial network and batch order, Kron, laplace-torch's defaults (10 Adam steps at "
        "lr 0.1 every epoch); its 'layerwise' tau is one per parameter tensor (weight and bias apart), ours one per "
        "layer.",
        "",
        "| system | tau per layer | accuracy | nll | ece | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for system, r in peer.items():
        cells = [str(r["tau"])] + [f"{r[k]:.4f}" for k in ("accuracy", "nll", "ece")] + [str(r["seconds"])]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    with open(md_path, "w") as fh:
        fh.write(md.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def markdown(summary, results, args, seconds) -> str:
    """The markdown report: command, runtime, the comparison table, per-method seconds and taus."""
    k, stamp = len(results["splits"]), results["meta"]["stamp"]
    lines = [
        "# Online evidence maximization (fit_marglik) vs held-out and post-hoc prior tuning, digits MLP",
        "",
        f"Command: `.venv/bin/python bench/marglik.py --splits {args.splits} --epochs {args.epochs}"
        f"{' --quick' if args.quick else ''}` (torch threads 1); {k} paired splits; wall time of this run "
        f"{seconds / 60:.1f} min (started {stamp['date']}, 1-min load average {stamp['load_average_1min']} on a shared "
        "2-core machine).",
        "",
        f"Every method trains {args.epochs} epochs (Adam lr 1e-3, batch 64). GLM probit predictive of a KFAC Laplace "
        "on the 360 test digits per split; Δ = method − heldout with paired 95 % CIs over the splits; McNemar on the "
        "pooled per-example correctness. `online_marglik_all` trains on training + validation digits (no split "
        "needed), so its test sets are paired but its training data are not.",
        "",
        summary.to_markdown(),
        "",
        "| method | seconds per split (mean) | tau (split 0) |",
        "| --- | --- | --- |",
    ]
    for lab in LABELS:
        recs = [s[lab] for s in results["splits"]]
        secs = [r["seconds"] for r in recs if "seconds" in r]
        mean = f"{sum(secs) / len(secs):.1f}" if secs else "—"
        lines.append(f"| {lab} | {mean} | {recs[0].get('tau', '—')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="2 splits, 5 epochs (a smoke run, not a measurement)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default=os.path.join(RESULTS, "marglik.json"))
    ap.add_argument("--peer", action="store_true", help="split 0 beside laplace-torch's marglik_training (peers venv)")
    args = ap.parse_args(argv)
    if args.peer:
        torch.set_num_threads(1)
        add_peer_check(peer_check(args.epochs), args.out, args.epochs)
        return
    if args.quick:
        args.splits, args.epochs = 2, 5
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    meta = dict(stamp=run_stamp(), epochs=args.epochs, online_settings=ONLINE, torch_threads=1)
    res = protocol.run(protocol.digits_splits(args.splits), methods(args.epochs), args.out, meta, resume=args.resume)
    seconds = time.perf_counter() - t0
    summary = protocol.comparison(protocol.by_label(res["splits"]), LABELS, "heldout", ("accuracy", "nll", "ece"))
    raw = [{k: protocol._encode(v) for k, v in s.items()} for s in res["splits"]]
    write_json({**res, "splits": raw, "summary": summary.to_dict(), "wall_seconds": round(seconds, 1)}, args.out)
    md = markdown(summary, res, args, seconds)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    main()
