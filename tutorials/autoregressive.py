# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Autoregressive models
#
# An autoregressive model picks an ordering of the pixels and writes the density by the chain rule,
# `p(x) = p(x_1) p(x_2 | x_1) ... p(x_D | x_1, ..., x_{D-1})`, each factor a Bernoulli whose
# parameter is a function of the pixels before it. The choice of that function is the model:
#
# * **FVSBN**: one logistic regression per pixel (`D^2 / 2` weights);
# * **NADE**: one hidden layer whose weights are shared across the conditionals, computed with a
#   running sum in `O(D H)`;
# * **MADE**: an autoencoder with masked connections so output `i` sees only inputs before `i` in the
#   ordering; several random orderings, averaged at test time;
# * **PixelCNN**: masked convolutions over the image.
#
# Each is trained by maximum likelihood (the default objective for a model whose data site has an
# exact `log_prob`), and scored exactly: the test NLL below is `-log p(x)` in nats per image.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.data import load_digits
from pyro_dgm.models import FVSBN, MADE, NADE, FactorizedBernoulli

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "autoregressive"
OUT.mkdir(parents=True, exist_ok=True)
x, x_test = load_digits("train"), load_digits("test")
if FAST:
    x_test = x_test[:100]

# %% [markdown]
# A factorized Bernoulli (every pixel independent) is the baseline an autoregressive model must beat:
# the difference is what the conditionals learn about the correlations between pixels.

# %%
models = {
    "factorized Bernoulli": (FactorizedBernoulli(64), 5e-2, 20),
    "FVSBN": (FVSBN(64), 1e-2, 50),
    "NADE": (NADE(64, hidden=100), 5e-3, 50),
    "MADE, 8 orderings": (MADE(64, hidden=(500,), num_masks=8, order="random"), 3e-3, 60),
}
nll = {}
for name, (model, lr, epochs) in models.items():
    pyro.set_rng_seed(0)  # the same initial randomness for every model (they were built above)
    length = {"steps": 5} if FAST else {"epochs": epochs}
    pyro_dgm.fit(model.model, None, x, batch_size=100, lr=lr, seed=0, progress=False, **length)
    nll[name] = pyro_dgm.evaluate(model.model, x_test)["nll"]
    print(f"{name:22s} test NLL {nll[name]:6.2f} nats per image")

# %% [markdown]
# Sampling is sequential: pixel `i` is drawn after pixels `1..i-1`, one network evaluation per pixel.
# `sample_program` runs any Pyro program forward with its data site unconditioned.

# %%
made = models["MADE, 8 orderings"][0].eval()
with torch.no_grad():
    samples = pyro_dgm.programs.sample_program(made.model, 100)
fig = plots.sample_grid(samples, nrow=10, path=OUT / "made_samples.png",
                        title=f"MADE samples, binarized digits; test NLL {nll['MADE, 8 orderings']:.1f} nats")
plt.close(fig)
print(f"figures in {OUT}")
