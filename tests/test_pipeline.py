"""End to end on digits: pre-train, AutoSparseVD with the log-uniform prior, prune, score."""

import torch
import torch.nn as nn
import torch.nn.functional as F

import pyro_prune as pp
from pyro_prune import rules


def test_sparse_vd_digits_end_to_end_reaches_90_percent_sparsity_at_95_percent_accuracy():
    torch.manual_seed(0)
    split = pp.data.load_digits()
    train, test = split.loaders(batch_size=64, seed=0)
    net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(30):
        for xb, yb in train:
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
    model = pp.bayesianize(net, pp.LogUniform(), pp.Categorical(split.dataset_size))
    guide = pp.AutoSparseVD(model)  # starts at the pre-trained weights
    history = pp.fit(model, guide, train, epochs=60, lr=3e-3, kl_warmup=10, progress=False)
    assert history["beta"][-1] == 1.0
    result = pp.prune(model, guide, rules.LogAlpha(3.0))
    with torch.no_grad():
        acc = (result.module(split.x_test).argmax(-1) == split.y_test).float().mean().item()
    assert result.report.sparsity >= 0.90, str(result.report)
    assert acc >= 0.95, (acc, str(result.report))
    scores = pp.evaluate(model, result.guide, test, num_samples=50)
    assert scores["accuracy"] >= 0.95, scores
