"""Metrics: hand-computed values on three examples, cross-checks with sklearn/numpy/torch, bad input."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss, mean_squared_error, roc_auc_score

from pyro_prune import metrics as M
from tests.helpers import assert_close

# three examples, three classes: predictions 0, 1, 2; labels 0, 2, 2 -> the first and last are right
P = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
Y = torch.tensor([0, 2, 2])


def reference_ece(probs, y, n_bins=15):
    """The peers' reference loop, verbatim semantics (``../shared/bench/peers.py``)."""
    conf, pred = probs.max(-1)
    bins = torch.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.float().mean().item() * abs((pred[m] == y[m]).float().mean().item() - conf[m].mean().item())
    return ece


def test_accuracy_by_hand():
    assert M.accuracy(P, Y) == pytest.approx(2 / 3)
    assert M.accuracy(P, torch.tensor([0, 1, 2])) == 1.0
    assert M.accuracy(P, torch.tensor([1, 0, 0])) == 0.0


def test_nll_by_hand_and_against_sklearn():
    # -(ln 0.7 + ln 0.3 + ln 0.4) / 3 = (0.356675 + 1.203973 + 0.916291) / 3
    assert M.nll(P, Y) == pytest.approx(0.825646, abs=1e-6)
    assert M.nll(P, Y) == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.4)) / 3, rel=1e-6)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=50)
    y = rng.integers(0, 4, 50)
    assert M.nll(torch.tensor(p), torch.tensor(y)) == pytest.approx(log_loss(y, p, labels=[0, 1, 2, 3]), rel=1e-10)


def test_nll_clamps_at_eps():
    p, y = torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([1, 0])
    assert M.nll(p, y) == pytest.approx((-math.log(1e-12) - math.log(0.5)) / 2)
    assert M.nll(p, y, eps=1e-3) == pytest.approx((-math.log(1e-3) - math.log(0.5)) / 2)


def test_brier_by_hand():
    # (0.3² + 0.2² + 0.1²) + (0.1² + 0.6² + 0.7²) + (0.3² + 0.3² + 0.6²) = 0.14 + 0.86 + 0.54 = 1.54
    assert M.brier(P, Y) == pytest.approx(1.54 / 3)
    assert M.brier(torch.eye(3), torch.arange(3)) == 0.0


def test_ece_by_hand():
    # confidences 0.7 (right), 0.6 (wrong), 0.4 (right) fall in three different bins of width 1/15:
    # (1/3)|1 - 0.7| + (1/3)|0 - 0.6| + (1/3)|1 - 0.4| = (0.3 + 0.6 + 0.6) / 3 = 0.5
    assert M.ece(P, Y) == pytest.approx(0.5)
    # one bin: |accuracy - mean confidence| = |2/3 - 1.7/3| = 0.1
    assert M.ece(P, Y, n_bins=1) == pytest.approx(0.1)
    # two examples with confidence 0.5 in one bin, one right and one wrong: perfectly calibrated
    assert M.ece(torch.tensor([[0.5, 0.5], [0.5, 0.5]]), torch.tensor([0, 1])) == pytest.approx(0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ece_confidence_on_a_bin_edge(dtype):
    # 0.4 = 6/15 is the upper edge of bin (1/3, 0.4]; 0.45 lies in (0.4, 7/15]. Bins are (lo, hi], so:
    # (1/2)|1 - 0.4| + (1/2)|0 - 0.45| = 0.3 + 0.225 = 0.525 (merging the two bins would give 0.075)
    p = torch.tensor([[0.4, 0.3, 0.3], [0.45, 0.35, 0.2]], dtype=dtype)
    y = torch.tensor([0, 1])
    assert M.ece(p, y) == pytest.approx(0.525, abs=1e-6)
    assert M.ece(p, y) == pytest.approx(reference_ece(p, y), abs=1e-6)


@pytest.mark.parametrize("n_bins", [1, 10, 15, 20])
def test_ece_agrees_with_the_reference_loop(n_bins):
    g = torch.Generator().manual_seed(n_bins)
    probs = torch.softmax(3 * torch.randn(500, 10, generator=g), -1)
    # plus rows whose confidence is exactly k / n for many k, n (the bin edges of various bin counts)
    conf = torch.tensor([k / n for n in (5, 10, 15, 20) for k in range(1, n + 1) if k / n >= 0.5])
    edge_rows = torch.stack([conf, 1 - conf], -1)
    probs = torch.cat([probs, torch.nn.functional.pad(edge_rows, (0, 8))])
    y = torch.randint(0, 10, (len(probs),), generator=g)
    assert M.ece(probs, y, n_bins) == pytest.approx(reference_ece(probs, y, n_bins), abs=1e-6)


def test_binary_probabilities_are_expanded():
    p = torch.tensor([0.9, 0.2, 0.6])  # probability of class 1
    y = torch.tensor([1, 0, 0])
    two = torch.stack([1 - p, p], -1)
    assert M.accuracy(p, y) == pytest.approx(2 / 3)
    assert M.nll(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
    assert M.classification_metrics(p, y) == pytest.approx(M.classification_metrics(two, y))
    # two columns count the squared error twice: 2 * sklearn's one-column Brier score
    assert M.brier(p, y) == pytest.approx(2 * brier_score_loss(y.numpy(), p.numpy()), rel=1e-6)


def test_regression_by_hand():
    mean, std, y = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.0, 1.0, 2.0])
    # errors 1, 0, -1 -> RMSE = sqrt(2/3)
    assert M.rmse(mean, y) == pytest.approx(math.sqrt(2 / 3))
    # 0.5 ln 2π = 0.918939; terms: 0.918939 + 0 + 0.5, 0.918939 + ln 2 + 0, 0.918939 + ln 0.5 + 2
    expected = (3 * 0.5 * math.log(2 * math.pi) + 0.5 + math.log(2) + math.log(0.5) + 2) / 3
    assert M.gaussian_nll(mean, std, y) == pytest.approx(expected)
    assert M.gaussian_nll(mean, std, y) == pytest.approx((0.918939 * 3 + 2.5) / 3, abs=1e-6)
    assert M.regression_metrics(mean, std, y) == pytest.approx({"rmse": math.sqrt(2 / 3), "nll": expected})


def test_regression_against_torch_and_sklearn():
    g = torch.Generator().manual_seed(0)
    mean, y = torch.randn(40, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64)
    std = torch.rand(40, generator=g, dtype=torch.float64) + 0.1
    expected = -torch.distributions.Normal(mean, std).log_prob(y).mean()
    assert M.gaussian_nll(mean, std, y) == pytest.approx(float(expected), rel=1e-12)
    assert M.rmse(mean, y) == pytest.approx(math.sqrt(mean_squared_error(y.numpy(), mean.numpy())), rel=1e-12)


def test_auroc_by_hand():
    # pairs (pos, neg): 0.9 beats 0.4, 0.1, 0.3 (3); 0.4 ties 0.4 (1/2), beats 0.1 and 0.3 (2) -> 5.5 / 6
    assert M.auroc(torch.tensor([0.9, 0.4]), torch.tensor([0.4, 0.1, 0.3])) == pytest.approx(5.5 / 6)
    assert M.auroc(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0
    assert M.auroc(torch.tensor([1.0]), torch.tensor([2.0])) == 0.0
    assert M.auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 50).astype(float), rng.integers(0, 4, 40).astype(float)
    expected = roc_auc_score(np.r_[np.ones(50), np.zeros(40)], np.r_[pos, neg])
    assert M.auroc(torch.tensor(pos), torch.tensor(neg)) == pytest.approx(expected, abs=1e-12)
    cont_pos, cont_neg = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[cont_pos, cont_neg])
    assert M.auroc(torch.tensor(cont_pos, dtype=torch.float32), cont_neg) == pytest.approx(expected, abs=1e-6)


def test_ood_auroc_direction():
    scores_in, scores_out = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.25, 0.9])
    # out 0.25 beats 0.1, 0.2 (2 of 3); out 0.9 beats all 3 -> 5 / 6
    assert M.ood_auroc(scores_in, scores_out) == pytest.approx(5 / 6)
    assert M.ood_auroc(scores_in, scores_out) == pytest.approx(M.auroc(scores_out, scores_in))
    assert M.ood_auroc(scores_out, scores_in) == pytest.approx(1 / 6)


def test_dicts_numpy_input_and_dtypes():
    out = M.classification_metrics(P, Y)
    assert set(out) == {"accuracy", "nll", "ece", "brier"} and all(type(v) is float for v in out.values())
    assert out == pytest.approx({"accuracy": 2 / 3, "nll": M.nll(P, Y), "ece": 0.5, "brier": 1.54 / 3})
    assert M.classification_metrics(P.numpy(), Y.numpy()) == pytest.approx(out)
    assert M.classification_metrics(P.double(), Y.float()) == pytest.approx(out, rel=1e-6)
    assert M.classification_metrics(P.requires_grad_(), Y) == pytest.approx(out)
    assert set(M.regression_metrics(torch.zeros(2), torch.ones(2), torch.ones(2))) == {"rmse", "nll"}


def test_float32_softmax_rows_are_accepted():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(10 * torch.randn(1000, 10, generator=g), -1)
    y = torch.randint(0, 10, (1000,), generator=g)
    assert_close(M.brier(probs, y), M.brier(probs.double(), y), rtol=1e-6)
    # half precision rounds each of the 10 entries: the row-sum tolerance grows to 10 * eps (0.078 for bfloat16)
    assert M.brier(probs.bfloat16(), y) == pytest.approx(M.brier(probs, y), abs=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs():
    out = M.classification_metrics(P.cuda(), Y)  # labels on another device are moved
    assert out == pytest.approx(M.classification_metrics(P, Y))
    assert M.auroc(torch.tensor([0.9, 0.4]).cuda(), torch.tensor([0.4, 0.1, 0.3]).cuda()) == pytest.approx(5.5 / 6)


@pytest.mark.parametrize(
    "probs,y,match",
    [
        (P, torch.tensor([0, 1]), "probs has 3 rows but y has 2"),
        (P[None], Y, r"probs must have shape \(N, C\)"),
        (P, torch.tensor([[0], [1], [2]]), r"y must have shape \(N,\)"),
        (torch.tensor([[0.5, 0.6], [0.5, 0.5], [1.0, 0.0]]), torch.tensor([0, 1, 1]), "probs must sum to 1"),
        (torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]), "probs contains NaN"),
        (torch.tensor([[float("inf"), 1.0]]), torch.tensor([0]), "probs contains NaN or inf"),
        (P, torch.tensor([0.0, float("nan"), 1.0]), "y contains NaN"),
        (P, torch.tensor([0, 3, 1]), "y has labels outside"),
        (P, torch.tensor([0, -1, 1]), "y has labels outside"),
        (P, torch.tensor([0.0, 0.5, 1.0]), "y must hold integer"),
        (torch.tensor([[1.5, -0.5]]), torch.tensor([0]), r"probs must lie in \[0, 1\]"),
        (torch.tensor([1.5, 0.5]), torch.tensor([0, 1]), r"probs must lie in \[0, 1\]"),
        (torch.tensor([[1, 0]]), torch.tensor([0]), "probs must have a floating-point dtype"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "empty"),
    ],
)
@pytest.mark.parametrize("fn", [M.accuracy, M.nll, M.ece, M.brier, M.classification_metrics])
def test_bad_classification_input(fn, probs, y, match):
    with pytest.raises(ValueError, match=match):
        fn(probs, y)


@pytest.mark.parametrize(
    "n_bins,error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("15", TypeError)]
)
def test_bad_n_bins(n_bins, error):
    with pytest.raises(error, match="n_bins"):
        M.ece(P, Y, n_bins=n_bins)
    with pytest.raises(error, match="n_bins"):
        M.classification_metrics(P, Y, n_bins=n_bins)


def test_bad_eps():
    for eps in (0.0, -1e-3, 1.0):
        with pytest.raises(ValueError, match="eps"):
            M.nll(P, Y, eps=eps)
    with pytest.raises(TypeError, match="eps"):
        M.nll(P, Y, eps="1e-3")


def test_bad_regression_input():
    z2, z3 = torch.zeros(2), torch.zeros(3)
    with pytest.raises(ValueError, match="std must be positive"):
        M.gaussian_nll(z2, torch.tensor([1.0, 0.0]), z2)
    with pytest.raises(ValueError, match="std must be positive"):
        M.regression_metrics(z2, torch.tensor([1.0, -1.0]), z2)
    with pytest.raises(ValueError, match=r"std \(3,\) and y \(2,\)"):
        M.gaussian_nll(z2, torch.ones(3), z2)
    with pytest.raises(ValueError, match=r"mean \(2,\) and y \(3,\) must have the same shape"):
        M.rmse(z2, z3)
    with pytest.raises(ValueError, match="same shape"):  # (N, 1) against (N,) is not broadcast
        M.rmse(torch.zeros(3, 1), z3)
    with pytest.raises(ValueError, match="mean contains NaN"):
        M.rmse(torch.tensor([float("nan")]), torch.zeros(1))
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        M.rmse(torch.zeros(1), torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="std contains NaN"):
        M.gaussian_nll(z2, torch.tensor([1.0, float("nan")]), z2)
    with pytest.raises(ValueError, match="empty"):
        M.rmse(torch.zeros(0), torch.zeros(0))


def test_bad_auroc_input():
    with pytest.raises(ValueError, match="scores_pos must be non-empty"):
        M.auroc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="scores_neg must be non-empty"):
        M.auroc(torch.tensor([1.0]), torch.tensor([]))
    with pytest.raises(ValueError, match="scores_neg contains NaN"):
        M.auroc(torch.tensor([1.0]), torch.tensor([float("nan")]))
    # ood_auroc: the in-distribution scores are the negatives
    with pytest.raises(ValueError, match="scores_neg must be non-empty"):
        M.ood_auroc(torch.tensor([]), torch.tensor([1.0]))


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: M.accuracy([[1.0, 0.0]], torch.tensor([0])), "probs"),
        (lambda: M.nll(torch.tensor([[1.0, 0.0]]), [0]), "y"),
        (lambda: M.ece(0.5, torch.tensor([0])), "probs"),
        (lambda: M.brier(torch.tensor([[1.0, 0.0]]), (0,)), "y"),
        (lambda: M.rmse([0.0], torch.zeros(1)), "mean"),
        (lambda: M.gaussian_nll(torch.zeros(1), 1.0, torch.zeros(1)), "std"),
        (lambda: M.auroc([1.0], torch.zeros(1)), "scores_pos"),
        (lambda: M.ood_auroc(torch.zeros(1), [1.0]), "scores_pos"),
    ],
)
def test_non_tensor_input_is_a_type_error(call, name):
    with pytest.raises(TypeError, match=f"{name} must be a torch.Tensor or numpy.ndarray"):
        call()
