"""prune(): rules, masks, exported module, restricted guide, compression report, bad input."""

import json
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune import rules
from pyro_prune.marginals import Marginal
from tests.helpers import assert_close


def trained(guide_cls=pp.AutoSparseVD, n=40):
    torch.manual_seed(0)
    x = torch.randn(n, 4)
    y = (x[:, 0] - x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(n))
    guide = guide_cls(model) if guide_cls is pp.AutoSparseVD else guide_cls(model, init_scale=0.1)
    pp.fit(model, guide, (x, y), epochs=20, lr=1e-2, progress=False)
    return net, model, guide, x, y


def test_log_alpha_and_snr_rules_agree():
    net, model, guide, x, y = trained()
    a = pp.prune(model, guide, rules.LogAlpha(3.0)).masks
    b = pp.prune(model, guide, rules.SNR(math.exp(-1.5))).masks
    for k in a:
        assert torch.equal(a[k], b[k])
    # the same holds for a guide without log alpha of its own (AutoNormal): SNR from loc/scale
    pyro.clear_param_store()
    net, model, guide, x, y = trained(AutoNormal)
    m = pp.marginals(guide)
    la = {k: rules.LogAlpha(0.5)(dict(k=v))["k"] for k, v in m.items()}
    snr = {k: rules.SNR(math.exp(-0.25))(dict(k=v))["k"] for k, v in m.items()}
    for k in la:
        assert torch.equal(la[k], snr[k])


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("target", [0.0, 0.5, 0.9])
def test_sparsity_rule_hits_target_exactly(scope, target):
    net, model, guide, x, y = trained()
    res = pp.prune(model, guide, rules.Sparsity(target, scope=scope))
    total = sum(m.numel() for m in res.masks.values())
    kept = sum(int(m.sum()) for m in res.masks.values())
    if scope == "global":
        assert total - kept == round(target * total)
    else:
        for m in res.masks.values():
            assert m.numel() - int(m.sum()) == round(target * m.numel())
    assert res.report.kept == kept and res.report.total == total
    assert set(res.masks) == {"0.weight", "2.weight"}  # weights only, biases kept
    assert all(res.masks[k].shape == model.sites[k].shape for k in res.masks)


def test_sparsity_prunes_lowest_snr_and_is_deterministic():
    m = Marginal(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.ones(1, 4))
    keep = rules.Sparsity(0.5)({"w": m})["w"]
    assert keep.tolist() == [[False, False, True, True]]
    tie = Marginal(torch.ones(1, 4), torch.ones(1, 4))
    assert rules.Sparsity(0.5)({"w": tie})["w"].tolist() == [[False, False, True, True]]


def test_exported_module_is_plain_and_reproduces_pruned_posterior_mean():
    net, model, guide, x, y = trained()
    res = pp.prune(model, guide, rules.Sparsity(0.6))
    module = res.module
    assert type(module) is nn.Sequential and not any(isinstance(m, pyro.nn.PyroModule) for m in module.modules())
    med = guide.median()
    for name, mask in res.masks.items():
        w = dict(module.named_parameters())[name]
        assert (w[~mask] == 0).all()
        assert torch.equal(w[mask], med[name][mask]), "pruning changed a kept weight"
    # the restricted guide's median network is the exported module
    with torch.no_grad():
        cond = pyro.poutine.condition(model, res.guide.median())
        assert_close(cond(x), module(x), rtol=1e-5, atol=1e-6)
    # a state dict round trip without pyro_prune
    fresh = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    fresh.load_state_dict(module.state_dict())
    assert_close(fresh(x), module(x))
    # the user's network is untouched
    assert not torch.equal(net[0].weight, module[0].weight)


def test_pruned_guide_ensemble_has_zero_weights():
    net, model, guide, x, y = trained()
    res = pp.prune(model, guide, rules.Sparsity(0.8))
    samples = pyro.infer.Predictive(model, guide=res.guide, num_samples=5, parallel=True, return_sites=["0.weight"])(x)[
        "0.weight"
    ]
    assert (samples.reshape(5, 16, 4)[:, ~res.masks["0.weight"]] == 0).all()
    pred = pp.predict(model, res.guide, x, num_samples=20)
    assert pred.probs.shape == (40, 2)
    pm = res.guide.marginals()
    assert (pm["0.weight"].loc[~res.masks["0.weight"]] == 0).all()


def test_pruning_zero_score_weights_leaves_predictions_unchanged():
    net, model, guide, x, y = trained()
    # zero out some posterior means: pruning exactly those changes nothing
    with torch.no_grad():
        guide.locs.__getattr__("0").weight_unconstrained[:, :2] = 0.0
    zero = pp.prune(model, guide, lambda m: m.loc != 0)
    none = pp.prune(model, guide, rules.Sparsity(0.0))
    assert_close(zero.module(x), none.module(x))


def test_report_table_json_and_flops():
    net, model, guide, x, y = trained()
    res = pp.prune(model, guide, rules.LogAlpha(3.0))
    r = res.report
    d = json.loads(r.to_json())
    assert d["total"]["total"] == 4 * 16 + 16 * 2
    layer = d["layers"][0]
    assert layer["dense_flops"] == 2 * 4 * 16 and layer["sparse_flops"] == 2 * layer["kept"]
    assert layer["dense_bytes"] == 4 * 64
    assert layer["csr_bytes"] == layer["kept"] * 8 + (16 + 1) * 4
    text = str(r)
    assert "total" in text and "0.weight" in text and "LogAlpha(3)" in text
    assert math.isclose(r.compression, r.total / r.kept)


def test_conv_flops_counted_over_positions():
    net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10, 2))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(8))
    guide = pp.AutoSparseVD(model)
    x, y = torch.randn(8, 1, 10), torch.randint(0, 2, (8,))
    guide(x, y)
    res = pp.prune(model, guide, rules.Sparsity(0.5), example_input=x)
    conv = res.report.layers[0]
    assert conv.dense_flops == 2 * 12 * 10


def test_bad_input_raises():
    net, model, guide, x, y = trained()
    with pytest.raises(ValueError, match="threshold.*nan"):
        rules.LogAlpha(float("nan"))
    with pytest.raises(ValueError, match="threshold.*nan"):
        rules.SNR(float("nan"))
    with pytest.raises(ValueError, match="threshold must be > 0"):
        rules.SNR(0.0)
    with pytest.raises(TypeError, match="threshold"):
        rules.LogAlpha("3")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        rules.Sparsity(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        rules.Sparsity(-0.1)
    with pytest.raises(ValueError, match="scope"):
        rules.Sparsity(0.5, scope="net")
    with pytest.raises(TypeError, match="no registered marginals"):
        pp.prune(model, lambda *a: None, rules.LogAlpha())
    with pytest.raises(TypeError, match="rule"):
        pp.prune(model, guide, "logalpha")
    with pytest.raises(ValueError, match="shape"):
        pp.prune(model, guide, lambda m: torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="sites"):
        pp.prune(model, guide, rules.LogAlpha(), sites=["nope.weight"])
    other = pp.bayesianize(
        nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), dist.Normal(0.0, 1.0), pp.Categorical(40)
    )
    with pytest.raises(ValueError, match="does not match|modules do not match"):
        pp.prune(other, guide, rules.LogAlpha())
    with pytest.raises(TypeError, match="BayesianModel"):
        pp.prune(net, guide, rules.LogAlpha())


# -- structured pruning (group guides) ---------------------------------------------------------------------
def group_trained(net, x, y, kind="log-uniform", epochs=30):
    model = pp.bayesianize(net, pp.GroupPrior(kind), pp.Categorical(len(x)))
    guide = pp.AutoGroupSparse(model)
    pp.fit(model, guide, (x, y), epochs=epochs, lr=1e-2, progress=False)
    return model, guide


@pytest.mark.parametrize("kind", ["log-uniform", "horseshoe"])
def test_structured_prune_mlp_compact_equals_masked(kind):
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))
    model, guide = group_trained(net, x, y, kind)
    res = pp.prune(model, guide, rules.GroupSparsity(0.5))
    # half the groups (input units) of every layer removed, exactly
    assert {k: int(g.sum()) for k, g in res.group_masks.items()} == {"0.weight": 3, "2.weight": 6, "4.weight": 4}
    # weight masks are the group masks broadcast over columns
    assert torch.equal(res.masks["2.weight"], res.group_masks["2.weight"].expand(8, 12))
    with torch.no_grad():
        assert_close(res.module(x), res.masked_module(x), rtol=1e-5, atol=1e-5)
    params = sum(p.numel() for p in res.module.parameters())
    assert params < sum(p.numel() for p in net.parameters())
    st = res.report.structure
    assert st["before"].startswith("6-12-8-2") and st["params_after"] == params
    assert st["flops_after"] < st["flops_before"]
    assert set(st["bits"]) == set(res.group_masks) and all(1 <= b <= 32 for b in st["bits"].values())
    assert "architecture" in str(res.report)
    json.dumps(res.report.to_dict())
    # the pruned ensemble draws zeros in the removed columns
    pred = pp.predict(model, res.guide, x[:5], num_samples=4)
    assert pred.samples.shape == (4, 5, 2)


def test_structured_prune_conv_removes_channels():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 12)
    y = (x.mean((1, 2)) > 0).long()
    net = nn.Sequential(
        nn.Conv1d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(6, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 2),
    )  # fmt: skip
    model, guide = group_trained(net, x, y, epochs=10)
    res = pp.prune(model, guide, rules.GroupSparsity(0.5), example_input=x[:1])
    assert int(res.group_masks["0.weight"].sum()) == 3
    assert torch.equal(res.masks["0.bias"], res.group_masks["0.weight"])  # a removed channel takes its bias
    convs = [m for m in res.module.modules() if isinstance(m, nn.Conv1d)]
    assert convs[0].out_channels == 3 and convs[1].in_channels == 3
    with torch.no_grad():
        assert_close(res.module(x), res.masked_module(x), rtol=1e-5, atol=1e-5)


def test_group_rules_bad_input():
    net, model, guide, x, y = trained()
    with pytest.raises(ValueError, match="structured rule"):
        pp.prune(model, guide, rules.GroupLogAlpha(3.0))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="target"):
            rules.GroupSparsity(bad)
    with pytest.raises(ValueError, match="threshold.*nan"):
        rules.GroupLogAlpha(math.nan)
    with pytest.raises(TypeError, match="target"):
        rules.GroupSparsity("0.5")
    with pytest.raises(ValueError, match="scope"):
        rules.GroupSparsity(0.5, scope="net")
    with pytest.raises(ValueError, match="per-group posteriors"):
        rules.GroupLogAlpha(3.0).group_masks(pp.marginals(guide))


def test_group_rule_keeps_one_group_when_all_would_go():
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    model, guide = group_trained(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), x, y, epochs=2)
    with pytest.warns(UserWarning, match="removes every group"):
        res = pp.prune(model, guide, rules.GroupLogAlpha(-100.0))
    assert all(int(g.sum()) == 1 for g in res.group_masks.values())


def test_group_log_alpha_ignores_weights_into_removed_units():
    from pyro_prune.marginals import GroupMarginal

    def gm(prior, la, axis=1):
        z = torch.ones_like(la)
        return GroupMarginal(axis=axis, log_alpha=la, scale_mean=z, scale_std=z, log_scale_mean=z, prior=prior)

    # layer a: 3 inputs -> 4 units; units 2, 3 carry pure noise (removed by layer b), units 0, 1 carry signal
    loc = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scale = torch.tensor([[0.1, 1.0, 0.1], [0.1, 1.0, 0.1], [3.0, 3.0, 3.0], [3.0, 3.0, 3.0]])
    b_loc, b_scale = torch.ones(2, 4), torch.full((2, 4), 0.1)
    for prior in ("horseshoe", "log-uniform"):
        margs = {
            "a.weight": Marginal(loc, scale, None, gm(prior, torch.full((3,), 5.0))),  # diluted: every group looks bad
            "b.weight": Marginal(b_loc, b_scale, None, gm(prior, torch.tensor([-5.0, -5.0, 5.0, 5.0]))),
        }
        masks = rules.GroupLogAlpha(3.0).group_masks(margs)
        assert masks["b.weight"].tolist() == [True, True, False, False]
        # both priors: layer a re-scored over the rows of kept units 0, 1, where inputs 0 and 2 carry signal (the
        # log-uniform scale's own log alpha, 5 for every group, is not what the rule reads in a layer that feeds one)
        assert masks["a.weight"].tolist() == [True, False, True], prior
        scores = rules.group_log_alpha(margs, 3.0)["a.weight"]
        assert_close(scores, torch.tensor([math.log(0.02 / 2), 10.0, math.log(0.02 / 2)]), rtol=1e-5, atol=1e-6)


def test_group_log_alpha_scores_are_what_the_rule_thresholds():
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))
    model, guide = group_trained(net, x, y, "horseshoe", epochs=10)
    margs = guide.marginals()
    for t in (3.0, 0.0):
        scores = rules.group_log_alpha(margs, t)
        masks = rules.GroupLogAlpha(t).group_masks(margs)
        assert list(scores) == ["0.weight", "2.weight", "4.weight"]
        for k in scores:
            assert torch.equal(masks[k], scores[k] < t)
    # the default rule: the horseshoe's relative norm, chained; group_scores are what it thresholds
    scores, masks = rules.group_scores(margs), rules.GroupLogAlpha().group_masks(margs)
    for k in scores:
        assert torch.equal(masks[k], scores[k] < math.log(10.0))


def test_float_scores_from_a_rule_are_rejected_not_cast_to_bool():
    net, model, guide, x, y = trained()
    with pytest.raises(TypeError, match=r"torch.float32 mask for '0.weight'.*bool keep mask"):
        pp.prune(model, guide, lambda m: m.loc.abs() / m.scale)  # scores, not a mask: every non-zero would "keep"
    with pytest.raises(TypeError, match="int64 mask"):
        pp.prune(model, guide, lambda m: (m.loc > 0).long())

    class Scores(rules.Rule):
        def keep(self, marginal):
            return marginal.loc.abs()

    with pytest.raises(TypeError, match="bool keep mask"):
        pp.prune(model, guide, Scores())
    res = pp.prune(model, guide, lambda m: m.loc.abs() / m.scale > 1.0)  # thresholded by the user: fine
    assert all(m.dtype == torch.bool for m in res.masks.values())


def test_removing_every_weight_warns_and_the_report_says_so():
    net, model, guide, x, y = trained()
    with pytest.warns(UserWarning, match=r"removed every weight.*no longer depends on its input"):
        res = pp.prune(model, guide, rules.LogAlpha(-50.0))
    assert res.report.kept == 0 and math.isinf(res.report.compression)
    assert res.report.fully_pruned == ["0.weight", "2.weight"] == res.report.to_dict()["fully_pruned"]
    assert "every weight of 0.weight, 2.weight was removed" in str(res.report)
    with torch.no_grad():  # indeed: the output is the same for every input
        out = res.module(x)
    assert torch.equal(out, out[:1].expand_as(out))
    # one layer emptied: the warning names it
    with pytest.warns(UserWarning, match=r"every weight of 2.weight"):
        pp.prune(model, guide, lambda m: torch.full_like(m.loc, m.loc.shape[0] != 2, dtype=torch.bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = pp.prune(model, guide, rules.LogAlpha(3.0))
    assert res.report.fully_pruned == [] and "was removed" not in str(res.report)
