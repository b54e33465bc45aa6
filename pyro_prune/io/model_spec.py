r"""A :class:`~pyro_prune.BayesianModel` as data: what :func:`~pyro_prune.bayesianize` was given, and back.

A model is rebuilt as it was built, ``bayesianize(net, prior, likelihood, unsupported)``, then loaded with its
``state_dict``:

* ``net``: the plain network the model was made from (``model.template()``, with the weights it had then, so that
  ``model.initial_weights()`` -- where sparse guides start -- survives too), described by
  :func:`~pyro_prune.io.specs.describe_net` or passed to the loader;
* ``prior``: the *resolved* prior of every weight site (whatever the user passed: a distribution, a callable or a
  dict), as a dict ``{site: distribution}`` with ``None`` for the point estimates; or the
  :class:`~pyro_prune.GroupPrior`'s settings;
* ``likelihood``: the head's class (one of :data:`LIKELIHOODS`, or one registered with :func:`register_likelihood`)
  and its constructor arguments;
* ``unsupported``: ``"point"`` when the network has modules whose parameters stayed point estimates by that
  choice.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

import torch
import torch.nn as nn

from ..model import Bernoulli, Categorical, Gaussian, GroupPrior, Likelihood, bayesianize
from ..model.bayesian_layers import BayesianLayer
from ..model.bayesian_model import BayesianModel
from ..model.bayesianize import LAYER_TYPES, POINT_ESTIMATE_MODULES
from .specs import SpecError, TensorStore, build_distribution, build_net, describe_distribution, describe_net

__all__ = ["LIKELIHOODS", "register_likelihood", "describe_model", "build_model", "ModelParts"]

LikelihoodConfig = Callable[[Likelihood], Dict[str, Any]]


def _gaussian_config(lik: Gaussian) -> Dict[str, Any]:
    scale = lik.fixed_scale if lik.mode == "fixed" else lik.mode
    return {"dataset_size": lik.dataset_size, "scale": scale}


#: ``{name: (class, config)}``: the likelihood heads a file may name; ``config(head)`` gives the keyword arguments
#: that rebuild it (its learned parameters come from the model's ``state_dict``).
LIKELIHOODS: Dict[str, Tuple[Type[Likelihood], LikelihoodConfig]] = {
    "Categorical": (Categorical, lambda lik: {"dataset_size": lik.dataset_size}),
    "Bernoulli": (Bernoulli, lambda lik: {"dataset_size": lik.dataset_size}),
    "Gaussian": (Gaussian, _gaussian_config),
}


def register_likelihood(cls: Type[Likelihood], config: LikelihoodConfig, name: Optional[str] = None) -> None:
    """Let files name the likelihood class ``cls`` (as ``name``, default ``cls.__name__``).

    :param config: ``config(head) -> dict`` of JSON-able keyword arguments such that ``cls(**config(head))``
        rebuilds ``head`` up to its ``state_dict``.
    :raises TypeError: ``cls`` is not a :class:`~pyro_prune.Likelihood` subclass or ``config`` not callable.
    :raises ValueError: ``name`` is taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Likelihood)):
        raise TypeError(f"cls must be a Likelihood subclass, got {cls!r}")
    if not callable(config):
        raise TypeError(f"config must be callable, got {config!r}")
    name = cls.__name__ if name is None else str(name)
    if name in LIKELIHOODS and LIKELIHOODS[name][0] is not cls:
        raise ValueError(f"likelihood name {name!r} is taken by {LIKELIHOODS[name][0].__name__}")
    LIKELIHOODS[name] = (cls, config)


def _describe_likelihood(lik: Likelihood) -> Optional[Dict[str, Any]]:
    for name, (cls, config) in LIKELIHOODS.items():
        if type(lik) is cls:
            return {"class": name, "args": config(lik)}
    return None


def _site_prior(model: BayesianModel, name: str):
    info = model.sites[name]
    module = model.net.get_submodule(info.module) if info.module else model.net
    if isinstance(module, BayesianLayer):
        return module._pp_priors[info.param]
    return module._pyro_samples[info.param]


def _describe_prior(model: BayesianModel, store: TensorStore) -> Dict[str, Any]:
    gp = model.group_prior
    if gp is not None:
        bias = describe_distribution(gp.bias, store, "the group prior's bias prior")
        return {"group": {"kind": gp.kind, "tau0": gp.tau0, "groups": gp.groups, "bias": bias}}
    sites = {}
    for name in model.sites:
        d = _site_prior(model, name)
        if not isinstance(d, torch.distributions.Distribution):
            raise ValueError(f"the prior of {name!r} is a {type(d).__name__}, not a Distribution: it cannot be saved")
        sites[name] = describe_distribution(d, store, f"the prior of {name!r}")
    return {"sites": sites, "point": list(model.point_estimates)}


def _unsupported(template: nn.Module) -> str:
    """``"point"`` when ``template`` has parameters in modules ``bayesianize`` only keeps with that choice."""
    for module in template.modules():
        own = next(module.parameters(recurse=False), None)
        if own is not None and not isinstance(module, tuple(LAYER_TYPES) + POINT_ESTIMATE_MODULES):
            return "point"
    return "raise"


def describe_model(model: BayesianModel, store: TensorStore) -> Dict[str, Any]:
    """A JSON description of ``model`` (its tensors in ``store``): see the module docstring.

    ``net`` or ``likelihood`` is ``None`` when the file cannot describe it (the loader then needs it passed in).
    """
    template = model.template()
    return {
        "net": describe_net(template),
        "net_class": type(template).__name__,
        "net_shapes": {k: list(v.shape) for k, v in template.state_dict().items()},
        "net_dtype": str(_float_dtype(template)).replace("torch.", ""),
        "prior": _describe_prior(model, store),
        "likelihood": _describe_likelihood(model.likelihood),
        "likelihood_class": type(model.likelihood).__name__,
        "unsupported": _unsupported(template),
        "dtype": str(model.dtype).replace("torch.", ""),
    }


def _float_dtype(net: nn.Module) -> torch.dtype:
    for t in net.state_dict().values():
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


class ModelParts:
    """What the loader may pass in place of the file's description (``None``: from the file)."""

    def __init__(self, net: Optional[nn.Module] = None, likelihood: Optional[Likelihood] = None):
        if net is not None and not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        if likelihood is not None and not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a pyro_prune Likelihood, got {type(likelihood).__name__}")
        self.net, self.likelihood = net, likelihood


def _net(spec: Mapping[str, Any], parts: ModelParts) -> nn.Module:
    """The plain network: the one passed in (copied, checked against the file) or the file's description."""
    shapes = {k: list(v) for k, v in spec["net_shapes"].items()}
    if parts.net is not None:
        net = copy.deepcopy(parts.net)
        theirs = {k: list(v.shape) for k, v in net.state_dict().items()}
        if theirs != shapes:
            diff = _diff(theirs, shapes)
            raise ValueError(f"net does not match the saved network ({spec['net_class']}): {'; '.join(diff[:5])}")
        return net
    if spec.get("net") is None:
        raise ValueError(
            f"the file does not describe the network (a {spec['net_class']}, not a torch.nn container of torch.nn "
            "layers): pass net=<a network of that architecture> (e.g. the factory that built it)"
        )
    return build_net(spec["net"])


def _diff(theirs: Dict[str, list], saved: Dict[str, list]) -> list:
    out = [f"{k!r} missing" for k in saved if k not in theirs]
    out += [f"{k!r} not in the file" for k in theirs if k not in saved]
    out += [f"{k!r} has shape {tuple(theirs[k])}, saved {tuple(saved[k])}" for k in saved
            if k in theirs and theirs[k] != saved[k]]  # fmt: skip
    return out


def _prior(spec: Mapping[str, Any], store: TensorStore):
    if "group" in spec:
        g = spec["group"]
        bias = build_distribution(g["bias"], store)
        return GroupPrior(g["kind"], tau0=g["tau0"], bias=bias, groups=g["groups"])
    prior: Dict[str, Any] = {name: build_distribution(d, store) for name, d in spec["sites"].items()}
    prior.update({name: None for name in spec["point"]})
    return prior


def _likelihood(spec: Mapping[str, Any], parts: ModelParts) -> Likelihood:
    if parts.likelihood is not None:
        return copy.deepcopy(parts.likelihood)
    entry = spec.get("likelihood")
    if entry is None or entry.get("class") not in LIKELIHOODS:
        raise ValueError(
            f"the file's likelihood is a {spec['likelihood_class']}, which it cannot rebuild: pass likelihood=<a "
            "head of that class>, or register the class with pyro_prune.io.register_likelihood before loading"
        )
    cls = LIKELIHOODS[entry["class"]][0]
    return cls(**entry["args"])


def build_model(
    spec: Mapping[str, Any], store: TensorStore, template_state: Mapping[str, torch.Tensor], parts: ModelParts
) -> BayesianModel:
    """The model :func:`describe_model` described, before its ``state_dict`` is loaded (the caller's step).

    :raises ValueError: the file needs ``net`` or ``likelihood`` passed in, or they do not match it.
    :raises SpecError: a malformed description.
    """
    net = _net(spec, parts)
    net.to(dtype=getattr(torch, spec["net_dtype"]))
    net.load_state_dict(template_state)
    prior, likelihood = _prior(spec["prior"], store), _likelihood(spec, parts)
    with warnings.catch_warnings():  # the "stay point estimates" warning was given when the model was first built
        warnings.filterwarnings("ignore", message="bayesianize: parameters", category=UserWarning)
        try:
            model = bayesianize(net, prior, likelihood, unsupported=spec["unsupported"])
        except (TypeError, ValueError) as e:
            raise SpecError(f"the saved model does not rebuild: {e}") from e
    return model.to(dtype=getattr(torch, spec["dtype"]))
