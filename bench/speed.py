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
import os
import statistics
import sys

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: bench.common
from bench.common import dense_epoch, mlp, write_json  # noqa: E402


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
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
