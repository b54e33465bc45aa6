"""``pyro-prune prune`` (a saved posterior + the threshold rule → the pruned network and the compression report),
``pyro-prune predict`` and ``pyro-prune evaluate`` (a saved posterior or its pruned network + inputs →
predictions or scores). The inputs are standardized with the statistics saved with the posterior."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from . import args as a
from .guides import Posterior
from .outputs import POSTERIOR, load_posterior, write_predictions
from .pipeline import base_report, load_dataset, prune_and_write
from .scoring import is_laplace, network_arrays, predict_arrays, scores
from .sources import read_inputs, standardize

__all__ = ["add_prune", "add_predict", "add_evaluate", "run_prune", "run_predict", "run_evaluate"]


def _source(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help=f"a run folder (with {POSTERIOR}) or a posterior file from fit/compress")


def add_prune(sub: argparse._SubParsersAction, formatter) -> argparse.ArgumentParser:
    """The ``prune`` subcommand's arguments."""
    p = sub.add_parser("prune", help="prune a saved posterior", description=__doc__, formatter_class=formatter)
    _source(p)
    a.add_pruning(p)
    a.add_run(p, out_help="output folder (refused if it exists and is not empty); default: <source>/pruned")
    return p


def _apply_args(p: argparse.ArgumentParser) -> None:
    _source(p)
    p.add_argument("--data", required=True, help="a .csv (the saved feature columns by name) or .npz (x) file")
    p.add_argument(
        "--use",
        default="auto",
        choices=["auto", "posterior", "pruned", "network"],
        help="auto: the pruned posterior if the file has one, else the posterior; network: the pruned "
        "network alone (deterministic)",
    )
    p.add_argument("--num-samples", type=a.int_at_least(1), default=50, help="posterior draws")
    p.add_argument("--seed", type=a.int_at_least(0, 2**32 - 1), default=0, help="random seed")
    a.add_device(p)


def add_predict(sub: argparse._SubParsersAction, formatter) -> argparse.ArgumentParser:
    """The ``predict`` subcommand's arguments."""
    p = sub.add_parser("predict", help="predictions for new inputs", description=__doc__, formatter_class=formatter)
    _apply_args(p)
    p.add_argument("--out", default="predictions.csv", help="a .csv or .npz file for the predictions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def add_evaluate(sub: argparse._SubParsersAction, formatter) -> argparse.ArgumentParser:
    """The ``evaluate`` subcommand's arguments."""
    p = sub.add_parser("evaluate", help="scores on labelled inputs", description=__doc__, formatter_class=formatter)
    _apply_args(p)
    p.add_argument("--target", help="target column of a CSV file (default: the one the posterior was trained on)")
    p.add_argument("--json", metavar="PATH", help="also write the scores as JSON")
    return p


def _load(parser: argparse.ArgumentParser, source: str, device: str) -> Tuple[Any, Dict[str, Any]]:
    path = os.path.join(source, POSTERIOR) if os.path.isdir(source) else source
    a.check_readable(parser, "source", path)
    try:
        saved = load_posterior(source)
    except (ValueError, KeyError) as e:
        parser.error(f"argument source: {e}")
    _to_device(saved, device)
    return saved, saved.metadata["cli"]


def _to_device(saved: Any, device: str) -> None:
    """Move the loaded posterior (read on the CPU) and its pruned forms to ``device``."""
    if device == "cpu":
        return
    saved.model.to(device)
    saved.guide.to(device)
    for result in saved.pruned.values():
        for net in (result.module, result.masked_module):
            if net is not None:
                net.to(device)
        result.masks = {k: v.to(device) for k, v in result.masks.items()}
        result.guide.guide.to(device)
        result.guide.masks = {k: v.to(device) for k, v in result.guide.masks.items()}


def _prune_args(args: argparse.Namespace, meta: Dict[str, Any]) -> argparse.Namespace:
    ns = argparse.Namespace(**vars(args))
    ns.hidden, ns.model, ns.weights = meta["network"]["hidden"], meta["network"]["model"], None
    ns.epochs = meta["settings"].get("epochs", 0)
    return ns


def run_prune(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``pyro-prune prune``."""
    saved, meta = _load(parser, args.source, args.device)
    folder = args.out or os.path.join(args.source if os.path.isdir(args.source) else ".", "pruned")
    a.check_out(parser, folder, args.overwrite)
    dataset = load_dataset(parser, meta["data"], flat=not meta["network"]["model"], device=args.device)
    for part, idx in dataset.indices.items():
        if not torch.equal(idx, saved.extra[f"split_{part}"]):
            parser.error(f"argument source: the data {meta['data']['data']!r} no longer give the saved {part} split")
    post = Posterior(saved.model, saved.guide, meta["guide"], saved.history, 0.0, meta["settings"])
    ns = _prune_args(args, meta)
    ns.guide = meta["guide"]
    if args.threshold != "auto" and not (ns.guide == "sparse-vd" or ns.guide.startswith("group-")):
        if not 0 <= args.threshold < 1:
            parser.error(f"argument --threshold: for --guide {ns.guide} a fraction in [0, 1), got {args.threshold}")
    os.makedirs(folder, exist_ok=True)
    report = base_report("prune", ns, dataset, saved.model.template(), post)
    prune_and_write(
        ns,
        post,
        dataset,
        folder,
        meta["noise"],
        report,
        {k: meta[k] for k in ("network", "guide", "noise", "settings")},
    )
    return 0


def _inputs(parser, args, saved, meta: Dict[str, Any], target: Optional[str]) -> Tuple[torch.Tensor, Optional[List]]:
    a.check_readable(parser, "--data", args.data)
    shape = meta.get("input_shape")
    try:
        x, y = read_inputs(args.data, meta["columns"], target, None if shape is None else tuple(shape))
    except (ValueError, OSError) as e:
        parser.error(f"argument --data: {e}")
    if "input_mean" in saved.extra:
        x = standardize(x, saved.extra["input_mean"], saved.extra["input_std"])
    if not meta["network"]["model"]:  # the MLP takes flat rows
        x = x.reshape(len(x), -1)
    return x.to(args.device), y


def _arrays(args: argparse.Namespace, saved: Any, meta: Dict[str, Any], x: torch.Tensor) -> Tuple[Dict, str]:
    pruned = saved.pruned.get("selected")
    use = args.use if args.use != "auto" else ("pruned" if pruned is not None else "posterior")
    if use in ("pruned", "network") and pruned is None:
        raise ValueError(f"--use {use}: the file holds no pruned network (run prune or compress)")
    if use == "pruned" and is_laplace(saved.guide):
        use = "network"  # a pruned Laplace posterior is scored as its pruned MAP network (see cli.scoring)
    if use == "network":
        return network_arrays(pruned.module.eval(), x, meta["task"], meta["noise"]), use
    guide = saved.guide if use == "posterior" else pruned.guide
    return predict_arrays(saved.model, guide, x, meta["task"], args.num_samples, args.seed), use


def run_predict(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``pyro-prune predict``."""
    if os.path.exists(args.out) and not args.overwrite:
        parser.error(f"argument --out: {args.out!r} exists (pass --overwrite to replace it)")
    saved, meta = _load(parser, args.source, args.device)
    x, _ = _inputs(parser, args, saved, meta, None)
    try:
        arrays, use = _arrays(args, saved, meta, x)
    except ValueError as e:
        parser.error(f"argument {e}")
    write_predictions(args.out, arrays, meta["task"], meta["classes"])
    print(f"{len(x)} predictions of the {use} written to {args.out}")
    return 0


def _targets(parser, raw: Optional[List], meta: Dict[str, Any]) -> torch.Tensor:
    if raw is None:
        parser.error(f"argument --data: no targets in the file (column {meta['target']!r} or array 'y')")
    if meta["task"] == "regression":
        return torch.tensor([float(v) for v in raw])
    index = {str(c): i for i, c in enumerate(meta["classes"])}
    norm = [str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v) for v in raw]
    unknown = sorted(set(norm) - set(index))
    if unknown:
        parser.error(f"argument --data: labels {unknown} were not seen in training ({meta['classes']})")
    return torch.tensor([index[v] for v in norm])


def run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``pyro-prune evaluate``."""
    saved, meta = _load(parser, args.source, args.device)
    x, raw = _inputs(parser, args, saved, meta, args.target or meta["target"])
    y = _targets(parser, raw, meta)
    try:
        arrays, use = _arrays(args, saved, meta, x)
    except ValueError as e:
        parser.error(f"argument {e}")
    result = {"use": use, "n": len(y), "device": args.device, **scores(arrays, y.to(args.device), meta["task"])}
    for k, v in result.items():
        print(f"{k:<10}{v:.4f}" if isinstance(v, float) else f"{k:<10}{v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
