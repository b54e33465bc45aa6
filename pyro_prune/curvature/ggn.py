r"""Jacobians of the network outputs and the exact (dense) GGN, for the full Laplace posterior and the
linearized (GLM) predictive.

* :func:`output_jacobians`: per layer, the inputs :math:`a` and the Jacobian :math:`\partial f / \partial s` of
  the outputs wrt its pre-activations, from one forward and one batched backward with ``K`` vectors; the weight
  Jacobian is :math:`\sum_t (\partial f / \partial s_t)\, a_t^\top` (no loop over examples).
* :func:`param_jacobians`: the Jacobian ``(B, K, P)`` wrt chosen parameter entries, per example (vmap of jacrev).
* :func:`full_ggn`: :math:`\sum_n J_n^\top H_n J_n = \sum_n \sum_c (L_{nc}^\top J_n)^\top (L_{nc}^\top J_n)` with
  the likelihood's Hessian square roots :math:`L` (exact GGN, or the sampled-label Fisher).

When the selected entries are whole Linear/Conv layers (the ``full`` Laplace over every weight), :func:`full_ggn`
builds the GGN block by block from one forward and one batched backward per batch (:func:`layer_ggn`).  With
:math:`g^l_{nc} = (\partial f / \partial s^l)^\top L_{nc}` the backpropagated vectors at layer :math:`l`'s
pre-activations and :math:`a^l_n` its inputs (a column of ones for the bias), the row of example :math:`n` and
vector :math:`c` is :math:`g^l_{nc} \otimes a^l_n` (one output position, :math:`T = 1`), so

.. math::

    \mathrm{GGN}_{lm}[(o, i), (p, j)] = \sum_n \Gamma^{lm}_n[o, p]\; a^l_{ni}\, a^m_{nj}, \qquad
    \Gamma^{lm}_n = \sum_c g^l_{nc}\, (g^m_{nc})^\top ,

one matrix product :math:`(\Gamma^{lm})^\top Q^{lm}` over the examples with :math:`Q^{lm}_n = a^l_n \otimes
a^m_n`: :math:`2 N P_l P_m` operations, against :math:`2 N C P_l P_m` for :math:`(LJ)^\top (LJ)` (:math:`C = K`
vectors for the exact GGN of a softmax).  Layers with :math:`T > 1` positions (convolutions, Linear layers on
extra leading dimensions) use the rows :math:`\sum_t g^l_{nct} \otimes a^l_{nt}` (per-example gradients, no
Jacobian of the whole network) and :math:`R_l^\top R_m`.  Only the blocks :math:`l \le m` are computed; the
others are their transposes.  Other selections (masked entries, parameters of other modules) use
:func:`jacobian_ggn`: per-example Jacobians by ``torch.func`` and :math:`(LJ)^\top (LJ)`.  Both give the same
matrix up to rounding (the order of the sums differs).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.func import functional_call, jacrev, vmap

from .._checks import as_batches
from ..model.likelihoods import Fisher, Likelihood
from .kfac import batch_gradients
from .recording import SUPPORTED_LAYERS, Recorder, frozen, load_batch, tracked_modules

__all__ = ["output_jacobians", "param_jacobians", "full_ggn", "layer_ggn", "jacobian_ggn", "dense_bytes"]

#: numbers in one chunk's :math:`\Gamma` (``rows · C · out_l · out_m``) or :math:`Q` (``rows · in_l · in_m``), at most
_CHUNK_NUMBERS = 1 << 22


def output_jacobians(
    net: nn.Module, x: torch.Tensor, likelihood: Likelihood, layers: Mapping[str, bool]
) -> Tuple[torch.Tensor, Dict[str, Tuple[torch.Tensor, torch.Tensor]]]:
    r"""Outputs and, per layer, the inputs and the Jacobian of the outputs wrt its pre-activations.

    :param layers: ``{module name: whether its bias is included}``.
    :returns: ``f`` ``(B, K)`` and ``{layer: (a (B, T, in'), J_s (K, B, T, out))}`` with
        :math:`J_s[k, b, t] = \partial f_{bk} / \partial s_{bt}`.
    """
    likelihood.check_curvature()
    modules = tracked_modules(net, layers)
    with frozen(net), Recorder(modules) as rec, torch.enable_grad():
        f = likelihood.flatten_output(net(x))
        K = f.shape[-1]
        eye = torch.eye(K, dtype=f.dtype, device=f.device).unsqueeze(1).expand(K, f.shape[0], K)
        grads = rec.backward(f, eye)
        res = {name: rec.layer_rows(name, layers[name], g) for name, g in zip(modules, grads)}
    return f.detach(), res


def param_jacobians(
    net: nn.Module,
    x: torch.Tensor,
    likelihood: Likelihood,
    params: Mapping[str, Optional[torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Outputs ``(B, K)`` and the Jacobian ``(B, K, P)`` wrt the selected parameter entries, via ``torch.func``.

    :param params: ``{parameter name: flat bool mask or None (all entries)}``, in the order of the flat vector.
    """
    likelihood.check_curvature()
    named = dict(net.named_parameters())
    named.update(dict(net.named_buffers()))
    chosen = {k: named[k].detach() for k in params}

    def fn(ps, inputs):
        full = dict(named)
        full.update(ps)
        return likelihood.flatten_output(functional_call(net, full, (inputs,)))

    def one(ps, xi):  # one example: the (K, ...) Jacobian of its outputs
        return fn(ps, xi.unsqueeze(0)).squeeze(0)

    net.eval()
    # per example (vmap over the batch of jacrev of one example): O(B K) backward passes' work, where jacrev of the
    # whole batch's outputs would run B K backward passes through the whole batch, O(B^2 K)
    jac = vmap(jacrev(one), in_dims=(None, 0))(chosen, x)
    cols = []
    for k, mask in params.items():
        j = jac[k].reshape(x.shape[0], -1, chosen[k].numel())
        cols.append(j if mask is None else j[:, :, mask.reshape(-1)])
    with torch.no_grad():
        f = fn(chosen, x)
    return f, torch.cat(cols, -1)


def full_ggn(
    net: nn.Module,
    data,
    likelihood: Likelihood,
    params: Mapping[str, Optional[torch.Tensor]],
    fisher: Fisher = "exact",
    mc_samples: int = 1,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, int, float]:
    r"""The GGN :math:`\sum_n J_n^\top H_n J_n` over the selected parameter entries; ``fisher="mc"`` uses the
    sampled-label Fisher for :math:`H_n`.  Whole Linear/Conv layers go through :func:`layer_ggn` (blockwise, no
    per-example Jacobians), anything else through :func:`jacobian_ggn`; both give the same matrix.

    :param params: ``{parameter name: flat bool mask or None (all entries)}``, in the order of the flat vector.
    :returns: ``(GGN (P, P), number of examples, log-likelihood sum)`` (the GGN is a sum, not a mean).
    """
    layers = whole_layers(net, params)
    if layers is None:
        return jacobian_ggn(net, data, likelihood, params, fisher, mc_samples, generator)
    return layer_ggn(net, data, likelihood, layers, fisher, mc_samples, generator, order=list(params))


def jacobian_ggn(
    net: nn.Module,
    data,
    likelihood: Likelihood,
    params: Mapping[str, Optional[torch.Tensor]],
    fisher: Fisher = "exact",
    mc_samples: int = 1,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, int, float]:
    r""":func:`full_ggn` from per-example Jacobians (:func:`param_jacobians`): :math:`\sum (LJ)^\top (LJ)`, one
    matrix product per batch, for any selection of entries of any parameters."""
    ref = next(net.parameters())
    ggn, n, loglik = None, 0, 0.0
    for batch in as_batches(data):
        x, y = load_batch(batch, ref)
        f, J = param_jacobians(net, x, likelihood, params)
        likelihood.check_target(y, f)
        loglik += float(likelihood.log_likelihood(f, y, check=False).sum().detach())
        L = likelihood.hessian_sqrt(f, fisher, mc_samples, generator)  # (C, B, K)
        LJ = torch.einsum("cbk,bkp->cbp", L, J).reshape(-1, J.shape[-1])
        ggn = LJ.T @ LJ if ggn is None else ggn.addmm_(LJ.T, LJ)
        n += x.shape[0]
    if n == 0:
        raise ValueError("data yielded no examples")
    return ggn, n, loglik


def whole_layers(net: nn.Module, params: Mapping[str, Optional[torch.Tensor]]) -> Optional[Dict[str, bool]]:
    """``{module name: whether its bias is selected}`` when ``params`` selects every entry of the weights (and
    possibly biases) of Linear/Conv modules that :func:`layer_ggn` handles; ``None`` otherwise."""
    kinds: Dict[str, set] = {}
    for name, mask in params.items():
        module, _, kind = name.rpartition(".")
        if kind not in ("weight", "bias") or (mask is not None and not bool(mask.all())):
            return None
        m = net.get_submodule(module)
        if (
            not isinstance(m, SUPPORTED_LAYERS)
            or getattr(m, "groups", 1) != 1
            or isinstance(getattr(m, "padding", 0), str)
        ):
            return None
        kinds.setdefault(module, set()).add(kind)
    if not kinds or any("weight" not in k for k in kinds.values()):
        return None
    return {module: "bias" in k for module, k in kinds.items()}


def _flat_positions(net: nn.Module, layers: Mapping[str, bool], order: List[str]) -> torch.Tensor:
    """For each entry of the layer-major ``(out, in')`` layout, its index in the flat vector of the parameters
    ``order`` (each flattened row-major, concatenated)."""
    offsets, pos = {}, 0
    for name in order:
        offsets[name] = pos
        pos += net.get_parameter(name).numel()
    parts = []
    for module, bias in layers.items():
        w = net.get_submodule(module).weight
        prefix = f"{module}." if module else ""
        idx = offsets[prefix + "weight"] + torch.arange(w.numel(), device=w.device).reshape(w.shape[0], -1)
        if bias:
            idx = torch.cat([idx, offsets[prefix + "bias"] + torch.arange(w.shape[0], device=w.device).unsqueeze(1)], 1)
        parts.append(idx.reshape(-1))
    return torch.cat(parts)


def _pairs(n: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs ``r <= c`` of ``range(n)`` (two index vectors) and the ``(n, n)`` map from ``(r, c)`` or
    ``(c, r)`` to the pair's position."""
    r, c = torch.triu_indices(n, n, device=device)
    where = torch.empty(n, n, dtype=torch.long, device=device)
    k = torch.arange(r.shape[0], device=device)
    where[r, c] = k
    where[c, r] = k
    return r, c, where


def _pair_products(u: torch.Tensor, v: torch.Tensor, pairs: Optional[Tuple]) -> torch.Tensor:
    r"""Per row :math:`b`, :math:`\sum_c u_{cb} \otimes v_{cb}` flattened, ``(B, o·p)``; with ``pairs`` (a diagonal
    block, ``u = v``: the product is symmetric) only its entries ``r <= c``, ``(B, o(o+1)/2)``."""
    if pairs is None:
        return torch.einsum("cbo,cbp->bop", u, v).flatten(1)
    return (u[:, :, pairs[0]] * v[:, :, pairs[1]]).sum(0)


class _RankOneSums:
    r"""Running sums :math:`S^{lm} = \sum_n \mathrm{vec}(\Gamma^{lm}_n)\, \mathrm{vec}(Q^{lm}_n)^\top` of the
    blocks whose layers have one position per example (module docstring), with only the entries
    :math:`o \le p, i \le j` on a diagonal block (:math:`\Gamma^{ll}_n` and :math:`Q^{ll}_n` are symmetric: a
    quarter of the work); unpacked into the GGN once, by :meth:`add_to`."""

    def __init__(self, shapes: List[Tuple[int, int]], device: torch.device):
        self.shapes = shapes  # per layer (out, in')
        self.pairs = [(_pairs(o, device), _pairs(i, device)) for o, i in shapes]
        self.sums: Dict[Tuple[int, int], torch.Tensor] = {}

    def add(self, l: int, m: int, rows_l: Tuple, rows_m: Tuple) -> None:  # noqa: E741  (layer indices l, m)
        """Add one batch's rows ``(a (B, 1, in'), g (C, B, 1, out))`` of layers ``l <= m``."""
        (a_l, g_l), (a_m, g_m) = rows_l, rows_m
        a_l, a_m, g_l, g_m = a_l[:, 0].unsqueeze(0), a_m[:, 0].unsqueeze(0), g_l[:, :, 0], g_m[:, :, 0]
        po, pi = self.pairs[l] if l == m else (None, None)
        (out_l, in_l), (out_m, in_m) = self.shapes[l], self.shapes[m]
        width = max(g_l.shape[0] * out_l * out_m, in_l * in_m)
        for s in range(0, a_l.shape[1], max(1, _CHUNK_NUMBERS // width)):
            rows = slice(s, s + max(1, _CHUNK_NUMBERS // width))
            gam = _pair_products(g_l[:, rows], g_m[:, rows], po)
            q = _pair_products(a_l[:, rows], a_m[:, rows], pi)
            key = (l, m)
            self.sums[key] = gam.T @ q if key not in self.sums else self.sums[key].addmm_(gam.T, q)

    def add_to(self, ggn: torch.Tensor, offsets: List[int]) -> None:
        """Add every sum, unpacked to the layout ``(out_l·in_l', out_m·in_m')``, to its block of ``ggn``."""
        for (l, m), S in self.sums.items():  # noqa: E741
            (out_l, in_l), (out_m, in_m) = self.shapes[l], self.shapes[m]
            if l == m:
                (_, _, where_o), (_, _, where_i) = self.pairs[l]
                S = S[where_o.reshape(-1)][:, where_i.reshape(-1)]
            block = ggn[offsets[l] : offsets[l + 1], offsets[m] : offsets[m + 1]]
            block.view(out_l, in_l, out_m, in_m).add_(S.view(out_l, out_m, in_l, in_m).transpose(1, 2))


def _gradient_rows(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""Per-example, per-vector gradients :math:`\sum_t g_{nct} \otimes a_{nt}` as rows ``(C B, out·in')``."""
    return torch.einsum("cbto,bti->cboi", g, a).flatten(2).flatten(0, 1)


def _add_batch(ggn: torch.Tensor, offsets: List[int], sums: _RankOneSums, rows: List[Tuple]) -> None:
    r"""Add one batch's blocks :math:`l \le m`: to ``sums`` where both layers have one position per example,
    else to the upper block triangle of ``ggn`` (layer-major layout) as :math:`R_l^\top R_m`."""
    dense: Dict[int, torch.Tensor] = {}
    for i, rows_i in enumerate(rows):
        for j in range(i, len(rows)):
            if rows_i[0].shape[1] == 1 and rows[j][0].shape[1] == 1:
                sums.add(i, j, rows_i, rows[j])
                continue
            for k in (i, j):
                if k not in dense:
                    dense[k] = _gradient_rows(*rows[k])
            ggn[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]].addmm_(dense[i].T, dense[j])


def layer_ggn(
    net: nn.Module,
    data,
    likelihood: Likelihood,
    layers: Mapping[str, bool],
    fisher: Fisher = "exact",
    mc_samples: int = 1,
    generator: Optional[torch.Generator] = None,
    order: Optional[List[str]] = None,
) -> Tuple[torch.Tensor, int, float]:
    r"""The dense GGN over whole Linear/Conv layers, block by block (module docstring), in one pass over ``data``.

    :param layers: ``{module name: whether its bias is included}``.
    :param order: the parameter names in the order of the flat vector (weights flattened row-major, biases); by
        default each layer's ``(out, in')`` matrix in turn (the bias as the last input column).
    :returns: ``(GGN (P, P), number of examples, log-likelihood sum)``.
    """
    likelihood.check_curvature()
    modules = tracked_modules(net, layers)
    ref = next(net.parameters())
    shapes = [(m.weight.shape[0], m.weight[0].numel() + int(layers[k])) for k, m in modules.items()]
    offsets = [0]
    for out, inputs in shapes:
        offsets.append(offsets[-1] + out * inputs)
    sums = _RankOneSums(shapes, ref.device)
    ggn = torch.zeros(offsets[-1], offsets[-1], dtype=ref.dtype, device=ref.device)
    hessian = dict(fisher=fisher, mc_samples=mc_samples, generator=generator)
    n, loglik = 0, 0.0
    net.eval()
    with frozen(net), Recorder(modules) as rec:
        for batch in as_batches(data):
            x, y = load_batch(batch, ref)
            batch_loglik, grads = batch_gradients(net, rec, x, y, likelihood, hessian)
            _add_batch(ggn, offsets, sums, [rec.layer_rows(k, layers[k], g) for k, g in zip(modules, grads)])
            loglik += batch_loglik
            n += x.shape[0]
    if n == 0:
        raise ValueError("data yielded no examples")
    sums.add_to(ggn, offsets)
    for i in range(len(shapes)):  # the lower block triangle: transposes of the upper one
        for j in range(i + 1, len(shapes)):
            upper = ggn[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]]
            ggn[offsets[j] : offsets[j + 1], offsets[i] : offsets[i + 1]] = upper.T
    if order is not None:
        inv = torch.argsort(_flat_positions(net, layers, order)).to(ggn.device)
        if not bool((inv == torch.arange(len(inv), device=inv.device)).all()):
            ggn = ggn[inv][:, inv]
    return ggn, n, loglik


def dense_bytes(num_params: int, dtype: torch.dtype, batch: int = 0, outputs: int = 1) -> int:
    """Bytes a dense ``full`` posterior needs: three ``P×P`` matrices (GGN, precision/Cholesky, covariance) and one
    batch of Jacobians ``B·K·P``."""
    item = torch.empty((), dtype=dtype).element_size()
    return item * (3 * num_params * num_params + batch * outputs * num_params)
