"""bayesianize: sites, priors, point estimates, errors, vectorized use with Pyro inference."""

import pickle
import threading
from collections import OrderedDict

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer import Predictive, RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune.model import folding
from pyro_prune.model.bayesian_layers import LRTInputs
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


# --- structure of the model package (issue 11): LRT inputs, context-scoped state, staged bayesianize ---------------


class Probe(nn.Module):
    """A parameter-free module that calls ``hook(x)`` in its forward (kept through bayesianize's deep copy)."""

    def __init__(self, hook):
        super().__init__()
        self.hook = hook

    def forward(self, x):
        self.hook(x)
        return x


def pool_net(hook, prefix=""):
    """conv -> probe -> max-pool -> flatten -> linear: the pool and flatten need folding under sample dims."""
    layers_ = [("conv", nn.Conv1d(1, 2, 3, padding=1)), ("probe", Probe(hook)), ("pool", nn.MaxPool1d(2)),
               ("flat", nn.Flatten()), ("fc", nn.Linear(2 * 4, 3))]  # fmt: skip
    return nn.Sequential(OrderedDict((prefix + k, m) for k, m in layers_))


def sampled_weights(model, S):
    """``S`` weight samples per site with the data-plate placeholder, ``(S, 1) + shape``."""
    return {k: torch.randn((S, 1) + tuple(info.shape)) for k, info in model.sites.items()}


def loop_outputs(model, weights, x):
    """The network run once per weight sample (no sample dims anywhere)."""
    S = next(iter(weights.values())).shape[0]
    return torch.stack([pyro.poutine.condition(model.run_net, {k: v[s, 0] for k, v in weights.items()})(x)
                        for s in range(S)])  # fmt: skip


class _Moments:
    """A local-reparameterization source with fixed moments per site."""

    def __init__(self, moments):
        self.moments = moments

    def local_reparam_moments(self, site):
        return self.moments.get(site)


def test_lrt_inputs_is_a_named_tuple_read_by_field():
    assert LRTInputs._fields == ("w_loc", "w_var", "bias", "bias_var", "sample_shape", "group_scale")
    model = pp.bayesianize(nn.Sequential(nn.Linear(4, 3)), dist.Normal(0.0, 1.0), pp.Categorical(10))
    layer, x = model.net[0], torch.randn(5, 4)
    w_loc, b_loc = torch.randn(3, 4), torch.randn(3)
    w_var, b_var = torch.zeros(3, 4), torch.full((3,), 4.0)
    src = _Moments({"0.weight": (w_loc, w_var), "0.bias": (b_loc, b_var)})
    assert layer._lrt(x) is None  # no active source
    with pp.layers.local_reparameterization(src, sample_weights=False):
        lrt = layer._lrt(x)
        assert isinstance(lrt, LRTInputs)
        assert lrt.w_loc is w_loc and lrt.w_var is w_var and lrt.bias is b_loc and lrt.bias_var is b_var
        assert lrt.sample_shape == torch.Size() and lrt.group_scale is None
        out = torch.stack([model.run_net(x) for _ in range(4000)])
    # weights exact (zero variance), bias N(b_loc, 4): mean x w^T + b, variance 4 (+ LRT_EPS)
    assert_close(out.mean(0), x @ w_loc.T + b_loc, atol=0.15, rtol=0)
    assert_close(out.var(0), torch.full((5, 3), 4.0), rtol=0.1)
    with pp.layers.local_reparameterization(src):  # inside inference: weights drawn, sample dims from them
        lrt = layer._lrt(x)
        assert lrt.bias_var is None and lrt.bias.shape == (3,) and lrt.sample_shape == torch.Size()
    with pp.layers.local_reparameterization(_Moments({"0.weight": (w_loc, w_var)}), sample_weights=False):
        with pytest.raises(ValueError, match="no posterior moments for '0.bias'"):
            layer._lrt(x)


def test_sample_dims_do_not_leak_out_of_a_forward_pass():
    model = pp.bayesianize(pool_net(lambda x: None), dist.Normal(0.0, 1.0), pp.Categorical(10))
    x, w = torch.randn(5, 1, 8), sampled_weights(model, 3)
    out = pyro.poutine.condition(model.run_net, w)(x)
    assert out.shape == (3, 5, 3)
    assert_close(out, loop_outputs(model, w, x), rtol=1e-4, atol=1e-5)
    assert folding.current_sample_dims() == 0
    with pytest.raises(ValueError, match="does not fit"):  # an exception mid-pass also closes the scope
        pyro.poutine.condition(model, w)(torch.randn(5, 1, 6))
    assert folding.current_sample_dims() == 0
    # another model's plain pass after the vectorized one sees no sample dims
    other = pp.bayesianize(pool_net(lambda x: None), dist.Normal(0.0, 1.0), pp.Categorical(10))
    assert other(x).shape == (5, 3)


def test_nested_forward_pass_has_its_own_sample_dims():
    """A forward pass run inside another's (here from a probe module) neither sees nor resets the outer count."""
    seen = []
    inner = pp.bayesianize(pool_net(lambda x: seen.append(("inner", folding.current_sample_dims())), "i_"),
                           dist.Normal(0.0, 1.0), pp.Categorical(10))  # fmt: skip
    x = torch.randn(5, 1, 8)

    def outer_hook(h):
        seen.append(("outer", folding.current_sample_dims()))
        assert inner.run_net(x).shape == (5, 3)
        seen.append(("outer", folding.current_sample_dims()))

    outer = pp.bayesianize(pool_net(outer_hook), dist.Normal(0.0, 1.0), pp.Categorical(10))
    w = sampled_weights(outer, 2)
    out = pyro.poutine.condition(outer.run_net, w)(x)
    assert seen[:3] == [("outer", 1), ("inner", 0), ("outer", 1)]
    assert out.shape == (2, 5, 3)


def test_interleaved_forward_passes_in_threads_do_not_share_sample_dims():
    """Thread A is paused inside a vectorized pass while thread B runs a whole plain pass of another model."""
    a_inside, b_done = threading.Event(), threading.Event()
    results, errors = {}, []

    def hook_a(h):
        results["a_before"] = folding.current_sample_dims()
        a_inside.set()
        b_done.wait(10)
        results["a_after"] = folding.current_sample_dims()

    model_a = pp.bayesianize(pool_net(hook_a), dist.Normal(0.0, 1.0), pp.Categorical(10))
    model_b = pp.bayesianize(pool_net(lambda h: results.setdefault("b", folding.current_sample_dims()), "b_"),
                             dist.Normal(0.0, 1.0), pp.Categorical(10))  # fmt: skip
    x, w = torch.randn(5, 1, 8), sampled_weights(model_a, 3)

    def run_a():
        try:
            results["out_a"] = pyro.poutine.condition(model_a.run_net, w)(x)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def run_b():
        try:
            a_inside.wait(10)
            results["out_b"] = model_b.run_net(x)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            b_done.set()

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert (results["a_before"], results["b"], results["a_after"]) == (1, 0, 1)
    assert results["out_a"].shape == (3, 5, 3) and results["out_b"].shape == (5, 3)


def test_unsupported_point_warning_points_at_the_caller():
    rnn = nn.Sequential(nn.Linear(4, 4), nn.GRU(4, 4))
    with pytest.warns(UserWarning, match="point estimates") as record:
        pp.bayesianize(rnn, dist.Normal(0.0, 1.0), pp.Categorical(10), unsupported="point")
    assert record[0].filename == __file__
    with pytest.raises(ValueError, match="unsupported"):
        pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), pp.Categorical(10), unsupported="ignore")
    with pytest.raises(ValueError, match="'<root>' of type GRU"):  # a bare unsupported module (a bare Linear works)
        pp.bayesianize(nn.GRU(2, 2), dist.Normal(0.0, 1.0), pp.Categorical(10))
    with pytest.raises(ValueError, match="no Linear"):
        pp.bayesianize(nn.Sequential(nn.Linear(2, 2)), {"0.weight": None, "0.bias": None}, pp.Categorical(10))


def test_moved_names_stay_importable_from_bayesianize():
    from pyro_prune.model import bayesian_layers, bayesian_model, folding, priors
    from pyro_prune.model.bayesianize import (
        FOLDED_MODULES,
        BayesianConv1d,
        BayesianConv2d,
        BayesianLinear,
        BayesianModel,
        PriorSpec,
        SiteInfo,
    )

    assert BayesianLinear is bayesian_layers.BayesianLinear and BayesianConv1d is bayesian_layers.BayesianConv1d
    assert BayesianConv2d is bayesian_layers.BayesianConv2d and BayesianModel is bayesian_model.BayesianModel
    assert SiteInfo is bayesian_model.SiteInfo and PriorSpec is priors.PriorSpec
    assert FOLDED_MODULES is folding.FOLDED_MODULES
    assert pp.BayesianModel is BayesianModel and pp.model.SiteInfo is SiteInfo


def test_group_prior_layers_and_model_record_their_groups():
    model = pp.bayesianize(mlp(), pp.GroupPrior("horseshoe"), pp.Categorical(10))
    assert model.group_prior.kind == "horseshoe" and set(model.group_sites) == {"0", "2"}
    assert model.group_sites["2"].num_groups == 8 and model.group_sites["2"].axis == 1
    assert len(model.scale_sites) == 8
    plain = pp.bayesianize(mlp(), dist.Normal(0.0, 1.0), pp.Categorical(10))
    assert plain.group_prior is None and plain.group_sites == {} and plain.scale_sites == ()


def test_weights_only_prior_covers_layer_weights_and_keeps_biases_as_point_estimates():
    from pyro_prune.model.bayesian_layers import LAYER_TYPES
    from pyro_prune.model.priors import WEIGHT_LAYERS

    assert set(WEIGHT_LAYERS) == set(LAYER_TYPES)  # the layers bayesianize converts, no drift
    prior = pp.WeightsOnly(dist.Laplace(0.0, 0.5))
    model = pp.bayesianize(CustomNet(), prior, pp.Categorical(50))
    assert list(model.sites) == ["conv.weight", "fc.weight"]  # not LayerNorm's weight, no bias
    assert {"conv.bias", "fc.bias", "norm.weight", "norm.bias"} <= set(model.point_estimates)
    sites = sample_sites(model, torch.randn(4, 1, 6))
    assert isinstance(sites["fc.weight"]["fn"].base_dist, dist.Laplace)
    assert sites["conv.weight"]["fn"].event_shape == (3, 1, 3)
    back = pickle.loads(pickle.dumps(prior))
    assert isinstance(back, pp.WeightsOnly) and back.prior.scale == 0.5
    assert "Laplace" in repr(prior)
    with pytest.raises(TypeError, match="prior must be"):
        pp.WeightsOnly(lambda *a: None)


def test_weights_only_sparse_vd_trains_point_biases_on_the_fused_path():
    torch.manual_seed(0)
    net = mlp()
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    model = pp.bayesianize(net, pp.WeightsOnly(pp.LogUniform()), pp.Categorical(32))
    guide = pp.AutoSparseVD(model)
    pp.fit(model, guide, [(x, y)], epochs=3, progress=False)
    assert set(guide.log_alpha()) == {"0.weight", "2.weight"}
    trained = dict(model.named_parameters())
    assert not torch.equal(trained["net.0.bias"].detach(), net[0].bias)  # the point biases were optimized
    pruned = pp.prune(model, guide, pp.rules.LogAlpha(3.0)).module
    assert torch.equal(pruned[0].bias, trained["net.0.bias"].detach())
    pickle.loads(pickle.dumps(model))
