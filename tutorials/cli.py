# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The command line, checkpoints and resuming
#
# `pyro-dgm train` trains any registered model on any registered data set and writes a *run
# folder*: `checkpoint.pt` (everything `fit` needs to resume: weights, optimizer states, the data
# order, random states), `model.pt` (the weights) and `run.json` (what was trained, with which
# options and seed, tied to `model.pt` by its sha256). A trained run is never overwritten silently:
# train again with `--resume` to continue it, or `--overwrite` to start afresh.
#
# In a shell the commands are `pyro-dgm list`, `pyro-dgm train --model vae --data digits --out
# runs/vae`, `pyro-dgm sample --run runs/vae`, `pyro-dgm evaluate --run runs/vae`. Here we call
# the same entry point, `pyro_dgm.cli.main`, with the same arguments, so the tutorial runs anywhere.

# %%
import os
import shutil
from pathlib import Path

import torch

import pyro_dgm
from pyro_dgm.cli import load_run, main

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "cli"
shutil.rmtree(OUT, ignore_errors=True)  # the tutorial starts from an empty folder each time
OUT.mkdir(parents=True)
run = OUT / "vae"


def pyro_dgm_cli(*argv):
    """`pyro-dgm ARGV...` as the shell runs it; stops the tutorial on a non-zero exit status."""
    print("$ pyro-dgm", " ".join(argv))
    status = main(list(argv))
    if status != 0:
        raise SystemExit(status)


# %% [markdown]
# `train --help` lists every option with its default, and each model's own defaults and options;
# model options (a latent size, hidden widths, a GAN loss, an EBM sampler setting) go in with
# `--model-option KEY=VALUE`, are checked against the model's parameters before anything runs,
# and are recorded in `run.json`. `--seed` seeds everything before the model is built.

# %%
epochs = ("2", "4") if FAST else ("30", "60")
pyro_dgm_cli("train", "--model", "vae", "--data", "digits", "--epochs", epochs[0], "--out", str(run),
             "--model-option", "latent_dim=4", "--model-option", "hidden=(128,)", "--no-progress")

# %% [markdown]
# Training again into the same folder is refused; `--resume` continues from `checkpoint.pt` to the
# new number of epochs. A resumed run ends where an uninterrupted one would: `fit` restores the
# optimizer state, the position in the data order and the random state.

# %%
status = main(["train", "--model", "vae", "--data", "digits", "--epochs", epochs[1], "--out", str(run)])
print("without --resume or --overwrite the exit status is", status)
pyro_dgm_cli("train", "--model", "vae", "--data", "digits", "--epochs", epochs[1], "--out", str(run),
             "--resume", "--no-progress")  # the model options come from run.json

# %%
pyro_dgm_cli("sample", "--run", str(run), "--num", "64")
pyro_dgm_cli("evaluate", "--run", str(run), "--num-particles", "20" if FAST else "500")

# %% [markdown]
# From Python, `load_run` rebuilds the trained model (with its options) on the CPU, in eval mode:
# its `module.model` and `module.guide` are the Pyro programs, ready for `pyro_dgm.evaluate`,
# `to_arviz` or `sample_program`.

# %%
trained = load_run(run)
print("run.json:", {k: trained.meta[k] for k in ("model", "data", "seed", "model_options", "epochs", "steps")})
x_val = trained.data_spec.load("val", trained.meta["seed"])
res = pyro_dgm.evaluate(trained.module.model, x_val, guide=trained.module.guide, num_particles=20, seed=0)
print(f"validation NLL of the loaded run: {res['nll']:.2f} nats ({res['method']})")
samples = torch.load(run / "samples.pt", weights_only=True)
print(f"samples written by `pyro-dgm sample`: {tuple(samples.shape)}, figure {run / 'samples.png'}")
