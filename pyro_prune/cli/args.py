"""Argument types and groups shared by the subcommands; every value is checked here, before any training.

A bad value exits through ``parser.error`` (exit code 2) with a message that names the flag
(``argument --lr: must be a finite number > 0, got nan``), as argparse does for its own checks.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable, List, Optional, Union

import torch

from .guides import GUIDES

__all__ = [
    "int_at_least",
    "real",
    "fraction",
    "widths",
    "threshold",
    "prior_precision",
    "device",
    "add_device",
    "add_data",
    "add_network",
    "add_guide",
    "add_pruning",
    "add_run",
    "check_out",
    "check_readable",
]

#: names accepted by ``--data`` besides paths.
EMBEDDED = ("digits", "breast-cancer", "mnist1d", "gap-regression")


def int_at_least(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            upper = f" and <= {high}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{upper}, got {value}")
        return value

    return parse


def real(positive: bool = False, allow_inf: bool = True) -> Callable[[str], float]:
    """An argparse ``type``: a number that is not NaN; with ``positive`` finite and ``> 0``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        bad = math.isnan(value) or (not allow_inf and math.isinf(value))
        if bad or (positive and not (math.isfinite(value) and value > 0)):
            what = "finite number > 0" if positive else ("number" if allow_inf else "finite number")
            raise argparse.ArgumentTypeError(f"must be a {what}, got {text}")
        return value

    return parse


def fraction(include_zero: bool = True) -> Callable[[str], float]:
    """An argparse ``type``: a fraction in ``[0, 1)`` (or ``(0, 1)``)."""

    def parse(text: str) -> float:
        value = real()(text)
        if not (0 <= value < 1) or (value == 0 and not include_zero):
            raise argparse.ArgumentTypeError(f"must be in [{0 if include_zero else '0 (excluded)'}, 1), got {text}")
        return value

    return parse


def widths(text: str) -> List[int]:
    """An argparse ``type``: comma-separated positive layer widths (empty: no hidden layer)."""
    try:
        values = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if any(w < 1 for w in values):
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return values


def threshold(text: str) -> Union[str, float]:
    """An argparse ``type``: ``auto`` or a number (not NaN)."""
    return "auto" if text == "auto" else real()(text)


def prior_precision(text: str) -> Union[str, float]:
    """An argparse ``type``: ``val``, ``marglik`` or a positive number."""
    return text if text in ("val", "marglik") else real(positive=True)(text)


def device(text: str) -> str:
    """An argparse ``type``: ``cpu``, ``cuda`` or ``cuda:N``, refused when CUDA (or GPU ``N``) is not available.

    :returns: the device as ``torch.device`` writes it (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    """
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available here (torch.cuda.is_available() False)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1})")
    return str(dev)


def add_device(g: argparse._ActionsContainer) -> None:
    """``--device``."""
    g.add_argument(
        "--device",
        type=device,
        default="cpu",
        help="where data, network, posterior and predictions live: cpu, cuda or cuda:N (the files written load on "
        "the CPU; the CSR speed-up is measured on the CPU)",
    )


def add_data(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--target``, ``--task``, ``--test``, the split fractions and standardization."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default="digits", help=f"a .csv or .npz file, an MNIST IDX folder, or one of {EMBEDDED}")
    g.add_argument("--target", help="target column of a CSV file (required for CSV)")
    g.add_argument(
        "--task",
        default="auto",
        choices=["auto", "classification", "regression"],
        help="auto: integer targets with <= 20 distinct values are classes, else regression",
    )
    g.add_argument("--test", metavar="FILE", help="a separate test file (same format and columns as --data)")
    g.add_argument(
        "--val-fraction",
        type=fraction(False),
        default=0.15,
        help="validation part of the training data (stratified for classification): thresholds and prior "
        "precision are chosen on it",
    )
    g.add_argument("--test-fraction", type=fraction(), default=0.2, help="test part when there is no --test file")
    g.add_argument("--no-standardize", action="store_true", help="keep the inputs as they are")


def add_network(p: argparse.ArgumentParser) -> None:
    """``--hidden`` or ``--model``/``--weights``, and the deterministic pre-training."""
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=widths, default="300,100", help="MLP hidden widths, comma separated")
    g.add_argument(
        "--model",
        metavar="MODULE:FACTORY",
        help="your network: a callable returning an nn.Module (may take in_features, out_features, input_shape: "
        "the per-example shape of the data, e.g. (C, L) for an NPZ x of shape (N, C, L))",
    )
    g.add_argument("--weights", metavar="PATH", help="state_dict to start from (read with weights_only=True)")
    g.add_argument(
        "--pretrain-epochs",
        type=int_at_least(0),
        default=30,
        help="deterministic (MAP) training epochs before the Bayesian step",
    )
    g.add_argument("--weight-decay", type=real(allow_inf=False), default=1e-4, help="weight decay of pre-training")
    g.add_argument("--batch-size", type=int_at_least(1), default=64, help="examples per batch")


def add_guide(p: argparse.ArgumentParser, default: str = "sparse-vd") -> None:
    """``--guide`` and its training settings."""
    g = p.add_argument_group("posterior")
    g.add_argument("--guide", default=default, choices=list(GUIDES), help="the posterior family")
    g.add_argument("--epochs", type=int_at_least(1), default=30, help="variational epochs (not for laplace-*)")
    g.add_argument("--lr", type=real(positive=True), default=1e-3, help="Adam learning rate")
    g.add_argument(
        "--kl-warmup",
        type=int_at_least(-1),
        default=-1,
        help="KL warm-up epochs; -1: epochs // 6 for sparse and group guides, else 0",
    )
    g.add_argument(
        "--prior-scale", type=real(positive=True), default=1.0, help="std of the Gaussian prior (normal, subnetwork)"
    )
    g.add_argument(
        "--prior-precision",
        type=prior_precision,
        default="val",
        help="laplace-*: tau chosen on the validation split (val), by the marginal likelihood (marglik), or a number",
    )
    g.add_argument(
        "--subnet-size", type=int_at_least(1), default=1000, help="subnetwork: weights with a full covariance"
    )
    g.add_argument("--patience", type=int_at_least(0), default=0, help="early stopping on validation NLL (0: off)")


def add_pruning(p: argparse.ArgumentParser) -> None:
    """The threshold and its selection rule."""
    g = p.add_argument_group("pruning")
    g.add_argument(
        "--threshold",
        type=threshold,
        default="auto",
        help="auto: the most compression whose validation NLL is within --tolerance of the unpruned "
        "posterior's (and accuracy within --accuracy-tolerance); or a number: log alpha (sparse-vd), "
        "group log alpha (group-*), fraction of weights removed (other guides)",
    )
    g.add_argument("--tolerance", type=real(allow_inf=False), default=0.02, help="validation NLL tolerance (nats)")
    g.add_argument(
        "--accuracy-tolerance",
        type=real(allow_inf=False),
        default=0.01,
        help="validation accuracy tolerance (fraction)",
    )
    g.add_argument("--speed-batch", type=int_at_least(1), default=256, help="batch size of the CSR speed measurement")


def add_run(
    p: argparse.ArgumentParser, out_help: str = "output folder (refused if it exists and is not empty)"
) -> None:
    """``--out``, ``--overwrite``, ``--seed``, ``--num-samples``, ``--no-progress``, ``--no-figures``,
    ``--device``."""
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help=out_help + "; default: pyro-prune-runs/<data>-<guide>-<time>")
    g.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out folder")
    g.add_argument("--seed", type=int_at_least(0, 2**32 - 1), default=0, help="random seed, 0 <= seed < 2**32")
    g.add_argument("--num-samples", type=int_at_least(1), default=50, help="posterior draws per prediction")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--no-figures", action="store_true", help="write no PNG figures")
    add_device(g)


def check_readable(parser: argparse.ArgumentParser, flag: str, path: Optional[str], folder: bool = False) -> None:
    """``parser.error`` unless ``path`` (if given) is a readable file (or folder)."""
    if path is None:
        return
    kind_ok = os.path.isdir(path) if folder else os.path.isfile(path)
    if not kind_ok or not os.access(path, os.R_OK):
        what = "folder" if folder else "file"
        parser.error(f"argument {flag}: cannot read {path!r} (no such readable {what})")


def check_out(parser: argparse.ArgumentParser, path: str, overwrite: bool, flag: str = "--out") -> None:
    """``parser.error`` if ``path`` is a non-empty folder (without ``overwrite``), a file, or cannot be created."""
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        parser.error(f"argument {flag}: {path!r} exists and is not empty (pass --overwrite to write into it)")
    if os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"argument {flag}: {path!r} exists and is not a folder")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        parser.error(f"argument {flag}: cannot create {path!r} ({parent!r} is not a writable folder)")
