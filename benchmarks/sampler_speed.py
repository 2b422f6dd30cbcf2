"""Langevin steps per second: pyro_dgm's ``langevin`` vs a plain PyTorch loop vs torchebm.

    python benchmarks/sampler_speed.py [--chains 1024] [--steps 100] [--repeats 7] [--threads 1]

The energy is a 2-D MLP 2-128-128-1 (SiLU), the same weights for every
contender; each runs ``--steps`` Langevin steps on ``--chains`` chains. The
contenders are interleaved (round-robin, ``--repeats`` rounds) and the median
time of each is reported, with its ratio to pyro_dgm (timings on a shared
machine are noisy: medians of interleaved runs are what to compare).
Target: pyro_dgm >= 1.0x torchebm and >= 0.9x the plain loop.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from pyro_dgm.samplers import langevin


def make_energy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 1))


def run_pyro_dgm(net, x0, steps, step_size):
    return langevin(x0, log_prob=lambda x: -net(x).squeeze(-1), step_size=step_size, num_steps=steps)


def run_plain(net, x0, steps, step_size):
    """The loop everyone writes: x <- x - (eps/2) grad E(x) + sqrt(eps) noise."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        g = torch.autograd.grad(net(x).sum(), x)[0]
        with torch.no_grad():
            x = x - 0.5 * step_size * g + math.sqrt(step_size) * torch.randn_like(x)
    return x


def make_torchebm(net, step_size):
    from torchebm.core import BaseModel
    from torchebm.samplers import LangevinDynamics

    class Energy(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x).squeeze(-1)

    # torchebm's update is x - eta grad U + sqrt(2 eta) noise: eta = eps / 2 is the same chain
    sampler = LangevinDynamics(Energy(), step_size=step_size / 2, noise_scale=1.0)

    def run(net_, x0, steps, step_size_):
        return sampler.sample(x=x0.clone(), n_steps=steps)

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", type=int, default=1024)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--step-size", type=float, default=1e-2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = make_energy()  # parameters keep requires_grad, as inside EBM training
    x0 = torch.randn(args.chains, 2)
    contenders = {"pyro_dgm.langevin": run_pyro_dgm, "plain torch loop": run_plain}
    try:
        contenders["torchebm LangevinDynamics"] = make_torchebm(net, args.step_size)
    except ImportError as err:
        print(f"(torchebm not installed: {err}; pip install 'pyro-dgm[bench]')")
    times = {name: [] for name in contenders}
    for name, fn in contenders.items():  # warm-up
        fn(net, x0, 5, args.step_size)
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn(net, x0, args.steps, args.step_size)
            times[name].append(time.perf_counter() - t0)
    ours = statistics.median(times["pyro_dgm.langevin"])
    print(f"Langevin, MLP 2-128-128-1, {args.chains} chains x {args.steps} steps, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved runs")
    print(f"{'sampler':<28}{'median s':>10}{'steps/s':>10}{'pyro_dgm speed-up vs it':>25}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<28}{med:>10.4f}{args.steps / med:>10.1f}{med / ours:>24.2f}x")


if __name__ == "__main__":
    main()
