r"""Descriptions of distributions and networks as JSON plus tensors, and their reconstruction without running code.

A saved file must rebuild a model without executing anything it contains (:mod:`pyro_prune.io`). This module
turns the two things a :class:`~pyro_prune.BayesianModel` is built from into data:

* a **distribution** (a weight prior) becomes ``{"class": "pyro.distributions.Normal", "params": {"loc": ref,
  ...}}``, where ``ref`` names a tensor in a :class:`TensorStore`.  Classes are looked up only in the
  namespaces of :data:`DISTRIBUTION_NAMESPACES` (``pyro.distributions``, ``torch.distributions``,
  ``pyro_prune.distributions``) and rebuilt from their ``arg_constraints`` parameters, as
  :func:`pyro_prune.model.priors.cast_distribution` does; ``Independent``/``ExpandedDistribution`` wrappers and
  :class:`~pyro_prune.ImproperLogUniform` (whose only argument is its batch shape) have their own entries;
* a **network** made of ``torch.nn`` modules (``Sequential``, ``ModuleList``, ``ModuleDict`` containers of
  ``Linear``, ``Conv2d``, ``ReLU``, ``BatchNorm1d``, ``Flatten``...) becomes a tree of ``{"class": "Linear",
  "args": {...}}``, each module's constructor arguments read from its attributes of the same names
  (``bias`` from whether ``module.bias`` is ``None``).  Classes are looked up only in ``torch.nn``.

Each description is checked at save time by rebuilding it (:func:`describe_net` returns ``None`` for a network
it cannot describe exactly, e.g. the user's own ``nn.Module`` subclass: the loader then needs the network passed
in; :func:`describe_distribution` raises for a prior it cannot describe).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

import pyro.distributions as pdist
import torch
import torch.nn as nn

from .. import distributions as ppdist
from ..distributions import ImproperLogUniform

__all__ = [
    "TensorStore",
    "DISTRIBUTION_NAMESPACES",
    "describe_distribution",
    "build_distribution",
    "describe_net",
    "build_net",
    "SpecError",
]

#: ``{prefix: module}``: where distribution classes named in a file are looked up (and nowhere else).
DISTRIBUTION_NAMESPACES = {"pyro.distributions": pdist, "torch.distributions": torch.distributions,
                           "pyro_prune.distributions": ppdist}  # fmt: skip

_JSON_SCALARS = (bool, int, float, str, type(None))
_NET_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SKIPPED_ARGS = ("self", "device", "dtype")


class SpecError(ValueError):
    """A description in a saved file that cannot be rebuilt (an unknown class, a malformed entry)."""


class TensorStore:
    """Tensors referenced from a JSON description by key (``{"tensor": key}``).

    :param tensors: an existing ``{key: tensor}`` (when reading a file), or ``None`` (when writing one).
    """

    def __init__(self, tensors: Optional[Dict[str, torch.Tensor]] = None):
        self.tensors: Dict[str, torch.Tensor] = {} if tensors is None else tensors

    def put(self, prefix: str, value: torch.Tensor) -> Dict[str, str]:
        """Store a detached clone of ``value`` under a fresh key starting with ``prefix``; returns the reference."""
        key = f"{prefix}#{len(self.tensors)}"
        self.tensors[key] = value.detach().clone()
        return {"tensor": key}

    def get(self, ref: Any) -> torch.Tensor:
        """The tensor a reference names.

        :raises SpecError: ``ref`` is not a reference to a stored tensor.
        """
        if not (isinstance(ref, Mapping) and ref.get("tensor") in self.tensors):
            raise SpecError(f"the file refers to a tensor it does not hold: {ref!r}")
        return self.tensors[ref["tensor"]]


# -- distributions ------------------------------------------------------------------------------------------
def _class_name(cls: type) -> Optional[str]:
    for prefix, namespace in DISTRIBUTION_NAMESPACES.items():
        if getattr(namespace, cls.__name__, None) is cls:
            return f"{prefix}.{cls.__name__}"
    return None


def _lookup_distribution(name: Any) -> type:
    prefix, _, short = str(name).rpartition(".")
    namespace = DISTRIBUTION_NAMESPACES.get(prefix)
    cls = getattr(namespace, short, None) if namespace is not None else None
    if not (isinstance(cls, type) and issubclass(cls, torch.distributions.Distribution)):
        raise SpecError(f"unknown distribution class {name!r} (looked up in {sorted(DISTRIBUTION_NAMESPACES)} only)")
    return cls


def describe_distribution(d: torch.distributions.Distribution, store: TensorStore, where: str) -> Dict[str, Any]:
    """A JSON description of ``d`` (its tensors put in ``store``).

    :param where: what ``d`` is, for error messages (``"the prior of '0.weight'"``).
    :raises ValueError: ``d`` is of a class outside :data:`DISTRIBUTION_NAMESPACES` or cannot be rebuilt from its
        ``arg_constraints`` parameters.
    """
    if isinstance(d, pdist.Independent):
        return {"class": "Independent", "base": describe_distribution(d.base_dist, store, where),
                "ndims": int(d.reinterpreted_batch_ndims)}  # fmt: skip
    if isinstance(d, pdist.ExpandedDistribution):
        return {"class": "Expanded", "base": describe_distribution(d.base_dist, store, where),
                "batch_shape": list(d.batch_shape)}  # fmt: skip
    name = _class_name(type(d))
    if name is None:
        raise ValueError(
            f"{where} is a {type(d).__name__}, which a file can describe only if it is a class of "
            f"{' / '.join(DISTRIBUTION_NAMESPACES)}; pass prior= to pp.load to rebuild such a model"
        )
    if isinstance(d, ImproperLogUniform):
        return {"class": name, "batch_shape": list(d.batch_shape)}
    params = {}
    for k in d.arg_constraints:
        v = vars(d).get(k)
        if v is None:
            continue  # a lazily derived twin (probs / logits) or an optional argument not given
        params[k] = store.put(where, v) if torch.is_tensor(v) else _json_value(v, f"{where}: {k}")
    return {"class": name, "params": params, "batch_shape": list(d.batch_shape)}


def build_distribution(spec: Mapping[str, Any], store: TensorStore) -> torch.distributions.Distribution:
    """The distribution :func:`describe_distribution` described.

    :raises SpecError: an unknown class or a malformed description.
    """
    kind = spec.get("class")
    if kind == "Independent":
        return pdist.Independent(build_distribution(spec["base"], store), int(spec["ndims"]))
    if kind == "Expanded":
        return build_distribution(spec["base"], store).expand(torch.Size(spec["batch_shape"]))
    cls = _lookup_distribution(kind)
    if issubclass(cls, ImproperLogUniform):
        return cls(torch.Size(spec["batch_shape"]))
    params = {k: store.get(v) if isinstance(v, Mapping) else v for k, v in dict(spec.get("params", {})).items()}
    try:
        d = cls(**params, validate_args=False)
    except (TypeError, ValueError, RuntimeError) as e:
        raise SpecError(f"cannot rebuild {kind} from its parameters {sorted(params)}: {e}") from e
    shape = torch.Size(spec.get("batch_shape", d.batch_shape))
    return d.expand(shape) if d.batch_shape != shape else d


def _json_value(v: Any, where: str) -> Any:
    """``v`` as a JSON value (tuples as lists), or ``ValueError``."""
    if isinstance(v, _JSON_SCALARS):
        return v
    if isinstance(v, (tuple, list)) and all(isinstance(e, _JSON_SCALARS) for e in v):
        return list(v)
    if isinstance(v, torch.Size):
        return list(v)
    raise ValueError(f"{where}: a {type(v).__name__} value cannot be written to a file")


# -- networks ------------------------------------------------------------------------------------------------
def _torch_nn_class(module: nn.Module) -> Optional[str]:
    name = type(module).__name__
    return name if getattr(nn, name, None) is type(module) else None


def _leaf_args(module: nn.Module) -> Optional[Dict[str, Any]]:
    """Constructor arguments of a ``torch.nn`` leaf module read from its attributes, or ``None``."""
    args = {}
    for p in inspect.signature(type(module).__init__).parameters.values():
        if p.name in _SKIPPED_ARGS or p.name.startswith("_") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "bias" and isinstance(getattr(module, "bias", None), (nn.Parameter, type(None))):
            args["bias"] = module.bias is not None
            continue
        if not hasattr(module, p.name):
            if p.default is p.empty:
                return None
            continue  # an option the module does not keep: its default
        try:
            args[p.name] = _json_value(getattr(module, p.name), p.name)
        except ValueError:
            return None
    return args


def _describe_module(module: nn.Module) -> Optional[Dict[str, Any]]:
    name = _torch_nn_class(module)
    if name is None:
        return None
    if isinstance(module, _NET_CONTAINERS):
        children = [[k, _describe_module(m)] for k, m in module.named_children()]
        return None if any(c is None for _, c in children) else {"class": name, "children": children}
    if next(module.children(), None) is not None:
        return None  # a torch.nn module with submodules (e.g. MultiheadAttention): not described
    args = _leaf_args(module)
    return None if args is None else {"class": name, "args": args}


def _same_structure(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return repr(a) == repr(b) and list(sa) == list(sb) and all(sa[k].shape == sb[k].shape for k in sa)


def describe_net(net: nn.Module) -> Optional[Dict[str, Any]]:
    """A JSON description of ``net``'s architecture, or ``None`` when it is not made of ``torch.nn`` modules that
    rebuild exactly (same ``repr``, same ``state_dict`` names and shapes)."""
    spec = _describe_module(net)
    if spec is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # no allocation, no draw from the user's RNG
            rebuilt = build_net(spec)
    except (SpecError, TypeError, ValueError, RuntimeError):
        return None
    return spec if _same_structure(rebuilt, net) else None


def _build_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def build_net(spec: Mapping[str, Any]) -> nn.Module:
    """The network :func:`describe_net` described (freshly initialized: load its ``state_dict`` after).

    :raises SpecError: a class outside ``torch.nn`` or a malformed description.
    """
    name = spec.get("class") if isinstance(spec, Mapping) else None
    cls = getattr(nn, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SpecError(f"unknown network module {name!r} (looked up in torch.nn only)")
    if "children" in spec:
        children: List[Any] = [(str(k), build_net(c)) for k, c in spec["children"]]
        if issubclass(cls, nn.Sequential):
            return cls(OrderedDict(children))
        if issubclass(cls, nn.ModuleDict):
            return cls(dict(children))
        return cls([m for _, m in children])
    try:
        return cls(**_build_args(spec.get("args", {})))
    except (TypeError, ValueError) as e:
        raise SpecError(f"cannot rebuild torch.nn.{name} from {dict(spec.get('args', {}))}: {e}") from e
