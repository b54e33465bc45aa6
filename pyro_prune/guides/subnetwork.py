r"""Subnetwork inference as a Pyro ``AutoGuide`` (Daxberger et al. 2021 [1]).

A full-covariance Gaussian over a selected subnetwork :math:`S` of the weights, the rest at point estimates:

.. math::

    q(w) = \mathcal N(w_S;\ \mu_S,\ L L^\top)\ \prod_{r \notin S} \delta(w_r - \hat w_r),
    \qquad L = \mathrm{diag}(\sigma)\,\tilde L ,

with :math:`\tilde L` unit lower triangular and :math:`\sigma > 0` (softplus), the parameterization of Pyro's
``AutoMultivariateNormal``.  :math:`\hat w` is the MAP (the network's weights, or ``init_loc_fn``), fixed, or
trained as point estimates with ``train_rest=True`` (then the objective treats them like ``AutoDelta``: their
prior log density enters, no entropy).

As in Pyro's ``AutoContinuous`` the guide samples **one auxiliary latent** ``"_AutoSubnetwork_latent"``
(:math:`w_S`, ``infer={"is_auxiliary": True}``), scatters it into the flat weight vector (``pp.subnet`` order) and
emits every weight site as a ``Delta`` at the result.  ``TraceMeanField_ELBO`` therefore scores
:math:`\log p(w) - \log q(w_S)` (the Delta sites give the prior term, the auxiliary site the entropy term) and
``RenyiELBO`` the importance weight :math:`p(y, w)/q(w_S)`; both are the correct objectives for this :math:`q`.
Pyro's plates (vectorized particles, ``Predictive(parallel=True)``) give the auxiliary site its batch shape, so
every site value carries the leading sample dimensions.

References

[1] Erik Daxberger et al. "Bayesian Deep Learning via Subnetwork Inference", ICML 2021.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.nn import PyroParam

from .. import curvature as cv
from .. import subnet as sn
from .._checks import check_bool, check_positive, check_quantiles
from ..marginals import Marginal, is_real_support, register_marginals
from ..model import BayesianModel, init_from
from .base import DurableGuide
from .laplace.layer_view import plain_net

__all__ = ["AutoSubnetwork"]


class AutoSubnetwork(DurableGuide):
    r"""Full-covariance Gaussian over a subnetwork :math:`S`, point estimates elsewhere (module docstring).

    :param model: a :class:`~pyro_prune.BayesianModel`.
    :param subnet: the subnetwork: a :mod:`pyro_prune.subnet` strategy (``LargestVariance(1000, source=guide)``,
        ``LargestMagnitude(n)``, ``Random(n, seed)``, ``LastLayer()``...), a ``{site: bool mask}`` dict or flat
        indices (``parameters_to_vector`` order).  Resolved once, at construction (:attr:`indices`).
    :param init_loc_fn: initial weights (Pyro init strategy); default the network's own weights (the MAP of a
        pre-trained network, ``pp.init_from(net)`` for another one).  :math:`\mu_S` starts there and the other
        weights stay there (unless ``train_rest``).
    :param init_scale: initial :math:`\sigma` (the Cholesky factor starts at ``init_scale * I``).
    :param train_rest: also train the weights outside :math:`S` as point estimates.

    Its parameters (:math:`\mu_S`, :math:`\sigma`, :math:`\tilde L`, the point estimates) and the subnetwork
    (:attr:`indices`, a buffer) stay on the guide, never in Pyro's global param store; ``state_dict`` holds them all
    (and the inputs' shapes, to set a fresh guide up before loading: any ``subnet`` of a fresh guide is replaced by
    the loaded indices).  ``pp.save`` writes that ``state_dict`` with ``init_scale`` and ``train_rest``;
    ``pp.load`` rebuilds the guide on the saved indices (``init_loc_fn`` is not saved: the parameters are).
    """

    def __init__(
        self,
        model: BayesianModel,
        subnet: Any,
        init_loc_fn: Optional[Callable] = None,
        init_scale: float = 1e-2,
        train_rest: bool = False,
    ):
        if not isinstance(model, BayesianModel):
            raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(model).__name__}")
        init_scale = check_positive("init_scale", init_scale)
        train_rest = check_bool("train_rest", train_rest)
        self.selection = sn.as_selection(subnet)
        idx = self.selection.select(model)
        if init_loc_fn is None:
            init_loc_fn = init_from(model.initial_weights())
        self.init_loc_fn = init_loc_fn
        self.init_scale = float(init_scale)
        self.train_rest = train_rest
        self._model_ref = (model,)  # a tuple, not a submodule: the guide must not own the model's parameters
        super().__init__(InitMessenger(init_loc_fn)(model))
        self._sites = {k: info.shape for k, info in model.sites.items()}
        self.register_buffer("indices", idx.to(model.device))

    # -- setup -----------------------------------------------------------------------------------------
    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        values = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if not is_real_support(site["fn"].support):
                raise ValueError(f"AutoSubnetwork needs real-valued sites; {name!r} has support {site['fn'].support}")
            if site["cond_indep_stack"]:
                raise ValueError(f"AutoSubnetwork supports global weight sites only; {name!r} is inside a plate")
            values[name] = site["value"].detach()
        extra = sorted(set(values) - set(self._sites))
        if extra:
            raise ValueError(f"AutoSubnetwork covers weight sites only; the model also samples {extra}")
        flat = sn.flatten_sites(self._model_ref[0], values)
        self.indices = self.indices.to(flat.device)
        self.loc = PyroParam(flat[self.indices].clone(), constraints.real)
        self.scale = PyroParam(torch.full_like(self.loc, self.init_scale), constraints.softplus_positive)
        eye = torch.eye(self.loc.numel(), dtype=flat.dtype, device=flat.device)
        self.scale_tril = PyroParam(eye, constraints.unit_lower_cholesky)
        if self.train_rest:
            self.rest = PyroParam(flat.clone(), constraints.real)
        else:
            self.register_buffer("rest", flat.clone())
        self._sizes = [int(torch.Size(s).numel()) for s in self._sites.values()]

    def _restore_structure(self, extra: Mapping[str, Any], state_dict: Mapping[str, Any], prefix: str) -> None:
        """Take the loaded subnetwork (``indices``) before setting up, so the parameters get its size."""
        idx = state_dict.get(prefix + "indices")
        if idx is not None:
            self.indices = idx.detach().clone().to(self.indices.device)
        super()._restore_structure(extra, state_dict, prefix)

    def _check_init(self) -> None:
        if self.prototype_trace is None:
            raise ValueError("guide is not initialized: fit it first (pp.fit) or call guide(x, y) once")

    # -- the posterior ---------------------------------------------------------------------------------
    def get_posterior(self, *args, **kwargs) -> dist.MultivariateNormal:
        r""":math:`q(w_S) = \mathcal N(\mu_S, L L^\top)`, event shape ``(|S|,)``."""
        # the factor is lower triangular with a positive diagonal by construction: skip the O(|S|^2) validation
        return dist.MultivariateNormal(
            self.loc, scale_tril=self.scale[..., None] * self.scale_tril, validate_args=False
        )

    def sample_latent(self, *args, **kwargs) -> torch.Tensor:
        """Draw the latent :math:`w_S \\sim q` (the auxiliary site ``"_AutoSubnetwork_latent"``), shape ``(|S|,)``
        (plus the batch shape of enclosing plates), as ``AutoContinuous.sample_latent`` does."""
        self._check_init()
        return pyro.sample(f"_{self._pyro_name}_latent", self._sampling_distribution(), infer={"is_auxiliary": True})

    def _sampling_distribution(self) -> dist.TransformedDistribution:
        r""":math:`q(w_S)` as :math:`\mu_S + L\varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`, with the
        transform caching :math:`(\varepsilon, w_S)`: ``log_prob`` of a draw reads :math:`\varepsilon` back instead of
        solving :math:`L\varepsilon = w_S - \mu_S`, which for a large unit-triangular factor loses every digit in
        float32 (the solve's error grows exponentially with :math:`|S|`) and lets the ELBO exploit the error."""
        tril = self.scale[..., None] * self.scale_tril
        base = dist.Normal(torch.zeros_like(self.loc), torch.ones_like(self.loc)).to_event(1)
        affine = dist.transforms.LowerCholeskyAffine(self.loc, scale_tril=tril, cache_size=1)
        return dist.TransformedDistribution(base, [affine])

    def _assemble(self, w_s: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Scatter ``w_S`` (shape ``batch + (|S|,)``) into the flat vector and split it by site."""
        batch = w_s.shape[:-1]
        rest = self.rest
        flat = rest.expand(batch + rest.shape).index_copy(-1, self.indices, w_s)
        return {k: v.reshape(batch + shape) for (k, shape), v in zip(self._sites.items(), flat.split(self._sizes, -1))}

    def forward(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Draw :math:`w_S \\sim q` (one auxiliary site) and emit every weight site as a ``Delta``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        values = self._assemble(self.sample_latent(*args, **kwargs))
        return {k: pyro.sample(k, dist.Delta(v, event_dim=len(self._sites[k]))) for k, v in values.items()}

    # -- summaries -------------------------------------------------------------------------------------
    @torch.no_grad()
    def covariance(self) -> torch.Tensor:
        r""":math:`\Sigma_S = L L^\top`, shape ``(|S|, |S|)`` (order of :attr:`indices`)."""
        self._check_init()
        return self.get_posterior().covariance_matrix.detach()

    @torch.no_grad()
    def median(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Posterior mean (= median) of every weight site: :math:`\\mu_S` inside the subnetwork, the point
        estimates elsewhere."""
        self._check_init()
        return {k: v.detach().clone() for k, v in self._assemble(self.loc).items()}

    @torch.no_grad()
    def marginals(self) -> Dict[str, Marginal]:
        """``{site: Marginal(loc, scale)}``: :math:`\\sqrt{\\mathrm{diag}\\,\\Sigma_S}` on the subnetwork, 0 elsewhere
        (so variance-based pruning never removes a point-estimate weight)."""
        self._check_init()
        locs = self.median()
        tril = self.scale[..., None] * self.scale_tril
        std = tril.pow(2).sum(-1).sqrt()
        flat = torch.zeros_like(self.rest).index_copy(-1, self.indices, std.detach())
        scales = dict(zip(self._sites, flat.split(self._sizes, -1)))
        return {k: Marginal(locs[k], scales[k].reshape(shape).clone()) for k, shape in self._sites.items()}

    @torch.no_grad()
    def quantiles(self, quantiles: Union[Sequence[float], torch.Tensor], *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Marginal quantiles ``{site: (len(quantiles),) + shape}`` (point estimates: the value itself)."""
        ready = self.prototype_trace is not None
        q = check_quantiles(quantiles, self.loc.dtype if ready else None, self.loc.device if ready else None)
        z = dist.Normal(0.0, 1.0).icdf(q.double()).to(self.loc)
        return {k: m.loc + z.reshape((-1,) + (1,) * m.loc.dim()) * m.scale for k, m in self.marginals().items()}

    def site_masks(self) -> Dict[str, torch.Tensor]:
        """The subnetwork as ``{site: bool mask}``."""
        return sn.indices_to_masks(self._model_ref[0], self.indices)

    # -- linearized predictive ---------------------------------------------------------------------------
    @torch.no_grad()
    def glm_predictive(self, x: torch.Tensor, batch_size: int = 512) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Linearized (GLM) predictive of the outputs around the posterior mean,
        :math:`f(x) \sim \mathcal N(f_{\mu}(x), J_S \Sigma_S J_S^\top)` with :math:`J_S` the Jacobian wrt the
        subnetwork (``torch.func``), so ``pp.predict(model, guide, x, method="glm")`` works as for the Laplace guide.

        :param x: inputs ``(B, ...)``.
        :returns: mean ``(B, K)`` and covariance ``(B, K, K)`` of the outputs.
        """
        self._check_init()
        model = self._model_ref[0]
        net = plain_net(model, self.median())
        masks = {k: m.reshape(-1) for k, m in self.site_masks().items() if bool(m.any())}  # sorted-index order
        tril = (self.scale[..., None] * self.scale_tril).detach()
        x = x.to(device=model.device, dtype=model.dtype if x.is_floating_point() else None)
        means, covs = [], []
        for xb in x.split(batch_size):
            with torch.enable_grad():
                f, jac = cv.param_jacobians(net, xb, model.likelihood, masks)  # (B, K), (B, K, |S|)
            jl = jac @ tril
            means.append(f)
            covs.append(jl @ jl.transpose(-1, -2))
        return torch.cat(means), torch.cat(covs)


register_marginals(AutoSubnetwork, AutoSubnetwork.marginals)
