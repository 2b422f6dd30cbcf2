# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Score-based (diffusion) models
#
# Instead of a density, model its score `s(x) = grad_x log p(x)`, and sample with Langevin dynamics,
# which needs nothing else. The score of the data is unknown, but that of the data *blurred by
# Gaussian noise* of scale sigma can be learned by **denoising score matching**: for
# `x~ = x + sigma * eps`, the regression target is `-(x~ - x) / sigma^2`. At small sigma the blurred
# score is close to the data's but poorly estimated far from the data; at large sigma it is accurate
# everywhere but blurred. A noise-conditional network `s(x, sigma)` learns all levels at once, and
# **annealed Langevin** sampling runs from the largest sigma down to the smallest (NCSN). In
# continuous time the noising is an SDE, sampled by reversing it (predictor-corrector), and the
# probability-flow ODE gives exact log-likelihoods.
#
# In pyro_dgm the data site holds a `ScoreField`; `fit` trains it by denoising score matching, and
# `evaluate` scores it through the probability flow.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.data import toy_2d
from pyro_dgm.inference import geometric_sigmas
from pyro_dgm.metrics import mode_coverage
from pyro_dgm.models import NCSN

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "score_based"
OUT.mkdir(parents=True, exist_ok=True)
x, x_test = toy_2d("8gaussians", 4000, seed=0), toy_2d("8gaussians", 1000, seed=1)

# %%
pyro.set_rng_seed(0)
ncsn = NCSN(2, sigmas=geometric_sigmas(4.0, 0.05, 10))  # sigma_1 > ... > sigma_10
result = pyro_dgm.fit(ncsn.model, None, x, steps=20 if FAST else 3000, batch_size=256, lr=1e-3, seed=0,
                      progress=False)
print(f"denoising score matching loss at the end: {result.loss:.3f}")

# %%
samples = pyro_dgm.programs.sample_program(ncsn.model, 500 if FAST else 2500)
cover = mode_coverage(samples, "8gaussians")
print(f"annealed Langevin samples: {cover['modes']} of 8 modes, {cover['high_quality']:.2f} near a mode")
res = pyro_dgm.evaluate(ncsn.model, x_test[:50] if FAST else x_test)
print(f"test NLL {res['nll']:.3f} nats per point ({res['method']})")
fig = plots.scatter_2d(samples, lim=3.0, path=OUT / "samples.png",
                       title=f"NCSN annealed Langevin, 8 Gaussians: {cover['modes']}/8 modes")
plt.close(fig)
print(f"figures in {OUT}")
