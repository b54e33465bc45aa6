r"""``prune``: read a guide's marginals, apply a rule, export a smaller plain PyTorch model.

The exported module is a copy of the user's network with posterior-mean weights and pruned
entries exactly zero (kept weights keep their posterior mean, bit for bit).  The restricted guide
draws the same posterior with pruned weights fixed at zero, so ``pp.predict(model, result.guide, x)``
gives the pruned ensemble.  The :class:`CompressionReport` counts, per layer and in total:

* kept / total weights, sparsity :math:`1 - \text{kept}/\text{total}`, compression
  :math:`\text{total}/\text{kept}`;
* FLOPs of one example (multiply-adds × 2): dense :math:`2\,n_\text{out}n_\text{in}` vs sparse
  :math:`2\,\text{nnz}` for a Linear layer, times the number of output positions for a convolution;
* storage: dense bytes vs CSR bytes (values + int32 column indices + int32 row pointers of the
  weight reshaped to ``(out, in·k)``), and the dense size after dropping all-zero rows and columns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger

from .guides.base import Marginal, marginals
from .model import BayesianModel
from .rules import Rule, RuleLike, apply_rule

__all__ = ["prune", "PruneResult", "CompressionReport", "LayerReport", "PrunedGuide"]


@dataclass
class LayerReport:
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

    @property
    def sparsity(self) -> float:
        return 1 - self.kept / self.total if self.total else 0.0

    @property
    def compression(self) -> float:
        return self.total / self.kept if self.kept else math.inf

    def to_dict(self) -> Dict[str, Any]:
        d = dict(vars(self))
        d.update(sparsity=self.sparsity, compression=self.compression)
        return d


@dataclass
class CompressionReport:
    """Per-layer and total compression of a pruned network (see the module docstring for definitions)."""

    layers: List[LayerReport] = field(default_factory=list)
    rule: str = ""

    def _sum(self, attr: str) -> int:
        return sum(getattr(layer, attr) for layer in self.layers)

    @property
    def total(self) -> int:
        return self._sum("total")

    @property
    def kept(self) -> int:
        return self._sum("kept")

    @property
    def sparsity(self) -> float:
        return 1 - self.kept / self.total if self.total else 0.0

    @property
    def compression(self) -> float:
        return self.total / self.kept if self.kept else math.inf

    @property
    def flops_reduction(self) -> float:
        sparse = self._sum("sparse_flops")
        return self._sum("dense_flops") / sparse if sparse else math.inf

    def to_dict(self) -> Dict[str, Any]:
        keys = ("total", "kept", "dense_flops", "sparse_flops", "dense_bytes", "csr_bytes", "compact_params")
        total = {k: self._sum(k) for k in keys}
        total.update(sparsity=self.sparsity, compression=self.compression, flops_reduction=self.flops_reduction)
        return {"rule": self.rule, "layers": [layer.to_dict() for layer in self.layers], "total": total}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def __str__(self) -> str:
        head = ("layer", "kept/total", "sparsity", "compress", "FLOPs dense", "FLOPs sparse", "bytes", "CSR bytes")
        rows = [
            (
                layer.name,
                f"{layer.kept}/{layer.total}",
                f"{100 * layer.sparsity:.2f}%",
                f"{layer.compression:.1f}x",
                f"{layer.dense_flops:,}",
                f"{layer.sparse_flops:,}",
                f"{layer.dense_bytes:,}",
                f"{layer.csr_bytes:,}",
            )
            for layer in self.layers
        ]
        rows.append(
            (
                "total",
                f"{self.kept}/{self.total}",
                f"{100 * self.sparsity:.2f}%",
                f"{self.compression:.1f}x",
                f"{self._sum('dense_flops'):,}",
                f"{self._sum('sparse_flops'):,}",
                f"{self._sum('dense_bytes'):,}",
                f"{self._sum('csr_bytes'):,}",
            )
        )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
        out = [f"CompressionReport ({self.rule})" if self.rule else "CompressionReport", line(head)]
        out += [line(r) for r in rows]
        return "\n".join(out)

    __repr__ = __str__


class _MaskedSamples(TorchDistribution):
    """Draws of ``base`` with pruned entries set to zero (for prediction; ``log_prob`` is the base's)."""

    arg_constraints: Dict = {}

    def __init__(self, base: TorchDistribution, keep: torch.Tensor):
        self.base, self.keep = base, keep
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    @property
    def has_rsample(self) -> bool:
        return self.base.has_rsample

    def expand(self, batch_shape, _instance=None):
        return _MaskedSamples(self.base.expand(batch_shape), self.keep)

    def sample(self, sample_shape=torch.Size()):
        value = self.base.sample(sample_shape)
        return value * self.keep.to(value.dtype)

    def rsample(self, sample_shape=torch.Size()):
        value = self.base.rsample(sample_shape)
        return value * self.keep.to(value.dtype)

    def log_prob(self, value):
        return self.base.log_prob(value)


class _MaskValues(Messenger):
    """Replace the distribution of each masked latent site by one whose draws are zero where pruned."""

    def __init__(self, masks: Dict[str, torch.Tensor]):
        super().__init__()
        self.masks = masks

    def _process_message(self, msg: Dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and msg["name"] in self.masks:
            msg["fn"] = _MaskedSamples(msg["fn"], self.masks[msg["name"]])


class PrunedGuide:
    """The posterior of ``guide`` restricted to kept weights: pruned weights are exactly zero in every draw.

    Use it like the guide for prediction (``pp.predict``, ``pyro.infer.Predictive``); it has no
    parameters of its own and is not meant for further training.
    """

    def __init__(self, guide: Any, masks: Dict[str, torch.Tensor]):
        self.guide = guide
        self.masks = masks

    def __call__(self, *args, **kwargs):
        with _MaskValues(self.masks):
            return self.guide(*args, **kwargs)

    def median(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        med = self.guide.median(*args, **kwargs)
        return {k: v * self.masks[k].to(v.dtype) if k in self.masks else v for k, v in med.items()}

    def marginals(self) -> Dict[str, Marginal]:
        out = {}
        for k, m in marginals(self.guide).items():
            if k in self.masks:
                keep = self.masks[k].to(m.loc.dtype)
                la = None if m.log_alpha is None else m.log_alpha.masked_fill(~self.masks[k], math.inf)
                m = Marginal(m.loc * keep, m.scale * keep, la, m.group)
            out[k] = m
        return out


@dataclass
class PruneResult:
    """What :func:`prune` returns.

    :ivar masks: ``{site: bool keep mask}`` shaped like each pruned parameter.
    :ivar module: plain ``nn.Module`` copy of the user's network with posterior-mean weights, pruned
        entries exactly zero (loads and runs without pyro_prune).
    :ivar guide: :class:`PrunedGuide`, the posterior restricted to kept weights.
    :ivar report: :class:`CompressionReport`.
    """

    masks: Dict[str, torch.Tensor]
    module: nn.Module
    guide: PrunedGuide
    report: CompressionReport


def _layer_report(name: str, info, mask: torch.Tensor, positions: int, elem_bytes: int) -> LayerReport:
    total = mask.numel()
    kept = int(mask.sum())
    rows = mask.reshape(mask.shape[0], -1) if mask.dim() > 1 else mask.reshape(-1, 1)
    csr = kept * (elem_bytes + 4) + (rows.shape[0] + 1) * 4
    nz_rows = int(rows.any(1).sum())
    nz_cols = int(rows.any(0).sum())
    return LayerReport(
        name=name,
        kind=info.kind,
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


def prune(
    model: BayesianModel,
    guide: Any,
    rule: RuleLike,
    sites: Optional[Sequence[str]] = None,
    example_input: Optional[torch.Tensor] = None,
) -> PruneResult:
    """Prune ``model``'s weights where ``rule`` says the posterior ``guide`` allows.

    :param model: the :class:`~pyro_prune.BayesianModel` the guide was trained on.
    :param guide: any guide with marginals (ours, Pyro's ``AutoNormal``/``AutoDelta``/``AutoContinuous``).
    :param rule: :class:`~pyro_prune.rules.LogAlpha`, :class:`~pyro_prune.rules.SNR`,
        :class:`~pyro_prune.rules.Sparsity`, or a callable ``marginal -> bool keep mask``.
    :param sites: the sites to prune (default: every weight, not bias, of every Linear/Conv layer).
    :param example_input: one input batch, to count convolution FLOPs over output positions.
    :returns: :class:`PruneResult`.
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(model).__name__}")
    margs = marginals(guide)
    missing = sorted(set(model.sites) - set(margs))
    extra = sorted(set(margs) - set(model.sites))
    if missing or extra:
        raise ValueError(f"guide does not match the model's sites: missing {missing}, unknown {extra}")
    for name, m in margs.items():
        if m.loc.shape != model.sites[name].shape:
            raise ValueError(
                f"guide does not match the model's sites: {name!r} has shape {tuple(m.loc.shape)} in the guide "
                f"and {tuple(model.sites[name].shape)} in the model"
            )
    if sites is None:
        sites = [n for n, info in model.sites.items() if info.param == "weight" and info.kind != "other"]
    else:
        unknown = [s for s in sites if s not in model.sites]
        if unknown:
            raise ValueError(f"sites {unknown} are not weight sites of the model (have {list(model.sites)})")
    masks = apply_rule(rule, {s: margs[s] for s in sites})

    net = model.template()
    state = net.state_dict()
    extra_state = model.net.state_dict()  # point estimates (e.g. normalization) and buffers, same names
    for k, v in extra_state.items():
        if k in state and state[k].shape == v.shape:
            state[k] = v.detach().to(state[k].dtype)
    for name, m in margs.items():
        if name not in state:
            raise ValueError(f"the network has no parameter {name!r} (modules do not match the model's sites)")
        value = m.loc.to(state[name].dtype)
        if name in masks:
            value = torch.where(masks[name], value, torch.zeros_like(value))
        state[name] = value
    net.load_state_dict(state)
    positions = _output_positions(model, example_input)
    layers = []
    for name in sites:
        info = model.sites[name]
        layers.append(_layer_report(name, info, masks[name], positions.get(info.module, 1), state[name].element_size()))
    report = CompressionReport(
        layers, rule=repr(rule) if isinstance(rule, Rule) else getattr(rule, "__name__", "callable")
    )
    return PruneResult(masks=masks, module=net, guide=PrunedGuide(guide, masks), report=report)
