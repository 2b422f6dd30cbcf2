# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Energy-based models
#
# An energy-based model keeps any network `E_theta(x)` and defines `p(x) = exp(-E(x)) / Z(theta)`.
# The price of that freedom is the normalizer `Z(theta) = integral exp(-E(x)) dx`: neither the
# likelihood nor samples come for free. The gradient of the log-likelihood is
#
# `grad log p(x) = -grad E(x) + E_{x' ~ p}[grad E(x')]`,
#
# and **contrastive divergence** estimates the second term with a few steps of Langevin dynamics,
# `x' <- x' - eps grad E(x') + sqrt(2 eps) noise`. **Score matching** avoids sampling altogether:
# the score `grad_x log p(x) = -grad_x E(x)` does not depend on `Z`, and fitting it to the data's
# score reduces (Hyvarinen) to `E_data[tr(grad^2 log p) + |grad log p|^2 / 2]`. **NCE** learns `log Z`
# as a parameter by classifying data against noise.
#
# In pyro_dgm the data site holds an `UnnormalizedDistribution`; such a model must be given its
# objective, and `evaluate` needs a `log_normalizer` (here integrated on a grid, possible in 2-D).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.data import toy_2d
from pyro_dgm.inference import ContrastiveDivergence, ScoreMatching
from pyro_dgm.metrics import mode_coverage
from pyro_dgm.models import EBM, EnergyMLP

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "ebm"
OUT.mkdir(parents=True, exist_ok=True)
x, x_test = toy_2d("8gaussians", 4000, seed=0), toy_2d("8gaussians", 2000, seed=1)

# %%
objectives = {"contrastive divergence": ContrastiveDivergence(num_steps=10),
              "score matching": ScoreMatching("exact")}
fig, axes = plt.subplots(1, 2, figsize=(8, 4), layout="constrained")
ebms = {}
for ax, (name, objective) in zip(axes, objectives.items()):
    pyro.set_rng_seed(0)
    ebm = EBM(EnergyMLP(2, hidden=(128, 128)), 2, base_scale=4.0)
    pyro_dgm.fit(ebm.model, None, x, objective=objective, steps=10 if FAST else 500, batch_size=256,
                 lr=1e-3, seed=0, progress=False)
    res = pyro_dgm.evaluate(ebm.model, x_test, log_normalizer="grid")
    print(f"{name:24s} test NLL {res['nll']:.3f} nats per point ({res['method']})")
    plots.density_2d(lambda v: -ebm.energy(v), ax=ax, data=x_test[:500],
                     title=f"EBM ({name}), 8 Gaussians\ntest NLL {res['nll']:.2f} nats")
    ebms[name] = ebm
plots.save(fig, OUT / "densities.png")
plt.close(fig)

# %% [markdown]
# Samples come from MCMC on the energy: the model's own sampler runs Langevin dynamics from its base
# distribution (`EBM(num_steps=..., step_size=...)`).

# %%
samples = pyro_dgm.programs.sample_program(ebms["score matching"].model, 200 if FAST else 2000)
cover = mode_coverage(samples, "8gaussians")
print(f"Langevin samples of the score-matching EBM: {cover['modes']} of 8 modes, "
      f"{cover['high_quality']:.2f} near a mode")
fig = plots.scatter_2d(samples, lim=3.0, path=OUT / "samples.png",
                       title=f"EBM (score matching) Langevin samples: {cover['modes']}/8 modes")
plt.close(fig)
print(f"figures in {OUT}")
