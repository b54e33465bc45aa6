"""Posterior families as Pyro ``AutoGuide`` subclasses, and the ``marginals()`` contract."""

from .base import Marginal, marginals
from .sparse_vd import AutoSparseVD

__all__ = ["Marginal", "marginals", "AutoSparseVD"]
