"""How each guide class is written to and rebuilt from a file: the registry :data:`GUIDES`.

A :class:`GuideFormat` names a guide class and two functions: ``config(guide)`` gives the JSON-able constructor
arguments that matter once the guide is trained (initialization arguments such as ``init_loc_fn`` do not: the
parameters come from the ``state_dict``), and ``build(model, config, state)`` constructs an untrained guide of the
class, set up so that ``load_state_dict(state)`` restores it exactly.  The library's guides are set up by their
own ``load_state_dict`` (:class:`~pyro_prune.guides.base.DurableGuide` records the inputs' shapes); Pyro's
autoguides are set up here from the inputs recorded in their prototype trace.  A file names a guide by its
registered name; an unregistered class cannot be saved, and a file never imports one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Type

import torch
from pyro.infer.autoguide import AutoDelta, AutoDiagonalNormal, AutoGuide, AutoMultivariateNormal, AutoNormal

from .. import subnet as sn
from ..guides import AutoGroupSparse, AutoMeanFieldNormal, AutoSparseVD, AutoSubnetwork, LaplaceGuide
from ..model.bayesian_model import BayesianModel

__all__ = ["GuideFormat", "GUIDES", "register_guide", "guide_format", "guide_format_named"]

Config = Callable[[Any], Dict[str, Any]]
Build = Callable[[BayesianModel, Dict[str, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class GuideFormat:
    """How one guide class is saved and rebuilt (module docstring)."""

    name: str
    cls: type
    config: Config
    build: Build


#: ``{name: GuideFormat}``: the guide classes files can hold.
GUIDES: Dict[str, GuideFormat] = {}


def _default_build(cls: type) -> Build:
    return lambda model, config, state: cls(model, **config)


def register_guide(cls: Type[AutoGuide], config: Config, build: Optional[Build] = None, name: Optional[str] = None):
    """Let :func:`~pyro_prune.io.save` write guides of class ``cls`` and :func:`~pyro_prune.io.load` rebuild them.

    :param config: ``config(guide) -> dict`` of JSON-able constructor keyword arguments.
    :param build: ``build(model, config, state_dict) -> guide`` ready for ``load_state_dict(state_dict)``; default
        ``cls(model, **config)`` (enough for a :class:`~pyro_prune.guides.base.DurableGuide`).
    :param name: the name written to files (default ``cls.__name__``); keep it stable across versions.
    :raises TypeError: ``cls`` is not a class or ``config``/``build`` are not callable.
    :raises ValueError: ``name`` is taken by another class.
    """
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a guide class, got {cls!r}")
    if not callable(config) or (build is not None and not callable(build)):
        raise TypeError("config and build must be callables")
    name = cls.__name__ if name is None else str(name)
    if name in GUIDES and GUIDES[name].cls is not cls:
        raise ValueError(f"guide name {name!r} is taken by {GUIDES[name].cls.__name__}")
    GUIDES[name] = GuideFormat(name, cls, config, build or _default_build(cls))


def guide_format(guide: Any) -> GuideFormat:
    """The format of ``guide``'s exact class.

    :raises TypeError: the class is not registered.
    """
    for fmt in GUIDES.values():
        if type(guide) is fmt.cls:
            return fmt
    raise TypeError(
        f"a {type(guide).__name__} guide cannot be saved: its class is not registered "
        f"(pyro_prune.io.register_guide); saveable classes are {sorted(GUIDES)}"
    )


def guide_format_named(name: Any) -> GuideFormat:
    """The format a file names.

    :raises ValueError: no class is registered under ``name``.
    """
    if name not in GUIDES:
        raise ValueError(f"the file holds a {name!r} guide, which is not registered here; known: {sorted(GUIDES)}")
    return GUIDES[name]


# -- the library's guides -------------------------------------------------------------------------------------
def _sparse_config(guide: AutoSparseVD) -> Dict[str, Any]:
    return {"init_log_sigma2": guide.init_log_sigma2, "local_reparameterization": guide.local_reparameterization,
            "log_alpha_clip": guide.log_alpha_clip}  # fmt: skip


def _group_config(guide: AutoGroupSparse) -> Dict[str, Any]:
    return {**_sparse_config(guide), "init_scale_log_alpha": guide.init_scale_log_alpha}


def _subnetwork_build(model: BayesianModel, config: Dict[str, Any], state: Mapping[str, Any]) -> AutoSubnetwork:
    return AutoSubnetwork(model, sn.Indices(state["indices"].cpu()), **config)


def _laplace_config(guide: LaplaceGuide) -> Dict[str, Any]:
    config = {"structure": guide.structure, "fisher": guide.fisher, "temperature": guide.temperature}
    if guide.structure == "lowrank":  # the rank shapes the posterior a loaded guide is built with
        config["rank"] = int(guide._posterior.rank)
    max_memory = getattr(guide._posterior, "max_memory", None)  # only full/lowrank bound their matrices
    return config if max_memory is None else {**config, "max_memory": float(max_memory)}


def _laplace_build(model: BayesianModel, config: Dict[str, Any], state: Mapping[str, Any]) -> LaplaceGuide:
    config = dict(config)
    return LaplaceGuide(model, None, config.pop("structure"), **config)


register_guide(AutoSparseVD, _sparse_config)
register_guide(AutoGroupSparse, _group_config)
register_guide(AutoMeanFieldNormal, lambda g: {"init_scale": g.init_scale,
                                               "local_reparameterization": g.local_reparameterization})  # fmt: skip
register_guide(AutoSubnetwork, lambda g: {"init_scale": g.init_scale, "train_rest": g.train_rest}, _subnetwork_build)
register_guide(LaplaceGuide, _laplace_config, _laplace_build)


# -- Pyro's autoguides ---------------------------------------------------------------------------------------
def _inputs(guide: AutoGuide) -> List[Any]:
    """``[(shape without batch, dtype name) | None]`` of the positional inputs the guide was set up with."""
    if guide.prototype_trace is None:
        raise ValueError(f"the {type(guide).__name__} guide is not set up yet: train it (or call it once) first")
    args = guide.prototype_trace.nodes["_INPUT"]["args"]
    return [[list(a.shape[1:]), str(a.dtype).replace("torch.", "")] if torch.is_tensor(a) and a.dim() else None
            for a in args]  # fmt: skip


def _pyro_config(guide: AutoGuide) -> Dict[str, Any]:
    config: Dict[str, Any] = {"inputs": _inputs(guide)}
    if hasattr(guide, "_init_scale"):
        config["init_scale"] = float(guide._init_scale)
    return config


def _pyro_build(cls: type) -> Build:
    def build(model: BayesianModel, config: Dict[str, Any], state: Mapping[str, Any]) -> AutoGuide:
        config = dict(config)
        inputs = config.pop("inputs")
        guide = cls(model, **config)
        args = [None if s is None else torch.zeros([1, *s[0]], dtype=getattr(torch, s[1]), device=model.device)
                for s in inputs]  # fmt: skip
        was = model.training
        model.eval()  # no BatchNorm statistic moves while the prototype is traced
        try:
            guide._setup_prototype(*args)
        finally:
            model.train(was)
        return guide

    return build


for _cls in (AutoNormal, AutoDelta, AutoDiagonalNormal, AutoMultivariateNormal):
    register_guide(_cls, _pyro_config, _pyro_build(_cls), name=f"pyro.{_cls.__name__}")
