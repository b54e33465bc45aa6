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

**Structured pruning.** With a group rule (:class:`~pyro_prune.rules.GroupLogAlpha`,
:class:`~pyro_prune.rules.GroupSparsity`) whole groups go: input units of Linear layers (a column of the layer and
the producing neuron of the layer before), output channels of Conv layers (a filter, its bias and the next layer's
input channel).  The exported module is then rebuilt physically smaller by :func:`pyro_prune.compact.compact`,
and the report adds the architecture before and after, parameter counts, FLOPs, and a **bit precision per layer**
from the posterior variance (Louizos et al. 2017 §4): quantizing the kept weights of a layer with a fixed-point
step :math:`\Delta_l` equal to their mean posterior standard deviation (a step the posterior cannot tell
apart from its own noise) needs

.. math::

    b_l = 1 + \left\lceil \log_2\!\left(\frac{\max_{i}|\mathbb E w_i|}{\Delta_l} + 1\right) \right\rceil

bits (one sign bit).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger

from ..marginals import Marginal, marginals, register_marginals
from ..model import BayesianModel
from .compact import compact
from .rules import GroupRule, Rule, RuleLike, apply_rule

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

    layers: List[LayerReport] = field(default_factory=list)  # kept/total: entries the rule keeps (masks)
    rule: str = ""
    #: structured pruning only: architecture, parameters, FLOPs before/after, groups kept and bits per layer
    structure: Optional[Dict[str, Any]] = None

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
        out = {"rule": self.rule, "layers": [layer.to_dict() for layer in self.layers], "total": total}
        if self.structure is not None:
            out["structure"] = self.structure
        return out

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
        st = self.structure
        if st is not None:
            out.append(f"architecture {st['before']} -> {st['after']}")
            out.append(
                f"parameters {st['params_before']:,} -> {st['params_after']:,} "
                f"({st['params_before'] / max(st['params_after'], 1):.1f}x), FLOPs {st['flops_before']:,} -> "
                f"{st['flops_after']:,} ({st['flops_before'] / max(st['flops_after'], 1):.1f}x)"
            )
            shapes = ", ".join(
                f"{c['name']} {c['in_before']}x{c['out_before']}->{c['in_after']}x{c['out_after']}"
                for c in st.get("layers", ())
            )
            out.append(f"layers (in x out) {shapes}")
            groups = ", ".join(f"{k}: {v[0]}/{v[1]}" for k, v in st["groups_kept"].items())
            out.append(f"groups kept {groups}")
            out.append("bits per layer " + ", ".join(f"{k}: {v}" for k, v in st["bits"].items()))
            if st.get("masked_only"):
                out.append(f"masked only (not compacted): {st['masked_only']}")
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
    :ivar group_masks: (structured rules) groups kept per weight site.
    :ivar masked_module: (structured rules) full-size network with pruned groups zeroed.
    :ivar compact: (structured rules) the compaction details (architecture, indices kept).
    """

    masks: Dict[str, torch.Tensor]
    module: nn.Module
    guide: PrunedGuide
    report: CompressionReport
    #: structured pruning only: ``{weight site: (G,) bool}`` groups kept per layer
    group_masks: Optional[Dict[str, torch.Tensor]] = None
    #: structured pruning only: the full-size network with pruned groups zeroed (``module`` is the compact one)
    masked_module: Optional[nn.Module] = None
    #: structured pruning only: the :class:`~pyro_prune.compact.CompactResult`
    compact: Optional[Any] = None


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
    margs = {k: v for k, v in marginals(guide).items() if k not in set(model.scale_sites)}
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
    group_masks = None
    if isinstance(rule, GroupRule):
        if sites is not None:
            raise ValueError("sites cannot be given with a group rule: groups are defined by the model's layers")
        group_masks = _group_masks(model, rule, margs)
    if sites is None:
        sites = [n for n, info in model.sites.items() if info.param == "weight" and info.kind != "other"]
    else:
        unknown = [s for s in sites if s not in model.sites]
        if unknown:
            raise ValueError(f"sites {unknown} are not weight sites of the model (have {list(model.sites)})")
    if group_masks is not None:
        masks = _expand_group_masks(model, margs, group_masks)
    else:
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
    if group_masks is None:
        return PruneResult(masks=masks, module=net, guide=PrunedGuide(guide, masks), report=report)
    keep = {model.sites[w].module: g for w, g in group_masks.items()}
    small = compact(net, keep, example_input=example_input)
    report.structure = {
        "before": small.before,
        "after": small.after,
        "params_before": small.params_before,
        "params_after": small.params_after,
        "flops_before": small.flops_before,
        "flops_after": small.flops_after,
        "groups_kept": {w: (int(g.sum()), g.numel()) for w, g in group_masks.items()},
        "bits": {w: bit_precision(margs[w], masks[w]) for w in group_masks},
        "masked_only": list(small.masked_only),
        "layers": [vars(change).copy() for change in small.layers],
    }
    return PruneResult(
        masks=masks,
        module=small.module,
        guide=PrunedGuide(guide, masks),
        report=report,
        group_masks=group_masks,
        masked_module=net,
        compact=small,
    )


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


def _group_masks(model: BayesianModel, rule: GroupRule, margs: Dict[str, Marginal]) -> Dict[str, torch.Tensor]:
    weights = [info.weight for info in model.group_sites.values()]  # module order: group rules walk the chain
    if not weights:
        raise ValueError(
            f"{rule!r} is a structured rule: the model needs group scales (bayesianize with pp.GroupPrior(...)) "
            "and a group guide (pp.AutoGroupSparse)"
        )
    out = rule.group_masks({w: margs[w] for w in weights})
    for w, g in out.items():
        if not bool(g.any()):
            la = margs[w].group.log_alpha
            g = torch.zeros_like(g)
            g[int(la.argmin())] = True
            warnings.warn(
                f"{rule!r} removes every group of {w!r}; keeping its most certain group ({int(la.argmin())}) so the "
                "network keeps a path from input to output",
                stacklevel=3,
            )
            out[w] = g
    return out


def _expand_group_masks(
    model: BayesianModel, margs: Dict[str, Marginal], group_masks: Dict[str, torch.Tensor]
) -> Dict[str, torch.Tensor]:
    """Weight masks from group masks; conv output channels also mask their bias."""
    masks = {}
    for info in model.group_sites.values():
        g = group_masks[info.weight]
        shape = [1] * len(model.sites[info.weight].shape)
        shape[info.axis] = -1
        masks[info.weight] = g.reshape(shape).expand(model.sites[info.weight].shape).clone()
        if info.axis == 0 and info.bias is not None:
            masks[info.bias] = g.clone()
    return masks


register_marginals(PrunedGuide, PrunedGuide.marginals)
