"""The network of a run: an MLP from ``--hidden``, or the user's ``--model module:factory`` with ``--weights``;
and its deterministic (MAP) pre-training.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["mlp", "import_factory", "build_network", "load_weights", "pretrain", "noise_std", "describe"]


def mlp(n_in: int, hidden: List[int], n_out: int) -> nn.Sequential:
    """``Linear → ReLU`` per hidden width, then a ``Linear`` to ``n_out``."""
    layers: List[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


def import_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable ``package.module:name`` names.

    :raises ValueError: a malformed spec, a module that does not import, a missing or non-callable attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"must be package.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported the same way
        raise ValueError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no callable {attr!r}")
    return factory


def build_network(
    hidden: List[int], model: Optional[str], n_in: int, n_out: int, input_shape: Optional[Tuple[int, ...]] = None
) -> nn.Module:
    """``model``'s factory called with whichever of ``in_features`` (features of a flattened example),
    ``out_features`` and ``input_shape`` (the per-example shape, e.g. ``(C, L)``) it accepts, else an MLP.

    :raises ValueError: the factory does not return an ``nn.Module``.
    """
    if model is None:
        return mlp(n_in, hidden, n_out)
    factory = import_factory(model)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    shape = tuple(input_shape) if input_shape is not None else (n_in,)
    offered = {"in_features": n_in, "out_features": n_out, "input_shape": shape}
    net = factory(**{k: v for k, v in offered.items() if k in params})
    if not isinstance(net, nn.Module):
        raise ValueError(f"{model!r} returned a {type(net).__name__}, not an nn.Module")
    return net


def load_weights(net: nn.Module, path: str) -> None:
    """Load a ``state_dict`` file (``torch.load(weights_only=True)``, strict names and shapes).

    :raises ValueError: the file is not a state dict of this network.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a file that does not fit
        raise ValueError(f"cannot load {path!r} into the network: {type(e).__name__}: {e}") from e


def _loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "classification":
        return F.cross_entropy
    return lambda out, y: F.mse_loss(out.reshape(y.shape), y)


def pretrain(net: nn.Module, loader: Any, task: str, epochs: int, lr: float, wd: float, progress: bool) -> Dict:
    """Adam on the cross-entropy (or squared error) with weight decay ``wd``: the MAP network.

    :returns: ``{"epochs", "final_loss"}``.
    :raises FloatingPointError: the loss became non-finite.
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
    loss_fn, last = _loss(task), math.nan
    for epoch in tqdm(range(epochs), desc="pre-training", disable=not progress, leave=False):
        total, n = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(xb), n + len(xb)
        last = total / max(n, 1)
        if not math.isfinite(last):
            raise FloatingPointError(f"pre-training diverged at epoch {epoch + 1} (loss {last}): lower --lr")
    return {"epochs": epochs, "final_loss": last}


def noise_std(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Root-mean-square training residual of a regression network (the Gaussian likelihood's fixed noise)."""
    with torch.no_grad():
        rms = float((net(x).reshape(y.shape) - y).pow(2).mean().sqrt())
    return max(rms, 1e-3)


def describe(net: nn.Module) -> Dict[str, Any]:
    """Parameter count and, for an ``nn.Sequential`` MLP, the layer widths ``"64-300-100-10"``."""
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    arch = "-".join(str(w) for w in [linear[0].in_features] + [m.out_features for m in linear]) if linear else ""
    return {"parameters": sum(p.numel() for p in net.parameters()), "linear_widths": arch, "class": type(net).__name__}
