# %% [markdown]
# # Laplace: uncertainty for a network you have already trained
#
# If you already have a trained network, the Laplace approximation is the fastest way to a posterior: no
# retraining, one pass over the data. Around the trained (MAP) weights $\hat w$ it fits a Gaussian whose precision is
# the curvature of the loss plus the prior precision $\tau$:
#
# $$ q(w) = \mathcal N\big(\hat w,\; P^{-1}\big), \qquad P = \textstyle\sum_n J_n^\top \Lambda_n J_n + \tau I, $$
#
# with $J_n$ the network's Jacobian and $\Lambda_n$ the likelihood's Hessian in the output (the generalized
# Gauss–Newton, GGN). `pp.laplace_guide(model, data, structure)` computes it and returns a Pyro guide:
#
# * `"kron"`: KFAC, one Kronecker-factored block per layer ($A_l \otimes G_l$, Martens & Grosse 2015; Ritter et al.
#   2018) — the default, scales to big layers;
# * `"diag"`: the exact diagonal of the GGN;
# * `"full"`: the dense GGN, for small networks or a subnetwork (`06`);
# * `subnet=pp.subnet.LastLayer()` with `"kron"`/`"diag"`/`"full"`: only the last layer is uncertain (laplace-torch's
#   default), the rest stays at the MAP.
#
# * `"lowrank"` with `rank=k`: the top-$k$ eigenpairs of the GGN, never forming it (section 9).
#
# This notebook: the four structures on a digits MLP; choosing $\tau$ by the marginal likelihood (evidence) or on
# held-out data, and *why* the evidence picks an underconfident prior here; the linearized (GLM) predictive against
# sampled networks; reliability diagrams; a regression band with the noise $\sigma$ tuned by the evidence; pruning
# from Laplace marginals. Every number in the text is printed by a cell; `PYRO_PRUNE_SMOKE=1` runs it in seconds, the
# full run is `python tutorials/make.py 05 --execute`.

# %%
import copy
import os
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from IPython.display import Markdown, display

import pyro_prune as pp
from pyro_prune import subnet as sn

%matplotlib inline

SMOKE = bool(os.environ.get("PYRO_PRUNE_SMOKE"))
MAP_EPOCHS = 2 if SMOKE else 100
SIN_STEPS = 50 if SMOKE else 1000
SAMPLES = 20 if SMOKE else 100
HIDDEN = 16 if SMOKE else 100           # smoke: a smaller network, so the dense (full) GGN is cheap
torch.set_num_threads(1)
t_start = time.perf_counter()
print(f"SMOKE={SMOKE}")

# %% [markdown]
# ## 1. A trained network
#
# The digits, a validation split carved from the training data (for $\tau$ and thresholds), and a 64-100-10 MLP
# trained by a plain PyTorch loop with weight decay $10^{-4}$ — the network a user brings.

# %%
split = pp.data.load_digits()
gen = torch.Generator().manual_seed(0)
val_idx = torch.cat([idx[torch.randperm(len(idx), generator=gen)[: len(idx) // 5]]
                     for idx in (torch.nonzero(split.y_train == c).flatten() for c in range(10))])
is_val = torch.zeros(len(split.y_train), dtype=torch.bool)
is_val[val_idx] = True
x_tr, y_tr = split.x_train[~is_val], split.y_train[~is_val]
val = (split.x_train[is_val], split.y_train[is_val])
test = (split.x_test, split.y_test)
train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_tr, y_tr), batch_size=64, shuffle=True,
                                    generator=torch.Generator().manual_seed(0))
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
for _ in range(MAP_EPOCHS):
    for xb, yb in train:
        opt.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        opt.step()
net.eval()
with torch.no_grad():
    map_test = pp.metrics.classification_metrics(net(test[0]).softmax(-1), test[1])
model = pp.bayesianize(net, prior=dist.Normal(0.0, 1.0), likelihood=pp.Categorical(len(y_tr)))
print(f"{sn.num_weights(model)} weights; MAP test accuracy {map_test['accuracy']:.4f}, NLL {map_test['nll']:.4f}, "
      f"ECE {map_test['ece']:.4f}")

# %% [markdown]
# ## 2. Four structures, two ways to choose $\tau$
#
# For each structure: the fit time, the memory of the posterior's tensors, and the test scores of the GLM predictive
# with $\tau$ chosen (a) by maximizing the Laplace marginal likelihood on the training data, (b) on the validation
# split (the $\tau$ with the highest validation log-likelihood under the GLM predictive).

# %%
def nbytes(obj):
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


STRUCTURES = {"kron": dict(structure="kron"), "diag": dict(structure="diag"), "full": dict(structure="full"),
              "last-layer kron": dict(structure="kron", subnet=sn.LastLayer())}
guides, table = {}, {}
for name, kw in STRUCTURES.items():
    t0 = time.perf_counter()
    guide = pp.laplace_guide(model, train, **kw)
    fit_s = time.perf_counter() - t0
    row = {"fit s": fit_s, "MB": nbytes(guide) / 2**20}
    t0 = time.perf_counter()
    row["tau marglik"] = float(guide.optimize_prior_precision(method="marglik"))
    row["tune marglik s"] = time.perf_counter() - t0
    row["marglik"] = pp.evaluate(model, guide, test)
    row["tau val"] = float(guide.optimize_prior_precision(method="val", val_data=val))
    row["val"] = pp.evaluate(model, guide, test)
    guides[name], table[name] = guide, row
print(f"{'':16s}{'fit s':>7s}{'MB':>7s}{'τ evid.':>9s}{'NLL':>7s}{'ECE':>7s}{'τ val':>9s}{'NLL':>7s}{'ECE':>7s}"
      f"{'acc':>8s}")
print(f"{'MAP':16s}{'':23s}{'':14s}{'':9s}{map_test['nll']:7.4f}{map_test['ece']:7.4f}{map_test['accuracy']:8.4f}")
for name, r in table.items():
    print(f"{name:16s}{r['fit s']:7.2f}{r['MB']:7.2f}{r['tau marglik']:9.3g}{r['marglik']['nll']:7.4f}"
          f"{r['marglik']['ece']:7.4f}{r['tau val']:9.3g}{r['val']['nll']:7.4f}{r['val']['ece']:7.4f}"
          f"{r['val']['accuracy']:8.4f}")

# %%
best = min(table, key=lambda k: table[k]["val"]["nll"])
improved = [k for k, r in table.items() if r["val"]["nll"] < map_test["nll"]]
evidence_worse = [k for k, r in table.items() if r["marglik"]["nll"] > r["val"]["nll"]]
evidence_nll = ", ".join(f"{k} {r['marglik']['nll']:.3f}" for k, r in table.items())
display(Markdown(
    f"With τ from validation data, {len(improved)} of {len(table)} structures improve on the MAP network's test NLL "
    f"({map_test['nll']:.4f}); the lowest is **{best}** ({table[best]['val']['nll']:.4f}). With τ from the evidence "
    f"the NLL is worse than with the validation τ for {len(evidence_worse)} of {len(table)} structures "
    f"({evidence_nll}). `full` stores {table['full']['MB']:.0f} MB against kron's {table['kron']['MB']:.2f} MB on "
    f"this {sn.num_weights(model)}-weight network."
))

# %% [markdown]
# ## 3. Why the evidence picks a prior that is too broad here
#
# The Laplace log evidence is
#
# $$ \log p(\mathcal D\mid\tau) \approx \log p(\mathcal D\mid\hat w) - \tfrac\tau2\lVert\hat w\rVert^2
#    + \tfrac P2\log\tau - \tfrac12\log\det P(\tau). $$
#
# It trades the fit of the data against an Occam factor counted over all $P$ weights. Two things push its maximum to
# a small $\tau$ (a broad prior) on this network: $\hat w$ was trained with weight decay $10^{-4}$, i.e. a prior
# precision far smaller than 1, so $\lVert\hat w\rVert^2$ is large and the $-\frac\tau2\lVert\hat w\rVert^2$ term
# punishes any strong prior; and with $P = 7{,}510$ weights and 1,153 examples most directions of the GGN are flat,
# so their prior variance $1/\tau$ goes straight into the predictive. The evidence is computed for $\hat w$ *as if
# it were the MAP under $\tau$*, which it is not. Plotted against $\tau$ with the validation NLL:

# %%
kron = guides["kron"]
taus = torch.logspace(-4, 3, 8 if SMOKE else 36)
evidence, val_nll = [], []
for tau in taus:
    kron.set_prior_precision(float(tau))
    evidence.append(float(kron.log_marginal_likelihood()))
    val_nll.append(pp.evaluate(model, kron, val)["nll"])
kron.set_prior_precision(table["kron"]["tau val"])
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.plot(taus, evidence, "C0", label="log evidence (training data)")
ax.set(xscale="log", xlabel=r"prior precision $\tau$", ylabel="log evidence")
ax2 = ax.twinx()
ax2.plot(taus, val_nll, "C1", label="validation NLL (GLM)")
ax2.set_ylabel("validation NLL", color="C1")
ax.axvline(table["kron"]["tau marglik"], color="C0", ls="--", lw=0.8)
ax2.axvline(table["kron"]["tau val"], color="C1", ls="--", lw=0.8)
fig.legend(loc="upper center", fontsize="small", ncol=2)
fig.tight_layout()
print(f"kron: evidence maximum at τ = {table['kron']['tau marglik']:.3g}, validation NLL minimum at "
      f"τ = {table['kron']['tau val']:.3g}")

# %% [markdown]
# The fix when there is no validation data is to make the MAP and the prior agree: train the network *with* the
# evidence, alternating MAP steps and evidence steps on $\tau$ (Immer et al. 2021; section 8).
#
# ## 4. The linearized predictive against sampled networks
#
# A Laplace posterior is a Gaussian fit of the network *linearized* at $\hat w$. The GLM predictive keeps that model:
# $f(x) \approx f(x;\hat w) + J(x)(w-\hat w)$, so the logits are Gaussian with covariance $J P^{-1} J^\top$, pushed
# through the softmax by the probit approximation. Sampling whole networks from $q(w)$ instead evaluates the
# nonlinear network far from $\hat w$ in the flat directions of the GGN, where the Gaussian says nothing useful.
# `pp.predict` uses GLM for Laplace guides by default; `method="mc"` samples networks (with a warning).

# %%
rows = {}
for label, tau_key in (("τ from validation", "tau val"), ("τ from evidence", "tau marglik")):
    kron.set_prior_precision(table["kron"][tau_key])
    rows[f"GLM, {label}"] = pp.evaluate(model, kron, test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pp.guides.laplace.LaplaceSamplingWarning)
        pyro.set_rng_seed(0)
        rows[f"{SAMPLES} sampled nets, {label}"] = pp.evaluate(model, kron, test, num_samples=SAMPLES, method="mc")
kron.set_prior_precision(table["kron"]["tau val"])
for name, s in rows.items():
    print(f"{name:36s} accuracy {s['accuracy']:.4f}  NLL {s['nll']:.4f}  ECE {s['ece']:.4f}")

# %%
mc_ev, glm_ev = rows[f"{SAMPLES} sampled nets, τ from evidence"], rows["GLM, τ from evidence"]
gap = glm_ev["accuracy"] - mc_ev["accuracy"]
display(Markdown(
    f"At the evidence's broad prior, sampled networks reach test accuracy {mc_ev['accuracy']:.3f} (the MAP: "
    f"{map_test['accuracy']:.3f}) while the GLM predictive keeps {glm_ev['accuracy']:.3f}"
    + (": the sampled networks leave the region where the Gaussian describes the network. Use GLM with Laplace "
       "unless you have a reason not to." if gap > 0.01 else "; here the two predictives agree within 1 pp.")
))

# %% [markdown]
# ## 5. Reliability diagrams
#
# Confidence against accuracy in 15 bins, for the MAP network and the KFAC Laplace GLM predictive (τ from validation).

# %%
with torch.no_grad():
    p_map = net(test[0]).softmax(-1)
p_la = pp.predict(model, kron, test[0]).probs
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
pp.plots.reliability_diagram(p_map, test[1], ax=axes[0])
axes[0].set_title(f"MAP network (ECE {pp.metrics.ece(p_map, test[1]):.3f})")
pp.plots.reliability_diagram(p_la, test[1], ax=axes[1])
axes[1].set_title(f"KFAC Laplace, GLM (ECE {pp.metrics.ece(p_la, test[1]):.3f})")
fig.tight_layout()

# %% [markdown]
# ## 6. Regression: a band, with the noise tuned by the evidence
#
# laplace-torch's README example: $y = \sin x + \varepsilon$, $\varepsilon \sim \mathcal N(0, 0.3^2)$, 150 points in
# $[0, 8]$, a 1-50-1 tanh network trained to its MAP. Here the evidence is the right tool (a small network, a
# well-specified model): `optimize_prior_precision(sigma_noise=True)` maximizes it jointly over $\tau$ and the noise
# $\sigma$, and the GLM predictive uses the tuned $\sigma$.

# %%
torch.manual_seed(711)
xs = (torch.rand(150) * 8).unsqueeze(-1)
ys = torch.sin(xs) + torch.randn_like(xs) * 0.3
torch.manual_seed(711)
sin_net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))
sopt = torch.optim.Adam(sin_net.parameters(), lr=1e-2)
for _ in range(SIN_STEPS):
    sopt.zero_grad()
    F.mse_loss(sin_net(xs), ys).backward()
    sopt.step()
sin_model = pp.bayesianize(sin_net, prior=dist.Normal(0.0, 1.0), likelihood=pp.Gaussian(150, scale=1.0))
sin_guide = pp.laplace_guide(sin_model, (xs, ys.squeeze(-1)), "full")
sin_guide.optimize_prior_precision(method="marglik", sigma_noise=True)
grid = torch.linspace(-2, 10, 300).unsqueeze(-1)
pred = pp.predict(sin_model, sin_guide, grid)
mean, std, epi = pred.mean.reshape(-1), pred.std.reshape(-1), pred.epistemic_std.reshape(-1)
fig, ax = plt.subplots(figsize=(8, 3.4))
ax.fill_between(grid[:, 0], mean - 2 * std, mean + 2 * std, alpha=0.25, label="±2 std (total)")
ax.fill_between(grid[:, 0], mean - 2 * epi, mean + 2 * epi, alpha=0.4, label="±2 std (epistemic)")
ax.plot(grid[:, 0], mean, label="GLM mean")
ax.scatter(xs[:, 0], ys[:, 0], s=5, c="k", label="data")
ax.axvspan(-2, 0, color="0.93")
ax.axvspan(8, 10, color="0.93")
ax.legend(fontsize="x-small", loc="lower left")
fig.tight_layout()
print(f"evidence maximum: σ = {float(sin_guide.sigma_noise):.4f} (true 0.3), "
      f"τ = {float(sin_guide.prior_precision):.4f}, "
      f"log evidence {float(sin_guide.log_marginal_likelihood()):.2f}")
inside = (grid[:, 0] > 0) & (grid[:, 0] < 8)
print(f"epistemic std: {float(epi[inside].mean()):.3f} inside the data, {float(epi[~inside].mean()):.3f} outside")

# %% [markdown]
# ## 7. Pruning from Laplace marginals
#
# The Laplace posterior gives every weight a marginal variance, so `pp.prune` works on it as on the VI guides:
# `Sparsity(s)` removes the fraction $s$ of weights with the smallest signal-to-noise ratio $|\hat w|/\sigma$. Against
# magnitude pruning of the same network (the same fraction of smallest $|\hat w|$), on the validation split:

# %%
def mean_net_scores(module, data):
    with torch.no_grad():
        return pp.metrics.classification_metrics(module(data[0]).softmax(-1), data[1])


def magnitude_pruned(net, fraction):
    """A copy of ``net`` with the ``fraction`` of weights (not biases) of smallest |w| set to 0, globally."""
    pruned = copy.deepcopy(net)
    weights = [p for n, p in pruned.named_parameters() if n.endswith("weight")]
    cut = torch.cat([p.detach().abs().flatten() for p in weights]).kthvalue(max(1, int(fraction * sum(
        p.numel() for p in weights)))).values
    with torch.no_grad():
        for p in weights:
            p.mul_((p.abs() > cut).to(p.dtype))
    return pruned


diag = guides["diag"]
diag.set_prior_precision(table["diag"]["tau val"])
levels = [0.5, 0.7, 0.8, 0.9, 0.95]
curve = {"Laplace SNR (diag)": [], "magnitude": []}
for s in levels:
    res = pp.prune(model, diag, rule=pp.rules.Sparsity(s))
    curve["Laplace SNR (diag)"].append(mean_net_scores(res.module, val)["accuracy"])
    curve["magnitude"].append(mean_net_scores(magnitude_pruned(net, s), val)["accuracy"])
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, accs in curve.items():
    ax.plot(levels, accs, "o-", label=name)
ax.set(xlabel="fraction of weights removed (no fine-tuning)", ylabel="validation accuracy")
ax.legend(fontsize="small")
fig.tight_layout()
for name, accs in curve.items():
    print(f"{name:20s}" + "  ".join(f"{s:.0%}: {a:.3f}" for s, a in zip(levels, accs)))

# %%
stds = torch.cat([m.scale.flatten() for m in pp.marginals(diag).values()])
same = sum(abs(a - b) < 1e-9 for a, b in zip(*curve.values()))
display(Markdown(
    f"The two rankings give the same validation accuracy at {same} of {len(levels)} levels. With the validation "
    f"τ = {table['diag']['tau val']:.3g} the prior dominates the curvature: the marginal standard deviations vary "
    f"by a coefficient of variation of only {float(stds.std() / stds.mean()):.2f} across weights, so "
    f"$|\\hat w|/\\sigma$ ranks the weights almost as $|\\hat w|$ does. Laplace marginals add information to "
    f"pruning only where the curvature, not the prior, sets the variance (a small τ); a sparsity-inducing posterior "
    f"(`03`, `04`) is the tool for compression."
))

# %% [markdown]
# ## 8. Training with the evidence: `fit_marglik`
#
# Section 3 showed the evidence disagreeing with the validation data because the network was trained under another
# prior. `pp.fit_marglik` (Immer et al. 2021) removes that mismatch: it trains the network by MAP under the current
# prior, $-\log p(\mathcal D\mid w) + \sum_l \frac{\tau_l}2\lVert w_l\rVert^2$, and after every epoch fits a KFAC
# Laplace at the current weights and takes a few gradient steps on $\log\tau_l$ (one per layer) of the evidence. No
# validation data are used. It returns a Laplace guide at the trained weights and tuned $\tau$, the trained
# network, and the history. Compared here with the post-hoc routes on the same test digits, from the same
# initial network and for the same number of epochs:

# %%
torch.manual_seed(0)
init_net = nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
init_model = pp.bayesianize(init_net, prior=dist.Normal(0.0, 1.0), likelihood=pp.Categorical(len(y_tr)))
t0 = time.perf_counter()
ml = pp.fit_marglik(init_model, train, MAP_EPOCHS, progress=False)
ml_seconds = time.perf_counter() - t0
ml_scores = pp.evaluate(init_model, ml.guide, test)
print(f"fit_marglik: {MAP_EPOCHS} epochs in {ml_seconds:.0f} s; τ per layer "
      f"{[round(float(t), 3) for t in ml.prior_precision.reshape(-1)]}")
compare = {"MAP network": map_test, "KFAC, τ from validation (post hoc)": table["kron"]["val"],
           "KFAC, τ from evidence (post hoc)": table["kron"]["marglik"], "fit_marglik (no validation data)": ml_scores}
for name, r in compare.items():
    print(f"{name:38s} accuracy {r['accuracy']:.4f}  NLL {r['nll']:.4f}  ECE {r['ece']:.4f}")
history = ml.history
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(history["loss"])
axes[0].set(xlabel="epoch", ylabel="MAP objective", yscale="log")
steps = ml.evidence_steps
axes[1].plot([r["epoch"] for r in steps], [r["log_marglik"] for r in steps])
axes[1].set(xlabel="epoch", ylabel="log evidence (after the epoch)")
fig.tight_layout()

# %%
display(Markdown(
    f"Trained with the evidence, the Laplace posterior's test NLL is {ml_scores['nll']:.3f}, against "
    f"{table['kron']['marglik']['nll']:.3f} for the evidence applied after ordinary training and "
    f"{table['kron']['val']['nll']:.3f} for τ chosen on validation data. "
    + ("Training with the evidence closes part of the gap; a validation split, when you can spare one, is still "
       "the better way to choose τ for this network (`bench/results/marglik.md` has the 10-split comparison)."
       if table["kron"]["val"]["nll"] < ml_scores["nll"] < table["kron"]["marglik"]["nll"]
       else "Compare the three rows: on this split the ordering differs from the 10-split benchmark "
       "(`bench/results/marglik.md`).")
))

# %% [markdown]
# ## 9. Low-rank Laplace: the top of the GGN's spectrum
#
# Between KFAC (layers independent) and `full` ($P^2$ memory) sits `structure="lowrank", rank=k`: the top-$k$
# eigenpairs of the GGN, found by randomized subspace iteration on GGN–vector products (Jacobian–vector products
# over the data; the GGN is never formed), $P = U\Lambda U^\top + \tau I$, memory $O(Pk)$, and every other direction
# left at the prior. Against kron and full, with τ chosen on validation (and by the evidence):

# %%
lowrank_rows = {}
for k in ((5, 20) if SMOKE else (20, 100)):
    t0 = time.perf_counter()
    g = pp.laplace_guide(model, train, "lowrank", rank=k)
    fit_s = time.perf_counter() - t0
    tau_ev = float(g.optimize_prior_precision(method="marglik"))
    ev = pp.evaluate(model, g, test)
    tau_v = float(g.optimize_prior_precision(method="val", val_data=val))
    lowrank_rows[f"lowrank k={k}"] = {"fit s": fit_s, "MB": nbytes(g) / 2**20, "tau marglik": tau_ev, "marglik": ev,
                                      "tau val": tau_v, "val": pp.evaluate(model, g, test)}
print(f"{'':16s}{'fit s':>7s}{'MB':>8s}{'NLL (τ evid.)':>15s}{'NLL (τ val)':>13s}{'ECE (τ val)':>13s}")
for name, r in {**{k: table[k] for k in ("kron", "full")}, **lowrank_rows}.items():
    print(f"{name:16s}{r['fit s']:7.2f}{r['MB']:8.2f}{r['marglik']['nll']:15.4f}{r['val']['nll']:13.4f}"
          f"{r['val']['ece']:13.4f}")

# %%
best_lr = min(lowrank_rows, key=lambda k: lowrank_rows[k]["val"]["nll"])
display(Markdown(
    f"The best low-rank posterior here ({best_lr}) stores {lowrank_rows[best_lr]['MB']:.1f} MB against full's "
    f"{table['full']['MB']:.0f} MB, with test NLL {lowrank_rows[best_lr]['val']['nll']:.4f} (τ from validation) "
    f"against kron's {table['kron']['val']['nll']:.4f}. The directions beyond the top $k$ revert to the prior, so with "
    f"the evidence's small τ the predictive is too wide ({lowrank_rows[best_lr]['marglik']['nll']:.3f}); prefer kron "
    f"unless cross-layer correlations matter and $k$ covers most of the spectrum (`bench/results/laplace_lowrank.md`)."
))

# %% [markdown]
# ## When to use Laplace — and when not
#
# **Use it** when you already have a trained network and want calibrated probabilities or error bars now: one pass
# over the data, no retraining, the GLM predictive at about the cost of one forward and backward pass per input.
# KFAC (`kron`) is the default; last-layer KFAC is the cheapest and often enough for calibration; `full` only for
# small networks or a subnetwork. Choose $\tau$ on validation data when you have it; the evidence is right for
# small, well-specified models (the regression above) and for tuning the noise $\sigma$.
#
# **Don't** when you want a smaller network (the Laplace marginals prune, but a sparsity-inducing posterior, `03` and
# `04`, prunes far more at the same accuracy); when you need uncertainty far from the MAP's basin (Laplace is local:
# ensembles or VI explore more); when you would sample whole networks from it (use GLM).

# %%
print(f"total notebook time: {time.perf_counter() - t_start:.1f} s")
