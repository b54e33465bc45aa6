# %% [markdown]
# # Bayesian compression: remove whole neurons and channels
#
# Unstructured pruning (`03_sparse_variational_dropout`) zeroes single weights: the network keeps its shape, and a
# dense kernel multiplies by the zeros. To get a network that is *physically smaller* — fewer rows, columns and
# channels, faster on any hardware — prune **groups**: all the weights leaving one input unit of a linear layer, or
# one output channel of a convolution. Bayesian compression (Louizos, Ullrich & Welling, 2017) puts one shared scale
# $z_g$ on each group, $w_{gi} = z_g \tilde w_{gi}$, with a sparsity prior on $z_g$; a group whose scale the data do not
# support is removed.
#
# In this library that is `GroupPrior(kind)` in `bayesianize`, the `AutoGroupSparse` guide
# ($q(z_g)$ log-normal, $q(\tilde w \mid z) = \mathcal N(z\mu, z^2\sigma^2)$), and the `GroupLogAlpha()` rule in `prune`,
# which returns a compact `nn.Module`. Two priors on the scales:
#
# * `GroupPrior("log-uniform")`: $p(z_g) \propto 1/|z_g|$, the group analogue of sparse VD's prior;
# * `GroupPrior("horseshoe", tau0=...)`: $z_g = \tau\,\lambda_g$ with half-Cauchy local $\lambda_g$ and global $\tau$
#   (scale `tau0`), non-centred as a product of Gamma and inverse-Gamma factors.
#
# This notebook compares them on the digits MLP, shows the architecture, parameters, FLOPs and measured latency of
# the compact networks, the bits each layer needs, and then removes whole channels of a Conv1d network on mnist1d.
# Every number in the text is printed by a cell; `PYRO_PRUNE_SMOKE=1` runs it in seconds, the full run is
# `python tutorials/make.py 04 --execute`.

# %%
import copy
import os
import statistics
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F
from IPython.display import Markdown, display

import pyro_prune as pp

%matplotlib inline

SMOKE = bool(os.environ.get("PYRO_PRUNE_SMOKE"))
PRETRAIN_EPOCHS = 2 if SMOKE else 100   # dense pre-training (digits)
EPOCHS = 3 if SMOKE else 200            # group-sparse training (digits)
CNN_PRETRAIN, CNN_EPOCHS = (1, 2) if SMOKE else (40, 100)   # mnist1d Conv1d
SAMPLES = 5 if SMOKE else 100           # ensemble size
REPEATS = 3 if SMOKE else 200           # latency measurements
torch.set_num_threads(1)
t_start = time.perf_counter()
print(f"SMOKE={SMOKE}")

# %% [markdown]
# ## 1. Data and the dense network
#
# Digits with a stratified validation split carved from the training data (as in `03`), and the 64-300-100-10 MLP
# trained by a plain PyTorch loop.

# %%
def carve(x, y, fraction=0.2, seed=0):
    """Stratified (train, validation) split of (x, y)."""
    gen = torch.Generator().manual_seed(seed)
    val = torch.cat([idx[torch.randperm(len(idx), generator=gen)[: int(len(idx) * fraction)]]
                     for idx in (torch.nonzero(y == c).flatten() for c in y.unique())])
    is_val = torch.zeros(len(y), dtype=torch.bool)
    is_val[val] = True
    return (x[~is_val], y[~is_val]), (x[is_val], y[is_val])


def loader(x, y, batch_size=64, seed=0):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def pretrain(net, data, epochs, lr=1e-3):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for xb, yb in data:
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
    return net


def net_scores(net, x, y):
    with torch.no_grad():
        return pp.metrics.classification_metrics(net(x).softmax(-1), y)


split = pp.data.load_digits()
(x_tr, y_tr), (x_val, y_val) = carve(split.x_train, split.y_train)
x_te, y_te = split.x_test, split.y_test
train = loader(x_tr, y_tr)
torch.manual_seed(0)
dense = pretrain(nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)),
                 train, PRETRAIN_EPOCHS)
print(f"train {len(y_tr)}, validation {len(y_val)}, test {len(y_te)}; dense validation accuracy "
      f"{net_scores(dense, x_val, y_val)['accuracy']:.4f}")

# %% [markdown]
# ## 2. Train both group priors
#
# The recipe (the one `bench/front.py` uses): start from the pre-trained weights, Adam at lr 3e-3, the KL weight
# ramped over the first quarter of the epochs to a final $\beta = 0.5$ (a tempered posterior: half the KL's pressure,
# which on 1,153 training images keeps more accuracy; `kl_weight=1` is the ELBO). The horseshoe's global scale
# `tau0 = 1` here; the paper's `1e-5` also trains (`tests/test_horseshoe.py`).

# %%
def train_groups(kind, net, data, n_train, epochs, seed=0):
    pyro.set_rng_seed(seed)
    model = pp.bayesianize(net, pp.GroupPrior(kind, tau0=1.0), pp.Categorical(n_train))
    guide = pp.AutoGroupSparse(model)
    t0 = time.perf_counter()
    history = pp.fit(model, guide, data, epochs=epochs, lr=3e-3, kl_warmup=max(1, epochs // 4), kl_weight=0.5,
                     progress=False)
    return model, guide, history, time.perf_counter() - t0


runs = {kind: train_groups(kind, dense, train, len(y_tr), EPOCHS) for kind in ("log-uniform", "horseshoe")}
for kind, (_, _, history, seconds) in runs.items():
    print(f"{kind:12s} fit {seconds:6.1f} s, final loss {history['loss'][-1]:.4f}")

# %% [markdown]
# ## 3. Which groups go
#
# `GroupLogAlpha()` applies each group prior's default criterion (`pp.rules.GROUP_DEFAULTS`), over the weights into
# the units the next layer keeps:
#
# * log-uniform: the pooled noise-to-signal ratio $\log\sum\mathrm{Var}\,w - \log\sum(\mathbb E w)^2$ of the
#   group's weights, removed above 3;
# * horseshoe: how far the group's posterior-mean norm lies below its layer's largest,
#   $\log\max_h\lVert\mathbb E w_h\rVert - \log\lVert\mathbb E w_g\rVert$, removed above $\log 10$ (a tenth of the
#   largest). The horseshoe's noise-to-signal scores live on another scale and no single threshold on them served
#   both synthetic problems and digits (the rule's docstring and `bench/results/horseshoe_rule.md` have the
#   measurements).
#
# The plot shows each layer's scores as the rule computes them (`pp.rules.group_scores`), sorted, with the prior's
# threshold dashed.

# %%
results = {kind: pp.prune(model, guide, rule=pp.rules.GroupLogAlpha(), example_input=x_te[:1])
           for kind, (model, guide, _, _) in runs.items()}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
for ax, (kind, (_, guide, _, _)) in zip(axes, runs.items()):
    scores = pp.rules.group_scores(pp.marginals(guide))
    pp.plots.group_log_alpha(scores, threshold=pp.rules.GROUP_DEFAULTS[kind].threshold, ax=ax)
    ax.set_title(f"{kind} prior: {pp.rules.GROUP_DEFAULTS[kind].score.__name__}")
fig.tight_layout()

# %% [markdown]
# ## 4. The compact networks
#
# `result.module` is a new `nn.Sequential` with fewer rows and columns; the first layer also drops the input pixels
# nobody reads (`result.compact.input_index`). The report lists the architecture, parameters and FLOPs before and
# after, and the fixed-point bits each layer needs for its kept weights (Louizos et al. §4: the step is the weights'
# mean posterior standard deviation).

# %%
for kind, res in results.items():
    st = res.report.structure
    print(f"{kind}:\n  {res.compact.summary()}")
    print("  bits per layer:", st["bits"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
for ax, (kind, res) in zip(axes, results.items()):
    pp.plots.kept_groups(res.group_masks, ax=ax)
    ax.set_title(f"{kind}: groups kept per layer")
fig.tight_layout()

# %% [markdown]
# ## 5. Accuracy of the compact network and of the pruned ensemble
#
# The compact network carries the posterior-mean weights (one deterministic net); the ensemble averages networks
# drawn from the pruned posterior. The validation scores are what you would look at to accept a compression; the
# test scores are reported once.

# %%
rows = {"dense": (net_scores(dense, x_val, y_val), net_scores(dense, x_te, y_te), 1.0)}
for kind, res in results.items():
    model = runs[kind][0]
    pyro.set_rng_seed(1)
    rows[f"{kind} compact"] = (net_scores(res.module, x_val, y_val), net_scores(res.module, x_te, y_te),
                               res.compact.params_ratio)
    rows[f"{kind} ensemble"] = (pp.evaluate(model, res.guide, (x_val, y_val), num_samples=SAMPLES),
                                pp.evaluate(model, res.guide, (x_te, y_te), num_samples=SAMPLES),
                                res.compact.params_ratio)
print(f"{'':24s}{'params ÷':>9s}{'val acc':>9s}{'val NLL':>9s}{'test acc':>10s}{'test NLL':>10s}{'test ECE':>10s}")
for name, (v, t, ratio) in rows.items():
    print(f"{name:24s}{ratio:9.1f}{v['accuracy']:9.4f}{v['nll']:9.4f}{t['accuracy']:10.4f}{t['nll']:10.4f}"
          f"{t['ece']:10.4f}")

# %% [markdown]
# ### The horseshoe's default against a validation sweep
#
# The horseshoe's default criterion was chosen on synthetic problems where a few inputs matter
# (`tests/test_horseshoe.py`) and on digits' validation splits. If you want more compression, sweep a threshold on
# the validation split, as `03` does for sparse VD: here pooled noise-to-signal thresholds `GroupLogAlpha(t)`, taking
# the most compression whose compact network stays within 1 pp of the dense network's validation accuracy, beside
# the default.

# %%
hs_model, hs_guide = runs["horseshoe"][0], runs["horseshoe"][1]
sweep = []
for t in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0):
    res_t = pp.prune(hs_model, hs_guide, rule=pp.rules.GroupLogAlpha(t), example_input=x_te[:1])
    sweep.append((t, res_t, net_scores(res_t.module, x_val, y_val)["accuracy"]))
dense_val_acc = rows["dense"][0]["accuracy"]
print(f"default GroupLogAlpha(): {results['horseshoe'].compact.after:>16s}  "
      f"{results['horseshoe'].compact.params_ratio:5.1f}× fewer parameters, validation accuracy "
      f"{rows['horseshoe compact'][0]['accuracy']:.4f}")
ok = [row for row in sweep if row[2] >= dense_val_acc - 0.01]
for t, res_t, acc in sweep:
    print(f"GroupLogAlpha({t:g}): {res_t.compact.after:>16s}  {res_t.compact.params_ratio:5.1f}× fewer parameters, "
          f"validation accuracy {acc:.4f}")
if ok:
    t_hs, res_hs, acc_hs = max(ok, key=lambda row: row[1].compact.params_ratio)
    test_hs = net_scores(res_hs.module, x_te, y_te)
    print(f"chosen on validation: GroupLogAlpha({t_hs:g}) -> {res_hs.compact.params_ratio:.1f}× fewer parameters, "
          f"test accuracy {test_hs['accuracy']:.4f} (log-uniform at its default: "
          f"{results['log-uniform'].compact.params_ratio:.1f}×, {rows['log-uniform compact'][1]['accuracy']:.4f})")
else:
    print("no horseshoe threshold keeps the validation accuracy within 1 pp of the dense network's")

# %% [markdown]
# ## 6. Is it faster? Latency of the compact network
#
# Timed interleaved in this process (dense, compact, dense, ...), the median of many repeats, one thread; a ratio
# is more portable than seconds. Batch 1 is dominated by per-layer overhead, a full batch by the matrix products.

# %%
def median_seconds(nets, x, repeats):
    times = {name: [] for name in nets}
    with torch.no_grad():
        for _ in range(repeats):
            for name, net in nets.items():
                t0 = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


latency = {}
for batch in (1, len(x_te)):
    nets = {"dense": dense, **{kind: res.module for kind, res in results.items()}}
    latency[batch] = median_seconds(nets, x_te[:batch], REPEATS)
    print(f"batch {batch:4d}: " + ", ".join(
        f"{name} {1e6 * s:7.1f} µs ({latency[batch]['dense'] / s:4.1f}× faster than dense)"
        for name, s in latency[batch].items()))

# %%
accepted = [k for k in results if rows[f"{k} compact"][0]["accuracy"] >= dense_val_acc - 0.01]
rejected = [k for k in results if k not in accepted]
best = max(accepted or results, key=lambda k: results[k].compact.flops_ratio)
res = results[best]
display(Markdown(
    (f"On validation, {', '.join(rejected)} lost more than 1 pp of the dense network's accuracy at its default "
     f"threshold (rejected: a smaller network is no use if it is wrong). " if rejected else "")
    + f"The smallest accepted network ({best} prior) is **{res.compact.after}** (from {res.compact.before}), "
    f"{res.compact.params_ratio:.1f}× fewer parameters and {res.compact.flops_ratio:.1f}× fewer FLOPs; measured on "
    f"the full test batch it runs {latency[len(x_te)]['dense'] / latency[len(x_te)][best]:.1f}× faster than the "
    f"dense network (at batch 1, {latency[1]['dense'] / latency[1][best]:.1f}×: the per-layer overhead does not "
    f"shrink)."
))

# %% [markdown]
# ## 7. Which pixels does the compact network read?
#
# The first layer's groups are the 64 input pixels. Those whose group was removed are never read: the compact
# network selects the kept ones (`input_index`) before its first `Linear`.

# %%
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
axes[0].imshow(x_tr[:200].abs().mean(0).reshape(8, 8), cmap="viridis")
axes[0].set_title("mean |pixel| (standardized)", fontsize="small")
for ax, (kind, res) in zip(axes[1:], results.items()):
    kept = torch.zeros(64)
    kept[res.compact.input_index if res.compact.input_index is not None else torch.arange(64)] = 1
    ax.imshow(kept.reshape(8, 8), cmap="Greys", vmin=0, vmax=1)
    ax.set_title(f"{kind}: {int(kept.sum())} pixels read", fontsize="small")
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()

# %% [markdown]
# ## 8. A convolutional network: whole channels go
#
# For `Conv1d`/`Conv2d` layers a group is an output channel. mnist1d (Greydanus 2020) is generated locally: 40-sample
# 1-D signals of 10 classes. The network has two convolutions of 32 channels, a 320-100 linear layer and the
# 10-way output. After group-sparse training the compact network has fewer channels in each convolution and fewer
# inputs to the linear layer.

# %%
m1d = pp.data.load_mnist1d(num_samples=800 if SMOKE else 4000)
(c_tr, cy_tr), (c_val, cy_val) = carve(m1d.x_train, m1d.y_train)
c_train = loader(c_tr, cy_tr)
torch.manual_seed(0)
cnn = pretrain(nn.Sequential(
    nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
    nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
    nn.Flatten(), nn.Linear(32 * 10, 100), nn.ReLU(), nn.Linear(100, 10),
), c_train, CNN_PRETRAIN)
c_model, c_guide, _, c_seconds = train_groups("log-uniform", cnn, c_train, len(cy_tr), CNN_EPOCHS)
c_res = pp.prune(c_model, c_guide, rule=pp.rules.GroupLogAlpha(), example_input=m1d.x_test[:1])
print(c_res.compact.summary())
for change in c_res.compact.layers:
    print(f"  {change.name:3s} {change.kind:7s} in {change.in_before:4d} -> {change.in_after:4d}   "
          f"out {change.out_before:4d} -> {change.out_after:4d}")
torch.manual_seed(0)
cnn_equal = pretrain(copy.deepcopy(cnn), c_train, CNN_EPOCHS)  # the dense net trained for the same extra epochs
c_rows = {f"dense Conv1d ({CNN_PRETRAIN} ep)": net_scores(cnn, m1d.x_test, m1d.y_test),
          f"dense Conv1d ({CNN_PRETRAIN + CNN_EPOCHS} ep)": net_scores(cnn_equal, m1d.x_test, m1d.y_test),
          "compact Conv1d": net_scores(c_res.module, m1d.x_test, m1d.y_test)}
for name, s in c_rows.items():
    print(f"{name:24s} test accuracy {s['accuracy']:.4f}  NLL {s['nll']:.4f}")
print(f"group-sparse fit: {c_seconds:.0f} s")

# %%
conv_changes = [c for c in c_res.compact.layers if c.kind.lower().startswith("conv")]
display(Markdown(
    "Channels kept per convolution: " + ", ".join(f"`{c.name}` {c.out_after} of {c.out_before}" for c in conv_changes)
    + f". The compact Conv1d network has {c_res.compact.params_ratio:.1f}× fewer parameters and "
    f"{c_res.compact.flops_ratio:.1f}× fewer FLOPs; test accuracy {c_rows['compact Conv1d']['accuracy']:.4f} "
    f"against {c_rows[f'dense Conv1d ({CNN_PRETRAIN + CNN_EPOCHS} ep)']['accuracy']:.4f} for the dense network "
    f"trained as many epochs in all (one split, {len(m1d.y_test)} test signals). The dense network stopped at "
    f"{CNN_PRETRAIN} epochs is not the fair comparison: the group-sparse run trained {CNN_EPOCHS} epochs more."
))

# %% [markdown]
# ## When to use group sparsity — and when not
#
# **Use it** when the goal is a network that is smaller and faster everywhere, without sparse kernels: the compact
# module is ordinary PyTorch (export it, quantize it — the bits per layer say how far); when you want to learn the
# width of each layer from data; for CNNs, where removing channels is the only pruning that reliably speeds up
# convolutions.
#
# **Don't** when you need the highest compression ratio in weights: unstructured sparse VD (`03`) removes many more
# weights, because it does not have to remove them a whole row at a time; when the architecture has residual
# additions or concatenations the compactor cannot follow (the layers stay masked and `prune` says so in a
# warning); when you only need uncertainty from an already trained network (Laplace, `05`).
#
# **Which prior?** Compare them on your validation data as section 5 does: the priors differ in how hard they
# push (the log-uniform prior has no scale to set; the horseshoe's `tau0` sets the global shrinkage), and their
# scores have different default criteria.

# %%
print(f"total notebook time: {time.perf_counter() - t_start:.1f} s")
