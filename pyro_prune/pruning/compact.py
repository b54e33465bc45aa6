r"""Structured compaction: rebuild a physically smaller PyTorch network from group masks.

Group semantics follow Louizos, Ullrich & Welling (2017), *Bayesian Compression for Deep Learning*:

* an :class:`~torch.nn.Linear` layer :math:`y = W x + b`, :math:`W \in \mathbb{R}^{n_\text{out} \times n_\text{in}}`,
  has one group per **input feature** :math:`j`: the column :math:`W_{:,j}`.  A pruned group (all of
  :math:`W_{:,j} = 0`) makes the producing unit :math:`j` of the previous layer useless, so its row
  :math:`W^{(\ell-1)}_{j,:}` and bias :math:`b^{(\ell-1)}_j` are removed together with the column
  :math:`W_{:,j}`; for the first layer the input feature :math:`j` is dropped
  (:class:`SelectFeatures`);
* a :class:`~torch.nn.Conv1d` / :class:`~torch.nn.Conv2d` layer has one group per **output channel**
  :math:`c`: the filter :math:`W_{c,:,\dots}` and bias :math:`b_c`.  A pruned channel is removed from
  the layer's outputs and from the next layer's inputs (input channel :math:`c` of a following
  convolution, or the block of :math:`k = n_\text{in} / C` contiguous columns
  :math:`W_{:, ck:(c+1)k}` of a Linear layer after a flatten of the ``(C, L)`` / ``(C, H, W)``
  activation).

A unit survives only if its consumer keeps its input **and** (for a convolution) its producer keeps the
channel.  A pruned convolution channel is not silent: its pre-activation is exactly :math:`0`, so
after the chain of elementwise modules and batch norms between the two layers it is the constant
:math:`a_c = f(0)` (e.g. :math:`\sigma(0) = 1/2`, or :math:`\beta_c - \mu_c\gamma_c / \sqrt{\sigma^2_c +
\epsilon}` after a BatchNorm).  When the consumer is a Linear layer the constant is folded into its
bias, exactly:

.. math::

    b' = b + \sum_{c \text{ removed}} a_c \sum_{i=0}^{k-1} W_{:, ck + i}.

When the consumer is a convolution, zero padding makes the constant's contribution position
dependent, so such a channel is kept (masked only, with a warning) unless :math:`a_c = 0` or the
consumer's input channel :math:`c` is all zero anyway.

Dependencies are found with :func:`torch.fx.symbolic_trace` (nested :class:`~torch.nn.Sequential`
containers and custom modules with a traceable ``forward``).  Between two weight layers only
parameter-free elementwise modules / functions, dropout, per-channel BatchNorm, pooling and one
flatten (``nn.Flatten()``, ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``) are followed.  Any other
dataflow (residual additions, concatenations, one output feeding two consumers, untraceable
modules, grouped convolutions, layers called more than once) is not compacted: the zeroed weights
stay in place, the layer is listed in :attr:`CompactResult.masked_only`, and one
:class:`UserWarning` names it.  The compact network computes the same function as the masked one
in evaluation mode (``module.eval()``; batch norms use their running statistics); the function is
never changed silently.  Pruned columns of a Linear layer after a flatten whose channel is otherwise
kept stay in place as zeros (a whole channel block is the smallest removable unit there).

Architecture strings (:func:`architecture`) list the input width and then the output width of every
weight layer in execution order, joined by ``-``; where the layer kind switches between convolution
and Linear, ``|`` and the new layer's input width are inserted: ``"64-300-100-10"`` for an MLP,
``"1-32-64|256-10"`` for two convolutions (1 input channel, 32 and 64 output channels), a flatten to
256 features and a Linear layer with 10 outputs.

FLOPs are counted per example as :math:`2\times` multiply-adds of the weight layers (biases,
activations and norms not counted): :math:`2\,n_\text{in} n_\text{out}` per Linear application and
:math:`2\,(C_\text{in}/g)\,\prod k\;C_\text{out}\prod(\text{output spatial size})` per convolution.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .dataflow import (
    _WEIGHT_TYPES,
    _in_size,
    _kind,
    _Link,
    _out_size,
    _producer_of,
    _spatial_dims,
    _trace,
    _walk_forward,
    _walk_input,
    _weight_order,
)

__all__ = [
    "CompactResult",
    "LayerChange",
    "SelectFeatures",
    "architecture",
    "compact",
    "count_flops",
    "count_params",
]


class SelectFeatures(nn.Module):
    r"""Keep the input features ``index`` of the last dimension: :math:`x \mapsto x_{\dots,\text{index}}`.

    Placed in front of a compact network whose first Linear layer lost input features, so that the
    compact network still accepts the original inputs.

    :param index: kept feature indices (stored as the ``index`` buffer, a ``LongTensor``).
    :param in_features: width of the original input (for ``repr`` only).
    """

    def __init__(self, index: torch.Tensor, in_features: Optional[int] = None) -> None:
        super().__init__()
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long).detach().clone())
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.index.numel()}"


@dataclass
class LayerChange:
    """Input and output width of one weight layer before and after compaction.

    Widths are features for Linear layers and channels for convolutions.
    """

    name: str
    kind: str
    in_before: int
    out_before: int
    in_after: int
    out_after: int


@dataclass
class CompactResult:
    """Result of :func:`compact`.

    :ivar module: the compact network (same dtype / device as the input network).
    :ivar input_index: kept input features when the first Linear layer lost inputs (the module then
        starts with :class:`SelectFeatures`), else ``None``.
    :ivar before: architecture string of the original network (see :func:`architecture`).
    :ivar after: architecture string of the compact network.
    :ivar params_before: parameter count of the original network.
    :ivar params_after: parameter count of the compact network.
    :ivar flops_before: FLOPs per example (multiply-adds × 2) of the original network.
    :ivar flops_after: FLOPs per example of the compact network.
    :ivar masked_only: names of layers whose pruned groups could not all be removed physically (their
        zeroed weights stay in place); one ``UserWarning`` was emitted for them.
    :ivar layers: one :class:`LayerChange` per weight layer, in execution order.
    :ivar reasons: why each layer of ``masked_only`` was only masked.
    """

    module: nn.Module
    input_index: Optional[torch.Tensor]
    before: str
    after: str
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    masked_only: List[str] = field(default_factory=list)
    layers: List[LayerChange] = field(default_factory=list)
    reasons: Dict[str, str] = field(default_factory=dict)

    @property
    def flops_ratio(self) -> float:
        """``flops_before / flops_after``."""
        return self.flops_before / self.flops_after if self.flops_after else math.inf

    @property
    def params_ratio(self) -> float:
        """``params_before / params_after``."""
        return self.params_before / self.params_after if self.params_after else math.inf

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly figures (everything but the module)."""
        return {
            "before": self.before,
            "after": self.after,
            "input_index": None if self.input_index is None else self.input_index.tolist(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "masked_only": list(self.masked_only),
            "reasons": dict(self.reasons),
            "layers": [vars(layer).copy() for layer in self.layers],
        }

    def summary(self) -> str:
        """One line: architecture, parameters and FLOPs before → after."""
        return (
            f"{self.before} -> {self.after}; params {self.params_before} -> {self.params_after} "
            f"({self.params_ratio:.1f}x fewer); FLOPs {self.flops_before} -> {self.flops_after} "
            f"({self.flops_ratio:.1f}x fewer)"
        )


# ----------------------------------------------------------------------------------------------------------------------
# small helpers


def count_params(net: nn.Module) -> int:
    """Number of parameter entries of ``net`` (buffers such as running statistics not counted)."""
    return sum(p.numel() for p in net.parameters())


def architecture(net: nn.Module) -> str:
    """Architecture string of ``net``: input width, then each weight layer's output width.

    Joined by ``-``; where the kind switches between convolution and Linear, ``|`` and the new layer's
    input width are inserted.  Examples: ``"64-300-100-10"``, ``"1-32-64|256-10"``.  A leading
    :class:`SelectFeatures` does not appear (the first width is the first layer's input width).
    """
    modules = dict(net.named_modules())
    parts: List[str] = []
    previous: Optional[bool] = None
    for name in _weight_order(net):
        m = modules[name]
        is_conv = not isinstance(m, nn.Linear)
        if previous is None:
            parts.append(str(_in_size(m)))
        elif is_conv != previous:
            parts.append("|" + str(_in_size(m)))
        parts.append("-" + str(_out_size(m)))
        previous = is_conv
    return "".join(parts)


def _set_modes(net: nn.Module, modes: Optional[Dict[nn.Module, bool]] = None) -> Dict[nn.Module, bool]:
    if modes is None:
        saved = {m: m.training for m in net.modules()}
        net.eval()
        return saved
    for m, training in modes.items():
        m.training = training
    return modes


def _run_counting(net: nn.Module, x: torch.Tensor) -> Tuple[int, Any]:
    """FLOPs per example and output of ``net(x)`` in eval mode, without changing ``net``."""
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError("example_input needs a leading batch dimension with at least one example")
    batch = x.shape[0]
    total = [0]

    def hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        if isinstance(m, nn.Linear):
            total[0] += 2 * m.in_features * out.numel()
        else:
            total[0] += 2 * (m.in_channels // m.groups) * math.prod(m.kernel_size) * out.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, _WEIGHT_TYPES)]
    modes = _set_modes(net)
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        _set_modes(net, modes)
        for h in handles:
            h.remove()
    return total[0] // batch, out


def count_flops(net: nn.Module, example_input: Optional[torch.Tensor] = None) -> int:
    """FLOPs per example (multiply-adds × 2 of the Linear / convolution layers).

    With ``example_input`` (a batch) the layers are measured with forward hooks in eval mode; without
    it every Linear layer counts :math:`2\\,n_\\text{in}n_\\text{out}` once, and a network with
    convolutions raises ``ValueError`` (their cost depends on the spatial size).
    """
    if example_input is not None:
        return _run_counting(net, example_input)[0]
    convs = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    if convs:
        raise ValueError(
            f"counting the FLOPs of convolution layers ({', '.join(convs)}) needs their output size: "
            "pass example_input (a batch of inputs)"
        )
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))


# ----------------------------------------------------------------------------------------------------------------------
# validation


def _validate(
    net: nn.Module, modules: Dict[str, nn.Module], keep: Mapping[str, torch.Tensor]
) -> Dict[str, torch.Tensor]:
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a dict {{module name: bool tensor}}, got {type(keep).__name__}")
    masks: Dict[str, torch.Tensor] = {}
    for name, mask in keep.items():
        if name not in modules:
            raise ValueError(f"keep names {name!r}, which is not a module of the network")
        m = modules[name]
        if not isinstance(m, _WEIGHT_TYPES):
            raise ValueError(f"keep names {name!r}, a {type(m).__name__}; only Linear, Conv1d and Conv2d have groups")
        if hasattr(m, "weight_orig") or hasattr(m, "parametrizations"):
            raise ValueError(
                f"layer {name!r} carries a pruning/parametrization hook; make it permanent first "
                "(torch.nn.utils.prune.remove / parametrize.remove_parametrizations)"
            )
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"keep[{name!r}] must be a bool tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"keep[{name!r}] must have dtype torch.bool, got {mask.dtype}")
        size = m.in_features if isinstance(m, nn.Linear) else m.out_channels
        what = "in_features" if isinstance(m, nn.Linear) else "out_channels"
        if tuple(mask.shape) != (size,):
            raise ValueError(
                f"keep[{name!r}] must have shape ({size},) ({what} of {_kind(m)}), got {tuple(mask.shape)}"
            )
        if not bool(mask.any()):
            raise ValueError(f"keep[{name!r}] prunes every group of {name!r}: no path through the network is left")
        masks[name] = mask.detach().cpu()
    return masks


# ----------------------------------------------------------------------------------------------------------------------
# constants left by pruned units


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


# ----------------------------------------------------------------------------------------------------------------------
# compaction


def _replace(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    old = getattr(module, attr)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(module, attr, value.contiguous())


def _select_out(m: nn.Module, index: torch.Tensor) -> None:
    _replace(m, "weight", m.weight.detach().index_select(0, index))
    if m.bias is not None:
        _replace(m, "bias", m.bias.detach().index_select(0, index))
    if isinstance(m, nn.Linear):
        m.out_features = index.numel()
    else:
        m.out_channels = index.numel()


def _select_in(m: nn.Module, index: torch.Tensor) -> None:
    _replace(m, "weight", m.weight.detach().index_select(1, index))
    if isinstance(m, nn.Linear):
        m.in_features = index.numel()
    else:
        m.in_channels = index.numel()


def _select_norm(bn: nn.Module, index: torch.Tensor) -> None:
    for attr in ("weight", "bias", "running_mean", "running_var"):
        if getattr(bn, attr, None) is not None:
            _replace(bn, attr, getattr(bn, attr).detach().index_select(0, index))
    bn.num_features = index.numel()


def _require_zero(values: torch.Tensor, what: str) -> None:
    if values.numel() and bool(values.detach().ne(0).any()):
        raise ValueError(
            f"{what} are pruned in keep but not zero in the network; compact() expects the pruned groups "
            "zeroed already (weights, and biases of convolution channels)"
        )


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


def _plan_graph(plan: _Plan, graph: fx.Graph, modules: Dict[str, nn.Module], masks: Dict[str, torch.Tensor]) -> None:
    """Find the producer -> consumer links of the traced network and plan every cut."""
    calls: Dict[str, int] = {}
    nodes: Dict[str, fx.Node] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
            nodes[node.target] = node
    links: Dict[str, _Link] = {}
    walk_reason: Dict[str, str] = {}
    for name, m in modules.items():
        if not isinstance(m, _WEIGHT_TYPES):
            continue
        if calls.get(name, 0) != 1:
            walk_reason[name] = _call_reason(name, calls)
        elif getattr(m, "groups", 1) != 1:
            walk_reason[name] = "it is a grouped convolution"
        else:
            link, reason = _walk_forward(name, nodes[name], modules, calls)
            if link is not None:
                links[name] = link
            else:
                walk_reason[name] = reason or "its output is the network output"
    for link in links.values():
        _plan_link(plan, link, modules, masks)
    consumers = {link.consumer for link in links.values()}

    # first layer: pruned input features read straight from the network input
    for name, mask in masks.items():
        m = modules[name]
        if not isinstance(m, nn.Linear) or name in consumers or bool(mask.all()):
            continue
        if calls.get(name, 0) != 1:
            plan.reasons[name] = _call_reason(name, calls)
            continue
        reason = _walk_input(nodes[name], graph, modules)
        if reason is not None:
            upstream = _producer_of(nodes[name], modules)
            if upstream in walk_reason:
                reason = f"the output of {upstream!r} cannot be followed: {walk_reason[upstream]}"
            plan.reasons[name] = f"its pruned inputs cannot be removed: {reason}"
            continue
        _require_zero(m.weight.detach()[:, (~mask).to(m.weight.device)], f"inputs of {name!r}")
        plan.input_index = mask.nonzero().flatten().to(m.weight.device)
        plan.in_index[name] = plan.input_index
        plan.first_layer = name
        plan.handled.add(name)

    for name, mask in masks.items():
        if not bool(mask.all()) and name not in plan.reasons and name not in plan.handled:
            if isinstance(modules[name], nn.Linear):
                plan.reasons[name] = "its pruned inputs cannot be removed"
            else:
                plan.reasons[name] = f"its pruned channels cannot be removed: {walk_reason.get(name, 'unsupported')}"


def _call_reason(name: str, calls: Dict[str, int]) -> str:
    count = calls.get(name, 0)
    if count:
        return f"it is called {count} times in forward"
    opaque = [p for p in calls if name.startswith(p + ".")]
    if opaque:
        return f"it runs inside module {max(opaque, key=len)!r}, which torch.fx could not trace into"
    return "it is not called in forward"


def _plan_link(plan: _Plan, link: _Link, modules: Dict[str, nn.Module], masks: Dict[str, torch.Tensor]) -> None:
    r"""Plan the units removed between producer :math:`P` and consumer :math:`C` of ``link``.

    Unit :math:`u` is *used* unless :math:`C` is Linear with all columns of its block pruned, and
    *alive* unless :math:`P` is a convolution with channel :math:`u` pruned.  Used but dead units carry
    the constant :math:`a_u = f(0)`: dropped if :math:`a_u = 0`, folded into a Linear :math:`C`'s bias,
    dropped if a convolution :math:`C` ignores input channel :math:`u`, else kept (masked only).
    """
    p, c = modules[link.producer], modules[link.consumer]
    n, k = _out_size(p), link.block
    used = torch.ones(n, dtype=torch.bool)
    if isinstance(c, nn.Linear) and link.consumer in masks:
        used = masks[link.consumer].view(n, k).any(1)
        plan.handled.add(link.consumer)
    alive = None if isinstance(p, nn.Linear) else masks.get(link.producer, torch.ones(n, dtype=torch.bool))
    keep_unit = used.clone()
    fold = torch.zeros(n, dtype=torch.bool)
    const: Optional[torch.Tensor] = None
    if alive is not None:
        plan.handled.add(link.producer)
        dead = (~alive) & used
        stuck = torch.zeros(n, dtype=torch.bool)
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
        keep_unit = used & (alive | stuck)
    if not bool(keep_unit.any()):
        raise ValueError(
            f"no unit between {link.producer!r} and {link.consumer!r} survives the masks: "
            "no path through the network is left"
        )
    if bool(keep_unit.all()):
        return
    # the caller must have zeroed what is deleted
    device = p.weight.device
    cw = c.weight.detach()
    if isinstance(c, nn.Linear):
        _require_zero(cw.view(cw.shape[0], n, k)[:, (~used).to(device)], f"inputs of {link.consumer!r}")
    if alive is not None:
        removed_dead = ((~alive) & ~keep_unit).to(device)
        _require_zero(p.weight.detach()[removed_dead], f"channels of {link.producer!r}")
        if p.bias is not None:
            _require_zero(p.bias.detach()[removed_dead], f"channel biases of {link.producer!r}")
    if const is not None and bool(fold.any()):
        f_dev = fold.to(device)
        plan.bias_delta[link.consumer] = cw.view(cw.shape[0], n, k).sum(2)[:, f_dev] @ const[f_dev].to(cw.dtype)
    idx = keep_unit.nonzero().flatten().to(device)
    plan.out_index[link.producer] = idx
    for step in link.steps:
        if step.cat == "norm":
            plan.norm_index[step.node.target] = idx
    if k == 1:
        plan.in_index[link.consumer] = idx
    else:
        plan.in_index[link.consumer] = (idx.view(-1, 1) * k + torch.arange(k, device=device).view(1, -1)).flatten()


def compact(
    net: nn.Module, keep: Dict[str, torch.Tensor], example_input: Optional[torch.Tensor] = None
) -> CompactResult:
    r"""Rebuild ``net`` without its pruned groups: fewer units, channels and input features.

    For every pair of weight layers :math:`P \to C` connected through supported parameter-free
    steps, unit :math:`u` of :math:`P` is removed when :math:`C` does not use it (Linear :math:`C`: all of
    its columns :math:`W^C_{:, uk:(u+1)k}` pruned) or when :math:`P` is a convolution whose channel
    :math:`u` is pruned (:math:`W^P_{u} = 0`, :math:`b^P_u = 0`; its constant activation :math:`f(0)` is
    folded into a Linear consumer's bias).  Removal deletes row :math:`u` (and bias :math:`u`) of
    :math:`P`, channel :math:`u` of every BatchNorm in between, and the corresponding input
    column(s) of :math:`C`.  Pruned input features of the first Linear layer are dropped by a leading
    :class:`SelectFeatures`.

    :param net: a plain network; it is not modified (the result is built on a deep copy).
    :param keep: ``{module name: bool mask}``: over ``in_features`` for an ``nn.Linear``, over
        ``out_channels`` for ``nn.Conv1d`` / ``nn.Conv2d``; ``True`` keeps the group.  Layers not named
        keep every group.  Pruned groups must already be zero in ``net`` (``ValueError`` otherwise).
    :param example_input: a batch of inputs; needed for the FLOPs of convolutions (else
        ``ValueError``).  When given, the compact network's outputs are also checked against
        ``net``'s on it (eval mode) and a ``UserWarning`` reports any mismatch.
    :return: a :class:`CompactResult`; the compact module equals ``net`` as a function in eval mode.
    :raises ValueError: unknown or non-weight layer names, wrong mask shapes, a layer (or a unit
        chain) with every group pruned, weights of pruned groups not zero, convolution FLOPs without
        ``example_input``.
    :raises TypeError: masks that are not bool tensors.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    modules = dict(net.named_modules())
    masks = _validate(net, modules, keep)
    if example_input is None and any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in modules.values()):
        raise ValueError("the network has convolutions: pass example_input (a batch) to count their FLOPs")

    graph, trace_error = _trace(net)
    plan = _Plan()
    if graph is None:
        for name in masks:
            plan.reasons[name] = f"the network could not be traced by torch.fx ({trace_error})"
    else:
        _plan_graph(plan, graph, modules, masks)

    new = copy.deepcopy(net)
    new_modules = dict(new.named_modules())
    with torch.no_grad():
        for name, delta in plan.bias_delta.items():
            m = new_modules[name]
            if m.bias is None:
                m.bias = nn.Parameter(delta.clone(), requires_grad=m.weight.requires_grad)
            else:
                _replace(m, "bias", m.bias.detach() + delta)
        for name, idx in plan.out_index.items():
            _select_out(new_modules[name], idx)
        for name, idx in plan.in_index.items():
            _select_in(new_modules[name], idx)
        for name, idx in plan.norm_index.items():
            _select_norm(new_modules[name], idx)
    module: nn.Module = new
    if plan.input_index is not None:
        module = nn.Sequential(SelectFeatures(plan.input_index, modules[plan.first_layer].in_features), new)

    reasons = plan.reasons
    masked_only = [n for n in masks if n in reasons]
    if masked_only:
        warnings.warn(
            "compact: these layers were only masked (their zeroed groups stay in place): "
            + "; ".join(f"{n!r}: {reasons[n]}" for n in masked_only),
            UserWarning,
            stacklevel=2,
        )

    order = _weight_order(net, graph)
    layers = [
        LayerChange(
            name,
            _kind(modules[name]),
            _in_size(modules[name]),
            _out_size(modules[name]),
            _in_size(new_modules[name]),
            _out_size(new_modules[name]),
        )
        for name in order
    ]
    if example_input is not None:
        flops_before, ref = _run_counting(net, example_input)
        flops_after, out = _run_counting(module, example_input)
        _check_same(ref, out)
    else:
        flops_before, flops_after = count_flops(net), count_flops(module)
    return CompactResult(
        module=module,
        input_index=plan.input_index,
        before=architecture(net),
        after=architecture(module),
        params_before=count_params(net),
        params_after=count_params(module),
        flops_before=flops_before,
        flops_after=flops_after,
        masked_only=masked_only,
        layers=layers,
        reasons={n: reasons[n] for n in masked_only},
    )


def _check_same(ref: Any, out: Any) -> None:
    if not (isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor)):
        return
    if ref.shape != out.shape:
        warnings.warn(f"compact: output shape changed {tuple(ref.shape)} -> {tuple(out.shape)}", UserWarning, 3)
        return
    if not ref.is_floating_point():
        return
    eps = torch.finfo(ref.dtype).eps
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = float((ref - out).abs().max()) if ref.numel() else 0.0
    if not diff <= 1e3 * eps * (1.0 + scale) and not (math.isnan(diff) and bool(ref.isnan().any())):
        warnings.warn(
            f"compact: the compact network's outputs differ from the original's on example_input "
            f"(max |diff| {diff:.3g} at output scale {scale:.3g})",
            UserWarning,
            3,
        )
