"""The run's figures as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .. import plots  # noqa: E402
from ..marginals import marginals  # noqa: E402

__all__ = ["write_figures", "compression_curve"]


def compression_curve(candidates: List[Dict[str, Any]], chosen: str, reference: Dict[str, float]) -> plt.Figure:
    """Validation accuracy (or RMSE) and NLL against compression, one point per candidate threshold."""
    key = "accuracy" if "accuracy" in reference else "rmse"
    xs = [c["compression"] for c in candidates]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, (key, "nll")):
        ax.plot(xs, [c["val"][metric] for c in candidates], "o-", label="pruned")
        ax.axhline(reference[metric], color="k", ls="--", lw=1, label="unpruned")
        for c in candidates:
            if c["rule"] == chosen:
                ax.plot([c["compression"]], [c["val"][metric]], "r*", ms=14, label="chosen")
        ax.set_xscale("log")
        ax.set_xlabel("compression (x)")
        ax.set_ylabel(f"validation {metric}")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _log_alpha(guide: Any) -> Dict[str, torch.Tensor]:
    margs = marginals(guide)
    return {s: m.log_alpha for s, m in margs.items() if s.endswith("weight") and m.log_alpha is not None}


def _threshold(rule: Any, result: Any, log_alpha: Dict[str, torch.Tensor]) -> float:
    t = getattr(rule, "threshold", None)
    if isinstance(t, (int, float)) and math.isfinite(t):
        return float(t)
    kept = [la[result.masks[s] & torch.isfinite(la)] for s, la in log_alpha.items() if s in result.masks]
    kept = torch.cat([k.reshape(-1) for k in kept]) if kept else torch.empty(0)
    return float(kept.max()) if len(kept) else 0.0


def write_figures(folder: str, guide: Any, rule: Any, result: Any, probs: Optional[torch.Tensor], y, selection=None):
    """Write the figures that apply; returns the file names written."""
    os.makedirs(folder, exist_ok=True)
    figs: Dict[str, plt.Figure] = {}
    la = _log_alpha(guide) if result is not None else {}
    finite = {s: v[torch.isfinite(v)] for s, v in la.items()}
    if la and all(len(v) for v in finite.values()) and not getattr(result, "group_masks", None):
        figs["log_alpha.png"] = plots.log_alpha_histogram(finite, threshold=_threshold(rule, result, la))
    if result is not None:
        figs["masks.png"] = plots.mask_images({k: v for k, v in result.masks.items()})
        if result.group_masks:
            figs["kept_groups.png"] = plots.kept_groups(result.group_masks)
    if probs is not None:
        figs["reliability.png"] = plots.reliability_diagram(probs, y)
    if selection is not None and len(selection.candidates) > 1:
        d = selection.to_dict()
        figs["compression_curve.png"] = compression_curve(d["candidates"], d["chosen"]["rule"], d["reference_val"])
    for name, fig in figs.items():
        fig.savefig(os.path.join(folder, name), dpi=100)
        plt.close(fig)
    return sorted(figs)
