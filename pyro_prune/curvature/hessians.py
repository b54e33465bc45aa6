r"""The likelihood's side of the curvature, as functions of ``(likelihood, f)``.

Thin delegations to the likelihood classes (:mod:`pyro_prune.model.likelihoods`), which own the maths: the output
flattening, the square root :math:`L` of the output-space Hessian :math:`H = \sum_c L_c L_c^\top` of
:math:`-\log p(y \mid f)`, and the Gaussian noise scale.  Kept as functions so ``pp.curvature.hessian_sqrt(lik, f)``
and friends keep working; nothing here branches on the likelihood's type.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..model.likelihoods import Fisher, Likelihood

__all__ = ["Fisher", "flatten_output", "noise_scale", "hessian_sqrt", "output_hessian"]


def flatten_output(likelihood: Likelihood, f: torch.Tensor) -> torch.Tensor:
    """The network output as ``(B, K)`` (Bernoulli's ``(B,)`` logits become ``(B, 1)``).

    :raises ValueError: for a likelihood without an output Hessian (e.g. a heteroscedastic Gaussian).
    """
    likelihood.check_curvature()
    return likelihood.flatten_output(f)


def noise_scale(likelihood: Likelihood, ref: torch.Tensor) -> torch.Tensor:
    r"""The observation noise :math:`\sigma` of a regression likelihood (fixed, or the learned point estimate)."""
    return likelihood.noise_scale(ref)


def hessian_sqrt(
    likelihood: Likelihood,
    f: torch.Tensor,
    fisher: Fisher = "exact",
    mc_samples: int = 1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Vectors :math:`L_{c}` with :math:`\sum_c L_c L_c^\top = H` (or its sampled-label estimate), per example.

    :param f: network outputs ``(B, K)`` (detached here).
    :returns: ``(C', B, K)``.
    """
    return likelihood.hessian_sqrt(f, fisher, mc_samples, generator)


def output_hessian(likelihood: Likelihood, f: torch.Tensor) -> torch.Tensor:
    r"""The exact Hessian of :math:`-\log p(y\mid f)` in output space, ``(B, K, K)``."""
    return likelihood.output_hessian(f)
