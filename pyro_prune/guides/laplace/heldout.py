r"""Held-out tuning of a Laplace guide's prior precision :math:`\tau` by the GLM predictive, on one process or on
sharded data under a ``torch.distributed`` process group.

The Jacobian features of the held-out inputs do not depend on :math:`\tau` (:mod:`~pyro_prune.guides.laplace.glm`),
so they are computed once; each candidate :math:`\tau` of a grid is then scored by the mean held-out
log-likelihood of the GLM predictive (the likelihood's link: probit for classification, closed form for a Gaussian,
with the guide's own noise :math:`\sigma` when it was tuned by the evidence),

.. math::

    S(\tau) = \frac1{N_{\mathrm{val}}} \sum_{n=1}^{N_{\mathrm{val}}}
        \log \int p(y_n \mid f)\, \mathcal N\big(f;\ f_{w^*}(x_n),\ J_n P_\tau^{-1} J_n^\top\big)\, df,

and the best grid point is refined on a finer grid around it.  Under a process group each worker holds a shard
of the held-out data: the sum and :math:`N_{\mathrm{val}}` are all-reduced
(:func:`~pyro_prune.distributed.all_reduce_sums`), so every worker scores, and chooses, exactly as one process on
the union of the shards (its guide must then be the same on every worker, e.g. fitted under the same group).
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import torch

from ..._checks import as_batches, unpack_batch
from ...curvature import check_batch
from ...distributed import all_reduce_sums
from .glm import glm_covariance, glm_features, glm_log_likelihood

__all__ = ["tune_prior_precision"]


def _check_grid(grid: Any) -> torch.Tensor:
    # host-side numbers (each value is set on the guide as a Python float): explicitly on the CPU
    grid = torch.logspace(-4, 6, 41, dtype=torch.float64, device="cpu") if grid is None else grid
    grid = torch.as_tensor(grid, dtype=torch.float64, device="cpu")
    if grid.dim() != 1 or grid.numel() == 0 or not bool((grid > 0).all()) or not bool(torch.isfinite(grid).all()):
        raise ValueError("grid must be a non-empty 1-D sequence of positive finite prior precisions")
    return grid


@torch.no_grad()
def _validation_features(guide: Any, val_data: Any) -> List[tuple]:
    """``[(f, features, y)]`` of every held-out batch (computed once: they do not depend on :math:`\\tau`)."""
    batches = []
    for batch in as_batches(val_data, "val_data"):
        x, y = unpack_batch(batch, "val_data")
        x = x.to(device=guide._device, dtype=guide._dtype if x.is_floating_point() else None)
        check_batch(x, y)
        f, feats = glm_features(guide, x)
        y = y.to(guide._device)
        try:
            guide._model_ref[0].likelihood.check_target(y, f)
        except ValueError as e:
            raise ValueError(f"val_data: {e}") from None
        batches.append((f, feats, y))
    if not batches:
        raise ValueError("val_data yielded no examples")
    return batches


def tune_prior_precision(guide: Any, val_data: Any, grid: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List]:
    """Choose the scalar :math:`\\tau` of ``grid`` with the highest held-out GLM log-likelihood, refine it on a
    finer grid (11 points, log-spaced between the best point's neighbours), and set it (module docstring).

    :param guide: a fitted :class:`~pyro_prune.guides.laplace.LaplaceGuide`.
    :param val_data: held-out ``(x, y)`` batches (a ``DataLoader`` or one tuple) that the MAP was not trained on;
        under a process group, this worker's shard of them.
    :param grid: candidate values (default ``logspace(-4, 6, 41)``).
    :returns: the chosen :math:`\\tau` and the ``[(tau, mean log-likelihood)]`` scores.
    :raises ValueError: an invalid ``grid``, or ``val_data`` without examples or with invalid targets.
    """
    lik, sigma = guide._model_ref[0].likelihood, guide.sigma_noise
    grid = _check_grid(grid)
    batches = _validation_features(guide, val_data)
    ref = batches[0][0]
    n = all_reduce_sums(ref.new_zeros(()), sum(b[0].shape[0] for b in batches), 0.0)[1]
    old = guide.prior_precision
    scores = []

    @torch.no_grad()
    def score(tau: float) -> float:
        guide.set_prior_precision(tau)
        local = sum(
            glm_log_likelihood(lik, f, glm_covariance(guide, f, ft), y, sigma).sum().double() for f, ft, y in batches
        )
        total = float(all_reduce_sums(local, 0, 0.0)[0])
        scores.append((tau, total / n))
        return total / n

    try:
        vals = [score(float(t)) for t in grid]
        best = max(range(len(vals)), key=vals.__getitem__)
        lo = float(grid[max(best - 1, 0)])
        hi = float(grid[min(best + 1, grid.numel() - 1)])
        for t in torch.logspace(math.log10(lo), math.log10(hi), 11, dtype=torch.float64, device="cpu"):
            score(float(t))
    except Exception:
        guide.set_prior_precision(old)
        raise
    tau = max(scores, key=lambda s: s[1])[0]
    guide.set_prior_precision(tau)
    return guide.prior_precision, scores
