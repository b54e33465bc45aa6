"""The marginals registry (pyro_prune.marginals): a guide known to no other module prunes through ``pp.prune`` once
its reader is registered; MRO lookup, errors, and ``Marginal``'s filled-in log alpha."""

import math
from typing import Dict, Tuple

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from pyro_prune import rules
from pyro_prune.marginals import Marginal, marginals, register_marginals
from tests.helpers import assert_close


class ToyGuide:
    """A hand-made mean-field posterior, defined only here: per-site ``(loc, scale)`` tensors, no AutoGuide."""

    def __init__(self, moments: Dict[str, Tuple[torch.Tensor, torch.Tensor]]):
        self.moments = moments

    def __call__(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        return {
            name: pyro.sample(name, dist.Normal(loc, scale).to_event(loc.dim()))
            for name, (loc, scale) in self.moments.items()
        }


# the only thing the toy guide does to plug into pyro_prune
@register_marginals(ToyGuide)
def _toy_marginals(guide: ToyGuide) -> Dict[str, Marginal]:
    return {name: Marginal(loc.clone(), scale.clone()) for name, (loc, scale) in guide.moments.items()}


def _toy(weights: Dict[str, torch.Tensor], scale: float = 0.5):
    """A model and a toy guide whose weight means are ``weights`` (biases 1, small scale)."""
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(10))
    moments = {}
    for name, info in model.sites.items():
        loc = weights[name] if name in weights else torch.ones(info.shape)
        moments[name] = (loc, torch.full(info.shape, scale))
    return model, ToyGuide(moments)


def _separated(shape, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Means far from zero where ``keep`` (|mu| / sigma >= 10), near zero elsewhere (|mu| / sigma <= 0.02)."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(shape, generator=g) < 0.5
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    loc = torch.where(keep, 5 + torch.rand(shape, generator=g), 0.01 * torch.rand(shape, generator=g)) * sign
    return loc, keep


@pytest.mark.parametrize("rule", [rules.LogAlpha(3.0), rules.SNR(1.0)], ids=["LogAlpha", "SNR"])
def test_toy_guide_prunes_through_pp_prune(rule):
    (w0, k0), (w2, k2) = _separated((4, 3), 0), _separated((2, 4), 1)
    model, guide = _toy({"0.weight": w0, "2.weight": w2})
    res = pp.prune(model, guide, rule)
    assert set(res.masks) == {"0.weight", "2.weight"}
    assert torch.equal(res.masks["0.weight"], k0) and torch.equal(res.masks["2.weight"], k2)
    # the exported network holds the posterior means, pruned entries exactly zero
    assert torch.equal(res.module[0].weight.detach(), torch.where(k0, w0, torch.zeros_like(w0)))
    assert torch.equal(res.module[2].bias.detach(), torch.ones(2))
    assert res.report.kept == int(k0.sum() + k2.sum())
    # the restricted posterior: pruned weights are zero in every draw, and its marginals say so
    draws = res.guide()
    assert bool((draws["0.weight"][~k0] == 0).all()) and bool((draws["0.weight"][k0] != 0).all())
    assert bool(torch.isinf(marginals(res.guide)["0.weight"].log_alpha[~k0]).all())
    pred = pp.predict(model, res.guide, torch.randn(5, 3), num_samples=3)
    assert pred.probs.shape == (5, 2)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_toy_guide_sparsity_removes_the_lowest_snr(scope):
    g = torch.Generator().manual_seed(2)
    w0, w2 = torch.randn(4, 3, generator=g), torch.randn(2, 4, generator=g)
    model, guide = _toy({"0.weight": w0, "2.weight": w2}, scale=0.5)
    masks = pp.prune(model, guide, rules.Sparsity(0.5, scope=scope)).masks

    def keep_top(values: np.ndarray) -> np.ndarray:  # independent answer: drop the round(n / 2) smallest |mu|
        order = np.argsort(np.abs(values), kind="stable")
        keep = np.ones(values.size, dtype=bool)
        keep[order[: round(0.5 * values.size)]] = False
        return keep

    if scope == "layer":
        expected = [keep_top(w.numpy().ravel()) for w in (w0, w2)]
    else:
        flat = keep_top(np.concatenate([w0.numpy().ravel(), w2.numpy().ravel()]))
        expected = [flat[:12], flat[12:]]
    assert np.array_equal(masks["0.weight"].numpy().ravel(), expected[0])
    assert np.array_equal(masks["2.weight"].numpy().ravel(), expected[1])


def test_toy_guide_with_wrong_sites_is_rejected():
    model, guide = _toy({})
    del guide.moments["2.bias"]
    with pytest.raises(ValueError, match=r"missing \['2.bias'\]"):
        pp.prune(model, guide, rules.LogAlpha())


# -- the registry ---------------------------------------------------------------------------------------------------
class _Base:
    pass


class _Child(_Base):
    pass


class _Special(_Base):
    pass


class _SpecialChild(_Special):
    pass


register_marginals(_Base, lambda guide: {"w": Marginal(torch.ones(2), torch.ones(2))})


@register_marginals(_Special)
def _special_marginals(guide: _Special) -> Dict[str, Marginal]:
    return {"w": Marginal(torch.zeros(2), torch.ones(2))}


def test_registry_follows_the_mro_and_the_most_specific_reader_wins():
    assert torch.equal(marginals(_Base())["w"].loc, torch.ones(2))
    assert torch.equal(marginals(_Child())["w"].loc, torch.ones(2))  # inherits the base's reader
    assert torch.equal(marginals(_Special())["w"].loc, torch.zeros(2))  # its own reader wins
    assert torch.equal(marginals(_SpecialChild())["w"].loc, torch.zeros(2))  # the nearest class in the MRO
    assert callable(_special_marginals) and _special_marginals(None)["w"].loc.shape == (2,)  # decorator returns fn
    assert pp.marginals is marginals and pp.register_marginals is register_marginals


def test_unregistered_guide_names_register_marginals():
    class Unknown:
        pass

    with pytest.raises(TypeError, match="Unknown has no registered marginals.*register_marginals"):
        marginals(Unknown())
    model, _ = _toy({})
    with pytest.raises(TypeError, match="register_marginals"):
        pp.prune(model, Unknown(), rules.LogAlpha())


def test_bad_registration():
    with pytest.raises(TypeError, match="guide_cls must be a class"):
        register_marginals(_Base(), _toy_marginals)
    with pytest.raises(TypeError, match="fn must be callable"):
        register_marginals(_Base, "not a function")
    with pytest.raises(TypeError, match="fn must be callable"):
        register_marginals(_Base)(3)


def test_marginal_fills_log_alpha_and_checks_shapes():
    loc, scale = torch.tensor([1.0, -2.0, 0.0, 1e-3]), torch.tensor([0.5, 1.0, 2.0, 1.0])
    m = Marginal(loc, scale)
    expected = [math.log(s**2) - math.log(mu**2 + 1e-8) for mu, s in zip(loc.tolist(), scale.tolist())]
    assert_close(m.log_alpha, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert_close(m.snr, loc.abs() / scale)
    given = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert Marginal(loc, scale, given).log_alpha is given  # a guide's own log alpha is kept
    with pytest.raises(ValueError, match="differ in shape"):
        Marginal(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="differ in shape"):
        Marginal(loc, scale, torch.zeros(3))
