"""The benchmark protocol of issue 13 (``../shared/TARGETS.md``, "How to measure"), shared by ``bench/`` scripts that
compare accuracy:

* **k paired splits**: :func:`digits_splits` (default 10 stratified train/test splits of scikit-learn's digits, 360
  test points each) or :func:`mnist1d_splits` (mnist1d from the ``mnist1d`` package's local generator, default
  4,000 training and 10,000 test signals per split);
* a **validation split carved from the training data** (stratified, ``val_fraction`` of it) for every choice a
  method makes (thresholds, prior precisions, tempering, epochs); the test part is only scored;
* **equal budgets**: :func:`train_dense_baseline` trains the dense network every method starts from;
  :func:`dense_equal_budget` trains a dense network as long as the longest fine-tune (``dense_epochs + epochs``);
* a **runner**, :func:`run`, that runs every method on the same splits and collects, per split and per method
  label, accuracy, NLL, ECE, compression and the per-example correctness (McNemar), with a JSON checkpoint after each
  split (``--resume`` continues);
* :func:`comparison`: the statistics of ``pyro_prune.compare`` over the collected records.

``--quick`` in a script means: 2 splits, a few epochs (a smoke run, not a measurement).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from sklearn.model_selection import train_test_split

import pyro_prune as pp
from bench.common import mlp, train_dense, write_json
from pyro_prune import compare

Record = Dict[str, object]
#: A method: ``fn(split, cache) -> {label: record}``; ``cache`` is shared by the methods of one split (the dense net).
Method = Callable[["Split", Dict[str, object]], Dict[str, Record]]


@dataclass
class Split:
    """One paired split: training part (without validation), validation part carved from training, test part."""

    index: int
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def dataset_size(self) -> int:
        """Number of training examples (validation excluded)."""
        return len(self.x_train)

    def loader(self, batch_size: int = 64, seed: int = 0):
        """Shuffled training loader with its own generator seeded by ``seed + 1000 * index``."""
        g = torch.Generator().manual_seed(seed + 1000 * self.index)
        ds = torch.utils.data.TensorDataset(self.x_train, self.y_train)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, generator=g)


def carve_validation(data: pp.data.DataSplit, index: int, val_fraction: float) -> Split:
    """Split ``data``'s training part, stratified by label (``random_state=index``), into training and validation."""
    idx = np.arange(len(data.y_train))
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=index, stratify=data.y_train.numpy())
    tr, va = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(va))
    return Split(index, data.name, data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va],
                 data.x_test, data.y_test)  # fmt: skip


def digits_splits(k: int = 10, val_fraction: float = 0.2, seed: int = 0) -> List[Split]:
    """``k`` stratified digits splits (``pp.data.load_digits(seed=seed + i)``: 1437 train / 360 test, standardized
    with training statistics), each with a stratified validation part carved from training."""
    return [carve_validation(pp.data.load_digits(seed=seed + i), i, val_fraction) for i in range(k)]


def mnist1d_splits(
    k: int = 10,
    n_train: int = 4000,
    n_test: int = 10000,
    val_fraction: float = 0.2,
    seed: int = 0,
    flatten: bool = False,
) -> List[Split]:
    """``k`` mnist1d data sets from the package's local generator (``pp.data.load_mnist1d``, generator seed
    ``seed + i``), ``n_train`` training and ``n_test`` test signals each, validation carved from training. (The
    package standardizes each generated set as a whole.) Inputs are ``(N, 1, 40)``, or ``(N, 40)`` with ``flatten``
    (for an MLP).

    :raises ImportError: without the optional ``mnist1d`` package.
    """
    n = n_train + n_test
    out = []
    for i in range(k):
        data = pp.data.load_mnist1d(num_samples=n, seed=seed + i, train_split=n_train / n)
        s = carve_validation(data, i, val_fraction)
        if flatten:
            s.x_train, s.x_val, s.x_test = s.x_train.flatten(1), s.x_val.flatten(1), s.x_test.flatten(1)
        out.append(s)
    return out


#: ``--data`` of the scripts that compare accuracy: ``name -> (splits(k) with flat inputs, input features)``.
DATASETS: Dict[str, Tuple[Callable[[int], List[Split]], int]] = {
    "digits": (digits_splits, 64),
    "mnist1d": (lambda k: mnist1d_splits(k, flatten=True), 40),
}


def _dataset(data: str) -> Tuple[Callable[[int], List[Split]], int]:
    if data not in DATASETS:
        raise ValueError(f"data must be one of {sorted(DATASETS)}, got {data!r}")
    return DATASETS[data]


def flat_splits(data: str, k: int) -> List[Split]:
    """The ``k`` paired splits of :data:`DATASETS` entry ``data``, inputs flat.

    :raises ValueError: for an unknown ``data``.
    """
    return _dataset(data)[0](k)


def net_factory(data: str) -> Callable[[], nn.Module]:
    """``mlp`` (``bench.common``) sized for :data:`DATASETS` entry ``data``'s inputs: the network every method of the
    front starts from.

    :raises ValueError: for an unknown ``data``.
    """
    return functools.partial(mlp, _dataset(data)[1])


# -- records -------------------------------------------------------------------------------------------------------
def record(probs: torch.Tensor, y: torch.Tensor, compression: float = 1.0, **extra) -> Record:
    """The scores of class probabilities ``probs`` (``(N, C)``) on labels ``y``: accuracy, NLL, ECE (15 bins), the
    given compression, per-example correctness (``correct``), and ``extra`` entries."""
    probs = probs.detach().double()
    m = pp.metrics.classification_metrics(probs, y)
    out: Record = {k: float(m[k]) for k in ("accuracy", "nll", "ece")}
    out["compression"] = float(compression)
    out["correct"] = (probs.argmax(-1) == y).tolist()
    out.update(extra)
    return out


def net_record(net: nn.Module, x: torch.Tensor, y: torch.Tensor, compression: float = 1.0, **extra) -> Record:
    """:func:`record` of a deterministic network's softmax (eval mode, no gradient)."""
    was = net.training
    net.eval()
    with torch.no_grad():
        out = record(net(x).softmax(-1), y, compression, **extra)
    net.train(was)
    return out


def val_accuracy(net: nn.Module, split: Split) -> float:
    """Validation accuracy of a deterministic network (for choices made on validation)."""
    with torch.no_grad():
        return float((net(split.x_val).argmax(-1) == split.y_val).double().mean())


# -- dense baselines -------------------------------------------------------------------------------------------------
def train_dense_baseline(make_net: Callable[[], nn.Module], split: Split, epochs: int, wd: float = 1e-4) -> nn.Module:
    """``make_net()`` after ``torch.manual_seed(split.index)``, Adam lr 1e-3 (weight decay ``wd``), batch 64,
    ``epochs`` epochs on the split's training part; in eval mode."""
    torch.manual_seed(split.index)
    return train_dense(make_net(), split.loader(), epochs, wd=wd).eval()


def dense_equal_budget(dense: nn.Module, split: Split, extra_epochs: int, wd: float = 1e-4) -> nn.Module:
    """The dense network trained ``extra_epochs`` more epochs (same recipe): the equal-budget baseline for a method
    that fine-tunes ``dense`` for ``extra_epochs``."""
    torch.manual_seed(10_000 + split.index)
    return train_dense(copy.deepcopy(dense).train(), split.loader(seed=1), extra_epochs, wd=wd).eval()


# -- the runner ------------------------------------------------------------------------------------------------------
def _encode(rec: Record) -> Record:
    """``correct`` as ``"b<n>:<hex>"``: the n booleans packed 4 to a hexadecimal digit, first example in the highest
    bit (10,000 test points: 2.5 kB per record)."""
    out = dict(rec)
    if "correct" in out:
        bits = "".join("1" if c else "0" for c in out["correct"])
        n = len(bits)
        bits += "0" * (-n % 4)
        out["correct"] = f"b{n}:" + "".join(f"{int(bits[i : i + 4], 2):x}" for i in range(0, len(bits), 4))
    return out


def _decode(rec: Record) -> Record:
    """The inverse of :func:`_encode`; also reads the older ``"0101..."`` strings."""
    out = dict(rec)
    code = out.get("correct")
    if isinstance(code, str) and code.startswith("b"):
        n, digits = code[1:].split(":")
        bits = "".join(f"{int(d, 16):04b}" for d in digits)
        out["correct"] = [c == "1" for c in bits[: int(n)]]
    elif isinstance(code, str):
        out["correct"] = [c == "1" for c in code]
    return out


def load_checkpoint(path: str) -> Dict[str, object]:
    """The JSON written by :func:`run`: ``{"meta": ..., "splits": [{label: record}, ...], "seconds": [...]}`` with
    ``correct`` decoded back to bools."""
    with open(path) as fh:
        data = json.load(fh)
    data["splits"] = [{k: _decode(v) for k, v in s.items()} for s in data["splits"]]
    return data


def run(
    splits: Sequence[Split],
    methods: Mapping[str, Method],
    path: Optional[str] = None,
    meta: Optional[Dict[str, object]] = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> Dict[str, object]:
    """Run every method on every split (same splits, same order) and collect ``{label: record}`` per split.

    After each split the results so far are written to ``path`` (JSON; per-example correctness as ``"0101..."``),
    so an interrupted run keeps its finished splits; with ``resume`` the splits already in ``path`` are skipped.

    :returns: ``{"meta": meta, "splits": [{label: record}], "seconds": [{method: seconds}]}``.
    """
    done: Dict[str, object] = {"meta": meta or {}, "splits": [], "seconds": []}
    if resume and path and os.path.exists(path):
        done = load_checkpoint(path)
    for split in splits[len(done["splits"]) :]:
        cache: Dict[str, object] = {}
        recs: Dict[str, Record] = {}
        secs: Dict[str, float] = {}
        for name, fn in methods.items():
            t = time.perf_counter()
            recs.update(fn(split, cache))
            secs[name] = round(time.perf_counter() - t, 2)
            log(f"split {split.index} {name}: {secs[name]:.1f} s")
        done["splits"].append(recs)
        done["seconds"].append(secs)
        if path:
            write_json({**done, "splits": [{k: _encode(v) for k, v in s.items()} for s in done["splits"]]}, path)
    return done


def by_label(splits: Sequence[Dict[str, Record]]) -> Dict[str, List[Record]]:
    """``{label: [record of split 0, split 1, ...]}`` over the labels present in every split."""
    labels = [lab for lab in splits[0] if all(lab in s for s in splits)]
    return {lab: [s[lab] for s in splits] for lab in labels}


def comparison(
    results: Mapping[str, Sequence[Record]],
    labels: Sequence[str],
    reference: str,
    metrics: Sequence[str] = ("accuracy", "nll", "ece", "compression"),
) -> compare.Comparison:
    """``pyro_prune.compare.summarize`` of ``labels`` (the reference included) against ``reference``."""
    return compare.summarize({lab: results[lab] for lab in labels}, reference=reference, metrics=metrics)
