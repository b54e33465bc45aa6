"""Speed ratios measured inside one process (machines are noisy; ratios hold).

On the digits MLP 64-300-100-10 of ../shared/TARGETS.md (batch 64, Adam lr 1e-3):

* ``autonormal_vs_dense``: a ``pp.fit`` epoch with Pyro's ``AutoNormal`` ÷ a plain PyTorch epoch;
* ``renyi_k8_vs_k1``: a ``pp.fit(alpha=0.5, num_particles=8)`` epoch (vectorized) ÷ the K=1 epoch;
* ``sparse_vd_vs_reference``: a ``pp.fit`` epoch of ``AutoSparseVD`` (log-uniform prior) ÷ an epoch of the
  plain-PyTorch Sparse VD reference of ``../shared/bench/peers.py`` (its recipe: LRT layers, Molchanov KL, Adam
  1e-3, batch 64); ``sparse_vd_vs_dense`` and ``mean_field_vs_dense`` (``AutoMeanFieldNormal``, Normal(0, 1)
  prior) likewise against a dense epoch. These are interleaved *per epoch*: a ``fit`` callback runs one reference
  epoch and one dense epoch after each of our epochs, and the ratio of each adjacent pair is kept (the machine's
  load drifts; adjacent epochs share it). Medians and 10-90 % ranges over every epoch of every round.
* ``group_sparse_vs_group_reference``: a ``pp.fit`` epoch of ``AutoGroupSparse`` (``GroupPrior("log-uniform")``)
  ÷ an epoch of a plain-PyTorch Bayesian Compression net (``LinearGroupBC``, written here from Louizos et al. 2017:
  input-unit groups, scales drawn per example, the same KL terms and initial values as the guide);
  ``group_sparse_vs_dense`` likewise against a dense epoch. Interleaved as above.

The Sparse VD reference layer is ``bench.common.LinearSVDO`` (peers.py's, copied once there: importing ``peers.py``
would run it).

Measurements are interleaved over ``--rounds`` rounds and the median epoch time is kept.
``--device`` (default ``cuda`` when available, else ``cpu``) puts every network and batch on that device (the
batches are moved as they are drawn, in the loader's order; CUDA work is synchronized before each epoch's clock
stops), so the same ratios are reported for a GPU; the JSON records the device.
Usage: ``python bench/speed.py [--rounds 3] [--epochs 3] [--sparse-epochs 15] [--only-sparse] [--only-group]
[--device cpu|cuda|cuda:N] [--out ...]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: bench.common
from bench.common import LinearSVDO, dense_epoch, mlp, molchanov_kl, write_json  # noqa: E402
from pyro_prune.guides.mean_field import AutoMeanFieldNormal  # noqa: E402


class LinearGroupBC(nn.Module):
    r"""Bayesian Compression with the log-uniform group prior (Louizos, Ullrich, Welling 2017), one Linear layer,
    written from the paper: a group is an input unit, :math:`w_{ij} = z_j \tilde w_{ij}`,
    :math:`q(z_j) = \mathcal N(\mu_j, \sigma_j^2)`, :math:`q(\tilde w_{ij}) = \mathcal N(\tilde\mu_{ij},
    \tilde\sigma^2_{ij})`; local reparameterization with :math:`z` drawn per example (eq. 8); KL = Molchanov's
    approximation of :math:`\mathrm{KL}(q(z)\,\|\,1/|z|)` + :math:`\tfrac12\sum(\tilde\sigma^2 + \tilde\mu^2 - 1
    - \log\tilde\sigma^2)` (eq. 9) + the biases' KL against :math:`\mathcal N(0, 1)`."""

    def __init__(self, i, o):
        super().__init__()
        w = torch.empty(o, i)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        s0 = w.pow(2).mean().sqrt()
        self.w_mu = nn.Parameter(w / s0)
        self.w_ls2 = nn.Parameter(torch.full((o, i), -8.0))
        self.z_mu = nn.Parameter(torch.full((i,), float(s0)))
        self.z_ls2 = nn.Parameter(torch.full((i,), float(2 * s0.log() - 8.0)))
        self.b_mu = nn.Parameter(torch.zeros(o))
        self.b_ls2 = nn.Parameter(torch.full((o,), -8.0))

    def forward(self, x):
        z = self.z_mu + (0.5 * self.z_ls2).exp() * torch.randn(x.shape[0], self.z_mu.numel(), device=x.device)
        xz = x * z
        mu = F.linear(xz, self.w_mu, self.b_mu)
        var = F.linear(xz * xz, self.w_ls2.exp(), self.b_ls2.exp())
        return mu + var.clamp_min(1e-8).sqrt() * torch.randn_like(mu)

    def kl(self):
        la = (self.z_ls2 - torch.log(self.z_mu**2 + 1e-8)).clamp(-10, 10)
        kl_z = molchanov_kl(la)
        kl_w = 0.5 * (self.w_ls2.exp() + self.w_mu**2 - 1 - self.w_ls2).sum()
        return kl_z + kl_w + 0.5 * (self.b_ls2.exp() + self.b_mu**2 - 1 - self.b_ls2).sum()


class DeviceLoader:
    """``loader``'s batches moved to ``device`` as they are drawn (same order; ``len`` and ``dataset`` kept)."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device, self.dataset = loader, device, loader.dataset

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)

    def __len__(self):
        return len(self.loader)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a clock read afterwards has seen it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_epoch(svd, opt, loader, n, beta=1.0):
    """One training epoch of the reference (peers.py's loop); returns the seconds it took."""
    t = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad()
        loss = F.cross_entropy(svd(xb), yb) * n + beta * sum(m.kl() for m in svd if hasattr(m, "kl"))
        (loss / n).backward()
        opt.step()
    synchronize(loader.device)
    return time.perf_counter() - t


def timed_dense_epoch(net, opt, loader) -> float:
    """:func:`bench.common.dense_epoch` with the device synchronized before the clock stops."""
    t = time.perf_counter()
    dense_epoch(net, opt, loader)
    synchronize(loader.device)
    return time.perf_counter() - t


def interleaved_ratios(split, loader, epochs, make_guide, prior, layer=LinearSVDO):
    """Per-epoch ratios ``(ours / reference, ours / dense)``: one reference epoch (a net of ``layer`` s) and one
    dense epoch after each ``fit`` epoch (a callback), the first epoch dropped (warm-up)."""
    n = split.dataset_size
    dev = loader.device
    svd = nn.Sequential(layer(64, 300), nn.ReLU(), layer(300, 100), nn.ReLU(), layer(100, 10)).to(dev)
    sopt = torch.optim.Adam(svd.parameters(), lr=1e-3)
    net = mlp().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    ref, dense = [], []

    def between(epoch, record, model, guide):
        ref.append(reference_epoch(svd, sopt, loader, n))
        dense.append(timed_dense_epoch(net, opt, loader))

    model = pp.bayesianize(mlp().to(dev), prior, pp.Categorical(n))
    history = pp.fit(model, make_guide(model), loader, epochs=epochs, progress=False, callbacks=[between])
    ours = history["seconds"]
    return [a / b for a, b in zip(ours[1:], ref[1:])], [a / b for a, b in zip(ours[1:], dense[1:])]


def summary(values):
    """``{"median", "p10", "p90"}`` of ``values``, rounded."""
    v = sorted(values)
    return {"median": round(statistics.median(v), 3), "p10": round(v[len(v) // 10], 3),
            "p90": round(v[-(len(v) // 10) - 1], 3)}  # fmt: skip


def fit_epoch_seconds(split, loader, epochs, **kw):
    pyro.clear_param_store()
    model = pp.bayesianize(mlp().to(loader.device), dist.Normal(0.0, 1.0), pp.Categorical(split.dataset_size))
    guide = AutoNormal(model, init_scale=1e-3)
    history = pp.fit(model, guide, loader, epochs=epochs, progress=False, **kw)
    return statistics.median(history["seconds"])  # one epoch, without the one-time guide setup


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sparse-epochs", type=int, default=15, help="fit epochs per round of the interleaved ratios")
    ap.add_argument("--only-sparse", action="store_true", help="only the interleaved ratios (no AutoNormal/Renyi)")
    ap.add_argument("--only-group", action="store_true", help="only the AutoGroupSparse ratios (implies --only-sparse)")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    ap.add_argument("--device", default=default_device, help="where the networks and batches live")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "speed.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pyro.set_rng_seed(0)
    split = pp.data.load_digits()
    loader, _ = split.loaders(batch_size=64, seed=0)
    loader = DeviceLoader(loader, torch.device(args.device))

    pairs = {"sparse_vd": ([], []), "mean_field": ([], []), "group": ([], [])}
    runs = (("sparse_vd", pp.AutoSparseVD, pp.LogUniform(), LinearSVDO),
            ("mean_field", AutoMeanFieldNormal, dist.Normal(0.0, 1.0), LinearSVDO),
            ("group", pp.AutoGroupSparse, pp.GroupPrior("log-uniform"), LinearGroupBC))  # fmt: skip
    for _ in range(args.rounds):
        for key, make_guide, prior, layer in runs:
            if args.only_group and key != "group":
                continue
            vs_ref, vs_dense = interleaved_ratios(split, loader, args.sparse_epochs, make_guide, prior, layer)
            pairs[key][0].extend(vs_ref)
            pairs[key][1].extend(vs_dense)
    names = {"sparse_vd": ("sparse_vd_vs_reference", "sparse_vd_vs_dense"),
             "mean_field": ("mean_field_vs_reference", "mean_field_vs_dense"),
             "group": ("group_sparse_vs_group_reference", "group_sparse_vs_dense")}  # fmt: skip
    interleaved = {name: summary(v) for key, both in names.items() for name, v in zip(both, pairs[key]) if v}
    interleaved["epochs_paired"] = len(pairs["group"][0])
    for k, v in interleaved.items():
        print(f"{k:<26} {v}")
    if args.only_sparse or args.only_group:
        write_json({"interleaved": interleaved, "device": args.device, "torch": torch.__version__}, args.out)
        return interleaved
    times = {k: [] for k in ("dense", "autonormal", "renyi_k1", "renyi_k8")}
    net = mlp().to(loader.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    timed_dense_epoch(net, opt, loader)  # warm-up
    for _ in range(args.rounds):
        times["dense"].append(statistics.mean(timed_dense_epoch(net, opt, loader) for _ in range(args.epochs)))
        times["autonormal"].append(fit_epoch_seconds(split, loader, args.epochs))
        times["renyi_k1"].append(fit_epoch_seconds(split, loader, args.epochs, alpha=0.5, num_particles=1))
        times["renyi_k8"].append(fit_epoch_seconds(split, loader, args.epochs, alpha=0.5, num_particles=8))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "s_per_epoch": {k: round(v, 4) for k, v in med.items()},
        "autonormal_vs_dense": round(med["autonormal"] / med["dense"], 2),
        "renyi_k1_vs_dense": round(med["renyi_k1"] / med["dense"], 2),
        "renyi_k8_vs_k1": round(med["renyi_k8"] / med["renyi_k1"], 2),
        "interleaved": interleaved,
        "targets": {
            "renyi_k8_vs_k1": "<= 3.0",
            "sparse_vd_vs_reference": "<= 1.0",
            "group_sparse_vs_group_reference": "<= 1.0",
            "mean_field_vs_dense": "<= 3.0",
            "peers": "Pyro AutoNormal 5.7x dense, RenyiELBO K=4 unvectorized 3.4x",
        },
        "device": args.device,
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
