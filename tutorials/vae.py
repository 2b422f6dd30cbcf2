# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Variational autoencoders
#
# A VAE explains each image `x` by a latent code `z`: a prior `p(z) = N(0, I)` and a decoder
# `p_theta(x | z)` whose parameters are a neural network of `z`. The marginal
# `p(x) = sum_z p(x | z) p(z)` has no closed form, so we fit an encoder `q_phi(z | x)` (the
# *amortized* variational posterior) and maximize the ELBO,
#
# `log p(x) >= E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z))`,
#
# by the reparametrization trick. In pyro_dgm the VAE is a Pyro program: `vae.model(x)` samples
# `z` and observes `x`; `vae.guide(x)` samples `z` from the encoder. `pyro_dgm.fit` trains it with
# the ELBO (the default when there is a guide), and `pyro_dgm.evaluate` scores it by the
# importance-weighted bound (IWAE), which tightens towards `log p(x)` as the number of samples grows.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.callbacks import EarlyStopping
from pyro_dgm.data import load_digits, load_digits_labels
from pyro_dgm.models import VAE

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"  # a few steps only (the test suite sets it)
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "vae"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# Seed first: the network's initial weights are drawn when the model is built, before `fit`
# (whose `seed=` covers the training randomness and the data order) is called. An `EarlyStopping`
# callback scores the validation digits after every epoch and keeps the best weights.

# %%
pyro.set_rng_seed(0)
x, x_test = load_digits("train"), load_digits("test")  # binarized 8x8 digits, (N, 64)
if FAST:
    x_test = x_test[:100]
vae = VAE(64, latent_dim=8, hidden=(256,))
stopper = EarlyStopping(load_digits("val"), patience=10)
result = pyro_dgm.fit(vae.model, vae.guide, x, epochs=2 if FAST else 150, batch_size=64, lr=1e-3, seed=0,
                      progress=False, callbacks=[stopper])
print(f"final training loss (negative ELBO, nats per image): {result.loss:.2f}; best validation loss "
      f"{stopper.best:.2f} after {result.epochs} epochs")

# %% [markdown]
# The ELBO is a lower bound; with `K` importance samples from the guide the IWAE bound
# `log (1/K) sum_k p(x, z_k) / q(z_k | x)` is tighter. The gap between the two is a measure of how far
# the guide is from the true posterior.

# %%
elbo = pyro_dgm.evaluate(vae.model, x_test, guide=vae.guide, num_particles=1, seed=0)
iwae = pyro_dgm.evaluate(vae.model, x_test, guide=vae.guide, num_particles=20 if FAST else 1000, seed=0)
print(f"test NLL, ELBO (K=1): {elbo['nll']:.2f} nats; IWAE: {iwae['nll']:.2f} nats "
      f"({iwae['bits_per_dim']:.3f} bits/dim, {iwae['method']})")

# %% [markdown]
# Samples decode `z ~ p(z)`; we show the decoder's mean `E[x | z]`, which is smoother than a
# Bernoulli draw. Reconstructions decode the encoder's mean of `q(z | x)`. The latent plot projects the
# 8-dimensional means of the test digits on their first two principal components.

# %%
with torch.no_grad():
    figs = [
        plots.sample_grid(vae.sample(100, mean=True), nrow=10, path=OUT / "samples.png",
                          title=f"VAE samples E[x|z], digits; test NLL {iwae['nll']:.1f} nats (IWAE)"),
        plots.reconstructions(x_test[:10], vae.reconstruct(x_test[:10]), path=OUT / "reconstructions.png"),
        plots.latent_scatter(plots.pca_2d(vae.encode(x_test)), load_digits_labels("test")[:len(x_test)],
                             path=OUT / "latent.png", axis_names=("PC 1", "PC 2"),
                             title="VAE latent means of test digits (PCA, 2 of 8 dims)"),
        plots.loss_curves(result, path=OUT / "loss.png", validation=stopper,
                          title="VAE on binarized digits: training and validation loss"),
    ]
for fig in figs:
    plt.close(fig)
print(f"figures in {OUT}")
