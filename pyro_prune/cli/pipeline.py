"""The steps the subcommands share: check and load (before any training), train, score, prune, write."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Dict, Optional, Tuple

import pyro
import torch
from torch.utils.data import DataLoader, TensorDataset

from .._version import __version__
from .args import EMBEDDED, check_out, check_readable
from .figures import write_figures
from .guides import Posterior, build_posterior, candidate_rules, fixed_rule
from .network import build_network, describe, import_factory, load_weights, noise_std, pretrain
from .outputs import default_out, save_posterior, write_networks
from .reports import print_summary, pruning_warnings, script_warnings, training_warnings, write_reports
from .scoring import is_laplace, predict_arrays, scores
from .selection import score_pruned, select
from .sources import Dataset, SourceError, prepare

__all__ = ["data_spec", "check_inputs", "load_dataset", "make_network", "train", "posterior_scores", "prune_and_write"]


def data_spec(args: argparse.Namespace) -> Dict[str, Any]:
    """What :func:`~pyro_prune.cli.sources.prepare` needs, as saved with the posterior."""
    keys = ("data", "target", "task", "test", "val_fraction", "test_fraction", "seed")
    return dict({k: getattr(args, k) for k in keys}, standardize=not args.no_standardize)


def check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """Paths, ``--model`` and the output folder, before anything is loaded; returns the output folder."""
    if args.data not in EMBEDDED:
        check_readable(parser, "--data", args.data, folder=os.path.isdir(args.data))
    check_readable(parser, "--test", args.test)
    check_readable(parser, "--weights", args.weights)
    if args.model:
        try:
            import_factory(args.model)
        except ValueError as e:
            parser.error(f"argument --model: {e}")
    out = args.out or default_out(args.data, args.guide)
    check_out(parser, out, args.overwrite)
    return out


def load_dataset(parser: argparse.ArgumentParser, spec: Dict[str, Any], flat: bool, device: str = "cpu") -> Dataset:
    """:func:`~pyro_prune.cli.sources.prepare`, a data problem exiting through ``parser.error`` with its flag; the
    inputs and targets are moved to ``device`` (the split indices and the standardization stay on the CPU, as saved).
    """
    try:
        dataset = prepare(spec)
    except SourceError as e:
        parser.error(f"argument {e.flag}: {e}")
    if flat:
        dataset.x = {k: v.reshape(len(v), -1) for k, v in dataset.x.items()}
    dataset.x = {k: v.to(device) for k, v in dataset.x.items()}
    dataset.y = {k: v.to(device) for k, v in dataset.y.items()}
    return dataset


def make_network(parser: argparse.ArgumentParser, args: Any, dataset: Dataset) -> torch.nn.Module:
    """The network for the dataset's widths, with ``--weights`` loaded, on ``--device``; problems exit naming the
    flag."""
    n_in = int(torch.tensor(dataset.x["train"].shape[1:]).prod())
    try:
        net = build_network(args.hidden, args.model, n_in, dataset.n_out, dataset.input_shape)
    except ValueError as e:
        parser.error(f"argument --model: {e}")
    if args.weights:
        try:
            load_weights(net, args.weights)
        except ValueError as e:
            parser.error(f"argument --weights: {e}")
    return net.to(args.device)


def _loaders(dataset: Dataset, args: Any) -> Dict[str, Any]:
    train = TensorDataset(dataset.x["train"], dataset.y["train"])
    gen = torch.Generator().manual_seed(args.seed)
    return {
        "train": DataLoader(train, batch_size=args.batch_size, shuffle=True, generator=gen),
        "val": (dataset.x["val"], dataset.y["val"]),
    }


def train(args: Any, dataset: Dataset, net: torch.nn.Module) -> Tuple[Posterior, Dict[str, Any], Optional[float]]:
    """Pre-train (MAP), then fit the ``--guide`` posterior; returns it, the timings and the regression noise."""
    pyro.set_rng_seed(args.seed)
    loaders = _loaders(dataset, args)
    t0 = time.perf_counter()
    info = pretrain(
        net, loaders["train"], dataset.task, args.pretrain_epochs, args.lr, args.weight_decay, not args.no_progress
    )
    info["seconds"] = time.perf_counter() - t0
    noise = None if dataset.task == "classification" else noise_std(net, dataset.x["train"], dataset.y["train"])
    post = build_posterior(args.guide, net, dataset, loaders, args, noise)
    return post, info, noise


def posterior_scores(post: Posterior, dataset: Dataset, args: Any) -> Dict[str, Dict[str, float]]:
    """Validation and test scores of the unpruned posterior (its default predictive)."""
    out = {}
    for part in ("val", "test"):
        if len(dataset.y[part]):
            arrays = predict_arrays(post.model, post.guide, dataset.x[part], dataset.task, args.num_samples, args.seed)
            out[f"{part} posterior"] = scores(arrays, dataset.y[part], dataset.task)
    return out


def base_report(command: str, args: Any, dataset: Dataset, net: torch.nn.Module, post: Posterior) -> Dict[str, Any]:
    """The parts of ``report.json`` every command has."""
    return {
        "command": command,
        "pyro_prune": __version__,
        "data": {
            "name": dataset.name,
            "task": dataset.task,
            "sizes": dataset.sizes(),
            "columns": dataset.columns,
            "classes": dataset.classes,
            "spec": dataset.spec,
        },
        "network": dict(describe(net), hidden=args.hidden, model=args.model, weights=args.weights),
        "guide": dict(post.settings, name=post.name),
        "device": args.device,
        "warnings": training_warnings(post.history, getattr(args, "epochs", 0)),
        "scores": {},
        "seconds": {},
        "files": [],
    }


def cli_meta(args: Any, post: Posterior, noise: Optional[float]) -> Dict[str, Any]:
    """``metadata["cli"]`` of the posterior file (besides the data description)."""
    return {
        "network": {"hidden": args.hidden, "model": args.model},
        "guide": post.name,
        "noise": noise,
        "settings": post.settings,
    }


def prune_and_write(args: Any, post: Posterior, dataset: Dataset, folder: str, noise, report: Dict, meta: Dict) -> None:
    """Select the threshold on validation, score on test, save the posterior with the pruning, the network forms,
    the figures and the reports, and print the summary."""
    t0 = time.perf_counter()
    rules = candidate_rules(post.name) if args.threshold == "auto" else [fixed_rule(post.name, args.threshold)]
    selection = select(post, rules, (dataset.x["val"], dataset.y["val"]), dataset.task, args, noise)
    result = selection.result
    report["seconds"]["prune"] = time.perf_counter() - t0
    x_test, y_test = dataset.x["test"], dataset.y["test"]
    if len(y_test):
        s = score_pruned(post, result, x_test, y_test, dataset.task, args.num_samples, args.seed, noise)
        report["scores"]["test pruned"] = s
    report["selection"] = selection.to_dict()
    rep = result.report
    report["compression"] = dict(
        compression=rep.compression, sparsity=rep.sparsity, flops_reduction=rep.flops_reduction, **rep.to_dict()
    )
    report["pruned_predictive"] = "pruned MAP network" if is_laplace(post.guide) else "pruned posterior ensemble"
    report["warnings"] += pruning_warnings(selection, args)
    save_posterior(folder, post, dataset, meta, result)
    written = write_networks(folder, result, dataset.x["test"] if len(y_test) else dataset.x["val"], args.speed_batch)
    report["speedup"] = written["speedup"]
    report["torchscript"] = dict(written["torchscript"], file=written["files"]["torchscript"])
    report["warnings"] += script_warnings(written["torchscript"])
    report["files"] += ["posterior.pt", *written["files"].values()]
    _figures(args, post, dataset, folder, report, selection)
    write_reports(folder, report, str(result.report))
    print_summary(report, str(result.report), folder)


def _figures(args: Any, post: Posterior, dataset: Dataset, folder: str, report: Dict, selection: Any = None) -> None:
    if args.no_figures:
        return
    probs = None
    part = "test" if len(dataset.y["test"]) else "val"
    if dataset.task == "classification":
        probs = predict_arrays(post.model, post.guide, dataset.x[part], dataset.task, args.num_samples, args.seed)
        probs = probs["probs"]
    result = None if selection is None else selection.result
    rule = None if selection is None else selection.rule
    names = write_figures(os.path.join(folder, "figures"), post.guide, rule, result, probs, dataset.y[part], selection)
    report["files"] += [f"figures/{n}" for n in names]


def write_fit(args: Any, post: Posterior, dataset: Dataset, folder: str, report: Dict, meta: Dict) -> None:
    """``fit``'s outputs: the posterior file, figures, reports and the printed summary."""
    save_posterior(folder, post, dataset, meta)
    report["files"].append("posterior.pt")
    _figures(args, post, dataset, folder, report)
    write_reports(folder, report, None)
    print_summary(report, None, folder)
