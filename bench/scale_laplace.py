"""KFAC Laplace at scale against laplace-torch 0.3 on the same network (issue 17, point 5).

bench/scale.py's 784-1200-1200-10 MLP (2,395,210 weights) on its synthetic 784-dim 10-class task: the network is
trained ``--map-steps`` Adam steps (batch 256, seed 0) once, saved to a file with the examples, and both libraries
load the same file:

* fit: ours ``pp.laplace_guide(model, loader, "kron")`` vs laplace-torch ``Laplace(net, "classification",
  subset_of_weights="all", hessian_structure="kron").fit(loader)`` on the same ``--examples`` examples (the same
  loader, batch 256); one fresh subprocess per fit (the peers' interpreter, torch threads ``--threads`` for both),
  ``--rounds`` rounds with the library that goes first alternating, the load average recorded before each;
* memory: the peak resident set (``ru_maxrss``) of each subprocess after its fit and after its predict, and the
  bytes of the curvature each library holds after its fit (ours: the precisions' state tensors, i.e. the factors'
  eigendecompositions; laplace-torch: ``la.H``, which its ``fit`` leaves as the factors' eigendecompositions);
* evidence: both at τ = 1 and at ours' marglik τ (the same arguments), and the relative difference;
* predict: the GLM-probit predictive on ``--predict-examples`` other examples, examples/s (laplace-torch in chunks
  of ``--theirs-chunk`` inputs: its Jacobians are ``(B, 10, 2.4M)``); laplace-torch's predict is timed on
  ``--theirs-predict-examples`` of them (its throughput does not depend on how many), ours on all.

    PYTHONPATH=. /work/peers/bin/python bench/scale_laplace.py [--rounds 3]

writes ``bench/results/scale_laplace.json`` and ``.md``.
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
    spread,
    timed,
    write_json,
)
from bench.scale import BATCH, make_data, make_net  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts/lists/tuples)."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load_blob(path: str):
    blob = torch.load(path)
    net = make_net()
    net.load_state_dict(blob["state"])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(blob["x"], blob["y"]), batch_size=BATCH)
    return net.eval(), loader, blob["x_pred"]


def ours_worker(path: str, tau: float) -> dict:
    import pyro.distributions as dist

    import pyro_prune as pp

    net, loader, x_pred = load_blob(path)
    n = len(loader.dataset)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(n))
    guide, fit_s = timed(lambda: pp.laplace_guide(model, loader, "kron", prior_precision=1.0))
    rss_fit = peak_rss_mib()
    curvature = tensor_bytes([p.state() for p in guide.posteriors.values()])
    at_1 = float(guide.log_marginal_likelihood(1.0))
    at_tau, eval_s = timed(lambda: float(guide.log_marginal_likelihood(tau)))
    tuned, tune_s = timed(lambda: float(guide.optimize_prior_precision()))
    _, predict_s = timed(lambda: pp.predict(model, guide, x_pred).probs)
    return dict(
        fit_s=fit_s, one_evidence_s=eval_s, tune_s=tune_s, predict_s=predict_s, predict_examples=len(x_pred),
        peak_rss_fit_mib=rss_fit, peak_rss_mib=peak_rss_mib(), curvature_bytes=curvature, tau=tuned,
        evidence_at_1=at_1, evidence_at_tau=at_tau,
    )  # fmt: skip


def theirs_worker(path: str, tau: float, chunk: int, examples: int) -> dict:
    from bench.laplace_parity import Laplace  # laplace-torch (hides bench/ from `laplace`)

    net, loader, x_pred = load_blob(path)
    la = Laplace(net, "classification", subset_of_weights="all", hessian_structure="kron")
    _, fit_s = timed(lambda: la.fit(loader))
    rss_fit = peak_rss_mib()
    curvature = tensor_bytes([getattr(la.H, k, None) for k in ("eigenvectors", "eigenvalues", "kfacs")])
    at_1 = float(la.log_marginal_likelihood(torch.tensor(1.0)))
    at_tau, eval_s = timed(lambda: float(la.log_marginal_likelihood(torch.tensor(tau))))
    la.prior_precision = tau
    x_pred = x_pred[:examples]

    def predict():
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.cat([la(xb, pred_type="glm", link_approx="probit") for xb in x_pred.split(chunk)])

    _, predict_s = timed(predict)
    return dict(
        fit_s=fit_s, one_evidence_s=eval_s, predict_s=predict_s, predict_examples=len(x_pred),
        peak_rss_fit_mib=rss_fit, peak_rss_mib=peak_rss_mib(), curvature_bytes=curvature, tau=tau,
        evidence_at_1=at_1, evidence_at_tau=at_tau,
    )  # fmt: skip


def run_worker(side: str, path: str, tau: float, args) -> dict:
    """One fresh subprocess of this script (the same interpreter) for one library; its result dict."""
    res = run_worker_script(__file__, [
        "--worker", side, "--blob", path, "--tau", repr(tau), "--threads", str(args.threads),
        "--theirs-chunk", str(args.theirs_chunk), "--theirs-predict-examples", str(args.theirs_predict_examples),
    ])  # fmt: skip
    res["predict_examples_per_s"] = res["predict_examples"] / res["predict_s"]
    return res


def train_map(x, y, steps: int) -> nn.Module:
    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for s in range(steps):
        i = torch.arange(s * BATCH, (s + 1) * BATCH) % len(x)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i]), y[i]).backward()
        opt.step()
    return net.eval()


def summarize(rounds: list) -> dict:
    keys = ("fit_s", "one_evidence_s", "predict_examples_per_s", "peak_rss_fit_mib", "peak_rss_mib")
    out = {side: {k: spread([r[side][k] for r in rounds]) for k in keys} for side in ("ours", "theirs")}
    out["ours"]["tune_s"] = spread([r["ours"]["tune_s"] for r in rounds])
    out["fit_ratio_ours_over_theirs"] = spread([r["fit_ratio"] for r in rounds])
    return out


def markdown(res: dict) -> str:
    s, c, e = res["summary"], res["config"], res["evidence"]
    o, t = s["ours"], s["theirs"]
    f = lambda v, d=2: f"{v[0]:.{d}f} [{v[1]:.{d}f}, {v[2]:.{d}f}]"  # noqa: E731
    lines = [
        "# KFAC Laplace at scale: ours vs laplace-torch 0.3 (issue 17, point 5)",
        "",
        f"784-1200-1200-10 MLP ({c['weights']:,} weights; {c['map_steps']} Adam MAP steps), synthetic 784-dim task "
        f"(bench/scale.py), KFAC fit on {c['examples']:,} examples (batch {BATCH}), GLM-probit predict. "
        f"{c['rounds']} interleaved rounds, one fresh subprocess per library per round, torch threads "
        f"{c['threads']} for both, {c['date']}, load average at start {c['load_average_1min']} (2-core machine "
        f"shared with other jobs), wall {c['wall_s']:.0f} s. Median [min, max] over rounds.",
        "",
        f"Command: `{c['command']}`",
        "",
        "| measure | ours | laplace-torch | ours ÷ theirs |",
        "| --- | --- | --- | --- |",
        f"| KFAC fit s | {f(o['fit_s'])} | {f(t['fit_s'])} | {f(s['fit_ratio_ours_over_theirs'], 3)} |",
        f"| one evidence evaluation s | {f(o['one_evidence_s'], 3)} | {f(t['one_evidence_s'], 3)} | — |",
        f"| τ tuning by marglik s (ours) | {f(o['tune_s'], 3)} | — | — |",
        f"| peak RSS after fit MiB | {f(o['peak_rss_fit_mib'], 0)} | {f(t['peak_rss_fit_mib'], 0)} | — |",
        f"| peak RSS after predict MiB | {f(o['peak_rss_mib'], 0)} | {f(t['peak_rss_mib'], 0)} | — |",
        f"| curvature held after fit MiB | {res['curvature_mib']['ours']:.1f} | {res['curvature_mib']['theirs']:.1f} "
        "| — |",
        f"| GLM-probit predict, examples/s | {f(o['predict_examples_per_s'], 2)} | {f(t['predict_examples_per_s'], 2)} "
        f"| — |",
        "",
        f"Predict: ours on {c['predict_examples']:,} examples, laplace-torch on {c['theirs_predict_examples']:,} of "
        f"them (chunks of {c['theirs_chunk']}). Curvature: ours keeps each layer's factor eigendecompositions, "
        "laplace-torch's fit leaves the same (`KronDecomposed`).",
        "",
        f"Log evidence at τ = 1: ours {e['ours_at_1']:.2f}, laplace-torch {e['theirs_at_1']:.2f} (relative "
        f"difference {e['rel_at_1']:.2e}); at ours' marglik τ = {e['tau']:.4g}: {e['ours_at_tau']:.2f} vs "
        f"{e['theirs_at_tau']:.2f} ({e['rel_at_tau']:.2e}).",
        "",
        "| round | first | load before ours / theirs | ours fit s | theirs fit s | ratio |",
        "| --- " * 6 + "|",
    ]
    for i, r in enumerate(res["rounds"]):
        lines.append(
            f"| {i + 1} | {r['first']} | {r['ours']['load_1min_before']} / {r['theirs']['load_1min_before']} | "
            f"{r['ours']['fit_s']:.2f} | {r['theirs']['fit_s']:.2f} | {r['fit_ratio']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(args) -> None:
    t_start = time.perf_counter()
    stamp = run_stamp()
    x, y = make_data(args.examples + args.predict_examples)
    xf, yf, xp = x[: args.examples], y[: args.examples], x[args.examples :]
    net = train_map(xf, yf, args.map_steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "map.pt")
        torch.save(dict(state=net.state_dict(), x=xf, y=yf, x_pred=xp), path)
        rounds = interleaved_rounds(args.rounds, lambda side, tau: run_worker(side, path, tau, args))
    o, t = rounds[-1]["ours"], rounds[-1]["theirs"]
    rel = lambda a, b: abs(a - b) / abs(b)  # noqa: E731
    command = "PYTHONPATH=. /work/peers/bin/python bench/scale_laplace.py " + " ".join(sys.argv[1:])
    res = dict(
        config=dict(
            torch=torch.__version__, weights=sum(p.numel() for p in net.parameters()), map_steps=args.map_steps,
            examples=args.examples, predict_examples=args.predict_examples, threads=args.threads,
            theirs_chunk=args.theirs_chunk, theirs_predict_examples=min(args.theirs_predict_examples,
            args.predict_examples), rounds=args.rounds, **stamp, wall_s=time.perf_counter() - t_start,
            command=command.strip(),
        ),
        summary=summarize(rounds),
        curvature_mib={side: rounds[-1][side]["curvature_bytes"] / 2**20 for side in ("ours", "theirs")},
        evidence=dict(
            tau=o["tau"], ours_at_1=o["evidence_at_1"], theirs_at_1=t["evidence_at_1"],
            rel_at_1=rel(o["evidence_at_1"], t["evidence_at_1"]), ours_at_tau=o["evidence_at_tau"],
            theirs_at_tau=t["evidence_at_tau"], rel_at_tau=rel(o["evidence_at_tau"], t["evidence_at_tau"]),
        ),
        rounds=rounds,
    )  # fmt: skip
    write_json(res, os.path.join(RESULTS, "scale_laplace.json"))
    with open(os.path.join(RESULTS, "scale_laplace.md"), "w") as fh:
        fh.write(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=10_240)
    parser.add_argument("--predict-examples", type=int, default=2_048)
    parser.add_argument("--map-steps", type=int, default=40)
    parser.add_argument("--theirs-chunk", type=int, default=8)
    parser.add_argument("--theirs-predict-examples", type=int, default=2_048)
    parser.add_argument("--worker", choices=["ours", "theirs"])
    parser.add_argument("--blob")
    parser.add_argument("--tau", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker is None:
        main(args)
    elif args.worker == "ours":
        print(json.dumps(ours_worker(args.blob, args.tau)))
    else:
        print(json.dumps(theirs_worker(args.blob, args.tau, args.theirs_chunk, args.theirs_predict_examples)))
