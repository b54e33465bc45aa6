"""pyro_prune: Bayesian neural networks in Pyro, for pruning and calibrated prediction.

``bayesianize`` turns a PyTorch network into a Pyro model, ``fit`` trains a guide with the
(Rényi) ELBO, ``predict``/``evaluate`` give posterior-predictive ensembles and their scores.
"""

from __future__ import annotations

from . import (
    compact,
    curvature,
    data,
    distributions,
    groups,
    guides,
    layers,
    likelihoods,
    metrics,
    plots,
    rules,
    subnet,
)
from .curvature import Kron
from .distributions import HalfCauchyScaleMixture, Horseshoe, ImproperLogUniform, LogUniform, LogUniformScaleMixture
from .groups import GroupPrior
from .guides import (
    AutoGroupSparse,
    AutoSparseVD,
    AutoSubnetwork,
    GroupMarginal,
    LaplaceGuide,
    Marginal,
    laplace_guide,
    marginals,
)
from .infer import EarlyStopping, History, fit
from .likelihoods import Bernoulli, Categorical, Gaussian, Likelihood
from .model import BayesianModel, SiteInfo, bayesianize, init_from
from .prediction import Prediction, evaluate, predict
from .prune import CompressionReport, PruneResult, prune

__version__ = "0.1.0"

__all__ = [
    "bayesianize",
    "BayesianModel",
    "SiteInfo",
    "init_from",
    "Likelihood",
    "Categorical",
    "Bernoulli",
    "Gaussian",
    "fit",
    "predict",
    "evaluate",
    "History",
    "Prediction",
    "EarlyStopping",
    "AutoSparseVD",
    "AutoSubnetwork",
    "laplace_guide",
    "LaplaceGuide",
    "Kron",
    "curvature",
    "AutoGroupSparse",
    "GroupMarginal",
    "GroupPrior",
    "Marginal",
    "marginals",
    "prune",
    "PruneResult",
    "CompressionReport",
    "LogUniform",
    "ImproperLogUniform",
    "HalfCauchyScaleMixture",
    "Horseshoe",
    "LogUniformScaleMixture",
    "data",
    "distributions",
    "plots",
    "guides",
    "layers",
    "likelihoods",
    "metrics",
    "rules",
    "compact",
    "groups",
    "subnet",
]
