"""Curvature: Kron/Diag/Dense against dense algebra, KFAC factors and exact GGN diagonals against torch.func."""

import math

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, jacrev

import pyro_prune as pp
from pyro_prune import curvature as cv
from tests.helpers import assert_close

D = torch.float64


def spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=D)
    return m @ m.T / n + 0.1 * torch.eye(n, dtype=D)


def test_kron_matches_dense():
    A, G = spd(4, 0), spd(3, 1)
    k = cv.Kron.from_factors(A, G, scale=7.0, prior_precision=0.5)
    dense = 7.0 * torch.kron(G, A) + 0.5 * torch.eye(12, dtype=D)
    assert_close(k.to_dense(), dense, rtol=1e-10, atol=1e-12)
    assert_close(k.logdet(), torch.linalg.slogdet(dense)[1], rtol=1e-10)
    cov = torch.linalg.inv(dense)
    assert_close(k.marginal_variance().flatten(), cov.diagonal(), rtol=1e-10)
    V = torch.randn(2, 3, 4, dtype=D)
    assert_close(k.solve(V).reshape(2, 12), torch.linalg.solve(dense, V.reshape(2, 12).T).T, rtol=1e-9, atol=1e-12)
    assert_close(k.matmul(V).reshape(2, 12), V.reshape(2, 12) @ dense, rtol=1e-9, atol=1e-12)
    # the sampling map is a square root of the covariance: T T^T = P^{-1} exactly
    T = k.transform(torch.eye(12, dtype=D).reshape(12, 3, 4)).reshape(12, 12)
    assert_close(T.T @ T, cov, rtol=1e-9, atol=1e-12)
    # Monte Carlo: 200k draws; tolerance 3% of the largest covariance entry (std error ~ 0.3% of it)
    draws = k.sample((200_000,)).reshape(-1, 12)
    emp = draws.T @ draws / draws.shape[0]
    assert_close(emp, cov, rtol=0, atol=0.03 * float(cov.abs().max()))


def test_kron_with_prior_keeps_eigendecomposition_and_grad():
    k = cv.Kron.from_factors(spd(3, 2), spd(2, 3), scale=3.0)
    tau = torch.tensor(0.7, dtype=D, requires_grad=True)
    ld = k.with_prior(tau).logdet()
    ld.backward()
    dense = lambda t: 3.0 * torch.kron(spd(2, 3), spd(3, 2)) + t * torch.eye(6, dtype=D)  # noqa: E731
    assert_close(tau.grad, torch.linalg.inv(dense(0.7)).trace(), rtol=1e-9)


def test_diag_and_dense_match_dense_algebra():
    d = torch.rand(3, 4, dtype=D)
    p = cv.Diag(d, scale=5.0, prior_precision=2.0)
    dense = torch.diag(5.0 * d.flatten() + 2.0)
    assert_close(p.to_dense(), dense)
    assert_close(p.logdet(), torch.logdet(dense), rtol=1e-10)
    assert_close(p.marginal_variance().flatten(), 1 / dense.diagonal(), rtol=1e-10)
    M = spd(5, 4)
    q = cv.Dense(M, scale=2.0, prior_precision=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=D))
    dq = 2.0 * M + torch.diag(torch.arange(1.0, 6.0, dtype=D))
    assert_close(q.logdet(), torch.logdet(dq), rtol=1e-10)
    assert_close(q.marginal_variance(), torch.linalg.inv(dq).diagonal(), rtol=1e-9)
    assert_close(q.covariance(), torch.linalg.inv(dq), rtol=1e-9, atol=1e-12)
    v = torch.randn(2, 5, dtype=D)
    assert_close(q.solve(v), torch.linalg.solve(dq, v.T).T, rtol=1e-9, atol=1e-12)
    T = q.transform(torch.eye(5, dtype=D))
    assert_close(T.T @ T, torch.linalg.inv(dq), rtol=1e-9, atol=1e-12)
    s = cv.Dense(M, scale=2.0, prior_precision=0.3)
    assert_close(s.logdet(), torch.logdet(2.0 * M + 0.3 * torch.eye(5, dtype=D)), rtol=1e-10)


def precisions():
    M, d = spd(6, 5), torch.rand(2, 3, dtype=D)
    return {
        "kron": cv.Kron.from_factors(spd(3, 6), spd(2, 7), scale=4.0, prior_precision=0.5),
        "diag": cv.Diag(d, scale=3.0, prior_precision=0.7),
        "dense": cv.Dense(M, scale=2.0, prior_precision=0.4),
        "dense_vector": cv.Dense(M, scale=2.0, prior_precision=torch.arange(1.0, 7.0, dtype=D)),
    }


@pytest.mark.parametrize("kind", ["kron", "diag", "dense", "dense_vector"])
def test_precision_contract(kind):
    """Every Precision against its own dense matrix: logdet, eigenvalues, solve, matmul, the covariance square root,
    marginal variances, with_prior (no new decomposition needed) and sample shapes."""
    p = precisions()[kind]
    assert isinstance(p, cv.Precision) and p.numel == 6
    P = p.to_dense()
    cov = torch.linalg.inv(P)
    assert_close(p.logdet(), torch.linalg.slogdet(P)[1], rtol=1e-10)
    assert_close(p.eigenvalues().flatten().sort().values, torch.linalg.eigvalsh(P), rtol=1e-9)
    V = torch.randn((2,) + tuple(p.shape), dtype=D)
    assert_close(p.solve(V).reshape(2, 6), torch.linalg.solve(P, V.reshape(2, 6).T).T, rtol=1e-9, atol=1e-12)
    assert_close(p.matmul(V).reshape(2, 6), V.reshape(2, 6) @ P, rtol=1e-9, atol=1e-12)
    T = p.transform(torch.eye(6, dtype=D).reshape((6,) + tuple(p.shape))).reshape(6, 6)
    assert_close(T.T @ T, cov, rtol=1e-9, atol=1e-12)
    assert_close(p.marginal_variance().flatten(), cov.diagonal(), rtol=1e-9)
    q = p.with_prior(2.5)
    eye = torch.eye(6, dtype=D)
    prior = p.prior_precision if p.prior_precision.dim() == 0 else torch.diag(p.prior_precision)
    assert_close(q.to_dense(), P - prior * (eye if p.prior_precision.dim() == 0 else 1) + 2.5 * eye, rtol=1e-10)
    assert p.sample((4, 5)).shape == (4, 5) + tuple(p.shape)


def test_precision_is_abstract():
    class Partial(cv.Precision):
        shape = (1,)

    with pytest.raises(TypeError, match="abstract"):
        Partial()


# ---------------------------------------------------------------------------------------------------------
def mlp(dtype=D, out=3, bias=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5, bias=bias), nn.Tanh(), nn.Linear(5, out, bias=bias)).to(dtype)


def exact_ggn_blocks(net, x, lik):
    """Dense GGN over every parameter (flattened in named_parameters order), by torch.func.jacrev."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    J = jacrev(lambda p: cv.flatten_output(lik, functional_call(net, p, (x,))))(params)
    J = torch.cat([J[k].reshape(x.shape[0], -1, params[k].numel()) for k in params], -1)
    f = cv.flatten_output(lik, net(x)).detach()
    H = cv.output_hessian(lik, f)
    return torch.einsum("bkp,bkl,blq->pq", J, H, J), params


def layer_matrix_order(net, name, has_bias=True):
    """Indices of the flat named_parameters vector arranged as the layer's (out, in+1) matrix."""
    sizes = {k: v.numel() for k, v in net.named_parameters()}
    offs, pos = {}, 0
    for k, n in sizes.items():
        offs[k] = pos
        pos += n
    w = net.get_submodule(name).weight
    idx = torch.arange(w.numel()).reshape(w.shape[0], -1) + offs[f"{name}.weight"]
    if has_bias:
        idx = torch.cat([idx, (torch.arange(w.shape[0]) + offs[f"{name}.bias"]).unsqueeze(1)], 1)
    return idx.flatten()


@pytest.mark.parametrize("lik", [pp.Categorical(40), pp.Gaussian(40, scale=0.7), pp.Bernoulli(40)])
def test_exact_diagonal_ggn_matches_jacrev(lik):
    out = 1 if isinstance(lik, pp.Bernoulli) else 3
    net = mlp(out=out)
    x = torch.randn(40, 4, dtype=D)
    y = {pp.Categorical: torch.randint(0, 3, (40,)), pp.Bernoulli: torch.randint(0, 2, (40,)).to(D)}.get(
        type(lik), torch.randn(40, 3, dtype=D)
    )
    res = cv.kfac(net, (x, y), lik, {"0": True, "2": True}, factors=False, diagonal=True)
    ggn, _ = exact_ggn_blocks(net, x, lik)
    for name in ("0", "2"):
        idx = layer_matrix_order(net, name)
        assert_close(res.layers[name].diag.flatten() * 40, ggn.diagonal()[idx], rtol=1e-9, atol=1e-12)
    assert_close(res.log_likelihood, float(lik.log_likelihood(net(x).detach(), y).sum()), rtol=1e-10)


def test_kfac_last_layer_exact_for_gaussian_and_kron_diagonal_close():
    """With a Gaussian likelihood the last layer's G = I/σ² is constant, so its KFAC block is exact; the first
    layer's KFAC diagonal approximates the exact one (stated tolerance: relative Frobenius error < 0.5)."""
    net = mlp()
    lik = pp.Gaussian(64, scale=0.5)
    x, y = torch.randn(64, 4, dtype=D), torch.randn(64, 3, dtype=D)
    res = cv.kfac(net, (x, y), lik, {"0": True, "2": True}, diagonal=True)
    ggn, _ = exact_ggn_blocks(net, x, lik)
    idx = layer_matrix_order(net, "2")
    f2 = res.layers["2"]
    assert_close(64 * torch.kron(f2.G, f2.A), ggn[idx][:, idx], rtol=1e-9, atol=1e-12)
    f0 = res.layers["0"]
    kdiag = 64 * torch.outer(f0.G.diagonal(), f0.A.diagonal())
    exact = res.layers["0"].diag * 64
    rel = float((kdiag - exact).norm() / exact.norm())
    assert rel < 0.5, rel
    assert_close(exact.flatten(), ggn.diagonal()[layer_matrix_order(net, "0")], rtol=1e-9)


def test_one_linear_layer_gaussian_kfac_is_exact():
    net = nn.Sequential(nn.Linear(3, 2, bias=False)).to(D)
    lik = pp.Gaussian(30, scale=0.3)
    x, y = torch.randn(30, 3, dtype=D), torch.randn(30, 2, dtype=D)
    res = cv.kfac(net, (x, y), lik, {"0": False})
    ggn, _ = exact_ggn_blocks(net, x, lik)
    f = res.layers["0"]
    assert_close(30 * torch.kron(f.G, f.A), ggn, rtol=1e-10, atol=1e-12)
    assert_close(ggn, torch.kron(torch.eye(2, dtype=D), x.T @ x) / 0.09, rtol=1e-10)


def test_factors_invariant_to_batch_splitting():
    net = mlp()
    x, y = torch.randn(50, 4, dtype=D), torch.randint(0, 3, (50,))
    one = cv.kfac(net, (x, y), pp.Categorical(50), {"0": True, "2": True}, diagonal=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    for chunk_rows in (0, 16):  # batches of 7 as they come, or merged into chunks of <= 16 rows
        many = cv.kfac(net, loader, pp.Categorical(50), {"0": True, "2": True}, diagonal=True, chunk_rows=chunk_rows)
        assert one.num_examples == many.num_examples == 50
        for name in ("0", "2"):
            for attr in ("A", "G", "diag"):
                assert_close(getattr(many.layers[name], attr), getattr(one.layers[name], attr), rtol=1e-10, atol=1e-14)
        assert_close(many.log_likelihood, one.log_likelihood, rtol=1e-10)


def test_mc_fisher_approaches_exact():
    net = mlp()
    x, y = torch.randn(30, 4, dtype=D), torch.randint(0, 3, (30,))
    exact = cv.kfac(net, (x, y), pp.Categorical(30), {"2": True})
    g = torch.Generator().manual_seed(0)
    mc = cv.kfac(net, (x, y), pp.Categorical(30), {"2": True}, fisher="mc", mc_samples=4000, generator=g)
    G0, G1 = exact.layers["2"].G, mc.layers["2"].G
    assert float((G1 - G0).norm() / G0.norm()) < 0.05
    assert_close(mc.layers["2"].A, exact.layers["2"].A)


class ConvNet(nn.Module):
    def __init__(self, d2=True):
        super().__init__()
        conv = nn.Conv2d(2, 3, 3, padding=1, stride=2) if d2 else nn.Conv1d(2, 3, 3, padding=1, dilation=2)
        self.body = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * (9 if d2 else 4), 2))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("d2", [True, False])
def test_conv_patches_exact_diagonal(d2):
    torch.manual_seed(0)
    net = ConvNet(d2).to(D)
    x = torch.randn(8, 2, 6, 6, dtype=D) if d2 else torch.randn(8, 2, 6, dtype=D)
    y = torch.randint(0, 2, (8,))
    lik = pp.Categorical(8)
    res = cv.kfac(net, (x, y), lik, {"body.0": True, "body.3": True}, diagonal=True)
    ggn, _ = exact_ggn_blocks(net, x, lik)
    for name in ("body.0", "body.3"):
        idx = layer_matrix_order(net, name)
        assert_close(res.layers[name].diag.flatten() * 8, ggn.diagonal()[idx], rtol=1e-9, atol=1e-12)
    # KFC: A averages patches over positions, T = output positions
    assert res.layers["body.0"].positions == (9 if d2 else 4)
    assert res.layers["body.0"].A.shape == (2 * (9 if d2 else 3) + 1,) * 2


def test_batchnorm_and_inplace_relu_do_not_break_hooks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(inplace=True), nn.Linear(5, 3)).to(D)
    net.eval()
    x, y = torch.randn(20, 4, dtype=D), torch.randint(0, 3, (20,))
    res = cv.kfac(net, (x, y), pp.Categorical(20), {"0": True, "3": True}, diagonal=True)
    ggn, _ = exact_ggn_blocks(net, x, pp.Categorical(20))
    idx = layer_matrix_order(net, "0")
    assert_close(res.layers["0"].diag.flatten() * 20, ggn.diagonal()[idx], rtol=1e-9, atol=1e-12)


def test_curvature_errors():
    net = mlp()
    x, y = torch.randn(5, 4, dtype=D), torch.randint(0, 3, (5,))
    with pytest.raises(ValueError, match="fisher"):
        cv.kfac(net, (x, y), pp.Categorical(5), {"0": True}, fisher="bad")
    with pytest.raises(ValueError, match="no examples"):
        cv.kfac(net, [], pp.Categorical(5), {"0": True})
    with pytest.raises(ValueError, match="NaN"):
        cv.kfac(net, (x * math.nan, y), pp.Categorical(5), {"0": True})
    with pytest.raises(ValueError, match="heteroscedastic|fixed or learned"):
        cv.kfac(net, (x, torch.randn(5, dtype=D)), pp.Gaussian(5, scale="heteroscedastic"), {"0": True})
    with pytest.raises(ValueError, match="Tanh"):
        cv.kfac(net, (x, y), pp.Categorical(5), {"1": True})
    with pytest.raises(TypeError, match="data"):
        cv.kfac(net, x, pp.Categorical(5), {"0": True})


def test_logdet_curvature_scale_against_slogdet_and_dense_spectrum_shared():
    """Precision.logdet(curvature_scale=c) == slogdet(c·s·C + τ) for Kron, Diag and Dense (scalar and vector τ),
    with the gradient in c; Dense computes its GGN eigenvalues once for every with_prior copy."""
    c = torch.tensor(0.3, dtype=D, requires_grad=True)
    A, G, M, d = spd(4, 5), spd(3, 6), spd(6, 7), torch.rand(3, 4, dtype=D)
    tau_vec = torch.linspace(0.5, 2.0, 6, dtype=D)
    cases = [
        (cv.Kron.from_factors(A, G, scale=7.0, prior_precision=0.5), 7.0 * torch.kron(G, A), 0.5),
        (cv.Diag(d, scale=5.0, prior_precision=2.0), torch.diag(5.0 * d.flatten()), 2.0),
        (cv.Dense(M, scale=2.0, prior_precision=1.5), 2.0 * M, 1.5),
        (cv.Dense(M, scale=2.0, prior_precision=tau_vec), 2.0 * M, tau_vec),
    ]
    for p, curv, tau in cases:
        prior = torch.diag(torch.as_tensor(tau, dtype=D).expand(curv.shape[0]))
        assert_close(p.logdet(), torch.linalg.slogdet(curv + prior)[1], rtol=1e-10)
        got = p.logdet(curvature_scale=c)
        want = torch.linalg.slogdet(c * curv + prior)[1]
        assert_close(got, want, rtol=1e-10)
        assert_close(torch.autograd.grad(got, c)[0], torch.autograd.grad(want, c)[0], rtol=1e-8)
    p = cv.Dense(M, scale=2.0)
    copies = [p.with_prior(t) for t in (0.1, 1.0, 10.0)]
    copies[0].logdet()
    assert all(q.state()["eig"] is copies[0].state()["eig"] for q in [p] + copies)


def test_dense_eigenvalues_keep_the_small_ones_of_a_float32_ggn():
    """The evidence's log det(GGN + τI) of an ill-conditioned float32 GGN equals float64 arithmetic on the same
    matrix (eigenvalues computed in float64); float32 ``eigvalsh`` is 2 % off here (and can return NaN)."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=torch.float64))
    ggn = ((q * torch.logspace(-6, 4, 300, dtype=torch.float64)) @ q.T).float()
    exact = torch.log(torch.linalg.eigvalsh(ggn.double()).clamp_min(0) + 1e-5).sum()
    dense = pp.curvature.Dense(ggn, 1.0, 1e-5)
    assert dense.curvature_eigenvalues().dtype == torch.float32
    assert abs(float(dense.logdet()) - float(exact)) < 1e-6 * abs(float(exact))
    float32_eig = torch.log(torch.linalg.eigvalsh(ggn).clamp_min(0) + 1e-5).sum()
    assert abs(float(float32_eig) - float(exact)) > 1e-3 * abs(float(exact))  # what the float64 pass avoids


def test_dense_eigenvalues_of_a_non_finite_ggn_raise():
    ggn = torch.eye(3)
    ggn[0, 1] = ggn[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        pp.curvature.Dense(ggn, 1.0, 1.0).curvature_eigenvalues()


# ---------------------------------------------------------------------------------------------------------
# the dense GGN: blockwise over whole layers (layer_ggn) against per-example Jacobians and jacrev of the batch


class WideInput(nn.Module):
    """A Linear layer on ``(B, 2, 3)`` inputs (two positions per example), then a bias-free Linear head."""

    def __init__(self):
        super().__init__()
        self.inner, self.head = nn.Linear(3, 4), nn.Linear(8, 3, bias=False)

    def forward(self, x):
        return self.head(torch.tanh(self.inner(x)).flatten(1))


def ggn_case(case):
    """``(net, x, y, likelihood)`` of one layer_ggn test case, float64."""
    torch.manual_seed(0)
    if case == "conv":
        net, x = ConvNet(True).to(D), torch.randn(11, 2, 6, 6, dtype=D)
        return net, x, torch.randint(0, 2, (11,)), pp.Categorical(11)
    if case == "positions":
        return WideInput().to(D), torch.randn(11, 2, 3, dtype=D), torch.randint(0, 3, (11,)), pp.Categorical(11)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 6, bias=False), nn.ReLU(), nn.Linear(6, 3)).to(D)
    x = torch.randn(11, 4, dtype=D)
    if case == "gaussian":
        return net, x, torch.randn(11, 3, dtype=D), pp.Gaussian(11, scale=0.7)
    return net, x, torch.randint(0, 3, (11,)), pp.Categorical(11)


@pytest.mark.parametrize("case", ["mlp", "gaussian", "conv", "positions"])
def test_layer_ggn_matches_jacobians(case, monkeypatch):
    """``full_ggn`` over whole layers (the blockwise path: rank-one rows, packed symmetric diagonal blocks,
    gradient rows where a layer has several positions) equals the GGN of jacrev of the whole batch and the
    per-example-Jacobian path, to 1e-10, over two batches, in any parameter order; chunks of 7 numbers force
    several row chunks per batch."""
    from pyro_prune.curvature import ggn as ggn_module

    monkeypatch.setattr(ggn_module, "_CHUNK_NUMBERS", 7)
    net, x, y, lik = ggn_case(case)
    names = [k for k, _ in net.named_parameters()]
    assert ggn_module.whole_layers(net, {k: None for k in names}) is not None  # the blockwise path is taken
    exact, _ = exact_ggn_blocks(net, x, lik)
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    ggn, n, loglik = cv.full_ggn(net, batches, lik, {k: None for k in names})
    assert n == 11 and ggn.shape == exact.shape
    assert_close(ggn, exact, rtol=1e-10, atol=1e-12)
    assert_close(loglik, float(lik.log_likelihood(net(x).detach(), y).sum()), rtol=1e-12)
    reordered = {k: None for k in reversed(names)}
    other, _, _ = ggn_module.jacobian_ggn(net, batches, lik, reordered)
    assert_close(cv.full_ggn(net, batches, lik, reordered)[0], other, rtol=1e-10, atol=1e-12)


def test_layer_ggn_sampled_fisher_equals_jacobian_path():
    """With the same generator state, the sampled-label Fisher draws the same labels on both paths."""
    from pyro_prune.curvature.ggn import jacobian_ggn

    net, x, y, lik = ggn_case("conv")
    params = {k: None for k, _ in net.named_parameters()}
    ours = cv.full_ggn(net, (x, y), lik, params, fisher="mc", mc_samples=3, generator=torch.Generator().manual_seed(5))
    ref = jacobian_ggn(net, (x, y), lik, params, fisher="mc", mc_samples=3, generator=torch.Generator().manual_seed(5))
    assert_close(ours[0], ref[0], rtol=1e-10, atol=1e-12)


def test_full_ggn_path_choice_and_masked_entries():
    """Masked entries, a bias without its weight or a parameter outside Linear/Conv go through per-example
    Jacobians; the result is the exact GGN's sub-matrix either way."""
    from pyro_prune.curvature.ggn import whole_layers

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)).to(D)
    x, y = torch.randn(9, 4, dtype=D), torch.randint(0, 3, (9,))
    lik = pp.Categorical(9)
    assert whole_layers(net, {"0.weight": None, "2.weight": None, "2.bias": None}) == {"0": False, "2": True}
    assert whole_layers(net, {"0.bias": None}) is None
    assert whole_layers(net, {"1.weight": None}) is None
    mask = torch.rand(15, generator=torch.Generator().manual_seed(1)) < 0.5
    assert whole_layers(net, {"2.weight": mask}) is None
    exact, params = exact_ggn_blocks(net, x, lik)
    offsets, pos = {}, 0
    for k, v in params.items():
        offsets[k] = pos
        pos += v.numel()
    idx = torch.cat([torch.arange(5) + offsets["1.weight"], offsets["2.weight"] + torch.nonzero(mask)[:, 0]])
    ggn, _, _ = cv.full_ggn(net, (x, y), lik, {"1.weight": None, "2.weight": mask})
    assert_close(ggn, exact[idx][:, idx], rtol=1e-10, atol=1e-12)
