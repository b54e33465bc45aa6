"""Checks that a guide belongs to a model (used by ``fit``, ``predict``, ``evaluate``)."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Optional

import pyro
import torch
from pyro.infer.autoguide import AutoGuide
from pyro.nn import PyroModule

from ..model import BayesianModel
from ..model.local_params import has_local_params

__all__ = ["check_guide", "model_ref", "warn_shared_store"]


def _unwrap_model(fn: Any, depth: int = 8) -> Any:
    """The model inside Pyro's handler wrappers (``functools.partial`` objects made by messengers)."""
    for _ in range(depth):
        if not isinstance(fn, functools.partial):
            return fn
        inner = [a for a in fn.args if callable(a)]
        if not inner:
            return fn
        fn = inner[-1]
    return fn


def check_guide(model: Any, guide: Any) -> None:
    """Raise if ``guide`` is not a callable guide, or was built for another model (other object or other sites)."""
    if guide is None:
        return
    if not callable(guide):
        raise TypeError(f"guide must be a callable Pyro guide (e.g. an AutoGuide), got {type(guide).__name__}")
    if not isinstance(guide, AutoGuide):
        return
    warn_shared_store(guide)
    held = guide.__dict__.get("_model")  # Pyro's AutoGuide drops its model when pickled (None then)
    inner = _unwrap_model(held[0]) if held else None
    if isinstance(inner, BayesianModel) and inner is not model:
        raise ValueError(
            "guide was built for another model object; build it with this model (e.g. AutoNormal(model)), or, for "
            "a copy, copy or pickle the model and its guide together: model2, guide2 = copy.deepcopy((model, guide))"
        )
    trace = guide.prototype_trace
    if trace is not None and isinstance(model, BayesianModel):
        latent = {n for n, s in trace.iter_stochastic_nodes()}
        if latent and latent != set(model.sites) | set(model.scale_sites):
            raise ValueError(
                f"guide was built for another model: its sites {sorted(latent)[:4]}... differ from the model's "
                f"{sorted(model.sites)[:4]}..."
            )


def warn_shared_store(guide: Any) -> None:
    """Warn when ``guide`` keeps its parameters in Pyro's global param store (Pyro's own autoguides) and the store
    holds, under its names, tensors that are not its own: another guide of the same name has written there, and
    this one will read that guide's values on its next call (Pyro's semantics; ours keep their parameters local)."""
    if not isinstance(guide, PyroModule) or has_local_params(guide) or pyro.settings.get("module_local_params"):
        return
    prefix = f"{getattr(guide, '_pyro_name', type(guide).__name__)}."
    own = {id(p) for p in guide.parameters()}
    foreign = [n for n, p in pyro.get_param_store().named_parameters() if n.startswith(prefix) and id(p) not in own]
    if foreign:
        warnings.warn(
            f"{type(guide).__name__} keeps its parameters in Pyro's global param store, where {foreign[:2]} now "
            "belong to another guide of the same name (built after this one, or a copy): this guide will read that "
            "guide's values. Use one such guide per process, or set pyro.settings.set(module_local_params=True) "
            "before building them (pyro_prune's own guides always keep their parameters to themselves).",
            stacklevel=3,
        )


def model_ref(model: Any) -> Optional[torch.Tensor]:
    """A tensor of the model (a buffer, else a parameter) telling its dtype and device, or ``None``."""
    if isinstance(model, torch.nn.Module):
        for b in model.buffers():
            return b
        for p in model.parameters():
            return p
    return None
