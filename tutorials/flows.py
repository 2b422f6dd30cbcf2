# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Normalizing flows
#
# A flow maps a simple base variable `z ~ N(0, I)` to data by an invertible transformation
# `x = f(z)`. The change-of-variables formula gives the exact density,
#
# `log p(x) = log p_z(f^{-1}(x)) + log |det d f^{-1}(x) / dx|`,
#
# so flows train by maximum likelihood and sample in one pass. Everything rests on transformations
# whose inverse and Jacobian determinant are cheap:
#
# * **NICE**: additive couplings (half the coordinates shift by a network of the other half:
#   determinant 1) and a final diagonal scaling;
# * **RealNVP**: affine couplings (shift and scale), determinant = product of the scales;
# * **MAF**: each coordinate an affine function of the previous ones (a MADE computes the shifts
#   and scales): fast density, sequential sampling.
#
# In pyro_dgm a flow's data site holds a Pyro `TransformedDistribution`, so `fit` uses maximum
# likelihood and `evaluate` reports the exact test NLL. Here we fit three flows to the 2-D "moons".

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.data import toy_2d
from pyro_dgm.models import MAF, NICE, RealNVP

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "flows"
OUT.mkdir(parents=True, exist_ok=True)
x, x_test = toy_2d("moons", 4000, seed=0), toy_2d("moons", 2000, seed=1)

# %%
pyro.set_rng_seed(0)
flows = {"NICE": NICE(2, num_couplings=4, hidden=(64, 64)),
         "RealNVP": RealNVP(2, num_couplings=6, hidden=(64, 64)),
         "MAF": MAF(2, num_layers=5, hidden=(64, 64))}
fig, axes = plt.subplots(1, len(flows), figsize=(4 * len(flows), 4), layout="constrained")
for ax, (name, flow) in zip(axes, flows.items()):
    length = {"steps": 10} if FAST else {"epochs": 100}
    pyro_dgm.fit(flow.model, None, x, batch_size=128, lr=1e-3, seed=0, progress=False, **length)
    nll = pyro_dgm.evaluate(flow.model, x_test)["nll"]
    print(f"{name:8s} test NLL {nll:.3f} nats per point (exact)")
    plots.density_2d(flow.eval().log_prob, ax=ax, data=x_test[:500], title=f"{name} on moons\ntest NLL {nll:.2f} nats")
plots.save(fig, OUT / "densities.png")
plt.close(fig)

# %% [markdown]
# Sampling pushes base draws through the transformations. RealNVP samples in one pass; MAF must
# invert one coordinate at a time (here only two). The figure says how many samples fall outside the
# plotted range.

# %%
samples = pyro_dgm.programs.sample_program(flows["RealNVP"].model, 2000)
fig = plots.scatter_2d(samples, lim=3.0, path=OUT / "realnvp_samples.png", title="RealNVP samples, moons")
plt.close(fig)
print(f"figures in {OUT}")
