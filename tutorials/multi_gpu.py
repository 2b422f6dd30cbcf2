# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Several GPUs (or processes) with torchrun
#
# Data-parallel training splits each step's batch over N processes: every process computes the
# gradient of the loss on its share, the gradients are averaged, and every process takes the same
# optimizer step. With the averaged gradient of N shares of B examples being the gradient of one batch
# of N x B, N processes at batch B follow the same path as one process at batch N x B.
#
# `pyro_dgm.fit` does this with no change to the script: launched by
# `torchrun --nproc_per_node N train.py`, it joins torch.distributed's process group from
# torchrun's environment (NCCL on CUDA with one GPU per process, gloo on the CPU), gives each process
# every N-th example of the one-process data order, averages every parameter group's gradients
# after its backward pass, and writes checkpoints from rank 0. `pyro_dgm.evaluate(..., all_ranks=True)`,
# called by every rank, splits the test batches between them and gives every rank the same NLL.
#
# To run anywhere, this tutorial starts two CPU processes itself with torchrun's environment
# variables, and checks the claim above on a MADE (maximum likelihood has no sampling noise, so the
# two runs must agree to float precision). On a machine with GPUs the same `train` function runs as
# `torchrun --nproc_per_node 2 train.py` with `device="cuda"`.

# %%
import os
import socket
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

import pyro_dgm
from pyro_dgm import plots
from pyro_dgm.data import load_digits
from pyro_dgm.models import MADE

FAST = os.environ.get("PYRO_DGM_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("PYRO_DGM_TUTORIAL_OUT", "runs/tutorials")) / "multi_gpu"
OUT.mkdir(parents=True, exist_ok=True)
STEPS, BATCH = (5, 50) if FAST else (200, 50)


def train(batch_size):
    """What train.py would hold: the same in one process and under torchrun."""
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    made = MADE(64, hidden=(200,))
    result = pyro_dgm.fit(made.model, None, load_digits("train"), steps=STEPS, batch_size=batch_size, lr=3e-3,
                          seed=0, shuffle=False, progress=False)
    return made, result


def _rank(rank, world, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    made, result = train(BATCH)
    nll = pyro_dgm.evaluate(made.model, load_digits("test"), batch_size=100, all_ranks=True)  # shares the batches
    torch.save({"weights": made.state_dict(), "losses": result.losses["model"], "nll": nll["nll"],
                "num_examples": nll["num_examples"]}, folder / f"rank{rank}.pt")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# %%
with tempfile.TemporaryDirectory() as tmp:
    # fork: the children share this process's imports; torchrun would start fresh interpreters instead
    torch.multiprocessing.start_processes(_rank, args=(2, _free_port(), Path(tmp)), nprocs=2, start_method="fork")
    two, rank1 = (torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in (0, 1))
one, one_result = train(2 * BATCH)
same = MADE(64, hidden=(200,))
same.load_state_dict(two["weights"])  # the 2-process weights, scored again in this one process
one_nll = pyro_dgm.evaluate(same.model, load_digits("test"), batch_size=100)["nll"]
print(f"test NLL: rank 0 {two['nll']:.6f}, rank 1 {rank1['nll']:.6f} (each of {two['num_examples']} test digits "
      f"scored once, by one rank), the same weights in 1 process {one_nll:.6f}")
gap = max(float((one.state_dict()[k] - two["weights"][k]).abs().max()) for k in two["weights"])
print(f"2 processes at batch {BATCH} vs 1 process at batch {2 * BATCH}, {STEPS} steps: "
      f"largest weight difference {gap:.2e}; final losses {two['losses'][-1]:.4f} and "
      f"{one_result.losses['model'][-1]:.4f} nats per image")
fig = plots.loss_curves({"2 processes x 50": two["losses"], "1 process x 100": one_result.losses["model"]},
                        path=OUT / "losses.png", smooth=1, ylabel="NLL (nats per example)",
                        title=f"MADE on digits: 2 gloo processes vs 1, same data order (weights differ by {gap:.0e})")
plt.close(fig)
print(f"figures in {OUT}")
