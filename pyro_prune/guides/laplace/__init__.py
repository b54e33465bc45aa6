"""The Laplace approximation as a Pyro ``AutoGuide``: the guide, its layer view of the sites, the GLM predictive."""

from .guide import LaplaceGuide, LaplaceSamplingWarning, laplace_guide

__all__ = ["LaplaceGuide", "LaplaceSamplingWarning", "laplace_guide"]
