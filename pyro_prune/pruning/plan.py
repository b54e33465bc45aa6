r"""What :func:`~pyro_prune.compact.compact` cuts: a :class:`_Plan` of kept indices per module, from the masks.

For every producer -> consumer link found by :mod:`.dataflow`, unit :math:`u` of the producer :math:`P` is *used*
unless the consumer :math:`C` is Linear with all columns of its block pruned, and *alive* unless :math:`P` is a
convolution with channel :math:`u` pruned.  Used but dead units carry the constant :math:`a_u = f(0)`: dropped if
:math:`a_u = 0`, folded into a Linear :math:`C`'s bias, dropped if a convolution :math:`C` ignores input channel
:math:`u`, else kept (masked only).  Pruned input features of a first Linear layer that reads the network input
directly are dropped by a leading feature selection.  Every layer whose pruned groups cannot all be removed gets a
reason (it is then only masked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .dataflow import _WEIGHT_TYPES, _Link, _out_size, _producer_of, _spatial_dims, _walk_forward, _walk_input

__all__ = ["_Plan", "plan_cuts"]


@dataclass
class _Plan:
    """What to cut, by module name: output / input indices to keep, BatchNorm channels, bias folds."""

    out_index: Dict[str, torch.Tensor] = field(default_factory=dict)
    in_index: Dict[str, torch.Tensor] = field(default_factory=dict)
    norm_index: Dict[str, torch.Tensor] = field(default_factory=dict)
    bias_delta: Dict[str, torch.Tensor] = field(default_factory=dict)
    input_index: Optional[torch.Tensor] = None
    first_layer: str = ""
    reasons: Dict[str, str] = field(default_factory=dict)  # masked-only layers
    handled: set = field(default_factory=set)  # layers whose pruned groups are all dealt with


@dataclass
class _Flow:
    """The traced network: module calls, the producer -> consumer links and why other layers have none."""

    graph: fx.Graph
    modules: Dict[str, nn.Module]
    calls: Dict[str, int] = field(default_factory=dict)  # call_module count per module name
    nodes: Dict[str, fx.Node] = field(default_factory=dict)  # the (last) call node per module name
    links: Dict[str, _Link] = field(default_factory=dict)  # by producer
    walk_reason: Dict[str, str] = field(default_factory=dict)  # producers without a link


def plan_cuts(graph: fx.Graph, modules: Dict[str, nn.Module], masks: Dict[str, torch.Tensor]) -> _Plan:
    """Find the producer -> consumer links of the traced network and plan every cut (the plan is host-side: masks
    from a guide on another device are read from CPU copies)."""
    masks = {k: m.detach().cpu() for k, m in masks.items()}
    flow = _trace_links(graph, modules)
    plan = _Plan()
    for link in flow.links.values():
        _plan_link(plan, link, modules, masks)
    consumers = {link.consumer for link in flow.links.values()}
    for name, mask in masks.items():
        if isinstance(modules[name], nn.Linear) and name not in consumers and not bool(mask.all()):
            _plan_first_layer(plan, flow, name, mask)
    for name, mask in masks.items():
        if not bool(mask.all()) and name not in plan.reasons and name not in plan.handled:
            if isinstance(modules[name], nn.Linear):
                plan.reasons[name] = "its pruned inputs cannot be removed"
            else:
                reason = flow.walk_reason.get(name, "unsupported")
                plan.reasons[name] = f"its pruned channels cannot be removed: {reason}"
    return plan


def _trace_links(graph: fx.Graph, modules: Dict[str, nn.Module]) -> _Flow:
    """Count the module calls and follow every weight layer's output to its consumer."""
    flow = _Flow(graph, modules)
    for node in graph.nodes:
        if node.op == "call_module":
            flow.calls[node.target] = flow.calls.get(node.target, 0) + 1
            flow.nodes[node.target] = node
    for name, m in modules.items():
        if not isinstance(m, _WEIGHT_TYPES):
            continue
        if flow.calls.get(name, 0) != 1:
            flow.walk_reason[name] = _call_reason(name, flow.calls)
        elif getattr(m, "groups", 1) != 1:
            flow.walk_reason[name] = "it is a grouped convolution"
        else:
            link, reason = _walk_forward(name, flow.nodes[name], modules, flow.calls)
            if link is not None:
                flow.links[name] = link
            else:
                flow.walk_reason[name] = reason or "its output is the network output"
    return flow


def _plan_first_layer(plan: _Plan, flow: _Flow, name: str, mask: torch.Tensor) -> None:
    """A Linear layer fed by no weight layer: drop its pruned input features if it reads the network input."""
    m = flow.modules[name]
    if flow.calls.get(name, 0) != 1:
        plan.reasons[name] = _call_reason(name, flow.calls)
        return
    reason = _walk_input(flow.nodes[name], flow.graph, flow.modules)
    if reason is not None:
        upstream = _producer_of(flow.nodes[name], flow.modules)
        if upstream in flow.walk_reason:
            reason = f"the output of {upstream!r} cannot be followed: {flow.walk_reason[upstream]}"
        plan.reasons[name] = f"its pruned inputs cannot be removed: {reason}"
        return
    _require_zero(m.weight.detach()[:, (~mask).to(m.weight.device)], f"inputs of {name!r}")
    plan.input_index = mask.nonzero().flatten().to(m.weight.device)
    plan.in_index[name] = plan.input_index
    plan.first_layer = name
    plan.handled.add(name)


def _call_reason(name: str, calls: Dict[str, int]) -> str:
    count = calls.get(name, 0)
    if count:
        return f"it is called {count} times in forward"
    opaque = [p for p in calls if name.startswith(p + ".")]
    if opaque:
        return f"it runs inside module {max(opaque, key=len)!r}, which torch.fx could not trace into"
    return "it is not called in forward"


def _require_zero(values: torch.Tensor, what: str) -> None:
    if values.numel() and bool(values.detach().ne(0).any()):
        raise ValueError(
            f"{what} are pruned in keep but not zero in the network; compact() expects the pruned groups "
            "zeroed already (weights, and biases of convolution channels)"
        )


def _plan_link(plan: _Plan, link: _Link, modules: Dict[str, nn.Module], masks: Dict[str, torch.Tensor]) -> None:
    r"""Plan the units removed between producer :math:`P` and consumer :math:`C` of ``link`` (module docstring)."""
    p, c = modules[link.producer], modules[link.consumer]
    n, k = _out_size(p), link.block
    used = torch.ones(n, dtype=torch.bool)
    if isinstance(c, nn.Linear) and link.consumer in masks:
        used = masks[link.consumer].view(n, k).any(1)
        plan.handled.add(link.consumer)
    alive = None if isinstance(p, nn.Linear) else masks.get(link.producer, torch.ones(n, dtype=torch.bool))
    keep_unit, fold, const = used.clone(), torch.zeros(n, dtype=torch.bool), None
    if alive is not None:
        plan.handled.add(link.producer)
        keep_unit, fold, const = _dead_units(plan, link, p, c, used, alive)
    if not bool(keep_unit.any()):
        raise ValueError(
            f"no unit between {link.producer!r} and {link.consumer!r} survives the masks: "
            "no path through the network is left"
        )
    if bool(keep_unit.all()):
        return
    _check_removed_zero(link, p, c, used, alive, keep_unit)
    _record_cuts(plan, link, p, c, keep_unit, fold, const)


def _dead_units(
    plan: _Plan, link: _Link, p: nn.Module, c: nn.Module, used: torch.Tensor, alive: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Units of a convolution producer to keep, those whose constant is folded, and the constants ``f(0)``."""
    n = used.numel()
    dead = (~alive) & used
    stuck = torch.zeros(n, dtype=torch.bool)
    fold = torch.zeros(n, dtype=torch.bool)
    const: Optional[torch.Tensor] = None
    if bool(dead.any()):
        const, foldable = _constant(link, p)
        live_const = dead & const.detach().cpu().ne(0)
        if isinstance(c, nn.Linear):
            fold = live_const if foldable else fold
            stuck = live_const & ~fold
        else:
            ignored = c.weight.detach().transpose(0, 1).reshape(n, -1).eq(0).all(1).cpu()
            stuck = live_const & ~ignored
        if bool(stuck.any()):
            plan.reasons[link.producer] = (
                f"channels {stuck.nonzero().flatten().tolist()} are kept: their constant activation "
                f"f(0) != 0 reaches {link.consumer!r} in a way that cannot be folded exactly"
            )
    return used & (alive | stuck), fold, const


def _check_removed_zero(
    link: _Link, p: nn.Module, c: nn.Module, used: torch.Tensor, alive: Optional[torch.Tensor], keep: torch.Tensor
) -> None:
    """The caller must have zeroed what is deleted: unused consumer columns, removed dead producer channels."""
    device = p.weight.device
    n, k = used.numel(), link.block
    if isinstance(c, nn.Linear):
        cw = c.weight.detach()
        _require_zero(cw.view(cw.shape[0], n, k)[:, (~used).to(device)], f"inputs of {link.consumer!r}")
    if alive is not None:
        removed_dead = ((~alive) & ~keep).to(device)
        _require_zero(p.weight.detach()[removed_dead], f"channels of {link.producer!r}")
        if p.bias is not None:
            _require_zero(p.bias.detach()[removed_dead], f"channel biases of {link.producer!r}")


def _record_cuts(
    plan: _Plan,
    link: _Link,
    p: nn.Module,
    c: nn.Module,
    keep: torch.Tensor,
    fold: torch.Tensor,
    const: Optional[torch.Tensor],
) -> None:
    """Write the kept indices of producer, norms and consumer, and the consumer's bias fold, into ``plan``."""
    device = p.weight.device
    n, k = keep.numel(), link.block
    cw = c.weight.detach()
    if const is not None and bool(fold.any()):
        f_dev = fold.to(device)
        plan.bias_delta[link.consumer] = cw.view(cw.shape[0], n, k).sum(2)[:, f_dev] @ const[f_dev].to(cw.dtype)
    idx = keep.nonzero().flatten().to(device)
    plan.out_index[link.producer] = idx
    for step in link.steps:
        if step.cat == "norm":
            plan.norm_index[step.node.target] = idx
    if k == 1:
        plan.in_index[link.consumer] = idx
    else:
        plan.in_index[link.consumer] = (idx.view(-1, 1) * k + torch.arange(k, device=device).view(1, -1)).flatten()


def _constant(link: _Link, producer: nn.Module) -> Tuple[torch.Tensor, bool]:
    """Activation reaching the consumer from a producer unit whose pre-activation is exactly 0 (eval mode).

    :return: per-unit constants, and whether they are position independent (foldable).
    """
    w = producer.weight
    n, sd = _out_size(producer), _spatial_dims(producer)
    t = torch.zeros((1, n) + (1,) * sd, dtype=w.dtype, device=w.device)
    foldable = True
    with torch.no_grad():
        for step in link.steps:
            node = step.node
            if step.cat == "elementwise":
                if node.op == "call_module":
                    t = step.module(t)
                elif node.op == "call_function":
                    t = node.target(t, *node.args[1:], **node.kwargs)
                else:
                    t = getattr(t, node.target)(*node.args[1:], **node.kwargs)
            elif step.cat == "norm":
                bn = step.module
                if bn.track_running_stats and bn.running_mean is not None:
                    t = F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
                else:  # batch statistics of a constant channel: normalized value 0
                    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(t.reshape(n))
                    t = beta.reshape(t.shape).to(t.dtype).clone()
            elif step.cat == "pool":
                foldable = foldable and step.preserves_constant
    return t.reshape(n), foldable
