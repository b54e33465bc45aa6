"""Posterior families as Pyro ``AutoGuide`` subclasses; each registers its reader in :mod:`pyro_prune.marginals`."""

from .group_sparse import AutoGroupSparse
from .laplace import LaplaceGuide, laplace_guide
from .sparse_vd import AutoSparseVD
from .subnetwork import AutoSubnetwork

__all__ = [
    "AutoSparseVD",
    "LaplaceGuide",
    "laplace_guide",
    "AutoGroupSparse",
    "AutoSubnetwork",
]
