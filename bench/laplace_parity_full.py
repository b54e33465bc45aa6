"""The 7,510-weight ``full`` line of bench/laplace_parity.py, timed in interleaved rounds.

laplace-torch 0.3 tunes a full-network prior precision by 100 Adam steps on its marginal likelihood, each a dense
7,510² log-determinant; in bench/laplace_parity.py that line did not finish within 23 and 45 minutes on this
2-core machine. Here both libraries fit the full GGN of the same MAP network (bench/laplace_parity.py's
``digits_map``, saved once to a file both sides load) on the same loader (batch 64); ours tunes τ by its marginal
likelihood (eigenvalues once per fit, inside ``laplace_guide``); both evaluate the log evidence at ours' τ and at
τ = 1 (the same arguments) and predict the test digits with the GLM-probit predictive at ours' τ.

Timing: ``--rounds`` rounds; in each, one fresh subprocess per library (the peers' interpreter, same torch, MKL and
``--threads``), the library that goes first alternating; each reports fit, ours' tuning or one laplace-torch
evidence evaluation, predict, and its peak resident memory (``ru_maxrss``).  The load average is recorded before
each subprocess.  Ours also times its GGN pass alone once per round (``ggn_s``: the rest of its fit is the one
float64 eigendecomposition that makes each later evidence evaluation O(P)).  Reported: median [min, max] per
measure and the fit ratio ours ÷ laplace-torch per round.

    PYTHONPATH=. /work/peers/bin/python bench/laplace_parity_full.py [--rounds 3] [--threads 1]

writes ``bench/results/laplace_parity_full.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from bench.common import (  # noqa: E402
    interleaved_rounds,
    peak_rss_mib,
    run_stamp,
    run_worker_script,
    scores,
    spread,
    tensor_loader,
    timed,
    write_json,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load_blob(path: str):
    """The saved MAP network (64-100-10, eval mode) and its train/test tensors."""
    blob = torch.load(path)
    net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    net.load_state_dict(blob["state"])
    return net.eval(), blob["train"], blob["test"]


def ours_worker(path: str) -> dict:
    import pyro.distributions as dist

    import pyro_prune as pp

    net, train, test = load_blob(path)
    tl = tensor_loader(*train, batch_size=64)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(len(train[0])))
    guide, fit_s = timed(lambda: pp.laplace_guide(model, tl, "full", prior_precision=1.0))
    tau, tune_s = timed(lambda: float(guide.optimize_prior_precision()))
    probs, predict_s = timed(lambda: pp.predict(model, guide, test[0]).probs)
    peak = peak_rss_mib()
    params = {k: None for k, _ in net.named_parameters()}
    _, ggn_s = timed(lambda: pp.curvature.full_ggn(net, tl, pp.Categorical(len(train[0])), params))
    return dict(
        fit_s=fit_s, ggn_s=ggn_s, tune_s=tune_s, predict_s=predict_s, peak_rss_mib=peak, tau=tau,
        evidence_at_tau=float(guide.log_marginal_likelihood()), evidence_at_1=float(guide.log_marginal_likelihood(1.0)),
        **scores(probs, test[1]),
    )  # fmt: skip


def theirs_worker(path: str, tau: float) -> dict:
    from bench.laplace_parity import Laplace  # laplace-torch (hides bench/ from `laplace`)

    net, train, test = load_blob(path)
    tl = tensor_loader(*train, batch_size=64)
    la = Laplace(net, "classification", subset_of_weights="all", hessian_structure="full")
    _, fit_s = timed(lambda: la.fit(tl))
    at_tau, eval_s = timed(lambda: float(la.log_marginal_likelihood(torch.tensor(tau))))
    la.prior_precision = tau
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        probs, predict_s = timed(lambda: la(test[0], pred_type="glm", link_approx="probit"))
    peak = peak_rss_mib()
    return dict(
        fit_s=fit_s, one_evidence_s=eval_s, predict_s=predict_s, peak_rss_mib=peak, tau=tau, evidence_at_tau=at_tau,
        evidence_at_1=float(la.log_marginal_likelihood(torch.tensor(1.0))), **scores(probs, test[1]),
    )  # fmt: skip


def run_worker(side: str, path: str, tau: float, threads: int) -> dict:
    """One fresh subprocess of this script (the same interpreter) fitting one library; its result dict."""
    return run_worker_script(
        __file__, ["--worker", side, "--blob", path, "--tau", repr(tau), "--threads", str(threads)]
    )


def summarize(rounds: list) -> dict:
    out = {}
    for side in ("ours", "theirs"):
        keys = [k for k, v in rounds[0][side].items() if k.endswith("_s") or k == "peak_rss_mib"]
        out[side] = {k: spread([r[side][k] for r in rounds], 3) for k in keys}
    out["fit_ratio_ours_over_theirs"] = spread([r["fit_ratio"] for r in rounds], 3)
    ratios = [r["ours"]["predict_s"] / r["theirs"]["predict_s"] for r in rounds]
    out["predict_ratio_ours_over_theirs"] = spread(ratios, 3)
    return out


def markdown(res: dict) -> str:
    s, cfg = res["summary"], res["config"]
    lines = [
        "# Digits 64-100-10, `full` Laplace over 7,510 weights: ours vs laplace-torch 0.3",
        "",
        f"`{cfg['command']}` ({cfg['rounds']} interleaved rounds, fresh subprocess per fit, torch threads "
        f"{cfg['threads']}, {cfg['date']}, wall {cfg['wall_s']:.0f} s). Median [min, max] over rounds.",
        "",
        "| measure | ours | laplace-torch | ours ÷ theirs |",
        "| --- | --- | --- | --- |",
    ]
    fmt = lambda v: f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"  # noqa: E731
    o, t = s["ours"], s["theirs"]
    lines.append(f"| fit s | {fmt(o['fit_s'])} | {fmt(t['fit_s'])} | {fmt(s['fit_ratio_ours_over_theirs'])} |")
    lines.append(f"| of which GGN pass s (timed alone) | {fmt(o['ggn_s'])} | — | — |")
    lines.append(f"| τ tuning (ours) / one evidence (theirs) s | {fmt(o['tune_s'])} | {fmt(t['one_evidence_s'])} | — |")
    lines.append(
        f"| predict 360 digits s | {fmt(o['predict_s'])} | {fmt(t['predict_s'])} | "
        f"{fmt(s['predict_ratio_ours_over_theirs'])} |"
    )
    lines.append(f"| peak RSS MiB | {fmt(o['peak_rss_mib'])} | {fmt(t['peak_rss_mib'])} | — |")
    lines += ["", "| round | first | load before ours / theirs | ours fit s | theirs fit s | ratio |"]
    lines.append("| --- " * 6 + "|")
    for i, r in enumerate(res["rounds"]):
        lines.append(
            f"| {i + 1} | {r['first']} | {r['ours']['load_1min_before']} / {r['theirs']['load_1min_before']} | "
            f"{r['ours']['fit_s']:.2f} | {r['theirs']['fit_s']:.2f} | {r['fit_ratio']:.3f} |"
        )
    e = res["evidence"]
    lines += [
        "",
        f"τ (ours, marglik) = {e['tau']:.4f}. Log evidence at that τ: ours {e['ours_at_tau']:.3f}, laplace-torch "
        f"{e['theirs_at_tau']:.3f} (relative difference {e['rel_at_tau']:.1e}); at τ = 1: {e['ours_at_1']:.3f} vs "
        f"{e['theirs_at_1']:.3f} ({e['rel_at_1']:.1e}). Test scores (GLM probit, last round): ours "
        f"{res['scores']['ours']}, laplace-torch {res['scores']['theirs']}.",
    ]
    return "\n".join(lines) + "\n"


def main(rounds: int, threads: int) -> None:
    from bench.laplace_parity import digits_map

    t_start = time.perf_counter()
    stamp = run_stamp()
    net, train, _, test = digits_map(100)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "map.pt")
        torch.save(dict(state=net.state_dict(), train=train, test=test), path)
        results = interleaved_rounds(rounds, lambda side, tau: run_worker(side, path, tau, threads))
    last = results[-1]
    o, t = last["ours"], last["theirs"]
    rel = lambda a, b: abs(a - b) / abs(b)  # noqa: E731
    res = dict(
        config=dict(
            torch=torch.__version__, threads=threads, rounds=rounds, **stamp, wall_s=time.perf_counter() - t_start,
            command="PYTHONPATH=. /work/peers/bin/python bench/laplace_parity_full.py"
            f" --rounds {rounds} --threads {threads}",
        ),
        summary=summarize(results),
        evidence=dict(
            tau=o["tau"], ours_at_tau=o["evidence_at_tau"], theirs_at_tau=t["evidence_at_tau"],
            rel_at_tau=rel(o["evidence_at_tau"], t["evidence_at_tau"]), ours_at_1=o["evidence_at_1"],
            theirs_at_1=t["evidence_at_1"], rel_at_1=rel(o["evidence_at_1"], t["evidence_at_1"]),
        ),
        scores={side: {k: last[side][k] for k in ("accuracy", "nll", "ece")} for side in ("ours", "theirs")},
        rounds=results,
    )  # fmt: skip
    write_json(res, os.path.join(RESULTS, "laplace_parity_full.json"))
    with open(os.path.join(RESULTS, "laplace_parity_full.md"), "w") as fh:
        fh.write(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", choices=["ours", "theirs"])
    parser.add_argument("--blob")
    parser.add_argument("--tau", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker is None:
        main(args.rounds, args.threads)
    else:
        worker = ours_worker(args.blob) if args.worker == "ours" else theirs_worker(args.blob, args.tau)
        print(json.dumps(worker))
