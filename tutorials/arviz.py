# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # ArviZ: posterior inspection and comparing families
#
# `pyro_dgm.to_arviz` turns a fitted program into an ArviZ object; what its `log_likelihood` group
# holds decides what ArviZ's numbers mean:
#
# * a model with **global latents** `theta` (the coin's fairness) and a guide `q(theta)`: draws
#   `theta_s ~ q` in `posterior`, and `log p(x_i | theta_s)` per draw, so `az.loo` is PSIS-LOO, as for
#   an MCMC fit;
# * a model with only **per-example latents** (a VAE) or **none** (an autoregressive model, a flow):
#   one held-out estimate of `log p(x_i)` per example (exact, or importance-weighted with a guide).
#
# `pyro_dgm.compare` ranks any mix of families by these held-out `log p(x_i)` on test data and returns
# ArviZ's own comparison table: the expected log predictive density (ELPD, in nats; higher is better),
# the difference to the best model and its standard error.

# %%
import os
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

import pyro_dgm
from pyro_dgm.data import load_digits
from pyro_dgm.models import MADE, VAE, FactorizedBernoulli

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "arviz"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# **Posterior inspection.** Pyro's coin again: the guide's posterior over the fairness, summarized
# by ArviZ, and PSIS-LOO over its draws.

# %%
def coin(data):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Bernoulli(f), obs=data)


def coin_guide(data):
    a = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
    b = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
    pyro.sample("latent_fairness", dist.Beta(a, b))


pyro.set_rng_seed(0)
pyro.clear_param_store()
tosses = torch.cat([torch.ones(60), torch.zeros(40)])
pyro_dgm.fit(coin, coin_guide, tosses, epochs=30 if FAST else 300, batch_size=10, lr=0.05, seed=0, progress=False)
idata = pyro_dgm.to_arviz(coin, coin_guide, tosses, num_samples=200 if FAST else 1000, seed=0)
print(az.summary(idata, var_names=["latent_fairness"], kind="stats"))
print(az.loo(idata))
axes = az.plot_posterior(idata, var_names=["latent_fairness"])
axes.set_title("coin: posterior of the fairness (guide draws); exact mean 0.583")
plt.savefig(OUT / "coin_posterior.png", dpi=120, bbox_inches="tight")
plt.close("all")

# %% [markdown]
# **Comparing families.** Three models of the binarized digits, each trained briefly: a factorized
# Bernoulli, a VAE and a MADE. Their held-out ELPD on the test digits orders them as their test
# NLLs do (ELPD = minus the summed NLL).

# %%
x, x_test = load_digits("train"), load_digits("test")
if FAST:
    x_test = x_test[:100]
pyro.set_rng_seed(0)
base, vae, made = FactorizedBernoulli(64), VAE(64, latent_dim=8, hidden=(256,)), MADE(64, hidden=(500,))
for model, guide, lr in ((base, None, 5e-2), (vae, vae.guide, 1e-3), (made, None, 3e-3)):
    length = {"steps": 10} if FAST else {"epochs": 50}
    pyro_dgm.fit(model.model, guide, x, batch_size=64, lr=lr, seed=0, progress=False, **length)
table = pyro_dgm.compare({"factorized Bernoulli": base.model, "VAE": (vae.model, vae.guide), "MADE": made.model},
                         x_test, num_particles=20 if FAST else 500, seed=0)
print(table[["rank", "elpd", "se", "elpd_diff", "dse", "weight"]].to_string(float_format="%.2f"))
for name, row in table.iterrows():
    print(f"{name:22s} test NLL {-row['elpd'] / len(x_test):.2f} nats per image")
# ArviZ's plot_compare expects a LOO or WAIC column; the same picture, drawn directly:
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.errorbar(table["elpd"], range(len(table)), xerr=table["se"], fmt="o")
ax.set(yticks=range(len(table)), yticklabels=table.index, xlabel="held-out ELPD on test digits (nats)",
       title=f"digits, {len(x_test)} test images: ELPD +- s.e. (higher is better)")
fig.savefig(OUT / "compare.png", dpi=120, bbox_inches="tight")
plt.close(fig)
print(f"figures in {OUT}")
