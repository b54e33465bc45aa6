r"""The Laplace approximation as a Pyro ``AutoGuide``: KFAC (``kron``), diagonal or full GGN curvature.

Around a MAP estimate :math:`w^*` of a network trained with an isotropic Gaussian prior of precision :math:`\tau`,

.. math::

    q(w) = \mathcal N\big(w^*,\ (\tfrac{1}{T}\,\mathrm{GGN}(w^*) + \tau I)^{-1}\big),

with the GGN of :mod:`pyro_prune.curvature` (sum over the data set, scaled to the likelihood's ``dataset_size``)
and a temperature :math:`T`.  Weights of other modules (BatchNorm, LayerNorm...) stay point estimates.  With
``structure="kron"`` every layer's block is :math:`N (G \otimes A)/T + \tau_l I` (the exact prior term, eigenvalues
:math:`N\lambda_G\lambda_A/T + \tau_l`, [1]); ``"diag"`` keeps the exact GGN diagonal; ``"full"`` the dense GGN,
over all weights or a ``subnet`` [3] (other weights fixed at the MAP); ``"lowrank"`` the GGN's top ``rank``
eigenpairs (:math:`N U\Lambda U^\top/T + \tau I`, from Jacobian–vector products, memory :math:`O(Pk)`).

The guide samples every layer's weight and bias *jointly*: one auxiliary standard normal site per layer
(``infer={"is_auxiliary": True}``, so Pyro's plates and ``Predictive(parallel=True)`` give it their batch shape) is
mapped through the posterior's square root, and each weight site is a ``Delta`` at the result.  ``marginals()``
gives the exact marginal variances, so :func:`pyro_prune.prune` ranks weights by :math:`|\mu|/\sigma`.

The Laplace log marginal likelihood [2]

.. math::

    \log p(\mathcal D \mid \tau) \approx \tfrac1T\log p(\mathcal D\mid w^*) - \tfrac12\sum_l \tau_l\|w^*_l\|^2
    + \tfrac12\sum_l P_l \log\tau_l - \tfrac12 \log\det\big(\tfrac1T\mathrm{GGN} + \mathrm{diag}(\tau)\big)

is cheap to evaluate for many :math:`\tau` because the curvature's eigenvalues stay fixed; ``prior_precision=
"marglik"`` maximizes it over one :math:`\tau` (``prior_structure="scalar"``) or one per layer (``"layer"``).  For a
Gaussian likelihood the evidence is also a function of the noise :math:`\sigma` (the GGN scales as
:math:`1/\sigma^2`; :mod:`~pyro_prune.guides.laplace.evidence`): ``log_marginal_likelihood(tau, sigma)`` and
``optimize_prior_precision(sigma_noise=True)``, whose :math:`\sigma` (:attr:`LaplaceGuide.sigma_noise`) the
posterior and both predictives then use.  ``pp.predict`` uses the linearized (GLM) predictive of a Laplace guide by
default [4]; sampled networks (``method="mc"``) warn once per guide (:class:`LaplaceSamplingWarning`).

The guide is written once over :class:`~pyro_prune.guides.laplace.posterior.WeightPosterior`: ``structure`` picks
the posterior class at construction (:data:`~pyro_prune.guides.laplace.posterior.STRUCTURES`), and every method
below delegates the structure-specific work to it.  The likelihood-specific maths (output Hessian, GLM link) lives
on the likelihood classes.

References

[1] Hippolyt Ritter, Aleksandar Botev, David Barber. "A Scalable Laplace Approximation for Neural Networks",
    ICLR 2018.
[2] David J. C. MacKay. "A Practical Bayesian Framework for Backpropagation Networks", Neural Computation 1992.
[3] Erik Daxberger et al. "Bayesian Deep Learning via Subnetwork Inference", ICML 2021.
[4] Erik Daxberger et al. "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021 (GLM predictive,
    probit approximation).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import InitMessenger

from ..._checks import as_batches, check_choice, check_positive, check_quantiles, unpack_batch
from ...curvature import Eigensolver
from ...marginals import Marginal, register_marginals
from ...model import BayesianModel, init_from
from ...model.likelihoods import Fisher
from ..base import DurableGuide
from .evidence import NoiseTerms, gaussian_log_likelihood, maximize_evidence, rescale_precisions
from .glm import glm_covariance, glm_features
from .heldout import tune_prior_precision
from .layer_view import make_layers, map_values, plain_net
from .posterior import WeightPosterior, layer_taus, make_posterior

__all__ = ["LaplaceGuide", "laplace_guide", "DEFAULT_MAX_MEMORY", "LaplaceSamplingWarning"]

Structure = Literal["kron", "diag", "full", "lowrank"]
PriorStructure = Literal["scalar", "layer"]
PriorPrecision = Union[float, str, Sequence[float], torch.Tensor]

#: Default bound (bytes) on the dense matrices of ``structure="full"`` (2 GiB).
DEFAULT_MAX_MEMORY = 2 * 2**30


class LaplaceSamplingWarning(UserWarning):
    """Networks were drawn from a Laplace posterior (sampled networks, not the linearized predictive)."""


SAMPLING_WARNING = (
    "drawing whole networks from a Laplace posterior: the Laplace approximation is a local Gaussian fit of the "
    "network linearized at the MAP, and nonlinear networks sampled from it can be far off (on laplace-torch's "
    "sinusoid example the predictive std inside the data is 20.5 with sampled networks against 0.064 with the "
    "linearized predictive). pp.predict and pp.evaluate use the linearized (GLM) predictive by default for a Laplace "
    "guide; pass method='mc' only to study sampled networks (warned once per guide)"
)


class _Batches:
    """The checked ``(x, y)`` batches of ``data``, iterable as often as ``data`` is; the first batch of the first
    pass is kept in ``first`` (for the prototype trace)."""

    def __init__(self, data: Any, first: List[torch.Tensor]):
        self.data, self.first = data, first

    def __iter__(self) -> Iterator:
        for batch in as_batches(self.data):
            batch = unpack_batch(batch, "data")
            if not self.first:
                self.first.extend(batch)
            yield batch


class LaplaceGuide(DurableGuide):
    r"""A Laplace posterior around a MAP estimate (use :func:`laplace_guide` to build one).

    What it keeps, and where: the curvature (each layer's Kron eigendecompositions or diagonal, or the dense GGN),
    the MAP, the prior precision, the subnetwork masks and the marginal-likelihood terms are tensors of its
    ``state_dict`` (under ``"_extra_state"``); the network it linearizes (``_net``: weights, BatchNorm statistics) is
    a submodule.  ``.to(dtype/device)`` moves all of them (move the model too), ``copy.deepcopy`` and pickle keep
    them, and ``load_state_dict`` into a guide built with ``LaplaceGuide(model, None, structure)`` (no data, no
    curvature pass) restores the posterior exactly.  Nothing lives in Pyro's global param store.  ``pp.save``
    writes that ``state_dict`` with ``structure``, ``fisher``, ``temperature`` (and ``max_memory`` for ``"full"``);
    ``pp.load`` rebuilds the posterior without the training data.

    :ivar structure: ``"kron"``, ``"diag"`` or ``"full"``.
    :ivar posteriors: ``{module name: Kron | Diag}`` (kron/diag, the covered layers), ``{"full": Dense}`` or
        ``{"lowrank": LowRank}``.
    :ivar prior_precision: :math:`\tau`, a tensor of shape ``()`` or ``(num_layers,)`` (order of :attr:`layer_names`).
    :cvar default_predictive: ``"glm"``: ``pp.predict`` and ``pp.evaluate`` use the linearized predictive unless
        ``method="mc"`` is passed (sampling networks warns once per guide, :class:`LaplaceSamplingWarning`).
    """

    #: The predictive ``pp.predict`` uses when no ``method`` is given (the linearized one, for a Laplace posterior).
    default_predictive = "glm"

    def __init__(
        self,
        model: BayesianModel,
        data: Any,
        structure: Structure = "kron",
        map_from: Any = None,
        prior_precision: PriorPrecision = 1.0,
        temperature: float = 1.0,
        subnet: Any = None,
        *,
        fisher: Fisher = "exact",
        prior_structure: PriorStructure = "scalar",
        max_memory: float = DEFAULT_MAX_MEMORY,
        rank: Optional[int] = None,
        eigensolver: Optional[Eigensolver] = None,
    ):
        if not isinstance(model, BayesianModel):
            raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(model).__name__}")
        check_choice("prior_structure", prior_structure, ("scalar", "layer"))
        self.temperature = check_positive("temperature", temperature)
        model.likelihood.check_curvature()  # unsupported likelihoods raise here
        self.structure, self.fisher = structure, fisher
        self._map, extra = map_values(model, map_from)
        self._layers = make_layers(model)
        self.layer_names = [layer.module for layer in self._layers]
        max_memory = check_positive("max_memory", max_memory)
        self._posterior: WeightPosterior = make_posterior(
            structure, model, self._layers, self._map, subnet, max_memory, rank, eigensolver
        )
        tau0 = self._initial_prior(prior_precision, model)
        self._model_ref = (model,)  # not a submodule: the guide must not own the model's parameters
        super().__init__(InitMessenger(init_from(self._map))(model))
        self._net = plain_net(model, extra, self._map)
        self.prior_precision = tau0
        self._num_data, self._num_seen, self._log_lik = model.likelihood.dataset_size, 0, self._zeros(())
        self._noise = NoiseTerms()
        self._sampling_warned = False  # LaplaceSamplingWarning: once per guide
        if data is None:  # an empty guide, to load a state_dict into
            return
        x0, y0 = self._fit(model, data)
        self._noise = NoiseTerms.from_fit(model.likelihood, self._log_lik, self._num_data, y0)
        self._trace_prototype(model, x0, y0)
        self.set_prior_precision(tau0)
        if isinstance(prior_precision, str):  # "marglik" (anything else raised above)
            self.optimize_prior_precision(structure=prior_structure)

    # -- construction ------------------------------------------------------------------------------------
    @property
    def posteriors(self) -> Dict[str, Any]:
        """``{module name: Kron | Diag}`` (kron/diag), or ``{"full": Dense}``."""
        return self._posterior.precisions

    def _initial_prior(self, prior_precision: PriorPrecision, model: BayesianModel) -> torch.Tensor:
        if isinstance(prior_precision, str):
            if prior_precision != "marglik":
                raise ValueError(
                    f"prior_precision must be a positive number, a sequence or 'marglik', got {prior_precision!r}"
                )
            return torch.tensor(1.0, dtype=model.dtype, device=model.device)
        return self._check_prior(prior_precision, model.dtype, model.device)

    def _check_prior(self, tau: Any, dtype, device) -> torch.Tensor:
        if isinstance(tau, bool):
            raise TypeError("prior_precision must be a number or a sequence of numbers, got bool")
        if isinstance(tau, (int, float)):
            tau = check_positive("prior_precision", tau)
        try:
            t = torch.as_tensor(tau, dtype=dtype, device=device).detach()
        except (TypeError, ValueError, RuntimeError):
            msg = f"prior_precision must be a number, a sequence of numbers or 'marglik', got {tau!r}"
            raise TypeError(msg) from None
        if t.dim() > 1 or (t.dim() == 1 and t.numel() != len(self._layers)):
            raise ValueError(
                f"prior_precision must be a scalar or have one entry per layer ({len(self._layers)}: "
                f"{self.layer_names}), got shape {tuple(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise ValueError(f"prior_precision must be positive and finite, got {t.tolist()}")
        return t

    @staticmethod
    def _remember_first(data: Any, first: List[torch.Tensor]) -> Iterable:
        """The data's batches, keeping the first one in ``first`` (for the prototype trace); re-iterable when
        ``data`` is (``structure="lowrank"`` passes over it several times)."""
        return _Batches(data, first)

    def _fit(self, model: BayesianModel, data: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """Curvature at the MAP (one pass over ``data``); returns its first batch on the model's device."""
        lik = model.likelihood
        first: List[torch.Tensor] = []
        scale = lik.dataset_size / self.temperature
        try:
            seen, loglik = self._posterior.fit(self._net, self._remember_first(data, first), lik, scale, self.fisher)
        except RuntimeError as e:
            if first and not first[0].is_floating_point() and "dtype" in str(e).lower():
                raise TypeError(
                    f"data: x has dtype {first[0].dtype}, and the network computes in {model.dtype}: pass floating "
                    f"inputs, x.to({model.dtype}) (integer inputs suit only networks that start with nn.Embedding)"
                ) from e
            raise
        self._num_data, self._num_seen = lik.dataset_size, seen
        self._log_lik = torch.tensor(loglik * lik.dataset_size / seen, dtype=model.dtype, device=model.device)
        return tuple(t.to(device=model.device, dtype=model.dtype if t.is_floating_point() else None) for t in first)

    # -- state_dict, .to() ---------------------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        """The posterior beyond ``_net``'s tensors: structure, temperature, MAP, prior precision, the
        precisions' tensors (and the subnetwork), the marginal-likelihood terms and the inputs' shapes."""
        state = super().get_extra_state()
        state.update(
            structure=self.structure,
            fisher=self.fisher,
            temperature=self.temperature,
            num_data=self._num_data,
            num_seen=self._num_seen,
            log_lik=torch.as_tensor(self._log_lik),
            map=dict(self._map),
            prior_precision=self.prior_precision,
            posterior=self._posterior.state(),
            noise=self._noise.state(),
        )
        return state

    def set_extra_state(self, state: Any) -> None:
        """Restore the posterior saved by :meth:`get_extra_state` (in the model's dtype and device).

        :raises ValueError: the state is of another structure or for other sites.
        """
        if not isinstance(state, Mapping) or "posterior" not in state:
            raise ValueError("LaplaceGuide.load_state_dict: the state_dict holds no Laplace posterior (_extra_state)")
        if state.get("structure") != self.structure:
            raise ValueError(
                f"the state_dict holds a structure={state.get('structure')!r} posterior; this guide was built with "
                f"structure={self.structure!r}"
            )
        saved = state["map"]
        if set(saved) != set(self._map) or any(saved[k].shape != self._map[k].shape for k in self._map):
            raise ValueError("the state_dict's Laplace posterior was built for a model with other weight sites")
        self.temperature, self.fisher = float(state["temperature"]), state["fisher"]
        self._num_data, self._num_seen = int(state["num_data"]), int(state["num_seen"])
        cast = self._cast
        self._log_lik = cast(state["log_lik"])
        self._map = {k: cast(saved[k]) for k in self._map}
        self._posterior.load_state(state["posterior"], self._map, cast)
        self.prior_precision = cast(state["prior_precision"])
        self._noise = NoiseTerms.from_state(state.get("noise"), cast)
        self._pp_example = state.get("example")

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=self._device, dtype=self._dtype if t.is_floating_point() else None).clone()

    def _restore_structure(self, extra: Mapping[str, Any], state_dict: Mapping[str, Any], prefix: str) -> None:
        self.set_extra_state(extra)
        super()._restore_structure(extra, state_dict, prefix)

    def _apply(self, fn, recurse: bool = True):
        """``nn.Module._apply`` (``.to()``, ``.double()``, ``.cuda()``...) also for the posterior's tensors, which are
        not parameters or buffers."""
        super()._apply(fn, recurse)
        self._map = {k: fn(v) for k, v in self._map.items()}
        self.prior_precision = fn(self.prior_precision)
        self._log_lik = fn(torch.as_tensor(self._log_lik))
        self._posterior.apply(fn, self._map)
        self._noise.apply(fn)
        return self

    def _trace_prototype(self, model: BayesianModel, x0: torch.Tensor, y0: torch.Tensor) -> None:
        was = model.training
        model.eval()
        try:
            self._setup_prototype(x0, y0)
        finally:
            model.train(was)

    # -- prior precision --------------------------------------------------------------------------------
    def set_prior_precision(self, prior_precision: Any) -> None:
        """Set :math:`\\tau` (a positive scalar or one value per layer) without recomputing the curvature."""
        tau = self._check_prior(prior_precision, self._dtype, self._device)
        self.prior_precision = tau
        self._posterior.set_prior(tau)

    @property
    def _dtype(self) -> torch.dtype:
        return self._model_ref[0].dtype

    @property
    def _device(self) -> torch.device:
        return self._model_ref[0].device

    # -- observation noise (Gaussian likelihoods) ------------------------------------------------------------
    @property
    def sigma_noise(self) -> Optional[torch.Tensor]:
        r"""The observation noise :math:`\sigma` of a Gaussian likelihood that the posterior and the predictives
        use (``None`` for other likelihoods): the likelihood's scale at fit time, until :meth:`set_sigma_noise` or
        ``optimize_prior_precision(sigma_noise=True)`` changes it. It replaces the likelihood's own scale in
        ``pp.predict`` for this guide (GLM and sampled networks)."""
        return None if self._noise.sigma is None else self._noise.sigma.clone()

    def set_sigma_noise(self, sigma_noise: Any) -> None:
        r"""Set :math:`\sigma > 0` without a new curvature pass: the GGN of a Gaussian likelihood scales as
        :math:`1/\sigma^2`, so the curvature is rescaled by :math:`\sigma_{\text{old}}^2/\sigma^2`, and the MAP's
        log-likelihood is recomputed from its sum of squared residuals (:mod:`~pyro_prune.guides.laplace.evidence`).

        :raises ValueError: the likelihood is not Gaussian, or ``sigma_noise`` is not positive and finite.
        """
        old = self._noise.require()
        new = self._check_sigma(sigma_noise)
        factor = float(old) ** 2 / float(new) ** 2
        post = self._posterior
        post.precisions.update(rescale_precisions(post.precisions, factor))
        post.set_prior(self.prior_precision)
        self._noise.sigma = new
        self._log_lik = gaussian_log_likelihood(self._noise, new.double()).to(self._dtype)

    def _check_sigma(self, sigma: Any) -> torch.Tensor:
        if isinstance(sigma, bool) or not (isinstance(sigma, (int, float)) or torch.is_tensor(sigma)):
            raise TypeError(f"sigma_noise must be a positive number, got {sigma!r}")
        s = torch.as_tensor(sigma, dtype=self._dtype, device=self._device).detach()
        if s.numel() != 1 or not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise ValueError(f"sigma_noise must be one positive finite number, got {s.tolist()}")
        return s.reshape(())

    # -- evidence ----------------------------------------------------------------------------------------
    def log_marginal_likelihood(self, prior_precision: Any = None, sigma_noise: Any = None) -> torch.Tensor:
        r"""The Laplace approximation of :math:`\log p(\mathcal D \mid \tau, \sigma)` (module docstring), differentiable
        in ``prior_precision`` and ``sigma_noise`` when they are tensors that require grad.

        :param prior_precision: :math:`\tau` (scalar or per layer); default: the guide's current one.
        :param sigma_noise: the observation noise :math:`\sigma` of a Gaussian likelihood; default: the guide's
            current :attr:`sigma_noise`. The GGN is rescaled by :math:`\sigma_0^2/\sigma^2` and the log-likelihood
            recomputed from the MAP's residuals (:mod:`~pyro_prune.guides.laplace.evidence`).
        :raises ValueError: ``sigma_noise`` for a likelihood without observation noise.
        """
        if prior_precision is None:
            tau = self.prior_precision
        elif torch.is_tensor(prior_precision) and prior_precision.requires_grad:
            tau = prior_precision
        else:
            tau = self._check_prior(prior_precision, self._dtype, self._device)
        post, c = self._posterior, None
        loglik = torch.as_tensor(self._log_lik, dtype=self._dtype, device=self._device)
        if sigma_noise is not None:
            old = self._noise.require()
            sigma = sigma_noise if torch.is_tensor(sigma_noise) and sigma_noise.requires_grad else None
            sigma = self._check_sigma(sigma_noise) if sigma is None else sigma.reshape(())
            sigma = sigma.to(self._dtype)
            c = old.square() / sigma.square()
            loglik = gaussian_log_likelihood(self._noise, sigma)
        out = loglik / self.temperature
        for t, s, n in zip(layer_taus(tau, len(self._layers)), post.layer_sq_norms(), post.layer_sizes()):
            out = out - 0.5 * t * s + 0.5 * n * t.log()
        return out - 0.5 * (post.logdet(tau) if c is None else post.logdet(tau, curvature_scale=c))

    def optimize_prior_precision(
        self,
        structure: PriorStructure = "scalar",
        max_iter: int = 200,
        init: Any = None,
        method: Literal["marglik", "val"] = "marglik",
        val_data: Any = None,
        grid: Any = None,
        sigma_noise: bool = False,
    ) -> torch.Tensor:
        """Tune :math:`\\tau` (and, with ``sigma_noise=True``, the Gaussian noise :math:`\\sigma`) and set it.

        ``method="marglik"``: maximize :meth:`log_marginal_likelihood` over :math:`\\log\\tau` (and
        :math:`\\log\\sigma`) by L-BFGS from ``init`` (and the current :attr:`sigma_noise`), the curvature's
        eigenvalues fixed.  ``method="val"``: the scalar :math:`\\tau` of ``grid`` (default ``logspace(-4, 6, 41)``,
        then refined) with the highest log-likelihood of held-out ``val_data`` under the GLM predictive
        (:func:`~pyro_prune.guides.laplace.heldout.tune_prior_precision`).

        :param structure: one :math:`\\tau` (``"scalar"``) or one per layer (``"layer"``, marglik only).
        :param sigma_noise: also tune the observation noise of a Gaussian likelihood jointly with :math:`\\tau`
            (marglik only); the result is :attr:`sigma_noise`, which the posterior and ``pp.predict`` then use.
        :returns: the new :math:`\\tau`.
        :raises ValueError: ``sigma_noise=True`` with ``method="val"`` or a likelihood without observation noise.
        """
        check_choice("structure", structure, ("scalar", "layer"))
        check_choice("method", method, ("marglik", "val"))
        if not isinstance(sigma_noise, bool):
            raise TypeError(f"sigma_noise must be True or False, got {sigma_noise!r}")
        if method == "val":
            if val_data is None:
                raise ValueError("method='val' needs val_data: held-out (x, y) the MAP was not trained on")
            if structure != "scalar" or sigma_noise:
                raise ValueError("method='val' tunes a scalar prior precision (structure='scalar', sigma_noise=False)")
            return tune_prior_precision(self, val_data, grid)[0]
        log_sigma = self._noise.require().log().reshape(1) if sigma_noise else None
        start = self.prior_precision if init is None else self._check_prior(init, self._dtype, self._device)
        n = 1 if structure == "scalar" else len(self._layers)
        log_tau = start.log().mean().expand(n) if start.dim() == 0 or structure == "scalar" else start.log()
        tau, sigma = self._maximize_marglik(log_tau, log_sigma, max_iter, structure == "scalar")
        if sigma is not None:
            self.set_sigma_noise(sigma)
        self.set_prior_precision(tau)
        return self.prior_precision

    def _maximize_marglik(
        self, log_tau: torch.Tensor, log_sigma: Optional[torch.Tensor], max_iter: int, scalar: bool
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:func:`~pyro_prune.guides.laplace.evidence.maximize_evidence` over ``log_tau`` (``(1,)`` with ``scalar``,
        else ``(num_layers,)``) and ``log_sigma`` (``(1,)`` or ``None``); returns :math:`\\tau` and :math:`\\sigma`
        (or ``None``) in the model's dtype."""

        def objective(tau: torch.Tensor, sigma: Optional[torch.Tensor]) -> torch.Tensor:
            tau = tau.to(self._dtype)
            return self.log_marginal_likelihood(
                tau[0] if scalar else tau, None if sigma is None else sigma.to(self._dtype)
            )

        log_tau, log_sigma = maximize_evidence(objective, log_tau, log_sigma, max_iter)
        tau = log_tau.exp().to(self._dtype)
        sigma = None if log_sigma is None else log_sigma.exp().to(self._dtype)[0]
        return (tau[0] if scalar else tau), sigma

    # -- sampling ----------------------------------------------------------------------------------------
    def _zeros(self, shape) -> torch.Tensor:
        return torch.zeros(shape, dtype=self._dtype, device=self._device)

    def forward(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Draw every weight jointly from the Laplace posterior: one auxiliary standard normal site per block of the
        posterior, mapped through its covariance square root; returns ``{site: value}``.

        The first draw warns (:class:`LaplaceSamplingWarning`, once per guide): sampled nonlinear networks are not
        what the Laplace approximation describes; ``pp.predict`` uses the linearized predictive by default."""
        if not self._sampling_warned:
            self._sampling_warned = True
            warnings.warn(SAMPLING_WARNING, LaplaceSamplingWarning, stacklevel=2)
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        eps = [
            pyro.sample(
                f"_{self._pyro_name}{suffix}_latent",
                dist.Normal(self._zeros(shape), 1.0).to_event(len(shape)),
                infer={"is_auxiliary": True},
            )  # fmt: skip
            for suffix, shape in self._posterior.latents()
        ]
        values = self._posterior.draw(eps)
        return {
            site: pyro.sample(site, dist.Delta(values[site], event_dim=self._map[site].dim())) for site in self._map
        }

    @torch.no_grad()
    def median(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """The MAP (posterior mean and median) of every weight site."""
        return {k: v.clone() for k, v in self._map.items()}

    @torch.no_grad()
    def marginals(self) -> Dict[str, Marginal]:
        """``{site: Marginal(loc=MAP, scale=exact marginal std)}`` (scale 0 for weights outside a subnet)."""
        var = self._posterior.marginal_variances()
        return {k: Marginal(self._map[k].clone(), var[k].clamp_min(0).sqrt()) for k in self._map}

    @torch.no_grad()
    def quantiles(self, quantiles: Union[Sequence[float], torch.Tensor], *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Marginal quantiles ``{site: (len(quantiles),) + shape}``."""
        q = check_quantiles(torch.as_tensor(quantiles, device=self._device), self._dtype)
        z = dist.Normal(0.0, 1.0).icdf(q.double()).to(self._dtype)
        return {k: m.loc + z.reshape((-1,) + (1,) * m.loc.dim()) * m.scale for k, m in self.marginals().items()}

    # -- linearized predictive ---------------------------------------------------------------------------
    @torch.no_grad()
    def glm_predictive(self, x: torch.Tensor, batch_size: int = 512) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Linearized (GLM) predictive of the outputs: :math:`f(x) \sim \mathcal N(f_{w^*}(x), J \Sigma J^\top)`
        (exact for the posterior's structure, vectorized over the batch; see :mod:`pyro_prune.guides.laplace.glm`).

        :param x: inputs ``(B, ...)``.
        :returns: mean ``(B, K)`` and covariance ``(B, K, K)`` of the outputs.
        """
        x = x.to(device=self._device, dtype=self._dtype if x.is_floating_point() else None)
        means, covs = [], []
        for xb in x.split(batch_size):
            f, feats = glm_features(self, xb)
            means.append(f)
            covs.append(glm_covariance(self, f, feats))
        return torch.cat(means), torch.cat(covs)


def laplace_guide(
    model: BayesianModel,
    data: Any,
    structure: Structure = "kron",
    map_from: Any = None,
    prior_precision: PriorPrecision = 1.0,
    temperature: float = 1.0,
    subnet: Any = None,
    *,
    fisher: Fisher = "exact",
    prior_structure: PriorStructure = "scalar",
    max_memory: float = DEFAULT_MAX_MEMORY,
    rank: Optional[int] = None,
    eigensolver: Optional[Eigensolver] = None,
) -> LaplaceGuide:
    r"""Fit a Laplace posterior around a MAP network and return it as a Pyro guide.

    :param model: a :class:`~pyro_prune.BayesianModel` whose likelihood has an output Hessian (Categorical,
        Bernoulli, Gaussian with a fixed or learned scale, or your own
        :class:`~pyro_prune.model.likelihoods.Likelihood` implementing ``exact_hessian_sqrt``). Its prior is not
        used: the Laplace prior is :math:`\mathcal N(0, \tau^{-1} I)`.
    :param data: a ``DataLoader`` of ``(x, y)`` or one ``(x, y)`` tuple (the training data; one pass).
    :param structure: ``"kron"`` (KFAC per layer), ``"diag"`` (exact GGN diagonal), ``"full"`` (dense GGN, for
        small networks or a ``subnet``; its size is checked against ``max_memory`` before anything is allocated) or
        ``"lowrank"`` (the top ``rank`` eigenpairs of the GGN plus the prior, over all weights or a ``subnet``).
    :param map_from: the MAP: ``None`` (the weights the network had at ``bayesianize`` time), a trained guide with
        ``median()`` (``AutoDelta``, ``AutoNormal``, ...), an ``nn.Module`` or a ``state_dict`` (which may also
        carry the point estimates, e.g. BatchNorm).
    :param prior_precision: :math:`\tau > 0` (a scalar or one per layer), or ``"marglik"`` to maximize the Laplace
        marginal likelihood (see ``prior_structure``).
    :param temperature: :math:`T > 0`; the curvature is divided by it.
    :param subnet: the weights the posterior covers (default: all); the others stay ``Delta`` sites at the MAP. A
        :mod:`pyro_prune.subnet` selection (``pp.subnet.LastLayer()``, ``pp.subnet.Layers([...])``,
        ``LargestVariance(n, ...)``...), a ``{site: bool mask}`` or flat indices into the concatenation of the
        model's weight sites in order (``parameters_to_vector`` of a plain Linear/Conv network).  ``"full"`` takes
        any weights; ``"kron"`` and ``"diag"`` take whole layers (every weight and bias of each chosen layer, e.g.
        last-layer KFAC) and raise a ``ValueError`` for a partial one.  A per-layer ``prior_precision`` keeps one
        entry per layer of the model (those of uncovered layers are unused).
    :param fisher: ``"exact"`` GGN or ``"mc"`` sampled-label Fisher (validated by the likelihood).
    :param prior_structure: with ``"marglik"``: one :math:`\tau` (``"scalar"``) or one per layer (``"layer"``).
    :param max_memory: bound in bytes on the dense matrices of ``structure="full"`` (on the ``n × (rank +
        oversample)`` blocks of ``"lowrank"``).
    :param rank: ``structure="lowrank"`` only (required there): :math:`k`, the number of top GGN eigenpairs the
        precision :math:`s\,U\mathrm{diag}(\lambda)U^\top + \tau I` keeps, an int in ``[1, P]``; they are found
        from GGN–matrix products (Jacobian–vector products, one pass over ``data`` each, which must therefore be a
        re-iterable ``DataLoader``/list or an ``(x, y)`` tuple), never the dense GGN: memory :math:`O(Pk)`.
    :param eigensolver: ``structure="lowrank"`` only: the randomized subspace iteration's oversampling, number of
        passes and seed (:class:`~pyro_prune.curvature.Eigensolver`, default ``Eigensolver(oversample=10,
        iterations=4, seed=0)``: 5 passes over the data).
    :returns: a :class:`LaplaceGuide`.
    :raises MemoryError: ``structure="full"`` (or ``"lowrank"``) would exceed ``max_memory``.
    :raises ValueError / TypeError: invalid arguments (named in the message).
    """
    return LaplaceGuide(
        model,
        data,
        structure,
        map_from,
        prior_precision,
        temperature,
        subnet,
        fisher=fisher,
        prior_structure=prior_structure,
        max_memory=max_memory,
        rank=rank,
        eigensolver=eigensolver,
    )


register_marginals(LaplaceGuide, LaplaceGuide.marginals)
