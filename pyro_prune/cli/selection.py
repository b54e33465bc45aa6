"""The pruning threshold, chosen on the validation split by a stated rule (never on test data).

**The rule.** Each candidate rule of the guide (:func:`~pyro_prune.cli.guides.candidate_rules`) prunes the
posterior; the candidate with the most compression is chosen among those whose validation NLL is at most the
unpruned reference's plus ``tolerance`` and, for classification, whose validation accuracy is at least the
reference's minus ``accuracy_tolerance``. If none qualifies, nothing is pruned (``Sparsity(0)``: a pruned network
that fails the tolerance is no use) and the run warns.
The reference is scored the same way as the candidates: the posterior ensemble (Monte Carlo), or the MAP network for
a Laplace guide (whose pruned form is the pruned MAP network, :mod:`.scoring`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..pruning import PruneResult, prune
from ..pruning.rules import Sparsity
from .scoring import is_laplace, network_arrays, predict_arrays, scores

__all__ = ["Candidate", "Selection", "score_pruned", "score_reference", "select"]


@dataclass
class Candidate:
    """One rule tried: its compression and validation scores."""

    rule: str
    compression: float
    sparsity: float
    val: Dict[str, float]
    ok: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {
            "rule": self.rule,
            "compression": self.compression,
            "sparsity": self.sparsity,
            "val": self.val,
            "within_tolerance": self.ok,
        }


@dataclass
class Selection:
    """The chosen pruning and how it was chosen."""

    result: PruneResult
    chosen: Candidate
    reference: Dict[str, float]
    candidates: List[Candidate]
    rule_text: str
    within: bool
    rule: Any = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "rule": self.rule_text,
            "chosen": self.chosen.to_dict(),
            "reference_val": self.reference,
            "within_tolerance": self.within,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def score_pruned(post: Any, result: PruneResult, x, y, task: str, num_samples: int, seed: int, noise=None):
    """Scores of a pruned posterior on ``(x, y)`` (the pruned MAP network for a Laplace guide)."""
    if is_laplace(post.guide):
        return scores(network_arrays(result.module, x, task, noise), y, task)
    return scores(predict_arrays(post.model, result.guide, x, task, num_samples, seed), y, task)


def score_reference(post: Any, x, y, task: str, num_samples: int, seed: int, noise=None) -> Dict[str, float]:
    """The unpruned counterpart of :func:`score_pruned`."""
    if is_laplace(post.guide):
        return scores(network_arrays(post.model.template(), x, task, noise), y, task)
    return scores(predict_arrays(post.model, post.guide, x, task, num_samples, seed), y, task)


def _prune_quietly(post: Any, rule: Any, example) -> PruneResult:
    with warnings.catch_warnings():  # a fully pruned layer is reported in the candidate's scores
        warnings.simplefilter("ignore", UserWarning)
        return prune(post.model, post.guide, rule, example_input=example)


def _ok(val: Dict[str, float], ref: Dict[str, float], tol: float, acc_tol: float) -> bool:
    good = val["nll"] <= ref["nll"] + tol
    return good and ("accuracy" not in val or val["accuracy"] >= ref["accuracy"] - acc_tol)


def _unpruned(post: Any, val: Tuple, task: str, args: Any, noise: Optional[float]) -> Tuple[Candidate, Any, Any]:
    """The candidate that prunes nothing (``Sparsity(0)``), kept when no rule meets the tolerance."""
    rule = Sparsity(0.0)
    result = _prune_quietly(post, rule, val[0][:1])
    s = score_pruned(post, result, *val, task, args.num_samples, args.seed, noise)
    c = Candidate(repr(rule), result.report.compression, result.report.sparsity, s)
    c.ok = False
    return c, result, rule


def select(post: Any, rules: List[Any], val: Tuple, task: str, args: Any, noise: Optional[float] = None) -> Selection:
    """Try each rule on the validation split ``val = (x, y)`` and apply the rule of the module docstring."""
    x, y = val
    ref = score_reference(post, x, y, task, args.num_samples, args.seed, noise)
    tried: List[Tuple[Candidate, PruneResult, Any]] = []
    for rule in rules:
        result = _prune_quietly(post, rule, x[:1])
        s = score_pruned(post, result, x, y, task, args.num_samples, args.seed, noise)
        c = Candidate(repr(rule), result.report.compression, result.report.sparsity, s)
        c.ok = _ok(s, ref, args.tolerance, args.accuracy_tolerance)
        tried.append((c, result, rule))
    good = [t for t in tried if t[0].ok]
    pick = max(good, key=lambda t: t[0].compression) if good else _unpruned(post, val, task, args, noise)
    text = (
        f"the most compression whose validation NLL <= unpruned + {args.tolerance}"
        + (f" and accuracy >= unpruned - {args.accuracy_tolerance}" if task == "classification" else "")
        + (" (none qualified: nothing pruned)" if not good else "")
    )
    return Selection(pick[1], pick[0], ref, [t[0] for t in tried], text, bool(good), pick[2])
