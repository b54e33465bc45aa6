r"""The Pyro model ``bayesianize`` returns: a network whose weights are sample sites, observed through a likelihood.

.. math::

    p(y, w \mid x) = p(w) \prod_{n} p(y_n \mid f_w(x_n)).

:class:`SiteInfo` describes one weight site; :class:`BayesianModel` runs the network (tracking the activations'
leading sample dimensions per forward pass, :mod:`pyro_prune.model.folding`) and observes ``y`` inside the data
plate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.nn import PyroModule

from .bayesian_layers import BayesianLayer
from .folding import sample_dims_scope
from .group_prior import GroupInfo, GroupPrior
from .likelihoods import Likelihood
from .local_params import LocalParamsMixin, keep_params_local

__all__ = ["SiteInfo", "BayesianModel"]


@dataclass(frozen=True)
class SiteInfo:
    """What a weight sample site is.

    :ivar name: site name, the parameter's name in the network (``"0.weight"``).
    :ivar module: dotted path of the owning module (``"0"``).
    :ivar param: ``"weight"`` or ``"bias"`` (or another parameter name).
    :ivar kind: ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"other"``.
    :ivar shape: parameter shape.
    :ivar fan_in: inputs per output unit (``in_features`` or ``in_channels/groups · prod(kernel)``).
    :ivar fan_out: output units (``out_features`` / ``out_channels``).
    :ivar out_axis: axis of the parameter indexing output units (0 for weights and biases).
    """

    name: str
    module: str
    param: str
    kind: str
    shape: torch.Size
    fan_in: int
    fan_out: int
    out_axis: int = 0

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))


class BayesianModel(LocalParamsMixin, PyroModule):
    r"""A network whose weights are Pyro sample sites, observing ``y`` through a likelihood.

    Build it with :func:`~pyro_prune.bayesianize`.  ``model(x, y=None)`` runs the network with weights drawn
    from the prior (or replayed from a guide), observes ``y`` and returns the network output
    (shape ``S + (B, …)`` with leading sample dimensions ``S`` under vectorized particles).

    :param net: the Bayesian copy of the network.
    :param likelihood: the observation head.
    :param sites: ``{site name: SiteInfo}`` of every weight sample site, in module order.
    :param point_estimates: names of parameters kept as point estimates (Pyro params).
    :param vectorizable: whether every stochastic layer accepts sampled weights with sample dims.
    :param template: a private copy of the user's plain network (for exporting plain modules).
    :param initial: ``{site: tensor}``, the network's weights at ``bayesianize`` time.
    :param group_prior: the :class:`~pyro_prune.GroupPrior`, or ``None``.
    :param group_sites: ``{layer: GroupInfo}`` of each group-scaled layer (with a ``GroupPrior``).

    :ivar sites: as the parameter.
    :ivar point_estimates: a tuple of the point-estimate parameter names.
    :ivar vectorizable: as the parameter.
    :ivar group_prior: as the parameter.
    :ivar group_sites: as the parameter (empty without a ``GroupPrior``).

    Its point-estimate parameters (BatchNorm, LayerNorm, a learned noise scale) stay on the model, never in Pyro's
    global param store, whatever ``module_local_params`` says (:mod:`pyro_prune.model.local_params`): two models
    in one process never share them.  ``copy.deepcopy``, pickle, ``state_dict``/``load_state_dict`` and
    ``.to(dtype/device)`` keep the model whole (its layers stay Bayesian layers, its priors follow its dtype).
    """

    def __init__(
        self,
        net: nn.Module,
        likelihood: Likelihood,
        sites: Dict[str, SiteInfo],
        point_estimates: Sequence[str],
        vectorizable: bool,
        template: nn.Module,
        initial: Dict[str, torch.Tensor],
        group_prior: Optional[GroupPrior] = None,
        group_sites: Optional[Dict[str, GroupInfo]] = None,
    ):
        super().__init__()
        keep_params_local(self)
        self._template = (template,)  # a tuple: not registered as a submodule
        self._initial = initial
        self.add_module("net", net)
        # Name sites like the network's own parameters ("0.weight", not "net.0.weight").
        net._pyro_set_supermodule("", self._pyro_context)
        self.likelihood = likelihood
        self.sites = sites
        self.point_estimates = tuple(point_estimates)
        self.vectorizable = vectorizable
        self.group_prior: Optional[GroupPrior] = group_prior
        self.group_sites: Dict[str, GroupInfo] = dict(group_sites or {})

    @property
    def scale_sites(self) -> tuple:
        """Names of the group-scale sample sites (empty unless bayesianized with a :class:`~pyro_prune.GroupPrior`)."""
        return tuple(n for info in self.group_sites.values() for n in info.scale_sites.values())

    @property
    def net(self) -> nn.Module:
        """The Bayesian copy of the network (its stochastic layers are Pyro modules)."""
        try:
            return self._modules["net"]
        except KeyError:
            raise AttributeError("net") from None

    @property
    def dataset_size(self) -> int:
        return self.likelihood.dataset_size

    def _ref(self) -> torch.Tensor:
        for b in self.buffers():
            return b
        return next(self.parameters())

    @property
    def dtype(self) -> torch.dtype:
        return self._ref().dtype

    @property
    def device(self) -> torch.device:
        return self._ref().device

    def prior(self, name: str) -> dist.Distribution:
        """The prior distribution of weight site ``name`` (in the model's dtype/device)."""
        info = self.sites.get(name)
        if info is None:
            raise KeyError(f"{name!r} is not a weight site; sites are {list(self.sites)}")
        module = self.net.get_submodule(info.module) if info.module else self.net
        if not isinstance(module, BayesianLayer):
            raise ValueError(f"site {name!r} belongs to a {type(module).__name__}, whose prior is a PyroSample")
        return module._pp_prior(info.param)

    def initial_weights(self) -> Dict[str, torch.Tensor]:
        """The network's weights at ``bayesianize`` time, ``{site: tensor}`` (in the model's dtype/device)."""
        return {k: v.to(device=self.device, dtype=self.dtype) for k, v in self._initial.items()}

    def template(self) -> nn.Module:
        """A fresh deep copy of the plain PyTorch network that was bayesianized (its original weights)."""
        return copy.deepcopy(self._template[0]).to(self.device)

    def _check_x(self, x: torch.Tensor) -> None:
        """Raise unless ``x`` is a finite tensor with a batch dimension (also used by :func:`~pyro_prune.fit`)."""
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or inf")
        if x.dim() == 0:
            raise ValueError("x must have a batch dimension, got a scalar")

    @staticmethod
    def _check_y(x: torch.Tensor, y: torch.Tensor) -> None:
        if not torch.is_tensor(y):
            raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have one row per row of x: x has shape {tuple(x.shape)}, y {tuple(y.shape)}")

    def run_net(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network alone (no likelihood), tracking the activations' leading sample dimensions.

        The count lives in a fresh :func:`~pyro_prune.model.folding.sample_dims_scope` per call, so nested calls
        and calls in other threads never see each other's.
        """
        with sample_dims_scope():
            return self.net(x)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the network and observe ``y`` inside ``pyro.plate("data", N, subsample_size=len(x))``.

        :param x: inputs, shape ``(B, …)`` as the network takes them.
        :param y: targets ``(B, …)`` or ``None`` (then ``obs`` is sampled).
        :returns: the network output.
        :raises ValueError: ``x`` does not fit the network, or ``y`` does not fit ``x`` or the likelihood.
        """
        self._check_x(x)
        if y is not None:
            self._check_y(x, y)
        try:
            out = self.run_net(x)
        except RuntimeError as e:
            if "shape" in str(e) or "size" in str(e) or "channels" in str(e):
                raise ValueError(f"x of shape {tuple(x.shape)} does not fit the network: {e}") from e
            raise
        self.likelihood(out, y)
        return out
