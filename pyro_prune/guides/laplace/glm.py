r"""The linearized (GLM) predictive of a :class:`~pyro_prune.guides.laplace.LaplaceGuide`, and the held-out
tuning of its prior precision.

Linearizing the network at the MAP, :math:`f_w(x) \approx f_{w^*}(x) + J(x)(w - w^*)`, turns the Gaussian
posterior over weights into a Gaussian over outputs, :math:`\mathcal N(f_{w^*}(x), J\Sigma J^\top)` [1].

* ``kron`` / ``diag``: the posterior is block-diagonal by layer.  For a layer with inputs :math:`a` and
  pre-activations :math:`s = W a`, :math:`\partial f/\partial W = (\partial f/\partial s) \otimes a^\top`, so with
  :math:`\tilde J = (\partial f/\partial s)\,U_G` (``K × out``) and :math:`\tilde a = U_A^\top a`,

  .. math::

      J \Sigma J^\top = \tilde J\,\mathrm{diag}(v)\,\tilde J^\top, \qquad
      v = \big(1 / (s\lambda_G\lambda_A^\top + \tau)\big)\,\tilde a^{\circ 2},

  exact for the Kron posterior (``U = I`` for ``diag``).  For convolutions the per-example gradient sums over the
  :math:`T` output positions, :math:`M = \sum_t \tilde J_t \otimes \tilde a_t^\top`, and
  :math:`J\Sigma J^\top = \sum_{kl} M_{\cdot kl} M_{\cdot kl}^\top / (s\lambda_{G,k}\lambda_{A,l} + \tau)`.
  The layer Jacobians come from one forward pass and one batched backward pass with ``K`` vectors: no loop over
  examples.
* ``full``: ``torch.func`` Jacobians ``(B, K, P)`` of the batch, then :math:`\|L^{-1}J^\top\|^2` with the Cholesky
  factor :math:`L` of the precision.

The Jacobians do not depend on :math:`\tau`, so :func:`tune_prior_precision` computes them once and scores a grid
of :math:`\tau` by the held-out log-likelihood of the predictive (the likelihood's
:meth:`~pyro_prune.model.likelihoods.Likelihood.glm_log_likelihood`: probit for classification, closed form for a
Gaussian, with the guide's own noise :math:`\sigma` when it was tuned by the evidence).  The structure-specific
algebra is in :mod:`~pyro_prune.guides.laplace.posterior`; the functions here
only route to it.

References

[1] Erik Daxberger et al. "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021.
[2] David J. C. MacKay. "The Evidence Framework Applied to Classification Networks", Neural Computation 1992
    (the probit approximation).
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import pyro.distributions as dist
import torch

from ..._checks import as_batches, unpack_batch
from ...curvature import check_batch
from ...model.likelihoods import Likelihood

__all__ = ["glm_features", "glm_covariance", "glm_log_likelihood", "tune_prior_precision"]


def glm_features(guide: Any, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
    """The outputs ``f (B, K)`` and the prior-independent Jacobian features of ``x`` (for :func:`glm_covariance`)."""
    return guide._posterior.glm_features(guide._net, guide._model_ref[0].likelihood, x)


def glm_covariance(guide: Any, f: torch.Tensor, feats: Any) -> torch.Tensor:
    """:math:`J\\Sigma J^\\top` ``(B, K, K)`` for the guide's current prior precision."""
    return guide._posterior.glm_covariance(f, feats)


def glm_log_likelihood(
    likelihood: Likelihood, f: torch.Tensor, cov: torch.Tensor, y: torch.Tensor, sigma: Optional[torch.Tensor] = None
) -> torch.Tensor:
    r"""Per-example log-likelihood of ``y`` under the GLM predictive (the likelihood's link), ``(B,)``; ``sigma``:
    a Laplace guide's own Gaussian noise (:attr:`~pyro_prune.guides.laplace.LaplaceGuide.sigma_noise`), then
    :math:`y \sim \mathcal N(\bar f, \mathrm{diag}(\Sigma_f) + \sigma^2)` replaces the likelihood's scale."""
    if sigma is None:
        return likelihood.glm_log_likelihood(f, cov, y)
    var = cov.diagonal(dim1=-2, dim2=-1) + sigma.to(f).square()
    return dist.Normal(f, var.sqrt()).to_event(1).log_prob(y.to(f.dtype).reshape(f.shape))


def _check_grid(grid: Any) -> torch.Tensor:
    grid = torch.logspace(-4, 6, 41, dtype=torch.float64) if grid is None else torch.as_tensor(grid).double()
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
    finer grid around the best point, and set it.

    :param val_data: held-out ``(x, y)`` batches (a ``DataLoader`` or one tuple) that the MAP was not trained on.
    :param grid: candidate values (default ``logspace(-4, 6, 41)``).
    :returns: the chosen :math:`\\tau` and the ``[(tau, mean log-likelihood)]`` scores.
    """
    lik, sigma = guide._model_ref[0].likelihood, guide.sigma_noise
    grid = _check_grid(grid)
    batches = _validation_features(guide, val_data)
    n = sum(b[0].shape[0] for b in batches)
    old = guide.prior_precision
    scores = []

    @torch.no_grad()
    def score(tau: float) -> float:
        guide.set_prior_precision(tau)
        total = sum(
            float(glm_log_likelihood(lik, f, glm_covariance(guide, f, ft), y, sigma).sum()) for f, ft, y in batches
        )
        scores.append((tau, total / n))
        return total / n

    try:
        vals = [score(float(t)) for t in grid]
        best = int(torch.tensor(vals).argmax())
        lo = float(grid[max(best - 1, 0)])
        hi = float(grid[min(best + 1, grid.numel() - 1)])
        for t in torch.logspace(math.log10(lo), math.log10(hi), 11, dtype=torch.float64):
            score(float(t))
    except Exception:
        guide.set_prior_precision(old)
        raise
    tau = max(scores, key=lambda s: s[1])[0]
    guide.set_prior_precision(tau)
    return guide.prior_precision, scores
