"""Argument checks shared by the training and prediction entry points."""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Optional, Tuple, Union

import torch
from pyro.infer.autoguide import AutoGuide

from .model import BayesianModel

Batches = Union[Iterable[Tuple[torch.Tensor, torch.Tensor]], Tuple[torch.Tensor, torch.Tensor]]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_float(name: str, value: Any, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonneg and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


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


def _check_guide(model: Any, guide: Any) -> None:
    if guide is None:
        return
    if not callable(guide):
        raise TypeError(f"guide must be a callable Pyro guide (e.g. an AutoGuide), got {type(guide).__name__}")
    if isinstance(guide, AutoGuide):
        inner = _unwrap_model(guide.model)
        if isinstance(inner, BayesianModel) and inner is not model:
            raise ValueError("guide was built for another model; build it with this model, e.g. AutoNormal(model)")
        trace = guide.prototype_trace
        if trace is not None and isinstance(model, BayesianModel):
            latent = {n for n, s in trace.iter_stochastic_nodes()}
            if latent and latent != set(model.sites) | set(model.scale_sites):
                raise ValueError(
                    f"guide was built for another model: its sites {sorted(latent)[:4]}... differ from the model's "
                    f"{sorted(model.sites)[:4]}..."
                )


def as_batches(data: Batches, name: str = "data") -> Iterable[Tuple[torch.Tensor, torch.Tensor]]:
    """Accept a ``DataLoader`` (or any iterable of ``(x, y)`` batches) or one ``(x, y)`` tuple."""
    if isinstance(data, tuple) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: x and y have different lengths ({x.shape[0]} and {y.shape[0]})")
        return [(x, y)]
    if torch.is_tensor(data) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a DataLoader / iterable of (x, y) batches or an (x, y) tuple")
    return data


def _unpack(batch: Any, name: str, device: Optional[torch.device]):
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"{name} must yield (x, y) pairs, got {type(batch).__name__}")
    x, y = batch
    if not (torch.is_tensor(x) and torch.is_tensor(y)):
        raise TypeError(f"{name} must yield tensors, got {type(x).__name__} and {type(y).__name__}")
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def _model_ref(model: Any) -> Optional[torch.Tensor]:
    if isinstance(model, torch.nn.Module):
        for b in model.buffers():
            return b
        for p in model.parameters():
            return p
    return None
