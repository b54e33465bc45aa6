"""The Laplace approximation as a Pyro ``AutoGuide``: the guide, its layer view of the sites, the GLM predictive,
and online evidence maximisation while training (:func:`fit_marglik`)."""

from .guide import LaplaceGuide, LaplaceSamplingWarning, laplace_guide
from .marglik import MarglikResult, fit_marglik, map_objective

__all__ = ["LaplaceGuide", "LaplaceSamplingWarning", "laplace_guide", "MarglikResult", "fit_marglik", "map_objective"]
