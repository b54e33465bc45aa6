"""Speed ratios measured inside one process (machines are noisy; ratios hold).

On the digits MLP 64-300-100-10 of ../shared/TARGETS.md (batch 64, Adam lr 1e-3):

* ``autonormal_vs_dense``: a ``pp.fit`` epoch with Pyro's ``AutoNormal`` ÷ a plain PyTorch epoch;
* ``renyi_k8_vs_k1``: a ``pp.fit(alpha=0.5, num_particles=8)`` epoch (vectorized) ÷ the K=1 epoch;
* further guides are added here as the roadmap lands them.

Measurements are interleaved over ``--rounds`` rounds and the median epoch time is kept.
Usage: ``python bench/speed.py [--rounds 3] [--epochs 3] [--out bench/results/speed.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp


def mlp():
    return nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def dense_epoch(net, opt, loader):
    t = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        opt.step()
    return time.perf_counter() - t


def fit_epoch_seconds(split, loader, epochs, **kw):
    pyro.clear_param_store()
    model = pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), pp.Categorical(split.dataset_size))
    guide = AutoNormal(model, init_scale=1e-3)
    history = pp.fit(model, guide, loader, epochs=epochs, progress=False, **kw)
    return statistics.median(history["seconds"])  # one epoch, without the one-time guide setup


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "speed.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pyro.set_rng_seed(0)
    split = pp.data.load_digits()
    loader, _ = split.loaders(batch_size=64, seed=0)

    times = {k: [] for k in ("dense", "autonormal", "renyi_k1", "renyi_k8")}
    net = mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    dense_epoch(net, opt, loader)  # warm-up
    for _ in range(args.rounds):
        times["dense"].append(statistics.mean(dense_epoch(net, opt, loader) for _ in range(args.epochs)))
        times["autonormal"].append(fit_epoch_seconds(split, loader, args.epochs))
        times["renyi_k1"].append(fit_epoch_seconds(split, loader, args.epochs, alpha=0.5, num_particles=1))
        times["renyi_k8"].append(fit_epoch_seconds(split, loader, args.epochs, alpha=0.5, num_particles=8))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "s_per_epoch": {k: round(v, 4) for k, v in med.items()},
        "autonormal_vs_dense": round(med["autonormal"] / med["dense"], 2),
        "renyi_k1_vs_dense": round(med["renyi_k1"] / med["dense"], 2),
        "renyi_k8_vs_k1": round(med["renyi_k8"] / med["renyi_k1"], 2),
        "targets": {"renyi_k8_vs_k1": "<= 3.0", "peers": "Pyro AutoNormal 5.7x dense, RenyiELBO K=4 unvectorized 3.4x"},
        "torch": torch.__version__,
        "pyro": pyro.__version__,
    }
    print(f"{'measure':<22} {'value':>8}")
    for k in ("dense", "autonormal", "renyi_k1", "renyi_k8"):
        print(f"{k + ' s/epoch':<22} {med[k]:>8.4f}")
    for k in ("autonormal_vs_dense", "renyi_k1_vs_dense", "renyi_k8_vs_k1"):
        print(f"{k:<22} {result[k]:>7.2f}x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
