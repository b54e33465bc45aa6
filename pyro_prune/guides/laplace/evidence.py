r"""The observation noise of a Gaussian likelihood in the Laplace evidence, and the L-BFGS evidence maximization.

For a Gaussian likelihood :math:`y \sim \mathcal N(f_w(x), \sigma^2 I_K)` the generalized Gauss-Newton matrix is
:math:`\mathrm{GGN}(\sigma) = \sigma^{-2} \sum_n J_n^\top J_n`, so the curvature computed once at the fit's
:math:`\sigma_0` (or the :math:`\sigma` last set on the guide) serves every :math:`\sigma`:
:math:`\mathrm{GGN}(\sigma) = (\sigma_0^2/\sigma^2)\,\mathrm{GGN}(\sigma_0)`.
The log-likelihood of the MAP is

.. math::

    \log p(\mathcal D \mid w^*, \sigma) = -\tfrac{NK}{2} \log(2\pi\sigma^2) - \tfrac{\mathrm{SSR}}{2\sigma^2},

with :math:`\mathrm{SSR} = \sum_n \|y_n - f_{w^*}(x_n)\|^2` (scaled to the likelihood's ``dataset_size`` :math:`N`),
which the curvature pass gives through the log-likelihood at :math:`\sigma_0`. The Laplace log evidence [1] is then

.. math::

    \log p(\mathcal D \mid \tau, \sigma) \approx \tfrac1T \log p(\mathcal D \mid w^*, \sigma)
    - \tfrac12 \sum_l \tau_l \|w^*_l\|^2 + \tfrac12 \sum_l P_l \log \tau_l
    - \tfrac12 \log\det\big(\tfrac{\sigma_0^2}{\sigma^2}\,\tfrac1T\mathrm{GGN}(\sigma_0) + \mathrm{diag}(\tau)\big),

as in laplace-torch [2]; :func:`maximize_evidence` maximizes it over :math:`\log\tau` (one or one per layer) and,
optionally, :math:`\log\sigma`, by L-BFGS in float64 (the curvature's eigenvalues stay fixed).

References

[1] David J. C. MacKay. "A Practical Bayesian Framework for Backpropagation Networks", Neural Computation 1992.
[2] Erik Daxberger et al. "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Tuple

import torch

from ... import curvature as cv
from ...model.likelihoods import Gaussian, Likelihood

__all__ = ["NoiseTerms", "gaussian_log_likelihood", "maximize_evidence", "rescale_precisions"]

#: Bound on :math:`|\log\tau|` and :math:`|\log\sigma|` during the search (keeps L-BFGS's line search finite).
LOG_BOUND = 30.0


class NoiseTerms:
    r"""What the evidence needs about a Gaussian likelihood's noise: :math:`\sigma` (the one the posterior's curvature
    is at), the MAP's sum of squared residuals and :math:`NK`, the number of observed scalars.

    :ivar sigma: :math:`\sigma`, a tensor of shape ``()``, or ``None`` for a likelihood without observation noise.
    :ivar ssr: :math:`\mathrm{SSR}` over the data set (scaled to ``dataset_size``), a tensor of shape ``()`` in
        :math:`\sigma`'s dtype and device, or ``None`` without observation noise.
    :ivar num_obs: :math:`NK`.
    """

    def __init__(self, sigma: Optional[torch.Tensor] = None, ssr: Optional[torch.Tensor] = None, num_obs: int = 0):
        self.sigma, self.ssr, self.num_obs = sigma, ssr, int(num_obs)

    @classmethod
    def from_fit(cls, likelihood: Likelihood, log_lik: torch.Tensor, num_data: int, y: torch.Tensor) -> NoiseTerms:
        r"""The terms of a fitted guide: ``log_lik`` is :math:`\log p(\mathcal D \mid w^*)` at the likelihood's
        :math:`\sigma_0` (scaled to ``num_data``), ``y`` a batch of targets (``(B,)`` or ``(B, K)``)."""
        if not isinstance(likelihood, Gaussian):
            return cls()
        sigma = likelihood.noise_scale(y)
        num_obs = num_data * (y[0].numel() if y.dim() > 1 else 1)
        s0 = float(sigma)
        ssr = -2 * s0**2 * (float(log_lik) + num_obs * (math.log(s0) + 0.5 * math.log(2 * math.pi)))
        return cls(sigma.detach().clone(), torch.as_tensor(max(ssr, 0.0), dtype=sigma.dtype, device=sigma.device),
                   num_obs)  # fmt: skip

    def state(self) -> dict:
        """A ``state_dict``-able copy (tensors, or ``None`` without observation noise, and an int)."""
        return {"sigma": self.sigma, "ssr": self.ssr, "num_obs": self.num_obs}

    @classmethod
    def from_state(cls, state: Any, cast: Callable[[torch.Tensor], torch.Tensor]) -> NoiseTerms:
        """Rebuild from :meth:`state` (``None``: a state saved before the noise terms existed: no noise)."""
        if not isinstance(state, Mapping):
            return cls()
        sigma, ssr = state.get("sigma"), state.get("ssr")
        if sigma is None:  # no observation noise (files before 2026-11-26 hold a float32 CPU ssr of 0 here)
            return cls()
        return cls(cast(sigma), cast(ssr), int(state["num_obs"]))

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``nn.Module._apply`` for the tensors."""
        self.sigma = None if self.sigma is None else fn(self.sigma)
        self.ssr = None if self.ssr is None else fn(self.ssr)

    def require(self) -> torch.Tensor:
        """:math:`\\sigma`, or a ``ValueError`` for a likelihood without observation noise."""
        if self.sigma is None:
            raise ValueError(
                "sigma_noise needs a Gaussian likelihood (pp.Gaussian with a fixed or learned scale); this guide's "
                "likelihood has no observation noise"
            )
        return self.sigma


def gaussian_log_likelihood(noise: NoiseTerms, sigma: torch.Tensor) -> torch.Tensor:
    r""":math:`-\tfrac{NK}{2}\log(2\pi\sigma^2) - \mathrm{SSR}/(2\sigma^2)`, differentiable in ``sigma``."""
    ssr = noise.ssr.to(sigma)
    return -noise.num_obs * (sigma.log() + 0.5 * math.log(2 * math.pi)) - 0.5 * ssr / sigma.square()


def rescale_precisions(precisions: Mapping[str, cv.Precision], factor: float) -> dict:
    """The precisions with their curvature scale :math:`s` multiplied by ``factor`` (same prior)."""
    return {k: cv.precision_from_state({**p.state(), "scale": p.scale * factor}) for k, p in precisions.items()}


def maximize_evidence(
    objective: Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor],
    log_tau: torch.Tensor,
    log_sigma: Optional[torch.Tensor],
    max_iter: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    r"""L-BFGS (strong Wolfe) on :math:`-\mathrm{objective}(\tau, \sigma)` over :math:`\log\tau` (``(n,)``) and,
    when ``log_sigma`` is given (``(1,)``), :math:`\log\sigma`, in float64.

    :returns: the maximizing ``log_tau`` and ``log_sigma`` (detached, each clamped to :data:`LOG_BOUND`).
    """
    params = [log_tau.double().clone().requires_grad_(True)]
    if log_sigma is not None:
        params.append(log_sigma.double().clone().requires_grad_(True))
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)  # fmt: skip

    def closure():
        opt.zero_grad()
        tau = params[0].clamp(-LOG_BOUND, LOG_BOUND).exp()
        sigma = params[1].clamp(-LOG_BOUND, LOG_BOUND).exp()[0] if log_sigma is not None else None
        loss = -objective(tau, sigma)
        loss.backward()
        return loss

    opt.step(closure)
    found = [p.detach().clamp(-LOG_BOUND, LOG_BOUND) for p in params]
    return found[0], (found[1] if log_sigma is not None else None)
