# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Conditioning and inpainting
#
# Two kinds of control over what a generative model draws.
#
# **Class-conditional models** learn `p(x | y)` for a label `y`: the label is one more input of
# every network (the VAE's encoder `q(z | x, y)` and decoder `p(x | z, y)`; a MADE takes it as an input
# every output may see). The program is `model(x, y)`; `fit` trains it on batches `(x, y)` of a
# `TensorDataset`, and `sample_program(model, n, args=(y,))` draws the classes we ask for. We check
# the draws with the digits classifier that ships with pyro_dgm.
#
# **Inpainting** asks an unconditional model for `p(x_u | x_k)`: the unknown pixels `x_u` given
# the known ones `x_k`. How depends on the model: an autoregressive model whose ordering puts every
# known pixel first samples it exactly, pixel by pixel; a VAE weighs particles `z ~ q(z | x)` by
# how well they explain `x_k` and decodes `x_u` from them. `pyro_dgm.inpaint` picks the route from
# the program's data site, and `conditional_log_prob` scores the true `x_u`, in nats.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch
from torch.utils.data import TensorDataset

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.data import load_digits, load_digits_labels
from pyro_dgm.inpaint import conditional_log_prob, inpaint, inpaint_method
from pyro_dgm.metrics import digits_classifier
from pyro_dgm.models import MADE
from pyro_dgm.models.conditional import ConditionalVAE

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "controlled"
OUT.mkdir(parents=True, exist_ok=True)
x, y = load_digits("train"), load_digits_labels("train")
x_test = load_digits("test")[:20 if FAST else 100]

# %%
pyro.set_rng_seed(0)
cvae = ConditionalVAE(64, num_classes=10, latent_dim=8, hidden=(256,))
length = {"steps": 10} if FAST else {"epochs": 100}
pyro_dgm.fit(cvae.model, cvae.guide, TensorDataset(x, y), batch_size=64, lr=1e-3, seed=0, progress=False, **length)
labels = torch.arange(100) % 10  # each row of the grid asks for 0, 1, ..., 9
with torch.no_grad():
    draws = pyro_dgm.programs.sample_program(cvae.model, 100, args=(labels,))
    accuracy = float((digits_classifier()(draws).argmax(-1) == labels).float().mean())
print(f"conditional VAE: the classifier reads the asked-for digit in {accuracy:.0%} of 100 draws")
fig = plots.sample_grid(draws, nrow=10, path=OUT / "cvae_samples.png",
                        title=f"class-conditional VAE draws, columns y = 0..9; classifier agrees on {accuracy:.0%}")
plt.close(fig)

# %% [markdown]
# Now inpainting with an unconditional MADE whose ordering is the raster scan: the top half of each
# test digit is known, the bottom half drawn. Raster order puts the known pixels first, so the
# route is exact ancestral sampling.

# %%
pyro.set_rng_seed(0)
made = MADE(64, hidden=(500,))
length = {"steps": 10} if FAST else {"epochs": 60}
pyro_dgm.fit(made.model, None, x, batch_size=100, lr=3e-3, seed=0, progress=False, **length)
mask = torch.zeros(64, dtype=torch.bool)
mask[:32] = True  # the top four rows are known
route = inpaint_method(made.model, x_test, mask)
completions = inpaint(made.model, x_test, mask, num_samples=1, seed=0)
nats = conditional_log_prob(made.model, x_test, mask)
print(f"MADE inpainting by the {route!r} route: log p(bottom half | top half) of the true digits "
      f"{float(nats.mean()):.2f} nats per image")
shown = torch.cat([x_test[:10] * mask, completions.reshape(-1, 64)[:10], x_test[:10]])
fig = plots.sample_grid(shown, nrow=10, path=OUT / "made_inpainting.png",
                        title="MADE inpainting: known top half (row 1), completions (row 2), truth (row 3)")
plt.close(fig)
print(f"figures in {OUT}")
