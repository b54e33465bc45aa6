r"""Log-uniform priors: :class:`LogUniform` (bounded), :class:`ImproperLogUniform` (:math:`p(w) \propto 1/|w|`, the
prior of sparse variational dropout [1]) and the group scale mixture :class:`LogUniformScaleMixture` [2].

References [1]–[3]: the list in :mod:`pyro_prune.distributions`.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Union

import torch
from pyro.distributions import Normal, TorchDistribution, constraints
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample
from pyro.poutine.runtime import effectful
from torch.distributions.utils import broadcast_all

__all__ = ["LogUniform", "ImproperLogUniform", "LogUniformScaleMixture", "init_improper_to_zero", "is_improper"]


@effectful(type="get_init_messengers")
def _active_init_strategies() -> list:
    """The ``InitMessenger``\\ s (Pyro's init strategies) active around this call, innermost last; ``[]`` outside."""
    return []


def _value_for_init(d: TorchDistribution, sample_shape: torch.Size, message: str) -> torch.Tensor:
    """A starting value for an improper distribution when Pyro's ``init_to_sample`` asks for one; else raise.

    ``pyro.infer.Predictive`` runs the model under ``InitMessenger(init_to_sample)`` to count its plates and site
    shapes before it replays the guide's draws; the values of that pass are thrown away.  An improper distribution
    cannot be sampled, but any point of its support serves there: ones (``|w| = 1``, finite log density, in the
    default dtype; the Bayesian layers cast weights to the model's dtype).  Everywhere else -- a plain draw, other
    init strategies such as ``init_to_median`` -- ``sample()`` raises ``NotImplementedError`` with ``message``.
    """
    strategies = _active_init_strategies()
    if not strategies or strategies[0].init_fn is not init_to_sample:  # the innermost strategy is the one asking
        raise NotImplementedError(message)
    return torch.ones(d.shape(sample_shape))


class ImproperLogUniform(TorchDistribution):
    r"""The improper log-uniform prior of sparse variational dropout [1]:

    .. math::

        p(w) \propto \frac{1}{|w|}, \qquad \log p(w) = -\log|w| .

    It has no normalizer, so :meth:`sample` raises :class:`NotImplementedError` (a ``RuntimeError``, which
    Pyro's ``init_to_median`` catches to fall back to ``init_to_feasible``), and it has no mean or variance.
    Use it as the prior of a ``PyroSample`` site together with a guide: ``TraceMeanField_ELBO`` then uses the
    registered ``Normal ‖ ImproperLogUniform`` KL (:func:`molchanov_kl`); with Pyro's autoguides pass
    ``init_loc_fn=init_improper_to_zero`` (Pyro's default inits sample). ``LogUniform()`` with no bounds returns
    this distribution.

    Under Pyro's ``init_to_sample`` alone, :meth:`sample` returns ones (a point of the support) instead of raising:
    that is the strategy of ``pyro.infer.Predictive``'s shape pass, whose values are replaced by the guide's draws,
    so ``Predictive(model, guide=guide, parallel=True)`` works on a model with this prior.  A prior predictive
    (``Predictive(model, num_samples=...)`` without a guide) still raises.  ``AutoGuideList`` traces its model
    from the prior without an init strategy: give it the model under ``init_to_sample``,
    ``AutoGuideList(InitMessenger(init_to_sample)(model))``, and append guides built on ``model`` itself.

    :param batch_shape: batch shape (``expand`` sets it too).
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, batch_shape=torch.Size(), *, validate_args: Optional[bool] = None):
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ImproperLogUniform, _instance)
        super(ImproperLogUniform, new).__init__(torch.Size(batch_shape), torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`-\\log|w|`, shape ``broadcast(value.shape, batch_shape)`` (``+inf`` at ``w = 0``)."""
        if self._validate_args:
            self._validate_sample(value)
        lp = -value.abs().log()
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()):
        """Raises ``NotImplementedError`` (improper), except under ``init_to_sample`` (``Predictive``'s shape pass),
        which gets ones (:func:`_value_for_init`)."""
        return _value_for_init(
            self,
            sample_shape,
            "ImproperLogUniform (LogUniform() without bounds, p(w) ∝ 1/|w|) has no normalizer and cannot be "
            "sampled; use it as a prior together with a guide, or give bounds: LogUniform(low, high)",
        )

    rsample = sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)})"


class LogUniform(TorchDistribution):
    r"""Symmetric log-uniform distribution: :math:`\log|w| \sim U(\log l, \log h)` and an independent random sign,

    .. math::

        p(w) = \frac{1}{2\,|w|\,\log(h/l)}, \qquad l \le |w| \le h ,

    so :math:`|w|` follows ``scipy.stats.loguniform(l, h)``. Sampling is reparameterized through :meth:`icdf`.
    ``mean`` is 0, ``variance`` :math:`(h^2 - l^2) / (2\log(h/l))`, ``entropy``
    :math:`\log(2\log(h/l)) + \tfrac12\log(l h)`.

    ``support`` is the real line (the set :math:`l \le |w| \le h` is not connected, and the guides need a
    real support to place Gaussians on it); ``log_prob`` is :math:`-\infty` outside :math:`[l, h]`.

    ``LogUniform()`` with neither bound returns the improper limit :class:`ImproperLogUniform`
    (:math:`p(w) \propto 1/|w|`, as used by sparse variational dropout [1]).

    :param low: lower bound :math:`l > 0` of :math:`|w|` (tensor or float).
    :param high: upper bound :math:`h > l` of :math:`|w|`; broadcast with ``low`` to the batch shape.
    :raises ValueError: under validation, for non-positive or NaN bounds or ``low >= high``.
    """

    arg_constraints = {"low": constraints.positive, "high": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __new__(cls, low=None, high=None, *, validate_args: Optional[bool] = None):
        if cls is LogUniform and low is None and high is None:
            return ImproperLogUniform(validate_args=validate_args)
        return super().__new__(cls)

    def __getnewargs__(self):
        # pickle and copy call ``cls.__new__(cls, *args)``: pass the bounds, or ``__new__`` builds the improper prior
        return (self.low, self.high)

    def __init__(self, low=None, high=None, *, validate_args: Optional[bool] = None):
        if low is None or high is None:
            raise ValueError("LogUniform needs both low and high, or neither (the improper prior p(w) ∝ 1/|w|)")
        self.low, self.high = broadcast_all(low, high)
        super().__init__(self.low.shape, torch.Size(), validate_args=validate_args)
        if self._validate_args and not bool((self.low < self.high).all()):
            raise ValueError(f"LogUniform needs low < high, got low={low!r}, high={high!r}")

    def expand(self, batch_shape, _instance=None):
        # ``_get_checked_instance`` would call ``__new__`` without bounds, which builds the improper prior
        new = _instance if _instance is not None else LogUniform.__new__(type(self), self.low, self.high)
        batch_shape = torch.Size(batch_shape)
        new.low = self.low.expand(batch_shape)
        new.high = self.high.expand(batch_shape)
        super(LogUniform, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def log_ratio(self) -> torch.Tensor:
        r""":math:`\log(h / l)`."""
        return self.high.log() - self.low.log()

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        u = self.low.new_empty(self._extended_shape(sample_shape)).uniform_()
        return self.icdf(u)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a = value.abs()
        inside = (a >= self.low) & (a <= self.high)
        a_safe = torch.where(inside, a, self.low)  # no log(0) in the branch torch.where discards (NaN gradients)
        lp = -a_safe.log() - (2 * self.log_ratio).log()
        return torch.where(inside, lp, lp.new_tensor(-math.inf))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`F(w) = \tfrac12\bigl(1 + \mathrm{sign}(w)\,G(|w|)\bigr)` with
        :math:`G(a) = \log(a / l) / \log(h / l)` clamped to :math:`[0, 1]`."""
        if self._validate_args:
            self._validate_sample(value)
        a = torch.clamp(value.abs(), min=self.low, max=self.high)
        g = (a.log() - self.low.log()) / self.log_ratio
        return 0.5 + 0.5 * torch.where(value < 0, -g, g)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`F^{-1}(u) = \mathrm{sign}(u - \tfrac12)\, l \,(h/l)^{|2u - 1|}`."""
        a = (self.low.log() + (2 * value - 1).abs() * self.log_ratio).exp()
        return torch.where(value < 0.5, -a, a)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros_like(self.low)

    @property
    def variance(self) -> torch.Tensor:
        r""":math:`\mathbb E[w^2] = (h^2 - l^2) / (2\log(h/l))`."""
        return (self.high.pow(2) - self.low.pow(2)) / (2 * self.log_ratio)

    def entropy(self) -> torch.Tensor:
        r""":math:`H = \log(2\log(h/l)) + \tfrac12(\log l + \log h)`."""
        return (2 * self.log_ratio).log() + 0.5 * (self.low.log() + self.high.log())


class LogUniformScaleMixture(TorchDistribution):
    r"""Normal–Jeffreys group prior of Bayesian Compression [2]: each group :math:`g` of weights shares a scale,

    .. math::

        w_g = z_g\,\tilde w_g, \quad p(z_g) \propto \frac{1}{|z_g|}, \quad \tilde w_g \sim \mathcal N(0, I_n)
        \quad\Longrightarrow\quad p(w_g) = \int \mathcal N(w_g; 0, z^2 I_n)\,\frac{dz}{|z|}
        \propto \lVert w_g \rVert_2^{-n},

    so ``log_prob(w)`` :math:`= -\sum_g n \log\lVert w_g\rVert_2` (improper, up to a constant; with groups of one
    weight it is :class:`ImproperLogUniform`'s :math:`-\log|w|`). The event is a whole weight tensor; the groups
    are the slices along ``group_dim`` (``0``: output neurons of a Linear ``(out, in)`` weight / output channels of
    a Conv weight; ``1``: input neurons of a Linear weight), each of :math:`n` = ``numel // event_shape[group_dim]``
    weights. :meth:`sample` raises (improper).

    For a hierarchical model or guide: :meth:`scale_prior` is :math:`p(z)`, :meth:`conditional` is
    :math:`p(w \mid z)`; with :math:`q(z) = \mathcal N(\mu_z, \alpha_z\mu_z^2)` and
    :math:`q(w \mid z) = \mathcal N(z\mu, z^2\sigma^2)` the KL of [2] is
    ``molchanov_kl(log_alpha_z).sum() + LogUniformScaleMixture.conditional_kl(mu, log_sigma2).sum()``.

    :param event_shape: shape of the weight tensor, e.g. ``(out, in)``.
    :param group_dim: the event dimension that indexes the groups.
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, event_shape, group_dim: int = 0, *, validate_args: Optional[bool] = None):
        event_shape = torch.Size(event_shape)
        if len(event_shape) == 0:
            raise ValueError("LogUniformScaleMixture needs a non-empty event_shape (the weight tensor's shape)")
        if not -len(event_shape) <= group_dim < len(event_shape):
            raise ValueError(f"group_dim={group_dim} is out of range for event_shape {tuple(event_shape)}")
        self.group_dim = group_dim % len(event_shape)
        super().__init__(torch.Size(), event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LogUniformScaleMixture, _instance)
        new.group_dim = self.group_dim
        super(LogUniformScaleMixture, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def num_groups(self) -> int:
        """Number of groups, ``event_shape[group_dim]``."""
        return self.event_shape[self.group_dim]

    @property
    def group_size(self) -> int:
        """Weights per group, :math:`n`."""
        return self.event_shape.numel() // self.num_groups

    def _within_group_dims(self):
        k = len(self.event_shape)
        return [d - k for d in range(k) if d != self.group_dim]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`-\\sum_g n\\log\\lVert w_g\\rVert_2`, shape ``broadcast(value.shape[:-event_dim], batch_shape)``."""
        if self._validate_args:
            self._validate_sample(value)
        dims = self._within_group_dims()
        sq = value.pow(2).sum(dims) if dims else value.pow(2)
        lp = -0.5 * self.group_size * sq.log().sum(-1)
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()):
        """Raises ``NotImplementedError`` (improper), except under ``init_to_sample``, which gets ones."""
        return _value_for_init(
            self,
            sample_shape,
            "LogUniformScaleMixture is improper (p(z) ∝ 1/|z|) and cannot be sampled; use it as a prior with a guide",
        )

    rsample = sample

    def scale_prior(self) -> ImproperLogUniform:
        """:math:`p(z) \\propto 1/|z|`, batch shape ``batch_shape + (num_groups,)`` (``.to_event(1)`` for one site)."""
        return ImproperLogUniform(self.batch_shape + (self.num_groups,))

    def conditional(self, z: torch.Tensor) -> TorchDistribution:
        r""":math:`p(w \mid z) = \mathcal N(0, z_g^2)` for the weights of group :math:`g`.

        :param z: group scales, shape ``(..., num_groups)``.
        :returns: a Normal with ``batch_shape = z.shape[:-1]`` and ``event_shape = self.event_shape``.
        """
        if z.shape[-1:] != (self.num_groups,):
            raise ValueError(f"z must have shape (..., {self.num_groups}), got {tuple(z.shape)}")
        after = len(self.event_shape) - 1 - self.group_dim
        scale = z.abs().reshape(z.shape[:-1] + (1,) * self.group_dim + (self.num_groups,) + (1,) * after)
        shape = z.shape[:-1] + self.event_shape
        return Normal(torch.zeros_like(scale), scale).expand(shape).to_event(len(self.event_shape))

    @staticmethod
    def conditional_kl(loc: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{KL}(\mathcal N(z\mu, z^2\sigma^2)\,\|\,\mathcal N(0, z^2))
        = \tfrac12(-\log\sigma^2 + \sigma^2 + \mu^2 - 1)`, elementwise; independent of :math:`z` [2].

        :param loc: :math:`\mu`, the guide's weight means (in units of the group scale).
        :param log_sigma2: :math:`\log\sigma^2`, same shape.
        """
        return 0.5 * (log_sigma2.exp() + loc.pow(2) - 1 - log_sigma2)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(event_shape={tuple(self.event_shape)}, group_dim={self.group_dim}, "
            f"batch_shape={tuple(self.batch_shape)})"
        )


def is_improper(fn) -> bool:
    """Whether ``fn`` (possibly wrapped in ``Independent``/``Expanded``/``Masked``) is an improper prior of this
    module (:class:`ImproperLogUniform`, :class:`LogUniformScaleMixture`)."""
    while hasattr(fn, "base_dist"):  # Independent, ExpandedDistribution, MaskedDistribution
        fn = fn.base_dist
    return isinstance(fn, (ImproperLogUniform, LogUniformScaleMixture))


def init_improper_to_zero(
    site: Optional[dict] = None,
    *,
    fallback: Optional[Callable] = init_to_median,
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
):
    """Pyro init strategy (``init_loc_fn`` of an ``AutoGuide``) for models with the improper priors of this module.

    Pyro's own strategies call ``site["fn"].sample()`` (``init_to_feasible`` and ``init_to_uniform`` for the value's
    shape), which an improper prior cannot do. This one initialises sites whose prior is :class:`ImproperLogUniform`
    or :class:`LogUniformScaleMixture` (also inside ``.to_event()``/``.expand()``/``.mask()``) to zeros of the
    site's shape, and defers every other site to ``fallback``.  These priors hold no tensors, so the zeros are in
    ``dtype`` on ``device`` (default: PyTorch's defaults): for a model in another dtype or on a GPU pass the
    model's, ``init_improper_to_zero(dtype=model.dtype, device=model.device)``, or an ``AutoGuide`` built on it
    gets parameters of the default dtype and device for those sites.

    :param site: a Pyro sample site (``None`` returns the strategy itself, as Pyro's strategies do).
    :param fallback: the strategy for all other sites (default Pyro's ``init_to_median``).
    :param dtype: the dtype of the zeros (default ``torch.get_default_dtype()``).
    :param device: the device of the zeros (default: PyTorch's default device).
    """
    if site is None:
        return functools.partial(init_improper_to_zero, fallback=fallback, dtype=dtype, device=device)
    fn = site["fn"]
    if is_improper(fn):
        value = torch.zeros(fn.batch_shape + fn.event_shape, dtype=dtype, device=device)
        value._pyro_custom_init = False
        return value
    if fallback is None:
        raise ValueError(f"No init strategy specified for site {site['name']!r}")
    return fallback(site)
