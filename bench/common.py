"""Helpers shared by the benchmarks in ``bench/``: the digits MLP, dense (MAP) training, scoring, timing, loaders,
the held-out split, run stamps, JSON records and plain-text tables.

The scripts are run from the repository root as ``python bench/<name>.py`` (``bench/laplace.py`` and
``bench/subnetwork.py`` with the peers' interpreter and ``PYTHONPATH=.``).  They put the repository root on
``sys.path`` and import this module as ``bench.common``, never as a top-level ``common`` from the ``bench/`` folder:
that folder holds a ``laplace.py`` which would shadow laplace-torch.

Every helper keeps the exact sequence of random draws of the code it replaced, so the numbers of a benchmark for a
given seed do not change.

Accuracy comparisons between methods follow the protocol of ``bench/protocol.py`` (k paired splits, validation
carved from training, equal budgets; statistics by ``pyro_prune.compare``); :func:`held_out_map` is the single-split
held-out helper of the Laplace benchmarks.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

import pyro_prune as pp

#: The scores kept by :func:`scores` by default (``None`` keeps every entry of ``classification_metrics``).
SCORE_KEYS: Tuple[str, ...] = ("accuracy", "nll", "ece")


def mlp(in_features: int = 64) -> nn.Sequential:
    """The digits MLP 64-300-100-10 (ReLU) of ``../shared/TARGETS.md`` (``in_features``-300-100-10 for another
    flat input, e.g. 40 for mnist1d), freshly initialised from torch's RNG."""
    return nn.Sequential(nn.Linear(in_features, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def tensor_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, shuffle: bool = False):
    """A ``DataLoader`` over ``TensorDataset(x, y)``; shuffling draws from torch's global RNG at each epoch."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def dense_epoch(net: nn.Module, opt: torch.optim.Optimizer, loader) -> float:
    r"""One epoch of plain cross-entropy training, :math:`\min_\theta \frac1B \sum_b -\log p_\theta(y_b \mid x_b)`
    per batch; returns the seconds it took."""
    t = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        opt.step()
    return time.perf_counter() - t


def train_dense(net: nn.Module, loader, epochs: int, lr: float = 1e-3, wd: float = 0.0) -> nn.Module:
    """Train ``net`` in place with Adam (learning rate ``lr``, weight decay ``wd``) for ``epochs`` epochs of
    :func:`dense_epoch`; returns it."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
    for _ in range(epochs):
        dense_epoch(net, opt, loader)
    return net


def train_map(x: torch.Tensor, y: torch.Tensor, seed: int = 0, epochs: int = 100) -> nn.Module:
    """The peers' MAP recipe (``../shared/bench/peers.py``): seed, shuffled loader of 64, :func:`mlp`, Adam 1e-3 with
    weight decay 1e-4 (a Gaussian prior), ``epochs`` epochs; returns the network in eval mode."""
    torch.manual_seed(seed)
    loader = tensor_loader(x, y, batch_size=64, shuffle=True)
    return train_dense(mlp(), loader, epochs, wd=1e-4).eval()


def scores(probs: torch.Tensor, y: torch.Tensor, keys: Optional[Sequence[str]] = SCORE_KEYS) -> Dict[str, float]:
    """``pp.metrics.classification_metrics`` of ``probs`` (shape ``(N, C)``) against ``y``, rounded to 4 digits;
    only ``keys`` (all of them when ``None``), in that order."""
    m = pp.metrics.classification_metrics(probs, y)
    return {k: round(float(m[k]), 4) for k in (m if keys is None else keys)}


def net_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keys: Optional[Sequence[str]] = SCORE_KEYS):
    """:func:`scores` of a deterministic network's softmax on ``x`` (no gradient)."""
    with torch.no_grad():
        return scores(net(x).softmax(-1), y, keys)


def timed(fn: Callable, *args, **kw) -> Tuple[Any, float]:
    """``(fn(*args, **kw), seconds)`` by ``time.perf_counter``."""
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


class HeldOut(NamedTuple):
    """A MAP network trained on a random part of the training data, with the indices of both parts."""

    train_idx: torch.Tensor  #: indices the network was trained on
    val_idx: torch.Tensor  #: the held-out indices
    net: nn.Module  #: the MAP network (:func:`train_map`)
    model: Any  #: ``pp.bayesianize(net, Normal(0, 1), Categorical(len(train_idx)))``
    loader: Any  #: unshuffled loader of 64 over the training part


def held_out_map(x: torch.Tensor, y: torch.Tensor, fraction: float = 0.8, seed: int = 0) -> HeldOut:
    """Split the rows of ``x`` by a seeded permutation (``torch.Generator().manual_seed(seed)``) into the first
    ``int(fraction * n)`` and the rest, and train a MAP network (:func:`train_map`) on the first part."""
    n = len(x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, va = perm[: int(fraction * n)], perm[int(fraction * n) :]
    net = train_map(x[tr], y[tr])
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(len(tr)))
    return HeldOut(tr, va, net, model, tensor_loader(x[tr], y[tr], batch_size=64))


def run_stamp() -> Dict[str, Any]:
    """When and under which load a run started: ``{"date": "YYYY-mm-dd HH:MM UTC", "load_average_1min": float}``."""
    return dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_average_1min=round(os.getloadavg()[0], 2))


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (``ru_maxrss``), rounded to 0.1."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def spread(values: Sequence[float], digits: Optional[int] = None) -> List[float]:
    """``[median, min, max]`` of ``values`` (rounded to ``digits`` when given)."""
    out = [statistics.median(values), min(values), max(values)]
    return out if digits is None else [round(v, digits) for v in out]


def run_worker_script(script: str, args: Sequence[str]) -> Dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh subprocess of this interpreter (``PYTHONPATH=.``); its last stdout line
    parsed as JSON, with the 1-minute load average read just before it started (``load_1min_before``)."""
    cmd = [sys.executable, os.path.abspath(script), *args]
    load = round(os.getloadavg()[0], 2)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH="."))
    return dict(load_1min_before=load, **json.loads(out.stdout.strip().splitlines()[-1]))


def interleaved_rounds(rounds: int, run_side: Callable[[str, float], Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``rounds`` rounds of ``run_side("ours", tau)`` and ``run_side("theirs", tau)``, the first side alternating
    (ours first in even rounds), with ``tau`` taken from ours' result (``"tau"``, deterministic: the same in every
    round; 1.0 before ours' first run); each row holds both results, ``"first"`` and ``"fit_ratio"`` (ours ÷
    theirs ``fit_s``), and is printed."""
    tau, out = 1.0, []
    for r in range(rounds):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        row: Dict[str, Any] = {"first": order[0]}
        for side in order:
            row[side] = run_side(side, tau)
            if side == "ours":
                tau = row["ours"]["tau"]
        row["fit_ratio"] = row["ours"]["fit_s"] / row["theirs"]["fit_s"]
        print(f"round {r + 1}: {row}", flush=True)
        out.append(row)
    return out


def write_json(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows of strings as columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def hide_bench_folder() -> None:
    """Take the ``bench/`` folder off ``sys.path``, where ``python bench/<name>.py`` puts it: its ``laplace.py`` would
    otherwise shadow laplace-torch's ``laplace`` package (imported by ``bench/laplace.py`` and ``bench/subnetwork.py``
    when they run)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]


# -- the plain-PyTorch Sparse VD reference ------------------------------------------------------------------------
#: Molchanov et al.'s approximation of -KL(q || log-uniform) as a function of log alpha (their eq. 14).
K1, K2, K3 = 0.63576, 1.87320, 1.48695


def molchanov_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """Molchanov et al.'s approximation of the KL to the log-uniform prior, summed over ``log_alpha``."""
    return -(K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - K1).sum()


class LinearSVDO(nn.Module):
    """The plain-PyTorch Sparse VD layer of ``../shared/bench/peers.py`` (copied once here: importing peers.py runs
    it): local reparameterization while training, weights with log alpha >= 3 removed in eval mode."""

    def __init__(self, i, o):
        super().__init__()
        self.theta = nn.Parameter(torch.empty(o, i))
        self.bias = nn.Parameter(torch.zeros(o))
        nn.init.kaiming_uniform_(self.theta, a=math.sqrt(5))
        self.log_sigma2 = nn.Parameter(torch.full((o, i), -10.0))

    def log_alpha(self):
        return (self.log_sigma2 - torch.log(self.theta**2 + 1e-8)).clamp(-10, 10)

    def forward(self, x):
        if self.training:
            mu = F.linear(x, self.theta, self.bias)
            var = F.linear(x * x, self.log_sigma2.exp())
            return mu + var.clamp_min(1e-8).sqrt() * torch.randn_like(mu)
        return F.linear(x, self.theta * (self.log_alpha() < 3).float(), self.bias)

    def kl(self):
        return molchanov_kl(self.log_alpha())
