"""Examples per second of one ``pyro_dgm.fit`` call on 1 and on 2 CPU processes (gloo, 1 thread each).

The model (``--model``) is a convolutional VAE on 1x28x28 images (channels
32-64, latent 16, about 190k parameters: a step's compute, about 150 ms at
batch 64, outweighs the all-reduce of its gradients, 0.8 MB), or an MLP VAE
(784-400-20, about 650k parameters: tens of ms of compute against 2.6 MB,
where the per-step communication and waits show), at a batch of ``--batch``
examples per process. The processes are forked
(spawned for CUDA) with torchrun's environment variables set (RANK, WORLD_SIZE, MASTER_ADDR,
...), so fit joins a gloo group exactly as under
``torchrun --nproc_per_node 2``. 1 and 2 processes alternate in rounds, so
that load from elsewhere on the machine hits both alike; the table gives the
median examples/s of each and their ratio (target >= 1.7x). A third row runs
two independent single-process trainings at once, with no process group: the
most two processes can give on this machine (memory bandwidth, shared caches),
against which the 2-process row's communication cost can be read. The
"DDP" rows are the field's reference: a hand-written PyTorch loop of the same
networks (analytic KL, fused Adam) wrapped in torch's
``DistributedDataParallel``, which overlaps its bucketed all-reduces with
backward; their ratio is what torch itself scales by on this machine. The last
line times ``pyro_dgm.evaluate`` (IWAE) of ``--steps`` batches on 1 and 2
processes, whose ranks share the batches, with the NLL each gives (one number
for both). On a
shared machine (other jobs on the same cores) the figures are noisy and say
more about the load than about fit.

Launched by torchrun itself, each rank trains once and rank 0 prints its
examples/s (``--device cuda``: one GPU per rank, NCCL):

    python benchmarks/ddp_scaling.py [--model conv|mlp] [--rounds 3] [--steps 20] [--batch 64] [--device cpu]
    torchrun --nproc_per_node 2 benchmarks/ddp_scaling.py --device cuda --batch 1024
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import pyro_dgm
from fit_overhead import negative_elbo  # the same hand-written loss as fit_overhead's reference loop
from pyro_dgm.models import VAE, ConvVAE
from pyro_dgm.training.devices import keep_freed_cpu_memory

#: --model -> (builder, shape of one example, description)
MODELS = {
    "conv": (lambda: ConvVAE((1, 28, 28), latent_dim=16, channels=(32, 64)), (1, 28, 28),
             "conv VAE 1x28x28, channels 32-64, latent 16"),
    "mlp": (lambda: VAE(784, latent_dim=20, hidden=(400,)), (784,), "MLP VAE 784-400-20"),
}


EVAL_PARTICLES = 8  # importance samples of the evaluate rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_and_data(model, rows):
    """One thread, seed 0: the ``--model`` VAE and ``rows`` random binary examples of its shape."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    build, shape, _ = MODELS[model]
    x = torch.bernoulli(torch.full((rows, *shape), 0.3))
    return build(), x


def train(model, world, steps, batch, device) -> float:
    """Train under the process group of the environment; examples/s of all ranks together."""
    vae, x = _model_and_data(model, batch * world * (steps + 3))
    stamps = []
    sync = torch.cuda.synchronize if device != "cpu" and torch.cuda.is_available() else (lambda: None)

    def stamp(state):
        sync()
        stamps.append(time.perf_counter())

    stamp.stops_mid_epoch = False  # a timer never stops fit: the ranks need not agree after each step
    pyro_dgm.fit(vae.model, vae.guide, x, steps=steps + 3, batch_size=batch, seed=0, progress=False, device=device,
                 callbacks=[stamp])
    return world * batch * (len(stamps) - 3) / (stamps[-1] - stamps[2])  # after 3 warm-up steps


def score(model, world, steps, batch, device) -> tuple[float, float]:
    """``pyro_dgm.evaluate`` (IWAE, K = ``EVAL_PARTICLES``) of ``steps`` batches of ``batch`` examples, every
    rank calling it, so that the ranks share the batches: ``(examples/s, NLL)``."""
    vae, x = _model_and_data(model, batch * steps)
    vae = vae.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device != "cpu" else "cpu")
    pyro_dgm.evaluate(vae.model, x[:batch * world], vae.guide, num_particles=2, batch_size=batch,
                      all_ranks=True)  # joins the group
    t0 = time.perf_counter()
    nll = pyro_dgm.evaluate(vae.model, x, vae.guide, num_particles=EVAL_PARTICLES, batch_size=batch, seed=0,
                            all_ranks=True)["nll"]
    return x.shape[0] / (time.perf_counter() - t0), nll


class NegativeELBO(torch.nn.Module):
    """The VAE's loss written by hand (what DDP wraps): one forward gives the summed negative ELBO."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        return negative_elbo(self.vae, x)


def train_ddp(model, world, steps, batch, device) -> float:
    """The same training as :func:`train` by hand, under torch's DDP when ``world`` > 1; examples/s."""
    torch.set_num_threads(1)
    if device == "cpu":
        keep_freed_cpu_memory()  # the malloc fit sets up on the CPU: the two loops differ in nothing else
    torch.manual_seed(0)
    dev = torch.device(f"cuda:{dist.get_rank() if world > 1 else 0}" if device != "cpu" else "cpu")
    build, shape, _ = MODELS[model]
    x = torch.bernoulli(torch.full((batch * (steps + 3), *shape), 0.3)).to(dev)
    loss = NegativeELBO(build()).to(dev)
    if world > 1:
        loss = DistributedDataParallel(loss)
    opt = torch.optim.Adam(loss.parameters(), lr=1e-3, fused=True)
    stamps = []
    for i in range(steps + 3):
        opt.zero_grad(set_to_none=True)
        value = loss(x[i * batch:(i + 1) * batch])
        value.backward()
        opt.step()
        value.item()  # one host synchronisation per step, as fit's
        stamps.append(time.perf_counter())
    return world * batch * (len(stamps) - 3) / (stamps[-1] - stamps[2])


def _rank(rank, model, world, port, steps, batch, device, out, by_hand=False, scoring=False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    if scoring:
        rate, nll = score(model, world, steps, batch, device)
        (out / f"nll{rank}.txt").write_text(repr(nll))
    elif by_hand:
        if world > 1:
            dist.init_process_group("nccl" if device != "cpu" else "gloo")
        rate = train_ddp(model, world, steps, batch, device)
        if world > 1:
            dist.destroy_process_group()
    else:
        rate = train(model, world, steps, batch, device)
    if rank == 0:
        (out / f"world{world}.txt").write_text(str(rate))


def _alone(rank, model, steps, batch, device, out):
    """One of two trainings that run at once, each a single process with no process group."""
    (out / f"alone{rank}.txt").write_text(str(train(model, 1, steps, batch, device)))


def examples_per_second(model, world, steps, batch, device, independent=False, by_hand=False,
                        scoring=False) -> float | tuple[float, list]:
    """examples/s of ``world`` ranks of one fit (``by_hand``: of the DDP loop); ``independent``: the sum of
    two fits running side by side; ``scoring``: ``(examples/s, each rank's NLL)`` of evaluate instead."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # fork on the CPU (no second import of torch); CUDA cannot be used in a forked child
        how = "fork" if device == "cpu" else "spawn"
        if independent:
            torch.multiprocessing.start_processes(_alone, args=(model, steps, batch, device, out), nprocs=2,
                                                  start_method=how)
            return sum(float((out / f"alone{r}.txt").read_text()) for r in range(2))
        torch.multiprocessing.start_processes(_rank, args=(model, world, _free_port(), steps, batch, device, out,
                                                           by_hand, scoring), nprocs=world, start_method=how)
        rate = float((out / f"world{world}.txt").read_text())
        if scoring:
            return rate, [float((out / f"nll{r}.txt").read_text()) for r in range(world)]
        return rate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--model", choices=sorted(MODELS), default="conv")
    p.add_argument("--batch", type=int, default=64, help="examples per process and step")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (a GPU per process)")
    args = p.parse_args(argv)
    if "RANK" in os.environ:  # launched by torchrun
        world = int(os.environ["WORLD_SIZE"])
        rate = train(args.model, world, args.steps, args.batch, args.device)
        if os.environ["RANK"] == "0":
            print(f"torchrun, {world} process(es) on {args.device}: {MODELS[args.model][2]}, batch {args.batch} per "
                  f"process, {args.steps} steps: {rate:.0f} examples/s")
        return
    rates = {1: [], 2: [], "2 alone": [], "DDP 1": [], "DDP 2": []}
    for _ in range(args.rounds):
        for row in rates:
            world = 1 if row in (1, "DDP 1") else 2
            rates[row].append(examples_per_second(args.model, world, args.steps, args.batch, args.device,
                                                  independent=row == "2 alone", by_hand=str(row).startswith("DDP")))
    backend = "NCCL" if args.device != "cpu" and torch.cuda.is_available() else "gloo"
    print(f"{MODELS[args.model][2]}, batch {args.batch} per process, {backend} on {args.device}, 1 thread per process, "
          f"torch {torch.__version__}, {os.cpu_count()} CPU(s), {args.rounds} interleaved rounds x {args.steps} steps")
    print(f"{'processes':>9s} {'median examples/s':>18s} {'all rounds':>30s}  ('2 alone': two 1-process fits at once; "
          "'DDP': the loop by hand under torch's DDP)")
    for world, r in rates.items():
        print(f"{world!s:>9s} {statistics.median(r):18.0f} {' '.join(f'{v:.0f}' for v in r):>30s}")
    one = statistics.median(rates[1])
    ratio, ceiling = statistics.median(rates[2]) / one, statistics.median(rates["2 alone"]) / one
    print(f"2 processes / 1 process: {ratio:.2f}x (target >= 1.7x; noisy where other jobs share the cores)")
    print(f"2 independent processes / 1 process: {ceiling:.2f}x, the machine's ceiling for 2; "
          f"fit's 2 ranks reach {ratio / ceiling:.0%} of it")
    ddp = statistics.median(rates["DDP 2"]) / statistics.median(rates["DDP 1"])
    print(f"torch DDP, 2 processes / 1 process: {ddp:.2f}x; fit's 2 ranks / DDP's 2 ranks: "
          f"{statistics.median(rates[2]) / statistics.median(rates['DDP 2']):.2f}")
    print(_scoring_row(args))


def _scoring_row(args) -> str:
    """evaluate on 1 and 2 processes, alternating: the ranks share the batches and must agree with one process."""
    rates, nlls = {1: [], 2: []}, {1: set(), 2: set()}
    for _ in range(args.rounds):
        for world in rates:
            rate, nll = examples_per_second(args.model, world, args.steps, args.batch, args.device, scoring=True)
            rates[world].append(rate)
            nlls[world].update(nll)
    one, two = (statistics.median(rates[w]) for w in (1, 2))
    return (f"evaluate (IWAE, K={EVAL_PARTICLES}, {args.steps} batches of {args.batch}): {one:.0f} examples/s on 1 "
            f"process, {two:.0f} on 2 ({two / one:.2f}x); NLL {sorted(nlls[1])} on 1, {sorted(nlls[2])} on both "
            "ranks of 2")


if __name__ == "__main__":
    main()
