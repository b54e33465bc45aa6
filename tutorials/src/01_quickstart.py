# %% [markdown]
# # Quickstart: a Bayesian MLP in five minutes
#
# `pyro_prune` turns an ordinary PyTorch network into a [Pyro](https://pyro.ai) model whose weights are random
# variables, trains an approximate posterior over them, and averages the predictions of many sampled networks.
# This notebook walks through the whole loop on data that ships with the package (nothing is downloaded):
#
# 1. load the 8×8 **digits** (1,437 training and 360 test images, 10 classes);
# 2. **`bayesianize`** a plain MLP, fit a mean-field Gaussian posterior (`AutoNormal`), predict with an ensemble,
#    score it, and look at calibration and uncertainty;
# 3. write the **same model by hand** as a `PyroModule` and check that `pp.fit` gives the same result;
# 4. swap the ELBO for the **Rényi bound** (α = 0.5, 8 particles);
# 5. a **1-D regression** with a gap in the training data, and what the posterior says inside the gap.
#
# Set the environment variable `PYRO_PRUNE_SMOKE=1` (or `CI`) to run everything with tiny settings in seconds;
# the outputs saved here come from the full settings (about a minute on one CPU core).

# %%
import os
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto's notice when ipywidgets is absent

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample

import pyro_prune as pp

%matplotlib inline

SMOKE = bool(os.environ.get("PYRO_PRUNE_SMOKE") or os.environ.get("CI"))
EPOCHS = 2 if SMOKE else 25            # passes over the digits training set
SAMPLES = 10 if SMOKE else 100         # ensemble size for predictions
REG_EPOCHS = 30 if SMOKE else 3000     # full-batch steps for the 1-D regression

torch.set_num_threads(1)  # these networks are tiny: one thread is fastest (and does not fight other processes)
pyro.set_rng_seed(0)
t_start = time.perf_counter()
print(f"SMOKE={SMOKE}  epochs={EPOCHS}  samples={SAMPLES}  pyro_prune {pp.__version__}, pyro {pyro.__version__}")

# %% [markdown]
# ## 1. Data
#
# `pp.data.load_digits()` returns a `DataSplit` of tensors (standardized inputs, a stratified split);
# `loaders()` wraps it in PyTorch `DataLoader`s with a seeded shuffle.

# %%
split = pp.data.load_digits()
train, test = split.loaders(batch_size=64, seed=0)
print("train", tuple(split.x_train.shape), "test", tuple(split.x_test.shape),
      "classes", split.num_classes, "dataset_size", split.dataset_size)

# %% [markdown]
# ## 2. `bayesianize` a PyTorch network
#
# Start from any `nn.Module`. `bayesianize` copies it and turns every `Linear`/`Conv` weight and bias into a Pyro
# sample site with the given prior, here $w \sim \mathcal N(0, 1)$ for every weight. The likelihood head observes the
# labels inside a subsampled `pyro.plate`, so a mini-batch log-likelihood is scaled by $N/B$ with
# $N$ = `dataset_size`.

# %%
net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
model = pp.bayesianize(net, prior=dist.Normal(0.0, 1.0), likelihood=pp.Categorical(split.dataset_size))
print({name: tuple(info.shape) for name, info in model.sites.items()})

# %% [markdown]
# Any Pyro guide works. `AutoNormal` is a fully factorized Gaussian $q(w) = \prod_i \mathcal N(\mu_i, \sigma_i^2)$;
# a small `init_scale` starts it close to a point estimate, which trains faster. `pp.fit` maximizes the ELBO
# (`TraceMeanField_ELBO`, with the KL between the Gaussians in closed form) with Adam and records, per epoch, the
# loss (−ELBO per training example), the expected log-likelihood `ell`, the `kl` and, with `val_data`, test scores of
# a small ensemble.

# %%
guide = AutoNormal(model, init_scale=1e-3)
t0 = time.perf_counter()
history = pp.fit(model, guide, train, epochs=EPOCHS, lr=3e-3, val_data=test, progress=False)
print(f"fit: {time.perf_counter() - t0:.1f} s")
for i in sorted({*range(0, len(history), max(1, len(history) // 5)), len(history) - 1}):
    r = history.records[i]
    print(f"epoch {r['epoch']:3d}  loss {r['loss']:7.3f}  ell {r['ell']:7.3f}  KL/N {r['kl'] / split.dataset_size:7.3f}"
          f"  val acc {r['val_accuracy']:.3f}  val nll {r['val_nll']:.3f}")

# %%
epochs = np.arange(1, len(history) + 1)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
axes[0].plot(epochs, history["loss"], label="loss = −ELBO / N")
axes[0].plot(epochs, -np.array(history["ell"]), label="−ell (data fit)")
axes[0].plot(epochs, np.array(history["kl"]) / split.dataset_size, label="KL / N")
axes[0].set_yscale("log")
axes[0].legend(fontsize="small")
axes[1].plot(epochs, history["val_accuracy"])
axes[1].set_title("test accuracy (20-sample ensemble)")
axes[2].plot(epochs, history["val_nll"])
axes[2].set_title("test NLL")
for ax in axes:
    ax.set_xlabel("epoch")
fig.tight_layout()

# %% [markdown]
# Most of the loss is the KL term: with $N = 1437$ examples, a $\mathcal N(0,1)$ prior on 7,510 weights costs more
# than the data fit. It keeps shrinking as the posterior moves towards the prior wherever the data allow.
#
# ### Predict with the posterior ensemble
#
# `pp.predict` draws `num_samples` networks from the guide in one vectorized pass (`Predictive(parallel=True)`) and
# averages their softmax outputs. The `Prediction` keeps the per-member probabilities (`samples`, shape $(S, B, C)$),
# the averaged `probs`, the predictive `entropy` (total uncertainty) and the `mutual_information` between the
# prediction and the weights (the epistemic part). `pp.evaluate` scores the ensemble: accuracy, negative
# log-likelihood, expected calibration error (15 bins) and Brier score.

# %%
pred = pp.predict(model, guide, split.x_test, num_samples=SAMPLES)
print("samples", tuple(pred.samples.shape), "probs", tuple(pred.probs.shape))
scores = {"bayesianize + AutoNormal": pp.evaluate(model, guide, test, num_samples=SAMPLES)}
print({k: round(v, 4) for k, v in scores["bayesianize + AutoNormal"].items()})

# %% [markdown]
# ### Calibration and uncertainty
#
# A model is calibrated when, among the predictions it makes with confidence ≈ 0.9, about 90 % are right.
# The reliability diagram bins the test predictions by confidence $\max_k \bar p_k$ and compares each bin's
# accuracy with its mean confidence; the expected calibration error (ECE) is the count-weighted gap.
# On the right: the predictive entropy of correct and of wrong predictions; a useful uncertainty separates them.

# %%
probs = pred.probs.numpy()
y_test = split.y_test.numpy()
conf, correct = probs.max(1), probs.argmax(1) == y_test

bins = np.linspace(0, 1, 16)
idx = np.clip(np.digitize(conf, bins, right=True) - 1, 0, len(bins) - 2)  # bin b holds conf in (b/15, (b+1)/15]
count = np.bincount(idx, minlength=len(bins) - 1)
acc_b = np.bincount(idx, weights=correct, minlength=len(bins) - 1) / np.maximum(count, 1)
conf_b = np.bincount(idx, weights=conf, minlength=len(bins) - 1) / np.maximum(count, 1)
ece = np.sum(count / len(conf) * np.abs(acc_b - conf_b))

entropy = pred.entropy.numpy()
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ax = axes[0]
used = count > 0
ax.bar(bins[:-1][used], acc_b[used], width=1 / 15, align="edge", edgecolor="k", alpha=0.7, label="accuracy")
ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
for b in np.flatnonzero(used):
    ax.text(bins[b] + 1 / 30, min(acc_b[b], 0.93) + 0.02, str(count[b]), ha="center", fontsize=7)
ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.05),
       title=f"reliability diagram (ECE = {ece:.3f}; counts on bars)")
ax.legend(loc="upper left", fontsize="small")
ax = axes[1]
edges = np.linspace(0, max(entropy.max(), 1e-3), 30)
ax.hist(entropy[correct], bins=edges, density=True, alpha=0.6, label=f"correct ({correct.sum()})")
ax.hist(entropy[~correct], bins=edges, density=True, alpha=0.6, label=f"wrong ({(~correct).sum()})")
ax.set(xlabel="predictive entropy (nats)", ylabel="density", title="uncertainty of correct vs wrong predictions")
ax.legend(fontsize="small")
fig.tight_layout()
print(f"ECE computed here: {ece:.4f} (pp.evaluate: {scores['bayesianize + AutoNormal']['ece']:.4f})")
print(f"mean entropy: correct {entropy[correct].mean():.3f}, wrong {entropy[~correct].mean():.3f} nats;"
      f"  mean mutual information: correct {pred.mutual_information[correct].mean():.4f},"
      f" wrong {pred.mutual_information[~correct].mean():.4f}")

# %% [markdown]
# The ensemble is well calibrated (ECE below 0.02; the ECE computed here and the one from `pp.evaluate` use the same
# 15 bins but different draws of the ensemble, so they differ a little), and wrong predictions have clearly higher
# entropy than correct ones. The mutual information, however, is tiny: the guide started at a posterior std of
# `1e-3` and, after 25 epochs, is still narrow, so the sampled networks nearly agree and the entropy mostly reflects
# the averaged softmax. Longer training (the KL is still falling) widens the posterior.
#
# ## 3. The same model, written by hand
#
# `bayesianize` is a convenience: the model is an ordinary Pyro model. Here is the same network written
# directly with `PyroModule` layers and `PyroSample` priors, observing the labels inside a subsampled data plate.
# `pp.fit` trains it like any other Pyro model.
#
# Two differences from the `bayesianize`d model matter in practice. Torch's own `nn.Linear` takes a weight
# *matrix* only, not a stack of sampled weights, so this model supports neither vectorized particles
# (use `alpha=1`, `num_particles=1`) nor the parallel predictive: pass `parallel=False` to `pp.predict`, which
# then runs the model once per sample. And `pp.predict` recognizes a classifier by its `likelihood` attribute,
# which a hand-written model does not have: its `Prediction` holds the raw network outputs (logits), which we
# turn into probabilities ourselves and score with `pp.metrics`.

# %%
class HandWrittenBNN(PyroModule):
    def __init__(self, dataset_size, sizes=(64, 100, 10)):
        super().__init__()
        self.dataset_size = dataset_size
        (d_in, d_hidden, d_out) = sizes
        self.fc1 = PyroModule[nn.Linear](d_in, d_hidden)
        self.fc1.weight = PyroSample(dist.Normal(0.0, 1.0).expand([d_hidden, d_in]).to_event(2))
        self.fc1.bias = PyroSample(dist.Normal(0.0, 1.0).expand([d_hidden]).to_event(1))
        self.fc2 = PyroModule[nn.Linear](d_hidden, d_out)
        self.fc2.weight = PyroSample(dist.Normal(0.0, 1.0).expand([d_out, d_hidden]).to_event(2))
        self.fc2.bias = PyroSample(dist.Normal(0.0, 1.0).expand([d_out]).to_event(1))

    def forward(self, x, y=None):
        logits = self.fc2(torch.relu(self.fc1(x)))
        with pyro.plate("data", self.dataset_size, subsample_size=len(x)):
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
        return logits


pyro.clear_param_store()  # Pyro's parameter store is global: start the second model from a clean slate
pyro.set_rng_seed(0)
hand_model = HandWrittenBNN(split.dataset_size)
hand_guide = AutoNormal(hand_model, init_scale=1e-3)
t0 = time.perf_counter()
hand_history = pp.fit(hand_model, hand_guide, train, epochs=EPOCHS, lr=3e-3, progress=False)
print(f"fit: {time.perf_counter() - t0:.1f} s")

hand_pred = pp.predict(hand_model, hand_guide, split.x_test, num_samples=SAMPLES, parallel=False)
hand_probs = hand_pred.outputs.softmax(-1).mean(0)  # (S, B, 10) logits -> ensemble-averaged probabilities
scores["hand-written PyroModule"] = pp.metrics.classification_metrics(hand_probs, split.y_test)
for name, s in scores.items():
    print(f"{name:26s}" + "  ".join(f"{k} {v:.4f}" for k, v in s.items()))

# %% [markdown]
# Same model, same prior, same guide family, same optimizer: the two sets of scores agree up to Monte Carlo
# noise (different random draws during training and prediction; on 360 test images one image is 0.0028 accuracy).
#
# ## 4. The Rényi bound
#
# The ELBO is the $\alpha \to 1$ member of the family of Rényi variational bounds
# $\mathcal L_\alpha = \frac{1}{1-\alpha}\log \mathbb E_q\big[(p(y, w\mid x)/q(w))^{1-\alpha}\big]$
# (Li & Turner 2016), estimated with $K$ samples. Smaller $\alpha$ gives a tighter bound ($\alpha = 0$ is the
# importance-weighted bound) and a more mass-covering posterior. `pp.fit(alpha=..., num_particles=K)` uses
# `pyro.infer.RenyiELBO` with the $K$ particles vectorized through the network in one pass, which the
# `bayesianize`d layers support. (The loss values are on a different scale than the ELBO's and are not compared.)

# %%
pyro.clear_param_store()
pyro.set_rng_seed(0)
renyi_model = pp.bayesianize(net, prior=dist.Normal(0.0, 1.0), likelihood=pp.Categorical(split.dataset_size))
renyi_guide = AutoNormal(renyi_model, init_scale=1e-3)
t0 = time.perf_counter()
renyi_history = pp.fit(renyi_model, renyi_guide, train, epochs=EPOCHS, lr=3e-3, alpha=0.5, num_particles=8,
                       progress=False)
print(f"fit (alpha=0.5, K=8): {time.perf_counter() - t0:.1f} s")
scores["Rényi α=0.5, K=8"] = pp.evaluate(renyi_model, renyi_guide, test, num_samples=SAMPLES)

print(f"{'':26s}{'accuracy':>10s}{'NLL':>10s}{'ECE':>10s}{'Brier':>10s}")
for name, s in scores.items():
    print(f"{name:26s}{s['accuracy']:10.4f}{s['nll']:10.4f}{s['ece']:10.4f}{s['brier']:10.4f}")

# %% [markdown]
# With one seed and 360 test images, the Rényi run's slightly better scores (one more correct image, a lower NLL)
# are not evidence that α = 0.5 is better in general: compare several seeds before choosing α.
#
# ## 5. Regression, and uncertainty where there is no data
#
# `pp.data.load_gap_regression()` samples $y = \sin(3x) + 0.3x + \varepsilon$, $\varepsilon \sim \mathcal N(0, 0.1^2)$,
# at 200 inputs in $[-2, -0.5] \cup [0.5, 2]$: nothing in the gap $(-0.5, 0.5)$. The test set is a grid over
# $[-2.5, 2.5]$ with the noise-free function. Inputs have shape $(n, 1)$ and the network outputs $(B, 1)$.
# `pp.Gaussian(dataset_size, scale=0.1)` is a likelihood with the (here known) noise level fixed; `scale="learned"`
# would fit it, `"heteroscedastic"` would let the network predict it.
#
# The `Prediction` of a regression model has the predictive `mean`, the `epistemic_std` (spread of the sampled
# networks' outputs), the `aleatoric_std` (the noise) and the total `std`.

# %%
reg = pp.data.load_gap_regression()
print("train", tuple(reg.x_train.shape), "test grid", tuple(reg.x_test.shape), "gap", pp.data.GAP_INTERVAL)

pyro.clear_param_store()
pyro.set_rng_seed(0)
reg_net = nn.Sequential(nn.Linear(1, 100), nn.ReLU(), nn.Linear(100, 1))
reg_model = pp.bayesianize(reg_net, prior=dist.Normal(0.0, 1.0), likelihood=pp.Gaussian(reg.dataset_size, scale=0.1))
reg_guide = AutoNormal(reg_model, init_scale=1e-3)
t0 = time.perf_counter()
# an (x, y) tuple is one full batch per epoch
reg_history = pp.fit(reg_model, reg_guide, (reg.x_train, reg.y_train), epochs=REG_EPOCHS, lr=1e-2, progress=False)
print(f"fit: {time.perf_counter() - t0:.1f} s, final loss {reg_history['loss'][-1]:.3f}")

# batch_size: predict() refuses a batch larger than the training set (201 grid points > 200 examples), so the grid
# goes in two chunks; each chunk draws its own ensemble of networks
reg_pred = pp.predict(reg_model, reg_guide, reg.x_test, num_samples=SAMPLES, batch_size=101)
print({k: round(v, 4) for k, v in pp.evaluate(reg_model, reg_guide, reg.loaders()[1], num_samples=SAMPLES).items()},
      "(test grid, including the gap and beyond the data)")

# %%
x = reg.x_test[:, 0].numpy()
mean, std, epi = reg_pred.mean.numpy(), reg_pred.std.numpy(), reg_pred.epistemic_std.numpy()
lo, hi = pp.data.GAP_INTERVAL

fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
ax = axes[0]
ax.fill_between(x, mean - 2 * std, mean + 2 * std, alpha=0.3, label="mean ± 2 std (total)")
ax.plot(x, mean, label="predictive mean")
ax.plot(x, reg.y_test.numpy(), "k--", lw=1, label="true function")
ax.scatter(reg.x_train[:, 0], reg.y_train, s=4, c="k", label="training data")
ax.axvspan(lo, hi, color="grey", alpha=0.15)
ax.set(xlabel="x", ylabel="y", title="posterior predictive")
ax.legend(fontsize="small", loc="lower right")
ax = axes[1]
ax.plot(x, epi, label="epistemic std")
ax.plot(x, reg_pred.aleatoric_std.numpy(), label="aleatoric std (noise)")
ax.axvspan(lo, hi, color="grey", alpha=0.15, label="gap (no data)")
ax.set(xlabel="x", ylabel="std", title="where the uncertainty comes from")
ax.legend(fontsize="small")
fig.tight_layout()

err = np.abs(mean - reg.y_test.numpy())
regions = {"gap (-0.5, 0.5)": np.abs(x) < 0.5, "data 0.5 < |x| < 2": (np.abs(x) > 0.5) & (np.abs(x) < 2),
           "beyond |x| > 2": np.abs(x) > 2}
for name, m in regions.items():
    print(f"{name:20s} epistemic std {epi[m].mean():.3f}   |mean - truth| {err[m].mean():.3f}"
          f"   truth inside mean ± 2 std: {np.mean(err[m] <= 2 * std[m]):5.1%}")

# %% [markdown]
# **What this shows** (full run). On the data the mean follows the function and the total band is about the noise
# level; beyond the data ($|x| > 2$) the epistemic std grows steadily, as it should (though not fast enough to cover the
# true curve everywhere: ReLU networks extrapolate linearly). Inside the gap it does **not**:
# the epistemic std there is the lowest on the whole grid (about a third of its value on the data), the mean crosses
# the gap on an almost straight line that misses the true curve near its ends, and the ±2 std band covers the true
# function over only about a third of the gap. The factorized (mean-field) Gaussian posterior is confidently wrong
# where it has no data. This is a known limitation, not a bug of this run: Foong et al. report it ("'In-Between'
# Uncertainty in Bayesian Neural Networks", 2019) and prove that mean-field Gaussian posteriors of single-hidden-layer
# networks like this one cannot be much more uncertain between two clusters of data than on them ("On the
# Expressiveness of Approximate Inference in Bayesian Neural Networks", NeurIPS 2020). Posteriors with correlations
# between weights (full-covariance or Laplace approximations, at least on a subnetwork) are the usual remedy.
# (The small step in the epistemic std at $x = 0$ is where the two prediction chunks, with their own ensembles,
# meet.)
#
# ## Where next
#
# * `pp.init_from(trained_net)` starts a guide at a pretrained network's weights
#   (`AutoNormal(model, init_loc_fn=pp.init_from(net))`).
# * Sparsity-inducing priors (`pp.LogUniform`, `pp.Horseshoe`) and guides (`pp.AutoSparseVD`) turn the posterior
#   into a pruning rule, `pp.prune(model, guide, rule=...)`; the other notebooks in this folder cover them.

# %%
print(f"total notebook time: {time.perf_counter() - t_start:.1f} s")
