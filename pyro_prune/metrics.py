r"""Predictive scores: accuracy, NLL, ECE, Brier; RMSE and Gaussian NLL; OOD AUROC.

All functions take tensors (numpy arrays are converted) and return Python floats.

* accuracy :math:`\frac1N\sum_n [\arg\max_k p_{nk} = y_n]`;
* NLL :math:`-\frac1N\sum_n \log p_{n y_n}` (probabilities clamped at ``eps``);
* ECE with :math:`B` equal-width confidence bins :math:`(b/B, (b+1)/B]`:
  :math:`\sum_b \frac{n_b}{N}\,|\mathrm{acc}_b - \mathrm{conf}_b|` (Guo et al. 2017);
* Brier :math:`\frac1N\sum_n\sum_k (p_{nk} - [k = y_n])^2`;
* Gaussian NLL :math:`\frac1N\sum_n \tfrac12\log(2\pi\sigma_n^2) + \frac{(y_n-\mu_n)^2}{2\sigma_n^2}`;
* AUROC by the Mann–Whitney statistic (ties count one half).
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch

__all__ = [
    "accuracy",
    "nll",
    "ece",
    "brier",
    "rmse",
    "gaussian_nll",
    "auroc",
    "ood_auroc",
    "classification_metrics",
    "regression_metrics",
]


def _tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value


def _finite(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _check_probs_labels(probs, y):
    probs, y = _tensor("probs", probs), _tensor("y", y)
    _finite("probs", probs)
    if not probs.is_floating_point():
        raise ValueError(f"probs must be floating point, got {probs.dtype}")
    if probs.dim() == 1:  # binary: probability of class 1
        probs = torch.stack([1 - probs, probs], -1)
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, C) or (N,), got {tuple(probs.shape)}")
    if y.dim() != 1:
        raise ValueError(f"y must have shape (N,), got {tuple(y.shape)}")
    if probs.shape[0] != y.shape[0]:
        raise ValueError(f"probs has {probs.shape[0]} rows but y has {y.shape[0]}")
    if probs.shape[0] == 0:
        raise ValueError("probs and y are empty")
    if bool(((probs < 0) | (probs > 1)).any()):
        raise ValueError("probs must lie in [0, 1]")
    if bool(((probs.sum(-1) - 1).abs() > 1e-3).any()):
        raise ValueError("probs rows must sum to 1 (within 1e-3)")
    _finite("y", y.double() if not y.is_floating_point() else y)
    if y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise ValueError("y must hold integer class labels")
        y = y.long()
    if bool(((y < 0) | (y >= probs.shape[1])).any()):
        raise ValueError(f"y has labels outside [0, {probs.shape[1]})")
    return probs.double(), y.long().to(probs.device)


def accuracy(probs, y) -> float:
    """Fraction of examples whose most probable class is the label."""
    probs, y = _check_probs_labels(probs, y)
    return float((probs.argmax(-1) == y).double().mean())


def nll(probs, y, eps: float = 1e-12) -> float:
    """Mean negative log probability of the labels."""
    probs, y = _check_probs_labels(probs, y)
    return float(-probs.gather(-1, y[:, None]).clamp_min(eps).log().mean())


def ece(probs, y, n_bins: int = 15) -> float:
    """Expected calibration error over ``n_bins`` equal-width confidence bins ``(lo, hi]``."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    probs, y = _check_probs_labels(probs, y)
    conf, pred = probs.max(-1)
    correct = (pred == y).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += float(m.double().mean()) * abs(float(correct[m].mean()) - float(conf[m].mean()))
    return total


def brier(probs, y) -> float:
    """Multi-class Brier score (sum over classes, mean over examples)."""
    probs, y = _check_probs_labels(probs, y)
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    return float((probs - onehot).pow(2).sum(-1).mean())


def _check_regression(mean, y, std=None):
    mean, y = _tensor("mean", mean), _tensor("y", y)
    if mean.shape != y.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and y {tuple(y.shape)} must have the same shape")
    if mean.numel() == 0:
        raise ValueError("mean and y are empty")
    _finite("mean", mean.double())
    _finite("y", y.double())
    if std is not None:
        std = _tensor("std", std)
        if std.shape != y.shape:
            raise ValueError(f"std {tuple(std.shape)} and y {tuple(y.shape)} must have the same shape")
        _finite("std", std.double())
        if bool((std <= 0).any()):
            raise ValueError("std must be positive")
        std = std.double()
    return mean.double(), y.double(), std


def rmse(mean, y) -> float:
    """Root mean squared error."""
    mean, y, _ = _check_regression(mean, y)
    return float((mean - y).pow(2).mean().sqrt())


def gaussian_nll(mean, std, y) -> float:
    """Mean negative log density of ``y`` under :math:`\\mathcal N(\\mu, \\sigma^2)`."""
    mean, y, std = _check_regression(mean, y, std)
    return float((0.5 * math.log(2 * math.pi) + std.log() + 0.5 * ((y - mean) / std).pow(2)).mean())


def auroc(scores_pos, scores_neg) -> float:
    """Probability that a positive scores higher than a negative (ties: 1/2), the area under the ROC curve."""
    pos = _tensor("scores_pos", scores_pos).double().flatten()
    neg = _tensor("scores_neg", scores_neg).double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("scores_pos and scores_neg must be non-empty")
    _finite("scores_pos", pos)
    _finite("scores_neg", neg)
    allv = torch.cat([pos, neg])
    # average ranks (1-based), ties get the mean rank
    order = torch.argsort(allv, stable=True)
    ranks = torch.empty_like(allv)
    ranks[order] = torch.arange(1, allv.numel() + 1, dtype=torch.float64)
    uniq, inverse = torch.unique(allv, return_inverse=True)
    mean_rank = torch.zeros_like(uniq).index_add_(0, inverse, ranks) / torch.bincount(inverse).double()
    r_pos = mean_rank[inverse[: pos.numel()]].sum()
    n1, n0 = pos.numel(), neg.numel()
    return float((r_pos - n1 * (n1 + 1) / 2) / (n1 * n0))


def ood_auroc(scores_in, scores_out) -> float:
    """AUROC of detecting out-of-distribution inputs by a higher uncertainty score (e.g. predictive entropy)."""
    return auroc(scores_out, scores_in)


def classification_metrics(probs, y, n_bins: int = 15) -> Dict[str, float]:
    """``{"accuracy", "nll", "ece", "brier"}`` of predicted class probabilities."""
    return {
        "accuracy": accuracy(probs, y),
        "nll": nll(probs, y),
        "ece": ece(probs, y, n_bins),
        "brier": brier(probs, y),
    }


def regression_metrics(mean, std, y) -> Dict[str, float]:
    """``{"rmse", "nll"}`` of a Gaussian predictive distribution."""
    return {"rmse": rmse(mean, y), "nll": gaussian_nll(mean, std, y)}
