"""``report.json``, ``report.md``, the printed summary, and the warnings that protect the user."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional

__all__ = ["training_warnings", "pruning_warnings", "script_warnings", "write_reports", "print_summary"]


def training_warnings(history: Any, epochs: int) -> List[str]:
    """Early stop, and a loss still falling by more than 2 % over the last fifth of the epochs."""
    if history is None or not history.records:
        return []
    out = []
    if history.stopped_early:
        out.append(
            f"training stopped early (no validation NLL improvement) after {len(history.records)} of {epochs} epochs"
        )
    loss = [r["loss"] for r in history.records if "loss" in r]
    k = max(1, len(loss) // 5)
    if len(loss) > k and all(math.isfinite(v) for v in loss):
        before, last = loss[-k - 1], loss[-1]
        if before - last > 0.02 * abs(before):
            out.append(
                f"the training loss was still falling ({before:.4g} -> {last:.4g} over the last {k} epochs): "
                "more --epochs may help"
            )
    return out


def pruning_warnings(selection: Any, args: Any) -> List[str]:
    """The pruned network is worse on validation than the unpruned posterior by more than the tolerances."""
    ref, val = selection.reference, selection.chosen.val
    out = []
    if val["nll"] > ref["nll"] + args.tolerance:
        out.append(
            f"the pruned validation NLL {val['nll']:.4f} is worse than the unpruned {ref['nll']:.4f} by more "
            f"than --tolerance {args.tolerance}: train longer (--epochs) or prune less (lower --threshold)"
        )
    if "accuracy" in val and val["accuracy"] < ref["accuracy"] - args.accuracy_tolerance:
        out.append(
            f"the pruned validation accuracy {val['accuracy']:.4f} is below the unpruned "
            f"{ref['accuracy']:.4f} by more than --accuracy-tolerance {args.accuracy_tolerance}: train longer "
            "(--epochs) or prune less"
        )
    return out


def script_warnings(script: Dict[str, Any]) -> List[str]:
    """A note when ``network.ts`` is a trace rather than a script (its branches are frozen at the example)."""
    if script["method"] == "script":
        return []
    return [
        f"network.ts is a torch.jit.trace on an example batch of shape {tuple(script['example_shape'])} "
        f"(torch.jit.script failed: {script['script_error']}): control flow that depends on the input is "
        "frozen as the example took it; network.pt2 (torch.export) is the alternative"
    ]


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


def _md_scores(report: Dict[str, Any]) -> List[str]:
    rows = [(k, v) for k, v in report.get("scores", {}).items() if v]
    if not rows:
        return []
    metrics = list(rows[0][1])
    lines = ["| split | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| {k} | " + " | ".join(f"{v.get(m, float('nan')):.4f}" for m in metrics) + " |" for k, v in rows]
    return ["## Scores", "", *lines, ""]


def _md_selection(sel: Optional[Dict[str, Any]]) -> List[str]:
    if not sel:
        return []
    lines = [
        "## Threshold selection (validation split)",
        "",
        f"Rule: {sel['rule']}.",
        "",
        "| rule | compression | val NLL | val accuracy | within tolerance |",
        "|---|---|---|---|---|",
    ]
    for c in sel["candidates"]:
        acc = c["val"].get("accuracy", float("nan"))
        mark = " (chosen)" if c["rule"] == sel["chosen"]["rule"] else ""
        lines.append(
            f"| {c['rule']}{mark} | {c['compression']:.1f}x | {c['val']['nll']:.4f} | {acc:.4f} | "
            f"{c['within_tolerance']} |"
        )
    return lines + [""]


def _markdown(report: Dict[str, Any], compression_text: Optional[str]) -> str:
    d = report["data"]
    head = [
        f"# pyro-prune {report['command']}: {d['name']} with {report['guide']['name']}",
        "",
        f"Data: {d['task']}, {d['sizes']['train']} train / {d['sizes']['val']} validation / {d['sizes']['test']} "
        f"test rows, {len(d['columns'])} features; network {report['network'].get('linear_widths') or ''} "
        f"({report['network']['parameters']} parameters).",
        "",
    ]
    warn = ["## Warnings", "", *[f"- {w}" for w in report["warnings"]], ""] if report["warnings"] else []
    comp = ["## Compression", "", "```", compression_text, "```", ""] if compression_text else []
    speed = report.get("speedup")
    if speed:
        comp += [
            f"CSR inference on the CPU: {speed['speedup']:.2f}x the dense network's speed (median of "
            f"{speed['repeats']} interleaved repeats, quartiles of the ratio {speed['ratio_q25']:.2f}-"
            f"{speed['ratio_q75']:.2f}, batch {speed['batch']}, {speed['threads']} threads).",
            "",
        ]
    files = ["## Files", "", *[f"- `{f}`" for f in report["files"]], ""]
    script = report.get("torchscript")
    if script:
        files += [
            "Load the pruned network without its class: `torch.export.load('network.pt2').module()`, or "
            f"`torch.jit.load('network.ts')` (TorchScript made by torch.jit.{script['method']}).",
            "",
        ]
    return "\n".join(head + warn + _md_scores(report) + comp + _md_selection(report.get("selection")) + files)


def write_reports(folder: str, report: Dict[str, Any], compression_text: Optional[str]) -> None:
    """``report.json`` and ``report.md`` in ``folder``."""
    report["files"] = sorted(set(report.get("files", [])) | {"report.json", "report.md"})
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(_round(report), f, indent=2)
    with open(os.path.join(folder, "report.md"), "w") as f:
        f.write(_markdown(report, compression_text))


def print_summary(report: Dict[str, Any], compression_text: Optional[str], folder: str) -> None:
    """The compression report, the scores and the warnings on stdout (warnings also on stderr)."""
    if compression_text:
        print(compression_text)
    for split, s in report.get("scores", {}).items():
        if s:
            print(f"{split:<16}" + "  ".join(f"{k} {v:.4f}" for k, v in s.items()))
    speed = report.get("speedup")
    if speed:
        print(f"CSR speed-up     {speed['speedup']:.2f}x (CPU, batch {speed['batch']}, {speed['threads']} threads)")
    print("time             " + "  ".join(f"{k} {v:.1f}s" for k, v in report.get("seconds", {}).items()))
    for w in report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"written to {folder}/ (report.md, report.json, posterior.pt, ...)")
