"""fit under faults: NaN inputs or a bad label in a later epoch, a learning rate that blows up, Ctrl-C mid-epoch,
an empty loader. Each leaves finite parameters equal to those before the failing step (recorded independently by the
data iterator, which sees the parameters as each batch is drawn), the History so far on the exception, a message
naming the cause, and a model and guide that still predict and train. Both paths: fused (AutoSparseVD) and SVI
(AutoNormal; AutoSparseVD with alpha=0.5), in both settings of ``module_local_params``."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from pyro_prune.training import NonFiniteError, TrainingState

N, BATCH = 40, 10  # four batches per epoch

# (name, guide factory, fit keywords, path fit must take)
PATHS = [
    ("fused-sparse-vd", pp.AutoSparseVD, {}, "fused"),
    ("svi-autonormal", AutoNormal, {}, "svi"),
    ("svi-renyi-sparse-vd", pp.AutoSparseVD, {"alpha": 0.5, "num_particles": 2}, "svi"),
]
PATH_IDS = [p[0] for p in PATHS]


@pytest.fixture(params=[False, True], ids=["global-params", "module-local-params"])
def local_params(request):
    with pyro.settings.context(module_local_params=request.param):
        yield request.param


def build(make_guide):
    x = torch.randn(N, 3)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(N))
    guide = make_guide(model)
    guide(x[:BATCH], y[:BATCH])  # set up now, so that fit's first pass over the data is epoch 0
    return model, guide, x, y


def all_params(model, guide):
    """Every tensor training can move: the guide's and model's parameters and Pyro's param store (by name)."""
    out = {f"guide.{k}": v for k, v in guide.named_parameters()}
    out.update({f"model.{k}": v for k, v in model.named_parameters()})
    out.update({f"store.{k}": v for k, v in pyro.get_param_store().items()})
    return {k: v.detach().clone() for k, v in out.items()}


class FaultyData:
    """Batches of (x, y) in order; records the parameters each time a batch is drawn (= before its step) and
    applies ``fault(epoch, index, x, y)`` (which may change the batch or raise)."""

    def __init__(self, x, y, model, guide, fault=None):
        self.x, self.y, self.model, self.guide, self.fault = x, y, model, guide, fault
        self.epoch, self.before = -1, {}

    def __len__(self):
        return N // BATCH

    def __iter__(self):
        self.epoch += 1
        for i in range(len(self)):
            x, y = self.x[i * BATCH : (i + 1) * BATCH].clone(), self.y[i * BATCH : (i + 1) * BATCH].clone()
            self.before[self.epoch, i] = all_params(self.model, self.guide)
            if self.fault is not None:
                x, y = self.fault(self.epoch, i, x, y)
            yield x, y


def assert_same_params(actual, expected):
    assert actual.keys() == expected.keys()
    for k in expected:
        assert torch.isfinite(actual[k]).all(), f"{k} is not finite"
        assert torch.equal(actual[k], expected[k]), f"{k} differs from its value before the failing step"


def assert_usable(model, guide, x, y, history, epochs_done, kw):
    """The History so far is on the exception; the model and guide predict and train on."""
    assert [r["epoch"] for r in history.records] == list(range(epochs_done))
    assert isinstance(history.state, TrainingState) and history.state.epoch == epochs_done
    probs = pp.predict(model, guide, x, num_samples=4).probs
    assert torch.isfinite(probs).all()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    h = pp.fit(model, guide, loader, epochs=1, lr=1e-3, progress=False, resume=history, **kw)
    assert [r["epoch"] for r in h.records] == list(range(epochs_done + 1)) and math.isfinite(h["loss"][-1])


def run_fault(make_guide, kw, fault, error, **fit_kw):
    model, guide, x, y = build(make_guide)
    data = FaultyData(x, y, model, guide, fault)
    with pytest.raises(error) as info:
        pp.fit(model, guide, data, epochs=4, lr=1e-2, progress=False, **kw, **fit_kw)
    return model, guide, x, y, data, info.value


@pytest.mark.parametrize("name, make_guide, kw, path", PATHS, ids=PATH_IDS)
def test_nan_inputs_in_a_later_epoch(local_params, name, make_guide, kw, path):
    def nan_at_epoch_2(epoch, i, x, y):
        if (epoch, i) == (2, 1):
            x[3, 1] = float("nan")
        return x, y

    model, guide, x, y, data, err = run_fault(make_guide, kw, nan_at_epoch_2, ValueError)
    assert "NaN" in str(err) and "batch 1 of epoch 2" in str(err)
    assert not isinstance(err, FloatingPointError)  # a data error, not "try a smaller lr"
    assert_same_params(all_params(model, guide), data.before[2, 1])
    assert err.history.state.step == 2 * 4 + 1  # steps taken: two epochs and one batch
    assert_usable(model, guide, x, y, err.history, 2, kw)


@pytest.mark.parametrize("label", [-100, 2])
@pytest.mark.parametrize("name, make_guide, kw, path", PATHS, ids=PATH_IDS)
def test_label_out_of_range_in_a_later_epoch(name, make_guide, kw, path, label):
    def bad_label_at_epoch_1(epoch, i, x, y):
        if (epoch, i) == (1, 2):
            y[0] = label
        return x, y

    model, guide, x, y, data, err = run_fault(make_guide, kw, bad_label_at_epoch_1, ValueError)
    assert "labels outside [0, 2)" in str(err) and "batch 2 of epoch 1" in str(err)
    assert_same_params(all_params(model, guide), data.before[1, 2])
    assert_usable(model, guide, x, y, err.history, 1, kw)


@pytest.mark.parametrize("name, make_guide, kw, path", PATHS, ids=PATH_IDS)
def test_ctrl_c_mid_epoch_from_the_data_iterator(local_params, name, make_guide, kw, path):
    def interrupt(epoch, i, x, y):
        if (epoch, i) == (1, 2):
            raise KeyboardInterrupt
        return x, y

    model, guide, x, y, data, err = run_fault(make_guide, kw, interrupt, KeyboardInterrupt)
    assert_same_params(all_params(model, guide), data.before[1, 2])  # two steps of epoch 1 were taken, no more
    assert err.history.state.step == 4 + 2
    assert all(p.grad is None for p in guide.parameters())
    assert_usable(model, guide, x, y, err.history, 1, kw)


def test_ctrl_c_from_a_callback_keeps_the_epoch_it_closed():
    model, guide, x, y = build(pp.AutoSparseVD)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)

    def stop_at_epoch_2(epoch, record, model, guide):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        pp.fit(model, guide, loader, epochs=5, progress=False, callbacks=[stop_at_epoch_2])
    history = info.value.history
    assert len(history) == 3 and history.state.epoch == 3 and history.state.step == 12
    assert_usable(model, guide, x, y, history, 3, {})


def exploding_schedule(torch_optimizer, gamma):
    """Learning rate 1e-2 for two epochs, then ``1e-2 * gamma`` (the callback steps the schedule per epoch)."""
    args = {"optimizer": torch_optimizer, "optim_args": {"lr": 1e-2}, "step_size": 2, "gamma": gamma}
    return pyro.optim.StepLR(args)


@pytest.mark.parametrize("name, make_guide, kw, path", PATHS, ids=PATH_IDS)
def test_learning_rate_too_high_stops_before_the_bad_step(local_params, name, make_guide, kw, path):
    """Adam at lr 100 from epoch 2: a variance overflows, the loss (or Pyro's validation) meets NaN; the step is
    not taken, so the parameters are those before it."""
    sched = exploding_schedule(torch.optim.Adam, 1e4)
    model, guide, x, y, data, err = run_fault(
        make_guide, kw, None, NonFiniteError, optimizer=sched, callbacks=[lambda *a: sched.step()]
    )
    assert isinstance(err, FloatingPointError) and err.epoch >= 2
    message = str(err)
    assert f"epoch {err.epoch}, step {err.step} (input batch {err.batch}" in message
    assert "NaN" in message or "nan" in message
    assert "smaller learning rate (now 100)" in message and "step was not taken" in message
    assert_same_params(all_params(model, guide), data.before[err.epoch, err.batch])
    assert err.history.state.step == err.step and len(err.history) == err.epoch


@pytest.mark.parametrize("name, make_guide, kw, path", PATHS, ids=PATH_IDS)
def test_an_update_that_overflows_restores_the_epoch_start(name, make_guide, kw, path):
    """SGD at lr 1e38 from epoch 2: the first update of epoch 2 makes parameters infinite (its own loss and
    gradients were finite), the next step fails; fit restores the parameters and optimizer state of the epoch's
    start. (Where the update leaves them finite but extreme, the next step's invalid values are caught and the
    parameters are those before it.)"""
    sched = exploding_schedule(torch.optim.SGD, 1e40)
    model, guide, x, y, data, err = run_fault(
        make_guide, kw, None, NonFiniteError, optimizer=sched, callbacks=[lambda *a: sched.step()]
    )
    assert (err.epoch, err.batch) == (2, 1)
    overflowed = not all(torch.isfinite(v).all() for v in data.before[2, 1].values())
    assert overflowed or path == "svi"  # AutoNormal's scales may stay finite (0); then nothing needs restoring
    if overflowed:
        assert "overflowed" in str(err) and "start of epoch 2 are restored" in str(err)
        assert_same_params(all_params(model, guide), data.before[2, 0])
        assert err.history.state.step == 2 * 4  # the restored position: the start of epoch 2
    else:
        assert "step was not taken" in str(err) and "Pyro's validation" in str(err)
        assert_same_params(all_params(model, guide), data.before[2, 1])


@pytest.mark.parametrize("name, make_guide, kw, path", PATHS, ids=PATH_IDS)
def test_non_finite_gradient_with_finite_loss_is_caught(name, make_guide, kw, path):
    """A gradient hook poisons one parameter's gradient at one step: the loss is finite, the step must still not
    be taken, and the message names the parameter."""
    model, guide, x, y = build(make_guide)
    data = FaultyData(x, y, model, guide)
    target = next(p for n, p in guide.named_parameters() if "0" in n)
    hook = target.register_hook(lambda g: g * float("nan") if data.epoch == 1 else g)
    with pytest.raises(NonFiniteError) as info:
        pp.fit(model, guide, data, epochs=3, lr=1e-2, progress=False, **kw)
    hook.remove()
    err = info.value
    assert (err.epoch, err.batch) == (1, 0) and "the gradient of" in err.cause and "loss is nan" not in str(err)
    assert_same_params(all_params(model, guide), data.before[1, 0])


@pytest.mark.parametrize("name, make_guide, kw, path", PATHS, ids=PATH_IDS)
def test_empty_data_raises_a_clear_value_error(name, make_guide, kw, path):
    x = torch.randn(N, 3)
    model = pp.bayesianize(nn.Sequential(nn.Linear(3, 2)), dist.Normal(0.0, 1.0), pp.Categorical(N))
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:0], x[:0, 0].long()), batch_size=BATCH)
    for data in (empty, []):
        with pytest.raises(ValueError, match="data yielded no batches"):
            pp.fit(model, make_guide(model), data, epochs=1, progress=False, **kw)  # a fresh guide: not set up
    guide = make_guide(model)
    guide(x[:BATCH], x[:BATCH, 0].gt(0).long())
    with pytest.raises(ValueError, match="data yielded no batches"):
        pp.fit(model, guide, empty, epochs=1, progress=False, **kw)
