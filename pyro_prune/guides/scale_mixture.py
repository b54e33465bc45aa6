r"""Quantiles of a Gaussian scale mixture :math:`w = z\,\tilde w`, the weight marginal of a group-sparse guide.

Given :math:`z`, :math:`w \mid z \sim \mathcal N(z\tilde\mu,\ z^2\tilde\sigma^2)`, so the CDF of :math:`w` is the
one-dimensional integral

.. math::

    F(t) = \mathbb E_{z}\Big[\Phi\Big(\frac{t - z\tilde\mu}{|z|\,\tilde\sigma}\Big)\Big],

computed by Gauss--Hermite quadrature over :math:`z = \mu_z + \sigma_z x` (a Gaussian scale) or
:math:`z = \exp(m + s x)` (a log-normal scale), :math:`x \sim \mathcal N(0, 1)`.  The quadrature is a mixture of
Gaussians, whose :math:`q`-quantile lies between the smallest and the largest quantile of its components: bisection
in that bracket gives the quantile of the quadrature mixture to machine precision.  The quadrature error is that of
:math:`n` Gauss--Hermite nodes on an integrand that is smooth except at :math:`z = 0` (only reached by a Gaussian
scale whose mean is a few standard deviations from 0, i.e. a pruned group); tests compare against Monte Carlo draws.
No randomness: the same parameters always give the same quantiles.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

__all__ = ["gauss_hermite", "scale_mixture_quantiles"]

#: Gauss--Hermite nodes of the quadrature over the scale.
NUM_NODES = 96
#: Bisection steps: the bracket shrinks by :math:`2^{-60}`.
BISECTIONS = 60
#: Weights evaluated at once (bounds the ``chunk x nodes`` work arrays).
CHUNK = 8192


def gauss_hermite(n: int, dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Nodes and weights of the :math:`n`-point rule for :math:`\mathbb E f(x)`, :math:`x \sim \mathcal N(0, 1)`
    (Golub--Welsch on the probabilists' Hermite recurrence); the weights sum to 1."""
    k = torch.arange(1, n, dtype=torch.float64)
    jacobi = torch.diag(k.sqrt(), 1) + torch.diag(k.sqrt(), -1)
    nodes, vecs = torch.linalg.eigh(jacobi)
    weights = vecs[0].pow(2)
    return nodes.to(dtype), (weights / weights.sum()).to(dtype)


def _normal_icdf(q: torch.Tensor) -> torch.Tensor:
    return math.sqrt(2.0) * torch.special.erfinv(2 * q - 1)


def _normal_cdf(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.special.erfc(-t / math.sqrt(2.0))


def scale_mixture_quantiles(
    loc: torch.Tensor, sd: torch.Tensor, z: torch.Tensor, weights: torch.Tensor, q: torch.Tensor
) -> torch.Tensor:
    r"""Quantiles of :math:`w = z\tilde w` with :math:`\tilde w \sim \mathcal N(\tilde\mu, \tilde\sigma^2)` and
    :math:`z` given by quadrature nodes.

    :param loc: :math:`\tilde\mu`, shape ``(n,)`` (flattened weights).
    :param sd: :math:`\tilde\sigma`, ``(n,)``.
    :param z: the scale's quadrature nodes for each weight, ``(n, K)``.
    :param weights: the nodes' weights, ``(K,)``, summing to 1.
    :param q: probabilities in ``(0, 1)``, ``(Q,)``.
    :returns: ``(Q, n)``, in float64.
    """
    loc, sd, z, weights, q = (t.double() for t in (loc, sd, z, weights, q))
    out = []
    for sl in (slice(i, i + CHUNK) for i in range(0, max(loc.numel(), 1), CHUNK)):
        m = z[sl] * loc[sl, None]  # (c, K): the components' means and scales
        s = (z[sl].abs() * sd[sl, None]).clamp_min(1e-300)
        rows = []
        for qi in q:
            comp = m + s * _normal_icdf(qi)
            lo, hi = comp.min(-1).values, comp.max(-1).values
            for _ in range(BISECTIONS):
                mid = 0.5 * (lo + hi)
                below = (_normal_cdf((mid[:, None] - m) / s) * weights).sum(-1) < qi
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            rows.append(0.5 * (lo + hi))
        out.append(torch.stack(rows))
    return torch.cat(out, -1) if out else torch.zeros(q.numel(), 0, dtype=torch.float64)
