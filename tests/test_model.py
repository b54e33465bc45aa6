"""bayesianize: sites, priors, point estimates, errors, vectorized use with Pyro inference."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer import Predictive, RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from tests.helpers import assert_close


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class CustomNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3, padding=1)
        self.norm = nn.LayerNorm(3 * 6)
        self.fc = nn.Linear(3 * 6, 2)

    def forward(self, x):
        h = self.conv(x).relu()
        return self.fc(self.norm(h.flatten(-2)))


def sample_sites(model, *args):
    tr = pyro.poutine.trace(model).get_trace(*args)
    return {k: v for k, v in tr.nodes.items() if v["type"] == "sample" and k not in ("data", "obs")}


def test_sites_named_like_parameters_and_net_untouched():
    net = mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(10))
    assert list(model.sites) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert model.sites["0.weight"].fan_in == 4 and model.sites["0.weight"].fan_out == 8
    sites = sample_sites(model, torch.randn(5, 4))
    assert set(sites) == set(model.sites)
    assert sites["0.weight"]["fn"].event_shape == (8, 4)
    assert sites["0.weight"]["fn"].batch_shape == ()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), "bayesianize mutated the user's net"
    assert all(isinstance(m, (nn.Linear, nn.ReLU)) and not isinstance(m, pyro.nn.PyroModule) for m in net)


def test_forward_returns_output_and_observes_in_subsampled_plate():
    model = pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), pp.Categorical(100))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    tr = pyro.poutine.trace(model).get_trace(x, y)
    obs = tr.nodes["obs"]
    assert obs["is_observed"] and torch.equal(obs["value"], y)
    assert obs["cond_indep_stack"][0].name == "data" and obs["cond_indep_stack"][0].full_size == 100
    tr.compute_log_prob()
    expected = 100 / 5 * dist.Categorical(logits=tr.nodes["_RETURN"]["value"]).log_prob(y).sum()
    assert_close(tr.nodes["obs"]["log_prob_sum"], expected, rtol=1e-5)


def test_custom_module_conv_and_layernorm_point_estimate():
    model = pp.bayesianize(CustomNet(), dist.Normal(0.0, 1.0), pp.Categorical(50))
    assert set(model.sites) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    assert set(model.point_estimates) == {"norm.weight", "norm.bias"}
    x = torch.randn(4, 1, 6)
    tr = pyro.poutine.trace(model).get_trace(x, torch.tensor([0, 1, 1, 0]))
    params = [k for k, v in tr.nodes.items() if v["type"] == "param"]
    assert "norm.weight" in params and "norm.bias" in params
    assert model.vectorizable


def test_prior_callable_dict_and_expanded_prior():
    def prior(name, module, param):
        if isinstance(module, nn.LayerNorm):
            return dist.Normal(1.0, 0.1) if name.endswith("weight") else None
        return None if name == "fc.bias" else dist.Laplace(0.0, 0.5)

    model = pp.bayesianize(CustomNet(), prior, pp.Categorical(50))
    assert "norm.weight" in model.sites and "fc.bias" not in model.sites
    assert "fc.bias" in model.point_estimates and "norm.bias" in model.point_estimates
    assert not model.vectorizable  # LayerNorm with a sampled weight runs torch's own forward
    sites = sample_sites(model, torch.randn(4, 1, 6))
    assert isinstance(sites["fc.weight"]["fn"].base_dist, dist.Laplace)

    net = mlp()
    d = {
        "0.weight": dist.Normal(0.0, 2.0),
        "0.bias": None,
        "2.weight": dist.Normal(torch.zeros(3, 8), 1.0),
        "2.bias": dist.Normal(0.0, 1.0).expand([3]),
    }
    model = pp.bayesianize(net, d, pp.Categorical(10))
    assert list(model.sites) == ["0.weight", "2.weight", "2.bias"]
    sites = sample_sites(model, torch.randn(2, 4))
    assert sites["2.weight"]["fn"].event_shape == (3, 8)


def test_bad_priors_and_modules_raise():
    with pytest.raises(ValueError, match="misses"):
        pp.bayesianize(mlp(), {"0.weight": dist.Normal(0.0, 1.0)}, pp.Categorical(10))
    with pytest.raises(ValueError, match="does not have"):
        pp.bayesianize(mlp(), {"nope": dist.Normal(0.0, 1.0)}, pp.Categorical(10))
    with pytest.raises(ValueError, match="cannot be expanded"):
        pp.bayesianize(mlp(), dist.Normal(torch.zeros(7), 1.0), pp.Categorical(10))
    with pytest.raises(TypeError, match="net must be"):
        pp.bayesianize("net", dist.Normal(0.0, 1.0), pp.Categorical(10))
    with pytest.raises(TypeError, match="likelihood"):
        pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), "categorical")
    with pytest.raises(TypeError, match="prior"):
        pp.bayesianize(mlp(), 3.0, pp.Categorical(10))
    rnn = nn.Sequential(nn.Linear(4, 4), nn.GRU(4, 4))
    with pytest.raises(ValueError, match="GRU"):
        pp.bayesianize(rnn, dist.Normal(0.0, 1.0), pp.Categorical(10))
    with pytest.warns(UserWarning, match="point estimates"):
        m = pp.bayesianize(rnn, dist.Normal(0.0, 1.0), pp.Categorical(10), unsupported="point")
    assert "1.weight_ih_l0" in m.point_estimates
    with pytest.raises(ValueError, match="lazy"):
        pp.bayesianize(nn.Sequential(nn.LazyLinear(3)), dist.Normal(0.0, 1.0), pp.Categorical(10))


def test_bad_data_raises():
    model = pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), pp.Categorical(100))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="does not fit"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match="one row per row"):
        model(torch.randn(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels outside"):
        model(torch.randn(2, 4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="integer class"):
        model(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    small = pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), pp.Categorical(1))
    with pytest.raises(ValueError, match="dataset_size"):
        small(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="dtype"):
        model(torch.randn(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_conversion_moves_priors(dtype):
    model = pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), pp.Categorical(10)).to(dtype)
    sites = sample_sites(model, torch.randn(3, 4, dtype=dtype))
    assert all(s["value"].dtype == dtype for s in sites.values())


def test_vectorized_renyi_and_parallel_predictive_match_sequential():
    model = pp.bayesianize(CustomNet(), dist.Normal(0.0, 1.0), pp.Categorical(20))
    guide = AutoNormal(model)
    x, y = torch.randn(6, 1, 6), torch.randint(0, 2, (6,))
    elbo = RenyiELBO(alpha=0.5, num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(model, guide, x, y)
    assert torch.isfinite(torch.tensor(loss))
    # particles sit left of the data dimension: the observed site has batch shape (K, B)
    for model_trace, _ in elbo._get_traces(model, guide, (x, y), {}):
        assert model_trace.nodes["obs"]["fn"].batch_shape == (4, 6)
        assert model_trace.nodes["_RETURN"]["value"].shape == (4, 6, 2)
    pyro.set_rng_seed(3)
    par = Predictive(model, guide=guide, num_samples=5, parallel=True, return_sites=["_RETURN"])(x)["_RETURN"]
    assert par.shape == (5, 6, 2)
    # The same weights run one by one reproduce the vectorized outputs.
    pyro.set_rng_seed(3)
    w = Predictive(model, guide=guide, num_samples=5, parallel=True, return_sites=list(model.sites))(x)
    for s in range(5):
        cond = pyro.poutine.condition(model, {k: v[s] for k, v in w.items()})
        assert_close(cond(x), par[s], rtol=1e-4, atol=1e-5)


def test_gaussian_and_bernoulli_heads():
    reg = pp.bayesianize(nn.Sequential(nn.Linear(2, 1)), dist.Normal(0.0, 1.0), pp.Gaussian(10, scale=0.5))
    x, y = torch.randn(4, 2), torch.randn(4)
    tr = pyro.poutine.trace(reg).get_trace(x, y)
    assert tr.nodes["obs"]["fn"].scale.eq(0.5).all()
    with pytest.raises(ValueError, match="does not match"):
        reg(x, torch.randn(4, 3))
    het = pp.bayesianize(nn.Sequential(nn.Linear(2, 2)), dist.Normal(0.0, 1.0), pp.Gaussian(10, "heteroscedastic"))
    tr = pyro.poutine.trace(het).get_trace(x, y)
    out = tr.nodes["_RETURN"]["value"]
    assert_close(tr.nodes["obs"]["fn"].scale, out[:, 1].exp())
    learned = pp.Gaussian(10, "learned", init_scale=0.3)
    m = pp.bayesianize(nn.Sequential(nn.Linear(2, 1)), dist.Normal(0.0, 1.0), learned)
    tr = pyro.poutine.trace(m).get_trace(x, y)
    assert "likelihood.scale" in [k for k, v in tr.nodes.items() if v["type"] == "param"]
    with pytest.raises(ValueError, match="scale"):
        pp.Gaussian(10, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        pp.Gaussian(10, scale="bogus")
    with pytest.raises(ValueError, match="dataset_size"):
        pp.Categorical(0)
    with pytest.raises(TypeError, match="dataset_size"):
        pp.Categorical(10.5)
    bern = pp.bayesianize(nn.Sequential(nn.Linear(2, 1)), dist.Normal(0.0, 1.0), pp.Bernoulli(10))
    tr = pyro.poutine.trace(bern).get_trace(x, torch.tensor([0, 1, 1, 0]))
    assert tr.nodes["obs"]["fn"].batch_shape == (4,)
    with pytest.raises(ValueError, match="0/1"):
        bern(x, torch.tensor([0, 2, 1, 0]))


def test_init_from_starts_guide_at_network_weights():
    net = mlp()
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(10))
    guide = AutoNormal(model, init_loc_fn=pp.init_from(net))
    guide(torch.randn(2, 4), torch.tensor([0, 1]))
    med = guide.median()
    for k, v in net.state_dict().items():
        assert_close(med[k], v)
    with pytest.raises(TypeError):
        pp.init_from(3)


def test_trace_elbo_with_batchnorm_model_runs_sequentially():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(20))
    assert not model.vectorizable
    guide = AutoNormal(model)
    loss = Trace_ELBO().loss(model, guide, torch.randn(6, 4), torch.randint(0, 3, (6,)))
    assert loss == loss


class PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                                  nn.Conv1d(4, 4, 3, padding=1), nn.ReLU(), nn.AvgPool1d(2), nn.Flatten())  # fmt: skip
        self.head = nn.Linear(4 * 2, 3)

    def forward(self, x):
        return self.head(self.body(x)).log_softmax(-1)


def test_pooling_and_flatten_fold_sample_dims():
    """Pooling/Flatten modules take (B, C, L) only: under sample dims their inputs are folded and unfolded."""
    model = pp.bayesianize(PoolNet(), dist.Normal(0.0, 1.0), pp.Categorical(20))
    assert model.vectorizable
    guide = AutoNormal(model)
    x, y = torch.randn(5, 1, 8), torch.randint(0, 3, (5,))
    guide(x, y)
    pyro.set_rng_seed(1)
    w = Predictive(model, guide=guide, num_samples=4, parallel=True, return_sites=list(model.sites))(x)
    pyro.set_rng_seed(1)
    par = Predictive(model, guide=guide, num_samples=4, parallel=True, return_sites=["_RETURN"])(x)["_RETURN"]
    assert par.shape == (4, 5, 3)
    for s in range(4):
        cond = pyro.poutine.condition(model, {k: v[s] for k, v in w.items()})
        assert_close(cond(x), par[s], rtol=1e-4, atol=1e-5)
    elbo = RenyiELBO(alpha=0.5, num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    assert torch.isfinite(torch.tensor(elbo.loss(model, guide, x, y)))


def test_categorical_log_likelihood_fast_path_equals_distribution():
    lik = pp.Categorical(10)
    out, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    assert_close(lik.log_likelihood(out, y), dist.Categorical(logits=out).log_prob(y), rtol=1e-6, atol=1e-6)
    assert_close(lik.log_likelihood(out, y, check=False), dist.Categorical(logits=out).log_prob(y), rtol=1e-6)
    with pytest.raises(ValueError, match="labels outside"):
        lik.log_likelihood(out, torch.full((6,), 7))
    batched = torch.randn(3, 6, 4)
    assert lik.log_likelihood(batched, y).shape == (3, 6)
