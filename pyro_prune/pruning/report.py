r"""The :class:`CompressionReport` of a pruned network: per layer and in total.

* kept / total weights, sparsity :math:`1 - \text{kept}/\text{total}`, compression :math:`\text{total}/\text{kept}`;
* FLOPs of one example (multiply-adds × 2): dense :math:`2\,n_\text{out}n_\text{in}` vs sparse
  :math:`2\,\text{nnz}` for a Linear layer, times the number of output positions for a convolution;
* storage: dense bytes vs CSR bytes (values + int32 column indices + int32 row pointers of the
  weight reshaped to ``(out, in·k)``), and the dense size after dropping all-zero rows and columns.

For structured pruning the report adds the architecture before and after, parameter counts, FLOPs and a **bit
precision per layer** from the posterior variance (Louizos et al. 2017 §4): quantizing the kept weights of a layer
with a fixed-point step :math:`\Delta_l` equal to their mean posterior standard deviation (a step the posterior
cannot tell apart from its own noise) needs

.. math::

    b_l = 1 + \left\lceil \log_2\!\left(\frac{\max_{i}|\mathbb E w_i|}{\Delta_l} + 1\right) \right\rceil

bits (one sign bit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..marginals import Marginal
from ..model import BayesianModel

__all__ = ["LayerReport", "CompressionReport", "bit_precision", "layer_reports"]

_HEAD = ("layer", "kept/total", "sparsity", "compress", "FLOPs dense", "FLOPs sparse", "bytes", "CSR bytes")


class _Ratios:
    """Sparsity and compression from ``total`` and ``kept`` (of one layer, or summed over layers)."""

    total: int
    kept: int

    @property
    def sparsity(self) -> float:
        return 1 - self.kept / self.total if self.total else 0.0

    @property
    def compression(self) -> float:
        return self.total / self.kept if self.kept else math.inf


@dataclass
class LayerReport(_Ratios):
    """Compression figures of one weight site."""

    name: str
    kind: str
    total: int
    kept: int
    dense_flops: int
    sparse_flops: int
    dense_bytes: int
    csr_bytes: int
    compact_params: int

    def to_dict(self) -> Dict[str, Any]:
        d = dict(vars(self))
        d.update(sparsity=self.sparsity, compression=self.compression)
        return d


def _row(name: str, kept: int, total: int, sparsity: float, compression: float, sums: Sequence[int]) -> Tuple:
    """One line of the report table: name, kept/total, sparsity, compression, then FLOPs and bytes."""
    return (name, f"{kept}/{total}", f"{100 * sparsity:.2f}%", f"{compression:.1f}x", *(f"{v:,}" for v in sums))


def _table(rows: List[Tuple]) -> List[str]:
    """``rows`` under the header, the first column left-aligned and the others right-aligned."""
    widths = [max(len(r[i]) for r in [_HEAD, *rows]) for i in range(len(_HEAD))]

    def line(r: Tuple) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return [line(r) for r in [_HEAD, *rows]]


def _structure_lines(st: Dict[str, Any]) -> List[str]:
    """The structured-pruning lines: architecture, parameters and FLOPs, layer shapes, groups, bits."""
    shapes = ", ".join(
        f"{c['name']} {c['in_before']}x{c['out_before']}->{c['in_after']}x{c['out_after']}"
        for c in st.get("layers", ())
    )
    out = [
        f"architecture {st['before']} -> {st['after']}",
        f"parameters {st['params_before']:,} -> {st['params_after']:,} "
        f"({st['params_before'] / max(st['params_after'], 1):.1f}x), FLOPs {st['flops_before']:,} -> "
        f"{st['flops_after']:,} ({st['flops_before'] / max(st['flops_after'], 1):.1f}x)",
        f"layers (in x out) {shapes}",
        "groups kept " + ", ".join(f"{k}: {v[0]}/{v[1]}" for k, v in st["groups_kept"].items()),
        "bits per layer " + ", ".join(f"{k}: {v}" for k, v in st["bits"].items()),
    ]
    if st.get("masked_only"):
        out.append(f"masked only (not compacted): {st['masked_only']}")
    return out


@dataclass
class CompressionReport(_Ratios):
    """Per-layer and total compression of a pruned network (see the module docstring for definitions)."""

    layers: List[LayerReport] = field(default_factory=list)  # kept/total: entries the rule keeps (masks)
    rule: str = ""
    #: structured pruning only: architecture, parameters, FLOPs before/after, groups kept and bits per layer
    structure: Optional[Dict[str, Any]] = None

    _SUMS = ("dense_flops", "sparse_flops", "dense_bytes", "csr_bytes")

    def _sum(self, attr: str) -> int:
        return sum(getattr(layer, attr) for layer in self.layers)

    @property
    def total(self) -> int:
        return self._sum("total")

    @property
    def kept(self) -> int:
        return self._sum("kept")

    @property
    def fully_pruned(self) -> List[str]:
        """Layers whose every weight was removed: the network's output no longer depends on its input there."""
        return [layer.name for layer in self.layers if layer.total and not layer.kept]

    @property
    def flops_reduction(self) -> float:
        sparse = self._sum("sparse_flops")
        return self._sum("dense_flops") / sparse if sparse else math.inf

    def to_dict(self) -> Dict[str, Any]:
        keys = ("total", "kept", "dense_flops", "sparse_flops", "dense_bytes", "csr_bytes", "compact_params")
        total = {k: self._sum(k) for k in keys}
        total.update(sparsity=self.sparsity, compression=self.compression, flops_reduction=self.flops_reduction)
        out = {"rule": self.rule, "layers": [layer.to_dict() for layer in self.layers], "total": total}
        out["fully_pruned"] = self.fully_pruned
        if self.structure is not None:
            out["structure"] = self.structure
        return out

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def __str__(self) -> str:
        rows = [
            _row(r.name, r.kept, r.total, r.sparsity, r.compression, [getattr(r, k) for k in self._SUMS])
            for r in self.layers
        ]
        rows.append(
            _row("total", self.kept, self.total, self.sparsity, self.compression, [self._sum(k) for k in self._SUMS])
        )
        out = [f"CompressionReport ({self.rule})" if self.rule else "CompressionReport", *_table(rows)]
        if self.fully_pruned:
            out.append(
                f"every weight of {', '.join(self.fully_pruned)} was removed: the pruned network's output no longer "
                "depends on its input (compression inf)"
            )
        if self.structure is not None:
            out += _structure_lines(self.structure)
        return "\n".join(out)

    __repr__ = __str__


def bit_precision(marginal: Marginal, keep: Optional[torch.Tensor] = None) -> int:
    r"""Fixed-point bits for a layer's kept weights with step :math:`\Delta` = their mean posterior std (see the
    module docstring); 32 when the posterior has no variance (point estimates)."""
    loc, scale = marginal.loc, marginal.scale
    if keep is not None:
        loc, scale = loc[keep], scale[keep]
    if loc.numel() == 0:
        return 0
    step = float(scale.double().mean())
    if not step > 0:
        return 32
    return min(32, 1 + math.ceil(math.log2(float(loc.abs().max()) / step + 1)))


def _layer_report(name: str, kind: str, mask: torch.Tensor, positions: int, elem_bytes: int) -> LayerReport:
    total = mask.numel()
    kept = int(mask.sum())
    rows = mask.reshape(mask.shape[0], -1) if mask.dim() > 1 else mask.reshape(-1, 1)
    csr = kept * (elem_bytes + 4) + (rows.shape[0] + 1) * 4
    nz_rows = int(rows.any(1).sum())
    nz_cols = int(rows.any(0).sum())
    return LayerReport(
        name=name,
        kind=kind,
        total=total,
        kept=kept,
        dense_flops=2 * total * positions,
        sparse_flops=2 * kept * positions,
        dense_bytes=total * elem_bytes,
        csr_bytes=csr,
        compact_params=nz_rows * nz_cols,
    )


def _output_positions(model: BayesianModel, example_input: Optional[torch.Tensor]) -> Dict[str, int]:
    """Number of output positions per layer (1 for Linear; spatial size for conv), from one forward pass."""
    if example_input is None:
        return {}
    sizes: Dict[str, int] = {}
    net = model.template()
    hooks = []
    for mname, module in net.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            hooks.append(
                module.register_forward_hook(
                    lambda m, i, o, mname=mname: sizes.__setitem__(mname, int(math.prod(o.shape[2:])))
                )
            )
    with torch.no_grad():
        net(example_input[:1].to(next(net.parameters()).device))
    for h in hooks:
        h.remove()
    return sizes


def layer_reports(
    model: BayesianModel,
    sites: Sequence[str],
    masks: Dict[str, torch.Tensor],
    state: Dict[str, torch.Tensor],
    example_input: Optional[torch.Tensor] = None,
) -> List[LayerReport]:
    """One :class:`LayerReport` per pruned site, its storage counted in the dtype of ``state[site]``."""
    positions = _output_positions(model, example_input)
    out = []
    for name in sites:
        info = model.sites[name]
        out.append(
            _layer_report(name, info.kind, masks[name], positions.get(info.module, 1), state[name].element_size())
        )
    return out
