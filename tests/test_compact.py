"""Structured compaction (pyro_prune.pruning.compact): the compact network equals the masked one, and is smaller."""

from __future__ import annotations

import copy
import json
import warnings
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_prune.pruning.compact import CompactResult, architecture, compact, count_flops
from tests.helpers import assert_close


def _random_bn(bn: nn.Module) -> None:
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()


def _masks(net: nn.Module, p: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """Random keep masks (probability of keeping per layer name), at least two groups kept each."""
    keep = {}
    for name, prob in p.items():
        m = net.get_submodule(name)
        size = m.in_features if isinstance(m, nn.Linear) else m.out_channels
        mask = torch.rand(size) < prob
        mask[:2] = True
        keep[name] = mask
    return keep


def _zero(net: nn.Module, keep: Dict[str, torch.Tensor]) -> None:
    """What the caller guarantees: pruned groups are zero (Linear columns; conv filters and biases)."""
    with torch.no_grad():
        for name, mask in keep.items():
            m = net.get_submodule(name)
            if isinstance(m, nn.Linear):
                m.weight[:, ~mask] = 0
            else:
                m.weight[~mask] = 0
                if m.bias is not None:
                    m.bias[~mask] = 0


def _compact_clean(net: nn.Module, keep, example_input=None) -> CompactResult:
    """Compact expecting no warning at all (full compaction)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return compact(net, keep, example_input)


def _mlp(act: type = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 300), act(), nn.Linear(300, 100), act(), nn.Linear(100, 10)).eval()


def _widths(net: nn.Module):
    """``(in, out)`` features / channels of every weight layer, in registration order."""
    return [
        (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
        for m in net.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
    ]


def _kept(keep: Dict[str, torch.Tensor], name: str) -> int:
    return int(keep[name].sum())


def _assert_same(net: nn.Module, res: CompactResult, x: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    net.eval()
    res.module.eval()
    with torch.no_grad():
        assert_close(res.module(x), net(x), rtol=rtol, atol=atol)


def test_mlp_relu_shapes_params_flops_arch():
    net = _mlp()
    keep = {"2": torch.rand(300) < 0.15, "4": torch.rand(100) < 0.2}
    keep["2"][:3] = True
    keep["4"][:3] = True
    _zero(net, keep)
    state = copy.deepcopy(net.state_dict())
    res = _compact_clean(net, keep)
    h1, h2 = int(keep["2"].sum()), int(keep["4"].sum())
    _assert_same(net, res, torch.randn(32, 64))
    assert res.input_index is None
    assert res.before == "64-300-100-10" == architecture(net)
    assert res.after == f"64-{h1}-{h2}-10" == architecture(res.module)
    sizes = [(m.in_features, m.out_features) for m in res.module.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(64, h1), (h1, h2), (h2, 10)]
    assert res.params_before == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert res.params_after == 64 * h1 + h1 + h1 * h2 + h2 + h2 * 10 + 10
    assert res.flops_before == 2 * (64 * 300 + 300 * 100 + 100 * 10)
    assert res.flops_after == 2 * (64 * h1 + h1 * h2 + h2 * 10)
    assert res.flops_after == count_flops(res.module, torch.randn(3, 64))
    assert [(c.name, c.in_after, c.out_after) for c in res.layers] == [("0", 64, h1), ("2", h1, h2), ("4", h2, 10)]
    assert res.masked_only == []
    assert json.loads(json.dumps(res.to_dict()))["layers"][1]["in_after"] == h1
    assert "64-300-100-10 -> " in res.summary()
    for k, v in net.state_dict().items():  # the input network is untouched
        assert torch.equal(v, state[k])


def test_mlp_tanh_dropout_batchnorm():
    net = nn.Sequential(
        nn.Linear(20, 40), nn.BatchNorm1d(40), nn.Tanh(), nn.Dropout(0.3),
        nn.Linear(40, 30), nn.BatchNorm1d(30), nn.Tanh(), nn.Dropout(0.3),
        nn.Linear(30, 5),
    ).eval()  # fmt: skip
    _random_bn(net[1])
    _random_bn(net[5])
    keep = _masks(net, {"4": 0.4, "8": 0.5})
    _zero(net, keep)
    res = _compact_clean(net, keep)
    _assert_same(net, res, torch.randn(16, 20))
    k1, k2 = int(keep["4"].sum()), int(keep["8"].sum())
    assert res.module[1].num_features == k1 and res.module[5].num_features == k2
    assert res.module[1].running_mean.shape == (k1,)
    assert res.after == f"20-{k1}-{k2}-5"
    assert _widths(res.module) == [(20, k1), (k1, k2), (k2, 5)]


def test_mlp_sigmoid():
    net = _mlp(nn.Sigmoid)  # removed units output sigmoid(b) != 0; their consumer columns are zero
    keep = _masks(net, {"2": 0.3, "4": 0.3})
    _zero(net, keep)
    res = _compact_clean(net, keep)
    _assert_same(net, res, torch.randn(16, 64))
    k2, k4 = _kept(keep, "2"), _kept(keep, "4")
    assert k2 < 300 and k4 < 100
    assert _widths(res.module) == [(64, k2), (k2, k4), (k4, 10)]  # the removed units are gone, not just zero


def test_conv_sigmoid_constant_folded_into_linear_bias():
    # a pruned conv channel emits sigmoid(0) = 1/2 everywhere; the Linear keeps reading it -> fold into its bias
    net = nn.Sequential(nn.Conv1d(2, 6, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(6 * 8, 4, bias=False)).eval()
    keep = {"0": torch.tensor([True, False, True, True, False, True])}
    _zero(net, keep)
    x = torch.randn(5, 2, 10)
    res = _compact_clean(net, keep, x)
    _assert_same(net, res, x)
    assert res.module[0].out_channels == 4 and res.module[3].in_features == 4 * 8
    assert res.module[3].bias is not None  # created for the folded constant
    assert res.after == "2-4|32-4"


def test_first_layer_input_pruning():
    net = _mlp()
    keep = _masks(net, {"0": 0.6, "2": 0.3, "4": 0.5})
    _zero(net, keep)
    res = _compact_clean(net, keep)
    assert isinstance(res.module, torch.fx.GraphModule)  # torch only: an index selection in front of the layers
    assert torch.equal(res.input_index, keep["0"].nonzero().flatten())
    assert torch.equal(res.module.input_index, res.input_index)
    _assert_same(net, res, torch.randn(16, 64))  # still takes the original 64 features
    assert res.after.startswith(f"{int(keep['0'].sum())}-")
    k0, k2, k4 = _kept(keep, "0"), _kept(keep, "2"), _kept(keep, "4")
    assert _widths(res.module) == [(k0, k2), (k2, k4), (k4, 10)]
    assert res.flops_after == 2 * sum(
        m.in_features * m.out_features for m in res.module.modules() if isinstance(m, nn.Linear)
    )


def _cnn1d() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 12, 3, padding=1), nn.BatchNorm1d(12), nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(12 * 10, 16), nn.ReLU()),
        nn.Linear(16, 3),
    ).eval()  # fmt: skip


def _cnn2d() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 3), nn.BatchNorm2d(8), nn.GELU(), nn.AdaptiveAvgPool2d((2, 2)),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 4, 10), nn.ReLU(), nn.Linear(10, 4),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_cnn_with_batchnorm(kind):
    net = _cnn1d() if kind == "1d" else _cnn2d()
    c1, c2, fc1, fc2 = ("0", "4", "7.1", "8") if kind == "1d" else ("0", "4", "10", "12")
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            _random_bn(m)
    keep = _masks(net, {c1: 0.5, c2: 0.5, fc1: 0.8, fc2: 0.5})
    _zero(net, keep)
    # a pruned channel of the first conv emits relu(BN(0)) != 0 into the second conv: zero padding makes that
    # unfoldable, so the caller's zeroing of the consumer's input channel is what lets it go (dead from both sides)
    with torch.no_grad():
        net.get_submodule(c2).weight[:, ~keep[c1]] = 0
    x = torch.randn(4, 1, 20) if kind == "1d" else torch.randn(4, 3, 8, 8)
    net.train()
    stats = net[1].running_mean.clone()
    res = _compact_clean(net, keep, x)
    assert net.training and net[1].training and torch.equal(net[1].running_mean, stats)  # measured in eval mode
    _assert_same(net, res, x)
    n1, n2 = int(keep[c1].sum()), int(keep[c2].sum())
    mods = dict(res.module.named_modules())
    assert mods[c1].out_channels == n1 and mods["1"].num_features == n1 and mods[c2].in_channels == n1
    assert mods[c2].out_channels <= n2 and mods["5"].num_features == mods[c2].out_channels
    assert mods[fc1].in_features % mods[c2].out_channels == 0
    assert res.params_after < res.params_before and res.flops_after < res.flops_before
    assert res.flops_after == count_flops(res.module, x)
    assert res.before == ("1-8-12|120-16-3" if kind == "1d" else "3-6-8|32-10-4")


def test_cnn_constant_into_conv_is_kept_with_warning():
    net = _cnn1d()
    _random_bn(net[1])
    with torch.no_grad():
        net[1].bias.fill_(1.0)
        net[1].running_mean.zero_()  # relu(BN(0)) = 1 for every channel
    keep = {"0": torch.tensor([True, False, True, True, False, True, True, True])}
    _zero(net, keep)
    x = torch.randn(4, 1, 20)
    with pytest.warns(UserWarning, match="only masked"):
        res = compact(net, keep, x)
    assert res.masked_only == ["0"] and "constant" in res.reasons["0"]
    assert res.module[0].out_channels == 8
    _assert_same(net, res, x)


def test_dead_from_both_sides_conv_to_linear():
    net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6, 3), nn.ReLU(), nn.Linear(3, 2))
    net.eval()
    keep = {"0": torch.tensor([True, False, True, True]), "3": torch.ones(24, dtype=torch.bool)}
    keep["3"][12:18] = False  # channel 2's whole block unused by the Linear; channel 1 pruned by the conv
    keep["3"][0] = False  # a single column of channel 0's block: stays (masked), channel 0 kept
    _zero(net, keep)
    x = torch.randn(3, 1, 8)
    res = _compact_clean(net, keep, x)
    assert res.module[0].out_channels == 2 and res.module[3].in_features == 12
    _assert_same(net, res, x)


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 4 * 4, 20)
        self.fc2 = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.sigmoid(self.bn(self.conv2(x)))
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def test_custom_module_fx():
    net = _Custom().eval()
    _random_bn(net.bn)
    keep = _masks(net, {"conv1": 0.5, "conv2": 0.5, "fc2": 0.4})
    _zero(net, keep)
    x = torch.randn(4, 1, 8, 8)
    res = _compact_clean(net, keep, x)
    _assert_same(net, res, x)
    assert res.module.conv1.out_channels == int(keep["conv1"].sum()) == res.module.conv2.in_channels
    assert res.module.conv2.out_channels == int(keep["conv2"].sum()) == res.module.bn.num_features
    assert res.module.fc1.in_features == 16 * int(keep["conv2"].sum())
    assert res.module.fc1.out_features == int(keep["fc2"].sum())
    assert isinstance(res.module, _Custom)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc_in = nn.Linear(10, 16)
        self.fc_a = nn.Linear(16, 12)
        self.fc_b = nn.Linear(12, 16)
        self.fc_out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc_in(x))
        h = h + self.fc_b(F.relu(self.fc_a(h)))
        return self.fc_out(F.relu(h))


def test_residual_block_masked_only():
    net = _Residual().eval()
    keep = _masks(net, {"fc_a": 0.5, "fc_b": 0.5, "fc_out": 0.5})
    _zero(net, keep)
    with pytest.warns(UserWarning, match="only masked") as record:
        res = compact(net, keep)
    assert sum("only masked" in str(w.message) for w in record) == 1
    assert sorted(res.masked_only) == ["fc_a", "fc_out"]
    assert "fc_a" in str(record[0].message) and "fc_out" in str(record[0].message)
    assert res.module.fc_a.in_features == 16 and res.module.fc_out.in_features == 16  # masked, not removed
    assert res.module.fc_a.out_features == int(keep["fc_b"].sum()) == res.module.fc_b.in_features  # compacted
    _assert_same(net, res, torch.randn(8, 10))


def test_grouped_conv_masked_only():
    net = nn.Sequential(nn.Conv1d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv1d(8, 4, 1), nn.Flatten(), nn.Linear(16, 2))
    net.eval()
    keep = {"0": torch.tensor([True, False] * 4)}
    _zero(net, keep)
    x = torch.randn(2, 4, 6)
    with pytest.warns(UserWarning, match="grouped"):
        res = compact(net, keep, x)
    assert res.masked_only == ["0"]
    assert _widths(res.module) == _widths(net)  # nothing could be removed
    _assert_same(net, res, x)


def test_float64():
    net = _mlp(nn.Tanh).double()
    keep = _masks(net, {"0": 0.5, "2": 0.2, "4": 0.2})
    _zero(net, keep)
    res = _compact_clean(net, keep)
    assert all(p.dtype == torch.float64 for p in res.module.parameters())
    k0, k2, k4 = _kept(keep, "0"), _kept(keep, "2"), _kept(keep, "4")
    assert res.module.input_index.numel() == k0
    assert _widths(res.module) == [(k0, k2), (k2, k4), (k4, 10)]
    _assert_same(net, res, torch.randn(8, 64, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_bad_inputs():
    net = _mlp()
    with pytest.raises(ValueError, match="nope"):
        compact(net, {"nope": torch.ones(64, dtype=torch.bool)})
    with pytest.raises(ValueError, match="'1'"):
        compact(net, {"1": torch.ones(64, dtype=torch.bool)})  # a ReLU
    with pytest.raises(ValueError, match=r"shape \(300,\)"):
        compact(net, {"2": torch.ones(100, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        compact(net, {"2": torch.ones(300)})
    with pytest.raises(ValueError, match="every group"):
        compact(net, {"2": torch.zeros(300, dtype=torch.bool)})
    keep = {"2": torch.rand(300) < 0.5}
    with pytest.raises(ValueError, match="not zero"):
        compact(net, keep)  # pruned columns not zeroed by the caller
    cnn = _cnn1d()
    with pytest.raises(ValueError, match="example_input"):
        compact(cnn, {})
    with pytest.raises(ValueError, match="example_input"):
        count_flops(cnn)
    with pytest.raises(ValueError, match="out_channels"):
        compact(cnn, {"0": torch.ones(1, dtype=torch.bool)}, torch.randn(2, 1, 20))
    small = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4, 2))
    keep = {"0": torch.tensor([True, False]), "2": torch.tensor([False] * 4 + [True] * 4)}
    _zero(small, keep)
    with pytest.raises(ValueError, match="no unit"):
        compact(small, keep, torch.randn(2, 1, 6))  # channel 0 unused by the Linear, channel 1 pruned by the conv


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.cat([F.relu(self.a(x)), x], -1))


class _HardView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(1, 4, 3)
        self.fc = nn.Linear(24, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c(x).relu().view(-1, 24))


class _ControlFlow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # not traceable by torch.fx
            x = 2 * x
        return self.b(torch.tanh(self.a(x)))


@pytest.mark.parametrize(
    "case",
    ["concat", "hard-coded view", "untraceable", "final conv", "no flatten", "padded avg pool"],
)
def test_unsupported_dataflow_is_masked_only(case):
    conv_x = torch.randn(3, 1, 8)
    nets = {
        "concat": (_Concat(), {"b": 0.5}, torch.randn(3, 4), "b"),
        "hard-coded view": (_HardView(), {"c": 0.5}, conv_x, "c"),
        "untraceable": (_ControlFlow(), {"b": 0.5}, torch.randn(3, 4), "b"),
        "final conv": (nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 6, 3)), {"2": 0.5}, conv_x, "2"),
        "no flatten": (nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Linear(6, 2)), {"0": 0.5}, conv_x, "0"),
        "padded avg pool": (  # sigmoid(0) = 1/2 averaged with zero padding: position dependent, not foldable
            nn.Sequential(nn.Conv1d(1, 4, 3), nn.Sigmoid(), nn.AvgPool1d(2, padding=1), nn.Flatten(), nn.Linear(16, 2)),
            {"0": 0.5},
            conv_x,
            "0",
        ),
    }
    net, probs, x, masked = nets[case]
    net.eval()
    keep = _masks(net, probs)
    keep[masked][-1] = False
    _zero(net, keep)
    with pytest.warns(UserWarning, match="only masked"):
        res = compact(net, keep, x)
    assert masked in res.masked_only and masked in res.reasons
    # the masked layer keeps its size (zeros in place), as every layer whose groups were all kept
    before, after = dict(net.named_modules()), dict(res.module.named_modules())
    assert _widths(after[masked]) == _widths(before[masked])
    _assert_same(net, res, x)
