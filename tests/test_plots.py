"""Smoke tests of pyro_prune.plots on small fitted models (Agg backend): every public function draws the expected
axes and artists, on a new figure or on a given ``ax``, and rejects empty input."""

import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune import rules

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def classifier():
    torch.manual_seed(0)
    x = torch.randn(40, 4)
    y = (x[:, 0] - x[:, 1] > 0).long()
    prior = lambda name, module, param: pp.LogUniform() if name.endswith("weight") else None  # noqa: E731
    model = pp.bayesianize(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), prior, pp.Categorical(40))
    guide = pp.AutoSparseVD(model)
    pp.fit(model, guide, (x, y), epochs=5, lr=1e-2, progress=False)
    return model, guide, x, y


@pytest.fixture
def group_classifier():
    torch.manual_seed(0)
    x = torch.randn(40, 5)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    model = pp.bayesianize(net, pp.GroupPrior("log-uniform"), pp.Categorical(40))
    guide = pp.AutoGroupSparse(model)
    pp.fit(model, guide, (x, y), epochs=5, lr=1e-2, progress=False)
    return model, guide


def test_log_alpha_histogram(classifier):
    model, guide, x, y = classifier
    log_alpha = guide.log_alpha()
    fig = pp.plots.log_alpha_histogram(log_alpha, threshold=2.0)
    (ax,) = fig.axes
    assert len(ax.patches) == len(log_alpha)  # one step histogram per layer
    assert len(ax.get_lines()) == 1 and ax.get_lines()[0].get_xdata()[0] == 2.0  # the threshold
    assert len(ax.get_legend().get_texts()) == len(log_alpha) + 1
    with pytest.raises(ValueError, match="empty"):
        pp.plots.log_alpha_histogram({})


def test_mask_images(classifier):
    model, guide, x, y = classifier
    masks = pp.prune(model, guide, rules.Sparsity(0.5)).masks
    fig = pp.plots.mask_images(masks)
    assert len(fig.axes) == len(masks) == 2
    for ax, mask in zip(fig.axes, masks.values()):
        (image,) = ax.get_images()
        assert image.get_array().shape == tuple(mask.shape)
    with pytest.raises(ValueError, match="empty"):
        pp.plots.mask_images({})


def test_reliability_diagram_on_a_given_ax(classifier):
    model, guide, x, y = classifier
    probs = pp.predict(model, guide, x, num_samples=4).probs
    fig0, ax0 = plt.subplots()
    fig = pp.plots.reliability_diagram(probs, y, n_bins=5, ax=ax0)
    assert fig is fig0 and fig.axes == [ax0]
    assert len(ax0.get_lines()) == 2 and len(ax0.collections) == 1  # diagonal + curve, one scatter


def test_predictive_band():
    torch.manual_seed(0)
    split = pp.data.load_gap_regression(n=20, n_test=15)
    model = pp.bayesianize(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)), dist.Normal(0.0, 1.0),
                           pp.Gaussian(20, scale=0.1))  # fmt: skip
    guide = AutoNormal(model, init_scale=0.05)
    pp.fit(model, guide, (split.x_train, split.y_train), epochs=5, lr=1e-2, progress=False)
    pred = pp.predict(model, guide, split.x_test, num_samples=4)
    fig = pp.plots.predictive_band(split.x_test, pred.mean, pred.std, split.x_train, split.y_train)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 1 and len(ax.get_lines()[0].get_xdata()) == 15  # the mean
    assert len(ax.collections) == 2  # the band and the training points


def test_kept_groups_and_group_log_alpha(group_classifier):
    model, guide = group_classifier
    res = pp.prune(model, guide, rules.GroupSparsity(0.5))
    fig = pp.plots.kept_groups(res.group_masks)
    (ax,) = fig.axes
    assert len(ax.patches) == 2 * len(res.group_masks) == 6  # total and kept bar per layer
    assert [t.get_text() for t in ax.texts] == [f"{int(g.sum())}/{g.numel()}" for g in res.group_masks.values()]
    scores = rules.group_log_alpha(pp.marginals(guide))
    fig = pp.plots.group_log_alpha(scores, threshold=0.0)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == len(scores) + 1  # one curve per layer and the threshold
    curves = {line.get_label(): len(line.get_ydata()) for line in ax.get_lines()}
    for name, la in scores.items():
        assert curves[f"{name} ({la.numel()} groups)"] == la.numel()
    with pytest.raises(ValueError, match="empty"):
        pp.plots.kept_groups({})
    with pytest.raises(ValueError, match="empty"):
        pp.plots.group_log_alpha({})
