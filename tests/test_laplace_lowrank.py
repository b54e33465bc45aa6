"""structure="lowrank": GGN–matrix products against the dense GGN, the randomized eigensolver against ``eigh``, the
full-rank posterior against ``structure="full"``, truncated evidence against its closed form, sampling, state and
argument errors (issue 14, point 6)."""

import copy
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pyro_prune as pp
from pyro_prune import curvature as cv
from pyro_prune.guides.laplace import LaplaceGuide
from tests.helpers import assert_close
from tests.test_laplace import classifier

D = torch.float64


def _operator(net, model, x, y, masks=None, batch_size=15):
    masks = masks or {k: torch.ones(p.numel(), dtype=torch.bool) for k, p in net.named_parameters()}
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)  # 3 batches: the products are accumulated
    return cv.GGNOperator(net, loader, model.likelihood, masks), masks


def _dense_ggn(net, model, x, y, masks):
    ggn, n, _ = cv.full_ggn(net, (x, y), model.likelihood, masks)
    return ggn / n


def test_ggn_products_equal_dense_ggn_times_vectors():
    """C V from jvp/vjp over a 3-batch loader equals the dense mean GGN times V, over all weights and a subnet."""
    net, model, x, y = classifier()
    op, masks = _operator(net, model, x, y)
    V = torch.randn(op.numel, 7, dtype=D)
    assert_close(op.matmul(V), _dense_ggn(net, model, x, y, masks) @ V, rtol=1e-10, atol=1e-12)
    assert op.num_examples == len(x)
    sub = {k: torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) < 0.4 for k, m in masks.items()}
    op, _ = _operator(net, model, x, y, sub)
    V = torch.randn(op.numel, 3, dtype=D)
    assert_close(op.matmul(V), _dense_ggn(net, model, x, y, sub) @ V, rtol=1e-10, atol=1e-12)


def test_top_eigenpairs_equal_eigh():
    """The randomized subspace iteration's top-5 eigenpairs equal ``eigh`` of the dense GGN: eigenvalues to 1e-8
    relative, the eigenspace (principal angles) to 1e-8."""
    net, model, x, y = classifier()
    op, masks = _operator(net, model, x, y)
    lam, U = cv.ggn_eigh(op, 5, cv.Eigensolver(oversample=10, iterations=12, seed=3))
    exact, vecs = torch.linalg.eigh(_dense_ggn(net, model, x, y, masks))
    assert_close(lam, exact.flip(0)[:5], rtol=1e-8, atol=0)
    assert_close(U.T @ U, torch.eye(5, dtype=D), atol=1e-12)
    cosines = torch.linalg.svdvals(vecs.flip(1)[:, :5].T @ U)  # cosines of the principal angles
    assert_close(cosines, torch.ones(5, dtype=D), rtol=0, atol=1e-8)
    few, _ = cv.ggn_eigh(op, 5, cv.Eigensolver(oversample=0, iterations=0, seed=3))  # one pass: not converged
    assert float((few - exact.flip(0)[:5]).abs().max()) > 1e-6


def _pair(rank=None, dtype=D, **kw):
    net, model, x, y = classifier(dtype)
    gf = pp.laplace_guide(model, (x, y), "full", prior_precision=0.7, **kw)
    P = gf.posteriors["full"].numel
    gl = pp.laplace_guide(model, (x, y), "lowrank", prior_precision=0.7, rank=rank or P, **kw)
    return model, x, y, gf, gl


@pytest.mark.parametrize("tau", [0.7, [0.5, 2.0]], ids=["scalar", "per-layer"])
@pytest.mark.parametrize("subnet", [None, "last-layer"])
def test_full_rank_equals_full(tau, subnet):
    """rank = P: log det, evidence, marginal variances and the GLM covariance equal structure='full' to 1e-8."""
    sub = None if subnet is None else pp.subnet.LastLayer()
    model, x, y, gf, gl = _pair(subnet=sub)
    assert list(gl.posteriors) == ["lowrank"] and gl.posteriors["lowrank"].rank == gf.posteriors["full"].numel
    t = torch.as_tensor(tau, dtype=D)
    assert_close(gl._posterior.logdet(t), gf._posterior.logdet(t), rtol=1e-10)
    assert_close(gl.log_marginal_likelihood(t), gf.log_marginal_likelihood(t), rtol=1e-10)
    gf.set_prior_precision(tau)
    gl.set_prior_precision(tau)
    mf, ml = gf.marginals(), gl.marginals()
    for k in mf:
        assert_close(ml[k].scale, mf[k].scale, rtol=1e-8, atol=1e-12, msg=k)
    assert_close(gl.glm_predictive(x[:6])[1], gf.glm_predictive(x[:6])[1], rtol=1e-8, atol=1e-12)
    prec = gl.posteriors["lowrank"]
    assert_close(prec.to_dense(), gf.posteriors["full"].to_dense(), rtol=1e-8, atol=1e-10)


def test_truncated_logdet_and_evidence_closed_form():
    """rank k < P: log det = sum_i log(s lambda_i + tau) + (P - k) log tau from the exact eigenvalues truncated at k,
    and the evidence differs from full's by exactly half the log det difference; marglik maximizes it."""
    model, x, y, gf, gl = _pair(rank=6)
    gl = pp.laplace_guide(
        model, (x, y), "lowrank", prior_precision=0.7, rank=6, eigensolver=cv.Eigensolver(iterations=15)
    )
    P, s = gf.posteriors["full"].numel, model.likelihood.dataset_size
    lam = torch.linalg.eigvalsh(gf.posteriors["full"].ggn).flip(0)[:6]
    for tau in (0.05, 0.7, 20.0):
        t = torch.tensor(tau, dtype=D)
        closed = (s * lam + t).log().sum() + (P - 6) * t.log()
        assert_close(gl._posterior.logdet(t), closed, rtol=1e-8)
        diff = -0.5 * (closed - gf._posterior.logdet(t))
        assert_close(gl.log_marginal_likelihood(t) - gf.log_marginal_likelihood(t), diff, rtol=1e-7, atol=1e-9)
    best = gl.optimize_prior_precision()
    grid = torch.logspace(-3, 2, 2001, dtype=D)
    values = torch.stack([gl.log_marginal_likelihood(t) for t in grid])
    assert_close(best, grid[values.argmax()], rtol=1e-2)
    assert float(gl.log_marginal_likelihood(best)) >= float(values.max()) - 1e-9


@pytest.mark.parametrize("tau", [0.3, "vector"])
def test_square_root_and_samples(tau):
    """R = transform(I) satisfies R R^T = P^{-1} exactly; 200,000 draws have covariance P^{-1} (5 % of the
    largest variance); solve and marginal variances agree with the dense inverse."""
    g = torch.Generator().manual_seed(0)
    n, k = 12, 4
    U = torch.linalg.qr(torch.randn(n, k, dtype=D, generator=g))[0]
    lam = torch.tensor([5.0, 2.0, 0.5, 0.0], dtype=D)
    t = torch.rand(n, dtype=D, generator=g) + 0.2 if tau == "vector" else tau
    prec = cv.LowRank(lam, U, scale=3.0, prior_precision=t)
    cov = torch.linalg.inv(prec.to_dense())
    R = prec.transform(torch.eye(n, dtype=D)).T
    assert_close(R @ R.T, cov, rtol=1e-10, atol=1e-12)
    assert_close(prec.marginal_variance(), cov.diagonal(), rtol=1e-10)
    v = torch.randn(3, n, dtype=D, generator=g)
    assert_close(prec.solve(v), v @ cov, rtol=1e-10, atol=1e-12)
    assert_close(prec.logdet(), torch.linalg.slogdet(prec.to_dense())[1], rtol=1e-10)
    draws = prec.sample((200_000,), generator=g)
    emp = draws.T @ draws / draws.shape[0]
    assert_close(emp, cov, rtol=0, atol=0.05 * float(cov.diagonal().max()))


def test_guide_draws_have_posterior_covariance():
    """The guide's joint draws (through the posterior's square root) have covariance P^{-1} over the weights."""
    model, x, y, gf, gl = _pair(rank=10)
    post = gl._posterior
    eps = torch.randn(50_000, post.numel, dtype=D)
    draws = post.draw([eps])
    flat = torch.cat([(draws[k] - gl.median()[k]).reshape(eps.shape[0], -1) for k in draws], 1)
    cov = torch.linalg.inv(gl.posteriors["lowrank"].to_dense())
    assert_close(flat.T @ flat / eps.shape[0], cov, rtol=0, atol=0.05 * float(cov.diagonal().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_copies_dtype_and_save_load(dtype, tmp_path):
    net, model, x, y = classifier(dtype)
    g = pp.laplace_guide(model, (x, y), "lowrank", rank=8, prior_precision="marglik")
    assert g.posteriors["lowrank"].vecs.dtype == dtype
    x5 = x[:5]
    cov, lml = g.glm_predictive(x5)[1], g.log_marginal_likelihood()
    scale = g.marginals()["0.weight"].scale
    empty = LaplaceGuide(model, None, "lowrank", rank=8)
    empty.load_state_dict(g.state_dict())
    pp.save(tmp_path / "lr.pt", model, g)
    loaded = pp.load(tmp_path / "lr.pt").guide
    for other in (empty, copy.deepcopy(g), pickle.loads(pickle.dumps(g)), loaded):
        assert other.posteriors["lowrank"].rank == 8
        assert_close(other.glm_predictive(x5)[1], cov, rtol=1e-6)
        assert_close(other.log_marginal_likelihood(), lml, rtol=1e-6)
        assert_close(other.marginals()["0.weight"].scale, scale, rtol=1e-6)
    with pytest.raises(ValueError, match="rank"):
        LaplaceGuide(model, None, "lowrank", rank=7).load_state_dict(g.state_dict())
    other = torch.float64 if dtype == torch.float32 else torch.float32
    model2, g2 = copy.deepcopy((model, g))
    model2.to(other)
    g2.to(other)
    assert g2.posteriors["lowrank"].vecs.dtype == other
    assert_close(g2.glm_predictive(x5.to(other))[1], cov.to(other), rtol=1e-4, atol=1e-6)


def test_bad_rank_and_options():
    net, model, x, y = classifier()
    for bad, err in ((0, ValueError), (52, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(err, match="rank"):
            pp.laplace_guide(model, (x, y), "lowrank", rank=bad)
    with pytest.raises(ValueError, match="rank"):
        pp.laplace_guide(model, (x, y), "lowrank")
    with pytest.raises(ValueError, match="rank"):
        pp.laplace_guide(model, (x, y), "kron", rank=3)
    with pytest.raises(TypeError, match="eigensolver"):
        pp.laplace_guide(model, (x, y), "lowrank", rank=3, eigensolver={"iterations": 2})
    with pytest.raises(ValueError, match="iterations"):
        cv.Eigensolver(iterations=-1)
    with pytest.raises(MemoryError, match="rank"):
        pp.laplace_guide(model, (x, y), "lowrank", rank=3, max_memory=100)
    once = iter([(x, y)])  # an iterator: the second pass over the data is empty
    with pytest.raises(ValueError, match="iterates the data several times"):
        pp.laplace_guide(model, once, "lowrank", rank=3)
