"""The ``pyro-prune`` command: fit, prune, predict, evaluate and compress Bayesian networks on your data.

``pyro-prune compress`` runs the whole pipeline (on the embedded digits when no ``--data`` is given): a network is
pre-trained (MAP), made Bayesian with the ``--guide`` posterior, pruned with the threshold chosen on a validation
split, scored on the test split, and written to a folder with the posterior file, the pruned network in its forms
(plain ``state_dict``, ``torch.export``, TorchScript, ``torch.nn.utils.prune``, sparse CSR), ``report.json``,
``report.md`` and figures. ``--device cuda`` trains and predicts on a GPU; the files load on the CPU. A ``--model``
network may take inputs that are not flat (an NPZ ``x`` of shape ``(N, C, L)`` for a ``Conv1d``).
``fit`` stops after the posterior, ``prune`` continues from a saved one, ``predict``/``evaluate`` apply a saved
posterior (with its input standardization) to new inputs. ``pyro-prune <command> --help`` lists every option with
its default.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .cmd_apply import add_evaluate, add_predict, add_prune, run_evaluate, run_predict, run_prune
from .cmd_train import add_compress, add_fit, run_compress, run_fit

__all__ = ["main", "build_parser"]

_RUN = {"fit": run_fit, "compress": run_compress, "prune": run_prune, "predict": run_predict, "evaluate": run_evaluate}


def build_parser() -> argparse.ArgumentParser:
    """The parser with its five subcommands; every default is shown by ``--help``."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="pyro-prune", description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = p.add_subparsers(dest="command", metavar="{compress,fit,prune,predict,evaluate}")
    parsers = {
        "compress": add_compress(sub, fmt),
        "fit": add_fit(sub, fmt),
        "prune": add_prune(sub, fmt),
        "predict": add_predict(sub, fmt),
        "evaluate": add_evaluate(sub, fmt),
    }
    p.set_defaults(_parsers=parsers)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``pyro-prune`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code (a bad argument exits 2
    through ``argparse`` before anything is trained)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("\npyro-prune: choose a command, e.g. `pyro-prune compress` (the embedded digits)", file=sys.stderr)
        return 2
    return _RUN[args.command](args._parsers[args.command], args)
