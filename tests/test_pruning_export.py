"""Pruned networks exported: torch's prune convention, CSR weights, torch.export, TorchScript, the speed-up
measurement."""

import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

import pyro_prune as pp
from pyro_prune.pruning.export import (
    SparseLinear,
    export_program,
    measure_speedup,
    to_sparse,
    to_torch_prune,
    to_torchscript,
)
from tests.helpers import assert_close


@pytest.fixture
def pruned():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    model = pp.bayesianize(net, prior=dist.Normal(0.0, 1.0), likelihood=pp.Categorical(50))
    guide = pp.AutoMeanFieldNormal(model, init_loc_fn=pp.init_from(net))
    guide(torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
    return pp.prune(model, guide, pp.rules.Sparsity(0.7))


def test_torch_prune_convention(pruned, tmp_path):
    x = torch.randn(9, 6)
    net = to_torch_prune(pruned.module, pruned.masks)
    state = net.state_dict()
    assert {"0.weight_orig", "0.weight_mask", "2.weight_orig", "2.weight_mask"} <= set(state)
    assert torch.equal(state["0.weight_mask"], pruned.masks["0.weight"].float())
    assert torch_prune.is_pruned(net)
    assert_close(net(x), pruned.module(x))
    torch.save(state, tmp_path / "p.pt")  # a fresh network in the same convention loads the file
    fresh = to_torch_prune(pruned.module, pruned.masks)
    fresh.load_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    for layer in ("0", "2"):
        torch_prune.remove(fresh.get_submodule(layer), "weight")
    assert not torch_prune.is_pruned(fresh) and set(fresh.state_dict()) == set(pruned.module.state_dict())
    assert torch.equal(fresh[0].weight, pruned.module[0].weight)
    assert_close(fresh(x), pruned.module(x))
    assert pruned.module[0].weight.count_nonzero() == pruned.masks["0.weight"].sum()  # the original is untouched


def test_sparse_csr_network(pruned, tmp_path):
    x = torch.randn(9, 6)
    net = to_sparse(pruned.module, pruned.masks)
    assert isinstance(net[0], SparseLinear) and net[0].weight.layout == torch.sparse_csr
    assert net[0].weight._nnz() == int(pruned.masks["0.weight"].sum())
    assert torch.equal(net[0].weight.to_dense(), pruned.module[0].weight.detach())
    assert_close(net(x), pruned.module(x), atol=1e-6, rtol=1e-5)
    torch.save(net.state_dict(), tmp_path / "csr.pt")
    other = to_sparse(pruned.module, {k: torch.ones_like(v) for k, v in pruned.masks.items()})  # another nnz
    other.load_state_dict(torch.load(tmp_path / "csr.pt", weights_only=True))
    assert_close(other(x), pruned.module(x), atol=1e-6, rtol=1e-5)
    assert_close(net.double()(x.double()), pruned.module.double()(x.double()))


def test_masks_are_checked(pruned):
    with pytest.raises(ValueError, match="no layer '7'"):
        to_torch_prune(pruned.module, {"7.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        to_sparse(pruned.module, {"0.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="'<layer>.weight'"):
        to_sparse(pruned.module, {"0.bias": torch.ones(16, dtype=torch.bool)})


def test_export_program_runs_without_the_class(pruned, tmp_path):
    x = torch.randn(5, 6)
    export_program(pruned.module, x, tmp_path / "net.pt2")
    program = torch.export.load(str(tmp_path / "net.pt2")).module()
    assert_close(program(x), pruned.module(x))
    assert program(torch.randn(11, 6)).shape == (11, 3)  # any batch size


def test_measure_speedup_is_the_ratio_of_medians():
    slow = nn.Sequential(nn.Linear(64, 2048), nn.Linear(2048, 64))
    fast = nn.Linear(64, 64)
    s = measure_speedup(slow, fast, torch.randn(32, 64), repeats=5, inner=1, warmup=1)
    assert s.speedup == pytest.approx(s.dense_ms / s.sparse_ms) and s.speedup > 1
    assert s.ratio_q25 <= s.ratio_q75 and s.repeats == 5 and s.batch == 32 and s.threads == torch.get_num_threads()
    with pytest.raises(ValueError, match="repeats"):
        measure_speedup(slow, fast, torch.randn(2, 64), repeats=1)


class _VarArgs(nn.Module):
    """Scripting refuses ``*args`` in forward; tracing records the operations."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.head = nn.Linear(3 * 6, 2)

    def forward(self, x, *args):
        return self.head(self.conv(x).relu().flatten(1))


def test_torchscript_scripts_the_pruned_mlp(pruned, tmp_path):
    info = to_torchscript(pruned.module, torch.randn(4, 6), tmp_path / "net.ts")
    assert info.method == "script" and info.script_error is None and info.max_abs_diff <= 1e-6
    loaded = torch.jit.load(str(tmp_path / "net.ts"))
    assert isinstance(loaded, torch.jit.ScriptModule)
    x = torch.randn(11, 6)  # another batch size than the example
    assert_close(loaded(x), pruned.module.eval()(x), atol=1e-6, rtol=1e-6)
    assert pruned.module[0].weight.eq(0).float().mean() > 0.5  # the zeros travel with the file
    assert torch.equal(loaded.state_dict()["0.weight"].eq(0), pruned.module[0].weight.eq(0))


def test_torchscript_traces_what_does_not_script_and_says_so(tmp_path):
    torch.manual_seed(0)
    net = _VarArgs().eval()
    with pytest.raises(torch.jit.frontend.NotSupportedError):
        torch.jit.script(net)
    info = to_torchscript(net, torch.randn(4, 2, 8), tmp_path / "net.ts")
    assert info.method == "trace" and "arg" in info.script_error.lower(), info.script_error
    assert info.example_shape == [4, 2, 8] and info.to_dict()["method"] == "trace"
    loaded = torch.jit.load(str(tmp_path / "net.ts"))
    x = torch.randn(9, 2, 8)
    assert_close(loaded(x), net(x), atol=1e-6, rtol=1e-6)
