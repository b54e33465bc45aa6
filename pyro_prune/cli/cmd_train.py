"""``pyro-prune fit`` (data + network + guide → a saved posterior and a training report) and ``pyro-prune
compress`` (the same, then pruning with the threshold chosen on validation, in one folder)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..training import NonFiniteError
from . import args as a
from .pipeline import (
    base_report,
    check_inputs,
    cli_meta,
    data_spec,
    load_dataset,
    make_network,
    posterior_scores,
    prune_and_write,
    train,
    write_fit,
)

__all__ = ["add_fit", "add_compress", "run_fit", "run_compress"]


def add_fit(sub: argparse._SubParsersAction, formatter) -> argparse.ArgumentParser:
    """The ``fit`` subcommand's arguments."""
    p = sub.add_parser("fit", help="train a posterior and save it", description=__doc__, formatter_class=formatter)
    a.add_data(p)
    a.add_network(p)
    a.add_guide(p)
    a.add_run(p)
    return p


def add_compress(sub: argparse._SubParsersAction, formatter) -> argparse.ArgumentParser:
    """The ``compress`` subcommand's arguments."""
    p = sub.add_parser(
        "compress",
        help="fit, prune (threshold chosen on validation), export, report",
        description=__doc__,
        formatter_class=formatter,
    )
    a.add_data(p)
    a.add_network(p)
    a.add_guide(p)
    a.add_pruning(p)
    a.add_run(p)
    return p


def _fit(parser: argparse.ArgumentParser, args: argparse.Namespace, command: str, check=None):
    """Everything up to the fitted posterior; ``None`` (after a message) if training diverged."""
    folder = check_inputs(parser, args)
    dataset = load_dataset(parser, data_spec(args), flat=args.model is None, device=args.device)
    net = make_network(parser, args, dataset)
    if check is not None:
        check(parser, args)
    os.makedirs(folder, exist_ok=True)
    try:
        post, info, noise = train(args, dataset, net)
    except (NonFiniteError, FloatingPointError) as e:
        print(f"pyro-prune {command}: training diverged: {e}\nTry a lower --lr or a smaller network.", file=sys.stderr)
        return None
    report = base_report(command, args, dataset, net, post)
    report["seconds"].update(pretrain=info["seconds"], fit=post.seconds)
    report["pretrain"] = info
    t0 = time.perf_counter()
    report["scores"].update(posterior_scores(post, dataset, args))
    report["seconds"]["evaluate"] = time.perf_counter() - t0
    return folder, dataset, post, noise, report


def run_fit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``pyro-prune fit``."""
    fitted = _fit(parser, args, "fit")
    if fitted is None:
        return 1
    folder, dataset, post, noise, report = fitted
    write_fit(args, post, dataset, folder, report, cli_meta(args, post, noise))
    return 0


def _check_threshold(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.threshold != "auto" and not (args.guide == "sparse-vd" or args.guide.startswith("group-")):
        if not 0 <= args.threshold < 1:
            parser.error(
                f"argument --threshold: for --guide {args.guide} it is the fraction of weights removed, "
                f"in [0, 1), got {args.threshold}"
            )


def run_compress(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``pyro-prune compress``."""
    fitted = _fit(parser, args, "compress", _check_threshold)
    if fitted is None:
        return 1
    folder, dataset, post, noise, report = fitted
    prune_and_write(args, post, dataset, folder, noise, report, cli_meta(args, post, noise))
    return 0
