"""Posterior families as Pyro ``AutoGuide`` subclasses; each registers its reader in :mod:`pyro_prune.marginals`.

:class:`LocalReparamGuide` (:mod:`pyro_prune.guides.base`) is the base of guides that offer local
reparameterization and an analytic KL, which :func:`pyro_prune.fit` trains by its fused objective.
"""

from .base import LocalReparamGuide
from .group_sparse import AutoGroupSparse
from .laplace import LaplaceGuide, laplace_guide
from .mean_field import AutoMeanFieldNormal
from .sparse_vd import AutoSparseVD
from .subnetwork import AutoSubnetwork

__all__ = [
    "LocalReparamGuide",
    "AutoSparseVD",
    "AutoMeanFieldNormal",
    "LaplaceGuide",
    "laplace_guide",
    "AutoGroupSparse",
    "AutoSubnetwork",
]
