r"""Structured compaction: rebuild a physically smaller PyTorch network from group masks.

Group semantics follow Louizos, Ullrich & Welling (2017), *Bayesian Compression for Deep Learning*:

* an :class:`~torch.nn.Linear` layer :math:`y = W x + b`, :math:`W \in \mathbb{R}^{n_\text{out} \times n_\text{in}}`,
  has one group per **input feature** :math:`j`: the column :math:`W_{:,j}`.  A pruned group (all of
  :math:`W_{:,j} = 0`) makes the producing unit :math:`j` of the previous layer useless, so its row
  :math:`W^{(\ell-1)}_{j,:}` and bias :math:`b^{(\ell-1)}_j` are removed together with the column
  :math:`W_{:,j}`; for the first layer the input feature :math:`j` is dropped (:func:`select_inputs`);
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

The cut plan is made in :mod:`.plan` from the links :mod:`.dataflow` finds; architecture strings, parameter and
FLOP counts come from :mod:`.counting` (re-exported here).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.fx as fx
from torch import nn

from .counting import architecture, count_flops, count_params, run_counting
from .dataflow import _WEIGHT_TYPES, _in_size, _kind, _out_size, _trace, _weight_order
from .plan import _Plan, plan_cuts

__all__ = [
    "CompactResult",
    "LayerChange",
    "select_inputs",
    "architecture",
    "compact",
    "count_flops",
    "count_params",
]


def select_inputs(net: nn.Module, index: torch.Tensor) -> fx.GraphModule:
    r"""``x \mapsto \text{net}(x_{\dots,\text{index}})``: the compact network behind a selection of input features.

    Placed in front of a compact network whose first Linear layer lost input features, so that it still accepts
    the original inputs. It is a :class:`torch.fx.GraphModule` (one ``torch.index_select`` on the last dimension,
    then ``net`` as the submodule ``net``; the kept indices are the ``input_index`` buffer), so the compact network
    is made of torch modules only: it pickles with ``torch.save`` and loads where pyro_prune is not installed,
    exports with ``torch.export.export`` and ``torch.jit.script``/``trace``.

    Why a selection and not the alternatives: keeping the first layer's full ``in_features`` with zero columns
    would spend the pruned inputs' multiply-adds at run time, and a fixed 0/1 ``nn.Linear`` in front would add
    :math:`2\,n_\text{in} k` FLOPs per example; an index selection costs no FLOPs, so the counted FLOPs
    (:func:`count_flops`, weight layers only) are the FLOPs the network spends.

    :param net: the compact network, taking the ``len(index)`` kept features.
    :param index: kept feature indices of the original input (``LongTensor``, ``(k,)``).
    :returns: the network of the original input width (``net`` is its submodule ``net``, not copied).
    """
    root = nn.Module()
    params = list(net.parameters())
    device = params[0].device if params else None  # the network's (a buffer moves with .to() after this)
    root.register_buffer("input_index", torch.as_tensor(index, dtype=torch.long, device=device).detach().clone())
    root.add_module("net", net)
    graph = fx.Graph()
    x = graph.placeholder("x")
    selected = graph.call_function(torch.index_select, (x, -1, graph.get_attr("input_index")))
    graph.output(graph.call_module("net", (selected,)))
    return fx.GraphModule(root, graph, class_name="SelectInputs")


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
    :ivar input_index: kept input features when the first Linear layer lost inputs (the module is then
        :func:`select_inputs` in front of the compact layers), else ``None``.
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
    column(s) of :math:`C`.  Pruned input features of the first Linear layer are dropped by an index selection
    in front (:func:`select_inputs`). The result is made of torch modules only (``net``'s classes, ``torch.fx``).

    Stages: validate ``keep``; trace and plan the cuts (:func:`~pyro_prune.pruning.plan.plan_cuts`); apply them to a
    deep copy (:func:`_apply_plan`); warn about layers only masked; count widths, parameters and FLOPs.

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
    graph, plan = _plan(net, modules, masks)
    new = _apply_plan(net, plan)
    module: nn.Module = new
    if plan.input_index is not None:
        module = select_inputs(new, plan.input_index)
    masked_only = _warn_masked_only(masks, plan.reasons)
    flops_before, flops_after = _flops(net, module, example_input)
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
        layers=_layer_changes(net, graph, modules, dict(new.named_modules())),
        reasons={n: plan.reasons[n] for n in masked_only},
    )


def _plan(
    net: nn.Module, modules: Dict[str, nn.Module], masks: Dict[str, torch.Tensor]
) -> Tuple[Optional[fx.Graph], _Plan]:
    """The traced graph (``None`` if tracing fails) and the cut plan; untraceable networks are only masked."""
    graph, trace_error = _trace(net)
    if graph is not None:
        return graph, plan_cuts(graph, modules, masks)
    plan = _Plan()
    for name in masks:
        plan.reasons[name] = f"the network could not be traced by torch.fx ({trace_error})"
    return graph, plan


def _apply_plan(net: nn.Module, plan: _Plan) -> nn.Module:
    """A deep copy of ``net`` with the plan's bias folds and index selections applied."""
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
    return new


def _warn_masked_only(masks: Dict[str, torch.Tensor], reasons: Dict[str, str]) -> List[str]:
    """The masked layers that were only masked, with one ``UserWarning`` naming them and why."""
    masked_only = [n for n in masks if n in reasons]
    if masked_only:
        warnings.warn(
            "compact: these layers were only masked (their zeroed groups stay in place): "
            + "; ".join(f"{n!r}: {reasons[n]}" for n in masked_only),
            UserWarning,
            stacklevel=3,  # warn in _warn_masked_only <- compact <- the caller
        )
    return masked_only


def _layer_changes(
    net: nn.Module, graph: Optional[fx.Graph], modules: Dict[str, nn.Module], new_modules: Dict[str, nn.Module]
) -> List[LayerChange]:
    """Widths of every weight layer before and after, in execution order."""
    return [
        LayerChange(
            name,
            _kind(modules[name]),
            _in_size(modules[name]),
            _out_size(modules[name]),
            _in_size(new_modules[name]),
            _out_size(new_modules[name]),
        )
        for name in _weight_order(net, graph)
    ]


def _flops(net: nn.Module, module: nn.Module, example_input: Optional[torch.Tensor]) -> Tuple[int, int]:
    """FLOPs per example before and after; with ``example_input`` the outputs are also compared."""
    if example_input is None:
        return count_flops(net), count_flops(module)
    flops_before, ref = run_counting(net, example_input)
    flops_after, out = run_counting(module, example_input)
    _check_same(ref, out)
    return flops_before, flops_after


def _check_same(ref: Any, out: Any) -> None:
    if not (isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor)):
        return
    if ref.shape != out.shape:
        warnings.warn(f"compact: output shape changed {tuple(ref.shape)} -> {tuple(out.shape)}", UserWarning, 4)
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
            4,  # warn in _check_same <- _flops <- compact <- the caller
        )
