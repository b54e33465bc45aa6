r"""Likelihood heads: how a network output observes the targets ``y``.

Each head knows ``dataset_size`` :math:`N` and observes a mini-batch of size :math:`B`
inside ``pyro.plate("data", N, subsample_size=B)``, so Pyro scales the batch
log-likelihood by :math:`N / B` and the ELBO is an unbiased estimate of

.. math::

    \mathcal L = \sum_{n=1}^N \mathbb E_q[\log p(y_n \mid x_n, w)] - \mathrm{KL}(q(w)\,\|\,p(w)).

Network outputs may carry leading sample dimensions (vectorized particles, parallel
``Predictive``); the data plate is always the rightmost batch dimension.

The Laplace guides need three more things from a head, all on the class, so a new likelihood touches this file
only (:mod:`pyro_prune.curvature` and :mod:`pyro_prune.guides.laplace` call them and never branch on the type):

* :meth:`Likelihood.flatten_output`: the outputs :math:`f` ``(B, K)`` the curvature is taken with respect to;
* :meth:`Likelihood.exact_hessian_sqrt` (and, for ``fisher="mc"``, :meth:`Likelihood.sampled_hessian_sqrt`):
  vectors :math:`L_c` with :math:`\sum_c L_c L_c^\top = H = \partial^2_f\,[-\log p(y \mid f)]`, the output-space
  Hessian of the generalized Gauss-Newton matrix :math:`\sum_n J_n^\top H_n J_n`;
* :meth:`Likelihood.glm_distribution`: the predictive of :math:`y` when the outputs are Gaussian,
  :math:`f \sim \mathcal N(\bar f, \Sigma_f)` (the linearized / GLM predictive [1]).

For the three heads here

* Categorical: :math:`H = \mathrm{diag}(p) - pp^\top`, :math:`L_c = \sqrt{p_c}\,(e_c - p)`; sampled:
  :math:`L = (p - e_{\tilde y})/\sqrt S` with :math:`\tilde y \sim p`; predictive: the probit approximation [2]
  :math:`\mathrm{softmax}(\bar f / \sqrt{1 + \pi\,\mathrm{diag}(\Sigma_f)/8})`, or Monte Carlo;
* Bernoulli: :math:`L = \sqrt{p(1 - p)}` on the logit; sampled :math:`(p - \tilde y)/\sqrt S`; predictive as above;
* Gaussian with noise :math:`\sigma`: :math:`L_k = e_k/\sigma`; sampled :math:`\varepsilon/(\sigma\sqrt S)`;
  predictive :math:`\mathcal N(\bar f, \mathrm{diag}(\Sigma_f) + \sigma^2)` (exact).

References

[1] Erik Daxberger et al. "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021.
[2] David J. C. MacKay. "The Evidence Framework Applied to Classification Networks", Neural Computation 1992.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch.distributions import transform_to

from .._checks import check_choice, check_int, check_positive

__all__ = ["Likelihood", "Categorical", "Bernoulli", "Gaussian", "OBS_SITE", "Fisher", "FISHERS", "GlmLink"]

#: Name of the observed sample site.
OBS_SITE = "obs"

#: The output Hessian used for curvature: ``"exact"`` (the GGN) or ``"mc"`` (the sampled-label Fisher).
Fisher = Literal["exact", "mc"]
FISHERS: Tuple[str, ...] = ("exact", "mc")
#: The link of a classification head's GLM predictive: ``"probit"`` (closed form [2]) or ``"mc"`` (Monte Carlo).
GlmLink = Literal["probit", "mc"]


class Likelihood(PyroModule):
    """Base class of likelihood heads.

    :param dataset_size: number of training examples :math:`N` (scales mini-batch log-likelihoods).
    """

    task = "classification"

    def __init__(self, dataset_size: int):
        super().__init__()
        self.dataset_size = check_int("dataset_size", dataset_size, 1)

    # -- to override ---------------------------------------------------------------------------------
    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        """The predictive distribution of ``y`` given network ``output`` (batch shape ``S + (B,)``)."""
        raise NotImplementedError

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        """Raise ``ValueError`` when ``y`` cannot be observed under ``output``."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def forward(self, output: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Observe ``y`` (or sample it when ``None``) inside the subsampled data plate.

        :param output: network output, shape ``S + (B, ...)``.
        :param y: targets of shape ``(B, ...)`` or ``None``.
        :returns: the observed or sampled targets.
        """
        batch = y.shape[0] if y is not None else self._batch_size(output)
        size = self.dataset_size
        if y is not None:
            self.check_observed(y, output)
        else:
            size = max(size, batch)  # predicting: any number of inputs (the plate's scale is not used)
        fn = self.observation_distribution(output, y)
        with pyro.plate("data", size, subsample_size=batch, dim=-1):
            return pyro.sample(OBS_SITE, fn, obs=y)

    def observation_distribution(self, output: torch.Tensor, y: Optional[torch.Tensor]) -> dist.Distribution:
        """The distribution the ``obs`` site uses for ``output`` (and the shape of ``y``, when given)."""
        return self.distribution(output)

    def check_observed(self, y: torch.Tensor, output: torch.Tensor) -> None:
        """The checks of an observed batch: no larger than ``dataset_size``, and valid targets (``check_target``)."""
        if y.shape[0] > self.dataset_size:
            raise ValueError(
                f"dataset_size ({self.dataset_size}) is smaller than the batch ({y.shape[0]}); "
                "pass the number of training examples as dataset_size"
            )
        self.check_target(y, output)

    def log_likelihood(self, output: torch.Tensor, y: torch.Tensor, check: bool = True) -> torch.Tensor:
        r"""Per-example :math:`\log p(y_b \mid f_b)` (shape ``S + (B,)``), with the same checks as ``forward``
        (``check=False`` skips them, for data already checked)."""
        if check:
            self.check_observed(y, output)
        y = self._cast_target(y, output)
        return self.observation_distribution(output, y).log_prob(y)

    def _cast_target(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return y

    def _batch_size(self, output: torch.Tensor) -> int:
        return self.distribution(output).batch_shape[-1]

    # -- curvature and the linearized predictive (the Laplace guides) -------------------------------------------
    def check_curvature(self) -> None:
        """Raise ``ValueError`` when this head has no output Hessian (the Laplace guides call it first)."""
        if type(self).exact_hessian_sqrt is Likelihood.exact_hessian_sqrt:
            raise self._unsupported("the Laplace approximation", "exact_hessian_sqrt")

    def _unsupported(self, what: str, method: str) -> ValueError:
        return ValueError(
            f"unsupported likelihood {type(self).__name__} for {what}: it must implement {method} (see "
            "pyro_prune.model.likelihoods; pp.Categorical, pp.Bernoulli and pp.Gaussian do)"
        )

    def flatten_output(self, output: torch.Tensor) -> torch.Tensor:
        """The network output ``(B, ...)`` as the ``(B, K)`` outputs :math:`f` of the curvature."""
        return output.reshape(output.shape[0], -1)

    def exact_hessian_sqrt(self, f: torch.Tensor) -> torch.Tensor:
        r"""Vectors :math:`L_c` ``(C, B, K)`` with :math:`\sum_c L_{cb} L_{cb}^\top = H_b`, the Hessian of
        :math:`-\log p(y_b \mid f_b)` in :math:`f_b` (for the heads here it does not depend on :math:`y`).

        :param f: flattened outputs ``(B, K)`` (detached).
        """
        raise self._unsupported("the Laplace approximation", "exact_hessian_sqrt")

    def sampled_hessian_sqrt(
        self, f: torch.Tensor, mc_samples: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        r"""The sampled-label Fisher: ``(S, B, K)`` gradients :math:`\nabla_f \log p(\tilde y \mid f)/\sqrt S`,
        :math:`\tilde y \sim p(y \mid f)`, whose outer products average to :math:`H` (``fisher="mc"``)."""
        raise ValueError(f"fisher='mc' is not implemented for {type(self).__name__}; use fisher='exact'")

    def hessian_sqrt(
        self,
        f: torch.Tensor,
        fisher: Fisher = "exact",
        mc_samples: int = 1,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """The square root of the output Hessian ``(C, B, K)``: exact (``fisher="exact"``) or sampled (``"mc"``,
        ``mc_samples`` labels per example).  The one place ``fisher`` is validated."""
        check_choice("fisher", fisher, FISHERS)
        f = f.detach()
        if fisher == "exact":
            return self.exact_hessian_sqrt(f)
        return self.sampled_hessian_sqrt(f, check_int("mc_samples", mc_samples, 1), generator)

    def output_hessian(self, f: torch.Tensor) -> torch.Tensor:
        r"""The exact Hessian of :math:`-\log p(y \mid f)` in output space, ``(B, K, K)``."""
        L = self.hessian_sqrt(f, "exact")
        return torch.einsum("cbk,cbl->bkl", L, L)

    def noise_scale(self, ref: torch.Tensor) -> torch.Tensor:
        r"""The observation noise :math:`\sigma` as a tensor like ``ref`` (regression heads)."""
        raise ValueError(f"{type(self).__name__} has no observation noise scale")

    def glm_distribution(self, f: torch.Tensor, cov: torch.Tensor) -> dist.Distribution:
        r"""The predictive of :math:`y` when :math:`f \sim \mathcal N(\bar f, \Sigma_f)`: ``f`` ``(B, K)``,
        ``cov`` ``(B, K, K)``; batch shape ``(B,)``."""
        raise self._unsupported("the GLM predictive", "glm_distribution")

    def glm_log_likelihood(self, f: torch.Tensor, cov: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example log-likelihood of ``y`` under :meth:`glm_distribution`, ``(B,)``."""
        return self.glm_distribution(f, cov).log_prob(self._cast_target(y, f))


def probit_scale(cov: torch.Tensor) -> torch.Tensor:
    r"""The probit factor :math:`\kappa = (1 + \pi\,\mathrm{diag}(\Sigma_f)/8)^{-1/2}` ``(B, K)`` of a GLM
    predictive with output covariance ``cov`` ``(B, K, K)`` [2]."""
    return (1 + math.pi / 8 * cov.diagonal(dim1=-2, dim2=-1)).rsqrt()


def glm_class_probs(
    likelihood: Likelihood,
    f: torch.Tensor,
    cov: torch.Tensor,
    link: GlmLink = "probit",
    num_samples: int = 100,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Class probabilities ``(B, C)`` of a classification head's GLM predictive: ``likelihood.probs`` of
    :math:`\kappa \bar f` (probit), or averaged over ``num_samples`` draws :math:`f \sim \mathcal N(\bar f,
    \Sigma_f)` (``link="mc"``)."""
    check_choice("link", link, ("probit", "mc"))
    if link == "probit":
        return likelihood.probs(f * probit_scale(cov))
    num_samples = check_int("num_samples", num_samples, 1)
    jitter = 1e-10 * torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
    chol = torch.linalg.cholesky(cov + jitter)
    eps = torch.randn((num_samples,) + f.shape, dtype=f.dtype, device=f.device, generator=generator)
    draws = f + (chol @ eps.unsqueeze(-1)).squeeze(-1)
    return likelihood.probs(draws).mean(0)


def _check_finite(y: torch.Tensor) -> None:
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf")


class Categorical(Likelihood):
    r"""Categorical likelihood :math:`p(y \mid f) = \mathrm{softmax}(f)_y` on logits ``(…, B, C)``."""

    task = "classification"

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=output)

    def log_likelihood(self, output: torch.Tensor, y: torch.Tensor, check: bool = True) -> torch.Tensor:
        if output.dim() == 2:  # one network: the cross-entropy kernel, same value as Categorical(logits).log_prob
            if check:
                self.check_observed(y, output)
            return -torch.nn.functional.cross_entropy(output, y, reduction="none")
        return super().log_likelihood(output, y, check)

    def _batch_size(self, output: torch.Tensor) -> int:
        return output.shape[-2]

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        if y.dim() != 1:
            raise ValueError(f"y must have shape (batch,) of class indices for Categorical, got {tuple(y.shape)}")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"y must hold integer class indices for Categorical, got dtype {y.dtype}")
        if output.shape[-2] != y.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows but the network output has {output.shape[-2]}")
        k = output.shape[-1]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = y[(y < 0) | (y >= k)]
            raise ValueError(
                f"y has labels outside [0, {k}) (the network has {k} outputs): label {int(bad[0])} "
                f"({bad.numel()} such label{'s' if bad.numel() > 1 else ''})"
            )

    def probs(self, output: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``softmax(output)``."""
        return output.softmax(-1)

    def exact_hessian_sqrt(self, f: torch.Tensor) -> torch.Tensor:
        p = f.softmax(-1)
        eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
        return p.sqrt().T.unsqueeze(-1) * (eye.unsqueeze(1) - p.unsqueeze(0))  # L[c, b] = sqrt(p_bc) (e_c - p_b)

    def sampled_hessian_sqrt(
        self, f: torch.Tensor, mc_samples: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        p = f.softmax(-1)
        y = torch.multinomial(p, mc_samples, replacement=True, generator=generator).T  # (S, B)
        return (p.unsqueeze(0) - torch.nn.functional.one_hot(y, f.shape[-1]).to(f.dtype)) / math.sqrt(mc_samples)

    def glm_distribution(
        self,
        f: torch.Tensor,
        cov: torch.Tensor,
        link: GlmLink = "probit",
        num_samples: int = 100,
        generator: Optional[torch.Generator] = None,
    ) -> dist.Distribution:
        """``Categorical`` over the classes: probit (:func:`probit_scale`) or Monte Carlo (:func:`glm_class_probs`)."""
        if link == "probit":
            return dist.Categorical(logits=f * probit_scale(cov))
        return dist.Categorical(probs=glm_class_probs(self, f, cov, link, num_samples, generator))


class Bernoulli(Likelihood):
    r"""Bernoulli likelihood on logits: output ``(…, B)`` or ``(…, B, 1)``, targets in {0, 1}."""

    task = "classification"

    @staticmethod
    def _logits(output: torch.Tensor) -> torch.Tensor:
        return output.squeeze(-1) if output.dim() >= 2 and output.shape[-1] == 1 else output

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=self._logits(output))

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        if y.dim() != 1:
            raise ValueError(f"y must have shape (batch,) for Bernoulli, got {tuple(y.shape)}")
        _check_finite(y)
        logits = self._logits(output)
        if logits.shape[-1] != y.shape[0]:
            raise ValueError(
                f"y has {y.shape[0]} rows but the network output has shape {tuple(output.shape)}; "
                "Bernoulli expects one logit per example"
            )
        if y.numel() and not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must hold 0/1 targets for Bernoulli")

    def forward(self, output: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return super().forward(output, None if y is None else y.to(output.dtype))

    def _cast_target(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return y.to(output.dtype)

    def probs(self, output: torch.Tensor) -> torch.Tensor:
        """Two-column class probabilities ``[1 - p, p]``."""
        p = torch.sigmoid(self._logits(output))
        return torch.stack([1 - p, p], -1)

    def exact_hessian_sqrt(self, f: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(f)
        return (p * (1 - p)).sqrt().unsqueeze(0)

    def sampled_hessian_sqrt(
        self, f: torch.Tensor, mc_samples: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        p = torch.sigmoid(f)
        y = torch.bernoulli(p.unsqueeze(0).expand((mc_samples,) + p.shape), generator=generator)
        return (p - y) / math.sqrt(mc_samples)

    def glm_distribution(
        self,
        f: torch.Tensor,
        cov: torch.Tensor,
        link: GlmLink = "probit",
        num_samples: int = 100,
        generator: Optional[torch.Generator] = None,
    ) -> dist.Distribution:
        """``Bernoulli`` on one logit per example ``f`` ``(B, 1)``: probit or Monte Carlo."""
        if link == "probit":
            return dist.Bernoulli(logits=self._logits(f * probit_scale(cov)))
        return dist.Bernoulli(probs=glm_class_probs(self, f, cov, link, num_samples, generator)[..., 1])


class Gaussian(Likelihood):
    r"""Gaussian likelihood :math:`y \sim \mathcal N(f(x), \sigma^2)`.

    :param dataset_size: number of training examples.
    :param scale: the observation noise :math:`\sigma`:

        * a positive float: fixed;
        * ``"learned"``: one homoscedastic :math:`\sigma` learned as a point estimate
          (``PyroParam`` ``likelihood.scale``, positive, optimized as :math:`\log\sigma`);
        * ``"heteroscedastic"``: the network outputs ``2·D`` columns, the means and
          :math:`\log\sigma` (``output[..., :D]``, ``output[..., D:]``).

    :param init_scale: the initial learned :math:`\sigma`: ``None`` (default) starts it at the maximum-likelihood
        value for the first batch the head observes, :math:`\sigma_0 = \sqrt{\overline{(y - f(x))^2}}` (the
        root-mean-square residual of the network as it is then, over every output and particle); a positive float
        starts it there.  Until then ``likelihood.scale`` reads NaN, and sampling ``y`` or asking for the noise
        (``pp.predict``, the Laplace curvature) raises.

    The network output has shape ``(…, B, D)`` (``(…, B, 2D)`` when heteroscedastic): targets
    ``y`` of shape ``(B,)`` go with ``D = 1``, targets ``(B, D)`` with ``D`` outputs
    (dimensions are independent).

    **Why the data-dependent start.** With :math:`\sigma_0 = 1` and residuals of 9 (Pyro's Bayesian-regression
    tutorial: log GDP around 9, weights starting at 0), the first gradients of the weights
    (:math:`r/\sigma^2`) and of :math:`\log\sigma` (:math:`1 - r^2/\sigma^2`) are about 80 times their size near
    the optimum; Adam's second-moment average (:math:`\beta_2 = 0.999`, a memory of ~1000 steps) keeps them, so
    every later step is ~80 times too small and the fit needs ~5000 steps at ``lr=0.03``.  Started at
    :math:`\sigma_0` the first gradient of :math:`\log\sigma` is zero and those of the weights are of the size
    they keep, and the fit converges in the ~400 steps of the tutorial's own loop, whose :math:`\sigma` starts at
    5, the median of its ``Uniform(0, 10)`` prior (``bench/learned_scale.py``, ``tests/test_likelihoods.py``).
    """

    task = "regression"

    def __init__(self, dataset_size: int, scale: Union[float, str] = 1.0, init_scale: Optional[float] = None):
        super().__init__(dataset_size)
        self.mode = "fixed"
        if isinstance(scale, str):
            if scale not in ("learned", "heteroscedastic"):
                raise ValueError(f"scale must be a positive float, 'learned' or 'heteroscedastic', got {scale!r}")
            self.mode = scale
            if scale == "learned":
                start = math.nan if init_scale is None else check_positive("init_scale", init_scale)
                self.scale = PyroParam(torch.tensor(start), constraint=constraints.positive)
        else:
            self.fixed_scale = check_positive("scale", scale)

    @property
    def scale_initialized(self) -> bool:
        r"""Whether the learned :math:`\sigma` has a value (always ``True`` unless ``scale="learned"``)."""
        return self.mode != "learned" or not bool(torch.isnan(self.scale_unconstrained.detach()))

    def _require_scale(self) -> None:
        if not self.scale_initialized:
            raise ValueError(
                "Gaussian(scale='learned') has not observed any targets yet: its scale starts at the RMS residual of "
                "the first batch it observes (fit the model first), or pass init_scale=... (or set likelihood.scale)"
            )

    def _initialize_scale(self, output: torch.Tensor, y: torch.Tensor) -> None:
        r"""Start the learned :math:`\sigma` at the RMS residual of ``y`` under ``output`` (first observed batch)."""
        if self.scale_initialized:
            return
        with torch.no_grad():
            loc = output.detach().squeeze(-1) if y.dim() == 1 else output.detach()
            rms = (loc - y.to(loc.dtype)).pow(2).mean().sqrt().clamp_min(torch.finfo(loc.dtype).eps)
            u = self.scale_unconstrained
            u.copy_(transform_to(constraints.positive).inv(rms.to(u)))

    def _loc(self, output: torch.Tensor) -> torch.Tensor:
        """The predictive mean (the first half of the outputs when heteroscedastic)."""
        if self.mode == "heteroscedastic":
            return self.mean_scale(output)[0]
        return output

    def mean_scale(self, output: torch.Tensor, event_dim: int = 0):
        """Split ``output`` into the predictive mean and scale (before any squeeze)."""
        if self.mode == "heteroscedastic":
            d = output.shape[-1]
            if d % 2:
                raise ValueError(f"heteroscedastic Gaussian needs an even number of outputs (mean, log-scale), got {d}")
            loc, log_scale = output[..., : d // 2], output[..., d // 2 :]
            return loc, log_scale.clamp(-20, 20).exp()
        if self.mode == "learned":
            self._require_scale()
            return output, self.scale.to(output.dtype).expand_as(output)
        return output, torch.full_like(output, self.fixed_scale)

    def distribution(self, output: torch.Tensor, y_dim: int = 1) -> dist.Distribution:
        loc, scale = self.mean_scale(output)
        if y_dim == 1:
            return dist.Normal(loc.squeeze(-1), scale.squeeze(-1))
        return dist.Normal(loc, scale).to_event(1)

    def _batch_size(self, output: torch.Tensor) -> int:
        return output.shape[-2]

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        if y.dim() not in (1, 2):
            raise ValueError(f"y must have shape (batch,) or (batch, D) for Gaussian, got {tuple(y.shape)}")
        if not y.is_floating_point():
            raise ValueError(f"y must be floating point for Gaussian, got dtype {y.dtype}")
        _check_finite(y)
        loc = self._loc(output)
        d = 1 if y.dim() == 1 else y.shape[1]
        if loc.dim() < 2 or loc.shape[-2] != y.shape[0] or loc.shape[-1] != d:
            raise ValueError(
                f"y of shape {tuple(y.shape)} does not match the network's mean output of shape {tuple(loc.shape)}"
            )

    def observation_distribution(self, output: torch.Tensor, y: Optional[torch.Tensor]) -> dist.Distribution:
        if y is not None:
            self._initialize_scale(output, y)
            return self.distribution(output, y.dim())
        return self.distribution(output, 1 if self._loc(output).shape[-1] == 1 else 2)

    def check_curvature(self) -> None:
        if self.mode == "heteroscedastic":
            raise ValueError(
                "the Laplace approximation supports Gaussian likelihoods with a fixed or learned scale only (the "
                "Hessian of a heteroscedastic likelihood is not a GGN of the mean)"
            )

    def flatten_output(self, output: torch.Tensor) -> torch.Tensor:
        self.check_curvature()
        return super().flatten_output(output)

    def noise_scale(self, ref: torch.Tensor) -> torch.Tensor:
        r""":math:`\sigma` (fixed, or the learned point estimate, detached) as a tensor like ``ref``."""
        self.check_curvature()
        if self.mode == "learned":
            self._require_scale()
            return self.scale.detach().to(ref)
        return torch.as_tensor(self.fixed_scale, dtype=ref.dtype, device=ref.device)

    def exact_hessian_sqrt(self, f: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device) / self.noise_scale(f)
        return eye.unsqueeze(1).expand(f.shape[-1], f.shape[0], f.shape[-1])

    def sampled_hessian_sqrt(
        self, f: torch.Tensor, mc_samples: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        eps = torch.randn((mc_samples,) + f.shape, dtype=f.dtype, device=f.device, generator=generator)
        return eps / self.noise_scale(f) / math.sqrt(mc_samples)

    def glm_distribution(self, f: torch.Tensor, cov: torch.Tensor) -> dist.Distribution:
        r""":math:`\mathcal N(\bar f, \mathrm{diag}(\Sigma_f) + \sigma^2)`, event shape ``(K,)``."""
        var = cov.diagonal(dim1=-2, dim2=-1)
        return dist.Normal(f, (var + self.noise_scale(f) ** 2).sqrt()).to_event(1)

    def glm_log_likelihood(self, f: torch.Tensor, cov: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.glm_distribution(f, cov).log_prob(y.to(f.dtype).reshape(f.shape))
