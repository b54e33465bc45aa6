"""The ``pyro-prune`` command: train a Bayesian network on an embedded dataset and score it.

Pipeline: a deterministic MLP is pre-trained (the standard recipe before variational
fine-tuning) and bayesianized; with ``--guide normal`` (default) a Gaussian prior and a mean-field
``AutoNormal`` started at the pre-trained weights, with ``--guide sparse-vd`` the log-uniform prior and
``AutoSparseVD``, after which the network is pruned (``LogAlpha(--threshold)``) and the compression report
printed. The posterior-predictive ensemble is scored on the test split (accuracy, NLL, ECE, Brier) with timings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from . import data as _data
from .distributions import LogUniform
from .guides import AutoSparseVD
from .infer import fit
from .model import bayesianize, init_from
from .model.likelihoods import Categorical
from .prediction import evaluate
from .pruning import CompressionReport, prune
from .pruning.rules import LogAlpha


def _mlp(n_in: int, hidden: List[int], n_out: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


def _pretrain(net: nn.Module, loader, epochs: int, lr: float) -> nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
    return net


def _int_at_least(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else "") + f", got {value}"
            )
        return value

    return parse


def _float(positive: bool) -> Callable[[str], float]:
    """An argparse ``type``: a float that is not NaN; with ``positive``, finite and ``> 0``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if math.isnan(value) or (positive and not (math.isfinite(value) and value > 0)):
            raise argparse.ArgumentTypeError(f"must be a {'finite number > 0' if positive else 'number'}, got {text}")
        return value

    return parse


def _widths(text: str) -> List[int]:
    """An argparse ``type``: comma-separated positive layer widths (empty: no hidden layer)."""
    try:
        widths = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every value is checked here, so a bad one exits (code 2) before any training."""
    p = argparse.ArgumentParser(prog="pyro-prune", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist1d"], help="embedded dataset")
    p.add_argument("--hidden", default="300,100", type=_widths, help="hidden widths, comma separated (300,100)")
    p.add_argument("--pretrain-epochs", type=_int_at_least(0), default=30, help="deterministic pre-training epochs")
    p.add_argument("--epochs", type=_int_at_least(1), default=30, help="variational epochs")
    p.add_argument("--lr", type=_float(positive=True), default=1e-3, help="Adam learning rate")
    p.add_argument("--prior-scale", type=_float(positive=True), default=1.0, help="std of the Gaussian weight prior")
    p.add_argument("--num-samples", type=_int_at_least(1), default=100, help="ensemble size for the test scores")
    p.add_argument(
        "--guide",
        default="normal",
        choices=["normal", "sparse-vd"],
        help="normal: AutoNormal with a Gaussian prior; sparse-vd: AutoSparseVD with the log-uniform prior, then prune",
    )
    p.add_argument("--threshold", type=_float(positive=False), default=3.0, help="log-alpha threshold (sparse-vd)")
    p.add_argument("--seed", type=_int_at_least(0, 2**32 - 1), default=0, help="random seed, 0 <= seed < 2**32")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON (checked writable up front)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _check_writable(parser: argparse.ArgumentParser, path: str) -> None:
    """Exit through ``parser.error`` unless ``path`` can be written (opened for appending; a new file is removed)."""
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        parser.error(f"argument --json: cannot write {path!r}: {e.strerror or e}")
    if not existed:
        os.remove(path)


def _parse(argv: Optional[List[str]]) -> Tuple[argparse.Namespace, List[int]]:
    """The parsed arguments and the hidden widths; a bad value exits (code 2) with a message naming the option."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json:
        _check_writable(parser, args.json)
    return args, args.hidden


def _loaders(split: _data.DataSplit, seed: int) -> Tuple[DataLoader, DataLoader, int]:
    """Train and test loaders of flat inputs (the ``(1, 40)`` MNIST-1D signals are flattened) and the input width."""
    n_in = split.x_train.reshape(len(split.x_train), -1).shape[1]
    if split.x_train.dim() == 2:
        train, test = split.loaders(batch_size=64, seed=seed)
        return train, test, n_in
    train, test = (
        DataLoader(
            TensorDataset(x.reshape(len(x), -1), y),
            batch_size=64,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(seed),
        )
        for x, y, shuffle in ((split.x_train, split.y_train, True), (split.x_test, split.y_test, False))
    )
    return train, test, n_in


def _bayesian(net: nn.Module, split: _data.DataSplit, args: argparse.Namespace) -> Tuple[Any, Any, int]:
    """Model, guide and KL warm-up epochs for ``--guide``: AutoNormal at the pre-trained weights, or AutoSparseVD."""
    likelihood = Categorical(split.dataset_size)
    if args.guide == "normal":
        model = bayesianize(net, dist.Normal(0.0, args.prior_scale), likelihood)
        return model, pyro.infer.autoguide.AutoNormal(model, init_loc_fn=init_from(net), init_scale=1e-3), 0
    prior = lambda name, module, param: LogUniform() if name.endswith("weight") else None  # noqa: E731
    model = bayesianize(net, prior, likelihood)
    return model, AutoSparseVD(model), max(1, args.epochs // 6)


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall-clock seconds."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _emit(result: Dict[str, Any], report: Optional[CompressionReport], json_path: Optional[str]) -> None:
    """Print the report (if pruned) and the results, and write them as JSON when asked."""
    if report is not None:
        print(report)
        result.update(sparsity=round(report.sparsity, 4), compression=round(report.compression, 1))
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command: parse, pre-train, fit, prune (``sparse-vd``), score, print; returns the exit code 0."""
    args, hidden = _parse(argv)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    split = _data.get_dataset(args.dataset)
    train, test, n_in = _loaders(split, args.seed)
    net = _mlp(n_in, hidden, split.num_classes)
    _, t_pre = _timed(_pretrain, net, train, args.pretrain_epochs, args.lr)
    model, guide, warmup = _bayesian(net, split, args)
    history, t_fit = _timed(
        fit, model, guide, train, epochs=args.epochs, lr=args.lr, kl_warmup=warmup, progress=not args.no_progress
    )
    report = None
    if args.guide == "sparse-vd":
        pruned = prune(model, guide, LogAlpha(args.threshold))
        report, guide = pruned.report, pruned.guide
    scores, t_eval = _timed(evaluate, model, guide, test, num_samples=args.num_samples)
    result = {
        "dataset": args.dataset,
        "architecture": "-".join(str(d) for d in [n_in, *hidden, split.num_classes]),
        "guide": "AutoNormal" if args.guide == "normal" else "AutoSparseVD (pruned ensemble)",
        "epochs": args.epochs,
        **{k: round(v, 4) for k, v in scores.items()},
        "pretrain_s": round(t_pre, 2),
        "fit_s": round(t_fit, 2),
        "predict_s": round(t_eval, 2),
        "final_loss": round(history.last["loss"], 4),
    }
    _emit(result, report, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
