r"""Group sparsity ("Bayesian Compression", Louizos, Ullrich, Welling 2017 [1]) as a Pyro ``AutoGuide``.

For a model bayesianized with a :class:`~pyro_prune.GroupPrior`, every weight is :math:`w_{ij} = z_g\,\tilde w_{ij}`
(:math:`g` the group of :math:`w_{ij}`: an input unit of a Linear layer, an output channel of a Conv layer) and

.. math::

    q(w \mid z) = \mathcal N(z_g\,\tilde\mu_{ij},\; z_g^2\,\tilde\sigma^2_{ij}), \qquad
    \mathrm{KL}\big(q(w\mid z)\,\|\,p(w\mid z)\big) = \tfrac12\sum_{ij}\big(\tilde\sigma^2_{ij} + \tilde\mu^2_{ij}
    - 1 - \log\tilde\sigma^2_{ij}\big),

independent of :math:`z` ([1] eq. 9).  The scales:

* ``"log-uniform"``: :math:`q(z_g) = \mathcal N(\mu_g, \sigma_g^2)` with :math:`\log\alpha_{z,g} = \log\sigma_g^2 -
  \log\mu_g^2` and the Molchanov approximation of :math:`\mathrm{KL}(q(z)\,\|\,p(z) \propto 1/|z|)`
  ([1] §3.1); groups are pruned by the pooled noise-to-signal ratio of their weights (below), not by
  :math:`\log\alpha_{z,g}` alone;
* ``"horseshoe"``: log-normal :math:`q` for the four non-centred factors :math:`a_g, b_g, a^{(s)}, b^{(s)}`
  (:math:`z_g = \sqrt{a_g b_g a^{(s)} b^{(s)}}`, so :math:`\log z_g` is Gaussian) with the closed-form KLs against
  the Gamma and inverse-Gamma factors ([1] §3.2).  Each pair is parameterised by its product: the mean :math:`m` of
  :math:`\log(a b)` (:math:`\log\lambda_g^2`, resp. :math:`\log s^2`) and the factors' common log-scale
  :math:`\log\sigma`; the split of :math:`m` between the factors is the KL-optimal one in closed form
  (:func:`~pyro_prune.distributions.horseshoe.optimal_factor_locs`).  The likelihood sees only the products, so
  nothing is lost, and the global Gamma factor sits at its prior's scale :math:`\tau_0^2` from the first step.

  *Why* (issue 13): with the factors free and both initialised at :math:`\log s_0`, the global Gamma factor's KL
  :math:`\tau_0^{-2}\,\mathbb E a^{(s)}` started at about :math:`2\cdot10^{9}` for :math:`\tau_0 = 10^{-5}`, and Adam
  moves :math:`\mu_a` about ``lr`` per step, 9 nats in 300 steps at lr 3e-2 against the 21 it needed: the loss
  was still :math:`4\cdot10^{5}` after 300 epochs (0.76 at :math:`\tau_0 = 10^{-2}`) on a 12-input problem.  With
  the optimal split the pair's KL is :math:`\tfrac{\sigma^2}{2} + \log(\tau_0^{-2} e^{m/2} + e^{-m/2}) + \dots`,
  whose gradient in :math:`m` is about :math:`\tfrac12` whatever :math:`\tau_0`: the total KL at 300 epochs is
  92 nats, and :math:`\tau_0 = 10^{-5}` and :math:`10^{-2}` end within 0.03 nats per example of each other.

Group pruning, for both priors and in every layer, reads the pooled noise-to-signal ratio of the group's weights
:math:`\log\alpha_g = \log\sum_{i\in g}\mathrm{Var}\,w_i - \log\sum_{i\in g}(\mathbb E w_i)^2`
(``GroupMarginal.log_alpha``, from the moments of :math:`w = z\tilde w` below). For the log-uniform prior, per
weight :math:`\mathrm{Var}\,w/(\mathbb E w)^2 = (1 + \alpha_z)(1 + \tilde\sigma^2/\tilde\mu^2) - 1 \ge
\alpha_z`: the score sees the collapsed :math:`\tilde w` of a dead group, not only its scale, whose own
:math:`\log\alpha_z` is a ratio of two tiny numbers once :math:`\mu_z \to 0`.  Measured on the few-relevant-inputs
problems of tests/test_horseshoe.py (12 and 40 inputs, seeds 0-1), the last layer's hidden units that carry the
signal score :math:`-2.5 \ldots -1.4` under both priors and the others :math:`\ge 2.9` (horseshoe) and
:math:`\ge 5.5` (log-uniform); :math:`\log\alpha_z` had kept a second unit at :math:`-10.9` (pooled: 5.5), whose
removal leaves the training accuracy at 1.0. The priors'
scores in the layers that feed another still differ (:class:`~pyro_prune.rules.GroupLogAlpha`), hence its
per-prior default criterion (the horseshoe's reads the posterior-mean norm).

Training uses the local reparameterization trick through the group-scaled layers ([1] §3): a scale
:math:`z` is drawn per example and then, for a Linear layer, :math:`h = (x \odot z)\tilde\mu^\top +
\sqrt{(x \odot z)^2 (\tilde\sigma^2)^\top}\,\varepsilon`; for a convolution the output channel :math:`c` is
:math:`z_c(\mathrm{conv}(x, \tilde\mu_c) + \sqrt{\mathrm{conv}(x^2, \tilde\sigma^2_c)}\,\varepsilon)`.

The weight marginals reported by :meth:`AutoGroupSparse.marginals` are the moments of :math:`w = z\tilde w`:
:math:`\mathbb E w = \mathbb E z\,\tilde\mu`, :math:`\mathrm{Var}\,w = \mathbb E z^2(\tilde\mu^2 + \tilde\sigma^2)
- (\mathbb E z)^2\tilde\mu^2`; each weight site's ``Marginal.group`` is a :class:`GroupMarginal`.

References

[1] Christos Louizos, Karen Ullrich, Max Welling. "Bayesian Compression for Deep Learning", NeurIPS 2017.
[2] Dmitry Molchanov, Arsenii Ashukha, Dmitry Vetrov. "Variational Dropout Sparsifies Deep Neural Networks",
    ICML 2017.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from .._checks import check_bool, check_positive, check_quantiles, check_real
from ..distributions import molchanov_kl_sum
from ..distributions.horseshoe import optimal_factor_locs
from ..marginals import LOG_ALPHA_EPS, GroupMarginal, Marginal, register_marginals
from ..model import BayesianModel, init_from, layers
from ..model.group_prior import GroupInfo, GroupPrior
from .base import FlatLayout, LocalReparamGuide, flat_normal_kl, normal_kl
from .scale_mixture import scale_mixture_quantiles

__all__ = ["AutoGroupSparse"]


def _check_group_model(model: BayesianModel, prior: Union[None, str, GroupPrior]) -> None:
    """``model`` is a :class:`~pyro_prune.BayesianModel` with group scales, of the kind ``prior`` names (if any)."""
    if not isinstance(model, BayesianModel):
        raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(model).__name__}")
    if model.group_prior is None:
        raise ValueError(
            "AutoGroupSparse needs a model with group scales: bayesianize the network with "
            "prior=pp.GroupPrior('log-uniform') or pp.GroupPrior('horseshoe', tau0=...)"
        )
    kind = prior.kind if isinstance(prior, GroupPrior) else prior
    if kind is not None and kind != model.group_prior.kind:
        raise ValueError(
            f"prior={kind!r} does not match the model's {model.group_prior!r}; bayesianize with "
            f"pp.GroupPrior({kind!r}) or leave prior=None"
        )


class _StandardNormalKLSum(torch.autograd.Function):
    r""":math:`\tfrac12\sum(\tilde\sigma^2 + \tilde\mu^2 - 1 - \log\tilde\sigma^2)` ([1] eq. 9) with its gradients
    :math:`(\tilde\mu,\ \tfrac12(\tilde\sigma^2 - 1))` computed in the forward pass (one ``exp``, one in-place
    update, no autograd intermediates); the flat path's weight KL. Not twice differentiable."""

    @staticmethod
    def forward(ctx, loc, log_sigma2):
        var = log_sigma2.exp()
        kl = 0.5 * (var.sum() + torch.dot(loc, loc) - loc.numel() - log_sigma2.sum())
        ctx.save_for_backward(loc, var.sub_(1.0).mul_(0.5))
        return kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        loc, g_ls2 = ctx.saved_tensors
        return loc * grad, g_ls2 * grad


class _ScalesAtOne:
    """An init function (picklable): ones at the model's scale sites (each layer's weights then set the scales),
    ``init_loc_fn`` elsewhere."""

    def __init__(self, model: BayesianModel, init_loc_fn: Callable):
        self.scale_sites = frozenset(model.scale_sites)
        self.init_loc_fn = init_loc_fn
        self._model_ref = (model,)

    def __call__(self, site):
        if site["name"] in self.scale_sites:
            model = self._model_ref[0]
            return torch.ones(site["fn"].shape(), dtype=model.dtype, device=model.device)
        return self.init_loc_fn(site)


class AutoGroupSparse(LocalReparamGuide):
    r"""Group-sparse posterior of "Bayesian Compression" [1] for a model with a :class:`~pyro_prune.GroupPrior`.

    :param model: a :class:`~pyro_prune.BayesianModel` from ``pp.bayesianize(net, prior=pp.GroupPrior(...), ...)``.
    :param prior: ``None`` (read from the model), or ``"log-uniform"`` / ``"horseshoe"`` / a ``GroupPrior``,
        which must match the model's prior.
    :param init_loc_fn: initial weights (default: the network's own, ``pp.init_from(net)`` for a trained one).
        Each layer's scales start at the root-mean-square :math:`s_0` of its initial weights and
        :math:`\tilde\mu = w_0 / s_0`.
    :param init_log_sigma2: initial :math:`\log\tilde\sigma^2` of :math:`\tilde w` (and of the biases).
    :param init_scale_log_alpha: initial squared coefficient of variation of the scales, as a log:
        :math:`\log(\sigma_z^2/\mu_z^2)` (log-uniform) or the log-variance :math:`\log\sigma^2` of each log-normal
        factor (horseshoe; :math:`\mathrm{Var}\log z_g = \sigma^2`).
    :param local_reparameterization: draw scales per example and pre-activations, not weights, inside
        :func:`~pyro_prune.fit`.
    :param log_alpha_clip: group :math:`\log\alpha` is clipped to ``[-clip, clip]``.

    Its parameters (``guide.params``: :math:`\tilde\mu, \log\tilde\sigma^2` and the scales' parameters per layer)
    stay on the guide, never in Pyro's global param store; ``state_dict`` holds them (and the inputs' shapes, so that
    it loads into a fresh ``AutoGroupSparse(model)``); ``copy.deepcopy`` and pickle keep the guide with its model.
    :meth:`median` and :meth:`quantiles` are those of the weight marginal :math:`w = z\tilde w`, a Gaussian scale
    mixture (not its mean: that is ``marginals()[site].loc``).
    """

    def __init__(
        self,
        model: BayesianModel,
        *,
        prior: Union[None, str, GroupPrior] = None,
        init_loc_fn: Optional[Callable] = None,
        init_log_sigma2: float = -8.0,
        init_scale_log_alpha: float = -8.0,
        local_reparameterization: bool = True,
        log_alpha_clip: float = 10.0,
    ):
        _check_group_model(model, prior)
        self.init_log_sigma2 = check_real("init_log_sigma2", init_log_sigma2)
        self.init_scale_log_alpha = check_real("init_scale_log_alpha", init_scale_log_alpha)
        self.log_alpha_clip = check_positive("log_alpha_clip", log_alpha_clip)
        self.local_reparameterization = check_bool("local_reparameterization", local_reparameterization)
        self.group_prior = model.group_prior
        self.groups: Dict[str, GroupInfo] = dict(model.group_sites)
        self._weight_sites = {info.weight: info for info in self.groups.values()}
        self._bias_sites = tuple(info.bias for info in self.groups.values() if info.bias is not None)
        self.init_loc_fn = _ScalesAtOne(
            model, init_from(model.initial_weights()) if init_loc_fn is None else init_loc_fn
        )
        self._model_ref = (model,)  # a tuple: not registered as a submodule
        super().__init__(InitMessenger(self.init_loc_fn)(model))

    # -- parameters ----------------------------------------------------------------------------------
    def _add(self, key: str, value: torch.Tensor) -> None:
        self._keys.append(key)
        setattr(self.params, key, PyroParam(value.detach().clone(), constraints.real))

    def _param_keys(self):
        return self._keys

    def _read_param(self, key: str) -> torch.Tensor:
        return getattr(self.params, key)

    @staticmethod
    def _key(site: str, what: str) -> str:
        return f"{site.replace('.', '__')}__{what}"

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        self.params = PyroModule()
        self._keys = []
        nodes = self.prototype_trace.nodes
        model = self._model_ref[0]
        for site in model.sites:
            if site not in self._weight_sites and site not in self._bias_sites:
                raise ValueError(f"site {site!r} is not part of a group-scaled layer")
        for info in self.groups.values():
            w0 = nodes[info.weight]["value"].detach()
            s0 = w0.pow(2).mean().sqrt().clamp_min(1e-3)
            self._add(self._key(info.weight, "loc"), w0 / s0)
            self._add(self._key(info.weight, "log_sigma2"), torch.full_like(w0, self.init_log_sigma2))
            g = torch.ones(info.num_groups, dtype=w0.dtype, device=w0.device)
            if self.group_prior.kind == "log-uniform":
                self._add(self._key(info.weight, "z_loc"), g * s0)
                self._add(self._key(info.weight, "z_log_sigma2"), g * (2 * s0.log() + self.init_scale_log_alpha))
            else:  # E log z = log s0 - var/2 with var = Var log z = sigma^2, so that E z = s0 exactly
                log_sd = 0.5 * self.init_scale_log_alpha
                shift = -0.5 * math.exp(self.init_scale_log_alpha)
                self._add(self._key(info.weight, "scale_loc"), g * shift)
                self._add(self._key(info.weight, "scale_log_scale"), g * log_sd)
                self._add(self._key(info.weight, "global_loc"), g[:1] * (2 * s0.log() + shift))
                self._add(self._key(info.weight, "global_log_scale"), g[:1] * log_sd)
            if info.bias is not None:
                b0 = nodes[info.bias]["value"].detach()
                self._add(self._key(info.bias, "loc"), b0)
                self._add(self._key(info.bias, "log_sigma2"), torch.full_like(b0, self.init_log_sigma2))

    # -- distributions -------------------------------------------------------------------------------
    def _pair(self, info: GroupInfo, pair: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(m, log sigma)`` of a non-centred pair (``"scale"``: :math:`\\lambda_g^2`, ``"global"``: :math:`s^2`)."""
        loc = self._param(self._key(info.weight, f"{pair}_loc"))
        return loc, self._param(self._key(info.weight, f"{pair}_log_scale"))

    def _factor(self, info: GroupInfo, sfx: str) -> dist.LogNormal:
        """:math:`q` of one horseshoe factor: the KL-optimal split of its pair (:func:`optimal_factor_locs`)."""
        pair, part = sfx.split("_")
        m, log_sd = self._pair(info, pair)
        sd = log_sd.exp()
        rate = 1.0 if pair == "scale" else self.group_prior.tau0**-2
        mu_a, mu_b = optimal_factor_locs(m, sd, rate)
        return dist.LogNormal(mu_a if part == "a" else mu_b, sd)

    def _log_scale_moments(self, info: GroupInfo) -> Tuple[torch.Tensor, torch.Tensor]:
        """Horseshoe: mean and variance of :math:`\\log z_g = \\tfrac12(\\log a + \\log b + \\log a^s + \\log b^s)`."""
        (m_l, ls_l), (m_g, ls_g) = self._pair(info, "scale"), self._pair(info, "global")
        return 0.5 * (m_l + m_g), 0.5 * (ls_l.mul(2).exp() + ls_g.mul(2).exp())

    def scale_moments(self, layer: str) -> Tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\mathbb E z_g, \mathbb E z_g^2)` of one layer's group scales, ``(G,)`` each."""
        info = self.groups[layer]
        if self.group_prior.kind == "log-uniform":
            mu = self._param(self._key(info.weight, "z_loc"))
            var = self._param(self._key(info.weight, "z_log_sigma2")).exp()
            return mu, mu * mu + var
        m, v = self._log_scale_moments(info)
        return (m + 0.5 * v).exp(), (2 * m + 2 * v).exp()

    def forward(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Draw every scale, weight and bias site; returns ``{site: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out: Dict[str, torch.Tensor] = {}
        for info in self.groups.values():
            if self.group_prior.kind == "log-uniform":
                name = info.scale_sites["scale"]
                loc = self._param(self._key(info.weight, "z_loc"))
                sd = (0.5 * self._param(self._key(info.weight, "z_log_sigma2"))).exp()
                out[name] = pyro.sample(name, dist.Normal(loc, sd).to_event(1))
            else:
                for sfx, name in info.scale_sites.items():
                    out[name] = pyro.sample(name, self._factor(info, sfx).to_event(1))
            z = self.group_prior.group_scale({sfx: out[n] for sfx, n in info.scale_sites.items()})
            loc = self._param(self._key(info.weight, "loc"))
            sd = (0.5 * self._param(self._key(info.weight, "log_sigma2"))).exp()
            ze = info.expand(z, loc.dim())
            out[info.weight] = pyro.sample(info.weight, dist.Normal(ze * loc, ze.abs() * sd).to_event(loc.dim()))
            if info.bias is not None:
                bl = self._param(self._key(info.bias, "loc"))
                bs = (0.5 * self._param(self._key(info.bias, "log_sigma2"))).exp()
                out[info.bias] = pyro.sample(info.bias, dist.Normal(bl, bs).to_event(1))
        return out

    # -- the fused objective: KL and local reparameterization -----------------------------------------
    def _segments(self) -> Dict[str, List[str]]:
        r"""Parameter keys by KL family, each family in layer order: weight means, weight :math:`\log\sigma^2`,
        the scales' parameters (log-uniform: means, then :math:`\log\sigma^2`; horseshoe: the pairs, by layer),
        bias means, bias :math:`\log\sigma^2` -- the order of the flat layout (:meth:`_flat_order`)."""
        infos = list(self.groups.values())
        scale = ("z_loc", "z_log_sigma2") if self.group_prior.kind == "log-uniform" else ()
        out = {w: [self._key(i.weight, w) for i in infos] for w in ("loc", "log_sigma2") + scale}
        bias = {f"bias_{w}": [self._key(b, w) for b in self._bias_sites] for w in ("loc", "log_sigma2")}
        placed = {k for keys in (*out.values(), *bias.values()) for k in keys}
        out["pairs"] = [k for k in self._keys if k not in placed]  # the horseshoe pairs (none for log-uniform)
        return {**out, **bias}

    def _flat_order(self):
        """The flat layout's order: every KL family of :meth:`_segments` contiguous (one call each in
        :meth:`total_kl`)."""
        names = {id(p): n for n, p in self.named_parameters()}
        order = [self._param(k) for keys in self._segments().values() for k in keys]
        return [(names[id(p)], p) for p in order]

    def total_kl(self) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q\,\|\,p)` of every site, from the parameters (analytic; Molchanov for log-uniform).

        In a fused ``fit`` (a :class:`~pyro_prune.guides.base.FlatLayout` active) each family is one call over a
        flat segment (:meth:`_flat_kl`); otherwise a sum over layers. Equal in value and gradient (tested)."""
        self._require_setup()
        layout = self.active_layout()
        if layout is not None:
            kl = self._flat_kl(layout)
            if kl is not None:
                return kl
        model = self._model_ref[0]
        total = 0.0
        for info in self.groups.values():
            loc = self._param(self._key(info.weight, "loc"))
            ls2 = self._param(self._key(info.weight, "log_sigma2"))
            total = total + 0.5 * (ls2.exp() + loc * loc - 1 - ls2).sum()
            if self.group_prior.kind == "log-uniform":
                total = total + molchanov_kl_sum(
                    self._param(self._key(info.weight, "z_loc")), self._param(self._key(info.weight, "z_log_sigma2"))
                )
            else:
                total = total + self._horseshoe_kl(info)
            if info.bias is not None:
                total = total + self._bias_kl(info.bias, model.prior(info.bias))
        return total

    def _flat_kl(self, layout: FlatLayout) -> Optional[torch.Tensor]:
        """The KL as one call per family over the flat segments of ``layout`` (the horseshoe pairs per layer: their
        KL-optimal split and the Gamma/inverse-Gamma closed forms differ per prior rate); ``None`` when a family is not
        contiguous in one leaf."""
        keys = layout.cache.get("group_segments")
        if keys is None:
            keys = layout.cache["group_segments"] = self._segments()
        loc, ls2 = (layout.segment([self._param(k) for k in keys[w]]) for w in ("loc", "log_sigma2"))
        if loc is None or ls2 is None:
            return None
        total = _StandardNormalKLSum.apply(loc, ls2)
        if self.group_prior.kind == "log-uniform":
            z_loc, z_ls2 = (layout.segment([self._param(k) for k in keys[w]]) for w in ("z_loc", "z_log_sigma2"))
            if z_loc is None or z_ls2 is None:
                return None
            total = total + molchanov_kl_sum(z_loc, z_ls2)
        else:
            for info in self.groups.values():
                total = total + self._horseshoe_kl(info)
        if self._bias_sites:
            model = self._model_ref[0]
            bias = flat_normal_kl(layout, [self._param(k) for k in keys["bias_loc"]],
                                  [self._param(k) for k in keys["bias_log_sigma2"]],
                                  lambda: [model.prior(b) for b in self._bias_sites])  # fmt: skip
            if bias is None:
                return None
            total = total + bias
        return total

    def _horseshoe_kl(self, info: GroupInfo) -> torch.Tensor:
        """KL of one layer's four log-normal factors against their Gamma / inverse-Gamma priors."""
        model = self._model_ref[0]
        layer = model.net.get_submodule(info.module) if info.module else model.net
        total = 0.0
        for sfx in info.scale_sites:
            prior = layer._pp_prior(f"weight_{sfx}")
            total = total + kl_divergence(self._factor(info, sfx).to_event(1), prior).sum()
        return total

    def _bias_kl(self, name: str, prior: dist.Distribution) -> torch.Tensor:
        return normal_kl(self._param(self._key(name, "loc")), self._param(self._key(name, "log_sigma2")), prior)

    def local_reparam_moments(self, name: str) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        r""":math:`(\tilde\mu, \tilde\sigma^2)` of a weight site (or a bias's mean and variance) for the fused
        local-reparameterization pass; ``None`` inside Pyro inference, where the layers use sampled weights."""
        if self.prototype_trace is None or layers.local_reparam_samples_weights():
            return None
        if name not in self._weight_sites and name not in self._bias_sites:
            return None
        return self._param(self._key(name, "loc")), self._param(self._key(name, "log_sigma2")).exp()

    def local_reparam_group_scale(self, layer: str, batch: int) -> torch.Tensor:
        """Group scales :math:`z` drawn independently per example, ``(batch, G)``."""
        info = self.groups[layer]
        if self.group_prior.kind == "log-uniform":
            loc = self._param(self._key(info.weight, "z_loc"))
            sd = (0.5 * self._param(self._key(info.weight, "z_log_sigma2"))).exp()
            return loc + sd * torch.randn((batch, info.num_groups), dtype=loc.dtype, device=loc.device)
        log_z2 = 0.0
        for pair in ("scale", "global"):  # log(a b) ~ N(m, 2 sigma^2); the global draw is shared by the layer's groups
            m, log_sd = self._pair(info, pair)
            eps = torch.randn((batch, m.numel()), dtype=m.dtype, device=m.device)
            log_z2 = log_z2 + m + math.sqrt(2.0) * log_sd.exp() * eps
        return (0.5 * log_z2).exp()

    # -- summaries ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def group_log_alpha(self) -> Dict[str, torch.Tensor]:
        """``{layer: log α_g}`` (see :class:`GroupMarginal`), clipped to ``±log_alpha_clip``."""
        return {layer: m.group.log_alpha for layer, m in self._weight_marginals().items()}

    @torch.no_grad()
    def _weight_marginals(self) -> Dict[str, Marginal]:
        self._require_setup()
        out = {}
        clip = self.log_alpha_clip
        for layer, info in self.groups.items():
            loc = self._param(self._key(info.weight, "loc")).detach()
            var = self._param(self._key(info.weight, "log_sigma2")).detach().exp()
            ez, ez2 = (t.detach() for t in self.scale_moments(layer))
            e_ = info.expand(ez, loc.dim())
            e2 = info.expand(ez2, loc.dim())
            mean = e_ * loc
            wvar = (e2 * (loc * loc + var) - mean * mean).clamp_min(0)
            dims = [d for d in range(loc.dim()) if d != info.axis]
            la = (wvar.sum(dims) + LOG_ALPHA_EPS).log() - (mean.pow(2).sum(dims) + LOG_ALPHA_EPS).log()
            if self.group_prior.kind == "log-uniform":
                log_scale = self._param(self._key(info.weight, "z_loc")).detach().abs().clamp_min(1e-30).log()
            else:
                log_scale = self._log_scale_moments(info)[0].detach()
            group = GroupMarginal(
                axis=info.axis,
                log_alpha=la.clamp(-clip, clip),
                scale_mean=ez,
                scale_std=(ez2 - ez * ez).clamp_min(0).sqrt(),
                log_scale_mean=log_scale,
                prior=self.group_prior.kind,
            )
            out[info.weight] = Marginal(mean, wvar.sqrt(), None, group)
        return out

    @torch.no_grad()
    def marginals(self) -> Dict[str, Marginal]:
        """``{site: Marginal}`` for every weight and bias site: moments of :math:`w = z\\tilde w` and, on weight sites,
        ``group`` = :class:`GroupMarginal`."""
        out = self._weight_marginals()
        for name in self._bias_sites:
            loc = self._param(self._key(name, "loc")).detach().clone()
            out[name] = Marginal(loc, (0.5 * self._param(self._key(name, "log_sigma2")).detach()).exp())
        return out

    def _scale_params(self, info: GroupInfo) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of each group's :math:`z_g` (Gaussian, log-uniform prior) or of :math:`\\log z_g`
        (log-normal, horseshoe), ``(G,)`` each, in float64."""
        if self.group_prior.kind == "log-uniform":
            mu = self._param(self._key(info.weight, "z_loc")).detach().double()
            return mu, (0.5 * self._param(self._key(info.weight, "z_log_sigma2")).detach().double()).exp()
        m, v = (t.detach().double() for t in self._log_scale_moments(info))
        return m, v.sqrt()

    def _weight_quantiles(self, q: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{weight site: (len(q),) + shape}``: the quantiles of :math:`w = z\\tilde w`
        (:func:`~pyro_prune.guides.scale_mixture.scale_mixture_quantiles`)."""
        out = {}
        for info in self.groups.values():
            loc = self._param(self._key(info.weight, "loc")).detach()
            sd = (0.5 * self._param(self._key(info.weight, "log_sigma2")).detach()).exp()
            z_loc, z_scale = (info.expand(t, loc.dim()).expand(loc.shape).reshape(-1) for t in self._scale_params(info))
            log_normal = self.group_prior.kind != "log-uniform"
            qs = scale_mixture_quantiles(loc.reshape(-1), sd.reshape(-1), z_loc, z_scale, log_normal, q)
            out[info.weight] = qs.reshape((-1,) + loc.shape).to(loc)
        return out

    def _scale_quantiles(self, q: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{scale site: (len(q), G)}``, exact (Normal or LogNormal)."""
        out = {}
        for info in self.groups.values():
            if self.group_prior.kind == "log-uniform":
                loc = self._param(self._key(info.weight, "z_loc")).detach()
                sd = (0.5 * self._param(self._key(info.weight, "z_log_sigma2")).detach()).exp()
                out[info.scale_sites["scale"]] = dist.Normal(loc, sd).icdf(q.to(loc).unsqueeze(-1))
            else:
                for sfx, name in info.scale_sites.items():
                    f = self._factor(info, sfx)
                    out[name] = dist.LogNormal(f.loc.detach(), f.scale.detach()).icdf(q.to(f.loc).unsqueeze(-1))
        return out

    @torch.no_grad()
    def median(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Posterior medians of every site: of the scales and biases (exact), and of the weights
        :math:`w = z\\tilde w`, whose marginal is a Gaussian scale mixture, not a Gaussian: its median (by quadrature,
        :mod:`~pyro_prune.guides.scale_mixture`) differs from its mean :math:`\\mathbb E z\\,\\tilde\\mu`
        (``marginals()[site].loc``, the network the pruned module exports)."""
        self._require_setup()
        return {name: v[0] for name, v in self.quantiles([0.5]).items()}

    @torch.no_grad()
    def quantiles(self, quantiles: Union[Sequence[float], torch.Tensor], *args, **kwargs) -> Dict[str, torch.Tensor]:
        """Marginal quantiles ``{site: (len(quantiles),) + shape}`` of every site: exact for the scales (Normal or
        LogNormal) and biases (Normal); for the weights :math:`w = z\\tilde w` the quantiles of the scale mixture
        :math:`\\int \\mathcal N(w;\\, z\\tilde\\mu, z^2\\tilde\\sigma^2)\\, q(z)\\, dz`, by quadrature over :math:`z`
        (deterministic; :mod:`~pyro_prune.guides.scale_mixture`)."""
        self._require_setup()
        q = check_quantiles(quantiles, device=next(self.parameters()).device)
        out = self._weight_quantiles(q)
        for name in self._bias_sites:
            loc = self._param(self._key(name, "loc")).detach()
            sd = (0.5 * self._param(self._key(name, "log_sigma2")).detach()).exp()
            out[name] = dist.Normal(loc, sd).icdf(q.to(loc).reshape((-1,) + (1,) * loc.dim()))
        out.update(self._scale_quantiles(q))
        return out


register_marginals(AutoGroupSparse, AutoGroupSparse.marginals)
