"""``predict`` in bounded memory (issue 12, point 5) and its input checks (point 7).

"Identical" means ``torch.equal`` on the members (outputs, probabilities/means, scales) and on every summary, for
the same seed, between the unchunked path (``sample_chunk >= num_samples``, ``batch_size=None``, unlimited
``max_memory``: one forward pass over every network and input) and any chunking of networks and inputs; the random
state after ``predict`` is the same too.
"""

import os
import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal

import pyro_prune as pp
from tests.helpers import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNCHUNKED = {"sample_chunk": 10**6, "max_memory": 2**50}
CHUNKINGS = [
    {"sample_chunk": 7, "batch_size": 13},
    {"sample_chunk": 32, "batch_size": 50},
    {"max_memory": 200_000, "keep_samples": True},  # auto: a few networks and inputs per pass
    {"sample_chunk": 1, "batch_size": 1000, "keep_samples": False},
]


def digits_model(kind: str, n_test: int = 60):
    split = pp.data.load_digits()
    net = nn.Sequential(nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 10))
    prior = pp.LogUniform() if kind == "vd" else dist.Normal(0.0, 1.0)
    model = pp.bayesianize(net, prior, pp.Categorical(len(split.x_train)))
    guide = pp.AutoSparseVD(model) if kind == "vd" else AutoNormal(model, init_scale=0.3)
    guide(split.x_train[:8], split.y_train[:8])
    return model, guide, split.x_test[:n_test]


def regression_model():
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Gaussian(30, scale=0.2))
    guide = AutoNormal(model, init_scale=0.3)
    x = torch.randn(30, 2)
    guide(x, torch.zeros(30))
    return model, guide, x


def summaries(p):
    if p.task == "classification":
        return {"probs": p.probs, "entropy": p.entropy, "mi": p.mutual_information}
    return {"mean": p.mean, "epi": p.epistemic_std, "ale": p.aleatoric_std, "std": p.std}


def seeded(model, guide, x, S, **kw):
    pyro.set_rng_seed(123)
    p = pp.predict(model, guide, x, num_samples=S, **kw)
    return p, torch.rand(3)  # the random state after predict


@pytest.mark.parametrize("kind", ["normal", "vd", "regression"])
def test_chunked_equals_unchunked_bit_for_bit(kind):
    model, guide, x = regression_model() if kind == "regression" else digits_model(kind)
    S = 75  # three draw blocks, the last one partial
    ref, after = seeded(model, guide, x, S, keep_samples=True, **UNCHUNKED)
    assert ref.has_members and ref.samples.shape[:2] == (S, len(x))
    assert float(ref.samples.std(0).max()) > 1e-3  # the members differ
    for kw in CHUNKINGS:
        p, after_p = seeded(model, guide, x, S, **kw)
        assert torch.equal(after, after_p), f"{kw}: the random state after predict differs"
        for name, value in summaries(ref).items():
            assert torch.equal(value, summaries(p)[name]), f"{kw}: {name} differs"
        if kw.get("keep_samples", True) is not False:
            assert p.has_members
            assert torch.equal(p.outputs, ref.outputs) and torch.equal(p.samples, ref.samples), kw
            assert (p.scales is None) == (ref.scales is None)
            assert p.scales is None or torch.equal(p.scales, ref.scales)


@pytest.mark.parametrize("kind", ["normal", "regression"])
def test_streamed_summaries_match_the_members(kind):
    """The summaries accumulated member by member agree with the same statistics computed from the members."""
    model, guide, x = regression_model() if kind == "regression" else digits_model(kind)
    p = pp.predict(model, guide, x, num_samples=50, sample_chunk=9, batch_size=11)
    s = p.samples.double()
    if kind == "regression":
        assert_close(p.mean, s.mean(0), rtol=1e-5, atol=1e-6)
        assert_close(p.epistemic_std, s.std(0, unbiased=False), rtol=1e-4, atol=1e-6)
        assert_close(p.aleatoric_std, p.scales.double().pow(2).mean(0).sqrt(), rtol=1e-5)
        return
    mean = s.mean(0)
    ent = -(mean * mean.log()).sum(-1)
    mi = ent + (s * s.clamp_min(1e-12).log()).sum(-1).mean(0)
    assert_close(p.probs, mean, rtol=1e-5, atol=1e-7)
    assert_close(p.entropy, ent, rtol=1e-5, atol=1e-6)
    assert_close(p.mutual_information, mi.clamp_min(0), rtol=1e-4, atol=1e-5)


def test_networks_are_drawn_in_blocks_whatever_the_chunking():
    """The first ``draw_block`` networks of a larger ensemble are those of an ensemble of ``draw_block``."""
    model, guide, x = digits_model("normal", n_test=10)
    small, _ = seeded(model, guide, x, 32)
    large, _ = seeded(model, guide, x, 96, sample_chunk=5)
    assert torch.equal(large.outputs[:32], small.outputs)
    assert not torch.equal(large.outputs[32:64], small.outputs)
    other, _ = seeded(model, guide, x, 32, draw_block=16)  # the draw block is part of the seed
    assert not torch.equal(other.outputs, small.outputs)


def test_members_kept_only_when_they_fit_or_asked():
    model, guide, x = digits_model("normal", n_test=20)
    assert pp.predict(model, guide, x, num_samples=10).has_members
    p = pp.predict(model, guide, x, num_samples=200, max_memory=100_000)  # 200 x 20 x 10 x 4 B x 2 > 100 kB
    assert not p.has_members and p.probs.shape == (20, 10)
    with pytest.raises(AttributeError, match="keep_samples=True"):
        _ = p.samples
    with pytest.raises(AttributeError, match="keep_samples=True"):
        _ = p.outputs
    kept = pp.predict(model, guide, x, num_samples=200, max_memory=100_000, keep_samples=True)
    assert kept.samples.shape == (200, 20, 10)
    assert not pp.predict(model, guide, x, num_samples=5, keep_samples=False).has_members


MEMORY_SCRIPT = """
import sys, torch, pyro, pyro_prune as pp, torch.nn as nn, pyro.distributions as dist
torch.set_num_threads(1)
pyro.set_rng_seed(0)
kind, S, chunked = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "chunked"
split = pp.data.load_digits()
net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
prior = pp.LogUniform() if kind == "vd" else dist.Normal(0.0, 1.0)
model = pp.bayesianize(net, prior, pp.Categorical(len(split.x_train)))
guide = pp.AutoSparseVD(model) if kind == "vd" else pyro.infer.autoguide.AutoNormal(model)
guide(split.x_train[:10], split.y_train[:10])
pp.predict(model, guide, split.x_test[:5], num_samples=3)  # warm up the code paths

def kib(field):  # VmRSS: resident now; VmHWM: peak resident since the last reset
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current resident set (Linux >= 4.0)
base = kib("VmRSS")
kw = {} if chunked else {"sample_chunk": S, "max_memory": 2**50}
p = pp.predict(model, guide, split.x_test, num_samples=S, **kw)
peak = kib("VmHWM")
assert p.probs.shape == (360, 10) and abs(float(p.probs.sum()) - 360) < 1e-2
print((peak - base) / 1024, p.has_members)
"""


def peak_mb(kind: str, S: int, mode: str) -> float:
    """Peak resident set of a fresh process during one ``predict`` above its resident set before (MB).

    The peak (``VmHWM``) is reset just before the call, so whatever the process touched earlier does not hide it.
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT), kind, str(S), mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    mb, kept = out.stdout.split()
    return float(mb)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's resettable VmHWM")
def test_ten_thousand_samples_on_360_digits_stay_under_300_mb():
    # the meter sees the unchunked path: 1500 networks at once already take well over 300 MB
    assert peak_mb("normal", 1500, "unchunked") > 300
    assert peak_mb("vd", 10000, "chunked") < 300


def test_bad_inputs_and_options():
    model, guide, x = digits_model("normal", n_test=6)
    with pytest.raises(ValueError, match=r"1-D tensor of shape \(64,\).*unsqueeze\(0\)"):
        pp.predict(model, guide, x[0], num_samples=2)
    with pytest.raises(TypeError, match=r"torch.int64.*x.to\(torch.float32\)"):
        pp.predict(model, guide, x.long(), num_samples=2)
    for name, bad, err in [
        ("sample_chunk", 0, ValueError),
        ("max_memory", 0, ValueError),
        ("draw_block", 0, ValueError),
        ("keep_samples", 1, TypeError),
        ("sample_chunk", 2.5, TypeError),
    ]:
        with pytest.raises(err, match=name):
            pp.predict(model, guide, x, num_samples=2, **{name: bad})


def test_integer_token_inputs_are_accepted_by_an_embedding_network():
    net = nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 3))
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(10))
    guide = AutoNormal(model)
    tokens = torch.randint(0, 7, (10,))
    guide(tokens, torch.zeros(10, dtype=torch.long))
    p = pp.predict(model, guide, tokens, num_samples=4)  # 1-D integer ids: a batch of tokens
    assert p.probs.shape == (10, 3)
