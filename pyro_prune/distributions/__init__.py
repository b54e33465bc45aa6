r"""Sparsity priors as Pyro distributions, and their KL divergences.

Priors on a weight :math:`w` (all with ``support = constraints.real``, so every guide of Pyro and of
:mod:`pyro_prune` can place a Gaussian on them):

* :class:`LogUniform` — symmetric log-uniform, :math:`p(w) = 1 / (2|w|\log(h/l))` for :math:`l \le |w| \le h`.
  ``LogUniform()`` without bounds is its improper limit :class:`ImproperLogUniform`, :math:`p(w) \propto 1/|w|`,
  the prior of sparse variational dropout [1].
* :class:`HalfCauchyScaleMixture` (alias :class:`Horseshoe`) — :math:`w = z\,s\,\varepsilon` with
  :math:`z \sim C^+(0, 1)` and :math:`\varepsilon \sim \mathcal N(0, 1)`, the horseshoe [3], with its exact
  marginal density (:func:`log_exp1_scaled`); :func:`half_cauchy_noncentred` is the decomposition
  :math:`C^+(0, b) \overset{d}{=} \sqrt{a\,c}` into Gamma and inverse-Gamma factors [2].
* :class:`LogUniformScaleMixture` — groups of weights sharing one scale, :math:`w = z\,\tilde w`,
  :math:`p(z) \propto 1/|z|`, :math:`\tilde w \sim \mathcal N(0, I)`: the Normal–Jeffreys prior of [2].

KL divergences are registered with :func:`torch.distributions.kl.register_kl`, so
:func:`~torch.distributions.kl.kl_divergence` and :class:`pyro.infer.TraceMeanField_ELBO` use them, also through
``.to_event()`` (Pyro's ``Independent``/``Independent`` rule) and ``.expand()``:

* ``Normal ‖ ImproperLogUniform`` — the approximation :func:`molchanov_kl` of [1] (also as plain functions for
  guides: :func:`molchanov_kl` of :math:`\log\alpha`, :func:`normal_log_alpha`, and the fused
  :func:`molchanov_kl_sum`);
* ``LogNormal ‖ Gamma`` and ``LogNormal ‖ InverseGamma`` — closed forms, for the non-centred horseshoe of [2];
* ``Normal ‖ Normal`` is torch's.

The improper priors cannot be sampled, which Pyro's default init strategies do: give Pyro's autoguides
``init_loc_fn=init_improper_to_zero``.

Submodules: :mod:`~pyro_prune.distributions.log_uniform`, :mod:`~pyro_prune.distributions.horseshoe`,
:mod:`~pyro_prune.distributions.kl`.

References

[1] Dmitry Molchanov, Arsenii Ashukha, Dmitry Vetrov. "Variational Dropout Sparsifies Deep Neural Networks",
    ICML 2017 (the log-uniform prior and the approximation of its KL divergence).
[2] Christos Louizos, Karen Ullrich, Max Welling. "Bayesian Compression for Deep Learning", NeurIPS 2017
    (group normal-Jeffreys and group horseshoe priors, the non-centred half-Cauchy and its KL terms).
[3] Carlos M. Carvalho, Nicholas G. Polson, James G. Scott. "The horseshoe estimator for sparse signals",
    Biometrika 97(2), 2010 (theorem 1).
"""

from __future__ import annotations

from .horseshoe import HalfCauchyScaleMixture, Horseshoe, NonCentredHalfCauchy, half_cauchy_noncentred, log_exp1_scaled
from .kl import LOG_ALPHA_CLIP, MOLCHANOV_K, molchanov_kl, molchanov_kl_sum, normal_log_alpha
from .log_uniform import ImproperLogUniform, LogUniform, LogUniformScaleMixture, init_improper_to_zero, is_improper

__all__ = [
    "LogUniform",
    "ImproperLogUniform",
    "HalfCauchyScaleMixture",
    "Horseshoe",
    "NonCentredHalfCauchy",
    "half_cauchy_noncentred",
    "LogUniformScaleMixture",
    "init_improper_to_zero",
    "is_improper",
    "molchanov_kl",
    "molchanov_kl_sum",
    "normal_log_alpha",
    "log_exp1_scaled",
    "MOLCHANOV_K",
    "LOG_ALPHA_CLIP",
]
