r"""Pruned networks in forms other tools use: torch's pruning convention, sparse CSR weights, ``torch.export``.

:func:`~pyro_prune.prune` returns a dense network whose pruned weights are exactly zero (``result.module``).
Nothing downstream knows those zeros are structural; this module hands them over:

* :func:`to_torch_prune` — the ``torch.nn.utils.prune`` convention: each pruned layer gets ``weight_orig`` (a
  parameter) and ``weight_mask`` (a buffer) through ``prune.custom_from_mask``, with ``weight`` recomputed as
  ``weight_orig * weight_mask`` by torch's forward pre-hook, so ``prune.remove``, ``prune.is_pruned`` and
  torch's other pruning tools work on it;
* :func:`to_sparse` — every masked ``nn.Linear`` replaced by a :class:`SparseLinear` holding its weight as a
  ``torch.sparse_csr`` tensor (row pointers, column indices, values: about
  :math:`(\text{nnz}\,(b_v + b_i) + (m + 1)\,b_i)` bytes for an :math:`m`-row matrix, against :math:`m n b_v`
  dense), computing :math:`y = (W x^\top)^\top + b` with a sparse-dense product;
* :func:`measure_speedup` — the CPU inference time of the sparse network against the dense one at the achieved
  sparsity, interleaved (dense and sparse alternate, their order flipped each repeat, so that drifts of a shared
  machine hit both) with the median of the repeats; it can well be below 1 at moderate sparsity, and is reported
  as measured;
* :func:`export_program` — ``torch.export`` of a network to a ``.pt2`` file that ``torch.export.load`` reads
  without the network's Python class;
* :func:`to_torchscript` — TorchScript (``torch.jit.script`` where the network scripts, else ``torch.jit.trace``
  on an example batch, which it says) to a file that ``torch.jit.load`` reads without the class, from Python or
  C++ (libtorch).
"""

from __future__ import annotations

import copy
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from .._checks import check_int

__all__ = [
    "to_torch_prune",
    "SparseLinear",
    "to_sparse",
    "SpeedUp",
    "measure_speedup",
    "export_program",
    "ScriptExport",
    "to_torchscript",
]

PathLike = Union[str, "os.PathLike[str]"]


def _layer_masks(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``{layer name: bool mask}`` from ``{"<layer>.weight": mask}``, checked against the layers' weights."""
    out = {}
    for site, mask in masks.items():
        layer, _, attr = site.rpartition(".")
        if attr != "weight":
            raise ValueError(f"masks must be keyed by '<layer>.weight', got {site!r}")
        try:
            weight = module.get_submodule(layer).weight
        except AttributeError:
            raise ValueError(f"the network has no layer {layer!r} with a weight (mask {site!r})") from None
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(f"mask {site!r} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
        out[layer] = mask.to(torch.bool)
    return out


def to_torch_prune(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``module`` in ``torch.nn.utils.prune``'s convention.

    Each masked layer is passed to ``prune.custom_from_mask(layer, "weight", mask)``: its ``state_dict`` then has
    ``weight_orig`` (the weights, kept entries bit for bit) and ``weight_mask`` (``1.0`` kept, ``0.0`` pruned), and
    ``prune.remove(layer, "weight")`` folds the mask back into a plain ``weight``.

    :param module: a network, e.g. ``pp.prune(...).module`` (or ``.masked_module`` for a structured rule).
    :param masks: ``{"<layer>.weight": bool keep mask}`` shaped like each weight (``PruneResult.masks``).
    :returns: the copy (``module`` is not modified).
    :raises ValueError: a mask for no layer, or of the wrong shape.
    """
    out = copy.deepcopy(module)
    for layer, mask in _layer_masks(out, masks).items():
        sub = out.get_submodule(layer)
        torch_prune.custom_from_mask(sub, "weight", mask.to(sub.weight.device))
    return out


class SparseLinear(nn.Module):
    r"""A linear layer with a ``torch.sparse_csr`` weight: :math:`y = (W x^\top)^\top + b` (inference only).

    :param weight: the ``(out, in)`` weight, dense (zeros dropped) or already CSR.
    :param bias: the ``(out,)`` bias or ``None``.

    ``weight`` (CSR) and ``bias`` are buffers, so they are in the ``state_dict`` (``torch.save`` and
    ``torch.load(weights_only=True)`` read CSR tensors) and move with ``.to()``; loading a state dict replaces the
    CSR tensor, whatever its number of non-zeros.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None):
        super().__init__()
        weight = weight.detach()
        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
        with warnings.catch_warnings():  # torch's "sparse CSR support is in beta state", once per process
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
            csr = weight if weight.layout == torch.sparse_csr else weight.to_sparse_csr()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", csr)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        key = prefix + "weight"
        if key in state_dict:  # a CSR tensor cannot be copied into one of another nnz: replace it
            self.weight = state_dict[key].to(self.weight.device)
            state_dict = {k: v for k, v in state_dict.items() if k != key}
            local_metadata = dict(local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        if key in missing:
            missing.remove(key)

    def extra_repr(self) -> str:
        nnz = self.weight._nnz()
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={nnz}"


def to_sparse(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``module`` with every masked ``nn.Linear`` replaced by a :class:`SparseLinear` (CSR weight).

    Entries the mask removes are dropped, and so are exact zeros among the kept ones (CSR stores non-zeros).
    Other masked layers (convolutions) stay dense and masked.

    :param module: a network, e.g. ``pp.prune(...).module``.
    :param masks: ``{"<layer>.weight": bool keep mask}`` (``PruneResult.masks``).
    :returns: the copy; its outputs equal ``module``'s up to floating-point summation order.
    :raises ValueError: a mask for no layer, or of the wrong shape.
    """
    out = copy.deepcopy(module)
    for layer, mask in _layer_masks(out, masks).items():
        sub = out.get_submodule(layer)
        weight = sub.weight.detach() * mask.to(sub.weight.device, sub.weight.dtype)
        if not isinstance(sub, nn.Linear):
            with torch.no_grad():
                sub.weight.copy_(weight)
            continue
        sparse = SparseLinear(weight, sub.bias)
        if layer:
            parent, _, name = layer.rpartition(".")
            setattr(out.get_submodule(parent), name, sparse)
        else:
            out = sparse
    return out


@dataclass
class SpeedUp:
    """What :func:`measure_speedup` measured (times in milliseconds per forward pass of one batch).

    :ivar dense_ms: median time of the dense network.
    :ivar sparse_ms: median time of the sparse network.
    :ivar speedup: ``dense_ms / sparse_ms`` (below 1: the sparse network is slower).
    :ivar ratio_q25: lower quartile of the per-repeat ratios.
    :ivar ratio_q75: upper quartile of the per-repeat ratios.
    :ivar repeats: number of interleaved repeats.
    :ivar batch: examples per forward pass.
    :ivar threads: ``torch.get_num_threads()`` during the measurement.
    """

    dense_ms: float
    sparse_ms: float
    speedup: float
    ratio_q25: float
    ratio_q75: float
    repeats: int
    batch: int
    threads: int

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a JSON-able dict."""
        return asdict(self)


def _time_once(net: nn.Module, x: torch.Tensor, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        net(x)
    return (time.perf_counter() - t0) * 1e3 / inner


def measure_speedup(
    dense: nn.Module, sparse: nn.Module, x: torch.Tensor, repeats: int = 21, inner: int = 5, warmup: int = 3
) -> SpeedUp:
    """Interleaved CPU timing of two networks on the same batch, median of ``repeats``.

    Each repeat times ``inner`` forward passes of each network, the order alternating between repeats; the
    first ``warmup`` repeats are discarded. Runs under ``torch.no_grad()``.

    :param dense: the reference network (e.g. ``result.module``).
    :param sparse: the network to compare (e.g. :func:`to_sparse`'s).
    :param x: one input batch.
    :param repeats: timed repeats, :math:`\\ge 3`.
    :param inner: forward passes per timing, :math:`\\ge 1`.
    :param warmup: untimed repeats first, :math:`\\ge 0`.
    :returns: a :class:`SpeedUp`.
    """
    check_int("repeats", repeats, 3)
    check_int("inner", inner, 1)
    check_int("warmup", warmup, 0)
    times: Dict[str, List[float]] = {"dense": [], "sparse": []}
    nets = {"dense": dense, "sparse": sparse}
    with torch.no_grad():
        for r in range(warmup + repeats):
            order = ("dense", "sparse") if r % 2 == 0 else ("sparse", "dense")
            for name in order:
                t = _time_once(nets[name], x, inner)
                if r >= warmup:
                    times[name].append(t)
    ratios = sorted(d / s for d, s in zip(times["dense"], times["sparse"]))
    quartiles = statistics.quantiles(ratios, n=4)
    d_ms, s_ms = statistics.median(times["dense"]), statistics.median(times["sparse"])
    return SpeedUp(d_ms, s_ms, d_ms / s_ms, quartiles[0], quartiles[2], repeats, len(x), torch.get_num_threads())


def export_program(module: nn.Module, example: torch.Tensor, path: PathLike) -> None:
    """Write ``torch.export.export(module, (example,))`` to ``path`` (a ``.pt2`` file).

    ``torch.export.load(path).module()`` runs it without ``module``'s Python class. The batch dimension is
    exported as dynamic (any batch size of at least 2); where the network does not allow it, the example's batch
    size is fixed, with a warning.

    :param module: the network (in eval mode for export).
    :param example: one input batch.
    :param path: the file to write.
    """
    module = copy.deepcopy(module).eval()
    try:
        batch = torch.export.Dim("batch", min=2)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as e:  # noqa: BLE001 - torch raises several kinds when a dimension cannot be dynamic
        warnings.warn(f"exported with the fixed batch size {len(example)}: a dynamic batch failed ({e})", stacklevel=2)
        program = torch.export.export(module, (example,))
    torch.export.save(program, os.fspath(path))


@dataclass
class ScriptExport:
    r"""How :func:`to_torchscript` converted a network.

    :ivar method: ``"script"`` (``torch.jit.script``: the Python control flow is compiled) or ``"trace"``
        (``torch.jit.trace`` on the example: the operations that batch ran are recorded, so branches that depend
        on the input's values or shape are frozen as the example took them).
    :ivar script_error: why ``torch.jit.script`` failed (``None`` when it succeeded).
    :ivar max_abs_diff: :math:`\max |f_{\text{loaded}}(x) - f(x)|` over the example, the file read back with
        ``torch.jit.load``.
    :ivar example_shape: the example batch's shape.
    """

    method: str
    script_error: Optional[str]
    max_abs_diff: float
    example_shape: List[int]

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a JSON-able dict."""
        return asdict(self)


def to_torchscript(module: nn.Module, example: torch.Tensor, path: PathLike) -> ScriptExport:
    """Write ``module`` as TorchScript to ``path`` (``torch.jit.save``; ``torch.jit.load(path)`` runs it).

    ``torch.jit.script`` is tried first; if the network does not script (Python the TorchScript compiler does
    not accept), it is traced with ``torch.jit.trace(module, (example,))`` and the returned
    :class:`ScriptExport` says so, with the scripting error (no silent fallback). The file is read back and its
    output on ``example`` compared with the module's (``max_abs_diff``).

    :param module: the network (a copy is converted, in eval mode).
    :param example: one input batch ``(B, ...)`` on the module's device.
    :param path: the file to write (e.g. ``network.ts``).
    :returns: a :class:`ScriptExport`.
    :raises RuntimeError: the network neither scripts nor traces (both errors in the message).
    """
    module = copy.deepcopy(module).eval()
    error = None
    try:
        converted = torch.jit.script(module)
    except Exception as e:  # noqa: BLE001 - the TorchScript compiler raises several kinds on unsupported Python
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        try:
            with torch.no_grad():
                converted = torch.jit.trace(module, (example,))
        except Exception as e2:  # noqa: BLE001 - likewise for the tracer
            raise RuntimeError(f"the network neither scripts ({error}) nor traces ({type(e2).__name__}: {e2})") from e2
    torch.jit.save(converted, os.fspath(path))
    loaded = torch.jit.load(os.fspath(path), map_location=example.device)
    with torch.no_grad():
        diff = float((loaded(example) - module(example)).abs().max())
    return ScriptExport("script" if error is None else "trace", error, diff, list(example.shape))
