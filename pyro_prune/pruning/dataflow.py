r"""Dataflow analysis on the :mod:`torch.fx` graph of a network, for :mod:`pyro_prune.compact`.

For each weight layer (Linear, Conv1d, Conv2d) it finds the single consumer weight layer that its output
reaches through parameter-free elementwise steps, dropout, per-channel BatchNorm, pooling and at most one
flatten (a :class:`_Link`), or the reason why the dataflow is not supported (several users, values
combined with others, untraceable modules, grouped or repeated layers, ...).  It also gives the weight
layers' execution order and checks that a first layer reads the network's only input.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

_WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)

_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Tanhshrink,
)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_POOL_MODULES = {
    nn.MaxPool1d: 1,
    nn.AvgPool1d: 1,
    nn.AdaptiveAvgPool1d: 1,
    nn.AdaptiveMaxPool1d: 1,
    nn.MaxPool2d: 2,
    nn.AvgPool2d: 2,
    nn.AdaptiveAvgPool2d: 2,
    nn.AdaptiveMaxPool2d: 2,
}


def _functions(*names: str) -> Dict[Any, str]:
    out: Dict[Any, str] = {}
    for name in names:
        for namespace in (F, torch):
            fn = getattr(namespace, name, None)
            if fn is not None:
                out[fn] = name
    return out


_ELEMENTWISE_FUNCTIONS = _functions(
    "relu", "relu_", "relu6", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "elu", "selu", "celu",
    "softplus", "mish", "hardtanh", "hardswish", "hardsigmoid", "logsigmoid", "softsign", "tanhshrink",
)  # fmt: skip
_IDENTITY_FUNCTIONS = _functions("dropout", "dropout1d", "dropout2d", "alpha_dropout", "feature_alpha_dropout")
_POOL_FUNCTIONS = {
    F.max_pool1d: (1, True),
    F.adaptive_avg_pool1d: (1, True),
    F.adaptive_max_pool1d: (1, True),
    F.avg_pool1d: (1, False),  # constant-preserving only without padding: treated conservatively
    F.max_pool2d: (2, True),
    F.adaptive_avg_pool2d: (2, True),
    F.adaptive_max_pool2d: (2, True),
    F.avg_pool2d: (2, False),
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_"}
_IDENTITY_METHODS = {"contiguous"}


# ----------------------------------------------------------------------------------------------------------------------
# small helpers


def _kind(m: nn.Module) -> str:
    return next(t.__name__ for t in _WEIGHT_TYPES if isinstance(m, t))


def _in_size(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _out_size(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _spatial_dims(m: nn.Module) -> int:
    return 0 if isinstance(m, nn.Linear) else (1 if isinstance(m, nn.Conv1d) else 2)


def _trace(net: nn.Module) -> Tuple[Optional[fx.Graph], Optional[str]]:
    """Trace ``net`` with torch.fx; for a Sequential that fails, retry with its children as opaque leaves."""
    try:
        return fx.Tracer().trace(net), None
    except Exception as err:  # noqa: BLE001 - any tracing failure means "dataflow unknown"
        error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    if isinstance(net, nn.Sequential):

        class _Leaves(fx.Tracer):
            def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
                return not isinstance(m, nn.Sequential)

        try:
            return _Leaves().trace(net), None
        except Exception:  # noqa: BLE001
            pass
    return None, error


def _weight_order(net: nn.Module, graph: Optional[fx.Graph] = None) -> List[str]:
    """Names of the weight layers in execution order (fx order if it sees them all, else registration order)."""
    modules = dict(net.named_modules())
    if graph is None:
        graph, _ = _trace(net)
    registered = [name for name, m in modules.items() if isinstance(m, _WEIGHT_TYPES)]
    if graph is not None:
        order: List[str] = []
        for node in graph.nodes:
            if node.op == "call_module" and isinstance(modules.get(node.target), _WEIGHT_TYPES):
                if node.target not in order:
                    order.append(node.target)
        if sorted(order) == sorted(registered):
            return order
    return registered


# ----------------------------------------------------------------------------------------------------------------------
# dataflow analysis on the fx graph


@dataclass
class _Step:
    node: fx.Node
    cat: str  # "elementwise" | "identity" | "norm" | "pool" | "flatten"
    module: Optional[nn.Module] = None
    preserves_constant: bool = True


@dataclass
class _Link:
    producer: str
    consumer: str
    steps: List[_Step]
    block: int  # consumer input features per producer unit (1 unless conv -> flatten -> Linear)


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"{node.op} {node.target}"


def _is_batch_value(value: Any) -> bool:
    """``x.size(0)``, ``x.shape[0]`` or ``x.size()[0]`` (unchanged by compaction)."""
    if not isinstance(value, fx.Node):
        return False
    if value.op == "call_method" and value.target == "size":
        return value.args[1:] == (0,) or value.kwargs == {"dim": 0}
    if value.op == "call_function" and value.target is operator.getitem and value.args[1] == 0:
        src = value.args[0]
        return isinstance(src, fx.Node) and (
            (src.op == "call_function" and src.target is getattr and src.args[1] == "shape")
            or (src.op == "call_method" and src.target == "size" and len(src.args) == 1 and not src.kwargs)
        )
    return False


def _is_batch_query(user: fx.Node) -> bool:
    """A user of an activation that only reads its batch size."""
    if _is_batch_value(user):
        return True
    is_shape = (user.op == "call_function" and user.target is getattr and user.args[1] == "shape") or (
        user.op == "call_method" and user.target == "size" and len(user.args) == 1 and not user.kwargs
    )
    return is_shape and len(user.users) > 0 and all(_is_batch_value(u) for u in user.users)


def _real_users(node: fx.Node) -> List[fx.Node]:
    return [u for u in node.users if not _is_batch_query(u)]


def _flatten_ok(node: fx.Node, modules: Dict[str, nn.Module]) -> bool:
    """Whether ``node`` flattens all dimensions after the batch dimension."""
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    is_flatten = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )
    if is_flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    is_view = (node.op == "call_method" and node.target in ("view", "reshape")) or (
        node.op == "call_function" and node.target is torch.reshape
    )
    if is_view and not node.kwargs:
        shape = list(node.args[1:])
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = list(shape[0])
        return (
            len(shape) == 2
            and shape[1] == -1
            and (_is_batch_value(shape[0]) or (isinstance(shape[0], int) and shape[0] > 0))
        )
    return False


def _classify(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[_Step]:
    """Category of a node that may sit between two weight layers, or ``None``."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, _ELEMENTWISE_MODULES):
            return _Step(node, "elementwise", m)
        if isinstance(m, _IDENTITY_MODULES):
            return _Step(node, "identity", m)
        if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
            return _Step(node, "norm", m)
        if type(m) in _POOL_MODULES:
            ok = True
            if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):  # zero padding counted in the mean breaks constants
                pad = m.padding if isinstance(m.padding, (tuple, list)) else (m.padding,)
                no_pad = not any(pad) or not m.count_include_pad
                ok = no_pad and not m.ceil_mode and getattr(m, "divisor_override", None) is None
            return _Step(node, "pool", m, preserves_constant=ok)
        if _flatten_ok(node, modules):
            return _Step(node, "flatten", m)
        return None
    if node.op == "call_function":
        if node.target in _ELEMENTWISE_FUNCTIONS:
            return _Step(node, "elementwise")
        if node.target in _IDENTITY_FUNCTIONS:
            return _Step(node, "identity")
        if node.target in _POOL_FUNCTIONS:
            return _Step(node, "pool", preserves_constant=_POOL_FUNCTIONS[node.target][1])
    if node.op == "call_method":
        if node.target in _ELEMENTWISE_METHODS:
            return _Step(node, "elementwise")
        if node.target in _IDENTITY_METHODS:
            return _Step(node, "identity")
    if node.op in ("call_function", "call_method") and _flatten_ok(node, modules):
        return _Step(node, "flatten")
    return None


def _pool_dims(step: _Step) -> int:
    if step.module is not None:
        return _POOL_MODULES[type(step.module)]
    return _POOL_FUNCTIONS[step.node.target][0]


def _single_input(node: fx.Node, source: fx.Node) -> bool:
    """``source`` is ``node``'s first argument and no other graph value flows into ``node``."""
    if not node.args or node.args[0] is not source:
        return False
    others: List[fx.Node] = []
    fx.node.map_arg((node.args[1:], node.kwargs), lambda n: others.append(n))
    return all(_is_batch_value(n) for n in others)


def _walk_forward(
    name: str, node: fx.Node, modules: Dict[str, nn.Module], calls: Dict[str, int]
) -> Tuple[Optional[_Link], Optional[str]]:
    """Follow the output of weight layer ``name`` to the next weight layer.

    Each user along the way is either the consumer (:func:`_link_to`) or a step that must fit the activation
    (:func:`_step_error`).

    :return: ``(link, None)``, ``(None, None)`` when the output reaches the network output, or
        ``(None, reason)`` when the dataflow is not supported.
    """
    producer = modules[name]
    n, sd = _out_size(producer), _spatial_dims(producer)
    steps: List[_Step] = []
    flattened = False
    cur = node
    while True:
        users = _real_users(cur)
        if len(users) != 1:
            where = "its output" if cur is node else f"the output of {_describe(cur)} after it"
            return None, f"{where} feeds {len(users)} operations"
        user = users[0]
        if user.op == "output":
            return None, None
        if not _single_input(user, cur):
            return None, f"{_describe(user)} combines its output with other values"
        target = modules.get(user.target) if user.op == "call_module" else None
        if isinstance(target, _WEIGHT_TYPES):
            return _link_to(_Link(name, user.target, steps, 1), user, target, n, sd, flattened, calls)
        step = _classify(user, modules)
        if step is None:
            return None, f"its output goes through unsupported {_describe(user)}"
        error = _step_error(step, n, sd, flattened, calls)
        if error is not None:
            return None, error
        flattened = flattened or step.cat == "flatten"
        steps.append(step)
        cur = user


def _link_to(
    link: _Link, user: fx.Node, target: nn.Module, n: int, sd: int, flattened: bool, calls: Dict[str, int]
) -> Tuple[Optional[_Link], Optional[str]]:
    """``link`` to consumer ``target`` (called by ``user``) of ``n`` units with ``sd`` spatial dims, or why not."""
    cname = link.consumer
    if calls.get(cname, 0) != 1:
        return None, f"its consumer {cname!r} is called {calls.get(cname, 0)} times"
    if getattr(target, "groups", 1) != 1:
        return None, f"its consumer {cname!r} is a grouped convolution"
    if user.kwargs or len(user.args) != 1:
        return None, f"its consumer {cname!r} takes extra arguments"
    if isinstance(target, nn.Linear):
        if sd == 0:
            if target.in_features != n:
                return None, f"{cname!r} has {target.in_features} inputs for {n} units"
            return link, None
        if not flattened:
            return None, f"its channels reach Linear {cname!r} without a flatten"
        if target.in_features % n:
            return None, f"{cname!r} has {target.in_features} inputs, not a multiple of {n} channels"
        link.block = target.in_features // n
        return link, None
    if sd == 0 or flattened or _spatial_dims(target) != sd:
        return None, f"its output reaches convolution {cname!r} reshaped"
    if target.in_channels != n:
        return None, f"{cname!r} has {target.in_channels} input channels for {n} channels"
    return link, None


def _step_error(step: _Step, n: int, sd: int, flattened: bool, calls: Dict[str, int]) -> Optional[str]:
    """Why ``step`` cannot sit on an activation of ``n`` units with ``sd`` spatial dims, or ``None``."""
    user = step.node
    if step.cat == "norm":
        bn = step.module
        expected = nn.BatchNorm2d if sd == 2 else nn.BatchNorm1d
        if flattened or type(bn) is not expected or bn.num_features != n:
            return f"batch norm {user.target!r} does not match its {n} units"
        if calls.get(user.target, 0) != 1:
            return f"batch norm {user.target!r} is called several times"
    elif step.cat == "pool":
        if sd == 0 or flattened or _pool_dims(step) != sd:
            return f"pooling {_describe(user)} does not match its output"
    elif step.cat == "flatten":
        if sd == 0 or flattened:
            return f"{_describe(user)} reshapes its output"
    return None


def _walk_input(node: fx.Node, graph: fx.Graph, modules: Dict[str, nn.Module]) -> Optional[str]:
    """``None`` if weight layer ``node`` reads the network's only input through elementwise steps."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return f"the network takes {len(placeholders)} inputs"
    if len(node.args) != 1 or node.kwargs:
        return "it takes extra arguments"
    chain = []
    cur = node.args[0]
    while True:
        if not isinstance(cur, fx.Node):
            return "its input is not a graph value"
        if cur.op == "placeholder":
            break
        step = _classify(cur, modules)
        if step is None or step.cat not in ("elementwise", "identity") or not cur.args:
            return f"its input comes from {_describe(cur)}"
        if not isinstance(cur.args[0], fx.Node) or not _single_input(cur, cur.args[0]):
            return f"{_describe(cur)} before it combines several values"
        chain.append(cur)
        cur = cur.args[0]
    for n in [cur, *chain]:
        if len(_real_users(n)) != 1:
            return "the network input is used elsewhere too"
    return None


def _producer_of(node: fx.Node, modules: Dict[str, nn.Module]) -> str:
    """Name of the weight layer upstream of ``node`` along first arguments, or ``""``."""
    cur = node.args[0] if node.args else None
    while isinstance(cur, fx.Node):
        if cur.op == "call_module" and isinstance(modules.get(cur.target), _WEIGHT_TYPES):
            return cur.target
        if cur.op == "placeholder" or not cur.args:
            return ""
        cur = cur.args[0]
    return ""
