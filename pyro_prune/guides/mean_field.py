r"""A mean-field Gaussian guide trained by the fused objective: ``AutoNormal``-style training at sparse-VD speed.

:class:`AutoMeanFieldNormal` is the factorized Gaussian :math:`q(w) = \prod_i \mathcal N(w_i \mid \mu_i,
\sigma_i^2)` of Pyro's ``AutoNormal``, as a :class:`~pyro_prune.guides.LocalReparamGuide`: with Gaussian (or
log-uniform) priors, :func:`pyro_prune.fit` trains it by the fused local-reparameterization objective of
:mod:`pyro_prune.fused` (TyXe's ``local_reparameterization`` for ordinary guides), with the closed-form KL

.. math::

    \mathrm{KL}\bigl(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(m, s^2)\bigr)
    = \log\frac{s}{\sigma} + \frac{\sigma^2 + (\mu - m)^2}{2 s^2} - \frac12

summed over every weight in one call over the flat parameters (:func:`~pyro_prune.guides.base.flat_normal_kl`).

Why a guide class and not an adapter around Pyro's ``AutoNormal``: ``AutoNormal`` keeps its parameters in Pyro's
global param store under names fixed by its class (unless ``module_local_params``), constrains its scales through
a transform on every access, and other code (``pyro.get_param_store().save``, a second ``AutoNormal``) may hold the
same tensors; laying them into one flat buffer would alias store tensors behind the user's back. This class keeps
its parameters on itself (isolated, ``state_dict``/copies/``.to()`` as every guide of the library) and differs
from ``AutoNormal`` only in its parameterization, :math:`(\mu, \log\sigma^2)` instead of
:math:`(\mu, \mathrm{softplus}^{-1}\sigma)` (the same family, so the same optimum; Adam's path differs), and in its
default initial means (the network's weights, as :class:`~pyro_prune.AutoSparseVD`).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from .._checks import check_positive
from .sparse_vd import AutoSparseVD

__all__ = ["AutoMeanFieldNormal"]


class AutoMeanFieldNormal(AutoSparseVD):
    r"""Mean-field Gaussian posterior :math:`q(w) = \mathcal N(\mu, \sigma^2)` of every weight site, trained by the
    fused objective of :func:`pyro_prune.fit` (module docstring).

    :param model: a :class:`~pyro_prune.BayesianModel` (or any Pyro model whose latent sites are real-valued and
        outside plates; then ``fit`` uses Pyro's ``SVI``).
    :param init_loc_fn: initial :math:`\mu`; default: the network's own weights for a ``BayesianModel``, Pyro's
        ``init_to_median`` otherwise.
    :param init_scale: initial :math:`\sigma` of every weight (``AutoNormal``'s argument and default, 0.1).
    :param local_reparameterization: sample pre-activations instead of weights inside :func:`~pyro_prune.fit`.

    Everything else (parameters ``guide.locs`` and ``guide.log_sigma2``, ``median``, ``quantiles``, ``marginals``,
    ``state_dict``, copies) is :class:`~pyro_prune.AutoSparseVD`'s.
    """

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Optional[Callable] = None,
        init_scale: float = 0.1,
        local_reparameterization: bool = True,
        create_plates=None,
    ):
        self.init_scale = check_positive("init_scale", init_scale)
        super().__init__(
            model,
            init_loc_fn=init_loc_fn,
            init_log_sigma2=2.0 * math.log(self.init_scale),
            local_reparameterization=local_reparameterization,
            create_plates=create_plates,
        )
