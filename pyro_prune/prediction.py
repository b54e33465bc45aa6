r"""Posterior-predictive ensembles (``predict``) and their scores (``evaluate``).

``predict`` draws ``S`` whole networks from the guide with ``pyro.infer.Predictive(parallel=True)`` and averages:
class probabilities :math:`\bar p = \frac1S\sum_s \mathrm{softmax}(f_{w_s}(x))`, predictive entropy
:math:`H[\bar p]`, mutual information :math:`H[\bar p] - \frac1S\sum_s H[p_s]`; for regression the mean, the
epistemic std (spread of the sampled means) and the aleatoric std.

``method="glm"`` uses a Laplace guide's linearized predictive instead (:func:`pyro_prune.laplace_guide`):
:math:`f(x) \sim \mathcal N(f_{w^*}(x), J\Sigma J^\top)`, with the probit approximation
:math:`p \approx \mathrm{softmax}(\kappa \circ f_{w^*})`, :math:`\kappa = (1 + \frac{\pi}{8}\,\mathrm{diag}\,
J\Sigma J^\top)^{-1/2}` for classification (sigmoid for Bernoulli) and the closed form
:math:`\mathcal N(f_{w^*}, J\Sigma J^\top + \sigma^2)` for regression [1].

References

[1] Erik Daxberger et al. "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Literal, Optional

import torch
from pyro.infer import Predictive
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.initialization import InitMessenger, init_to_sample

from . import metrics as _metrics
from ._checks import Batches, as_batches, check_choice, check_int, unpack_batch
from ._checks.guide import check_guide, model_ref
from .model import BayesianModel
from .model.likelihoods import glm_class_probs

__all__ = ["predict", "evaluate", "Prediction"]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


@dataclass
class Prediction:
    r"""A posterior-predictive ensemble for inputs ``x`` (``S`` samples, ``B`` inputs).

    :ivar task: ``"classification"``, ``"regression"``, or ``"unknown"`` (raw outputs of a model without likelihood).
    :ivar outputs: raw network outputs, ``(S, B, …)``.
    :ivar samples: per-member class probabilities ``(S, B, C)`` (classification) or predictive
        means ``(S, B[, D])`` (regression).
    :ivar scales: per-member aleatoric stds ``(S, B[, D])`` (regression only).
    :ivar method: ``"mc"`` (an ensemble of ``S`` sampled networks) or ``"glm"`` (the linearized predictive: one
        member, ``S = 1``, holding the probit probabilities or the predictive mean).
    :ivar output_cov: ``"glm"`` only: the covariance :math:`J\Sigma J^\top` of the outputs, ``(B, K, K)``.
    """

    task: str
    outputs: torch.Tensor
    samples: torch.Tensor
    scales: Optional[torch.Tensor] = None
    method: str = "mc"
    output_cov: Optional[torch.Tensor] = None

    @property
    def num_samples(self) -> int:
        return self.samples.shape[0]

    # classification --------------------------------------------------------------------------------
    @property
    def probs(self) -> torch.Tensor:
        r"""Ensemble-averaged class probabilities :math:`\bar p`, ``(B, C)``."""
        self._need("classification", "probs")
        return self.samples.mean(0)

    @property
    def labels(self) -> torch.Tensor:
        """Predicted classes ``argmax p̄``, ``(B,)``."""
        return self.probs.argmax(-1)

    @property
    def entropy(self) -> torch.Tensor:
        r"""Predictive entropy :math:`H[\bar p]` (total uncertainty), ``(B,)``."""
        return _entropy(self.probs)

    @property
    def mutual_information(self) -> torch.Tensor:
        r"""Epistemic uncertainty :math:`H[\bar p] - \frac1S \sum_s H[p_s]`, ``(B,)``."""
        self._need("classification", "mutual_information")
        if self.method == "glm":
            raise AttributeError("mutual_information needs sampled members; use method='mc'")
        return (self.entropy - _entropy(self.samples).mean(0)).clamp_min(0)

    # both -------------------------------------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        """Class probabilities (classification) or the predictive mean (regression)."""
        return self.samples.mean(0)

    # regression ------------------------------------------------------------------------------------
    @property
    def epistemic_std(self) -> torch.Tensor:
        """Std of the sampled means (model uncertainty)."""
        self._need("regression", "epistemic_std")
        if self.output_cov is not None:
            var = self.output_cov.diagonal(dim1=-2, dim2=-1)
            return var.reshape(self.samples.shape[1:]).clamp_min(0).sqrt()
        return self.samples.std(0, unbiased=False)

    @property
    def aleatoric_std(self) -> torch.Tensor:
        r"""Noise std :math:`\sqrt{\frac1S \sum_s \sigma_s^2}`."""
        self._need("regression", "aleatoric_std")
        return self.scales.pow(2).mean(0).sqrt()

    @property
    def std(self) -> torch.Tensor:
        """Total predictive std (law of total variance)."""
        self._need("regression", "std")
        return (self.epistemic_std.pow(2) + self.aleatoric_std.pow(2)).sqrt()

    def _need(self, task: str, what: str) -> None:
        if self.task != task:
            hint = " (pass likelihood=... to predict to read raw outputs)" if self.task == "unknown" else ""
            raise AttributeError(f"{what} is defined for {task}, this prediction is {self.task}{hint}")


def _summarize(model: Any, outputs: torch.Tensor, likelihood: Optional[Any] = None) -> Prediction:
    lik = likelihood if likelihood is not None else getattr(model, "likelihood", None)
    outputs = outputs.detach()
    if lik is None:
        return Prediction("unknown", outputs, outputs)
    with torch.no_grad():
        if lik.task == "classification":
            return Prediction("classification", outputs, lik.probs(outputs))
        loc, scale = lik.mean_scale(outputs)
        if loc.shape[-1] == 1:
            loc, scale = loc.squeeze(-1), scale.squeeze(-1)
        return Prediction("regression", outputs, loc.detach(), scale.detach())


def _predictive_target(model: Any, guide: Any) -> Any:
    """The model as ``Predictive`` should run it.

    ``Predictive`` first runs the model alone to count its plates, which would draw the weights from the prior
    (impossible for improper priors): weight sites get a placeholder there; the guide's draws replace it.
    """
    if guide is None or not isinstance(model, BayesianModel):
        return model
    weight_sites = set(model.sites) | set(model.scale_sites)  # group scales too (improper priors)
    dtype, device = model.dtype, model.device
    return InitMessenger(
        lambda site: (
            torch.ones(site["fn"].shape(), dtype=dtype, device=device)
            if site["name"] in weight_sites
            else init_to_sample(site)
        )
    )(model)


def predict(
    model: Callable,
    guide: Optional[Callable],
    x: torch.Tensor,
    num_samples: int = 100,
    parallel: Optional[bool] = None,
    batch_size: Optional[int] = None,
    likelihood: Optional[Any] = None,
    method: Literal["mc", "glm"] = "mc",
) -> Prediction:
    """Posterior-predictive ensemble of ``num_samples`` networks drawn from ``guide``.

    :param model: the :class:`~pyro_prune.BayesianModel` (or a hand-written Pyro model ``model(x, y=None)``
        returning the network output).
    :param guide: a trained guide (``None`` draws from the prior).
    :param x: inputs ``(B, …)``.
    :param num_samples: ensemble size ``S`` (>= 1).
    :param parallel: draw all members at once through ``Predictive(parallel=True)``; default: for a vectorizable
        ``BayesianModel``; hand-written models run sequentially (torch's own layers take one weight at a time).
    :param batch_size: split ``x`` into chunks of this many rows (bounds memory); the same ``S`` networks
        predict every chunk.
    :param likelihood: how to read the outputs (e.g. ``pp.Categorical(N)``), for models without a
        ``likelihood`` attribute; without one, the prediction holds raw outputs (``task="unknown"``).
    :param method: ``"mc"`` (sampled networks) or ``"glm"`` (the linearized predictive of a Laplace guide, see the
        module docstring; ``num_samples`` and ``parallel`` are not used).
    :returns: a :class:`Prediction`.
    """
    check_int("num_samples", num_samples, 1)
    check_choice("method", method, ("mc", "glm"))
    _check_inputs(x)
    check_guide(model, guide)
    if isinstance(guide, AutoGuide) and guide.prototype_trace is None:
        raise ValueError("guide is not initialized: fit it first (pp.fit) or call guide(x, y) once")
    if method == "glm":
        return _predict_glm(model, guide, x, batch_size, likelihood)
    if parallel is None:
        parallel = isinstance(model, BayesianModel) and model.vectorizable
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    ref = model_ref(model)
    if ref is not None:
        x = x.to(ref.device)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        out = _draw_outputs(model, guide, x, num_samples, parallel, batch_size)
    finally:
        if was_training:
            model.train()
    if out.shape[0] != num_samples:  # a model that ignores the samples (e.g. no latent sites)
        out = out.expand((num_samples,) + out.shape)
    return _summarize(model, out, likelihood)


def _check_inputs(x: Any) -> None:
    """``x`` is a non-empty batch tensor without NaN or inf."""
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch, got shape {tuple(x.shape)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")


def _draw_outputs(
    model: Any, guide: Any, x: torch.Tensor, num_samples: int, parallel: bool, batch_size: Optional[int]
) -> torch.Tensor:
    """Network outputs ``(S, B, ...)`` of ``num_samples`` networks from ``guide``; chunks share the same networks."""
    target = _predictive_target(model, guide)
    with torch.no_grad():
        if batch_size is None or batch_size >= x.shape[0]:
            run = Predictive(target, guide=guide, num_samples=num_samples, parallel=parallel, return_sites=("_RETURN",))
            return run(x)["_RETURN"]
        # draw the S networks once, then run every chunk through the same networks
        draws = Predictive(guide, num_samples=num_samples, parallel=parallel)(x[:batch_size])
        draws = {k: v for k, v in draws.items() if k not in ("obs", "data")}
        run = Predictive(target, posterior_samples=draws, parallel=parallel, return_sites=("_RETURN",))
        return torch.cat([run(xb)["_RETURN"] for xb in x.split(batch_size)], 1)


def _predict_glm(model: Any, guide: Any, x: torch.Tensor, batch_size: Optional[int], likelihood: Any) -> Prediction:
    glm = getattr(guide, "glm_predictive", None)
    if not callable(glm):
        raise ValueError(
            f"method='glm' needs a guide with a linearized predictive (pp.laplace_guide), got {type(guide).__name__}"
        )
    lik = likelihood if likelihood is not None else getattr(model, "likelihood", None)
    if lik is None:
        raise ValueError("method='glm' needs a likelihood: pass likelihood=pp.Categorical(N) ...")
    with torch.no_grad():
        f, cov = glm(x) if batch_size is None else glm(x, batch_size=batch_size)
        if lik.task == "classification":
            probs = glm_class_probs(lik, f, cov)  # the probit approximation, on the likelihood's own link
            return Prediction("classification", f.unsqueeze(0), probs.unsqueeze(0), method="glm", output_cov=cov)
        loc, scale = lik.mean_scale(f)
        if loc.shape[-1] == 1:
            loc, scale = loc.squeeze(-1), scale.squeeze(-1)
        return Prediction("regression", f.unsqueeze(0), loc.unsqueeze(0), scale.unsqueeze(0), "glm", cov)


def evaluate(
    model: Callable,
    guide: Optional[Callable],
    data: Batches,
    num_samples: int = 100,
    parallel: Optional[bool] = None,
    likelihood: Optional[Any] = None,
    method: Literal["mc", "glm"] = "mc",
) -> Dict[str, float]:
    """Score the posterior-predictive ensemble on ``data``.

    Classification: ``accuracy``, ``nll``, ``ece`` (15 bins), ``brier`` of the averaged probabilities.
    Regression: ``rmse`` and the Gaussian ``nll`` of the moment-matched predictive
    :math:`\\mathcal N(\\bar\\mu, \\sigma^2_{epi} + \\sigma^2_{ale})`.

    :param data: a ``DataLoader`` of ``(x, y)`` batches or one ``(x, y)`` tuple.
    :param method: ``"mc"`` or ``"glm"`` (see :func:`predict`).
    :returns: a dict of floats.
    """
    check_int("num_samples", num_samples, 1)
    preds, ys = [], []
    for batch in as_batches(data):
        x, y = unpack_batch(batch, "data", None)
        preds.append(predict(model, guide, x, num_samples, parallel=parallel, likelihood=likelihood, method=method))
        ys.append(y)
    if not preds:
        raise ValueError("data yielded no batches")
    y = torch.cat(ys).to(preds[0].samples.device)
    if preds[0].task == "unknown":
        raise ValueError("the model has no likelihood to score its outputs with: pass likelihood=pp.Categorical(N) ...")
    if preds[0].task == "classification":
        probs = torch.cat([p.probs for p in preds])
        return _metrics.classification_metrics(probs, y.long())
    mean = torch.cat([p.mean for p in preds])
    std = torch.cat([p.std for p in preds])
    return _metrics.regression_metrics(mean, std, y.to(mean.dtype))
