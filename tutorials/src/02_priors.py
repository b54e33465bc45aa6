# %% [markdown]
# # Sparsity priors
#
# `pyro_prune.distributions` holds the priors that make Bayesian networks prune themselves:
#
# * **`LogUniform(low, high)`**: $p(w) = \dfrac{1}{2|w|\log(h/l)}$ for $l \le |w| \le h$. `LogUniform()` with no bounds is the
#   improper limit `ImproperLogUniform`, $p(w) \propto 1/|w|$, the prior of sparse variational dropout (Molchanov et al. 2017).
# * **`Horseshoe(scale)`** (`HalfCauchyScaleMixture`): $w = z\,s\,\varepsilon$ with $z \sim C^+(0, 1)$, whose exact marginal is
#   $p(w) = e^{u}E_1(u) / (\sqrt{2\pi^3}\,s)$ with $u = w^2 / 2s^2$ (Carvalho et al. 2010).
# * **`LogUniformScaleMixture`**: groups of weights sharing one scale $z$ with $p(z) \propto 1/|z|$ (Louizos et al. 2017).
#
# This notebook plots their densities on log axes and checks the KL approximation that sparse VD trains with. Everything
# here is cheap; with `PYRO_PRUNE_SMOKE=1` (CI) it only uses coarser grids.

# %%
import math
import os
import pathlib
import sys

if not (pathlib.Path.cwd() / "pyro_prune").is_dir() and (pathlib.Path.cwd().parent / "pyro_prune").is_dir():
    sys.path.insert(0, str(pathlib.Path.cwd().parent))  # run from tutorials/ without installing the package

import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.special import digamma
from scipy.stats import poisson

import pyro_prune as pp
from pyro_prune.distributions import molchanov_kl

%matplotlib inline
SMOKE = os.environ.get("PYRO_PRUNE_SMOKE") == "1" or bool(os.environ.get("CI"))
N_GRID = 200 if SMOKE else 2000
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## Densities
#
# All three put a lot of mass near zero and have heavy tails, the shape that lets a posterior put unneeded weights at
# (nearly) zero and leave the useful ones almost unshrunk. On log–log axes the log-uniform is a straight line of slope −1
# between its bounds; the horseshoe has a logarithmic spike at 0 and Cauchy-like tails,
# $p(w) \approx \sqrt{2/\pi^3}\,s / w^2$ (slope −2), far heavier than the Gaussian's. The improper prior has no
# normalizer: its curve is $1/|w|$, defined up to a constant.

# %%
w = torch.logspace(-5, 3, N_GRID)
priors = {
    "LogUniform(1e-4, 10)": pp.LogUniform(1e-4, 10.0),
    "LogUniform() = 1/|w| (improper, unnormalized)": pp.LogUniform(),
    "Horseshoe(1)": pp.Horseshoe(1.0),
    "Normal(0, 1)": torch.distributions.Normal(0.0, 1.0),
}

fig, ax = plt.subplots(figsize=(7, 4.5))
for (name, d), style in zip(priors.items(), ["-", "--", "-", ":"]):
    ax.plot(w, d.log_prob(w).exp(), style, label=name)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_ylim(1e-8, 1e5)
ax.set_xlabel("|w|")
ax.set_ylabel("density p(w)")
ax.set_title("Sparsity priors (symmetric in w; only w > 0 shown)")
ax.legend()
plt.show()

# %% [markdown]
# The proper priors integrate to one (the density is symmetric, so twice the integral over $w > 0$); the
# horseshoe's integral needs care near its logarithmic pole, done here on a log grid:

# %%
grid = torch.logspace(-30, 12, 200_001 if not SMOKE else 20_001)
for name in ["LogUniform(1e-4, 10)", "Horseshoe(1)"]:
    dens = priors[name].log_prob(grid).exp()
    mass = 2 * torch.trapezoid(dens * grid, grid.log())  # int p(w) dw = int p(w) w dlog w
    print(f"{name:22s} total mass ≈ {mass.item():.4f}")

# sampling goes through the mixture w = z * s * eps; compare a tail probability with the density
x = pp.Horseshoe(1.0).sample((20_000 if SMOKE else 200_000,))
near = grid[grid < 0.1]
p_near = 2 * torch.trapezoid(priors["Horseshoe(1)"].log_prob(near).exp() * near, near.log())
p_sampled = (x.abs() < 0.1).double().mean()
print(f"Horseshoe(1): P(|w| < 0.1) = {p_near.item():.4f} by quadrature, {p_sampled.item():.4f} sampled")

# %% [markdown]
# ## The KL that sparse variational dropout trains with
#
# For $q(w) = \mathcal N(\mu, \alpha\mu^2)$ and the improper prior, $\mathrm{KL}(q\,\|\,p)$ depends on $\alpha$ only and
# is defined up to a constant. Molchanov et al. (2017) fit
# $-\mathrm{KL} \approx k_1\sigma(k_2 + k_3\log\alpha) - \tfrac12\log(1 + \alpha^{-1}) - k_1$; `molchanov_kl` is that
# approximation, registered for `Normal ‖ LogUniform()` so that `TraceMeanField_ELBO` uses it. The exact value (same
# constant, KL → 0 as α → ∞) is $\tfrac12\bigl(\mathbb E\,\psi(\tfrac12 + K) - \psi(\tfrac12)\bigr)$ with
# $K \sim \mathrm{Poisson}(1/2\alpha)$.

# %%
def exact_kl(log_alpha):
    lam = 0.5 * math.exp(-log_alpha)
    k = np.arange(int(lam + 20 * math.sqrt(lam) + 50))
    return 0.5 * (np.sum(poisson.pmf(k, lam) * digamma(0.5 + k)) - digamma(0.5))


log_alpha = np.linspace(-8, 8, 161 if SMOKE else 1601)
exact = np.array([exact_kl(la) for la in log_alpha])
approx = molchanov_kl(torch.tensor(log_alpha)).numpy()

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.plot(log_alpha, exact, label="exact")
ax1.plot(log_alpha, approx, "--", label="Molchanov et al. approximation")
ax1.set_xlabel("log α")
ax1.set_ylabel("KL (per weight)")
ax1.legend()
ax2.plot(log_alpha, approx - exact)
ax2.axhline(0.01, color="grey", lw=0.5)
ax2.axhline(-0.01, color="grey", lw=0.5)
ax2.set_xlabel("log α")
ax2.set_ylabel("approximation − exact")
plt.tight_layout()
plt.show()
i = np.abs(approx - exact).argmax()
print(f"max |error| = {abs(approx - exact)[i]:.4f} at log α = {log_alpha[i]:.2f}")

# %% [markdown]
# Weights whose posterior drifts to large $\alpha$ (log α > 3, signal-to-noise below about 0.2) pay almost
# no KL and carry almost no signal: `pp.prune` removes them.
