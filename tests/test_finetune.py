"""pp.finetune: removed weights stay exactly zero, the hard-label run equals an independently written masked Adam
loop, the distillation loss equals its closed form, and a teacher pulls the student towards itself."""

from __future__ import annotations

import copy
import math

import pyro
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from pyro_prune.pruning.finetune import distillation_loss


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _data(dtype=torch.float32, n=40):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g, dtype=dtype)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _pruned(dtype=torch.float32):
    net = _net(dtype)
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight[layer.weight.abs() < 0.2] = 0.0
    return net


def test_removed_weights_stay_zero_and_the_input_is_not_modified():
    net = _pruned()
    before = copy.deepcopy(net.state_dict())
    out = pp.finetune(net, _data(), epochs=30, lr=1e-2, weight_decay=1e-3)
    for name in ("0.weight", "2.weight"):
        zero = before[name] == 0
        assert zero.any() and (out.state_dict()[name][zero] == 0).all()
        assert not torch.equal(out.state_dict()[name][~zero], before[name][~zero])  # the kept weights trained
        assert torch.equal(net.state_dict()[name], before[name])
    assert set(out.state_dict()) == set(before)  # no weight_orig / weight_mask left
    assert not out.training


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_label_run_equals_an_independent_masked_adam_loop(dtype):
    net, (x, y) = _pruned(dtype), _data(dtype)
    got = pp.finetune(net, (x, y), epochs=5, lr=1e-2)
    ref = copy.deepcopy(net)
    masks = {n: (p != 0).to(dtype) for n, p in ref.named_parameters() if p.dim() == 2}
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for _ in range(5):
        h = torch.tanh(x @ (ref[0].weight * masks["0.weight"]).T + ref[0].bias)
        out = h @ (ref[2].weight * masks["2.weight"]).T + ref[2].bias
        loss = -torch.log_softmax(out, -1).gather(1, y[:, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for name, p in ref.named_parameters():
        expected = p * masks[name] if name in masks else p
        torch.testing.assert_close(got.state_dict()[name], expected.detach(), rtol=tol, atol=tol)
        assert got.state_dict()[name].dtype == dtype


def test_distillation_loss_equals_its_closed_form():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    T, lam = 3.0, 0.4
    ce = sum(-math.log(math.exp(s[i, y[i]]) / sum(math.exp(v) for v in s[i])) for i in range(5)) / 5
    kl = 0.0
    for i in range(5):
        pt = [math.exp(v / T) / sum(math.exp(u / T) for u in t[i]) for v in t[i]]
        ps = [math.exp(v / T) / sum(math.exp(u / T) for u in s[i]) for v in s[i]]
        kl += sum(a * math.log(a / b) for a, b in zip(pt, ps)) / 5
    expected = (1 - lam) * ce + lam * T**2 * kl
    assert distillation_loss(s, y, t, T, lam).item() == pytest.approx(expected, rel=1e-12)
    assert distillation_loss(s, y).item() == pytest.approx(ce, rel=1e-12)
    r = torch.randn(5, 2, generator=g, dtype=torch.float64)  # regression: squared errors
    yr, tr = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    mse = lambda a, b: ((a - b) ** 2).mean().item()  # noqa: E731
    assert distillation_loss(r, yr, tr, 2.0, 0.25).item() == pytest.approx(0.75 * mse(r, yr) + 0.25 * mse(r, tr))


def test_a_teacher_pulls_the_student_towards_itself():
    net, (x, y) = _pruned(), _data()
    torch.manual_seed(5)
    teacher = nn.Sequential(nn.Linear(6, 3)).eval()  # disagrees with the labels

    def gap(m):
        with torch.no_grad():
            return distillation_loss(m(x), y, teacher(x), 1.0, 1.0).item()  # KL(teacher || student)

    hard = pp.finetune(net, (x, y), epochs=50, lr=1e-2)
    soft = pp.finetune(net, (x, y), epochs=50, lr=1e-2, teacher=teacher, temperature=1.0, distill_weight=1.0)
    assert gap(soft) < 0.5 * gap(net) and gap(soft) < 0.5 * gap(hard)


def test_a_prune_result_keeps_its_masks_and_compression():
    pyro.set_rng_seed(0)
    x, y = _data(n=64)
    model = pp.bayesianize(_net(), pp.LogUniform(), pp.Categorical(64))
    guide = pp.AutoSparseVD(model)
    pp.fit(model, guide, (x, y), epochs=30, lr=1e-2, progress=False)
    res = pp.prune(model, guide, pp.rules.Sparsity(0.7))
    out = pp.finetune(res, (x, y), epochs=10, lr=1e-2)
    for site, mask in res.masks.items():
        assert (out.state_dict()[site][~mask] == 0).all()
        assert not torch.equal(out.state_dict()[site][mask], res.module.state_dict()[site][mask])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(epochs=0), ValueError, "epochs"),
        (dict(lr=-1.0), ValueError, "lr"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(distill_weight=0.5), ValueError, "teacher"),
        (dict(teacher=nn.Linear(6, 3), distill_weight=1.5), ValueError, "distill_weight"),
        (dict(teacher="dense"), TypeError, "teacher"),
        (dict(weight_decay=float("nan")), ValueError, "weight_decay"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        pp.finetune(_pruned(), _data(), **kwargs)


def test_bad_pruned_and_data_are_refused():
    with pytest.raises(TypeError, match="pruned"):
        pp.finetune("net", _data())
    with pytest.raises(TypeError, match="data"):
        pp.finetune(_pruned(), torch.zeros(3, 6))
