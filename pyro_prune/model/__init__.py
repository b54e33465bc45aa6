"""Step 1 of the pipeline: a PyTorch network becomes a Pyro model.

* :mod:`.bayesianize` -- ``bayesianize`` (the staged conversion) and ``init_from``;
* :mod:`.bayesian_model` -- ``BayesianModel`` (the Pyro model) and ``SiteInfo``;
* :mod:`.bayesian_layers` -- the Bayesian ``Linear``/``Conv1d``/``Conv2d`` and their local-reparameterization
  inputs (``LRTInputs``);
* :mod:`.priors` -- prior specifications resolved per parameter, cast to the model's dtype/device;
* :mod:`.folding` -- folding of leading sample dimensions for pooling/flatten modules (per forward pass);
* :mod:`.layers` -- functional layers with leading sample dimensions and the local reparameterization context;
* :mod:`.likelihoods` -- the observation heads;
* :mod:`.group_prior` -- the group (neuron/channel) scale-mixture priors.
"""

from . import bayesian_layers, bayesian_model, folding, group_prior, layers, likelihoods, priors
from .bayesian_model import BayesianModel, SiteInfo
from .bayesianize import bayesianize, init_from
from .group_prior import GroupPrior
from .likelihoods import Bernoulli, Categorical, Gaussian, Likelihood
from .priors import WeightsOnly

__all__ = [
    "bayesianize",
    "BayesianModel",
    "SiteInfo",
    "init_from",
    "GroupPrior",
    "WeightsOnly",
    "Likelihood",
    "Categorical",
    "Bernoulli",
    "Gaussian",
    "layers",
    "likelihoods",
    "group_prior",
    "bayesian_layers",
    "bayesian_model",
    "folding",
    "priors",
]
