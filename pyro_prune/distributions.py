r"""Sparsity priors as Pyro distributions, and their KL divergences.

* :class:`LogUniform` — symmetric log-uniform, :math:`p(w) = \frac{1}{2|w|\log(h/l)}` for :math:`l \le |w| \le h`;
  ``LogUniform()`` without bounds is the improper limit :class:`ImproperLogUniform`,
  :math:`p(|w|) \propto 1/|w|` (the prior of sparse variational dropout [1]).
* :class:`HalfCauchyScaleMixture` (alias :class:`Horseshoe`) — :math:`w = z\,s\,\varepsilon` with
  :math:`z \sim C^+(0, 1)`, :math:`\varepsilon \sim \mathcal N(0, 1)`; its exact marginal density [3]

  .. math::

      p(w) = \frac{e^{u} E_1(u)}{\sqrt{2\pi^3}\,s}, \qquad u = \frac{w^2}{2 s^2},

  with the exponential integral :math:`E_1` computed in torch (series below 1, continued fraction above).
* :func:`half_cauchy_noncentred` — :math:`C^+(0, b) \overset{d}{=} \sqrt{a\,c}` with
  :math:`a \sim \mathrm{Gamma}(\tfrac12, 1)`, :math:`c \sim \mathrm{InverseGamma}(\tfrac12, b^2)` [2].
* :class:`LogUniformScaleMixture` — Normal–Jeffreys group prior :math:`w = z\tilde w`, :math:`p(z) \propto 1/|z|` [2].

KL registrations (``torch.distributions.kl.register_kl``; Pyro's ``kl_divergence`` reaches them through
``Independent``/``.to_event()`` and ``.expand()``, so ``TraceMeanField_ELBO`` uses them):

* ``Normal ‖ ImproperLogUniform`` — the approximation of [1] eq. 14, a function of
  :math:`\log\alpha = \log\sigma^2 - \log\mu^2` only, exact up to an additive constant chosen so that
  :math:`\mathrm{KL} \to 0` as :math:`\alpha \to \infty`:
  :math:`-\mathrm{KL} \approx k_1\sigma(k_2 + k_3\log\alpha) - \tfrac12\log(1 + e^{-\log\alpha}) - k_1`;
* ``LogNormal ‖ Gamma`` and ``LogNormal ‖ InverseGamma`` in closed form (non-centred horseshoe, [2] appendix).

References

[1] Molchanov, Ashukha, Vetrov. "Variational Dropout Sparsifies Deep Neural Networks", ICML 2017.
[2] Louizos, Ullrich, Welling. "Bayesian Compression for Deep Learning", NeurIPS 2017.
[3] Carvalho, Polson, Scott. "The horseshoe estimator for sparse signals", Biometrika 2010.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import register_kl
from torch.distributions.utils import broadcast_all

__all__ = [
    "LogUniform",
    "ImproperLogUniform",
    "HalfCauchyScaleMixture",
    "Horseshoe",
    "LogUniformScaleMixture",
    "half_cauchy_noncentred",
    "molchanov_kl",
    "log_exp1_scaled",
    "MOLCHANOV_K",
    "LOG_ALPHA_CLIP",
]

#: Constants :math:`(k_1, k_2, k_3)` of the Molchanov et al. (2017) KL approximation.
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)
#: :math:`\log\alpha` is clipped to ``[-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP]`` inside the KL.
LOG_ALPHA_CLIP = 10.0
_EULER_GAMMA = 0.5772156649015329


def molchanov_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\mu, \alpha\mu^2)\,\|\,p(|w|)\propto 1/|w|)` up to a constant [1]:

    .. math::

        \mathrm{KL} \approx k_1 - k_1\,\sigma(k_2 + k_3\log\alpha) + \tfrac12\log(1 + e^{-\log\alpha}),

    with :math:`\log\alpha` clipped to :data:`LOG_ALPHA_CLIP`.
    """
    k1, k2, k3 = MOLCHANOV_K
    la = log_alpha.clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)
    return k1 - k1 * torch.sigmoid(k2 + k3 * la) + 0.5 * torch.nn.functional.softplus(-la)


# --------------------------------------------------------------------------------------------------
# log-uniform
# --------------------------------------------------------------------------------------------------
class ImproperLogUniform(TorchDistribution):
    r"""The improper log-uniform prior :math:`p(w) \propto 1/|w|` on the real line (Sparse VD [1]).

    ``log_prob(w) = -log|w|``; it has no normalizer, so :meth:`sample` raises: use it as a prior with a
    guide (``AutoSparseVD``, ``AutoNormal``...), where only densities and KLs are needed.

    :param batch_shape: batch shape (``expand`` sets it too).
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, batch_shape: torch.Size = torch.Size(), validate_args: Optional[bool] = None):
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ImproperLogUniform, _instance)
        super(ImproperLogUniform, new).__init__(torch.Size(batch_shape), torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -value.abs().log()

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError(
            "ImproperLogUniform (LogUniform() without bounds) has no normalizer and cannot be sampled; "
            "use it as a prior with a guide, or give bounds: LogUniform(low, high)"
        )

    def __repr__(self) -> str:
        return f"ImproperLogUniform(batch_shape={tuple(self.batch_shape)})"


class LogUniform(TorchDistribution):
    r"""Symmetric log-uniform distribution: :math:`|w| \sim` log-uniform on :math:`[l, h]`, random sign.

    .. math::

        p(w) = \frac{1}{2|w|\log(h/l)}, \quad l \le |w| \le h .

    ``LogUniform()`` with no bounds returns the improper limit :class:`ImproperLogUniform`.

    :param low: lower bound :math:`l > 0` of :math:`|w|`.
    :param high: upper bound :math:`h > l`.
    """

    arg_constraints = {"low": constraints.positive, "high": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __new__(cls, low=None, high=None, validate_args=None):
        if low is None and high is None:
            return ImproperLogUniform(validate_args=validate_args)
        return super().__new__(cls)

    def __init__(self, low=None, high=None, validate_args: Optional[bool] = None):
        if low is None or high is None:
            raise ValueError("LogUniform needs both low and high, or neither (the improper 1/|w| prior)")
        self.low, self.high = broadcast_all(low, high)
        super().__init__(self.low.shape, torch.Size(), validate_args=validate_args)
        if self._validate_args and not bool((self.low < self.high).all()):
            raise ValueError("LogUniform needs low < high")

    def expand(self, batch_shape, _instance=None):
        # not _get_checked_instance: LogUniform.__new__ without bounds would build the improper prior
        new = _instance if _instance is not None else object.__new__(type(self))
        batch_shape = torch.Size(batch_shape)
        new.low = self.low.expand(batch_shape)
        new.high = self.high.expand(batch_shape)
        super(LogUniform, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def _log_ratio(self) -> torch.Tensor:
        return self.high.log() - self.low.log()

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.low.dtype, device=self.low.device)
        sign = torch.randint(0, 2, shape, device=self.low.device).to(self.low.dtype) * 2 - 1
        return sign * (self.low.log() + u * self._log_ratio).exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a = value.abs()
        lp = -(2 * a * self._log_ratio).log()
        inside = (a >= self.low) & (a <= self.high)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def _cdf_abs(self, a: torch.Tensor) -> torch.Tensor:
        """:math:`P(|w| \\le a)`."""
        return ((a.clamp_min(1e-300).log() - self.low.log()) / self._log_ratio).clamp(0, 1)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        g = self._cdf_abs(value.abs())
        return torch.where(value < 0, 0.5 * (1 - g), 0.5 * (1 + g))

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        g = (2 * value - 1).abs()
        a = (self.low.log() + g * self._log_ratio).exp()
        return torch.where(value < 0.5, -a, a)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros_like(self.low)

    @property
    def variance(self) -> torch.Tensor:
        r""":math:`\mathbb E w^2 = (h^2 - l^2) / (2\log(h/l))`."""
        return (self.high.pow(2) - self.low.pow(2)) / (2 * self._log_ratio)

    def entropy(self) -> torch.Tensor:
        r""":math:`\log(2\log(h/l)) + \tfrac12(\log l + \log h)`."""
        return (2 * self._log_ratio).log() + 0.5 * (self.low.log() + self.high.log())


# --------------------------------------------------------------------------------------------------
# half-Cauchy scale mixture (horseshoe)
# --------------------------------------------------------------------------------------------------
def _exp1_scaled_series(u: torch.Tensor, terms: int = 40) -> torch.Tensor:
    # E1(u) = -gamma - log u - sum_{k>=1} (-u)^k / (k k!)
    s = torch.zeros_like(u)
    term = torch.ones_like(u)
    for k in range(1, terms + 1):
        term = term * (-u) / k
        s = s + term / k
    return (-_EULER_GAMMA - u.log() - s) * u.exp()


def _exp1_scaled_cf(u: torch.Tensor, depth: int = 60) -> torch.Tensor:
    # e^u E1(u) = 1 / (u + 1 - 1^2 / (u + 3 - 2^2 / (u + 5 - ...)))   (evaluated bottom-up)
    f = u + (2 * depth + 1)
    for k in range(depth, 0, -1):
        f = u + (2 * k - 1) - (k * k) / f
    return 1 / f


def log_exp1_scaled(u: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(e^u E_1(u))` for :math:`u > 0`, stable from :math:`10^{-300}` to :math:`10^{300}`, differentiable.

    Power series for :math:`u \le 1`, a continued fraction for :math:`1 < u < 10^6` and the asymptotic
    :math:`-\log u + \log(1 - 1/u + 2/u^2)` beyond.
    """
    small = u <= 1
    huge = u > 1e6
    us = torch.where(small, u, torch.ones_like(u)).clamp_min(torch.finfo(u.dtype).tiny)
    uc = torch.where(small | huge, 2 * torch.ones_like(u), u)
    uh = torch.where(huge, u, 1e7 * torch.ones_like(u))
    out_small = _exp1_scaled_series(us).log()
    out_cf = _exp1_scaled_cf(uc).log()
    out_huge = -uh.log() + torch.log1p(-1 / uh + 2 / uh.pow(2))
    return torch.where(small, out_small, torch.where(huge, out_huge, out_cf))


class HalfCauchyScaleMixture(TorchDistribution):
    r"""Horseshoe marginal: :math:`w = z\,s\,\varepsilon`, :math:`z \sim C^+(0, 1)`, :math:`\varepsilon \sim N(0,1)`.

    ``log_prob`` is the exact marginal :math:`\log p(w) = u + \log E_1(u) - \tfrac12\log(2\pi^3) - \log s`,
    :math:`u = w^2/(2s^2)` (it has a pole at :math:`w = 0`); ``sample`` draws through the mixture.

    :param scale: global scale :math:`s > 0`.
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, scale, validate_args: Optional[bool] = None):
        (self.scale,) = broadcast_all(scale)
        super().__init__(self.scale.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HalfCauchyScaleMixture, _instance)
        new.scale = self.scale.expand(torch.Size(batch_shape))
        super(HalfCauchyScaleMixture, new).__init__(torch.Size(batch_shape), torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        z = torch.distributions.Cauchy(0.0, 1.0).sample(shape).to(self.scale).abs()
        eps = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device)
        return self.scale * z * eps

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        u = value.pow(2) / (2 * self.scale.pow(2))
        return log_exp1_scaled(u) - 0.5 * math.log(2 * math.pi**3) - self.scale.log()

    @property
    def mean(self) -> torch.Tensor:  # the mixture has no finite mean (|w| is heavy-tailed like a Cauchy)
        return torch.full_like(self.scale, math.nan)

    @property
    def variance(self) -> torch.Tensor:
        return torch.full_like(self.scale, math.inf)


#: The horseshoe prior's marginal: ``Horseshoe(scale)`` is :class:`HalfCauchyScaleMixture`.
Horseshoe = HalfCauchyScaleMixture


def half_cauchy_noncentred(scale) -> Tuple[dist.Gamma, dist.InverseGamma]:
    r"""The non-centred decomposition :math:`C^+(0, b) \overset{d}{=} \sqrt{a\,c}` of Louizos et al. (2017):

    :math:`a \sim \mathrm{Gamma}(\tfrac12, \text{rate } 1)`, :math:`c \sim \mathrm{InverseGamma}(\tfrac12, b^2)`,
    so that guides can use log-normal factors for :math:`a` and :math:`c`.

    :param scale: :math:`b > 0` (tensor or float).
    :returns: ``(Gamma(1/2, 1), InverseGamma(1/2, b**2))`` with ``b``'s shape.
    """
    (b,) = broadcast_all(scale)
    if not bool((b > 0).all()):
        raise ValueError(f"scale must be positive, got {scale!r}")
    half = torch.full_like(b, 0.5)
    return dist.Gamma(half, torch.ones_like(b)), dist.InverseGamma(half, b.pow(2))


class LogUniformScaleMixture:
    r"""Normal–Jeffreys group prior (Louizos et al. 2017): :math:`w = z\,\tilde w` with
    :math:`p(z) \propto 1/|z|` per group and :math:`\tilde w \sim \mathcal N(0, 1)`, i.e.
    :math:`p(w \mid z) = \mathcal N(0, z^2)`; the marginal is again :math:`p(w) \propto 1/|w|`.

    :param group_shape: shape of the group scales :math:`z`.
    """

    def __init__(self, group_shape: torch.Size = torch.Size()):
        self.group_shape = torch.Size(group_shape)

    def scale_prior(self) -> ImproperLogUniform:
        """:math:`p(z) \\propto 1/|z|`, batch shape ``group_shape``."""
        return ImproperLogUniform(self.group_shape)

    @staticmethod
    def conditional(z: torch.Tensor) -> dist.Normal:
        """:math:`p(w \\mid z) = \\mathcal N(0, z^2)` (broadcast ``z`` to the weights yourself)."""
        return dist.Normal(torch.zeros_like(z), z.abs())

    def marginal(self, weight_shape: torch.Size = torch.Size()) -> ImproperLogUniform:
        """The (improper) marginal of each weight, :math:`p(w) \\propto 1/|w|`."""
        return ImproperLogUniform(torch.Size(weight_shape))


# --------------------------------------------------------------------------------------------------
# KL divergences
# --------------------------------------------------------------------------------------------------
@register_kl(torch.distributions.Normal, ImproperLogUniform)
def _kl_normal_improper_log_uniform(q, p):
    """Molchanov et al. (2017) eq. 14, with :math:`\\log\\alpha = \\log\\sigma^2 - \\log(\\mu^2 + 10^{-8})`."""
    log_alpha = 2 * q.scale.log() - (q.loc.pow(2) + 1e-8).log()
    kl = molchanov_kl(log_alpha)
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


@register_kl(torch.distributions.LogNormal, torch.distributions.Gamma)
def _kl_lognormal_gamma(q, p):
    r""":math:`\mathrm{KL}(\mathrm{LogNormal}(\mu, \sigma)\,\|\,\mathrm{Gamma}(a, b))
    = -\mu - \tfrac12 - \log(\sigma\sqrt{2\pi}) - a\log b + \log\Gamma(a) - (a - 1)\mu + b\,e^{\mu + \sigma^2/2}`."""
    mu, sigma = q.loc, q.scale
    a, b = p.concentration, p.rate
    neg_entropy = -(mu + 0.5 + sigma.log() + 0.5 * math.log(2 * math.pi))
    cross = a * b.log() - torch.lgamma(a) + (a - 1) * mu - b * (mu + 0.5 * sigma.pow(2)).exp()
    return neg_entropy - cross


@register_kl(torch.distributions.LogNormal, dist.InverseGamma)
def _kl_lognormal_inverse_gamma(q, p):
    r""":math:`\mathrm{KL}(\mathrm{LogNormal}(\mu, \sigma)\,\|\,\mathrm{InvGamma}(a, b))
    = -\mu - \tfrac12 - \log(\sigma\sqrt{2\pi}) - a\log b + \log\Gamma(a) + (a + 1)\mu + b\,e^{-\mu + \sigma^2/2}`."""
    mu, sigma = q.loc, q.scale
    a, b = p.concentration, p.rate
    neg_entropy = -(mu + 0.5 + sigma.log() + 0.5 * math.log(2 * math.pi))
    cross = a * b.log() - torch.lgamma(a) - (a + 1) * mu - b * (-mu + 0.5 * sigma.pow(2)).exp()
    return neg_entropy - cross
