"""fit / predict / evaluate: objectives, warm-up, Pyro guides, digits accuracy, conjugate posterior, errors."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer import RenyiELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal

import pyro_prune as pp
from pyro_prune.data import load_digits
from pyro_prune.guides import LocalReparamGuide
from pyro_prune.guides.base import normal_kl
from pyro_prune.objectives import make_elbo
from tests.helpers import assert_close


def small_problem(n=40):
    x = torch.randn(n, 3)
    y = (x[:, 0] > 0).long()
    model = pp.bayesianize(
        nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)), dist.Normal(0.0, 1.0), pp.Categorical(n)
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10)
    return model, loader, x, y


def test_alpha_routes_to_mean_field_or_renyi():
    model, *_ = small_problem()
    assert isinstance(make_elbo(model, 1.0, 1), TraceMeanField_ELBO)
    e = make_elbo(model, 0.5, 8)
    assert isinstance(e, RenyiELBO) and e.vectorize_particles and e.num_particles == 8


# AutoDelta (MAP) only with the ELBO: a point mass has no density ratio for the Rényi bound.
GUIDE_CASES = [
    (AutoNormal, 1.0, 1),
    (AutoNormal, 0.5, 4),
    (AutoNormal, 0.0, 2),
    (AutoDelta, 1.0, 1),
    (AutoMultivariateNormal, 1.0, 1),
    (AutoMultivariateNormal, 0.5, 4),
    (AutoMultivariateNormal, 0.0, 2),
]


@pytest.mark.parametrize("guide_cls,alpha,particles", GUIDE_CASES)
def test_fit_runs_with_pyro_guides(guide_cls, alpha, particles):
    model, loader, x, y = small_problem()
    guide = guide_cls(model)
    h = pp.fit(model, guide, loader, epochs=3, alpha=alpha, num_particles=particles, lr=1e-2, progress=False)
    assert len(h) == 3
    for r in h.records:
        assert set(r) >= {"epoch", "loss", "ell", "kl", "beta", "seconds"}
        assert math.isfinite(r["loss"]) and math.isfinite(r["ell"]) and r["ell"] <= 0
    p = pp.predict(model, guide, x, num_samples=10)
    assert p.probs.shape == (40, 2)


def test_fit_is_reproducible_with_seed():
    out = []
    for _ in range(2):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        model, loader, x, y = small_problem()
        guide = AutoNormal(model)
        h = pp.fit(model, guide, loader, epochs=2, progress=False)
        out.append(h["loss"])
    assert out[0] == out[1]


def test_kl_warmup_ramps_beta_per_step_and_callbacks_stop():
    model, loader, *_ = small_problem()
    guide = AutoNormal(model)
    seen = []
    h = pp.fit(
        model,
        guide,
        loader,
        epochs=4,
        kl_warmup=2,
        progress=False,
        callbacks=[lambda e, r, m, g: seen.append(r["beta"])],
    )
    # 4 batches per epoch, warm-up over 8 steps: beta at the last step of epoch e is min(1, (4e + 3) / 8)
    assert_close(torch.tensor(seen), torch.tensor([3 / 8, 7 / 8, 1.0, 1.0]))
    stopper = pp.EarlyStopping(monitor="epoch", patience=1, mode="min")  # never improves after epoch 0
    h = pp.fit(model, guide, loader, epochs=10, progress=False, callbacks=[stopper])
    assert h.stopped_early and len(h) == 2


def test_kl_term_matches_analytic_normal_kl_for_autonormal():
    """AutoNormal emits Delta sites, so kl_term is a one-sample Monte Carlo estimate: its mean over 400 draws
    must match the analytic KL(N(loc, scale) || N(0, 1)) within 4 standard errors."""
    model, loader, x, y = small_problem()
    guide = AutoNormal(model, init_scale=0.1)
    guide(x, y)
    expected = 0.0
    for name in model.sites:
        loc, scale = guide._get_loc_and_scale(name)
        q = torch.distributions.Normal(loc, scale)
        expected += torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum().item()
    draws = torch.tensor([pp.infer.kl_term(model, guide, x, y) for _ in range(400)])
    se = draws.std() / 20
    assert abs(draws.mean() - expected) < 4 * se, (draws.mean(), expected, se)


def test_conjugate_linear_regression_mean_field_recovers_posterior_mean():
    """Mean-field VI on Bayesian linear regression: q's means equal the exact posterior mean."""
    torch.manual_seed(0)
    n, d, sigma, prior_sd = 50, 2, 0.5, 1.0
    x = torch.randn(n, d, dtype=torch.float64)
    w_true = torch.tensor([1.5, -0.7], dtype=torch.float64)
    y = x @ w_true + sigma * torch.randn(n, dtype=torch.float64)
    net = nn.Linear(d, 1, bias=False).double()
    model = pp.bayesianize(
        nn.Sequential(net), dist.Normal(torch.tensor(0.0, dtype=torch.float64), prior_sd), pp.Gaussian(n, scale=sigma)
    )
    guide = AutoNormal(model, init_scale=0.05)
    opt = pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.999})  # decays to lr 1e-3: small SGD noise at the end
    pp.fit(model, guide, (x, y), epochs=3000, optimizer=opt, num_particles=8, progress=False)
    precision = x.T @ x / sigma**2 + torch.eye(d, dtype=torch.float64) / prior_sd**2
    post_mean = torch.linalg.solve(precision, x.T @ y / sigma**2)
    loc = guide.median()["0.weight"].reshape(-1)
    # posterior sd is ~0.06: the means must agree to a third of it
    assert_close(loc, post_mean, rtol=0, atol=0.02, msg="posterior mean")
    # the mean-field variances are 1 / diag(precision) (Gaussian VI matches the precision's diagonal)
    _, scale = guide._get_loc_and_scale("0.weight")
    assert_close(scale.reshape(-1) ** 2, 1 / precision.diagonal(), rtol=0.25, msg="mean-field variance")


def test_autonormal_on_digits_reaches_95_percent():
    torch.manual_seed(0)
    split = load_digits()
    train, test = split.loaders(batch_size=64, seed=0)
    net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(split.dataset_size))
    guide = AutoNormal(model, init_scale=1e-3)
    pp.fit(model, guide, train, epochs=25, lr=3e-3, progress=False)
    scores = pp.evaluate(model, guide, test, num_samples=50)
    assert scores["accuracy"] >= 0.95, scores
    assert set(scores) == {"accuracy", "nll", "ece", "brier"}

    # parallel and sequential ensembles agree in distribution (same guide, 200 draws each)
    x = split.x_test[:20]
    par = pp.predict(model, guide, x, num_samples=200, parallel=True)
    seq = pp.predict(model, guide, x, num_samples=200, parallel=False)
    assert par.samples.shape == seq.samples.shape == (200, 20, 10)
    assert_close(par.probs, seq.probs, atol=0.05, rtol=0)
    assert (par.labels == seq.labels).float().mean() >= 0.95


def test_prediction_summaries_classification_and_regression():
    model, loader, x, y = small_problem()
    guide = AutoNormal(model, init_scale=0.5)
    with pytest.raises(ValueError, match="not initialized"):
        pp.predict(model, guide, x, num_samples=3)
    guide(x, y)
    p = pp.predict(model, guide, x, num_samples=30)
    assert_close(p.probs.sum(-1), torch.ones(40), rtol=1e-5)
    assert (p.mutual_information <= p.entropy + 1e-6).all() and (p.mutual_information >= 0).all()
    with pytest.raises(AttributeError, match="regression"):
        _ = p.epistemic_std
    reg = pp.bayesianize(nn.Sequential(nn.Linear(1, 1)), dist.Normal(0.0, 1.0), pp.Gaussian(10, scale=0.3))
    pyro.clear_param_store()  # the param store is global: both guides name their params "AutoNormal.locs.0.weight"
    g = AutoNormal(reg, init_scale=0.5)
    xr = torch.linspace(-1, 1, 10).unsqueeze(-1)
    g(xr, torch.zeros(10))
    pr = pp.predict(reg, g, xr, num_samples=50)
    assert pr.mean.shape == (10,) and pr.std.shape == (10,)
    assert_close(pr.aleatoric_std, torch.full((10,), 0.3), rtol=1e-5)
    assert_close(pr.std**2, pr.epistemic_std**2 + 0.09, rtol=1e-5)
    scores = pp.evaluate(reg, g, (xr, torch.zeros(10)), num_samples=20)
    assert set(scores) == {"rmse", "nll"}
    chunked = pp.predict(reg, g, xr, num_samples=5, batch_size=3)
    assert chunked.samples.shape == (5, 10)


def test_bad_arguments_raise():
    model, loader, x, y = small_problem()
    guide = AutoNormal(model)
    guide(x, y)
    with pytest.raises(ValueError, match="alpha"):
        pp.fit(model, guide, loader, epochs=1, alpha=float("nan"), progress=False)
    with pytest.raises(ValueError, match="epochs"):
        pp.fit(model, guide, loader, epochs=0, progress=False)
    with pytest.raises(ValueError, match="num_particles"):
        pp.fit(model, guide, loader, epochs=1, num_particles=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        pp.fit(model, guide, loader, epochs=1, lr=-1.0, progress=False)
    with pytest.raises(TypeError, match="optimizer"):
        pp.fit(model, guide, loader, epochs=1, optimizer=torch.optim.Adam, progress=False)
    with pytest.raises(TypeError, match="data"):
        pp.fit(model, guide, x, epochs=1, progress=False)
    with pytest.raises(TypeError, match="callbacks"):
        pp.fit(model, guide, loader, epochs=1, callbacks=[1], progress=False)
    with pytest.raises(ValueError, match="mode"):
        pp.EarlyStopping(mode="least")
    with pytest.raises(TypeError, match="monitor"):
        pp.EarlyStopping(monitor=3)
    with pytest.raises(ValueError, match="num_samples"):
        pp.predict(model, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="NaN"):
        pp.predict(model, guide, torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        pp.fit(model, guide, (torch.full((4, 3), float("nan")), torch.zeros(4).long()), epochs=1, progress=False)
    other, *_ = small_problem()
    with pytest.raises(ValueError, match="another model"):
        pp.fit(other, guide, loader, epochs=1, progress=False)
    pyro.clear_param_store()
    with pytest.warns(UserWarning, match="dataset_size"):
        wrong = pp.bayesianize(nn.Sequential(nn.Linear(3, 2)), dist.Normal(0.0, 1.0), pp.Categorical(1000))
        pp.fit(wrong, AutoNormal(wrong), loader, epochs=1, progress=False)


def test_hand_written_pyro_module_predict_and_evaluate_with_a_likelihood():
    from pyro.nn import PyroModule, PyroSample

    class Hand(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[nn.Linear](3, 2)
            self.fc.weight = PyroSample(dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
            self.fc.bias = PyroSample(dist.Normal(0.0, 1.0).expand([2]).to_event(1))

        def forward(self, x, y=None):
            logits = self.fc(x)
            with pyro.plate("data", 40, subsample_size=len(x)):
                pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
            return logits

    model, loader, x, y = small_problem()
    pyro.clear_param_store()
    hand = Hand()
    guide = AutoNormal(hand)
    h = pp.fit(hand, guide, loader, epochs=2, progress=False)
    assert math.isfinite(h["loss"][-1])
    raw = pp.predict(hand, guide, x, num_samples=4)  # sequential by default for hand-written models
    assert raw.task == "unknown" and raw.outputs.shape == (4, 40, 2)
    with pytest.raises(AttributeError, match="likelihood"):
        _ = raw.probs
    with pytest.raises(ValueError, match="likelihood"):
        pp.evaluate(hand, guide, loader, num_samples=4)
    scores = pp.evaluate(hand, guide, loader, num_samples=4, likelihood=pp.Categorical(40))
    assert 0 <= scores["accuracy"] <= 1


def test_predict_more_inputs_than_dataset_size_and_chunks_share_networks():
    reg = pp.bayesianize(nn.Sequential(nn.Linear(1, 1)), dist.Normal(0.0, 1.0), pp.Gaussian(5, scale=0.3))
    g = AutoNormal(reg, init_scale=0.5)
    g(torch.zeros(5, 1), torch.zeros(5))
    xr = torch.linspace(-1, 1, 12).unsqueeze(-1)
    p = pp.predict(reg, g, xr, num_samples=6, batch_size=5)  # 12 inputs > dataset_size 5, three chunks
    assert p.samples.shape == (6, 12)
    # each member is one affine network across all chunks: constant slope
    slopes = p.samples.diff(dim=1) / xr.squeeze(-1).diff()
    assert_close(slopes, slopes[:, :1].expand_as(slopes), rtol=1e-4, atol=1e-5)
    assert not p.std.requires_grad


def test_kl_weight_tempers_the_kl_term():
    model, loader, *_ = small_problem()
    guide = AutoNormal(model)
    seen = []
    pp.fit(model, guide, loader, epochs=3, kl_warmup=1, kl_weight=0.25, progress=False,
           callbacks=[lambda e, r, m, g: seen.append(r["beta"])])  # fmt: skip
    assert seen == [0.25 * 3 / 4, 0.25, 0.25]
    with pytest.raises(ValueError, match="kl_weight"):
        pp.fit(model, guide, loader, epochs=1, kl_weight=0.0, progress=False)


# -- the path fit takes: by type (LocalReparamGuide), never by duck typing ------------------------------------
class ToyGaussianGuide(LocalReparamGuide):
    """A minimal third-party mean-field Gaussian guide that opts into the fused path by subclassing the base."""

    def __init__(self, model):
        self._model_ref = (model,)
        super().__init__(model)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        self.mu, self.log_var = nn.ParameterDict(), nn.ParameterDict()
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            self.mu[name.replace(".", "_")] = nn.Parameter(site["value"].detach().clone())
            self.log_var[name.replace(".", "_")] = nn.Parameter(torch.full_like(site["value"], -6.0))

    def _param_keys(self):
        return [(d, k) for d in ("mu", "log_var") for k in self.mu]

    def _read_param(self, key):
        return getattr(self, key[0])[key[1]]

    def _moments(self, name):
        return self._param(("mu", name.replace(".", "_"))), self._param(("log_var", name.replace(".", "_")))

    def forward(self, *args, **kwargs):
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out = {}
        for name, _ in self.prototype_trace.iter_stochastic_nodes():
            mu, log_var = self._moments(name)
            out[name] = pyro.sample(name, dist.Normal(mu, (0.5 * log_var).exp()).to_event(mu.dim()))
        return out

    def total_kl(self):
        model = self._model_ref[0]
        return sum(normal_kl(*self._moments(name), model.prior(name)) for name in model.sites)

    def local_reparam_moments(self, site):
        if site not in self._model_ref[0].sites:
            return None
        mu, log_var = self._moments(site)
        return mu, log_var.exp()


class DuckTypedGuide(AutoNormal):
    """Has every method the fused path uses, but is not a LocalReparamGuide: must go through SVI."""

    uses_local_reparameterization = True

    def total_kl(self):
        raise AssertionError("fit asked a guide that is not a LocalReparamGuide for total_kl")

    kl = fast_params = local_reparam_moments = total_kl


@pytest.fixture
def path_spy(monkeypatch):
    """Counts of fused steps and SVI steps (Pyro ELBO loss_and_grads calls) taken by fit."""
    counts = {"fused": 0, "svi": 0}
    fused = pp.infer.fused_loss

    def spy_fused(*args, **kwargs):
        counts["fused"] += 1
        return fused(*args, **kwargs)

    def spy_elbo(elbo_cls):
        original = elbo_cls.loss_and_grads

        def spy(self, *args, **kwargs):
            counts["svi"] += 1
            return original(self, *args, **kwargs)

        return spy

    monkeypatch.setattr(pp.infer, "fused_loss", spy_fused)
    for elbo_cls in (TraceMeanField_ELBO, RenyiELBO):  # the SVI path: Pyro's ELBO computes loss and gradients
        monkeypatch.setattr(elbo_cls, "loss_and_grads", spy_elbo(elbo_cls))
    return counts


def test_a_toy_local_reparam_guide_takes_the_fused_path_and_learns(path_spy):
    model, loader, x, y = small_problem()
    guide = ToyGaussianGuide(model)
    h = pp.fit(model, guide, loader, epochs=30, lr=3e-2, progress=False)
    assert path_spy == {"fused": 4 * 30, "svi": 0}
    assert h["loss"][-1] < 0.7 * h["loss"][0]
    assert h["kl"][-1] == pytest.approx(float(guide.total_kl().detach()))
    with guide.fast_params() as snapshot:  # the shared helper serves the toy's own keys
        assert set(snapshot) == set(guide._param_keys())
        assert guide._param(("mu", "0_weight")) is guide.mu["0_weight"]


@pytest.mark.parametrize(
    "make_guide, alpha",
    [
        (DuckTypedGuide, 1.0),  # duck typing does not opt in
        (lambda m: pp.AutoSparseVD(m, local_reparameterization=False), 1.0),  # the capability switched off
        (pp.AutoSparseVD, 0.5),  # the Rényi bound has no fused form
        (AutoNormal, 1.0),
    ],
)
def test_other_guides_go_through_svi(path_spy, make_guide, alpha):
    model, loader, x, y = small_problem()
    pp.fit(model, make_guide(model), loader, epochs=2, alpha=alpha, lr=1e-2, progress=False)
    assert path_spy == {"fused": 0, "svi": 4 * 2}


def test_sparse_vd_takes_the_fused_path(path_spy):
    model, loader, x, y = small_problem()
    pp.fit(model, pp.AutoSparseVD(model), loader, epochs=2, progress=False)
    assert path_spy == {"fused": 4 * 2, "svi": 0}


def test_local_reparam_guide_is_abstract():
    model, *_ = small_problem()

    class Incomplete(LocalReparamGuide):
        def local_reparam_moments(self, site):
            return None

    with pytest.raises(TypeError, match="total_kl"):
        Incomplete(model)


@pytest.mark.parametrize("argc", [1, 2])
def test_per_parameter_optimizer_arguments_reach_module_local_parameters(argc):
    """Pyro's per-parameter ``optim_args`` callable looks the name up in the global param store; our guides keep
    their parameters on themselves, so fit passes the name it knows: lr 0 for ``scale_tril`` leaves it unchanged
    while ``loc`` moves (both forms of the callable; a per-parameter clip callable too)."""
    from pyro_prune import subnet as sn

    torch.manual_seed(0)
    x = torch.randn(32, 3)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(32))
    guide = pp.AutoSubnetwork(model, sn.LastLayer(), init_scale=0.1)
    guide(x, y)
    tril0, loc0 = guide.scale_tril.detach().clone(), guide.loc.detach().clone()
    seen = []

    def lr_of(name):
        seen.append(name)
        return {"lr": 0.0 if name.endswith("scale_tril") else 1e-2}

    args = (lambda name: lr_of(name)) if argc == 1 else (lambda module, name: lr_of(name))
    clip = lambda module, name: {"clip_norm": 10.0}  # noqa: E731
    pp.fit(model, guide, (x, y), epochs=3, optimizer=pyro.optim.Adam(args, clip_args=clip), progress=False)
    assert any(n.endswith("scale_tril") for n in seen) and any(n.endswith("loc") for n in seen)
    assert torch.equal(guide.scale_tril.detach(), tril0)
    assert not torch.equal(guide.loc.detach(), loc0)
