r"""Predictive scores: accuracy, NLL, ECE and Brier score of class probabilities; RMSE and Gaussian NLL of a
predictive mean and standard deviation; AUROC for out-of-distribution detection.

Every function takes :class:`torch.Tensor` arguments (a :class:`numpy.ndarray` is converted with
:func:`torch.from_numpy`; anything else raises :class:`TypeError`) on any device and in any floating dtype, and
returns a Python ``float``. Sums are taken in ``float64``. Invalid input raises :class:`ValueError` whose message
names the offending argument.

Classification functions take ``probs`` of shape ``(N, C)`` (rows are class probabilities) or ``(N,)`` (the
probability of class 1 in a binary problem, expanded to ``(N, 2)`` as :math:`[1 - p, p]`), and integer labels
``y`` of shape ``(N,)`` in :math:`\{0, \dots, C - 1\}`.

References

[1] Chuan Guo, Geoff Pleiss, Yu Sun, Kilian Q. Weinberger. "On Calibration of Modern Neural Networks", ICML 2017
    (expected calibration error with equal-width confidence bins).
[2] Glenn W. Brier. "Verification of forecasts expressed in terms of probability", Monthly Weather Review 78(1),
    1950.
[3] Henry B. Mann, Donald R. Whitney. "On a test of whether one of two random variables is stochastically larger
    than the other", Annals of Mathematical Statistics 18(1), 1947 (the AUROC as a rank statistic).
[4] Dan Hendrycks, Kevin Gimpel. "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in
    Neural Networks", ICLR 2017 (AUROC of an uncertainty score for OOD detection).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from ._checks import check_fraction, check_int

__all__ = [
    "accuracy",
    "nll",
    "ece",
    "brier",
    "rmse",
    "gaussian_nll",
    "auroc",
    "ood_auroc",
    "classification_metrics",
    "regression_metrics",
]

#: What the functions accept: a tensor, or a numpy array (converted without copying).
TensorLike = Union[torch.Tensor, np.ndarray]

#: Largest allowed :math:`|\sum_k p_{nk} - 1|` of a row of ``probs`` (for ``float16``/``bfloat16`` inputs it grows to
#: :math:`C` times the dtype's machine epsilon where that is larger).
SUM_TOLERANCE = 1e-3


def _tensor(name: str, value: TensorLike) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    return value.detach()


def _check_finite(name: str, t: torch.Tensor) -> None:
    if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _check_probs_labels(probs: TensorLike, y: TensorLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(probs, y)``; returns ``probs`` as ``(N, C)`` in its own floating dtype and ``y`` as int64."""
    probs, y = _tensor("probs", probs), _tensor("y", y)
    if not probs.is_floating_point():
        raise ValueError(f"probs must have a floating-point dtype, got {probs.dtype}")
    _check_finite("probs", probs)
    if probs.dim() == 1:  # binary: the probability of class 1
        probs = torch.stack([1 - probs, probs], -1)
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, C) or (N,), got {tuple(probs.shape)}")
    if y.dim() != 1:
        raise ValueError(f"y must have shape (N,), got {tuple(y.shape)}")
    if probs.shape[0] != y.shape[0]:
        raise ValueError(f"probs has {probs.shape[0]} rows but y has {y.shape[0]} labels")
    if probs.shape[0] == 0:
        raise ValueError("probs and y are empty")
    if bool(((probs < 0) | (probs > 1)).any()):
        raise ValueError("probs must lie in [0, 1]")
    # 1e-3, or more for half precision: C roundings of relative size eps each
    tolerance = max(SUM_TOLERANCE, probs.shape[1] * torch.finfo(probs.dtype).eps)
    if bool(((probs.double().sum(-1) - 1).abs() > tolerance).any()):
        raise ValueError(f"every row of probs must sum to 1 (within {tolerance:.3g})")
    if y.is_complex():
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    _check_finite("y", y)
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise ValueError("y must hold integer class labels, got non-integer values")
    y = y.long().to(probs.device)
    if bool(((y < 0) | (y >= probs.shape[1])).any()):
        raise ValueError(f"y has labels outside [0, {probs.shape[1]}) (probs has {probs.shape[1]} classes)")
    return probs, y


def accuracy(probs: TensorLike, y: TensorLike) -> float:
    r"""Fraction of examples whose most probable class is the label,

    .. math::

        \mathrm{acc} = \frac1N \sum_{n=1}^N \big[\arg\max_k p_{nk} = y_n\big] ,

    where ties in the arg max go to the lowest class index.

    :param probs: class probabilities, shape ``(N, C)``, or ``(N,)`` for the probability of class 1.
    :param y: integer labels, shape ``(N,)``.
    :returns: the accuracy in :math:`[0, 1]`.
    :raises ValueError: on mismatched lengths, wrong shapes, NaN/inf, rows not summing to 1, labels out of range.
    :raises TypeError: if an argument is neither a tensor nor a numpy array.
    """
    probs, y = _check_probs_labels(probs, y)
    return float((probs.argmax(-1) == y).double().mean())


def nll(probs: TensorLike, y: TensorLike, eps: float = 1e-12) -> float:
    r"""Mean negative log probability of the labels (the log loss),

    .. math::

        \mathrm{NLL} = -\frac1N \sum_{n=1}^N \log \max(p_{n y_n}, \epsilon) .

    :param probs: class probabilities, shape ``(N, C)``, or ``(N,)`` for the probability of class 1.
    :param y: integer labels, shape ``(N,)``.
    :param eps: lower clamp of :math:`p_{n y_n}`, in :math:`(0, 1)`; keeps the score finite when a label gets
        probability 0.
    :returns: the NLL in nats, :math:`\ge 0`.
    :raises TypeError: if ``eps`` is not a number.
    :raises ValueError: as :func:`accuracy`, or if ``eps`` is not in :math:`(0, 1)`.
    """
    check_fraction("eps", eps)
    probs, y = _check_probs_labels(probs, y)
    return float(-probs.double().gather(-1, y[:, None]).clamp_min(eps).log().mean())


def ece(probs: TensorLike, y: TensorLike, n_bins: int = 15) -> float:
    r"""Expected calibration error [1] with ``n_bins`` equal-width confidence bins.

    With confidence :math:`c_n = \max_k p_{nk}`, prediction :math:`\hat y_n = \arg\max_k p_{nk}` and bins
    :math:`B_b = \{n : e_{b-1} < c_n \le e_b\}` for edges :math:`e_b = b / B`, :math:`b = 0, \dots, B`,

    .. math::

        \mathrm{ECE} = \sum_{b=1}^{B} \frac{|B_b|}{N}\,
            \Big|\frac{1}{|B_b|}\sum_{n\in B_b} [\hat y_n = y_n] - \frac{1}{|B_b|}\sum_{n\in B_b} c_n\Big| ,

    empty bins contributing nothing. The edges are ``torch.linspace(0, 1, n_bins + 1)`` (in the default dtype)
    compared with the confidences in their own dtype, exactly as the reference loop
    ``for lo, hi in zip(edges[:-1], edges[1:]): m = (conf > lo) & (conf <= hi); ...`` does, so a confidence that
    lies on an edge (``float32`` 0.4 with 15 bins, say) falls in the same bin; the sums are then taken in
    ``float64``.

    :param probs: class probabilities, shape ``(N, C)``, or ``(N,)`` for the probability of class 1.
    :param y: integer labels, shape ``(N,)``.
    :param n_bins: number of bins :math:`B \ge 1`.
    :returns: the ECE in :math:`[0, 1]`.
    :raises TypeError: if ``n_bins`` is not an int.
    :raises ValueError: as :func:`accuracy`, or if ``n_bins`` is not :math:`\ge 1`.
    """
    check_int("n_bins", n_bins, 1)
    probs, y = _check_probs_labels(probs, y)
    conf, pred = probs.max(-1).values, probs.argmax(-1)
    edges = torch.linspace(0, 1, n_bins + 1).to(device=conf.device, dtype=conf.dtype)
    # bucketize (right=False) gives i with edges[i-1] < conf <= edges[i]: bin i - 1 of (lo, hi]
    index = torch.bucketize(conf, edges) - 1
    inside = (index >= 0) & (index < n_bins)
    index = index[inside]
    count = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(
        0, index, torch.ones_like(index, dtype=torch.float64)
    )
    sum_correct = torch.zeros_like(count).index_add_(0, index, (pred == y)[inside].double())
    sum_conf = torch.zeros_like(count).index_add_(0, index, conf[inside].double())
    # n_b / N * |acc_b - conf_b| = |sum_correct_b - sum_conf_b| / N
    return float((sum_correct - sum_conf).abs().sum() / conf.shape[0])


def brier(probs: TensorLike, y: TensorLike) -> float:
    r"""Multi-class Brier score [2], summed over classes and averaged over examples,

    .. math::

        \mathrm{BS} = \frac1N \sum_{n=1}^N \sum_{k=1}^C \big(p_{nk} - [k = y_n]\big)^2 \in [0, 2] .

    A binary ``(N,)`` input is expanded to two columns first, so it scores twice the one-column
    :math:`\frac1N\sum_n (p_n - y_n)^2` of :func:`sklearn.metrics.brier_score_loss`.

    :param probs: class probabilities, shape ``(N, C)``, or ``(N,)`` for the probability of class 1.
    :param y: integer labels, shape ``(N,)``.
    :returns: the Brier score.
    :raises ValueError: as :func:`accuracy`.
    """
    probs, y = _check_probs_labels(probs, y)
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    return float((probs.double() - onehot).pow(2).sum(-1).mean())


def _check_regression(
    mean: TensorLike, y: TensorLike, std: Optional[TensorLike] = None
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    mean, y = _tensor("mean", mean), _tensor("y", y)
    if mean.shape != y.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and y {tuple(y.shape)} must have the same shape")
    if mean.numel() == 0:
        raise ValueError("mean and y are empty")
    _check_finite("mean", mean)
    _check_finite("y", y)
    mean, y = mean.double(), y.double().to(mean.device)
    if std is not None:
        std = _tensor("std", std)
        if std.shape != y.shape:
            raise ValueError(f"std {tuple(std.shape)} and y {tuple(y.shape)} must have the same shape")
        _check_finite("std", std)
        std = std.double().to(mean.device)
        if bool((std <= 0).any()):
            raise ValueError("std must be positive everywhere")
    return mean, y, std


def rmse(mean: TensorLike, y: TensorLike) -> float:
    r"""Root mean squared error of a point prediction,

    .. math::

        \mathrm{RMSE} = \sqrt{\frac1N \sum_{n=1}^N (\mu_n - y_n)^2} ,

    the mean running over all entries (any shape; ``mean`` and ``y`` must have the same shape, so an ``(N, 1)``
    prediction against ``(N,)`` targets is an error rather than a silent broadcast).

    :param mean: predictions, e.g. shape ``(N,)``.
    :param y: targets, the same shape.
    :returns: the RMSE.
    :raises ValueError: on shape mismatch, empty input or NaN/inf.
    """
    mean, y, _ = _check_regression(mean, y)
    return float((mean - y).pow(2).mean().sqrt())


def gaussian_nll(mean: TensorLike, std: TensorLike, y: TensorLike) -> float:
    r"""Mean negative log density of the targets under independent Gaussians :math:`\mathcal N(\mu_n, \sigma_n^2)`,

    .. math::

        \mathrm{NLL} = \frac1N \sum_{n=1}^N \Big[\tfrac12 \log(2\pi) + \log\sigma_n
            + \frac{(y_n - \mu_n)^2}{2\sigma_n^2}\Big] ,

    with the constant :math:`\tfrac12\log 2\pi` included (unlike :func:`torch.nn.functional.gaussian_nll_loss`'s
    default).

    :param mean: predictive means, e.g. shape ``(N,)``.
    :param std: predictive standard deviations :math:`\sigma_n > 0`, the same shape.
    :param y: targets, the same shape.
    :returns: the NLL in nats (can be negative).
    :raises ValueError: on shape mismatch, empty input, NaN/inf, or a non-positive ``std``.
    """
    mean, y, std = _check_regression(mean, y, std)
    return float((0.5 * math.log(2 * math.pi) + std.log() + 0.5 * ((y - mean) / std).pow(2)).mean())


def auroc(scores_pos: TensorLike, scores_neg: TensorLike) -> float:
    r"""Area under the ROC curve of separating positives from negatives by a higher score, computed as the
    Mann–Whitney statistic [3] with ties counted one half,

    .. math::

        \mathrm{AUROC} = \frac{1}{n_+ n_-} \sum_{i=1}^{n_+} \sum_{j=1}^{n_-}
            \Big([s^+_i > s^-_j] + \tfrac12 [s^+_i = s^-_j]\Big) ,

    which equals :func:`sklearn.metrics.roc_auc_score` with labels 1 for the positives. It costs
    :math:`O((n_+ + n_-)\log n_-)` time and linear memory (a sorted search, not the pairwise matrix).

    :param scores_pos: scores of the positives, any shape (flattened), at least one entry.
    :param scores_neg: scores of the negatives, any shape (flattened), at least one entry.
    :returns: the AUROC in :math:`[0, 1]`; 0.5 is chance.
    :raises ValueError: if either is empty or holds NaN/inf.
    """
    pos = _tensor("scores_pos", scores_pos).flatten()
    neg = _tensor("scores_neg", scores_neg).flatten()
    for name, t in (("scores_pos", pos), ("scores_neg", neg)):
        if t.numel() == 0:
            raise ValueError(f"{name} must be non-empty")
        _check_finite(name, t)
    pos, neg = pos.double(), neg.double().to(pos.device)
    neg_sorted = neg.sort().values
    below = torch.searchsorted(neg_sorted, pos, right=False).double()  # #{j : s_j^- < s_i^+}
    at_or_below = torch.searchsorted(neg_sorted, pos, right=True).double()  # #{j : s_j^- <= s_i^+}
    return float((below + at_or_below).sum() / (2.0 * pos.numel() * neg.numel()))


def ood_auroc(scores_in: TensorLike, scores_out: TensorLike) -> float:
    r"""AUROC of detecting out-of-distribution inputs by a *higher* uncertainty score [4] (e.g. the predictive
    entropy :math:`-\sum_k \bar p_k \log \bar p_k`, or the predictive standard deviation),

    .. math::

        \mathrm{AUROC}_{\mathrm{OOD}} = \Pr(s_{\mathrm{out}} > s_{\mathrm{in}})
            + \tfrac12 \Pr(s_{\mathrm{out}} = s_{\mathrm{in}}) ,

    i.e. ``auroc(scores_out, scores_in)``. 1 means every OOD input is more uncertain than every in-distribution
    one; 0.5 is chance.

    :param scores_in: uncertainty scores of in-distribution inputs, any shape (flattened).
    :param scores_out: uncertainty scores of out-of-distribution inputs, any shape (flattened).
    :returns: the AUROC in :math:`[0, 1]`.
    :raises ValueError: as :func:`auroc`.
    """
    return auroc(scores_out, scores_in)


def classification_metrics(probs: TensorLike, y: TensorLike, n_bins: int = 15) -> Dict[str, float]:
    r"""All classification scores at once.

    :param probs: class probabilities, shape ``(N, C)``, or ``(N,)`` for the probability of class 1.
    :param y: integer labels, shape ``(N,)``.
    :param n_bins: number of ECE bins.
    :returns: ``{"accuracy": ..., "nll": ..., "ece": ..., "brier": ...}`` (see :func:`accuracy`, :func:`nll`,
        :func:`ece`, :func:`brier`).
    :raises ValueError: as the individual functions.
    """
    return {
        "accuracy": accuracy(probs, y),
        "nll": nll(probs, y),
        "ece": ece(probs, y, n_bins),
        "brier": brier(probs, y),
    }


def regression_metrics(mean: TensorLike, std: TensorLike, y: TensorLike) -> Dict[str, float]:
    r"""All regression scores of a Gaussian predictive distribution at once.

    :param mean: predictive means, e.g. shape ``(N,)``.
    :param std: predictive standard deviations, the same shape.
    :param y: targets, the same shape.
    :returns: ``{"rmse": ..., "nll": ...}`` (see :func:`rmse`, :func:`gaussian_nll`).
    :raises ValueError: as the individual functions.
    """
    return {"rmse": rmse(mean, y), "nll": gaussian_nll(mean, std, y)}
