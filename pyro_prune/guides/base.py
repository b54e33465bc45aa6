r"""The ``marginals()`` contract shared by every guide, and readers for Pyro's own autoguides.

A guide's marginal at a weight site is summarized by a Gaussian :math:`\mathcal N(\mu, \sigma^2)`
(per weight) and, where the guide defines it, the dropout parameter

.. math::

    \log\alpha = \log\sigma^2 - \log\mu^2 ,

which for a Gaussian marginal is a function of the signal-to-noise ratio
:math:`\mathrm{SNR} = |\mu|/\sigma = \exp(-\log\alpha / 2)`: pruning rules on either are the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Dict, Optional

import torch
from pyro.infer.autoguide import AutoContinuous, AutoDelta, AutoNormal
from torch.distributions import constraints

from ..distributions.kl import LOG_ALPHA_EPS, normal_log_alpha

__all__ = ["Marginal", "marginals", "check_quantiles", "LOG_ALPHA_EPS"]


@dataclass
class Marginal:
    """Per-weight Gaussian summary of a guide's marginal at one site (tensors shaped like the parameter).

    :ivar loc: posterior mean :math:`\\mu`.
    :ivar scale: posterior standard deviation :math:`\\sigma` (0 for point estimates).
    :ivar log_alpha: :math:`\\log\\alpha`, when the guide defines it (else derived from loc and scale).
    :ivar group: optional per-group summary (structured guides).
    """

    loc: torch.Tensor
    scale: torch.Tensor
    log_alpha: Optional[torch.Tensor] = None
    group: Optional[Any] = None

    def __post_init__(self):
        if self.loc.shape != self.scale.shape:
            raise ValueError(f"loc {tuple(self.loc.shape)} and scale {tuple(self.scale.shape)} differ in shape")

    @property
    def snr(self) -> torch.Tensor:
        r"""Signal-to-noise ratio :math:`|\mu| / \sigma` (``inf`` where :math:`\sigma = 0`)."""
        return self.loc.abs() / self.scale

    def get_log_alpha(self) -> torch.Tensor:
        r""":math:`\log\alpha` as given by the guide, else :math:`2\log\sigma - \log(\mu^2 + \epsilon)`."""
        if self.log_alpha is not None:
            return self.log_alpha
        return normal_log_alpha(self.loc, self.scale)


def check_quantiles(quantiles: Any, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``quantiles`` as a 1-D tensor of levels in (0, 1) (shared by every guide's ``quantiles()``).

    :raises ValueError: not 1-D, or a level outside (0, 1) (NaN included).
    """
    q = torch.as_tensor(quantiles, dtype=dtype)
    if q.dim() != 1 or not bool(((q > 0) & (q < 1)).all()):
        raise ValueError(f"quantiles must be a 1-D sequence in (0, 1), got {quantiles!r}")
    return q


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


def _is_real(support: Any) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _check_real(guide: Any) -> None:
    for name, site in guide.prototype_trace.iter_stochastic_nodes():
        if not _is_real(site["fn"].support):
            raise ValueError(f"site {name!r} has support {site['fn'].support}; marginals() needs real-valued sites")


def marginals(guide: Any) -> Dict[str, Marginal]:
    """``{site: Marginal}`` of a trained guide.

    Our guides implement ``guide.marginals()``; Pyro's ``AutoNormal``, ``AutoDelta`` and the
    ``AutoContinuous`` family (``AutoDiagonalNormal``, ``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal``:
    diagonal of the covariance) are read directly.

    :raises TypeError: for a guide with no marginals.
    :raises ValueError: for a guide that has not been run yet, or sites with constrained support.
    """
    own = getattr(guide, "marginals", None)
    if callable(own):
        return own()
    if not isinstance(guide, (AutoNormal, AutoDelta, AutoContinuous)):
        raise TypeError(
            f"{type(guide).__name__} has no marginals(): use a pyro_prune guide or Pyro's AutoNormal, AutoDelta, "
            "AutoDiagonalNormal or AutoMultivariateNormal"
        )
    if guide.prototype_trace is None:
        raise ValueError("guide is not initialized: fit it first (pp.fit) or call guide(x, y) once")
    _check_real(guide)
    out: Dict[str, Marginal] = {}
    with torch.no_grad():
        if isinstance(guide, AutoNormal):
            for name, _ in guide.prototype_trace.iter_stochastic_nodes():
                loc = attrgetter(name)(guide.locs).detach()
                scale = attrgetter(name)(guide.scales).detach()
                out[name] = Marginal(loc.clone(), scale.clone())
        elif isinstance(guide, AutoDelta):
            for name, value in guide.median().items():
                out[name] = Marginal(value.detach().clone(), torch.zeros_like(value))
        else:
            post = guide.get_posterior()
            loc = post.mean if hasattr(post, "mean") else guide.loc
            var = post.variance
            locs, vars_ = _split_flat(guide, loc.detach()), _split_flat(guide, var.detach())
            for name in locs:
                out[name] = Marginal(locs[name].clone(), vars_[name].sqrt())
    return out
