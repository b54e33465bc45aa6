"""Kron/diag Laplace on a subset of whole layers (last-layer KFAC against factors written by hand), and the fast
log-determinant of every structure (cached eigenvalues) against the dense slogdet."""

import copy
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

import pyro_prune as pp
from pyro_prune import curvature as cv
from pyro_prune.guides.laplace import LaplaceGuide
from tests.helpers import assert_close

D = torch.float64


def classifier(dtype=D, n=40):
    """A trained 4-6-3 tanh MLP and its model (Categorical likelihood)."""
    torch.manual_seed(0)
    x = torch.randn(n, 4, dtype=dtype)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    model = pp.bayesianize(net, dist.Normal(torch.tensor(0.0, dtype=dtype), 1.0), pp.Categorical(n))
    return net, model, x, y


def last_layer_by_hand(net, x, y):
    """Last layer [W | b] of the MLP: inputs a = [tanh(W0 x + b0), 1], softmax Hessians H; the exact GGN block
    sum_n kron(H_n, a_n a_nᵀ) and the KFAC factors G = mean H_n, A = mean a aᵀ."""
    with torch.no_grad():
        h = torch.tanh(net[0](x))
        a = torch.cat([h, torch.ones(len(x), 1, dtype=x.dtype)], -1)
        p = net(x).softmax(-1)
    H = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    exact = sum(torch.kron(H[i], torch.outer(a[i], a[i])) for i in range(len(x)))
    loglik = torch.distributions.Categorical(logits=net(x).detach()).log_prob(y).sum()
    return a, H.mean(0), a.T @ a / len(x), exact, loglik


def test_last_layer_kfac_equals_factors_written_by_hand():
    """Last-layer KFAC: the precision is N·kron(G, A) + τI with G, A computed by hand; its log evidence is the
    closed form over the last layer only, its GLM covariance J P⁻¹ Jᵀ with J = I ⊗ aᵀ; diag is the exact GGN
    diagonal of the block; the first layer stays at the MAP."""
    net, model, x, y = classifier()
    n, tau = len(x), 0.7
    a, G, A, exact, loglik = last_layer_by_hand(net, x, y)
    g = pp.laplace_guide(model, (x, y), "kron", subnet=pp.subnet.LastLayer(), prior_precision=tau)
    assert list(g.posteriors) == ["2"]
    P = n * torch.kron(G, A) + tau * torch.eye(21, dtype=D)
    assert_close(g.posteriors["2"].to_dense(), P, rtol=1e-8, atol=1e-10)
    w = torch.cat([net[2].weight, net[2].bias.unsqueeze(-1)], -1).detach()
    evidence = loglik - 0.5 * tau * w.pow(2).sum() + 0.5 * 21 * torch.log(torch.tensor(tau, dtype=D))
    evidence = evidence - 0.5 * torch.linalg.slogdet(P)[1]
    assert_close(g.log_marginal_likelihood(), evidence, rtol=1e-8)
    J = torch.kron(torch.eye(3, dtype=D), a[:5].unsqueeze(1))  # (5, 3, 21): d f_k / d [W|b]_{k,:} = a
    f, fcov = g.glm_predictive(x[:5])
    assert_close(fcov, J @ torch.linalg.inv(P) @ J.transpose(1, 2), rtol=1e-8, atol=1e-12)
    assert_close(f, net(x[:5]).detach(), rtol=1e-10)
    m = g.marginals()
    assert bool((m["0.weight"].scale == 0).all()) and bool((m["0.bias"].scale == 0).all())
    assert_close(torch.cat([m["2.weight"].scale, m["2.bias"].scale.unsqueeze(-1)], -1).flatten() ** 2,
                 torch.linalg.inv(P).diagonal(), rtol=1e-8)  # fmt: skip
    gd = pp.laplace_guide(model, (x, y), "diag", subnet=pp.subnet.LastLayer(), prior_precision=tau)
    assert_close(gd.posteriors["2"].to_dense(), torch.diag(exact.diagonal() + tau), rtol=1e-8, atol=1e-10)


def test_layer_subsets_by_selection_mask_and_indices_agree_and_partial_layers_raise():
    net, model, x, y = classifier()
    ref = pp.laplace_guide(model, (x, y), "kron", prior_precision=[0.5, 2.0])  # every layer
    masks = {"0.weight": torch.ones(6, 4, dtype=torch.bool), "0.bias": torch.ones(6, dtype=torch.bool)}
    for subnet in (pp.subnet.Layers(["0"]), masks, torch.arange(30)):
        g = pp.laplace_guide(model, (x, y), "kron", subnet=subnet, prior_precision=[0.5, 2.0])
        assert list(g.posteriors) == ["0"]  # KFAC factors of a layer do not depend on which others are covered
        assert_close(g.posteriors["0"].to_dense(), ref.posteriors["0"].to_dense(), rtol=1e-10)
        assert_close(g.marginals()["0.weight"].scale, ref.marginals()["0.weight"].scale, rtol=1e-10)
        assert bool((g.marginals()["2.weight"].scale == 0).all())
    both = pp.laplace_guide(model, (x, y), "kron", subnet=pp.subnet.Layers(["0", "2"]), prior_precision=[0.5, 2.0])
    assert_close(both.log_marginal_likelihood(), ref.log_marginal_likelihood(), rtol=1e-12)
    for structure in ("kron", "diag"):
        with pytest.raises(ValueError, match=r"subnet selects 5 of the 30 weights of layer '0'.*structure='full'"):
            pp.laplace_guide(model, (x, y), structure, subnet=torch.arange(5))
        with pytest.raises(ValueError, match="subnet selects 24 of the 30"):  # the weight without its bias
            pp.laplace_guide(model, (x, y), structure, subnet={"0.weight": masks["0.weight"]})
    with pytest.raises(ValueError, match=r"unknown layers \['3'\]"):
        pp.laplace_guide(model, (x, y), "kron", subnet=pp.subnet.Layers(["3"]))
    with pytest.raises(TypeError, match="module names"):
        pp.subnet.Layers("0")


@pytest.mark.filterwarnings("ignore:drawing whole networks", "ignore:prune. the rule")
def test_last_layer_sampling_prediction_marglik_and_pruning():
    """MC draws move only the covered layer, with its covariance; the per-layer evidence optimum moves only the
    covered layer's τ; GLM and MC predictions and pruning run."""
    net, model, x, y = classifier()
    g = pp.laplace_guide(model, (x, y), "kron", subnet=pp.subnet.LastLayer(), prior_precision=1.0)
    draws = pyro.infer.Predictive(g, num_samples=4000, parallel=True)(x)
    assert bool((draws["0.weight"] == net[0].weight.detach()).all())
    w = torch.cat([draws["2.weight"], draws["2.bias"].unsqueeze(-1)], -1).reshape(4000, -1)
    cov = torch.linalg.inv(g.posteriors["2"].to_dense())
    # 4000 draws: entries of the empirical covariance within 15% of the largest entry (std error ~2-3%)
    assert_close(torch.cov(w.T), cov, rtol=0, atol=0.15 * float(cov.abs().max()))
    tau = g.optimize_prior_precision("layer", init=[3.0, 1.0])
    assert_close(tau[0], 3.0, rtol=1e-12)  # the first layer is not covered: its τ is unused
    log_tau = tau.log().detach().requires_grad_(True)
    g.log_marginal_likelihood(log_tau.exp()).backward()
    assert float(log_tau.grad.abs().max()) < 1e-5
    assert pp.predict(model, g, x[:5], method="glm").probs.shape == (5, 3)
    assert pp.predict(model, g, x[:5], method="mc", num_samples=3).probs.shape == (5, 3)
    res = pp.prune(model, g, rule=pp.rules.SNR(1e9))
    assert bool(res.masks["0.weight"].all()) and not bool(res.masks["2.weight"].any())


@pytest.mark.parametrize("structure", ["kron", "diag"])
def test_layer_subset_state_dict_copies_dtype_and_save_load(structure, tmp_path):
    net, model, x, y = classifier(torch.float32)
    g = pp.laplace_guide(model, (x, y), structure, subnet=pp.subnet.LastLayer(), prior_precision=[1.0, 0.3])
    x5 = x[:5]
    f, cov = g.glm_predictive(x5)
    lml = g.log_marginal_likelihood()
    empty = LaplaceGuide(model, None, structure)
    empty.load_state_dict(g.state_dict())
    for other in (empty, copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        assert list(other.posteriors) == ["2"]
        assert_close(other.glm_predictive(x5)[1], cov, rtol=1e-6)
        assert_close(other.log_marginal_likelihood(), lml, rtol=1e-6)
        assert bool((other.marginals()["0.weight"].scale == 0).all())
    pp.save(tmp_path / "ll.pt", model, g)
    loaded = pp.load(tmp_path / "ll.pt")
    assert list(loaded.guide.posteriors) == ["2"]
    assert_close(loaded.guide.glm_predictive(x5)[1], cov, rtol=1e-6)
    model64, g64 = copy.deepcopy((model, g))
    model64.to(torch.float64)
    g64.to(torch.float64)
    assert g64.posteriors["2"].reference.dtype == torch.float64
    assert_close(g64.glm_predictive(x5.double())[1], cov.double(), rtol=1e-5)


# -------------------------------------------------------------------------------------------------------------
# the fast log-determinant
# -------------------------------------------------------------------------------------------------------------
def dense_precision(g, tau, c):
    """c·s·C + τ over the covered weights as one dense matrix (blocks in layer order, or the full one), from each
    precision's own to_dense at τ (so the eigenvalue shortcut is not used)."""
    blocks = []
    taus = [tau if tau.dim() == 0 else tau[i] for i in range(len(g.layer_names))]
    for name, p in g.posteriors.items():
        if name == "full":
            vec = g._posterior._prior_vector(tau)
            t = vec.expand(p.numel) if vec.dim() == 0 else vec
        else:
            t = taus[g.layer_names.index(name)].expand(p.numel)
        P = p.with_prior(t if name == "full" else t[0]).to_dense()
        blocks.append(c * (P - torch.diag(t)) + torch.diag(t))
    return torch.block_diag(*blocks)


CASES = [
    ("kron", None),
    ("diag", None),
    ("full", None),
    ("kron", pp.subnet.LastLayer()),
    ("diag", pp.subnet.Layers(["0"])),
    ("full", pp.subnet.LastLayer()),
    ("full", pp.subnet.LargestMagnitude(9)),
]


@pytest.mark.parametrize("structure,subnet", CASES)
def test_fast_logdet_equals_dense_slogdet_with_curvature_scale(structure, subnet):
    """logdet(τ, curvature_scale=c) == slogdet(c·s·C + τ) for scalar and per-layer τ; gradients in τ and c equal
    those of the dense slogdet."""
    net, model, x, y = classifier()
    g = pp.laplace_guide(model, (x, y), structure, subnet=subnet, prior_precision=1.0)
    post = g._posterior
    for tau in (torch.tensor(0.3, dtype=D), torch.tensor([0.2, 5.0], dtype=D)):
        for c in (None, torch.tensor(2.5, dtype=D)):
            fast = post.logdet(tau) if c is None else post.logdet(tau, curvature_scale=c)
            dense = torch.linalg.slogdet(dense_precision(g, tau, 1.0 if c is None else c))
            assert float(dense[0]) == 1.0
            assert_close(fast, dense[1], rtol=1e-9)
        t1, c1 = tau.clone().requires_grad_(True), torch.tensor(2.5, dtype=D, requires_grad=True)
        t2, c2 = tau.clone().requires_grad_(True), torch.tensor(2.5, dtype=D, requires_grad=True)
        grads = torch.autograd.grad(post.logdet(t1, curvature_scale=c1), (t1, c1))
        expected = torch.autograd.grad(torch.linalg.slogdet(dense_precision(g, t2, c2))[1], (t2, c2))
        for got, want in zip(grads, expected):
            assert_close(got, want, rtol=1e-7, atol=1e-10)


def test_dense_eigenvalues_are_computed_once_per_fit_and_travel(monkeypatch, tmp_path):
    """The full posterior's GGN eigenvalues: one eigvalsh per fit, then none for evidence optimizations (every
    with_prior copy shares them), kept by state_dict (no eigvalsh after loading), moved by .to()."""
    net, model, x, y = classifier()
    calls = []
    eigvalsh = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda A: calls.append(A.shape) or eigvalsh(A))
    g = pp.laplace_guide(model, (x, y), "full", prior_precision=1.0)
    assert calls == [(51, 51)]  # at fit
    g.optimize_prior_precision("scalar")
    g.optimize_prior_precision("layer")  # one covered layer per tau entry: Cholesky, not eigvalsh
    for t in (0.1, 1.0, 10.0):
        g.log_marginal_likelihood(t)
    assert calls == [(51, 51)]  # 4·6 + 6 + 6·3 + 3 weights
    empty = LaplaceGuide(model, None, "full")
    empty.load_state_dict(g.state_dict())
    assert_close(empty.log_marginal_likelihood(0.5), g.log_marginal_likelihood(0.5), rtol=1e-12)
    clone = copy.deepcopy(g)
    assert_close(clone.log_marginal_likelihood(0.5), g.log_marginal_likelihood(0.5), rtol=1e-12)
    assert len(calls) == 1
    eig = g.posteriors["full"].state()["eig"]
    moved = g.posteriors["full"].apply(lambda t: t.to(torch.float32))
    assert moved.state()["eig"].dtype == torch.float32 and moved.state()["eig"].shape == eig.shape
    assert len(calls) == 1
    # a new curvature (another Dense) has its own spectrum: scaling the GGN scales the eigenvalues
    ggn = g.posteriors["full"].ggn
    doubled = cv.Dense(2 * ggn, scale=1.0, prior_precision=1.0)
    assert_close(doubled.curvature_eigenvalues(), 2 * eigvalsh(ggn).clamp_min(0), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="'eig'"):
        cv.precision_from_state({**g.posteriors["full"].state(), "eig": eig[:3]})
