r"""The ``marginals`` contract: a per-weight Gaussian summary of any guide, found through a registry.

A guide's marginal at a weight site is summarized by a Gaussian :math:`\mathcal N(\mu, \sigma^2)` (per weight) and
the dropout parameter

.. math::

    \log\alpha = \log\sigma^2 - \log\mu^2 ,

which for a Gaussian marginal is a function of the signal-to-noise ratio
:math:`\mathrm{SNR} = |\mu|/\sigma = \exp(-\log\alpha / 2)`: pruning rules on either are the same rule.

Pruning (:func:`pyro_prune.prune`) and subnetwork selection (:mod:`pyro_prune.subnet`) read a guide only through
:func:`marginals`, which dispatches on the guide's class through a registry, as ``torch.distributions.kl_divergence``
dispatches through ``register_kl``::

    @register_marginals(MyGuide)
    def _my_marginals(guide: MyGuide) -> Dict[str, Marginal]:
        return {site: Marginal(loc, scale) for site, (loc, scale) in guide.moments().items()}

Pyro's ``AutoNormal``, ``AutoDelta`` and the ``AutoContinuous`` family are registered here; each pyro_prune guide
registers itself in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Callable, Dict, Optional, Type

import torch
from pyro.infer.autoguide import AutoContinuous, AutoDelta, AutoNormal
from torch.distributions import constraints

from .distributions.kl import LOG_ALPHA_EPS, normal_log_alpha

__all__ = ["Marginal", "GroupMarginal", "marginals", "register_marginals", "is_real_support", "LOG_ALPHA_EPS"]

MarginalsFn = Callable[[Any], Dict[str, "Marginal"]]

# The class -> reader table, filled at import time by ``register_marginals`` (configuration, like
# torch.distributions.kl's _KL_REGISTRY); never written while the library runs.
_MARGINALS_REGISTRY: Dict[type, MarginalsFn] = {}


@dataclass
class GroupMarginal:
    r"""Per-group posterior summary of one layer (tensors of shape ``(G,)``).

    :ivar axis: weight axis indexing the groups (1: input units of a Linear layer; 0: Conv output channels).
    :ivar log_alpha: :math:`\log\alpha_g`, for both priors the group's noise-to-signal ratio
        :math:`\log\sum_{i\in g}\mathrm{Var}\,w_i - \log\sum_{i\in g}(\mathbb E w_i)^2` (the log-uniform
        scale's own :math:`\log\sigma_g^2 - \log\mu_g^2` is not used: see ``AutoGroupSparse``). Clipped to
        ``±clip``.
    :ivar scale_mean: :math:`\mathbb E\,z_g`.
    :ivar scale_std: :math:`\mathrm{sd}\,z_g`.
    :ivar log_scale_mean: :math:`\mathbb E\log|z_g|` (horseshoe) or :math:`\log|\mu_g|` (log-uniform).
    :ivar prior: ``"log-uniform"`` or ``"horseshoe"``.
    """

    axis: int
    log_alpha: torch.Tensor
    scale_mean: torch.Tensor
    scale_std: torch.Tensor
    log_scale_mean: torch.Tensor
    prior: str

    @property
    def num_groups(self) -> int:
        return self.log_alpha.numel()


@dataclass
class Marginal:
    r"""Per-weight Gaussian summary of a guide's marginal at one site (tensors shaped like the parameter).

    :ivar loc: posterior mean :math:`\mu`.
    :ivar scale: posterior standard deviation :math:`\sigma` (0 for point estimates).
    :ivar log_alpha: :math:`\log\alpha`; a guide that defines it passes it, otherwise it is filled in as
        :math:`2\log\sigma - \log(\mu^2 + \epsilon)`.
    :ivar group: the layer's :class:`GroupMarginal` (structured guides), else ``None``.
    """

    loc: torch.Tensor
    scale: torch.Tensor
    log_alpha: Optional[torch.Tensor] = None
    group: Optional[GroupMarginal] = None

    def __post_init__(self):
        if self.loc.shape != self.scale.shape:
            raise ValueError(f"loc {tuple(self.loc.shape)} and scale {tuple(self.scale.shape)} differ in shape")
        if self.log_alpha is None:
            self.log_alpha = normal_log_alpha(self.loc, self.scale)
        elif self.log_alpha.shape != self.loc.shape:
            raise ValueError(f"log_alpha {tuple(self.log_alpha.shape)} and loc {tuple(self.loc.shape)} differ in shape")

    @property
    def snr(self) -> torch.Tensor:
        r"""Signal-to-noise ratio :math:`|\mu| / \sigma` (``inf`` where :math:`\sigma = 0`)."""
        return self.loc.abs() / self.scale


def register_marginals(guide_cls: Type, fn: Optional[MarginalsFn] = None):
    """Register ``fn(guide) -> {site: Marginal}`` as the marginals reader of ``guide_cls`` and its subclasses.

    Usable as a decorator (``@register_marginals(MyGuide)``) or directly (``register_marginals(MyGuide, fn)``).
    The most specific registered class in the guide's MRO wins, as with ``register_kl``.

    :raises TypeError: ``guide_cls`` is not a class, or ``fn`` is not callable.
    """
    if not isinstance(guide_cls, type):
        raise TypeError(f"register_marginals: guide_cls must be a class, got {type(guide_cls).__name__}")

    def decorator(f: MarginalsFn) -> MarginalsFn:
        if not callable(f):
            raise TypeError(f"register_marginals: fn must be callable, got {type(f).__name__}")
        _MARGINALS_REGISTRY[guide_cls] = f
        return f

    return decorator if fn is None else decorator(fn)


def _lookup(guide: Any) -> Optional[MarginalsFn]:
    for cls in type(guide).__mro__:
        if cls in _MARGINALS_REGISTRY:
            return _MARGINALS_REGISTRY[cls]
    return None


def marginals(guide: Any) -> Dict[str, Marginal]:
    """``{site: Marginal}`` of a trained guide, read by the reader registered for its class.

    :raises TypeError: no reader is registered for the guide's class (nor any base class).
    :raises ValueError: (from the readers) a guide that has not been run yet, or sites with constrained support.
    """
    fn = _lookup(guide)
    if fn is None:
        known = sorted(c.__name__ for c in _MARGINALS_REGISTRY)
        raise TypeError(
            f"{type(guide).__name__} has no registered marginals: use one of {known} or register a reader with "
            "pyro_prune.marginals.register_marginals"
        )
    return fn(guide)


def is_real_support(support: Any) -> bool:
    """Whether a (possibly ``independent``-wrapped) support is the real line."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _check_autoguide(guide: Any) -> None:
    if guide.prototype_trace is None:
        raise ValueError("guide is not initialized: fit it first (pp.fit) or call guide(x, y) once")
    for name, site in guide.prototype_trace.iter_stochastic_nodes():
        if not is_real_support(site["fn"].support):
            raise ValueError(f"site {name!r} has support {site['fn'].support}; marginals() needs real-valued sites")


@register_marginals(AutoNormal)
def _auto_normal_marginals(guide: AutoNormal) -> Dict[str, Marginal]:
    _check_autoguide(guide)
    with torch.no_grad():
        return {
            name: Marginal(
                attrgetter(name)(guide.locs).detach().clone(), attrgetter(name)(guide.scales).detach().clone()
            )
            for name, _ in guide.prototype_trace.iter_stochastic_nodes()
        }


@register_marginals(AutoDelta)
def _auto_delta_marginals(guide: AutoDelta) -> Dict[str, Marginal]:
    _check_autoguide(guide)
    with torch.no_grad():
        return {k: Marginal(v.detach().clone(), torch.zeros_like(v)) for k, v in guide.median().items()}


def _split_flat(guide: AutoContinuous, flat: torch.Tensor) -> Dict[str, torch.Tensor]:
    out, pos = {}, 0
    for name, site in guide.prototype_trace.iter_stochastic_nodes():
        shape = site["value"].shape
        n = int(torch.Size(shape).numel())
        out[name] = flat[pos : pos + n].reshape(shape)
        pos += n
    if pos != flat.numel():
        raise ValueError("could not split the guide's latent vector by site (constrained sites?)")
    return out


@register_marginals(AutoContinuous)
def _auto_continuous_marginals(guide: AutoContinuous) -> Dict[str, Marginal]:
    """``AutoDiagonalNormal``, ``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal``: covariance diagonal."""
    _check_autoguide(guide)
    with torch.no_grad():
        post = guide.get_posterior()
        loc = post.mean if hasattr(post, "mean") else guide.loc
        locs, vars_ = _split_flat(guide, loc.detach()), _split_flat(guide, post.variance.detach())
        return {name: Marginal(locs[name].clone(), vars_[name].sqrt()) for name in locs}
