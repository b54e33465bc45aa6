r"""``prune``: read a guide's marginals, apply a rule, export a smaller plain PyTorch model.

The exported module is a copy of the user's network with posterior-mean weights and pruned
entries exactly zero (kept weights keep their posterior mean, bit for bit).  The restricted guide
(:class:`~pyro_prune.pruning.pruned_guide.PrunedGuide`) draws the same posterior with pruned weights fixed at zero,
so ``pp.predict(model, result.guide, x)`` gives the pruned ensemble.  The
:class:`~pyro_prune.pruning.report.CompressionReport` counts kept weights, FLOPs and storage per layer.

``prune`` runs in stages: the guide's marginals are checked against the model's sites
(:func:`_weight_marginals`); a structured rule gives group masks (:func:`_structured_masks`), an unstructured one
weight masks over the chosen sites; the masked posterior-mean network is built (:func:`_masked_network`) and
reported; a structured result is then compacted (:func:`_structured_result`).

**Structured pruning.** With a group rule (:class:`~pyro_prune.rules.GroupLogAlpha`,
:class:`~pyro_prune.rules.GroupSparsity`) whole groups go: input units of Linear layers (a column of the layer and
the producing neuron of the layer before), output channels of Conv layers (a filter, its bias and the next layer's
input channel).  The exported module is then rebuilt physically smaller by :func:`pyro_prune.compact.compact`,
and the report adds the architecture before and after, parameter counts, FLOPs, and a bit precision per layer
(:func:`~pyro_prune.pruning.report.bit_precision`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..marginals import Marginal, marginals
from ..model import BayesianModel
from .compact import compact
from .pruned_guide import PrunedGuide
from .report import CompressionReport, LayerReport, bit_precision, layer_reports
from .rules import GroupRule, Rule, RuleLike, apply_rule

__all__ = ["prune", "PruneResult", "CompressionReport", "LayerReport", "PrunedGuide", "bit_precision"]


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
    #: ``(shape, dtype name)`` of the ``example_input`` given to :func:`prune` (``None``: none given); lets a saved
    #: result be rebuilt with the same FLOP counts (:mod:`pyro_prune.io`)
    example_input: Optional[Tuple[Tuple[int, ...], str]] = None


def prune(
    model: BayesianModel,
    guide: Any,
    rule: RuleLike,
    sites: Optional[Sequence[str]] = None,
    example_input: Optional[torch.Tensor] = None,
) -> PruneResult:
    """Prune ``model``'s weights where ``rule`` says the posterior ``guide`` allows.

    :param model: the :class:`~pyro_prune.BayesianModel` the guide was trained on.
    :param guide: any guide with registered marginals (:func:`pyro_prune.marginals.register_marginals`: ours,
        Pyro's ``AutoNormal``/``AutoDelta``/``AutoContinuous``, or your own).
    :param rule: :class:`~pyro_prune.rules.LogAlpha`, :class:`~pyro_prune.rules.SNR`,
        :class:`~pyro_prune.rules.Sparsity`, a group rule, or a callable ``marginal -> bool keep mask``.
    :param sites: the sites to prune (default: every weight, not bias, of every Linear/Conv layer).
    :param example_input: one input batch, to count convolution FLOPs over output positions.
    :returns: :class:`PruneResult`.
    :raises TypeError: ``model`` is not a ``BayesianModel``, the guide has no registered marginals, or ``rule`` is
        neither a rule nor a callable.
    :raises ValueError: the guide does not match the model's sites, unknown ``sites``, ``sites`` with a group rule.
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(model).__name__}")
    margs = _weight_marginals(model, guide)
    group_masks = _structured_masks(model, rule, margs, sites)
    sites = _prune_sites(model, sites)
    if group_masks is not None:
        masks = _expand_group_masks(model, margs, group_masks)
    else:
        masks = apply_rule(rule, {s: margs[s] for s in sites})
    net = _masked_network(model, margs, masks)
    state = net.state_dict()
    rule_name = repr(rule) if isinstance(rule, Rule) else getattr(rule, "__name__", "callable")
    report = CompressionReport(layer_reports(model, sites, masks, state, example_input), rule=rule_name)
    _warn_fully_pruned(report)
    if group_masks is None:
        result = PruneResult(masks=masks, module=net, guide=PrunedGuide(guide, masks), report=report)
    else:
        result = _structured_result(model, guide, margs, masks, group_masks, net, report, example_input)
    if example_input is not None:
        result.example_input = (tuple(example_input.shape), str(example_input.dtype).replace("torch.", ""))
    return result


def _warn_fully_pruned(report: CompressionReport) -> None:
    """A ``UserWarning`` when whole layers lost every weight (an infinite compression of a useless network)."""
    if report.fully_pruned:
        what = "every weight" if report.kept == 0 else f"every weight of {', '.join(report.fully_pruned)}"
        warnings.warn(
            f"prune: the rule {report.rule} removed {what}: the pruned network's output no longer depends on its "
            "input (compression inf); use a less aggressive rule (e.g. a higher LogAlpha threshold)",
            UserWarning,
            stacklevel=3,
        )


def _weight_marginals(model: BayesianModel, guide: Any) -> Dict[str, Marginal]:
    """The guide's marginals at the model's weight sites (group scales left out), checked site by site."""
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
    return margs


def _structured_masks(
    model: BayesianModel, rule: RuleLike, margs: Dict[str, Marginal], sites: Optional[Sequence[str]]
) -> Optional[Dict[str, torch.Tensor]]:
    """Group masks ``{weight site: (G,) bool}`` of a group rule, ``None`` for an unstructured rule."""
    if not isinstance(rule, GroupRule):
        return None
    if sites is not None:
        raise ValueError("sites cannot be given with a group rule: groups are defined by the model's layers")
    return _group_masks(model, rule, margs)


def _prune_sites(model: BayesianModel, sites: Optional[Sequence[str]]) -> List[str]:
    """``sites``, checked, or every weight (not bias) of every Linear/Conv layer."""
    if sites is None:
        return [n for n, info in model.sites.items() if info.param == "weight" and info.kind != "other"]
    unknown = [s for s in sites if s not in model.sites]
    if unknown:
        raise ValueError(f"sites {unknown} are not weight sites of the model (have {list(model.sites)})")
    return list(sites)


def _masked_network(model: BayesianModel, margs: Dict[str, Marginal], masks: Dict[str, torch.Tensor]) -> nn.Module:
    """A copy of the user's network with posterior-mean weights, pruned entries exactly zero.

    Point estimates (e.g. normalization) and buffers of the model's network are carried over under the same names.
    """
    net = model.template()
    state = net.state_dict()
    for k, v in model.net.state_dict().items():
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
    return net


def _structured_result(
    model: BayesianModel,
    guide: Any,
    margs: Dict[str, Marginal],
    masks: Dict[str, torch.Tensor],
    group_masks: Dict[str, torch.Tensor],
    net: nn.Module,
    report: CompressionReport,
    example_input: Optional[torch.Tensor],
) -> PruneResult:
    """Compact the masked network ``net`` and add the structure figures to ``report``."""
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


def _group_masks(model: BayesianModel, rule: GroupRule, margs: Dict[str, Marginal]) -> Dict[str, torch.Tensor]:
    """The rule's group masks; a layer that would lose every group keeps its most certain one (with a warning)."""
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
                stacklevel=4,  # warn in _group_masks <- _structured_masks <- prune <- the caller
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
