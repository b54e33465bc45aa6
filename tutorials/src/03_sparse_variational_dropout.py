# %% [markdown]
# # Sparse variational dropout: prune a trained network by its posterior
#
# You have a trained PyTorch network and want a much smaller one that predicts almost as well, with a
# say in *which* weights go: not the smallest ones, but the ones the data do not pin down. Sparse variational dropout
# (Molchanov et al., 2017) gives every weight a Gaussian posterior $q(w) = \mathcal N(\theta, \sigma^2)$ under the
# scale-invariant log-uniform prior $p(|w|) \propto 1/|w|$. Training drives the noise-to-signal ratio
# $\alpha = \sigma^2/\theta^2$ of most weights to infinity: such a weight is pure noise and is removed. In this
# library that is `AutoSparseVD` → `fit` → `prune`.
#
# This notebook answers the questions a practitioner asks:
#
# 1. how $\log\alpha$ separates the weights during training;
# 2. **which threshold** — chosen on a validation split carved from the training data, never on the test set;
# 3. the pruned **posterior-mean network** against the pruned **posterior ensemble**;
# 4. what the masks look like (the first layer's weights are 8×8 pictures);
# 5. the per-layer compression report;
# 6. a Rényi objective ($\alpha_R < 1$, the power on the likelihood) against the ELBO;
# 7. saving the pruned network as a plain PyTorch model.
#
# Every number in the text below is printed by a cell. `PYRO_PRUNE_SMOKE=1` runs it in seconds (the test suite does);
# the full run (`python tutorials/make.py 03 --execute`) takes a few minutes on 2 CPU cores.

# %%
import os
import tempfile
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
PRETRAIN_EPOCHS = 2 if SMOKE else 100   # dense pre-training
EPOCHS = 3 if SMOKE else 300            # sparse variational dropout
WARMUP = 1 if SMOKE else 50             # KL warm-up epochs
SAMPLES = 5 if SMOKE else 100           # ensemble size
torch.set_num_threads(1)
t_start = time.perf_counter()
print(f"SMOKE={SMOKE}: pre-train {PRETRAIN_EPOCHS} epochs, sparse VD {EPOCHS} epochs, {SAMPLES}-member ensembles")

# %% [markdown]
# ## 1. Data: train, validation, test
#
# The 8×8 digits (1,437 training and 360 test images). Thresholds are hyper-parameters: we carve a stratified 20 %
# validation split out of the training data and choose on it. The test set is touched once, at the end.

# %%
split = pp.data.load_digits()
gen = torch.Generator().manual_seed(0)
val_idx = torch.cat([
    idx[torch.randperm(len(idx), generator=gen)[: len(idx) // 5]]
    for idx in (torch.nonzero(split.y_train == c).flatten() for c in range(split.num_classes))
])
is_val = torch.zeros(len(split.y_train), dtype=torch.bool)
is_val[val_idx] = True
x_tr, y_tr = split.x_train[~is_val], split.y_train[~is_val]
x_val, y_val = split.x_train[is_val], split.y_train[is_val]
x_te, y_te = split.x_test, split.y_test
train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_tr, y_tr), batch_size=64, shuffle=True,
                                    generator=torch.Generator().manual_seed(0))
print(f"train {len(y_tr)}, validation {len(y_val)}, test {len(y_te)}")

# %% [markdown]
# ## 2. Pre-train the dense network
#
# Sparse VD starts best from a trained network: `AutoSparseVD` initialises $\theta$ at the network's weights and
# $\log\sigma^2$ at −10, so the first epochs are the dense network plus a little noise. Here a plain PyTorch loop
# trains a 64-300-100-10 MLP (the classic LeNet-300-100 shape on 64 inputs).

# %%
def scores(probs, y):
    return pp.metrics.classification_metrics(probs, y)


torch.manual_seed(0)
net = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for _ in range(PRETRAIN_EPOCHS):
    for xb, yb in train:
        opt.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        opt.step()
with torch.no_grad():
    dense_val, dense_test = scores(net(x_val).softmax(-1), y_val), scores(net(x_te).softmax(-1), y_te)
n_weights = sum(p.numel() for p in net.parameters())
print(f"dense: {n_weights} weights, validation accuracy {dense_val['accuracy']:.4f}, NLL {dense_val['nll']:.4f}")

# %% [markdown]
# ## 3. `bayesianize` and train the sparse posterior
#
# The log-uniform prior is improper, but its KL to the Gaussian posterior depends only on $\alpha$ (Molchanov's
# approximation). The fused local-reparameterization path samples pre-activations instead of weights, which is both
# cheaper and lower-variance. The KL weight is ramped from 0 to 1 over `kl_warmup` epochs, so the
# network first fits the data, then sheds weights. A callback snapshots $\log\alpha$ during training.
#
# A bare prior covers every `Linear`/`Conv` weight *and bias*. Molchanov et al. keep the biases as point estimates;
# `pp.bayesianize(net, prior=pp.WeightsOnly(pp.LogUniform()), ...)` does that. On the benchmark front
# (`bench/front.py`, 10 paired splits) it was 1.9 pp more accurate at 5× on mnist1d (10,000 test signals a split)
# and 0.2–0.3 pp on the digits (within the noise). This tutorial keeps the default.

# %%
def train_sparse_vd(alpha=1.0, num_particles=1, seed=0, alpha_on="joint"):
    pyro.set_rng_seed(seed)
    model = pp.bayesianize(net, prior=pp.LogUniform(), likelihood=pp.Categorical(len(y_tr)))
    guide = pp.AutoSparseVD(model)
    snapshots = {}

    def snapshot(epoch, record, model, guide):
        if epoch in checkpoints:
            snapshots[epoch] = {k: v.clone() for k, v in guide.log_alpha().items()}

    checkpoints = {1, WARMUP, EPOCHS // 2, EPOCHS}
    t0 = time.perf_counter()
    history = pp.fit(model, guide, train, epochs=EPOCHS, lr=1e-3, kl_warmup=WARMUP, alpha=alpha,
                     num_particles=num_particles, alpha_on=alpha_on, callbacks=[snapshot], progress=False)
    return model, guide, history, snapshots, time.perf_counter() - t0


model, guide, history, snapshots, seconds = train_sparse_vd()
print(f"fit: {seconds:.1f} s, final loss {history['loss'][-1]:.4f}")

# %%
fig, axes = plt.subplots(1, len(snapshots), figsize=(3.6 * len(snapshots), 3), sharey=True)
for ax, (epoch, la) in zip(np.atleast_1d(axes), sorted(snapshots.items())):
    values = torch.cat([v.flatten() for v in la.values()]).numpy()
    ax.hist(values, bins=60, range=(-10, 10), color="C0")
    ax.axvline(3.0, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set(title=f"epoch {epoch}: {np.mean(values > 3):.0%} above 3", xlabel=r"$\log\alpha$")
np.atleast_1d(axes)[0].set_ylabel("weights")
fig.tight_layout()

# %% [markdown]
# All weights start at $\log\alpha = \log\sigma^2 - \log\theta^2 \approx -10 - \log\theta^2$. As the KL weight
# ramps up, the distribution splits into two modes: weights the likelihood needs stay at small $\log\alpha$; the
# others run to the clip at $+10$ (their $\theta$ shrinks to zero while $\sigma$ does not). The conventional threshold
# $\log\alpha = 3$ (dashed) sits between the modes, but where exactly to cut is a choice — the next section makes
# it on validation data.
#
# ## 4. Which threshold? A compression–accuracy curve on the validation split
#
# `pp.prune(model, guide, rule)` applies a rule to the guide's per-weight marginals and returns the pruned network
# (`result.module`, posterior-mean weights with pruned ones exactly zero) and the pruned posterior
# (`result.guide`, for ensembles). We sweep the threshold and score both on the validation split. The rule we
# apply: **the most compression whose validation NLL (of the pruned ensemble) is within 0.01 of the unpruned
# posterior's**.

# %%
def ensemble_scores(model_, guide_, x, y):
    return pp.evaluate(model_, guide_, (x, y), num_samples=SAMPLES)


def mean_net_scores(module, x, y):
    with torch.no_grad():
        return scores(module(x).softmax(-1), y)


pyro.set_rng_seed(1)
unpruned_val = ensemble_scores(model, guide, x_val, y_val)
thresholds = [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0]
curve = []
for t in thresholds:
    result = pp.prune(model, guide, rule=pp.rules.LogAlpha(t))
    curve.append({"threshold": t, "compression": result.report.compression,
                  "ensemble": ensemble_scores(model, result.guide, x_val, y_val),
                  "mean_net": mean_net_scores(result.module, x_val, y_val)})
TOLERANCE = 0.01
ok = [c for c in curve if c["ensemble"]["nll"] <= unpruned_val["nll"] + TOLERANCE]
chosen = max(ok, key=lambda c: c["compression"]) if ok else min(curve, key=lambda c: c["ensemble"]["nll"])
print(f"{'log α ≤':>8s}{'compression':>13s}{'val acc (ens)':>15s}{'val NLL (ens)':>15s}{'val acc (mean)':>16s}")
for c in curve:
    mark = "  ← chosen" if c is chosen else ""
    print(f"{c['threshold']:8.1f}{c['compression']:12.1f}×{c['ensemble']['accuracy']:15.4f}"
          f"{c['ensemble']['nll']:15.4f}{c['mean_net']['accuracy']:16.4f}{mark}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
comp = [c["compression"] for c in curve]
for key, label, style in (("ensemble", "pruned ensemble", "o-"), ("mean_net", "pruned mean network", "s--")):
    axes[0].plot(comp, [c[key]["accuracy"] for c in curve], style, label=label)
    axes[1].plot(comp, [c[key]["nll"] for c in curve], style, label=label)
for ax, metric, ref in ((axes[0], "accuracy", "accuracy"), (axes[1], "NLL", "nll")):
    ax.axhline(dense_val[ref], color="grey", ls=":", label="dense network")
    ax.axvline(chosen["compression"], color="k", lw=0.8)
    ax.set(xscale="log", xlabel="compression × (log scale)", ylabel=f"validation {metric}")
axes[0].legend(fontsize="small")
fig.suptitle("validation split: each point is one log α threshold")
fig.tight_layout()

# %%
display(Markdown(
    f"On validation the chosen threshold is **log α ≤ {chosen['threshold']:g}**: "
    f"{chosen['compression']:.0f}× fewer weights, ensemble accuracy {chosen['ensemble']['accuracy']:.3f} "
    f"(unpruned posterior {unpruned_val['accuracy']:.3f}, dense network {dense_val['accuracy']:.3f}). "
    f"Lower thresholds push the validation NLL past the tolerance; higher ones keep more weights "
    f"({curve[-1]['compression']:.0f}× at log α ≤ {curve[-1]['threshold']:g}) for a validation NLL no better than "
    f"the tolerance already allows."
))

# %% [markdown]
# ## 5. Test: the pruned posterior-mean network against the pruned ensemble
#
# Now, once, the test set. The mean network is a single deterministic `nn.Module` (fast, deployable anywhere); the
# ensemble averages `SAMPLES` networks drawn from the pruned posterior (calibrated probabilities, at `SAMPLES`
# times the cost).

# %%
final = pp.prune(model, guide, rule=pp.rules.LogAlpha(chosen["threshold"]))
pyro.set_rng_seed(2)
test_rows = {
    "dense network": dense_test,
    "pruned mean network": mean_net_scores(final.module, x_te, y_te),
    "pruned ensemble": ensemble_scores(model, final.guide, x_te, y_te),
}
print(f"compression {final.report.compression:.1f}×   (threshold chosen on validation)")
print(f"{'':22s}{'accuracy':>10s}{'NLL':>10s}{'ECE':>10s}")
for name, s in test_rows.items():
    print(f"{name:22s}{s['accuracy']:10.4f}{s['nll']:10.4f}{s['ece']:10.4f}")

# %%
ens, mean = test_rows["pruned ensemble"], test_rows["pruned mean network"]
one_digit = 1 / len(y_te)
display(Markdown(
    f"On {len(y_te)} test digits (one digit is {one_digit:.4f} accuracy) the pruned ensemble scores "
    f"{ens['accuracy']:.4f} with NLL {ens['nll']:.3f} and ECE {ens['ece']:.3f}; the pruned mean network "
    f"{mean['accuracy']:.4f}, NLL {mean['nll']:.3f}, ECE {mean['ece']:.3f}. One split cannot rank methods: "
    f"`bench/front.py` compares them over 10 paired splits with confidence intervals."
))

# %% [markdown]
# ## 6. What was kept: masks as pictures
#
# Each of the 300 first-layer units reads the 64 pixels; its row of the mask, reshaped to 8×8, shows which pixels it
# still uses. Summed over units, the mask says which pixels the pruned network reads at all (the border pixels of
# the digits are nearly always blank, and nothing reads them).

# %%
mask0 = final.masks["0.weight"]                        # (300, 64) kept weights of the first layer
alive = torch.nonzero(mask0.any(1)).flatten()
fig, axes = plt.subplots(2, 9, figsize=(13, 3.3))
for ax, unit in zip(axes.flat[:-1], alive[:17]):
    ax.imshow(mask0[unit].reshape(8, 8), cmap="Greys", vmin=0, vmax=1)
    ax.set_title(f"unit {unit.item()}", fontsize="x-small")
axes.flat[-1].imshow(mask0.sum(0).reshape(8, 8), cmap="viridis")
axes.flat[-1].set_title("units reading\neach pixel", fontsize="x-small")
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
print(f"first-layer units with any input left: {len(alive)} of {mask0.shape[0]}; "
      f"pixels read by no unit: {(mask0.sum(0) == 0).sum().item()} of 64")

# %%
fig = pp.plots.mask_images({k: v for k, v in final.masks.items() if k.endswith("weight")})

# %% [markdown]
# ## 7. The compression report
#
# `result.report` counts, per layer, the kept weights, the sparsity, the FLOPs of a sparse matrix product and the
# bytes of a CSR copy of the weights (values + column indices + row pointers).

# %%
print(final.report)

# %% [markdown]
# ## 8. A Rényi objective instead of the ELBO
#
# The ELBO's KL term makes the posterior mode-seeking; Rényi's $\alpha_R < 1$ makes it more mass-covering (Li &
# Turner 2016). The joint Rényi bound (`pp.fit(alpha=..., num_particles=K)`, Pyro's `RenyiELBO`) evaluates the prior
# density at sampled weights — and the log-uniform prior's density is infinite at $w = 0$, exactly where the pruned
# weights of sparse VD collapse: `fit` refuses that combination with an error that says so. The variant that works
# here applies the power to each example's likelihood and keeps the KL in closed form (Li & Gal 2017, "black-box
# α"): `alpha_on="likelihood"`, on the same fused local-reparameterization path as the ELBO, with the K particles as
# K noisy copies of the batch. Same data, recipe and threshold rule (chosen on validation again).

# %%
try:
    pp.fit(model, guide, train, epochs=1, alpha=0.5, num_particles=4, progress=False)
except ValueError as err:
    print("joint Rényi bound refused:", str(err)[:160], "...")

# %%
r_model, r_guide, r_history, _, r_seconds = train_sparse_vd(alpha=0.5, num_particles=4, alpha_on="likelihood")
r_val = []
for t in thresholds:
    res = pp.prune(r_model, r_guide, rule=pp.rules.LogAlpha(t))
    r_val.append((t, res.report.compression, ensemble_scores(r_model, res.guide, x_val, y_val)))
r_unpruned = ensemble_scores(r_model, r_guide, x_val, y_val)
r_ok = [row for row in r_val if row[2]["nll"] <= r_unpruned["nll"] + TOLERANCE]
r_t = max(r_ok, key=lambda row: row[1])[0] if r_ok else min(r_val, key=lambda row: row[2]["nll"])[0]
r_final = pp.prune(r_model, r_guide, rule=pp.rules.LogAlpha(r_t))
pyro.set_rng_seed(2)
r_test = ensemble_scores(r_model, r_final.guide, x_te, y_te)
print(f"{'':30s}{'threshold':>10s}{'compression':>13s}{'accuracy':>10s}{'NLL':>8s}{'ECE':>8s}{'fit s':>8s}")
for name, t, res, s, sec in (("ELBO", chosen["threshold"], final, ens, seconds),
                             ("power likelihood α=0.5, K=4", r_t, r_final, r_test, r_seconds)):
    print(f"{name:30s}{t:10.1f}{res.report.compression:12.1f}×{s['accuracy']:10.4f}{s['nll']:8.3f}"
          f"{s['ece']:8.3f}{sec:8.1f}")

# %%
display(Markdown(
    f"With K = 4 particles the α = 0.5 run costs {r_seconds / seconds:.1f}× the ELBO run's time and reaches "
    f"{r_final.report.compression:.0f}× (ELBO: {final.report.compression:.0f}×) at test accuracy "
    f"{r_test['accuracy']:.4f} (ELBO: {ens['accuracy']:.4f}). This is one seed on one split: treat the difference "
    f"as a reason to try α < 1 on your validation data, not as a ranking."
))

# %% [markdown]
# ## 9. Save the pruned network as plain PyTorch
#
# `result.module` is an ordinary `nn.Module` (no Pyro inside): its `state_dict` loads into the architecture you
# started from. `pp.save` keeps the whole posterior too (model, guide, pruning rule), for `pp.load` in another
# process.

# %%
with tempfile.TemporaryDirectory() as tmp:
    torch.save(final.module.state_dict(), f"{tmp}/pruned.pt")
    plain = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    plain.load_state_dict(torch.load(f"{tmp}/pruned.pt", weights_only=True))
    pp.save(f"{tmp}/posterior.pt", model, guide, history=history, pruned=final)
    saved = pp.load(f"{tmp}/posterior.pt")
    size_kb = os.path.getsize(f"{tmp}/posterior.pt") / 1024
with torch.no_grad():
    same = torch.equal(plain(x_te), final.module(x_te))
zeros = sum((p == 0).sum().item() for p in plain.parameters())
print(f"reloaded plain network gives identical outputs: {same}; exact zeros: {zeros} of {n_weights}")
print(f"posterior file: {size_kb:.0f} kB; loaded {type(saved.guide).__name__} with {len(saved.history)} epochs")

# %% [markdown]
# The zeros are real zeros, but a dense `nn.Linear` still multiplies by them: for speed, store the weights sparse
# (the report's CSR bytes) or use structured pruning (`04_bayesian_compression`), which removes whole neurons and
# gives a physically smaller network.
#
# ## When to use sparse variational dropout — and when not
#
# **Use it** when you want the most compression of a trained network at a small accuracy cost, with the choice of
# weights justified by the posterior rather than by magnitude; when you also want calibrated ensemble predictions
# from the same posterior; when the network is an MLP or a CNN whose layers are `Linear`/`Conv`.
#
# **Don't** when you need a faster dense kernel without sparse storage (use group sparsity, `04`); when you only
# need mild compression (5–10×): magnitude pruning plus a short fine-tune is simpler and, on the digits benchmark
# (`bench/results/front.md`), more accurate there; when the network is already trained and you only want
# uncertainty (a Laplace posterior, `05`, costs one pass over the data instead of hundreds of epochs).

# %%
print(f"total notebook time: {time.perf_counter() - t_start:.1f} s")
