# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Generative adversarial networks
#
# A GAN gives up on the likelihood: a generator `x = G(z)`, `z ~ N(0, I)`, is trained against a
# critic (discriminator) `D(x)` that tries to tell data from samples. The original minimax game is
#
# `min_G max_D E_data[log D(x)] + E_z[log(1 - D(G(z)))]`,
#
# whose optimum makes `p_G` equal to `p_data` (the critic then measures the Jensen-Shannon
# divergence). In practice the generator maximizes `log D(G(z))` instead (the *non-saturating* loss),
# and other divergences give other games: f-GANs, the Wasserstein GAN (a 1-Lipschitz critic, kept so
# by a gradient penalty in WGAN-GP), the hinge loss.
#
# In pyro_dgm the generator is a Pyro program with a latent site `z` and a deterministic data site.
# `Adversarial(critic, loss=...)` is the objective: it owns two parameter groups, and `fit` steps
# the critic and the generator in turn. With no likelihood, we judge samples by how many of the eight
# modes of a ring of Gaussians they cover and how many land near a mode.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.data import toy_2d
from pyro_dgm.inference import Adversarial
from pyro_dgm.metrics import mmd2, mode_coverage
from pyro_dgm.models import MLPCritic, MLPGenerator

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "gan"
OUT.mkdir(parents=True, exist_ok=True)
x = toy_2d("8gaussians", 20000, seed=0)

# %%
pyro.set_rng_seed(0)
generator, critic = MLPGenerator(2, latent_dim=2), MLPCritic(2)
result = pyro_dgm.fit(generator.model, None, x, objective=Adversarial(critic, loss="ns"),
                      steps=20 if FAST else 2000, batch_size=256, lr=1e-3, seed=0, progress=False,
                      optimizer_kwargs={"generator": {"betas": (0.5, 0.999)}, "critic": {"betas": (0.5, 0.999)}})
print("loss per group at the end:", {group: round(v[-1], 3) for group, v in result.losses.items()})

# %%
samples = pyro_dgm.programs.sample_program(generator.model, 2500)
cover = mode_coverage(samples, "8gaussians")
print(f"modes covered: {cover['modes']} of {cover['num_modes']}; "
      f"samples near a mode: {cover['high_quality']:.2f}; MMD^2 to held-out data: "
      f"{mmd2(samples, toy_2d('8gaussians', 2500, seed=1)):.4f}")
fig = plots.scatter_2d(samples, lim=3.0, path=OUT / "samples.png",
                       title=f"GAN (non-saturating) on 8 Gaussians: {cover['modes']}/8 modes")
plt.close(fig)
# The critic's loss is the binary cross-entropy of data against samples (2 log 2 = 1.39 nats when it
# cannot tell them apart); the generator's is -log D(G(z)), the non-saturating loss.
fig = plots.loss_curves(result, path=OUT / "loss.png", title="GAN (non-saturating) on 8 Gaussians: both players",
                        ylabel="loss (nats per example)")
plt.close(fig)
print(f"figures in {OUT}")
