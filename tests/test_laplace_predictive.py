"""The right predictive by default (issue 14, point 4): for a Laplace guide ``pp.predict`` and ``pp.evaluate`` use the
linearized (GLM) predictive unless ``method="mc"`` is asked for; sampling networks from a Laplace posterior warns
once per guide; other guides keep sampled networks and never warn."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune.guides.laplace.guide import LaplaceSamplingWarning

D = torch.float64


def classifier(n=30):
    torch.manual_seed(0)
    x = torch.randn(n, 4, dtype=D)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)
    model = pp.bayesianize(net, dist.Normal(torch.tensor(0.0, dtype=D), 1.0), pp.Categorical(n))
    return model, x, y


def regression():
    torch.manual_seed(0)
    x = torch.randn(30, 2, dtype=D)
    y = x[:, 0] - x[:, 1] ** 2
    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(D)
    return pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Gaussian(30, scale=0.3)), x, y


def sampling_warnings(record):
    return [w for w in record if issubclass(w.category, LaplaceSamplingWarning)]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_default_is_the_glm_predictive_bit_for_bit(task):
    model, x, y = classifier() if task == "classification" else regression()
    g = pp.laplace_guide(model, (x, y), "kron", prior_precision=2.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        default = pp.predict(model, g, x)
        scores = pp.evaluate(model, g, (x, y))
    assert not sampling_warnings(record)  # no network was sampled
    glm = pp.predict(model, g, x, method="glm")
    assert default.method == "glm" and default.num_samples == 1
    assert torch.equal(default.mean, glm.mean) and torch.equal(default.output_cov, glm.output_cov)
    if task == "regression":
        assert torch.equal(default.std, glm.std)
    assert scores == pp.evaluate(model, g, (x, y), method="glm")
    pyro.set_rng_seed(0)
    with pytest.warns(LaplaceSamplingWarning):
        mc = pp.predict(model, g, x, num_samples=20, method="mc")
    assert mc.method == "mc" and mc.samples.shape[0] == 20
    assert not torch.equal(mc.mean, glm.mean)


def test_sampling_warns_once_per_guide_with_the_reason():
    model, x, y = classifier()
    g = pp.laplace_guide(model, (x, y), "diag", prior_precision=2.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pp.predict(model, g, x, num_samples=5, method="mc")
        pp.predict(model, g, x, num_samples=40, method="mc", draw_block=8)  # several draws: still silent
        pp.evaluate(model, g, (x, y), num_samples=5, method="mc")
        pyro.infer.Predictive(g, num_samples=3, parallel=True)(x)
    found = sampling_warnings(record)
    assert len(found) == 1
    message = str(found[0].message)
    assert "linearized" in message and "20.5" in message and "method='mc'" in message
    # the state is on the guide: another guide warns again, and so does raw Predictive on a fresh one
    g2 = pp.laplace_guide(model, (x, y), "diag", prior_precision=2.0)
    with pytest.warns(LaplaceSamplingWarning):
        pyro.infer.Predictive(g2, num_samples=3, parallel=True)(x)
    # sampling networks from a pruned Laplace posterior is sampling from it too
    g3 = pp.laplace_guide(model, (x, y), "kron", prior_precision=2.0)
    pruned = pp.prune(model, g3, rule=pp.rules.Sparsity(0.3)).guide
    with pytest.warns(LaplaceSamplingWarning):
        assert pp.predict(model, pruned, x, num_samples=4).method == "mc"


def test_no_warning_and_mc_default_for_other_guides():
    model, x, y = classifier()
    guide = AutoNormal(model, init_scale=0.1)
    guide(x, y)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        p = pp.predict(model, guide, x, num_samples=6)
        pp.evaluate(model, guide, (x, y), num_samples=6)
    assert not sampling_warnings(record)
    assert p.method == "mc" and p.samples.shape[0] == 6
    with pytest.raises(ValueError, match="glm"):
        pp.predict(model, guide, x, method="glm")
