"""Pieces of the Laplace guide: the layer view of weight sites, MAP sources, subnetwork masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoGuide

from ...model import BayesianModel
from ...subnet import Selection

__all__ = ["Layer", "map_values", "make_layers", "subnet_masks", "whole_layers", "plain_net"]


@dataclass
class Layer:
    """One Linear/Conv layer: its weight (and bias) sites, as one ``(out, in')`` matrix."""

    module: str
    weight: str
    bias: Optional[str]
    weight_shape: torch.Size
    out: int
    fan_in: int  # inputs per output, without the bias column

    @property
    def cols(self) -> int:
        return self.fan_in + (self.bias is not None)

    @property
    def numel(self) -> int:
        return self.out * self.cols

    def join(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w = values[self.weight].reshape(values[self.weight].shape[: -len(self.weight_shape)] + (self.out, -1))
        if self.bias is None:
            return w
        return torch.cat([w, values[self.bias].unsqueeze(-1)], -1)

    def split(self, mat: torch.Tensor) -> Dict[str, torch.Tensor]:
        batch = mat.shape[:-2]
        out = {self.weight: mat[..., : self.fan_in].reshape(batch + self.weight_shape)}
        if self.bias is not None:
            out[self.bias] = mat[..., self.fan_in]
        return out


def _source_values(model: BayesianModel, map_from: Any) -> Tuple[Mapping[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``({site: value}, {other state entries})`` as ``map_from`` gives them (not yet checked)."""
    if map_from is None:
        return model.initial_weights(), {}
    if isinstance(map_from, nn.Module) and not isinstance(map_from, AutoGuide):
        state = map_from.state_dict()
        return {k: state[k] for k in model.sites if k in state}, {
            k: v for k, v in state.items() if k not in model.sites
        }
    if isinstance(map_from, Mapping):
        bad = [k for k, v in map_from.items() if not torch.is_tensor(v)]
        if bad:
            raise TypeError(f"map_from: state_dict entries {bad[:3]} are not tensors")
        values = {k: v for k, v in map_from.items() if k in model.sites}
        return values, {k: v for k, v in map_from.items() if k not in model.sites}
    if callable(getattr(map_from, "median", None)):
        if isinstance(map_from, AutoGuide) and map_from.prototype_trace is None:
            raise ValueError("map_from: the guide is not initialized; fit it first (pp.fit) or call guide(x, y) once")
        try:
            return dict(map_from.median()), {}
        except NotImplementedError:
            msg = f"map_from: {type(map_from).__name__} cannot give a MAP (median() is not implemented)"
            raise TypeError(msg) from None
    raise TypeError(
        "map_from must be None (the network's weights), a trained guide with median() (AutoDelta, AutoNormal...), "
        f"an nn.Module or a state_dict, got {type(map_from).__name__}"
    )


def map_values(model: BayesianModel, map_from: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``({site: MAP value}, {other state entries})`` from ``map_from``, checked against the model's sites."""
    values, extra = _source_values(model, map_from)
    missing = [k for k in model.sites if k not in values]
    if missing:
        raise ValueError(f"map_from gives no value for weight sites {missing}")
    out = {}
    for k in model.sites:
        v = values[k].detach().to(device=model.device, dtype=model.dtype)
        if v.shape != model.sites[k].shape:
            raise ValueError(
                f"map_from: {k!r} has shape {tuple(v.shape)}, the model's site {tuple(model.sites[k].shape)}"
            )
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"map_from: {k!r} contains NaN or inf")
        out[k] = v
    return out, extra


def make_layers(model: BayesianModel) -> List[Layer]:
    by_module: Dict[str, Dict[str, Any]] = {}
    for name, info in model.sites.items():
        if info.kind == "other" or info.param not in ("weight", "bias"):
            raise ValueError(
                f"site {name!r} ({info.kind}) cannot be part of a Laplace posterior: only Linear/Conv1d/Conv2d "
                "weights and biases (normalization layers stay point estimates)"
            )
        by_module.setdefault(info.module, {})[info.param] = info
    layers = []
    for module, ps in by_module.items():
        if "weight" not in ps:
            raise ValueError(f"module {module!r} has a Bayesian bias but a point-estimate weight; not supported")
        w = ps["weight"]
        b = ps.get("bias")
        layers.append(Layer(module, w.name, None if b is None else b.name, w.shape, w.shape[0], w.numel // w.shape[0]))
    return layers


def subnet_masks(model: BayesianModel, subnet: Any) -> Dict[str, torch.Tensor]:
    if isinstance(subnet, Selection):  # a pp.subnet strategy (the selection code AutoSubnetwork uses)
        subnet = subnet.select(model)
    sizes = {k: info.numel for k, info in model.sites.items()}
    total = sum(sizes.values())
    if subnet is None:
        return {k: torch.ones(n, dtype=torch.bool, device=model.device) for k, n in sizes.items()}
    if isinstance(subnet, Mapping):
        unknown = [k for k in subnet if k not in model.sites]
        if unknown:
            raise ValueError(f"subnet names unknown sites {unknown}; sites are {list(model.sites)}")
        masks = {}
        for k, n in sizes.items():
            m = subnet.get(k)
            if m is None:
                masks[k] = torch.zeros(n, dtype=torch.bool, device=model.device)
                continue
            m = torch.as_tensor(m, device=model.device)
            if m.dtype != torch.bool or m.shape != model.sites[k].shape:
                raise ValueError(f"subnet[{k!r}] must be a bool mask of shape {tuple(model.sites[k].shape)}")
            masks[k] = m.reshape(-1)
    else:
        idx = torch.as_tensor(subnet, device=model.device)
        if idx.dtype == torch.bool or idx.is_floating_point() or idx.dim() != 1:
            raise TypeError("subnet must be a {site: bool mask} dict or a 1-D tensor of flat integer indices")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= total):
            raise ValueError(f"subnet indices must lie in [0, {total}) (the number of weights in the sites)")
        flat = torch.zeros(total, dtype=torch.bool, device=model.device)
        flat[idx] = True
        masks, pos = {}, 0
        for k, n in sizes.items():
            masks[k] = flat[pos : pos + n]
            pos += n
    if not any(bool(m.any()) for m in masks.values()):
        raise ValueError("subnet selects no weights")
    return masks


def whole_layers(model: BayesianModel, layers: List[Layer], subnet: Any, structure: str) -> List[str]:
    """The module names of the layers that ``subnet`` (a :class:`~pyro_prune.subnet.Selection`, a ``{site: bool
    mask}`` or flat indices, as for :func:`subnet_masks`) selects, each one whole: every weight and bias entry.

    :raises ValueError: the subnet selects part of a layer (only ``structure="full"`` takes single weights).
    """
    masks = subnet_masks(model, subnet)
    chosen = []
    for layer in layers:
        sites = [s for s in (layer.weight, layer.bias) if s is not None]
        picked = sum(int(masks[s].sum()) for s in sites)
        if picked == layer.numel:
            chosen.append(layer.module)
        elif picked:
            raise ValueError(
                f"subnet selects {picked} of the {layer.numel} weights of layer {layer.module!r} ({', '.join(sites)}); "
                f"structure={structure!r} takes whole layers (every weight and bias of a layer, e.g. "
                "pp.subnet.LastLayer() or pp.subnet.Layers([...])): partial layers need structure='full'"
            )
    return chosen


def plain_net(model: BayesianModel, *states: Mapping[str, torch.Tensor]) -> nn.Module:
    """The model's plain network (``model.template()``) with its state and then each of ``states`` loaded where the
    names and shapes match (later ones win: e.g. BatchNorm statistics, then the weights), frozen, in eval mode."""
    net = model.template().to(dtype=model.dtype)
    state = net.state_dict()
    for source in (model.net.state_dict(),) + states:
        for k, v in source.items():
            if k in state and state[k].shape == v.shape:
                state[k] = v.detach().to(dtype=state[k].dtype) if state[k].is_floating_point() else v.detach()
    net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
