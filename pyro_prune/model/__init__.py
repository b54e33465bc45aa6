"""Step 1 of the pipeline: a PyTorch network becomes a Pyro model.

``bayesianize`` (:mod:`.bayesianize`) wraps the network; :mod:`.layers` holds the functional layers with leading
sample dimensions and local reparameterization; :mod:`.likelihoods` the observation heads; :mod:`.group_prior` the
group (neuron/channel) scale-mixture priors.
"""

from . import group_prior, layers, likelihoods
from .bayesianize import BayesianModel, SiteInfo, bayesianize, init_from
from .group_prior import GroupPrior
from .likelihoods import Bernoulli, Categorical, Gaussian, Likelihood

__all__ = [
    "bayesianize",
    "BayesianModel",
    "SiteInfo",
    "init_from",
    "GroupPrior",
    "Likelihood",
    "Categorical",
    "Bernoulli",
    "Gaussian",
    "layers",
    "likelihoods",
    "group_prior",
]
