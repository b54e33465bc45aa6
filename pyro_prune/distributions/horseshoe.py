r"""The horseshoe: :class:`HalfCauchyScaleMixture` (alias :class:`Horseshoe`) with its exact marginal density [3]
through :func:`log_exp1_scaled`, and the non-centred decomposition :func:`half_cauchy_noncentred` [2].

References [1]–[3]: the list in :mod:`pyro_prune.distributions`.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Optional, Tuple

import torch
from pyro.distributions import Gamma, InverseGamma, TorchDistribution, constraints
from torch.distributions.utils import broadcast_all

__all__ = [
    "HalfCauchyScaleMixture",
    "Horseshoe",
    "NonCentredHalfCauchy",
    "half_cauchy_noncentred",
    "log_exp1_scaled",
    "optimal_factor_locs",
]

_EULER_GAMMA = 0.5772156649015329
_LOG_2 = math.log(2.0)


def _exp1_scaled_series(log_u: torch.Tensor) -> torch.Tensor:
    # u <= 1: E1(u) = -gamma - log u - sum_{k>=1} (-u)^k / (k k!)  (Horner; 18 terms reach 1e-17 at u = 1)
    u = log_u.exp()
    s = torch.zeros_like(u)
    for k in range(18, 0, -1):
        s = (s + 1.0 / (k * math.factorial(k))) * (-u)
    return u + (-_EULER_GAMMA - log_u - s).log()


def _exp1_scaled_cf(log_u: torch.Tensor) -> torch.Tensor:
    # 1 < u <= 1e6: e^u E1(u) = 1 / (u + 1 - 1^2 / (u + 3 - 2^2 / (u + 5 - ...))), evaluated from the bottom
    u = log_u.exp()
    f = u + 201.0
    for k in range(100, 0, -1):
        f = u + (2 * k - 1) - (k * k) / f
    return -f.log()


def _exp1_scaled_asymptotic(log_u: torch.Tensor) -> torch.Tensor:
    # u > 1e6: e^u E1(u) = (1/u) (1 - 1/u + 2/u^2 - 6/u^3 + ...), with 1/u = exp(-log u) (underflows gracefully)
    r = (-log_u).exp()
    return -log_u + torch.log1p(r * (-1 + r * (2 - 6 * r)))


def _log_exp1_scaled(log_u: torch.Tensor) -> torch.Tensor:
    # log(e^u E1(u)) from log u; each method sees only its own entries, so no inf/NaN leaks into the gradients
    flat = log_u.reshape(-1)
    small = flat <= 0.0
    huge = flat > math.log(1e6)
    mid = ~(small | huge)
    out = torch.full_like(flat, math.nan)  # NaN inputs stay NaN
    for mask, fn in ((small, _exp1_scaled_series), (mid, _exp1_scaled_cf), (huge, _exp1_scaled_asymptotic)):
        out = out.index_put((mask,), fn(flat[mask]))
    return out.reshape(log_u.shape)


def log_exp1_scaled(u: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\bigl(e^u E_1(u)\bigr)` for :math:`u > 0`, where :math:`E_1(u) = \int_u^\infty e^{-t}/t\,dt`.

    Power series :math:`E_1(u) = -\gamma - \log u - \sum_{k\ge1} (-u)^k / (k\,k!)` for :math:`u \le 1`, the
    continued fraction :math:`e^u E_1(u) = 1/(u + 1 - 1/(u + 3 - 4/(u + 5 - \dots)))` (depth 100) for
    :math:`1 < u \le 10^6`, and the asymptotic series :math:`(1 - 1/u + 2/u^2 - 6/u^3)/u` beyond. Accurate to
    about :math:`2\cdot10^{-15}` (float64) / :math:`10^{-6}` (float32) absolute, from the smallest to the largest
    floats; differentiable.

    :param u: positive tensor, any shape, float32 or float64.
    :returns: tensor of ``u``'s shape.
    """
    return _log_exp1_scaled(u.log())


class HalfCauchyScaleMixture(TorchDistribution):
    r"""The horseshoe [3] as a scale mixture of Gaussians: :math:`w = z\,s\,\varepsilon` with a half-Cauchy local
    scale :math:`z \sim C^+(0, 1)`, :math:`\varepsilon \sim \mathcal N(0, 1)` and global scale :math:`s`.

    ``log_prob`` is the exact marginal density, the integral
    :math:`\int_0^\infty \mathcal N(w; 0, z^2 s^2)\,\tfrac{2}{\pi(1 + z^2)}\,dz` in closed form
    ([3], theorem 1, bounds it by :math:`\tfrac{K}{2}\log(1 + 4/u') < s\,p(w) < K\log(1 + 2/u')`,
    :math:`u' = w^2/s^2`, :math:`K = (2\pi^3)^{-1/2}`):

    .. math::

        p(w) = \frac{e^{u} E_1(u)}{\sqrt{2\pi^3}\,s}, \qquad u = \frac{w^2}{2 s^2},

    computed in log space from :math:`\log|w|` (:func:`log_exp1_scaled`), so it is finite and has finite
    gradients for tiny and huge :math:`|w|`. The density has a logarithmic pole at :math:`w = 0`, evaluated at
    the smallest positive float. ``sample`` draws through the mixture (reparameterized in :math:`s`); the mean
    is undefined (NaN) and the variance infinite, as for the Cauchy. For variational inference prefer the
    non-centred hierarchy :func:`half_cauchy_noncentred`.

    :param scale: global scale :math:`s > 0` (tensor or float).
    :raises ValueError: under validation, for a non-positive or NaN scale.
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, scale, *, validate_args: Optional[bool] = None):
        (self.scale,) = broadcast_all(scale)
        super().__init__(self.scale.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HalfCauchyScaleMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        super(HalfCauchyScaleMixture, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        z = self.scale.new_empty(shape).cauchy_().abs()
        eps = self.scale.new_empty(shape).normal_()
        return self.scale * z * eps

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        tiny = torch.finfo(torch.result_type(value, self.scale)).tiny
        log_a = value.abs().clamp_min(tiny).log() - self.scale.log()  # log(|w| / s) without overflow
        log_u = 2 * log_a - _LOG_2
        return _log_exp1_scaled(log_u) - 0.5 * math.log(2 * math.pi**3) - self.scale.log()

    @property
    def mean(self) -> torch.Tensor:
        return torch.full_like(self.scale, math.nan)

    @property
    def variance(self) -> torch.Tensor:
        return torch.full_like(self.scale, math.inf)


#: The horseshoe prior's marginal: ``Horseshoe(scale)`` is :class:`HalfCauchyScaleMixture`.
Horseshoe = HalfCauchyScaleMixture


class NonCentredHalfCauchy(NamedTuple):
    """The two factors of :func:`half_cauchy_noncentred`; :math:`z = \\sqrt{a\\,c}`."""

    gamma: Gamma
    inverse_gamma: InverseGamma


def half_cauchy_noncentred(
    scale, scale_in: Literal["inverse_gamma", "gamma"] = "inverse_gamma"
) -> NonCentredHalfCauchy:
    r"""Non-centred decomposition of a half-Cauchy scale (Louizos et al. 2017 [2]):

    .. math::

        z \sim C^+(0, b) \iff z = \sqrt{a\,c}, \quad a \sim \mathrm{Gamma}(\tfrac12, \text{rate } 1), \quad
        c \sim \mathrm{InverseGamma}(\tfrac12, b^2)

    (:math:`z^2/b^2` is a ratio of two independent :math:`\chi^2_1`, an :math:`F(1, 1)` variable). Guides can then
    use log-normal factors :math:`q(a), q(c)`, with the closed-form KLs of :mod:`pyro_prune.distributions.kl`.
    ``scale_in="gamma"`` moves :math:`b` into the Gamma factor instead:
    :math:`a \sim \mathrm{Gamma}(\tfrac12, \text{rate } 1/b^2)`, :math:`c \sim \mathrm{InverseGamma}(\tfrac12, 1)`
    (the form of [2] for the global scale).

    :param scale: :math:`b > 0`, tensor or float.
    :param scale_in: which factor carries :math:`b`: ``"inverse_gamma"`` (default) or ``"gamma"``.
    :returns: ``NonCentredHalfCauchy(gamma, inverse_gamma)``, both with ``b``'s shape, dtype and device.
    :raises ValueError: for a non-positive, infinite or NaN scale, or an unknown ``scale_in``.
    """
    (b,) = broadcast_all(scale)
    if not bool(((b > 0) & torch.isfinite(b)).all()):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    half, one = torch.full_like(b, 0.5), torch.ones_like(b)
    if scale_in == "inverse_gamma":
        return NonCentredHalfCauchy(Gamma(half, one), InverseGamma(half, b.pow(2)))
    if scale_in == "gamma":
        return NonCentredHalfCauchy(Gamma(half, b.pow(-2)), InverseGamma(half, one))
    raise ValueError(f"scale_in must be 'inverse_gamma' or 'gamma', got {scale_in!r}")


def optimal_factor_locs(
    product_loc: torch.Tensor, factor_scale: torch.Tensor, rate
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The KL-optimal split of a log-normal product :math:`P = a\,c` into log-normal factors (Louizos et al. [2]).

    With :math:`q(a) = \mathrm{LogNormal}(\mu_a, \sigma^2)`, :math:`q(c) = \mathrm{LogNormal}(\mu_c, \sigma^2)`,
    priors :math:`a \sim \mathrm{Gamma}(\tfrac12, \text{rate } \beta)`, :math:`c \sim \mathrm{InvGamma}(\tfrac12, 1)`
    (:func:`half_cauchy_noncentred`: :math:`\beta = 1` for the local scales, :math:`\beta = \tau_0^{-2}` for the
    global one), and the product's log-mean :math:`m = \mu_a + \mu_c` held fixed, the closed-form KLs give

    .. math::

        \mathrm{KL}_a + \mathrm{KL}_c = -\tfrac12\mu_a + \beta e^{\mu_a + \sigma^2/2}
            + \tfrac12\mu_c + e^{-\mu_c + \sigma^2/2} - 2\log\sigma + \text{const},

    whose minimum over the split is at :math:`e^{\mu_a} = e^{-\sigma^2/2} / (\beta + e^{-m})`:

    .. math::

        \mu_a = -\tfrac{\sigma^2}{2} - \log(\beta + e^{-m}), \qquad \mu_c = m - \mu_a,
        \qquad \mathrm{KL}_a + \mathrm{KL}_c = \tfrac{\sigma^2}{2} + \log(\beta e^{m/2} + e^{-m/2}) + 1
        - 2\log\sigma + \text{const}.

    The likelihood sees only the product, so a guide that sets its factors this way loses nothing and has no
    direction to wander along: a free split must travel, one Adam step of about ``lr`` at a time, to
    :math:`\mu_a \approx \log\tau_0^2` (about -23 at :math:`\tau_0 = 10^{-5}`), and until it gets there the
    Gamma factor's KL :math:`\beta\,\mathbb E a` is of order :math:`10^{10}`.

    :param product_loc: :math:`m`, the mean of :math:`\log P`, any shape.
    :param factor_scale: :math:`\sigma > 0` of each factor's logarithm (broadcasts against ``product_loc``).
    :param rate: :math:`\beta > 0` (float or tensor).
    :returns: ``(mu_a, mu_c)``, broadcast shape.
    """
    log_rate = torch.as_tensor(rate, dtype=product_loc.dtype, device=product_loc.device).log()
    mu_a = -0.5 * factor_scale.pow(2) - torch.logaddexp(log_rate, -product_loc)
    return mu_a, product_loc - mu_a
