"""Matplotlib figures: log-α histograms, kept-weight masks, reliability diagrams, predictive bands, and for
structured pruning the kept groups per layer and per-group log α.

Every function draws on a given ``ax`` (or a new figure) and returns the figure, so it works in
notebooks and headless scripts alike (use the Agg backend there).  This is the only module that imports matplotlib;
``import pyro_prune`` does not load it, ``pyro_prune.plots`` is imported on first use.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "log_alpha_histogram",
    "mask_images",
    "reliability_diagram",
    "predictive_band",
    "kept_groups",
    "group_log_alpha",
]


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def log_alpha_histogram(
    log_alpha: Dict[str, torch.Tensor], threshold: float = 3.0, bins: int = 60, ax: Optional[Axes] = None
) -> Figure:
    """Histogram of :math:`\\log\\alpha` per layer with the pruning threshold as a vertical line.

    :param log_alpha: ``{site: log alpha tensor}``, e.g. ``guide.log_alpha()``.
    :param threshold: weights right of the line are pruned by ``LogAlpha(threshold)``.
    """
    if not log_alpha:
        raise ValueError("log_alpha is empty")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    for name, la in log_alpha.items():
        ax.hist(_np(la).ravel(), bins=bins, histtype="step", label=name)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(r"$\log\alpha$")
    ax.set_ylabel("weights")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    return fig


def mask_images(masks: Dict[str, torch.Tensor], titles: Optional[Sequence[str]] = None) -> Figure:
    """One image per layer of its kept-weight mask (rows: outputs; columns: inputs × kernel)."""
    if not masks:
        raise ValueError("masks is empty")
    fig, axes = plt.subplots(1, len(masks), figsize=(3.2 * len(masks), 3.2), squeeze=False)
    for i, (ax, (name, m)) in enumerate(zip(axes[0], masks.items())):
        img = _np(m).reshape(m.shape[0], -1) if m.dim() > 1 else _np(m).reshape(1, -1)
        ax.imshow(img, cmap="Greys", aspect="auto", interpolation="nearest")
        kept = img.mean()
        ax.set_title(titles[i] if titles else f"{name}: {100 * kept:.1f}% kept", fontsize="small")
        ax.set_xlabel("input")
        ax.set_ylabel("output")
    fig.tight_layout()
    return fig


def reliability_diagram(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15, ax: Optional[Axes] = None) -> Figure:
    """Accuracy against confidence in equal-width bins, with the diagonal of perfect calibration."""
    probs, y = _np(probs), _np(y)
    conf, pred = probs.max(-1), probs.argmax(-1)
    edges = np.linspace(0, 1, n_bins + 1)
    centers, accs, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            centers.append(conf[m].mean())
            accs.append((pred[m] == y[m]).mean())
            counts.append(m.sum())
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.scatter(centers, accs, s=10 + 200 * np.asarray(counts) / max(1, len(y)))
    ax.plot(centers, accs, lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return fig


def predictive_band(
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    x_train: Optional[torch.Tensor] = None,
    y_train: Optional[torch.Tensor] = None,
    ax: Optional[Axes] = None,
) -> Figure:
    """1-D regression: predictive mean with ±2 std band, and the training data."""
    x, mean, std = _np(x).ravel(), _np(mean).ravel(), _np(std).ravel()
    order = np.argsort(x)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    ax.fill_between(x[order], (mean - 2 * std)[order], (mean + 2 * std)[order], alpha=0.3, label="±2 std")
    ax.plot(x[order], mean[order], lw=1.5, label="mean")
    if x_train is not None:
        ax.scatter(_np(x_train).ravel(), _np(y_train).ravel(), s=6, c="k", label="train")
    ax.legend(fontsize="small")
    return fig


def kept_groups(group_masks: Dict[str, torch.Tensor], ax: Optional[Axes] = None) -> Figure:
    """Bar chart of the groups (neurons / channels) kept per layer, out of the total.

    :param group_masks: ``{weight site: (G,) bool}``, e.g. ``pp.prune(...).group_masks``.
    """
    if not group_masks:
        raise ValueError("group_masks is empty")
    names = list(group_masks)
    total = np.array([m.numel() for m in group_masks.values()])
    kept = np.array([int(m.sum()) for m in group_masks.values()])
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1.2 * len(names) + 3, 3.2))
    pos = np.arange(len(names))
    ax.bar(pos, total, color="0.85", label="total")
    ax.bar(pos, kept, color="C0", label="kept")
    for p, k, t in zip(pos, kept, total):
        ax.text(p, k, f"{k}/{t}", ha="center", va="bottom", fontsize="small")
    ax.set_xticks(pos, names)
    ax.set_ylabel("groups (input units / channels)")
    ax.legend(fontsize="small")
    return fig


def group_log_alpha(
    group_log_alpha: Dict[str, torch.Tensor], threshold: float = 3.0, ax: Optional[Axes] = None
) -> Figure:
    """Per-group :math:`\\log\\alpha_g` of every layer, sorted, with the pruning threshold.

    :param group_log_alpha: ``{layer: (G,) log alpha}``, e.g. ``guide.group_log_alpha()``.
    """
    if not group_log_alpha:
        raise ValueError("group_log_alpha is empty")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    for name, la in group_log_alpha.items():
        v = np.sort(_np(la).ravel())
        ax.plot(np.linspace(0, 1, len(v)), v, marker=".", lw=1, label=f"{name} ({len(v)} groups)")
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("group quantile")
    ax.set_ylabel(r"$\log\alpha_g$")
    ax.legend(fontsize="small")
    return fig
