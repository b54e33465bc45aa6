"""A :class:`~pyro_prune.PruneResult` in a file: its masks and rule, rebuilt by pruning the loaded posterior again.

``prune`` is a deterministic function of the posterior and the masks (the pruned network holds the posterior
means of the kept weights, the compact network follows from the group masks), so a file keeps only the masks, the
rule's name and the example input's shape; :func:`rebuild_pruned` runs :func:`~pyro_prune.prune` on the loaded
model and guide with rules that return exactly the saved masks.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..marginals import Marginal
from ..model.bayesian_model import BayesianModel
from ..pruning import PruneResult, prune
from ..pruning.rules import GroupRule, Rule

__all__ = ["describe_pruned", "rebuild_pruned"]


class _SavedMasks(Rule):
    """The unstructured rule of a saved result: its masks, under the original rule's name."""

    def __init__(self, masks: Mapping[str, torch.Tensor], name: str):
        self.masks, self.name = dict(masks), name

    def __call__(self, marginals: Dict[str, Marginal]) -> Dict[str, torch.Tensor]:
        return {k: self.masks[k].to(m.loc.device) for k, m in marginals.items()}

    def __repr__(self) -> str:
        return self.name


class _SavedGroupMasks(GroupRule):
    """The structured rule of a saved result: its group masks, under the original rule's name."""

    def __init__(self, group_masks: Mapping[str, torch.Tensor], name: str):
        self.saved, self.name = dict(group_masks), name

    def group_masks(self, marginals: Dict[str, Marginal]) -> Dict[str, torch.Tensor]:
        return {k: g.to(marginals[k].loc.device) for k, g in self.saved.items()}

    def __repr__(self) -> str:
        return self.name


def describe_pruned(result: PruneResult) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(JSON description, tensors)`` of ``result``.

    :raises TypeError: ``result`` is not a :class:`~pyro_prune.PruneResult`.
    """
    if not isinstance(result, PruneResult):
        raise TypeError(f"pruned values must be PruneResults (from pp.prune), got {type(result).__name__}")
    meta = {"rule": result.report.rule, "structured": result.group_masks is not None,
            "example_input": None if result.example_input is None else
            [list(result.example_input[0]), result.example_input[1]]}  # fmt: skip
    tensors = {"masks": {k: m.detach().cpu().clone() for k, m in result.masks.items()}}
    if result.group_masks is not None:
        tensors["group_masks"] = {k: g.detach().cpu().clone() for k, g in result.group_masks.items()}
    return meta, tensors


def rebuild_pruned(model: BayesianModel, guide: Any, meta: Mapping[str, Any], tensors: Mapping[str, Any]):
    """The :class:`~pyro_prune.PruneResult` of :func:`describe_pruned`, from the loaded ``model`` and ``guide``."""
    example: Optional[torch.Tensor] = None
    if meta.get("example_input") is not None:
        shape, dtype = meta["example_input"]
        example = torch.zeros(shape, dtype=getattr(torch, dtype), device=model.device)
    if meta["structured"]:
        return prune(model, guide, _SavedGroupMasks(tensors["group_masks"], meta["rule"]), example_input=example)
    masks = tensors["masks"]
    return prune(model, guide, _SavedMasks(masks, meta["rule"]), sites=list(masks), example_input=example)
