r"""Jacobians of the network outputs and the exact (dense) GGN, for the full Laplace posterior and the
linearized (GLM) predictive.

* :func:`output_jacobians`: per layer, the inputs :math:`a` and the Jacobian :math:`\partial f / \partial s` of
  the outputs wrt its pre-activations, from one forward and one batched backward with ``K`` vectors; the weight
  Jacobian is :math:`\sum_t (\partial f / \partial s_t)\, a_t^\top` (no loop over examples).
* :func:`param_jacobians`: the Jacobian ``(B, K, P)`` wrt chosen parameter entries, per example (vmap of jacrev).
* :func:`full_ggn`: :math:`\sum_n J_n^\top H_n J_n = \sum_n \sum_c (L_{nc}^\top J_n)^\top (L_{nc}^\top J_n)` with
  the likelihood's Hessian square roots :math:`L` (exact GGN, or the sampled-label Fisher).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.func import functional_call, jacrev, vmap

from .._checks import as_batches
from ..model.likelihoods import Fisher, Likelihood
from .recording import Recorder, frozen, load_batch, tracked_modules

__all__ = ["output_jacobians", "param_jacobians", "full_ggn", "dense_bytes"]


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
    r"""The GGN :math:`\sum_n J_n^\top H_n J_n` over the selected parameter entries (``torch.func`` Jacobians);
    ``fisher="mc"`` uses the sampled-label Fisher for :math:`H_n`.

    :returns: ``(GGN (P, P), number of examples, log-likelihood sum)`` (the GGN is a sum, not a mean).
    """
    ref = next(net.parameters())
    ggn, n, loglik = None, 0, 0.0
    for batch in as_batches(data):
        x, y = load_batch(batch, ref)
        f, J = param_jacobians(net, x, likelihood, params)
        likelihood.check_target(y, f)
        loglik += float(likelihood.log_likelihood(f, y, check=False).sum().detach())
        L = likelihood.hessian_sqrt(f, fisher, mc_samples, generator)  # (C, B, K)
        LJ = torch.einsum("cbk,bkp->cbp", L, J).reshape(-1, J.shape[-1])
        ggn = LJ.T @ LJ if ggn is None else ggn + LJ.T @ LJ
        n += x.shape[0]
    if n == 0:
        raise ValueError("data yielded no examples")
    return ggn, n, loglik


def dense_bytes(num_params: int, dtype: torch.dtype, batch: int = 0, outputs: int = 1) -> int:
    """Bytes a dense ``full`` posterior needs: three ``P×P`` matrices (GGN, precision/Cholesky, covariance) and one
    batch of Jacobians ``B·K·P``."""
    item = torch.empty((), dtype=dtype).element_size()
    return item * (3 * num_params * num_params + batch * outputs * num_params)
