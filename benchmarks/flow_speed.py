"""Milliseconds per training step of a MAF: pyro_dgm vs zuko vs nflows.

    python benchmarks/flow_speed.py [--rounds 15] [--steps 5] [--threads 1]

One step is log_prob + backward + Adam on a batch of 256 64-dim vectors, for
a 5-layer masked autoregressive flow with MADE hidden layers [256, 256] in
every library. pyro_dgm runs the code path ``fit`` runs: the Pyro program
traced by ``MaximumLikelihood.loss`` with validation off, one foreach Adam.
The contenders are interleaved (each round times every library in turn) and
the medians over rounds are reported, so load on a shared machine hits all of
them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DIM, BATCH, LAYERS, HIDDEN = 64, 256, 5, [256, 256]


def pyro_dgm_step():
    from pyro_dgm.runtime import validation as _validation
    from pyro_dgm.inference import MaximumLikelihood
    from pyro_dgm.models.flows import MAF

    flow = MAF(DIM, num_layers=LAYERS, hidden=HIDDEN)
    objective = MaximumLikelihood()
    with _validation(True), torch.no_grad():
        objective.setup(flow.model, None, torch.randn(BATCH, DIM))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4, foreach=True)

    def step(x):
        with _validation(False):
            opt.zero_grad(set_to_none=True)
            objective.loss("model", x).backward()
            opt.step()
    return step


def zuko_step():
    import zuko

    flow = zuko.flows.MAF(DIM, transforms=LAYERS, hidden_features=HIDDEN)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4, foreach=True)

    def step(x):
        opt.zero_grad(set_to_none=True)
        (-flow().log_prob(x).mean()).backward()
        opt.step()
    return step


def nflows_step():
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform, MaskedAffineAutoregressiveTransform, ReversePermutation

    layers = []
    for _ in range(LAYERS):  # MADE D -> 256 -> 256 -> 2D: one hidden block after the first layer
        layers += [MaskedAffineAutoregressiveTransform(DIM, HIDDEN[0], num_blocks=len(HIDDEN) - 1,
                                                       use_residual_blocks=False),
                   ReversePermutation(DIM)]
    flow = Flow(CompositeTransform(layers[:-1]), StandardNormal([DIM]))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4, foreach=True)

    def step(x):
        opt.zero_grad(set_to_none=True)
        (-flow.log_prob(x).mean()).backward()
        opt.step()
    return step


CONTENDERS = {"pyro_dgm": pyro_dgm_step, "zuko": zuko_step, "nflows": nflows_step}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = {}
    for name, make in CONTENDERS.items():
        try:
            steps[name] = make()
        except ImportError as err:
            print(f"{name}: not installed ({err}); pip install 'pyro-dgm[bench]'")
    batches = [torch.randn(BATCH, DIM) for _ in range(args.steps)]
    for step in steps.values():  # warm-up
        for x in batches:
            step(x)
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for x in batches:
                step(x)
            times[name].append(1e3 * (time.perf_counter() - t0) / args.steps)
    print(f"MAF, {LAYERS} layers, MADE hidden {HIDDEN}, dim {DIM}, batch {BATCH}; log_prob + backward + Adam; "
          f"{args.threads} thread(s), median of {args.rounds} interleaved rounds x {args.steps} steps")
    print(f"{'library':<10} {'ms/step':>9} {'IQR':>15} {'vs zuko':>8}")
    ref = statistics.median(times["zuko"]) if "zuko" in times else None
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        ratio = f"{statistics.median(ts) / ref:.2f}x" if ref else "-"
        print(f"{name:<10} {statistics.median(ts):9.2f} {q[0]:7.2f}-{q[2]:<7.2f} {ratio:>8}")


if __name__ == "__main__":
    main()
