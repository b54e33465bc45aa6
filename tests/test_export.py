"""Pruned networks need only torch (issue 12, point 6).

``PruneResult.module`` (unstructured and structured, with pruned input features) is saved in this process with
``torch.save`` (whole module and ``state_dict``), TorchScript (``script`` and ``trace``) and ``torch.export``, then
loaded in a fresh ``python -I`` process where importing ``pyro_prune`` or ``pyro`` raises ``ImportError`` (an
import hook blocks them: the package is installed in editable mode, so leaving its path out is not enough), and
its outputs are compared bit for bit with this process's.
"""

import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from pyro_prune import rules

# torch deprecates TorchScript in favour of torch.export; the issue asks for both
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:The TorchScript type system")

LOADER = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyro_prune", "pyro"):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Block())
try:
    import pyro_prune  # noqa: F401
    raise SystemExit("pyro_prune is importable: the test would prove nothing")
except ImportError:
    pass
import torch

x = torch.load("x.pt", weights_only=True)
ref = torch.load("ref.pt", weights_only=True)
module = torch.load("module.pt", weights_only=False).eval()
assert torch.equal(module(x), ref), "torch.save(module)"
fresh = torch.load("module.pt", weights_only=False).eval()
with torch.no_grad():
    for p in fresh.parameters():
        p.zero_()
fresh.load_state_dict(torch.load("state.pt", weights_only=True))
assert torch.equal(fresh(x), ref), "state_dict with weights_only=True"
for name in ("scripted.pt", "traced.pt"):
    assert torch.equal(torch.jit.load(name)(x), ref), name
assert torch.equal(torch.export.load("exported.pt2").module()(x), ref), "torch.export"
assert not [m for m in sys.modules if m.split(".")[0] in ("pyro_prune", "pyro")]
print("ok", type(module).__name__)
"""


def pruned(structured: bool):
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x[:, 0] - x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 2))
    prior = pp.GroupPrior("horseshoe") if structured else dist.Normal(0.0, 1.0)
    model = pp.bayesianize(net, prior, pp.Categorical(len(x)))
    guide = pp.AutoGroupSparse(model) if structured else pp.AutoSparseVD(model)
    pp.fit(model, guide, (x, y), epochs=3, lr=1e-2, progress=False)
    rule = rules.GroupSparsity(0.4) if structured else rules.Sparsity(0.5)
    return pp.prune(model, guide, rule), x


@pytest.mark.parametrize("structured", [False, True], ids=["unstructured", "structured"])
def test_pruned_module_loads_and_exports_without_pyro_prune(structured, tmp_path):
    res, x = pruned(structured)
    module = res.module.eval()
    if structured:
        assert res.compact.input_index is not None, "the test needs pruned input features"
        assert res.compact.input_index.numel() < 8
    owners = {type(m).__module__.split(".")[0] for m in module.modules()}
    assert owners <= {"torch"}, f"modules from {owners}"
    with torch.no_grad():
        ref = module(x)
        exported = torch.export.export(module, (x,))
        scripted, traced = torch.jit.script(module), torch.jit.trace(module, x)
        for name, run in [("export", exported.module()), ("script", scripted), ("trace", traced)]:
            assert torch.equal(run(x), ref), name
    torch.save(x, tmp_path / "x.pt")
    torch.save(ref, tmp_path / "ref.pt")
    torch.save(module, tmp_path / "module.pt")
    torch.save(module.state_dict(), tmp_path / "state.pt")
    scripted.save(str(tmp_path / "scripted.pt"))
    traced.save(str(tmp_path / "traced.pt"))
    torch.export.save(exported, str(tmp_path / "exported.pt2"))
    out = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(LOADER)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.startswith("ok")


def test_the_blocker_would_catch_a_pyro_prune_class(tmp_path):
    """The subprocess check has teeth: a module holding a pyro_prune class does not load there."""
    model = pp.bayesianize(nn.Sequential(nn.Linear(2, 2)), dist.Normal(0.0, 1.0), pp.Categorical(4))
    torch.save(model.net, tmp_path / "module.pt")  # a BayesianLinear inside
    script = LOADER.split("x = torch.load")[0] + "torch.load('module.pt', weights_only=False)\n"
    out = subprocess.run([sys.executable, "-I", "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True)
    assert out.returncode != 0 and b"not installed here" in out.stderr
    pyro.clear_param_store()
