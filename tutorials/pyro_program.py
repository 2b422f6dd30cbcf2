# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Bringing your own Pyro program
#
# `pyro_dgm.fit` trains programs written exactly as Pyro's tutorials write them: `model(data)` with
# `pyro.sample`, `pyro.plate` and `pyro.param`, guides by hand or by `pyro.infer.autoguide`, networks
# registered with `pyro.module`. Two examples.
#
# **Pyro's coin.** A coin with unknown fairness `f ~ Beta(10, 10)`, tossed 100 times, 60 heads. The
# posterior is conjugate, `Beta(10 + 60, 10 + 40)`, mean 70/120 = 0.583. A guide `Beta(alpha_q,
# beta_q)` fitted by the ELBO should find it. We train on minibatches of 10 tosses: the data plate's
# sites then count N/B = 10 times (Pyro's subsampling semantics), so the global latent still sees
# the evidence of all 100 tosses.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal
from torch import nn
from torch.distributions import constraints
from torch.utils.data import TensorDataset

import pyro_dgm
from pyro_dgm import plots

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "pyro_program"
OUT.mkdir(parents=True, exist_ok=True)


def coin(data):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Bernoulli(f), obs=data)


def coin_guide(data):
    a = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
    b = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
    pyro.sample("latent_fairness", dist.Beta(a, b))


# %%
pyro.set_rng_seed(0)
pyro.clear_param_store()
tosses = torch.cat([torch.ones(60), torch.zeros(40)])
pyro_dgm.fit(coin, coin_guide, tosses, epochs=30 if FAST else 300, batch_size=10, lr=0.05, seed=0, progress=False)
a, b = pyro.param("alpha_q").item(), pyro.param("beta_q").item()
print(f"posterior mean of the fairness: {a / (a + b):.3f} (exact: {70 / 120:.3f})")

# %% [markdown]
# **A regression with an autoguide.** `y = w x + b + noise` with Normal priors on `w` and `b`, a
# network-free model whose guide is `AutoNormal`. The data site is the one observed site (`"y"`),
# found without naming it; each batch `(x, y)` of the `TensorDataset` calls `model(x, y)`.
# `pyro_dgm.to_arviz` then gives ArviZ draws of `w` and `b` (see the ArviZ tutorial).

# %%
def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 10.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(w * x + b, 0.5), obs=y)


pyro.clear_param_store()
xs = torch.linspace(-2, 2, 200)
ys = 1.5 * xs - 0.7 + 0.5 * torch.randn(200)
guide = AutoNormal(regression)
pyro_dgm.fit(regression, guide, TensorDataset(xs, ys), epochs=20 if FAST else 200, batch_size=50, lr=0.05, seed=0,
             progress=False)
median = guide.median(xs, ys)
print(f"w = {median['w'].item():.2f} (true 1.5), b = {median['b'].item():.2f} (true -0.7)")

# %% [markdown]
# **A network registered with `pyro.module`**, as in Pyro's VAE tutorial: a decoder `nn.Module`
# called inside the program. `fit` finds its parameters as `SVI` does, from the trace.

# %%
decoder, encoder = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64)), nn.Linear(64, 4)


def vae_model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)


def vae_guide(x):
    pyro.module("encoder", encoder)
    loc, log_scale = encoder(x).chunk(2, -1)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


pyro.clear_param_store()
pyro.set_rng_seed(0)
digits = pyro_dgm.data.load_digits("train")
result = pyro_dgm.fit(vae_model, vae_guide, digits, epochs=1 if FAST else 50, batch_size=64, lr=1e-3, seed=0,
                      progress=False)
nll = pyro_dgm.evaluate(vae_model, pyro_dgm.data.load_digits("test"), guide=vae_guide, num_particles=10)["nll"]
print(f"tutorial-style VAE: final negative ELBO {result.loss:.2f}, test NLL {nll:.2f} nats (IWAE, K=10)")
fig = plots.loss_curves(result, path=OUT / "vae_loss.png",
                        title="pyro.module VAE on digits: negative ELBO per image (nats)")
plt.close(fig)
print(f"figures in {OUT}")
