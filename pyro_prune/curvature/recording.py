r"""Module hooks that record a layer's inputs :math:`a` and pre-activations :math:`s = W a` in one forward pass,
and the reshaping of both into per-position rows (KFC [1] patches for convolutions).

For a layer with :math:`T` output positions per example (1 for a Linear layer on ``(B, in)``; extra leading
dimensions and convolution outputs count as positions), inputs become ``(B, T, in')`` (``in' = in·k``, plus a
column of ones for the bias) and the batched gradients of the outputs with respect to :math:`s` become
``(C, B, T, out)``: the per-example gradient of the weight matrix is :math:`\sum_t g_t a_t^\top`.

References

[1] Roger Grosse, James Martens. "A Kronecker-factored approximate Fisher matrix for convolution layers", ICML 2016.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import unpack_batch

__all__ = ["SUPPORTED_LAYERS", "Recorder", "check_batch", "load_batch", "frozen", "tracked_modules"]

SUPPORTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def tracked_modules(net: nn.Module, names: Mapping[str, Any]) -> Dict[str, nn.Module]:
    """``{name: module}`` for the named Linear/Conv1d/Conv2d modules of ``net``."""
    modules = {}
    for name in names:
        m = net.get_submodule(name)
        if not isinstance(m, SUPPORTED_LAYERS):
            raise ValueError(f"module {name!r} is a {type(m).__name__}; curvature supports Linear, Conv1d and Conv2d")
        modules[name] = m
    return modules


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """Reject an empty batch and NaN/inf inputs or targets."""
    if x.shape[0] == 0:
        raise ValueError("data yielded an empty batch")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("data contains NaN or inf inputs")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("data contains NaN or inf targets")


def load_batch(batch: Any, ref: torch.Tensor, name: str = "data") -> tuple:
    """One checked ``(x, y)`` batch on ``ref``'s device, floating inputs in ``ref``'s dtype."""
    x, y = unpack_batch(batch, name, ref.device)
    if x.is_floating_point():
        x = x.to(ref.dtype)
    check_batch(x, y)
    return x, y


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Parameters need no gradient inside (the recorded pre-activations are the graph's leaves); restored after."""
    params = list(net.parameters())
    req = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(params, req):
            p.requires_grad_(r)


def patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer inputs as ``(B, T, in)``: unfolded patches for convolutions (KFC), positions for Linear."""
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1, x.shape[-1])
    if module.groups != 1:
        raise ValueError(f"grouped convolutions (groups={module.groups}) are not supported by KFAC/diag curvature")
    if isinstance(module.padding, str):
        raise ValueError(f"conv padding={module.padding!r} is not supported; give padding as integers")
    kernel, stride, dilation, padding = module.kernel_size, module.stride, module.dilation, tuple(module.padding)
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)
        kernel, stride, dilation, padding = (1,) + kernel, (1,) + stride, (1,) + dilation, (0,) + padding
    if module.padding_mode != "zeros":
        pads: List[int] = []
        for p in reversed(padding):
            pads += [p, p]
        x = F.pad(x, pads, mode=module.padding_mode)
        padding = (0,) * len(padding)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, in*k, T)
    return cols.transpose(1, 2)


def grad_positions(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """Batched gradients ``(C, B, ...)`` of a layer's output as ``(C, B, T, out)``."""
    if isinstance(module, nn.Linear):
        return g.reshape(g.shape[0], g.shape[1], -1, g.shape[-1])
    return g.flatten(3).transpose(2, 3)


def augment(a: torch.Tensor, bias: bool) -> torch.Tensor:
    """Append the bias input (a column of ones) to ``a`` ``(..., in)`` when ``bias``."""
    if not bias:
        return a
    return torch.cat([a, torch.ones(a.shape[:-1] + (1,), dtype=a.dtype, device=a.device)], -1)


class Recorder:
    """Forward hooks that record each tracked module's input and output for one forward pass."""

    def __init__(self, modules: Mapping[str, nn.Module]):
        self.modules = dict(modules)
        self.inputs: Dict[str, torch.Tensor] = {}
        self.outputs: Dict[str, torch.Tensor] = {}
        self.handles: list = []

    def __enter__(self) -> Recorder:
        for name, m in self.modules.items():
            self.handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(module, args, out):
            if name in self.outputs:
                raise ValueError(f"module {name!r} runs twice in one forward pass (shared weights are not supported)")
            self.inputs[name] = args[0].detach()
            if not out.requires_grad:  # parameters need no grad: the pre-activations become the graph's leaves
                out.requires_grad_(True)
            self.outputs[name] = out
            return out.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the recorded tensor

        return hook

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def backward(self, f: torch.Tensor, vectors: torch.Tensor) -> List[torch.Tensor]:
        """Batched gradients ``(C,) + output shape`` of :math:`\\langle f, v_c\\rangle` wrt every recorded output
        (zeros for a module ``f`` does not depend on)."""
        outs = [self.outputs[k] for k in self.modules]
        grads = torch.autograd.grad(f, outs, grad_outputs=vectors, is_grads_batched=True, allow_unused=True)
        return [
            torch.zeros((vectors.shape[0],) + o.shape, dtype=f.dtype, device=f.device) if g is None else g
            for o, g in zip(outs, grads)
        ]

    def layer_rows(self, name: str, bias: bool, g: torch.Tensor) -> tuple:
        """``(a (B, T, in'), g (C, B, T, out))`` of one module, from its batched output gradients ``g``."""
        m = self.modules[name]
        return augment(patches(m, self.inputs[name]), bias), grad_positions(m, g)
