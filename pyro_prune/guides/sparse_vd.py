r"""Sparse variational dropout as a Pyro ``AutoGuide`` (Molchanov, Ashukha, Vetrov 2017).

Every weight gets a factorized Gaussian posterior with the *additive* parameterization

.. math::

    q(w_{ij}) = \mathcal N(\theta_{ij}, \sigma^2_{ij}), \qquad
    w = \theta + \sigma\,\varepsilon, \qquad
    \log\alpha_{ij} = \log\sigma^2_{ij} - \log\theta^2_{ij},

with free parameters :math:`\theta` and :math:`\log\sigma^2` (so the gradient variance does not
blow up as :math:`\alpha \to \infty`, [1] §4.2).  Under the (improper) log-uniform prior
:math:`p(|w|) \propto 1/|w|` the KL term depends on :math:`\log\alpha` only and uses the
registered approximation of [1] eq. 14

.. math::

    -\mathrm{KL} \approx k_1\,\sigma(k_2 + k_3\log\alpha) - \tfrac12\log(1 + e^{-\log\alpha}) - k_1 .

The guide emits a ``Normal`` at each weight site (not a ``Delta`` over an auxiliary site, as
``AutoNormal`` does), so ``TraceMeanField_ELBO`` finds the analytic KL, and the
local-reparameterization path of :mod:`pyro_prune.layers` reads :math:`(\theta, \sigma^2)`
through :meth:`AutoSparseVD.local_reparam_moments` during :func:`pyro_prune.fit`.

Weights with :math:`\log\alpha > 3` (keep probability below about 5 %) are pruned.

References

[1] Molchanov, Ashukha, Vetrov. "Variational Dropout Sparsifies Deep Neural Networks", ICML 2017.
[2] Kingma, Salimans, Welling. "Variational Dropout and the Local Reparameterization Trick", NeurIPS 2015.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroModule, PyroParam

from .._checks import check_bool, check_positive, check_quantiles, check_real
from ..marginals import LOG_ALPHA_EPS, Marginal, is_real_support, register_marginals
from ..model import BayesianModel, init_from
from .base import LocalReparamGuide, flat_normal_kl, normal_kl

__all__ = ["AutoSparseVD"]


class AutoSparseVD(LocalReparamGuide):
    r"""Sparse variational dropout posterior :math:`q(w) = \mathcal N(\theta, \sigma^2)` for every weight site.

    :param model: a :class:`~pyro_prune.BayesianModel` (or any Pyro model whose latent sites are real-valued
        and outside plates).
    :param init_loc_fn: initial :math:`\theta`; default: the network's own weights for a
        ``BayesianModel`` (``pp.init_from(net)`` for a pre-trained one), Pyro's ``init_to_median`` otherwise.
    :param init_log_sigma2: initial :math:`\log\sigma^2` (default -10, as in [1]).
    :param local_reparameterization: sample pre-activations instead of weights inside :func:`~pyro_prune.fit`.
    :param log_alpha_clip: :math:`\log\alpha` is clipped to ``[-clip, clip]`` in :meth:`log_alpha`.

    Its parameters :math:`(\theta, \log\sigma^2)` stay on the guide (``guide.locs``, ``guide.log_sigma2``), never in
    Pyro's global param store, whatever ``module_local_params`` says: guides of this class never share state.
    ``state_dict`` holds them (and the inputs' shapes, so that it loads into a fresh ``AutoSparseVD(model)``);
    ``copy.deepcopy`` and pickle keep the guide with its model (copy them together:
    ``copy.deepcopy((model, guide))``).
    """

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Optional[Callable] = None,
        init_log_sigma2: float = -10.0,
        local_reparameterization: bool = True,
        log_alpha_clip: float = 10.0,
        create_plates=None,
    ):
        self.init_log_sigma2 = check_real("init_log_sigma2", init_log_sigma2)
        self.log_alpha_clip = check_positive("log_alpha_clip", log_alpha_clip)
        self.local_reparameterization = check_bool("local_reparameterization", local_reparameterization)
        if init_loc_fn is None:
            init_loc_fn = init_from(model.initial_weights()) if isinstance(model, BayesianModel) else init_to_median
        self.init_loc_fn = init_loc_fn
        self._model_ref = (model,) if isinstance(model, BayesianModel) else None  # a tuple: not a submodule
        super().__init__(InitMessenger(init_loc_fn)(model), create_plates=create_plates)

    # -- setup -----------------------------------------------------------------------------------------
    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        self._event_dims: Dict[str, int] = {}
        self.locs = PyroModule()
        self.log_sigma2 = PyroModule()
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if not is_real_support(site["fn"].support):
                raise ValueError(f"AutoSparseVD needs real-valued sites; {name!r} has support {site['fn'].support}")
            if site["cond_indep_stack"]:
                raise ValueError(f"AutoSparseVD supports global weight sites only; {name!r} is inside a plate")
            value = site["value"].detach()
            self._event_dims[name] = site["fn"].event_dim
            deep_setattr(self.locs, name, PyroParam(value.clone(), constraints.real, site["fn"].event_dim))
            deep_setattr(
                self.log_sigma2,
                name,
                PyroParam(torch.full_like(value, self.init_log_sigma2), constraints.real, site["fn"].event_dim),
            )

    def _flat_order(self):
        """All :math:`\\theta` (site order), then all :math:`\\log\\sigma^2`: the two segments of :meth:`total_kl`."""
        names = {id(p): n for n, p in self.named_parameters()}
        order = [self._param((root, site)) for root in ("locs", "log_sigma2") for site in self._site_names()]
        return [(names[id(p)], p) for p in order]

    def _param_keys(self):
        return [(root, name) for name in self._site_names() for root in ("locs", "log_sigma2")]

    def _read_param(self, key: Tuple[str, str]) -> torch.Tensor:
        root, name = key
        return attrgetter(name)(getattr(self, root))

    def _params(self, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\theta, \log\sigma^2)` of one site (plain tensors under :meth:`fast_params`)."""
        return self._param(("locs", name)), self._param(("log_sigma2", name))

    def _site_names(self):
        self._require_setup()
        return [name for name, _ in self.prototype_trace.iter_stochastic_nodes()]

    # -- sampling ----------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Draw every weight site from :math:`\\mathcal N(\\theta, \\sigma^2)`; returns ``{site: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return {name: pyro.sample(name, self.site_distribution(name)) for name in self._site_names()}

    def site_distribution(self, name: str) -> dist.Distribution:
        """:math:`q` at one site: ``Normal(θ, σ).to_event(event_dim)``."""
        loc, log_sigma2 = self._params(name)
        return dist.Normal(loc, (0.5 * log_sigma2).exp()).to_event(self._event_dims[name])

    def kl(self, name: str, prior: dist.Distribution) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q\,\|\,p)` summed over one site, from the parameter tensors directly.

        Closed form for a Gaussian prior, the Molchanov approximation for the improper log-uniform prior
        (both equal to the registered KLs, tested), otherwise the registered KL of ``(Normal, prior)``.
        """
        loc, log_sigma2 = self._params(name)
        return normal_kl(loc, log_sigma2, prior, self._event_dims[name])

    def total_kl(self) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q\,\|\,p) = \sum_{\text{sites}}` :meth:`kl` against the priors of the
        :class:`~pyro_prune.BayesianModel` the guide was built for (the fused objective of :func:`pyro_prune.fit`)."""
        self._require_setup()
        if self._model_ref is None:
            raise TypeError("total_kl needs the priors of a BayesianModel; this guide was built for another model")
        model = self._model_ref[0]
        layout = self.active_layout()
        names = list(model.sites)
        if layout is not None and names == self._site_names():  # in a fused fit: one call over the flat parameters
            locs = [self._param(("locs", n)) for n in names]
            log_sigma2s = [self._param(("log_sigma2", n)) for n in names]
            kl = flat_normal_kl(layout, locs, log_sigma2s, lambda: [model.prior(n) for n in names])
            if kl is not None:
                return kl
        return sum(self.kl(name, model.prior(name)) for name in model.sites)

    def local_reparam_moments(self, name: str) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        r""":math:`(\theta, \sigma^2)` of a weight site for the local reparameterization trick, or ``None``."""
        if self.prototype_trace is None or name not in self.prototype_trace.nodes:
            return None
        loc, log_sigma2 = self._params(name)
        return loc, log_sigma2.exp()

    # -- summaries ---------------------------------------------------------------------------------------
    def log_alpha(self) -> Dict[str, torch.Tensor]:
        r""":math:`\log\alpha = \log\sigma^2 - \log(\theta^2 + 10^{-8})` per site, clipped to ``±log_alpha_clip``."""
        out = {}
        with torch.no_grad():
            for name in self._site_names():
                loc, log_sigma2 = self._params(name)
                la = log_sigma2 - (loc.pow(2) + LOG_ALPHA_EPS).log()
                out[name] = la.clamp(-self.log_alpha_clip, self.log_alpha_clip).detach()
        return out

    @torch.no_grad()
    def median(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Posterior median (= mean) :math:`\\theta` of every site."""
        return {name: self._params(name)[0].detach() for name in self._site_names()}

    @torch.no_grad()
    def quantiles(self, quantiles: Union[Sequence[float], torch.Tensor], *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Marginal quantiles ``{site: tensor (len(quantiles),) + shape}``."""
        names = self._site_names()
        q = check_quantiles(quantiles, device=self._params(names[0])[0].device if names else None)
        out = {}
        for name in names:
            loc, log_sigma2 = self._params(name)
            qq = q.to(loc).reshape((-1,) + (1,) * loc.dim())
            out[name] = dist.Normal(loc, (0.5 * log_sigma2).exp()).icdf(qq).detach()
        return out

    @torch.no_grad()
    def marginals(self) -> Dict[str, Marginal]:
        """``{site: Marginal(loc=θ, scale=σ, log_alpha)}`` (clipped :math:`\\log\\alpha`)."""
        la = self.log_alpha()
        out = {}
        for name in self._site_names():
            loc, log_sigma2 = self._params(name)
            out[name] = Marginal(loc.detach().clone(), (0.5 * log_sigma2).exp().detach(), la[name])
        return out


register_marginals(AutoSparseVD, AutoSparseVD.marginals)
