r"""Counting a plain network: parameters, FLOPs per example, and its architecture string.

Architecture strings (:func:`architecture`) list the input width and then the output width of every
weight layer in execution order, joined by ``-``; where the layer kind switches between convolution
and Linear, ``|`` and the new layer's input width are inserted: ``"64-300-100-10"`` for an MLP,
``"1-32-64|256-10"`` for two convolutions (1 input channel, 32 and 64 output channels), a flatten to
256 features and a Linear layer with 10 outputs.

FLOPs are counted per example as :math:`2\times` multiply-adds of the weight layers (biases,
activations and norms not counted): :math:`2\,n_\text{in} n_\text{out}` per Linear application and
:math:`2\,(C_\text{in}/g)\,\prod k\;C_\text{out}\prod(\text{output spatial size})` per convolution.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .dataflow import _WEIGHT_TYPES, _in_size, _out_size, _weight_order

__all__ = ["architecture", "count_flops", "count_params"]


def count_params(net: nn.Module) -> int:
    """Number of parameter entries of ``net`` (buffers such as running statistics not counted)."""
    return sum(p.numel() for p in net.parameters())


def architecture(net: nn.Module) -> str:
    """Architecture string of ``net``: input width, then each weight layer's output width.

    Joined by ``-``; where the kind switches between convolution and Linear, ``|`` and the new layer's
    input width are inserted.  Examples: ``"64-300-100-10"``, ``"1-32-64|256-10"``.  The input selection of
    :func:`~pyro_prune.compact.select_inputs` does not appear (the first width is the first layer's input width).
    """
    modules = dict(net.named_modules())
    parts: List[str] = []
    previous: Optional[bool] = None
    for name in _weight_order(net):
        m = modules[name]
        is_conv = not isinstance(m, nn.Linear)
        if previous is None:
            parts.append(str(_in_size(m)))
        elif is_conv != previous:
            parts.append("|" + str(_in_size(m)))
        parts.append("-" + str(_out_size(m)))
        previous = is_conv
    return "".join(parts)


def _set_modes(net: nn.Module, modes: Optional[Dict[nn.Module, bool]] = None) -> Dict[nn.Module, bool]:
    """Put ``net`` in eval mode and return the saved modes, or (given ``modes``) restore them."""
    if modes is None:
        saved = {m: m.training for m in net.modules()}
        net.eval()
        return saved
    for m, training in modes.items():
        m.training = training
    return modes


def run_counting(net: nn.Module, x: torch.Tensor) -> Tuple[int, Any]:
    """FLOPs per example and output of ``net(x)`` in eval mode, without changing ``net``."""
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError("example_input needs a leading batch dimension with at least one example")
    batch = x.shape[0]
    total = [0]

    def hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        if isinstance(m, nn.Linear):
            total[0] += 2 * m.in_features * out.numel()
        else:
            total[0] += 2 * (m.in_channels // m.groups) * math.prod(m.kernel_size) * out.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, _WEIGHT_TYPES)]
    modes = _set_modes(net)
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        _set_modes(net, modes)
        for h in handles:
            h.remove()
    return total[0] // batch, out


def count_flops(net: nn.Module, example_input: Optional[torch.Tensor] = None) -> int:
    """FLOPs per example (multiply-adds × 2 of the Linear / convolution layers).

    With ``example_input`` (a batch) the layers are measured with forward hooks in eval mode; without
    it every Linear layer counts :math:`2\\,n_\\text{in}n_\\text{out}` once, and a network with
    convolutions raises ``ValueError`` (their cost depends on the spatial size).
    """
    if example_input is not None:
        return run_counting(net, example_input)[0]
    convs = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    if convs:
        raise ValueError(
            f"counting the FLOPs of convolution layers ({', '.join(convs)}) needs their output size: "
            "pass example_input (a batch of inputs)"
        )
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))
