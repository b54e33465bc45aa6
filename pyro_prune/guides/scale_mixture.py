r"""Quantiles of a Gaussian scale mixture :math:`w = z\,u`, the weight marginal of a group-sparse guide.

With :math:`u = \tilde w \sim \mathcal N(\tilde\mu, \tilde\sigma^2)` and an independent scale :math:`z` that is
Gaussian, :math:`\mathcal N(\mu_z, \sigma_z^2)`, or log-normal, :math:`\log z \sim \mathcal N(\mu_z, \sigma_z^2)`, the
CDF of :math:`w` is a one-dimensional integral over either factor:

.. math::

    F(t) = \mathbb E_{z}\Big[\Phi\Big(\frac{t - z\tilde\mu}{|z|\,\tilde\sigma}\Big)\Big]
         = \mathbb E_{u}\big[\,P(z \le t/u)\ (u > 0), \quad P(z \ge t/u)\ (u < 0)\,\big].

Either is a quadrature over a Gaussian variable (Gauss--Legendre in probability space, split where the variable
crosses 0, where the conditional CDF jumps).  The integrand is steep in the factor
integrated over when the *other* factor is nearly constant, so each weight integrates over the factor with the
smaller coefficient of variation, which keeps the integrand smooth: over :math:`u` when :math:`\tilde w` is the
more certain factor, over :math:`z` otherwise.  Each quadrature is a mixture of distributions whose :math:`q`-quantiles
bracket the mixture's; bisection in that bracket gives the quantile to machine precision.  No randomness: the same
parameters always give the same quantiles (tests compare against Monte Carlo draws).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

__all__ = ["gauss_legendre", "scale_mixture_quantiles"]

#: Quadrature nodes over one factor (half on each side of the split).
NUM_NODES = 96
#: Bisection steps: the bracket shrinks by :math:`2^{-60}`.
BISECTIONS = 60
#: Weights evaluated at once (bounds the ``chunk x nodes`` work arrays).
CHUNK = 8192


def gauss_legendre(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Nodes in :math:`(0, 1)` and weights (summing to 1) of the :math:`n`-point Gauss--Legendre rule for
    :math:`\int_0^1 f(p)\,dp` (Golub--Welsch), float64, computed on the CPU (the callers move them)."""
    k = torch.arange(1, n, dtype=torch.float64, device="cpu")
    off = k / (4 * k * k - 1).sqrt()
    nodes, vecs = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    weights = vecs[0].pow(2)
    return (nodes + 1) / 2, weights / weights.sum()


def _nodes(loc: torch.Tensor, scale: torch.Tensor, split_at_zero: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Quadrature nodes ``(c, 2K)`` and weights ``(c, 2K)`` of a Gaussian :math:`\mathcal N(loc, scale^2)` in
    probability space, split at :math:`x = 0` (``split_at_zero``; at the median otherwise): Gauss--Legendre on each
    side of the split, whose integrand is smooth (the conditional CDFs jump only where the variable crosses 0).
    Tails are reached through ``ndtri`` of small probabilities on both sides, so no node is infinite."""
    p, w = (t.to(loc.device) for t in gauss_legendre(NUM_NODES // 2))
    neg = torch.special.ndtr(-loc / scale) if split_at_zero else torch.full_like(loc, 0.5)
    pos = torch.special.ndtr(loc / scale) if split_at_zero else torch.full_like(loc, 0.5)
    below = loc[:, None] + scale[:, None] * torch.special.ndtri(neg[:, None] * p)
    above = loc[:, None] - scale[:, None] * torch.special.ndtri(pos[:, None] * p)
    nodes, weights = torch.cat([below, above], -1), torch.cat([neg[:, None] * w, pos[:, None] * w], -1)
    return torch.where(weights > 0, nodes, loc[:, None]), weights  # an empty side (P = 0) keeps finite nodes


def _normal_icdf(q: torch.Tensor) -> torch.Tensor:
    return math.sqrt(2.0) * torch.special.erfinv(2 * q - 1)


def _normal_cdf(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.special.erfc(-t / math.sqrt(2.0))


def _z_cdf(c: torch.Tensor, z_loc: torch.Tensor, z_scale: torch.Tensor, log_normal: bool) -> torch.Tensor:
    """:math:`P(z \\le c)`."""
    if log_normal:
        return torch.where(c > 0, _normal_cdf((c.clamp_min(1e-300).log() - z_loc) / z_scale), torch.zeros_like(c))
    return _normal_cdf((c - z_loc) / z_scale)


def _z_icdf(q: torch.Tensor, z_loc: torch.Tensor, z_scale: torch.Tensor, log_normal: bool) -> torch.Tensor:
    z = z_loc + z_scale * _normal_icdf(q)
    return z.exp() if log_normal else z


def scale_mixture_quantiles(
    loc: torch.Tensor,
    sd: torch.Tensor,
    z_loc: torch.Tensor,
    z_scale: torch.Tensor,
    log_normal: bool,
    q: torch.Tensor,
) -> torch.Tensor:
    r"""Quantiles of :math:`w = z u`, :math:`u \sim \mathcal N(\tilde\mu, \tilde\sigma^2)`, :math:`z` Gaussian or
    log-normal (module docstring).

    :param loc: :math:`\tilde\mu`, shape ``(n,)`` (flattened weights).
    :param sd: :math:`\tilde\sigma > 0`, ``(n,)``.
    :param z_loc: :math:`\mu_z` of each weight's scale (of :math:`\log z` when ``log_normal``), ``(n,)``.
    :param z_scale: :math:`\sigma_z > 0`, ``(n,)``.
    :param log_normal: whether :math:`\log z` (not :math:`z`) is Gaussian.
    :param q: probabilities in ``(0, 1)``, ``(Q,)``.
    :returns: ``(Q, n)``, in float64.
    """
    loc, sd, z_loc, z_scale, q = (t.double() for t in (loc, sd, z_loc, z_scale, q))
    out = []
    for sl in (slice(i, i + CHUNK) for i in range(0, loc.numel(), CHUNK)):
        out.append(_chunk_quantiles(loc[sl], sd[sl], z_loc[sl], z_scale[sl], log_normal, q))
    return torch.cat(out, -1) if out else torch.zeros(q.numel(), 0, dtype=torch.float64, device=q.device)


def _chunk_quantiles(loc, sd, z_loc, z_scale, log_normal, q) -> torch.Tensor:
    z, wz = _nodes(z_loc, z_scale, not log_normal)  # (c, K): nodes of z (of log z when log-normal)
    z = z.exp() if log_normal else z
    u, wu = _nodes(loc, sd, True)  # (c, K): nodes of u
    cv_u = sd / loc.abs().clamp_min(1e-300)
    cv_z = (z_scale.pow(2).exp() - 1).sqrt() if log_normal else z_scale / z_loc.abs().clamp_min(1e-300)
    over_z = (cv_z <= cv_u)[:, None]  # integrate over the more certain factor: the CDF given it is then smooth
    m, s = z * loc[:, None], (z.abs() * sd[:, None]).clamp_min(1e-300)  # w | z_k ~ N(m, s^2)

    def cdf(t: torch.Tensor) -> torch.Tensor:
        given_z = _normal_cdf((t[:, None] - m) / s)
        pz = _z_cdf(t[:, None] / u, z_loc[:, None], z_scale[:, None], log_normal)
        given_u = torch.where(u > 0, pz, 1 - pz)
        return torch.where(over_z, given_z * wz, given_u * wu).sum(-1)

    rows = []
    for qi in q:
        by_z = m + s * _normal_icdf(qi)
        by_u = torch.where(u > 0, u * _z_icdf(qi, z_loc[:, None], z_scale[:, None], log_normal),
                           u * _z_icdf(1 - qi, z_loc[:, None], z_scale[:, None], log_normal))  # fmt: skip
        lo = torch.minimum(by_z.min(-1).values, by_u.min(-1).values)
        hi = torch.maximum(by_z.max(-1).values, by_u.max(-1).values)
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            below = cdf(mid) < qi
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        rows.append(0.5 * (lo + hi))
    return torch.stack(rows)
