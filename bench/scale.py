"""Scale benchmark (issue 17): a 784-1200-1200-10 network (2.39M weights) on a synthetic 784-dim task of 100k
examples, on CPU.

* epoch time of ``pp.fit`` (AutoSparseVD fused, AutoMeanFieldNormal) vs a dense Adam epoch: each measured as the
  time of ``--steps`` steps of batch 256, rounds interleaved, extrapolated to the 100k-example epoch (391 steps);
* 1 vs 2 processes on CPU: ``BayesianLightningModule`` under ``Trainer(strategy="ddp", devices=k,
  accelerator="cpu")`` (Lightning starts the processes), time per global step after warm-up, examples/s;
* KFAC Laplace (``pp.laplace_guide(structure="kron")``) fit time on ``--kfac-examples`` examples and the bytes of
  its factors, peak RSS of the process;
* ``pp.predict`` throughput (AutoSparseVD, 10-member ensemble).

Usage: ``.venv/bin/python bench/scale.py [--steps 20 --rounds 3]`` (writes bench/results/scale.json and .md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

import pyro_prune as pp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, K, BATCH = 100_000, 784, 10, 256
WIDTHS = (D, 1200, 1200, K)


def make_data(n: int = N, seed: int = 0):
    """A synthetic 784-dim 10-class task: labels of a random 2-layer teacher network."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    teacher = torch.randn(D, 64, generator=g) / D**0.5
    head = torch.randn(64, K, generator=g)
    y = (torch.tanh(x @ teacher) @ head).argmax(1)
    return x, y


def make_net() -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(WIDTHS) - 2 else [])
    return nn.Sequential(*layers)


def loader(x, y, steps: int, seed: int = 0):
    ds = torch.utils.data.TensorDataset(x[: steps * BATCH], y[: steps * BATCH])
    return torch.utils.data.DataLoader(
        ds, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def dense_time(x, y, steps: int) -> float:
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = loader(x, y, steps)
    t0 = time.perf_counter()
    for xb, yb in data:
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    return time.perf_counter() - t0


def bayes(guide_cls):
    model = pp.bayesianize(make_net(), prior=pp.LogUniform() if guide_cls is pp.AutoSparseVD else dist.Normal(0.0, 1.0),
                           likelihood=pp.Categorical(N))  # fmt: skip
    return model, guide_cls(model)


def fit_time(x, y, steps: int, guide_cls) -> float:
    model, guide = bayes(guide_cls)
    data = loader(x, y, steps)
    guide(x[:4], y[:4])
    t0 = time.perf_counter()
    pp.fit(model, guide, data, epochs=1, progress=False)
    return time.perf_counter() - t0


def epoch_ratios(x, y, steps: int, rounds: int) -> dict:
    times = {"dense": [], "sparse_vd": [], "mean_field": []}
    for _ in range(rounds):  # interleaved
        times["dense"].append(dense_time(x, y, steps))
        times["sparse_vd"].append(fit_time(x, y, steps, pp.AutoSparseVD))
        times["mean_field"].append(fit_time(x, y, steps, pp.AutoMeanFieldNormal))
    per_epoch = N / BATCH / steps
    out = {k: {"step_s": [t / steps for t in v], "epoch_s_median": sorted(v)[len(v) // 2] * per_epoch}
           for k, v in times.items()}  # fmt: skip
    for k in ("sparse_vd", "mean_field"):
        ratios = [a / b for a, b in zip(times[k], times["dense"])]
        out[k]["ratio_to_dense"] = {"median": sorted(ratios)[len(ratios) // 2], "min": min(ratios), "max": max(ratios)}
    return out


def kfac_and_predict(x, y, examples: int) -> dict:
    model, guide = bayes(pp.AutoSparseVD)
    guide(x[:4], y[:4])
    t0 = time.perf_counter()
    pp.laplace_guide(model, loader(x, y, examples // BATCH), structure="kron", prior_precision=1.0)
    kfac_s = time.perf_counter() - t0
    layers = [m for m in make_net() if isinstance(m, nn.Linear)]
    factor_bytes = 4 * sum((m.in_features + 1) ** 2 + m.out_features**2 for m in layers)  # A and G, float32
    xs = x[:2048]
    t0 = time.perf_counter()
    pp.predict(model, guide, xs, num_samples=10)
    pred_s = time.perf_counter() - t0
    return {"kfac_examples": examples, "kfac_fit_s": kfac_s, "kfac_factor_bytes": factor_bytes,
            "predict_examples_per_s": xs.shape[0] / pred_s, "predict_members": 10,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def lightning_worker(devices: int, steps: int, out: str) -> None:
    """Run under Lightning's DDP launcher (this script is started again for each extra process)."""
    import lightning.pytorch as pl

    from pyro_prune.lightning import BayesianLightningModule

    class Clock(pl.Callback):
        def __init__(self):
            self.t = []

        def on_train_batch_start(self, *args):
            self.t.append(time.perf_counter())

    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    x, y = make_data((steps + 3) * BATCH * devices)  # 3 warm-up steps
    model, guide = bayes(pp.AutoSparseVD)
    module = BayesianLightningModule(model, guide, example=(x[:4], y[:4]))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    clock = Clock()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[clock])  # fmt: skip
    trainer.fit(module, data)
    if trainer.global_rank == 0:
        gaps = [b - a for a, b in zip(clock.t[3:], clock.t[4:])]  # after the warm-up steps
        step = sorted(gaps)[len(gaps) // 2]
        with open(out, "w") as f:
            json.dump({"devices": devices, "step_s_median": step, "examples_per_s": BATCH * devices / step}, f)


def lightning_runs(steps: int) -> list:
    rows = []
    for devices in (1, 2):
        out = os.path.join(ROOT, "bench", "results", f".scale_ddp{devices}.json")
        cmd = [sys.executable, __file__, "--lightning-worker", str(devices), "--steps", str(steps), "--out", out]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        with open(out) as f:
            row = json.load(f)
        os.remove(out)
        row["wall_s_with_launch"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def write(results: dict) -> None:
    folder = os.path.join(ROOT, "bench", "results")
    with open(os.path.join(folder, "scale.json"), "w") as f:
        json.dump(results, f, indent=1)
    e, k = results["epochs"], results["kfac_predict"]
    lines = [
        "# Scale benchmark (issue 17)", "",
        f"784-1200-1200-10 MLP ({results['weights']:,} weights), synthetic 784-dim task, N = {N:,}, batch {BATCH}, "
        f"CPU, torch threads {results['threads']}, load average at start {results['load']:.1f} (shared 2-core "
        f"machine). Epoch = {results['steps']} steps × {results['rounds']} interleaved rounds, extrapolated to "
        f"{N // BATCH} steps. Lightning rows: {results['steps']} timed steps after 3 warm-up steps, one torch thread "
        "per process.", "",
        "| training | s / step (rounds) | epoch s (median, extrapolated) | ratio to dense (median [min, max]) |",
        "| --- | --- | --- | --- |",
    ]  # fmt: skip
    for name in ("dense", "sparse_vd", "mean_field"):
        r = e[name]
        ratio = r.get("ratio_to_dense")
        ratio_s = "1" if ratio is None else f"{ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}]"
        steps = ", ".join(f"{t:.3f}" for t in r["step_s"])
        lines.append(f"| {name} | {steps} | {r['epoch_s_median']:.0f} | {ratio_s} |")
    lines += ["", "| Lightning, AutoSparseVD | s / global step (median) | examples / s | wall s incl. launch |",
              "| --- | --- | --- | --- |"]  # fmt: skip
    for r in results["lightning"]:
        lines.append(f"| {r['devices']} process(es) | {r['step_s_median']:.3f} | {r['examples_per_s']:.0f} | "
                     f"{r['wall_s_with_launch']:.0f} |")  # fmt: skip
    lines += ["", f"KFAC Laplace (kron) on {k['kfac_examples']:,} examples: {k['kfac_fit_s']:.1f} s; KFAC factors "
              f"{k['kfac_factor_bytes'] / 2**20:.1f} MiB; peak RSS of the process {k['peak_rss_mb']:.0f} MiB. "
              f"predict (AutoSparseVD, {k['predict_members']} members): {k['predict_examples_per_s']:.0f} examples/s.",
              "", "Command: `.venv/bin/python bench/scale.py " + " ".join(sys.argv[1:]) + "`"]  # fmt: skip
    with open(os.path.join(folder, "scale.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kfac-examples", type=int, default=10_240)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lightning-worker", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.lightning_worker:
        return lightning_worker(args.lightning_worker, args.steps, args.out)
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    x, y = make_data()
    results = {"weights": sum(p.numel() for p in make_net().parameters()), "threads": args.threads,
               "load": os.getloadavg()[0], "steps": args.steps, "rounds": args.rounds}  # fmt: skip
    results["epochs"] = epoch_ratios(x, y, args.steps, args.rounds)
    results["kfac_predict"] = kfac_and_predict(x, y, args.kfac_examples)
    results["lightning"] = lightning_runs(args.steps)
    write(results)
    print(open(os.path.join(ROOT, "bench", "results", "scale.md")).read())


if __name__ == "__main__":
    main()
