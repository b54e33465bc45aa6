r"""The Laplace approximation as a Pyro ``AutoGuide``: KFAC (``kron``), diagonal or full GGN curvature.

Around a MAP estimate :math:`w^*` of a network trained with an isotropic Gaussian prior of precision :math:`\tau`,

.. math::

    q(w) = \mathcal N\big(w^*,\ (\tfrac{1}{T}\,\mathrm{GGN}(w^*) + \tau I)^{-1}\big),

with the GGN of :mod:`pyro_prune.curvature` (sum over the data set, scaled to the likelihood's ``dataset_size``)
and a temperature :math:`T`.  Weights of other modules (BatchNorm, LayerNorm...) stay point estimates.  With
``structure="kron"`` every layer's block is :math:`N (G \otimes A)/T + \tau_l I` (the exact prior term, eigenvalues
:math:`N\lambda_G\lambda_A/T + \tau_l`, [1]); ``"diag"`` keeps the exact GGN diagonal; ``"full"`` the dense GGN,
over all weights or a ``subnet`` [3] (other weights fixed at the MAP).

The guide samples every layer's weight and bias *jointly*: one auxiliary standard normal site per layer
(``infer={"is_auxiliary": True}``, so Pyro's plates and ``Predictive(parallel=True)`` give it their batch shape) is
mapped through the posterior's square root, and each weight site is a ``Delta`` at the result.  ``marginals()``
gives the exact marginal variances, so :func:`pyro_prune.prune` ranks weights by :math:`|\mu|/\sigma`.

The Laplace log marginal likelihood [2]

.. math::

    \log p(\mathcal D \mid \tau) \approx \tfrac1T\log p(\mathcal D\mid w^*) - \tfrac12\sum_l \tau_l\|w^*_l\|^2
    + \tfrac12\sum_l P_l \log\tau_l - \tfrac12 \log\det\big(\tfrac1T\mathrm{GGN} + \mathrm{diag}(\tau)\big)

is cheap to evaluate for many :math:`\tau` because the curvature's eigenvalues stay fixed; ``prior_precision=
"marglik"`` maximizes it over one :math:`\tau` (``prior_structure="scalar"``) or one per layer (``"layer"``).

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

from typing import Any, Dict, Iterator, List, Literal, Mapping, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import InitMessenger

from ..._checks import as_batches, check_choice, check_positive, check_quantiles, unpack_batch
from ...marginals import Marginal, register_marginals
from ...model import BayesianModel, init_from
from ...model.likelihoods import Fisher
from ..base import DurableGuide
from .glm import glm_covariance, glm_features, tune_prior_precision
from .layer_view import make_layers, map_values, plain_net
from .posterior import WeightPosterior, layer_taus, make_posterior

__all__ = ["LaplaceGuide", "laplace_guide", "DEFAULT_MAX_MEMORY"]

Structure = Literal["kron", "diag", "full"]
PriorStructure = Literal["scalar", "layer"]
PriorPrecision = Union[float, str, Sequence[float], torch.Tensor]

#: Default bound (bytes) on the dense matrices of ``structure="full"`` (2 GiB).
DEFAULT_MAX_MEMORY = 2 * 2**30


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
    :ivar posteriors: ``{module name: Kron | Diag}`` (kron/diag), or ``{"full": Dense}``.
    :ivar prior_precision: :math:`\tau`, a tensor of shape ``()`` or ``(num_layers,)`` (order of :attr:`layer_names`).
    """

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
        self._posterior: WeightPosterior = make_posterior(structure, model, self._layers, self._map, subnet, max_memory)
        tau0 = self._initial_prior(prior_precision, model)
        self._model_ref = (model,)  # not a submodule: the guide must not own the model's parameters
        super().__init__(InitMessenger(init_from(self._map))(model))
        self._net = plain_net(model, extra, self._map)
        self.prior_precision = tau0
        self._num_data, self._num_seen, self._log_lik = model.likelihood.dataset_size, 0, torch.zeros(())
        if data is None:  # an empty guide, to load a state_dict into
            return
        self._trace_prototype(model, *self._fit(model, data))
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
    def _remember_first(data: Any, first: List[torch.Tensor]) -> Iterator:
        """The data's batches, keeping the first one in ``first`` (for the prototype trace)."""
        for batch in as_batches(data):
            batch = unpack_batch(batch, "data")
            if not first:
                first.extend(batch)
            yield batch

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
        self._log_lik = loglik * lik.dataset_size / seen
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

    def log_marginal_likelihood(self, prior_precision: Any = None) -> torch.Tensor:
        r"""The Laplace approximation of :math:`\log p(\mathcal D \mid \tau)` (module docstring), differentiable in
        ``prior_precision`` when it is a tensor.

        :param prior_precision: :math:`\tau` (scalar or per layer); default: the guide's current one.
        """
        if prior_precision is None:
            tau = self.prior_precision
        elif torch.is_tensor(prior_precision) and prior_precision.requires_grad:
            tau = prior_precision
        else:
            tau = self._check_prior(prior_precision, self._dtype, self._device)
        post = self._posterior
        out = torch.as_tensor(self._log_lik / self.temperature, dtype=self._dtype, device=self._device)
        for t, s, n in zip(layer_taus(tau, len(self._layers)), post.layer_sq_norms(), post.layer_sizes()):
            out = out - 0.5 * t * s + 0.5 * n * t.log()
        return out - 0.5 * post.logdet(tau)

    def optimize_prior_precision(
        self,
        structure: PriorStructure = "scalar",
        max_iter: int = 200,
        init: Any = None,
        method: Literal["marglik", "val"] = "marglik",
        val_data: Any = None,
        grid: Any = None,
    ) -> torch.Tensor:
        """Tune :math:`\\tau` and set it.

        ``method="marglik"``: maximize :meth:`log_marginal_likelihood` over :math:`\\log\\tau` (L-BFGS from
        ``init``, eigenvalues fixed).  ``method="val"``: the scalar :math:`\\tau` of ``grid`` (default
        ``logspace(-4, 6, 41)``, then refined) with the highest log-likelihood of held-out ``val_data`` under the GLM
        predictive (:func:`~pyro_prune.guides.laplace.glm.tune_prior_precision`).

        :param structure: one :math:`\\tau` (``"scalar"``) or one per layer (``"layer"``, marglik only).
        :returns: the new :math:`\\tau`.
        """
        check_choice("structure", structure, ("scalar", "layer"))
        check_choice("method", method, ("marglik", "val"))
        if method == "val":
            if val_data is None:
                raise ValueError("method='val' needs val_data: held-out (x, y) the MAP was not trained on")
            if structure != "scalar":
                raise ValueError("method='val' tunes a scalar prior precision (structure='scalar')")
            return tune_prior_precision(self, val_data, grid)[0]
        start = self.prior_precision if init is None else self._check_prior(init, self._dtype, self._device)
        n = 1 if structure == "scalar" else len(self._layers)
        log_tau = start.log().mean().expand(n) if start.dim() == 0 or structure == "scalar" else start.log()
        tau = self._maximize_marglik(log_tau.double().clone(), max_iter, structure == "scalar")
        self.set_prior_precision(tau)
        return self.prior_precision

    def _maximize_marglik(self, log_tau: torch.Tensor, max_iter: int, scalar: bool) -> torch.Tensor:
        """L-BFGS (strong Wolfe) on :math:`-\\log p(\\mathcal D \\mid e^{\\log\\tau})` over ``log_tau``: ``(1,)``
        (one :math:`\\tau`, with ``scalar``) or ``(num_layers,)``, in float64 for a smooth objective; returns
        :math:`\\tau`."""
        log_tau.requires_grad_(True)
        opt = torch.optim.LBFGS([log_tau], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)  # fmt: skip

        def closure():
            opt.zero_grad()
            tau = log_tau.clamp(-30, 30).exp().to(self._dtype)
            loss = -self.log_marginal_likelihood(tau[0] if scalar else tau)
            loss.backward()
            return loss

        opt.step(closure)
        tau = log_tau.detach().clamp(-30, 30).exp().to(self._dtype)
        return tau[0] if scalar else tau

    # -- sampling ----------------------------------------------------------------------------------------
    def _zeros(self, shape) -> torch.Tensor:
        return torch.zeros(shape, dtype=self._dtype, device=self._device)

    def forward(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Draw every weight jointly from the Laplace posterior: one auxiliary standard normal site per block of the
        posterior, mapped through its covariance square root; returns ``{site: value}``."""
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
        q = check_quantiles(quantiles, self._dtype)
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
) -> LaplaceGuide:
    r"""Fit a Laplace posterior around a MAP network and return it as a Pyro guide.

    :param model: a :class:`~pyro_prune.BayesianModel` whose likelihood has an output Hessian (Categorical,
        Bernoulli, Gaussian with a fixed or learned scale, or your own
        :class:`~pyro_prune.model.likelihoods.Likelihood` implementing ``exact_hessian_sqrt``). Its prior is not
        used: the Laplace prior is :math:`\mathcal N(0, \tau^{-1} I)`.
    :param data: a ``DataLoader`` of ``(x, y)`` or one ``(x, y)`` tuple (the training data; one pass).
    :param structure: ``"kron"`` (KFAC per layer), ``"diag"`` (exact GGN diagonal) or ``"full"`` (dense GGN, for
        small networks or a ``subnet``; its size is checked against ``max_memory`` before anything is allocated).
    :param map_from: the MAP: ``None`` (the weights the network had at ``bayesianize`` time), a trained guide with
        ``median()`` (``AutoDelta``, ``AutoNormal``, ...), an ``nn.Module`` or a ``state_dict`` (which may also
        carry the point estimates, e.g. BatchNorm).
    :param prior_precision: :math:`\tau > 0` (a scalar or one per layer), or ``"marglik"`` to maximize the Laplace
        marginal likelihood (see ``prior_structure``).
    :param temperature: :math:`T > 0`; the curvature is divided by it.
    :param subnet: with ``structure="full"``: ``{site: bool mask}`` or flat indices into the concatenation of the
        model's weight sites in order (``parameters_to_vector`` of a plain Linear/Conv network); other weights stay
        at the MAP.
    :param fisher: ``"exact"`` GGN or ``"mc"`` sampled-label Fisher (validated by the likelihood).
    :param prior_structure: with ``"marglik"``: one :math:`\tau` (``"scalar"``) or one per layer (``"layer"``).
    :param max_memory: bound in bytes on the dense matrices of ``structure="full"``.
    :returns: a :class:`LaplaceGuide`.
    :raises MemoryError: ``structure="full"`` would exceed ``max_memory``.
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
    )


register_marginals(LaplaceGuide, LaplaceGuide.marginals)
