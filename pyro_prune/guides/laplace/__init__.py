"""The Laplace approximation as a Pyro ``AutoGuide``: the guide, its layer view of the sites, the GLM predictive."""

from .guide import LaplaceGuide, laplace_guide

__all__ = ["LaplaceGuide", "laplace_guide"]
