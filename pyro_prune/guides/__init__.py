"""Posterior families as Pyro ``AutoGuide`` subclasses, and the ``marginals()`` contract."""

from .base import Marginal, marginals
from .group import AutoGroupSparse, GroupMarginal
from .laplace import LaplaceGuide, laplace_guide
from .sparse_vd import AutoSparseVD
from .subnetwork import AutoSubnetwork

__all__ = [
    "Marginal",
    "marginals",
    "AutoSparseVD",
    "LaplaceGuide",
    "laplace_guide",
    "AutoGroupSparse",
    "GroupMarginal",
    "AutoSubnetwork",
]
