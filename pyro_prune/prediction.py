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

**The default method** is the guide's ``default_predictive``: ``"glm"`` for a Laplace guide, ``"mc"`` for every
other guide (``AutoSubnetwork`` included; its ``method="glm"`` stays available). A Laplace posterior is a local
Gaussian approximation of the network *linearized* at the MAP, and whole nonlinear networks drawn from it can be far
off (on laplace-torch's sinusoid the predictive std inside the data is 20.5 with 100 sampled networks against 0.064
linearized; on the digits MLP 100 sampled networks reach 46–80 % accuracy where the linearized predictive keeps the
MAP's). ``method="mc"`` still samples networks from a Laplace guide, with a warning once per guide
(:class:`~pyro_prune.guides.laplace.guide.LaplaceSamplingWarning`). A Laplace guide's ``sigma_noise`` (the Gaussian
noise tuned by its evidence) replaces the likelihood's fixed scale in both methods.

**Memory.** The ensemble is never held whole unless asked: networks are drawn from the guide ``draw_block`` at a
time (the unit in which random numbers are consumed), run ``sample_chunk`` at a time on ``batch_size`` inputs at a
time, and the summaries (:math:`\bar p`, mean member entropy, regression mean and variances) are accumulated member
by member. By default both chunk sizes are chosen so that one forward pass stays within ``max_memory`` bytes
(:data:`DEFAULT_MAX_MEMORY`, 128 MiB), from a probe of one network on one input (the bytes of every module's output
and of one network's weights). The members (:attr:`Prediction.samples`, ``outputs``) are kept when they fit in
``max_memory`` or when ``keep_samples=True``.

**Reproducibility.** For a fixed seed the networks, members and summaries are the same, bit for bit, whatever
``sample_chunk``, ``batch_size``, ``max_memory`` and ``keep_samples`` (on kernels whose result for one input and one
network does not depend on how many share a call, as on CPU): the draws depend only on the seed, ``num_samples``,
``draw_block`` and ``parallel``; forward passes leave the random state alone; summaries are sums in member order.
``sample_chunk >= num_samples`` with ``batch_size=None`` is the unchunked path (one pass over all networks and inputs).

References

[1] Erik Daxberger et al. "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Literal, Optional

import torch
from pyro.infer.autoguide import AutoGuide

from . import metrics as _metrics
from ._checks import Batches, as_batches, check_bool, check_choice, check_int, unpack_batch
from ._checks.guide import check_guide, model_ref
from .model import BayesianModel
from .model.likelihoods import glm_class_probs
from .prediction_chunks import Members, ensemble, entropy

__all__ = ["predict", "evaluate", "Prediction", "DEFAULT_MAX_MEMORY", "DEFAULT_DRAW_BLOCK"]

#: Default memory budget of one forward pass of :func:`predict`, in bytes (128 MiB).
DEFAULT_MAX_MEMORY = 128 * 2**20
#: Default number of networks drawn from the guide per call (the unit in which random numbers are consumed).
DEFAULT_DRAW_BLOCK = 32


class Prediction:
    r"""A posterior-predictive ensemble for inputs ``x`` (``S`` members, ``B`` inputs).

    The summaries (:attr:`probs`, :attr:`entropy`, :attr:`mutual_information`, :attr:`mean`, :attr:`std`, ...) are
    always available; they were accumulated member by member while the ensemble was drawn. The members themselves
    (:attr:`outputs`, :attr:`samples`, :attr:`scales`) exist only when they were kept (see ``keep_samples`` in
    :func:`predict`); otherwise reading them raises an ``AttributeError`` that says how to keep them.

    :ivar task: ``"classification"``, ``"regression"``, or ``"unknown"`` (raw outputs of a model without likelihood).
    :ivar num_samples: the ensemble size ``S``.
    :ivar method: ``"mc"`` (an ensemble of ``S`` sampled networks) or ``"glm"`` (the linearized predictive: one
        member, ``S = 1``, holding the probit probabilities or the predictive mean).
    :ivar output_cov: ``"glm"`` only: the covariance :math:`J\Sigma J^\top` of the outputs, ``(B, K, K)``.
    """

    def __init__(
        self,
        task: str,
        num_samples: int,
        mean: torch.Tensor,
        *,
        member_entropy: Optional[torch.Tensor] = None,
        epistemic_var: Optional[torch.Tensor] = None,
        aleatoric_var: Optional[torch.Tensor] = None,
        members: Optional[Members] = None,
        members_note: str = "",
        method: str = "mc",
        output_cov: Optional[torch.Tensor] = None,
    ) -> None:
        self.task, self.num_samples, self.method, self.output_cov = task, num_samples, method, output_cov
        self._mean, self._member_entropy = mean, member_entropy
        self._epistemic_var, self._aleatoric_var = epistemic_var, aleatoric_var
        self._members, self._members_note = members, members_note

    def __repr__(self) -> str:
        return f"Prediction({self.task!r}, {self.method!r}, num_samples={self.num_samples}, kept={self.has_members})"

    # members ---------------------------------------------------------------------------------------
    @property
    def has_members(self) -> bool:
        """Whether the per-member tensors (:attr:`outputs`, :attr:`samples`, :attr:`scales`) were kept."""
        return self._members is not None

    def _member(self, i: int, what: str) -> Optional[torch.Tensor]:
        if self._members is None:
            raise AttributeError(
                f"{what}: the ensemble members were not kept ({self._members_note}); pass "
                "keep_samples=True to predict (memory grows with num_samples) or read the summaries"
            )
        return self._members[i]

    @property
    def outputs(self) -> torch.Tensor:
        """Raw network outputs of every member, ``(S, B, …)`` (kept members only)."""
        return self._member(0, "outputs")

    @property
    def samples(self) -> torch.Tensor:
        """Per-member class probabilities ``(S, B, C)`` (classification), predictive means ``(S, B[, D])``
        (regression) or raw outputs (unknown task) (kept members only)."""
        return self._member(1, "samples")

    @property
    def scales(self) -> Optional[torch.Tensor]:
        """Per-member aleatoric stds ``(S, B[, D])`` (regression; ``None`` otherwise) (kept members only)."""
        return self._member(2, "scales")

    # classification --------------------------------------------------------------------------------
    @property
    def probs(self) -> torch.Tensor:
        r"""Ensemble-averaged class probabilities :math:`\bar p`, ``(B, C)``."""
        self._need("classification", "probs")
        return self._mean

    @property
    def labels(self) -> torch.Tensor:
        """Predicted classes ``argmax p̄``, ``(B,)``."""
        return self.probs.argmax(-1)

    @property
    def entropy(self) -> torch.Tensor:
        r"""Predictive entropy :math:`H[\bar p]` (total uncertainty), ``(B,)``."""
        return entropy(self.probs)

    @property
    def mutual_information(self) -> torch.Tensor:
        r"""Epistemic uncertainty :math:`H[\bar p] - \frac1S \sum_s H[p_s]`, ``(B,)``."""
        self._need("classification", "mutual_information")
        if self.method == "glm":
            raise AttributeError("mutual_information needs sampled members; use method='mc'")
        return (self.entropy - self._member_entropy).clamp_min(0)

    # both -------------------------------------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        """Class probabilities (classification), the predictive mean (regression) or the mean raw output."""
        return self._mean

    # regression ------------------------------------------------------------------------------------
    @property
    def epistemic_std(self) -> torch.Tensor:
        """Std of the sampled means (model uncertainty; population std over the members)."""
        self._need("regression", "epistemic_std")
        return self._epistemic_var.clamp_min(0).sqrt()

    @property
    def aleatoric_std(self) -> torch.Tensor:
        r"""Noise std :math:`\sqrt{\frac1S \sum_s \sigma_s^2}`."""
        self._need("regression", "aleatoric_std")
        return self._aleatoric_var.sqrt()

    @property
    def std(self) -> torch.Tensor:
        """Total predictive std (law of total variance)."""
        self._need("regression", "std")
        return (self.epistemic_std.pow(2) + self.aleatoric_std.pow(2)).sqrt()

    def _need(self, task: str, what: str) -> None:
        if self.task != task:
            hint = " (pass likelihood=... to predict to read raw outputs)" if self.task == "unknown" else ""
            raise AttributeError(f"{what} is defined for {task}, this prediction is {self.task}{hint}")


def predict(
    model: Callable,
    guide: Optional[Callable],
    x: torch.Tensor,
    num_samples: int = 100,
    parallel: Optional[bool] = None,
    batch_size: Optional[int] = None,
    likelihood: Optional[Any] = None,
    method: Optional[Literal["mc", "glm"]] = None,
    *,
    sample_chunk: Optional[int] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    keep_samples: Optional[bool] = None,
    draw_block: int = DEFAULT_DRAW_BLOCK,
) -> Prediction:
    """Posterior-predictive ensemble of ``num_samples`` networks drawn from ``guide``.

    Peak memory is set by ``max_memory``, not by ``num_samples`` (module docstring, "Memory"): about
    ``max_memory`` for one forward pass, plus the ``(B, …)`` summaries, plus the members when they are kept.

    :param model: the :class:`~pyro_prune.BayesianModel` (or a hand-written Pyro model ``model(x, y=None)``
        returning the network output).
    :param guide: a trained guide (``None`` draws from the prior).
    :param x: inputs ``(B, …)``, a float tensor of the model's dtype (integer token ids for a network that starts
        with an ``nn.Embedding``).
    :param num_samples: ensemble size ``S`` (>= 1).
    :param parallel: draw and run many networks at once through ``Predictive(parallel=True)``; default: for a
        vectorizable ``BayesianModel``; hand-written models run sequentially (torch's own layers take one weight at a
        time).
    :param batch_size: inputs per forward pass; default: as many as ``max_memory`` allows. The same ``S`` networks
        predict every chunk.
    :param likelihood: how to read the outputs (e.g. ``pp.Categorical(N)``), for models without a
        ``likelihood`` attribute; without one, the prediction holds raw outputs (``task="unknown"``).
    :param method: ``"mc"`` (sampled networks) or ``"glm"`` (the linearized predictive of a Laplace guide, see the
        module docstring; ``num_samples``, ``parallel`` and the memory options are not used). Default: the guide's
        ``default_predictive``, ``"glm"`` for a Laplace guide (``pp.laplace_guide``), ``"mc"`` otherwise (module
        docstring, "The default method"); ``"mc"`` on a Laplace guide warns once per guide.
    :param sample_chunk: networks per forward pass; default: as many as ``max_memory`` allows.
    :param max_memory: bytes one forward pass may take (module docstring, "Memory"), default 128 MiB.
    :param keep_samples: keep the members (:attr:`Prediction.samples`, ``outputs``, ``scales``): ``None`` (default)
        keeps them when they fit in ``max_memory``; ``True`` always (memory then grows with ``num_samples``);
        ``False`` never (only the summaries).
    :param draw_block: networks drawn from the guide per call; the draws, hence the result for a seed, depend on it
        (and on ``num_samples`` and ``parallel``) but on none of the memory options. Lower it only for networks so
        large that ``draw_block`` copies of their weights do not fit.
    :returns: a :class:`Prediction`.
    :raises TypeError: for an integer ``x`` on a float network (cast it: ``x.to(model.dtype)``).
    :raises ValueError: for an ``x`` without a batch dimension, or with NaN/inf.
    """
    check_int("num_samples", num_samples, 1)
    method = default_method(guide) if method is None else method
    check_choice("method", method, ("mc", "glm"))
    opts = _check_options(batch_size, sample_chunk, max_memory, keep_samples, draw_block)
    _check_inputs(x, model)
    check_guide(model, guide)
    if isinstance(guide, AutoGuide) and guide.prototype_trace is None:
        raise ValueError("guide is not initialized: fit it first (pp.fit) or call guide(x, y) once")
    if method == "glm":
        return _predict_glm(model, guide, x, batch_size, likelihood)
    opts["parallel"] = parallel if parallel is not None else isinstance(model, BayesianModel) and model.vectorizable
    opts["noise"] = _noise_scale(guide)
    ref = model_ref(model)
    if ref is not None:
        x = x.to(ref.device)
    lik = likelihood if likelihood is not None else getattr(model, "likelihood", None)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        return Prediction(**ensemble(model, guide, x, num_samples, lik, opts))
    finally:
        if was_training:
            model.train()


def _check_options(batch_size: Any, sample_chunk: Any, max_memory: Any, keep_samples: Any, draw_block: Any) -> dict:
    for name, value in (("batch_size", batch_size), ("sample_chunk", sample_chunk)):
        if value is not None:
            check_int(name, value, 1)
    if keep_samples is not None:
        check_bool("keep_samples", keep_samples)
    max_memory, draw_block = check_int("max_memory", max_memory, 1), check_int("draw_block", draw_block, 1)
    return {
        "batch_size": batch_size,
        "sample_chunk": sample_chunk,
        "max_memory": max_memory,
        "keep_samples": keep_samples,
        "draw_block": draw_block,
    }


def _takes_integer_inputs(model: Any) -> bool:
    """Whether the network may consume integer inputs (it contains an embedding)."""
    if not isinstance(model, BayesianModel):
        return True  # a hand-written model: its own business
    return any(isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) for m in model.net.modules())


def _check_inputs(x: Any, model: Any) -> None:
    """``x`` is a non-empty batch tensor without NaN or inf, of a dtype the network can take."""
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch, got shape {tuple(x.shape)}")
    tokens = _takes_integer_inputs(model)
    if isinstance(model, BayesianModel) and x.dim() == 1 and not tokens:
        raise ValueError(
            f"x must be a batch of inputs (B, features...), got a 1-D tensor of shape {tuple(x.shape)}: "
            "for one input use x.unsqueeze(0), for B scalar inputs x.unsqueeze(-1)"
        )
    if not (x.is_floating_point() or x.is_complex()) and not tokens:
        raise TypeError(
            f"x has dtype {x.dtype} but the network computes in {model.dtype}: cast the inputs, x = x.to({model.dtype})"
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")


def default_method(guide: Any) -> str:
    """The guide's ``default_predictive`` (``"glm"`` for a Laplace guide), else ``"mc"`` (sampled networks)."""
    return getattr(guide, "default_predictive", "mc")


def _noise_scale(guide: Any) -> Optional[torch.Tensor]:
    r"""The guide's own Gaussian noise :math:`\sigma` (a Laplace guide's ``sigma_noise``), or ``None``."""
    sigma = getattr(guide, "sigma_noise", None)
    return sigma if torch.is_tensor(sigma) else None


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
            members = (f.unsqueeze(0), probs.unsqueeze(0), None)
            return Prediction("classification", 1, probs, members=members, method="glm", output_cov=cov)
        loc, scale = lik.mean_scale(f)
        sigma = _noise_scale(guide)
        if sigma is not None:  # the noise tuned with the guide's evidence
            scale = sigma.to(loc).expand_as(loc)
        if loc.shape[-1] == 1:
            loc, scale = loc.squeeze(-1), scale.squeeze(-1)
        epistemic = cov.diagonal(dim1=-2, dim2=-1).reshape(loc.shape)
        members = (f.unsqueeze(0), loc.unsqueeze(0), scale.unsqueeze(0))
        return Prediction(
            "regression",
            1,
            loc,
            epistemic_var=epistemic,
            aleatoric_var=scale.square(),
            members=members,
            method="glm",
            output_cov=cov,
        )


def evaluate(
    model: Callable,
    guide: Optional[Callable],
    data: Batches,
    num_samples: int = 100,
    parallel: Optional[bool] = None,
    likelihood: Optional[Any] = None,
    method: Optional[Literal["mc", "glm"]] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Dict[str, float]:
    """Score the posterior-predictive ensemble on ``data``.

    Classification: ``accuracy``, ``nll``, ``ece`` (15 bins), ``brier`` of the averaged probabilities.
    Regression: ``rmse`` and the Gaussian ``nll`` of the moment-matched predictive
    :math:`\\mathcal N(\\bar\\mu, \\sigma^2_{epi} + \\sigma^2_{ale})`.

    :param data: a ``DataLoader`` of ``(x, y)`` batches or one ``(x, y)`` tuple.
    :param method: ``"mc"`` or ``"glm"``; default: ``"glm"`` for a Laplace guide, ``"mc"`` otherwise (see
        :func:`predict`).
    :param max_memory: the memory budget of each :func:`predict` call; the members are not kept (only summaries).
    :returns: a dict of floats.
    """
    check_int("num_samples", num_samples, 1)
    preds, ys = [], []
    for batch in as_batches(data):
        x, y = unpack_batch(batch, "data", None)
        kw = {"max_memory": max_memory, "keep_samples": False}
        preds.append(predict(model, guide, x, num_samples, parallel, likelihood=likelihood, method=method, **kw))
        ys.append(y)
    if not preds:
        raise ValueError("data yielded no batches")
    y = torch.cat(ys).to(preds[0].mean.device)
    if preds[0].task == "unknown":
        raise ValueError("the model has no likelihood to score its outputs with: pass likelihood=pp.Categorical(N) ...")
    if preds[0].task == "classification":
        probs = torch.cat([p.probs for p in preds])
        return _metrics.classification_metrics(probs, y.long())
    mean = torch.cat([p.mean for p in preds])
    std = torch.cat([p.std for p in preds])
    return _metrics.regression_metrics(mean, std, y.to(mean.dtype))
