r"""The linearized (GLM) predictive of a :class:`~pyro_prune.guides.laplace.LaplaceGuide`.

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

The held-out tuning of :math:`\tau` by this predictive is :mod:`~pyro_prune.guides.laplace.heldout`'s.
The structure-specific
algebra is in :mod:`~pyro_prune.guides.laplace.posterior`; the functions here
only route to it.

References

[1] Erik Daxberger et al. "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021.
[2] David J. C. MacKay. "The Evidence Framework Applied to Classification Networks", Neural Computation 1992
    (the probit approximation).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import pyro.distributions as dist
import torch

from ...model.likelihoods import Likelihood

__all__ = ["glm_features", "glm_covariance", "glm_log_likelihood"]


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
