r"""``bayesianize``: turn an ``nn.Module`` into a Pyro model whose weights are sample sites.

Every weight and bias of ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` becomes a
``PyroSample`` site named like the parameter (``"0.weight"``, ``"fc1.bias"``; ``"weight"``, ``"bias"`` when the
network is a bare layer), with prior
:math:`p(w)`, and the model observes :math:`y` through a likelihood head:

.. math::

    p(y, w \mid x) = p(w) \prod_{n} p(y_n \mid f_w(x_n)).

Those layers are replaced by the Bayesian layers of :mod:`pyro_prune.model.bayesian_layers`, which accept sampled
weights with leading sample dimensions (vectorized particles, parallel ``Predictive``) and the local
reparameterization path; pooling/flatten modules get the fold hooks of :mod:`pyro_prune.model.folding`.
Normalization layers and embeddings keep their parameters as point estimates (Pyro params), unless a prior
callable or dict gives them a prior.  Other modules that hold parameters raise, or become point estimates with
``unsupported="point"``.

``bayesianize`` runs in stages: check the arguments (:func:`_check_arguments`, :func:`_check_prior_dict`), copy
the network, convert its Linear/Conv layers with their priors (:func:`_convert_layers`), hook the folded modules,
give the other parametrized modules their priors or point estimates (:func:`_cover_other_modules`), and build the
:class:`~pyro_prune.model.bayesian_model.BayesianModel` (:func:`_build_model`).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Mapping, NamedTuple, Optional, Tuple, Union

import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.nn import PyroSample
from pyro.nn.module import to_pyro_module_

from .._checks import check_choice
from .bayesian_layers import (
    LAYER_TYPES,
    BayesianConv1d,
    BayesianConv2d,
    BayesianLinear,
    layer_fans,
    to_bayesian_layer,
)
from .bayesian_model import BayesianModel, SiteInfo
from .folding import FOLDED_MODULES, add_fold_hooks
from .group_prior import GroupInfo, GroupPrior
from .likelihoods import Likelihood
from .priors import PriorSpec, check_prior_spec, fit_prior, resolve_prior

__all__ = [
    "bayesianize",
    "BayesianModel",
    "SiteInfo",
    "BayesianLinear",
    "BayesianConv1d",
    "BayesianConv2d",
    "init_from",
    "PriorSpec",
    "POINT_ESTIMATE_MODULES",
    "FOLDED_MODULES",
]

#: Modules whose parameters stay point estimates by default.
POINT_ESTIMATE_MODULES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
)

#: Point-estimate modules that cannot take inputs with leading sample dimensions.
_BATCH_FIRST_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm)

_UNSUPPORTED = ("raise", "point")


class _OtherModule(NamedTuple):
    """A parametrized module that is not a Linear/Conv layer, met while converting the network."""

    name: str
    module: nn.Module
    params: List[Tuple[str, nn.Parameter]]
    full: Dict[str, str]


@dataclass
class _Conversion:
    """What the stages of :func:`bayesianize` collect about the network."""

    sites: Dict[str, SiteInfo] = field(default_factory=dict)
    group_sites: Dict[str, GroupInfo] = field(default_factory=dict)
    point: List[str] = field(default_factory=list)
    others: List[_OtherModule] = field(default_factory=list)
    vectorizable: bool = True


def bayesianize(
    net: nn.Module,
    prior: PriorSpec,
    likelihood: Likelihood,
    unsupported: Literal["raise", "point"] = "raise",
) -> BayesianModel:
    """Make a Bayesian copy of ``net`` whose weights are Pyro sample sites.

    :param net: any ``nn.Module``; it is deep-copied, never modified.  A bare ``nn.Linear``/``nn.Conv1d``/
        ``nn.Conv2d`` is a network of one layer (Bayesian linear regression): its sites are ``"weight"`` and
        ``"bias"`` and ``model.net`` is the Bayesian layer itself.
    :param prior: the prior of the weights:

        * a ``Distribution`` with scalar (or broadcastable) batch shape, expanded to every
          ``Linear``/``Conv1d``/``Conv2d`` weight and bias;
        * a callable ``(name, module, param) -> Distribution | None``, called for **every**
          parameter (``None`` keeps a point estimate), so it can also cover normalization layers;
        * a dict ``{name: Distribution | None}`` that must name every Linear/Conv parameter
          (and may name others);
        * a :class:`~pyro_prune.GroupPrior` (group scale mixtures on every Linear/Conv weight).

    :param likelihood: a :class:`~pyro_prune.likelihoods.Likelihood` head
        (:class:`~pyro_prune.Categorical`, :class:`~pyro_prune.Bernoulli`, :class:`~pyro_prune.Gaussian`).
    :param unsupported: what to do with parameters of modules other than Linear/Conv1d/Conv2d and
        the normalization/embedding layers: ``"raise"`` (default) or ``"point"`` (keep them as
        point estimates, with a warning).
    :returns: a :class:`BayesianModel`.
    :raises TypeError: ``net`` is not an ``nn.Module`` or a prior is not a distribution.
    :raises ValueError: unsupported modules, priors that do not fit, a dict prior missing sites.
    """
    _check_arguments(net, prior, likelihood, unsupported)
    _check_prior_dict(net, prior)
    template, net = copy.deepcopy(net), copy.deepcopy(net)
    found = _Conversion()
    net = _convert_layers(net, prior, found)
    add_fold_hooks(net)
    to_pyro_module_(net)
    _cover_other_modules(prior, unsupported, found)
    return _build_model(net, prior, likelihood, template, found)


def _check_arguments(net: nn.Module, prior: PriorSpec, likelihood: Likelihood, unsupported: str) -> None:
    """Stage 1: the argument types, ``unsupported`` and initialized parameters."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if isinstance(net, BayesianModel):
        raise TypeError("net is already a BayesianModel")
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a pyro_prune Likelihood (Categorical, Bernoulli, Gaussian), got {likelihood!r}"
        )
    check_prior_spec(prior)
    check_choice("unsupported", unsupported, _UNSUPPORTED)
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in net.parameters()):
        raise ValueError("net has uninitialized (lazy) parameters; run one forward pass before bayesianize")


def _check_prior_dict(net: nn.Module, prior: PriorSpec) -> None:
    """Stage 2: a dict prior names only parameters of ``net``, and every Linear/Conv parameter."""
    if not isinstance(prior, Mapping):
        return
    known = {n for n, _ in net.named_parameters()}
    extra = sorted(set(prior) - known)
    if extra:
        raise ValueError(f"prior dict names parameters the network does not have: {extra}")
    needed = sorted(
        f"{mn}.{pn}" if mn else pn
        for mn, m in net.named_modules()
        if type(m) in LAYER_TYPES
        for pn, _ in m.named_parameters(recurse=False)
    )
    missing = [n for n in needed if n not in prior]
    if missing:
        raise ValueError(f"prior dict misses Linear/Conv parameters {missing}; map them to a Distribution or None")


def _layer_priors(prior: PriorSpec, module: nn.Module, found: _Conversion, full: Dict[str, str]) -> dict:
    """``{param: fitted prior}`` of a Linear/Conv layer; parameters without a prior are noted as point estimates."""
    priors = {}
    for pn, p in module.named_parameters(recurse=False):
        d = resolve_prior(prior, full[pn], module, p, default_bayes=True)
        if d is None:
            found.point.append(full[pn])
        else:
            priors[pn] = d
    return priors


def _group_layer_priors(prior: GroupPrior, mname: str, module: nn.Module, full: Dict[str, str]):
    r"""``(priors, (prior, GroupInfo))`` of a Linear/Conv layer under a group prior.

    The weight's stored prior is a standard normal of its shape (its real prior, :math:`\mathcal N(0, z_g^2)`, is
    built from the sampled scales); the bias gets ``prior.bias``.
    """
    if getattr(module, "groups", 1) != 1:
        raise ValueError(f"GroupPrior does not support grouped convolutions (module {mname!r})")
    w = module.weight
    priors = {"weight": fit_prior(dist.Normal(torch.zeros((), dtype=w.dtype, device=w.device), 1.0), full["weight"], w)}
    if module.bias is not None:
        priors["bias"] = fit_prior(prior.bias, full["bias"], module.bias)
    axis = 1 if isinstance(module, nn.Linear) else 0
    info = GroupInfo(
        module=mname,
        weight=full["weight"],
        bias=full.get("bias"),
        axis=axis,
        num_groups=w.shape[axis],
        scale_sites={sfx: f"{full['weight']}_{sfx}" for sfx in prior.suffixes},
        kind=LAYER_TYPES[type(module)].kind,
    )
    return priors, (prior, info)


def _convert_layers(net: nn.Module, prior: PriorSpec, found: _Conversion) -> nn.Module:
    """Stage 3: replace every Linear/Conv layer by its Bayesian version; collect the other parametrized modules.

    :returns: the converted network: ``net`` itself, or its Bayesian version when ``net`` is a bare layer (module
        path ``""``, sites ``"weight"``/``"bias"``).
    """
    for mname, module in list(net.named_modules()):
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        full = {pn: (f"{mname}.{pn}" if mname else pn) for pn, _ in own}
        if type(module) not in LAYER_TYPES:
            found.others.append(_OtherModule(mname, module, own, full))
            continue
        group = None
        if isinstance(prior, GroupPrior):
            priors, group = _group_layer_priors(prior, mname, module, full)
            found.group_sites[mname] = group[1]
        else:
            priors = _layer_priors(prior, module, found, full)
        new = to_bayesian_layer(module)
        new._pp_init(priors, own[0][1], full, group)
        if mname:
            _replace_module(net, mname, new)  # plain nn.Module setattr keeps the children's order
        else:
            net = new  # a bare layer is its own network
        shapes = dict(own)
        for pn in ("weight", "bias"):
            if pn in priors:
                found.sites[full[pn]] = SiteInfo(full[pn], mname, pn, new.kind, shapes[pn].shape, *layer_fans(module))
    return net


def _cover_other_modules(prior: PriorSpec, unsupported: str, found: _Conversion) -> None:
    """Stage 4: priors (from a callable or dict) or point estimates for the parameters of the other modules."""
    for other in found.others:
        covered = False
        for pn, p in other.params:
            name = other.full[pn]
            d = resolve_prior(prior, name, other.module, p, default_bayes=False)
            if d is None:
                found.point.append(name)
                continue
            setattr(other.module, pn, PyroSample(d))
            found.sites[name] = SiteInfo(name, other.name, pn, "other", p.shape, 0, p.shape[0] if p.dim() else 1)
            found.vectorizable = False
            covered = True
        if isinstance(other.module, _BATCH_FIRST_MODULES):
            found.vectorizable = False  # they expect (B, C, ...) inputs, without leading sample dims
        if not covered and not isinstance(other.module, POINT_ESTIMATE_MODULES):
            _unsupported_module(other, unsupported)


def _unsupported_module(other: _OtherModule, unsupported: str) -> None:
    names = [other.full[pn] for pn, _ in other.params]
    kind = type(other.module).__mro__[1].__name__  # the user's class under to_pyro_module_'s PyroModule[...]
    if unsupported == "raise":
        raise ValueError(
            f"module {other.name or '<root>'!r} of type {kind} holds parameters {names}, and bayesianize "
            "supports Linear, Conv1d and Conv2d (normalization layers and embeddings stay point estimates). "
            "Pass unsupported='point' to keep them as point estimates, or give them priors with a prior callable."
        )
    # stacklevel 4: _unsupported_module <- _cover_other_modules <- bayesianize <- the caller
    warnings.warn(f"bayesianize: parameters {names} of {kind} stay point estimates", stacklevel=4)


def _build_model(
    net: nn.Module, prior: PriorSpec, likelihood: Likelihood, template: nn.Module, found: _Conversion
) -> BayesianModel:
    """Stage 5: the :class:`BayesianModel`, with the initial weights of every site."""
    if not found.sites:
        raise ValueError("net has no Linear/Conv1d/Conv2d parameters to make Bayesian (or every prior was None)")
    params = dict(template.named_parameters())
    initial = {name: params[name].detach().clone() for name in found.sites}
    group = isinstance(prior, GroupPrior)
    ref = params[next(iter(found.sites))]
    if any(p.is_floating_point() and (p.dtype, p.device) != (ref.dtype, ref.device) for p in likelihood.parameters()):
        # a learned noise scale is created in the default dtype on the CPU: give the model's copy the network's
        # (a copy, so the user's likelihood object is not changed)
        likelihood = copy.deepcopy(likelihood).to(device=ref.device, dtype=ref.dtype)
    return BayesianModel(
        net,
        likelihood,
        found.sites,
        found.point,
        found.vectorizable,
        template,
        initial,
        group_prior=prior if group else None,
        group_sites=found.group_sites if group else None,
    )


def _replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent = root
    *head, last = path.split(".")
    for part in head:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def init_from(
    net: Union[nn.Module, Mapping[str, torch.Tensor]], fallback: Optional[Callable] = init_to_median
) -> Callable:
    """An ``init_loc_fn`` that starts guides at the weights of a trained network.

    :param net: the (trained) ``nn.Module`` that was bayesianized, or its ``state_dict()``.
    :param fallback: init strategy for sites the network does not name (Pyro's ``init_to_median``);
        ``None`` makes missing sites an error.
    :returns: a Pyro init strategy, e.g. ``AutoNormal(model, init_loc_fn=init_from(net))``.
    """
    state = net.state_dict() if isinstance(net, nn.Module) else net
    if not isinstance(state, Mapping):
        raise TypeError(f"net must be an nn.Module or a state_dict mapping, got {type(net).__name__}")
    values = {k: v.detach().clone() for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}
    return init_to_value(values=values, fallback=fallback)
