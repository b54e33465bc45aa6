"""Metrics against hand-computed values and sklearn; bad input."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from pyro_prune import metrics as M

P = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
Y = torch.tensor([0, 2, 2])


def test_accuracy_nll_brier_by_hand():
    assert M.accuracy(P, Y) == pytest.approx(2 / 3)
    assert M.nll(P, Y) == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.4)) / 3)
    brier = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.6**2 + 0.7**2) + (0.3**2 + 0.3**2 + 0.6**2)) / 3
    assert M.brier(P, Y) == pytest.approx(brier)
    assert M.nll(P, Y) == pytest.approx(log_loss(Y.numpy(), P.numpy(), labels=[0, 1, 2]), rel=1e-6)


def test_ece_by_hand():
    # confidences 0.7 (correct), 0.6 (wrong), 0.4 (correct) fall in three different bins of width 1/15
    expected = (abs(1 - 0.7) + abs(0 - 0.6) + abs(1 - 0.4)) / 3
    assert M.ece(P, Y) == pytest.approx(expected)
    # with one bin: |acc - mean conf|
    assert M.ece(P, Y, n_bins=1) == pytest.approx(abs(2 / 3 - (0.7 + 0.6 + 0.4) / 3))


def test_binary_probabilities_are_expanded():
    p = torch.tensor([0.9, 0.2, 0.6])
    y = torch.tensor([1, 0, 0])
    assert M.accuracy(p, y) == pytest.approx(2 / 3)
    assert M.nll(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)


def test_regression_metrics_by_hand():
    mean, std, y = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])
    assert M.rmse(mean, y) == pytest.approx(math.sqrt(0.5))
    nll = (0.5 * math.log(2 * math.pi) + 0.5) + (0.5 * math.log(2 * math.pi) + math.log(2.0))
    assert M.gaussian_nll(mean, std, y) == pytest.approx(nll / 2)
    assert M.regression_metrics(mean, std, y) == pytest.approx({"rmse": math.sqrt(0.5), "nll": nll / 2})


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 50).astype(float), rng.integers(0, 4, 40).astype(float)
    expected = roc_auc_score(np.r_[np.ones(50), np.zeros(40)], np.r_[pos, neg])
    assert M.auroc(torch.tensor(pos), torch.tensor(neg)) == pytest.approx(expected)
    assert M.ood_auroc(torch.tensor(neg), torch.tensor(pos)) == pytest.approx(expected)
    assert M.auroc(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0
    assert M.auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5


def test_numpy_input_and_dict():
    out = M.classification_metrics(P.numpy(), Y.numpy())
    assert set(out) == {"accuracy", "nll", "ece", "brier"}


@pytest.mark.parametrize(
    "probs,y,match",
    [
        (P, torch.tensor([0, 1]), "rows"),
        (P[None], Y, "shape"),
        (torch.tensor([[0.5, 0.6], [0.5, 0.5], [1.0, 0.0]]), torch.tensor([0, 1, 1]), "sum to 1"),
        (torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]), "NaN"),
        (P, torch.tensor([0, 3, 1]), "outside"),
        (P, torch.tensor([[0], [1], [2]]), "shape"),
        (torch.tensor([[1.5, -0.5]]), torch.tensor([0]), r"\[0, 1\]"),
    ],
)
def test_bad_classification_input(probs, y, match):
    with pytest.raises(ValueError, match=match):
        M.classification_metrics(probs, y)


def test_bad_other_input():
    with pytest.raises(ValueError, match="n_bins"):
        M.ece(P, Y, n_bins=0)
    with pytest.raises(TypeError, match="probs"):
        M.accuracy([[1.0, 0.0]], Y)
    with pytest.raises(ValueError, match="std"):
        M.gaussian_nll(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        M.rmse(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        M.rmse(torch.tensor([float("nan")]), torch.zeros(1))
    with pytest.raises(ValueError, match="non-empty"):
        M.auroc(torch.tensor([]), torch.tensor([1.0]))
