"""Predictions and scores of the three things a run can predict with: the posterior, the pruned posterior, and
the pruned network alone (deterministic).

A Laplace guide's posterior predicts with its linearized (GLM) predictive; its pruned form is scored as the pruned
MAP network (the sampled-network predictive of a Laplace posterior can be far off, see ``pp.predict``), every
other guide's pruned form as the pruned posterior ensemble (:class:`~pyro_prune.pruning.PrunedGuide`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import pyro
import torch
import torch.nn as nn

from ..metrics import classification_metrics, regression_metrics
from ..prediction import predict

__all__ = ["is_laplace", "predict_arrays", "network_arrays", "scores"]


def is_laplace(guide: Any) -> bool:
    """Whether ``guide`` predicts with the linearized (GLM) predictive by default (a Laplace guide)."""
    return getattr(guide, "default_predictive", "mc") == "glm"


def predict_arrays(model: Any, guide: Any, x: torch.Tensor, task: str, num_samples: int, seed: int) -> Dict:
    """``pp.predict`` with the generator seeded by ``seed``, as named tensors: ``probs``, ``entropy``
    (classification; ``mutual_information`` for sampled ensembles) or ``mean``, ``std``, ``epistemic_std``,
    ``aleatoric_std`` (regression)."""
    pyro.set_rng_seed(seed)
    pred = predict(model, guide, x, num_samples=num_samples)
    if task == "classification":
        out = {"probs": pred.probs, "entropy": pred.entropy}
        if pred.method == "mc":
            out["mutual_information"] = pred.mutual_information
        return out
    flat = {k: getattr(pred, k).reshape(len(x)) for k in ("mean", "std", "epistemic_std", "aleatoric_std")}
    return flat


def network_arrays(net: nn.Module, x: torch.Tensor, task: str, noise: Optional[float]) -> Dict:
    """The same names for a deterministic network (a regression's std is the likelihood's fixed noise)."""
    with torch.no_grad():
        out = net(x)
    if task == "classification":
        probs = out.softmax(-1)
        return {"probs": probs, "entropy": -(probs * probs.clamp_min(1e-30).log()).sum(-1)}
    mean = out.reshape(len(x))
    sd = torch.full_like(mean, float(noise))
    return {"mean": mean, "std": sd, "epistemic_std": torch.zeros_like(mean), "aleatoric_std": sd}


def scores(arrays: Dict[str, torch.Tensor], y: torch.Tensor, task: str) -> Dict[str, float]:
    """Accuracy, NLL, ECE, Brier (classification) or RMSE, Gaussian NLL (regression)."""
    if task == "classification":
        return classification_metrics(arrays["probs"], y)
    return regression_metrics(arrays["mean"], arrays["std"], y.to(arrays["mean"].dtype))
