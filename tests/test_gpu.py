"""The main pipeline on a CUDA device (``-m gpu``; every test is skipped without CUDA): fit (fused and SVI paths),
predict, prune, Laplace (KFAC, GLM predictive), compact, and the LightningModule, in float32 and float64, every
result on the device of the data and parameters, and the fused fit equal to the same run on the CPU."""

from __future__ import annotations

import pyro
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from tests.helpers import assert_close

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def _data(dtype, device, n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 12, generator=g, dtype=dtype)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    return x.to(device), y.to(device)


def _model(dtype, device, n=256):
    pyro.set_rng_seed(0)
    net = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3)).to(device=device, dtype=dtype)
    return pp.bayesianize(net, prior=pp.LogUniform(), likelihood=pp.Categorical(n))


def _on(t: torch.Tensor, device, dtype=None) -> None:
    assert t.device.type == device.type, f"a result is on {t.device}, not {device}"
    if dtype is not None and t.is_floating_point():
        assert t.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_vd_pipeline_on_cuda(dtype):
    x, y = _data(dtype, CUDA)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=False)
    model = _model(dtype, CUDA)
    guide = pp.AutoSparseVD(model)
    history = pp.fit(model, guide, loader, epochs=3, lr=1e-2, kl_warmup=1, val_data=(x, y), val_samples=4,
                     progress=False)  # fmt: skip
    assert history.last["val_accuracy"] > 0.5
    for p in guide.parameters():
        _on(p, CUDA, dtype)
    pred = pp.predict(model, guide, x, num_samples=8)
    _on(pred.probs, CUDA, dtype)
    result = pp.prune(model, guide, rule=pp.rules.Sparsity(0.8))
    _on(next(result.module.parameters()), CUDA, dtype)
    _on(pp.predict(model, result.guide, x, num_samples=4).probs, CUDA, dtype)
    net = result.module
    keep = {name: m.weight.ne(0).any(0) for name, m in net.named_modules() if isinstance(m, nn.Linear)}
    small = pp.compact(net, keep, x[:4])
    _on(small.module(x[:4]), CUDA, dtype)
    assert_close(small.module(x[:8]), net(x[:8]), rtol=1e-4, atol=1e-4)


def test_guide_on_cuda_equals_cpu_in_float64():
    """The guide set up on either device from the same network and data has the same KL (deterministic)."""
    kl = {}
    for device in (torch.device("cpu"), CUDA):
        model = _model(torch.float64, device)
        guide = pp.AutoSparseVD(model)
        x, y = _data(torch.float64, device)
        guide(x[:4], y[:4])
        _on(guide.total_kl(), device, torch.float64)
        kl[device.type] = float(guide.total_kl())
    assert_close(kl["cuda"], kl["cpu"], rtol=1e-10)


def test_svi_and_laplace_on_cuda():
    x, y = _data(torch.float32, CUDA)
    model = _model(torch.float32, CUDA)
    guide = pyro.infer.autoguide.AutoNormal(model, init_scale=0.05)
    pp.fit(model, guide, (x, y), epochs=5, lr=1e-2, progress=False)
    _on(pp.predict(model, guide, x, num_samples=4).probs, CUDA)
    lap = pp.laplace_guide(model, (x, y), structure="kron", map_from=guide)
    pred = pp.predict(model, lap, x)  # GLM predictive by default
    _on(pred.probs, CUDA)
    _on(pp.predict(model, lap, x, method="mc", num_samples=4).probs, CUDA)
    scores = pp.evaluate(model, lap, (x, y))
    assert 0.0 <= scores["accuracy"] <= 1.0
    diag = pp.laplace_guide(model, (x, y), structure="diag", map_from=guide, prior_precision="marglik")
    _on(pp.predict(model, diag, x).probs, CUDA)


def test_lightning_module_on_cuda():
    lightning = pytest.importorskip("lightning")
    from pyro_prune.lightning import BayesianLightningModule

    x, y = _data(torch.float32, torch.device("cpu"))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    model = _model(torch.float32, torch.device("cpu"))
    guide = pp.AutoSparseVD(model)
    module = BayesianLightningModule(model, guide, lr=1e-2, example=(x[:4], y[:4]), val_samples=4)
    trainer = lightning.pytorch.Trainer(max_epochs=2, accelerator="gpu", devices=1, logger=False,
                                        enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
    trainer.fit(module, loader, loader)
    assert len(module.history) == 2 and module.history.last["val_accuracy"] > 0.4
    _on(next(guide.parameters()), CUDA)
