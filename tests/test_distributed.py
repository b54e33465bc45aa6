"""Data parallelism with 2 CPU processes (gloo): the LightningModule's loss gives, after DDP's gradient averaging,
the single-process gradient on the concatenated batch; curvature all-reduced over shards equals one process's.

One ``torch.multiprocessing.spawn`` runs every case (start-up dominates); the single-process references are computed
here, independently, by the same library functions on the concatenated data.
"""

from __future__ import annotations

import gc
import os
import time

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
import pyro_prune.model.layers as pp_layers
from pyro_prune.distributed import all_reduce_curvature, all_reduce_sums
from pyro_prune.guides.laplace.heldout import tune_prior_precision
from tests.helpers import assert_close

pytest.importorskip("lightning")
from pyro_prune.lightning import BayesianLightningModule  # noqa: E402

N, WORLD = 40, 2
#: (case, guide, alpha_on / alpha / particles, the two workers' batch sizes)
CASES = {
    "fused": ("sparse_vd", dict(), (8, 8)),
    "fused_uneven": ("sparse_vd", dict(), (5, 3)),
    "power": ("sparse_vd", dict(alpha=0.5, alpha_on="likelihood", num_particles=2), (6, 4)),
    "elbo_uneven": ("delta", dict(), (6, 2)),
}


def _noise(mean: torch.Tensor, sample_shape: torch.Size, trailing: int) -> torch.Tensor:
    """Deterministic 'noise' of each example (a function of its own pre-activation): a worker draws the same noise
    for an example as one process does for it within the concatenated batch."""
    return torch.sin(37.0 * mean.detach())


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 6, generator=g, dtype=dtype), torch.randint(0, 3, (N,), generator=g)


def _module(kind: str, options: dict) -> BayesianLightningModule:
    pyro.set_rng_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    prior = pp.LogUniform() if kind == "sparse_vd" else dist.Normal(0.0, 1.0)
    model = pp.bayesianize(net, prior=prior, likelihood=pp.Categorical(N))
    if kind == "sparse_vd":
        guide = pp.AutoSparseVD(model)
    else:
        guide = pyro.infer.autoguide.AutoDelta(model)
    x, y = _data()
    module = BayesianLightningModule(model, guide, kl_weight=0.7, example=(x[:4], y[:4]), **options)
    with torch.no_grad():  # move away from the initialization so that every gradient is non-trivial
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def _rows(sizes, rank):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


class _Loss(nn.Module):
    """What DDP wraps: the module's loss as a forward (DDP averages the gradients of its parameters)."""

    def __init__(self, module: BayesianLightningModule):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.module.loss((x, y), beta=0.7)[0]


def _grads(module: nn.Module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _curvature_nets():
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()
    return {"mlp": (mlp, {"0": True, "2": True}, (6,)), "conv": (conv, {"0": True, "3": False}, (1, 6))}


def _curvature_data(shape):
    g = torch.Generator().manual_seed(4)
    return torch.randn(12, *shape, generator=g, dtype=torch.float64), torch.arange(12) % 3


#: the two workers' shards of the 12 curvature examples (uneven)
SHARDS = (slice(0, 7), slice(7, 12))


def _curvature(net, layers, x, y):
    return pp.curvature.kfac(net, (x, y), pp.Categorical(N), layers, diagonal=True)


def _laplace_summary(net, x, y):
    """KFAC ``laplace_guide`` on ``(x, y)``: its log evidence at two τ and the marginal std of every weight."""
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(12))
    guide = pp.laplace_guide(model, (x, y), "kron", prior_precision=1.0)
    out = {"evidence_1": guide.log_marginal_likelihood(1.0), "evidence_3": guide.log_marginal_likelihood(3.0)}
    out.update({site: m.scale for site, m in pp.marginals(guide).items()})
    return out


#: the two workers' shards of the 9 held-out examples of the tau tuning (uneven)
VAL_SHARDS = (slice(0, 4), slice(4, 9))
GRID = torch.logspace(-2, 3, 11, dtype=torch.float64)


def _val_data():
    g = torch.Generator().manual_seed(5)
    return torch.randn(9, 6, generator=g, dtype=torch.float64), torch.arange(9) % 3


def _laplace_dense(net, x, y, xv, yv):
    """``laplace_guide`` ``"full"`` and ``"lowrank"`` on ``(x, y)``: evidence at two tau, marginal std, the tau
    maximizing the evidence, and the tau (and its scores) chosen on held-out ``(xv, yv)``."""
    out = {}
    for structure, rank in (("full", None), ("lowrank", 4)):  # rank 4 + oversample 10 < 53 weights: iterations
        model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(12))
        guide = pp.laplace_guide(model, (x, y), structure, prior_precision=1.0, rank=rank)
        out[f"{structure}_evidence_1"] = guide.log_marginal_likelihood(1.0)
        out[f"{structure}_evidence_3"] = guide.log_marginal_likelihood(3.0)
        out.update({f"{structure}_{site}": m.scale for site, m in pp.marginals(guide).items()})
        out[f"{structure}_marglik_tau"] = guide.optimize_prior_precision().clone()
        tau, scores = tune_prior_precision(guide, (xv, yv), GRID)
        out[f"{structure}_val_tau"], out[f"{structure}_val_scores"] = tau.clone(), torch.tensor(scores)
    return out


def _ddp_gradients(x: torch.Tensor, y: torch.Tensor, rank: int) -> dict:
    """Each case's gradients under DDP; the DDP wrappers are released when this returns, before the process group
    is destroyed."""
    out = {}
    for case, (kind, options, sizes) in CASES.items():
        ddp = torch.nn.parallel.DistributedDataParallel(_Loss(_module(kind, options)))
        rows = _rows(sizes, rank)
        ddp(x[rows], y[rows]).backward()
        out[case] = _grads(ddp.module)
        del ddp
    return out


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        pp_layers._noise_like = _noise
        x, y = _data()
        out = _ddp_gradients(x, y, rank)
        for name, (net, layers, shape) in _curvature_nets().items():
            xs, ys = _curvature_data(shape)
            out[name] = all_reduce_curvature(_curvature(net, layers, xs[SHARDS[rank]], ys[SHARDS[rank]]))
            out[f"laplace_{name}"] = _laplace_summary(net, xs[SHARDS[rank]], ys[SHARDS[rank]])
        net, _, shape = _curvature_nets()["mlp"]
        xs, ys = _curvature_data(shape)
        xv, yv = _val_data()
        out["dense"] = _laplace_dense(
            net, xs[SHARDS[rank]], ys[SHARDS[rank]], xv[VAL_SHARDS[rank]], yv[VAL_SHARDS[rank]]
        )
        torch.save(out, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        gc.collect()  # no DDP Reducer may outlive the process group (its destructor would join gloo's threads
        torch.distributed.destroy_process_group()  # while holding the GIL they wait for: a deadlock)


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """Run :func:`_worker` in 2 processes; returns each rank's results and the wall time of the spawn."""
    folder = str(tmp_path_factory.mktemp("ddp"))
    t0 = time.perf_counter()
    torch.multiprocessing.spawn(_worker, args=(folder,), nprocs=WORLD, join=True)
    seconds = time.perf_counter() - t0
    return [torch.load(os.path.join(folder, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)], seconds


def _reference_grads(case: str, monkeypatch, rows=None):
    kind, options, sizes = CASES[case]
    monkeypatch.setattr(pp_layers, "_noise_like", _noise)
    module = _module(kind, options)
    x, y = _data()
    rows = slice(0, sum(sizes)) if rows is None else rows
    module.loss((x[rows], y[rows]), beta=0.7)[0].backward()
    return {f"module.{n}": g for n, g in _grads(module).items()}


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_gradient_equals_single_process_on_concatenated_batch(spawned, case, monkeypatch):
    ranks, _ = spawned
    expected = _reference_grads(case, monkeypatch)
    for rank, out in enumerate(ranks):
        assert set(out[case]) == set(expected) and expected
        for name, g in expected.items():
            assert g.abs().max() > 1e-3, f"{case}: the gradient of {name} is trivial"
            assert_close(out[case][name], g, rtol=1e-10, atol=1e-10, msg=f"{case}, rank {rank}, {name}:")


def test_unscaled_shards_would_differ(monkeypatch):
    """Teeth: averaging the shards' gradients *without* the factor c_r (uneven batches) is not the concatenated
    batch's gradient, so the test above can see a wrong scaling."""
    expected = _reference_grads("fused_uneven", monkeypatch)
    sizes = CASES["fused_uneven"][2]
    parts = [_reference_grads("fused_uneven", monkeypatch, _rows(sizes, r)) for r in range(WORLD)]
    naive = {n: sum(p[n] for p in parts) / WORLD for n in expected}
    assert max(float((naive[n] - expected[n]).abs().max()) for n in expected) > 1e-2


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_all_reduced_curvature_equals_one_process(spawned, name):
    ranks, _ = spawned
    net, layers, shape = _curvature_nets()[name]
    x, y = _curvature_data(shape)
    expected = _curvature(net, layers, x, y)
    for rank, out in enumerate(ranks):
        got = out[name]
        assert got.num_examples == expected.num_examples == 12
        assert_close(got.log_likelihood, expected.log_likelihood, rtol=1e-12)
        for layer, f in expected.layers.items():
            for what in ("A", "G", "diag"):
                assert_close(getattr(got.layers[layer], what), getattr(f, what), rtol=1e-10, atol=1e-12,
                             msg=f"{name} rank {rank} layer {layer} {what}:")  # fmt: skip
            assert got.layers[layer].positions == f.positions


def test_curvature_all_reduce_is_identity_in_one_process():
    net, layers, shape = _curvature_nets()["mlp"]
    res = _curvature(net, layers, *_curvature_data(shape))
    assert all_reduce_curvature(res) is res
    with pytest.raises(TypeError, match="curvature must be"):
        all_reduce_curvature({"0": res})


def test_two_processes_under_a_minute(spawned):
    assert spawned[1] < 60.0, f"the 2-process spawn took {spawned[1]:.1f} s"


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_laplace_guide_on_shards_equals_one_process(spawned, name):
    """``laplace_guide`` all-reduces its KFAC sums under a process group: each worker's guide, fitted on its shard,
    has the evidence and marginals of one process's guide on the union."""
    ranks, _ = spawned
    net, _, shape = _curvature_nets()[name]
    expected = _laplace_summary(net, *_curvature_data(shape))
    for rank, out in enumerate(ranks):
        for key, value in expected.items():
            assert_close(out[f"laplace_{name}"][key], value, rtol=1e-10, atol=1e-12, msg=f"{name} rank {rank} {key}:")


@pytest.fixture(scope="module")
def dense_reference():
    net, _, shape = _curvature_nets()["mlp"]
    return _laplace_dense(net, *_curvature_data(shape), *_val_data())


@pytest.mark.parametrize("structure", ["full", "lowrank"])
def test_dense_laplace_on_shards_equals_one_process(spawned, dense_reference, structure):
    """``"full"`` (the dense GGN) and ``"lowrank"`` (every GGN product of the subspace iteration) are summed over the
    workers' shards: evidence, marginals and the evidence-maximizing tau of each worker's guide equal one process's
    on the union of the shards."""
    ranks, _ = spawned
    keys = [k for k in dense_reference if k.startswith(structure + "_") and "_val_" not in k]
    assert len(keys) >= 6
    for rank, out in enumerate(ranks):
        for key in keys:
            assert_close(out["dense"][key], dense_reference[key], rtol=1e-8, atol=1e-10, msg=f"rank {rank} {key}:")


@pytest.mark.parametrize("structure", ["full", "lowrank"])
def test_heldout_tau_on_shards_equals_one_process(spawned, dense_reference, structure):
    """The held-out tau tuning sums its GLM log-likelihoods over the workers' shards of the validation data: each
    worker's scores and chosen tau equal one process's on the union of the shards."""
    ranks, _ = spawned
    for rank, out in enumerate(ranks):
        for key in (f"{structure}_val_scores", f"{structure}_val_tau"):
            assert_close(out["dense"][key], dense_reference[key], rtol=1e-10, atol=1e-10, msg=f"rank {rank} {key}:")


def test_shards_alone_differ_from_the_union(dense_reference):
    """Teeth: one shard's guide and held-out scores differ from the union's, so the two tests above see a missing
    reduce."""
    net, _, shape = _curvature_nets()["mlp"]
    x, y = _curvature_data(shape)
    xv, yv = _val_data()
    alone = _laplace_dense(net, x[SHARDS[0]], y[SHARDS[0]], xv[VAL_SHARDS[0]], yv[VAL_SHARDS[0]])
    for key in ("full_evidence_1", "lowrank_evidence_1", "full_marglik_tau", "lowrank_val_scores"):
        assert float((alone[key] - dense_reference[key]).abs().max()) > 1e-3, key


def test_all_reduce_sums_is_identity_in_one_process():
    t = torch.ones(3)
    total, count, loglik = all_reduce_sums(t, 4, -1.5)
    assert total is t and (count, loglik) == (4, -1.5)
    with pytest.raises(TypeError, match="total must be a tensor"):
        all_reduce_sums([1.0], 1, 0.0)
