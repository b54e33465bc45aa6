r"""Which Pyro objective a training loop uses, shared by :func:`~pyro_prune.fit` and
:mod:`pyro_prune.lightning` so that both refuse and build the same things.

* :data:`ALPHA_ON`: where a Rényi :math:`\alpha \ne 1` applies, ``"joint"`` (Pyro's ``RenyiELBO`` on
  :math:`p(y, w)/q(w)`) or ``"likelihood"`` (the power on each example's likelihood, :mod:`pyro_prune.fused`).
* :func:`make_elbo`: ``TraceMeanField_ELBO`` at :math:`\alpha = 1` (analytic KL wherever one is registered), else
  ``RenyiELBO``, with vectorized particles when every layer can take sampled weights with sample dimensions.
* :func:`check_joint_renyi`: the joint Rényi bound

  .. math::

      \mathcal L_\alpha = \frac{1}{1-\alpha} \log \frac1K \sum_k \Big[\frac{p(y, w_k)}{q(w_k)}\Big]^{1-\alpha}

  evaluates the prior density :math:`p(w_k)` at sampled weights, which is infinite at :math:`w = 0` for the
  improper log-uniform prior (where pruned weights collapse), so it is refused for such priors.
"""

from __future__ import annotations

import warnings
from typing import Any, Union

from pyro.infer import RenyiELBO, TraceMeanField_ELBO

from .distributions import is_improper
from .model import BayesianModel

__all__ = ["ALPHA_ON", "make_elbo", "check_joint_renyi"]

#: Values of ``alpha_on`` (:func:`~pyro_prune.fit`, :class:`~pyro_prune.lightning.BayesianLightningModule`).
ALPHA_ON = ("joint", "likelihood")


def make_elbo(model: Any, alpha: float, num_particles: int, stacklevel: int = 2) -> Union[TraceMeanField_ELBO,
                                                                                           RenyiELBO]:  # fmt: skip
    """Pyro's ELBO for ``model``: ``TraceMeanField_ELBO`` if ``alpha == 1`` else ``RenyiELBO(alpha)``, with
    ``num_particles`` particles, vectorized unless a layer cannot take sampled weights with sample dimensions (e.g.
    BatchNorm; then a warning says the particles are evaluated one by one).

    :param stacklevel: the warning's ``stacklevel``, counted from this function's caller.
    """
    vectorizable = getattr(model, "vectorizable", True)
    nesting = {"max_plate_nesting": 1} if isinstance(model, BayesianModel) else {}
    vec = num_particles > 1 and vectorizable
    if num_particles > 1 and not vectorizable:
        warnings.warn(
            "model has layers that cannot take sampled weights with sample dims (e.g. BatchNorm): "
            "particles are evaluated one by one, not vectorized",
            stacklevel=stacklevel + 1,
        )
    if alpha == 1.0:
        return TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=vec, **nesting)
    return RenyiELBO(alpha=alpha, num_particles=num_particles, vectorize_particles=vec, **nesting)


def check_joint_renyi(model: Any, alpha: float, alpha_on: str) -> None:
    """Refuse the joint Rényi bound (``alpha != 1``, ``alpha_on="joint"``) on a model with an improper prior.

    :raises ValueError: some weight site of ``model`` has an improper (log-uniform) prior.
    """
    if alpha == 1.0 or alpha_on != "joint" or not isinstance(model, BayesianModel):
        return
    improper = [n for n, info in model.sites.items() if info.kind != "other" and is_improper(model.prior(n))]
    if improper:
        raise ValueError(
            f"alpha={alpha} with alpha_on='joint' (Pyro's RenyiELBO on p(y, w) / q(w)) needs a proper prior, "
            f"but sites {improper[:3]}{'...' if len(improper) > 3 else ''} have an improper log-uniform one, whose "
            "density is infinite at w = 0 where pruned weights collapse; use alpha_on='likelihood' (the power on "
            "each example's likelihood with the KL in closed form) or a proper prior"
        )
