"""Checks that a guide belongs to a model (used by ``fit``, ``predict``, ``evaluate``)."""

from __future__ import annotations

import functools
from typing import Any, Optional

import torch
from pyro.infer.autoguide import AutoGuide

from ..model import BayesianModel

__all__ = ["check_guide", "model_ref"]


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


def model_ref(model: Any) -> Optional[torch.Tensor]:
    """A tensor of the model (a buffer, else a parameter) telling its dtype and device, or ``None``."""
    if isinstance(model, torch.nn.Module):
        for b in model.buffers():
            return b
        for p in model.parameters():
            return p
    return None
