"""Device and dtype discipline without a GPU: the main pipeline in float64 (PyTorch's default dtype left at float32)
under :class:`ForeignDefaultDevice`, which puts every tensor that the package's own code creates from scratch
without ``device=`` on the ``meta`` device, as a CUDA run would leave it on the CPU.  Such a tensor then either
raises where it meets the (CPU) data, or shows up as a non-CPU output; a tensor made without ``dtype=`` shows up
as float32.  The ``gpu`` test runs the same pipeline on CUDA when there is one.
"""

from __future__ import annotations

import os
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal
from torch.overrides import TorchFunctionMode

import pyro_prune as pp
from pyro_prune.guides.laplace.heldout import tune_prior_precision

PACKAGE = os.path.dirname(pp.__file__)
FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.eye, torch.arange,
             torch.linspace, torch.logspace, torch.rand, torch.randn, torch.randint, torch.randperm}  # fmt: skip


class ForeignDefaultDevice(TorchFunctionMode):
    """Factory calls made *by the package's own code* without ``device=`` create ``meta`` tensors (a copy of an
    existing tensor by ``torch.tensor``/``as_tensor`` keeps its device, as it would on a GPU). Torch's and Pyro's own
    calls are left alone: only ours must follow the data."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if (
            func in FACTORIES
            and kwargs.get("device") is None
            and sys._getframe(1).f_code.co_filename.startswith(PACKAGE)
        ):
            data = args[0] if args else kwargs.get("data")
            if not (func in (torch.tensor, torch.as_tensor) and torch.is_tensor(data)):
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _leaks(obj, device: torch.device, path: str = "out") -> list:
    """Every floating tensor inside ``obj`` (tensors, dicts, lists, tuples, objects' ``__dict__``) that is not
    float64 on ``device``, as ``"path: dtype device"``."""
    if torch.is_tensor(obj):
        ok = not obj.is_floating_point() or obj.dtype == torch.float64
        return [] if ok and obj.device == device else [f"{path}: {obj.dtype} {obj.device}"]
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _leaks(v, device, f"{path}[{k!r}]")]
    if isinstance(obj, (list, tuple)):
        return [x for i, v in enumerate(obj) for x in _leaks(v, device, f"{path}[{i}]")]
    if isinstance(obj, nn.Module):
        return _leaks(dict(obj.state_dict()), device, path)
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("pyro_prune"):
        return _leaks(vars(obj), device, path)
    return []


def _data(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    return x.to(device), (torch.arange(40) % 3).to(device)


def _net(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double().to(device)


def _vi_pipeline(device, prior, guide_cls, rule):
    x, y = _data(device)
    model = pp.bayesianize(_net(device), prior=prior, likelihood=pp.Categorical(40))
    guide = guide_cls(model)
    history = pp.fit(model, guide, [(x[:20], y[:20]), (x[20:], y[20:])], epochs=2, kl_warmup=1, progress=False)
    pred = pp.predict(model, guide, x[:5], num_samples=4)
    result = pp.prune(model, guide, rule=rule)
    small = pp.predict(model, result.guide, x[:5], num_samples=4)
    out = {"loss": history.records[-1]["loss"], "probs": pred.probs, "marginals": pp.marginals(guide),
           "module": result.module, "pruned": small.probs,
           "masks": result.masks, "net_out": result.module(x[:5])}  # fmt: skip
    return out


def _laplace_pipeline(device, structure):
    x, y = _data(device)
    model = pp.bayesianize(_net(device), dist.Normal(0.0, 1.0), pp.Categorical(30))
    guide = pp.laplace_guide(model, (x[:30], y[:30]), structure, rank=4 if structure == "lowrank" else None)
    out = {"evidence": guide.log_marginal_likelihood(2.0), "tau_marglik": guide.optimize_prior_precision()}
    out["tau_val"], scores = tune_prior_precision(guide, (x[30:], y[30:]), [0.1, 1.0, 10.0])
    out.update(marginals=pp.marginals(guide), quantiles=guide.quantiles([0.1, 0.9]), state=guide.state_dict())
    out["glm"] = pp.predict(model, guide, x[:5]).probs
    out["glm_cov"] = guide.glm_predictive(x[:5])
    out["pruned"] = pp.prune(model, guide, rule=pp.rules.Sparsity(0.5)).module(x[:5])
    return out


CPU = torch.device("cpu")
VI = {
    "sparse_vd": (pp.LogUniform(), pp.AutoSparseVD, pp.rules.Sparsity(0.5)),
    "group_log_uniform": (pp.GroupPrior("log-uniform"), pp.AutoGroupSparse, pp.rules.GroupSparsity(0.5)),
    "horseshoe": (pp.GroupPrior("horseshoe", tau0=1.0), pp.AutoGroupSparse, pp.rules.GroupSparsity(0.5)),
}
#: known device leaks in files this test's author does not own (strict: the test fails once they are fixed, so the
#: marker is removed with the fix)


@pytest.mark.parametrize("case", list(VI))
def test_vi_pipeline_keeps_float64_on_the_data_device(case):
    assert torch.get_default_dtype() == torch.float32
    with ForeignDefaultDevice():
        out = _vi_pipeline(CPU, *VI[case])
    assert _leaks(out, CPU) == []


@pytest.mark.parametrize("structure", ["kron", "diag", "full", "lowrank"])
def test_laplace_pipeline_keeps_float64_on_the_data_device(structure):
    assert torch.get_default_dtype() == torch.float32
    with ForeignDefaultDevice():
        out = _laplace_pipeline(CPU, structure)
    assert _leaks(out, CPU) == []


def test_quantiles_of_sparse_vd_on_the_data_device():
    x, y = _data(CPU)
    model = pp.bayesianize(_net(CPU), prior=pp.LogUniform(), likelihood=pp.Categorical(40))
    guide = pp.AutoSparseVD(model)
    guide(x, y)
    with ForeignDefaultDevice():
        out = guide.quantiles([0.1, 0.9])
    assert _leaks(out, CPU) == []


def test_init_improper_to_zero_in_the_models_dtype():
    x, y = _data(CPU)
    model = pp.bayesianize(_net(CPU), prior=pp.LogUniform(), likelihood=pp.Categorical(40))
    init = pp.distributions.init_improper_to_zero(dtype=model.dtype, device=model.device)
    with ForeignDefaultDevice():
        guide = AutoNormal(model, init_loc_fn=init)
        guide(x, y)
    assert _leaks(guide, CPU) == [] and len(list(guide.parameters())) == 8


def test_the_checks_can_fail():
    """Teeth: a package-made tensor without device= becomes meta under the mode, a float32 one is reported, and a
    meta tensor is reported."""
    site = {"name": "w", "fn": pp.distributions.ImproperLogUniform(torch.Size([2]))}
    with ForeignDefaultDevice():
        here = torch.zeros(())  # made by the test, not by the package
        from_pkg = pp.distributions.init_improper_to_zero(site)  # the package, without device=
        placed = pp.distributions.init_improper_to_zero(site, device="cpu", dtype=torch.float64)
    assert here.device == CPU and from_pkg.device.type == "meta" and placed.device == CPU
    assert _leaks(from_pkg, CPU) == ["out: torch.float32 meta"] and _leaks(placed, CPU) == []
    assert _leaks({"a": torch.zeros(2)}, CPU) == ["out['a']: torch.float32 cpu"]
    assert _leaks([torch.zeros(2, dtype=torch.float64, device="meta")], CPU) == ["out[0]: torch.float64 meta"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("structure", ["kron", "diag", "full", "lowrank"])
def test_laplace_pipeline_on_cuda(structure):
    cuda = torch.device("cuda", torch.cuda.current_device())
    assert _leaks(_laplace_pipeline(cuda, structure), cuda) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", list(VI))
def test_vi_pipeline_on_cuda(case):
    cuda = torch.device("cuda", torch.cuda.current_device())
    pyro.set_rng_seed(0)
    assert _leaks(_vi_pipeline(cuda, *VI[case]), cuda) == []


@pytest.mark.parametrize("kind", ["log-uniform", "horseshoe"])
def test_quantiles_of_group_sparse_on_the_data_device(kind):
    x, y = _data(CPU)
    model = pp.bayesianize(_net(CPU), prior=pp.GroupPrior(kind, tau0=1.0), likelihood=pp.Categorical(40))
    guide = pp.AutoGroupSparse(model)
    guide(x, y)
    with ForeignDefaultDevice():
        out = guide.quantiles([0.1, 0.9])
    assert _leaks(out, CPU) == []


def test_a_learned_noise_scale_takes_the_networks_dtype_without_changing_the_users_likelihood():
    x = torch.randn(10, 6, dtype=torch.float64)
    y = torch.randn(10, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    lik = pp.Gaussian(scale="learned", dataset_size=10)
    model = pp.bayesianize(net, prior=dist.Normal(0.0, 1.0), likelihood=lik)
    guide = pp.AutoMeanFieldNormal(model)
    pp.fit(model, guide, (x, y), epochs=2, progress=False)
    assert model.likelihood.scale.dtype == torch.float64
    assert _leaks(model.state_dict(), CPU) == []
    assert all(p.dtype == torch.float32 for p in lik.parameters())  # the user's object is untouched
