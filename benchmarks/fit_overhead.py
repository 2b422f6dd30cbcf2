"""ms per training step of one MLP VAE (784-400-20, batch 128, Adam) trained four ways:

* a hand-written PyTorch loop (analytic KL, BCE-with-logits), once with
  torch's default Adam and once with the fused Adam that ``fit`` picks, and
  the fused one again with its loss through Pyro's distributions (the
  Bernoulli's ``log_prob`` and ``kl_divergence``, as the Pyro program
  computes it: what is left of fit's ratio to that loop is Pyro's and fit's),
* ``pyro_dgm.fit`` (the same model as a Pyro program, TraceMeanField_ELBO),
  and the objective fit builds called by hand (zero_grad, loss, backward,
  step: what is left of fit's time is its own loop's),
  eager and with ``compile=True`` (the encoder and decoder through
  ``torch.compile``'s default inductor backend; one model reused across
  rounds, so it compiles once, in the first round's dropped warm-up steps),
* Pyro's ``SVI`` with ``Trace_ELBO`` and with ``JitTrace_ELBO``;

and, after the table, the cost of fit's per-step check that the gradient is
finite (inside fit's step; shown as a share of it).

The contenders are interleaved in rounds so that machine load hits them
alike; the table gives the median ms/step of each and its ratio to the
hand-written loop. Data: random binary 784-vectors (speed does not depend on
the pixels).

    python benchmarks/fit_overhead.py [--rounds 5] [--steps 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import pyro
import pyro.distributions as dist
import pyro.optim
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from torch.distributions import kl_divergence
from torch.nn import functional as F

import pyro_dgm
from pyro_dgm.models import VAE
from pyro_dgm.training.devices import keep_freed_cpu_memory

D, H, Z, B = 784, 400, 20, 128


def make_vae(seed=0):
    torch.manual_seed(seed)
    return VAE(D, latent_dim=Z, hidden=(H,))


def negative_elbo(vae, x):
    """The VAE's summed negative ELBO written by hand: analytic KL, BCE with logits, one reparametrized z."""
    loc, scale = vae.encoder(x)
    logits = vae.decoder(loc + scale * torch.randn_like(loc))
    rec = F.binary_cross_entropy_with_logits(logits, x.reshape(logits.shape), reduction="sum")  # conv: flat logits
    return rec + 0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum()


def negative_elbo_pyro(vae, x):
    """The same loss through Pyro's distributions, as the VAE's program builds it: Bernoulli(logits).log_prob
    (binary cross-entropy per pixel, then summed per image) and kl_divergence of the Normals."""
    loc, scale = vae.encoder(x)
    logits = vae.decoder(loc + scale * torch.randn_like(loc))
    rec = dist.Bernoulli(logits=logits, validate_args=False).to_event(1).log_prob(x.reshape(logits.shape)).sum()
    q = dist.Normal(loc, scale, validate_args=False).to_event(1)
    prior = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc), validate_args=False).to_event(1)
    return kl_divergence(q, prior).sum() - rec


def hand_loop(x, steps, loss=negative_elbo, **adam):
    vae = make_vae()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, **adam)
    times = []
    n = x.shape[0]
    for i in range(steps):
        t0 = time.perf_counter()
        xb = x[(i * B) % n:(i * B) % n + B]
        value = loss(vae, xb) / xb.shape[0]
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def fit_loop(x, steps, vae=None, compile=False):
    vae = vae or make_vae()
    stamps = []
    pyro_dgm.fit(vae.model, vae.guide, x, steps=steps + 1, batch_size=B, shuffle=False, lr=1e-3,
                 callbacks=[lambda s: stamps.append(time.perf_counter())], progress=False, compile=compile)
    return [b - a for a, b in zip(stamps[:-1], stamps[1:])]


def objective_loop(x, steps):
    """fit's objective called by hand: what fit's own loop (batching, checks, bookkeeping) adds is the rest."""
    from pyro_dgm.programs import fit_owns_parameters
    from pyro_dgm.runtime import validation

    vae = make_vae()
    r = pyro_dgm.fit(vae.model, vae.guide, x, steps=1, batch_size=B, shuffle=False, lr=1e-3, progress=False)
    objective, opt = r.objective, r.optimizers["model"]
    vae.train()
    n, times = x.shape[0], []
    with validation(False), fit_owns_parameters():
        for i in range(steps):
            t0 = time.perf_counter()
            xb = x[(i * B) % n:(i * B) % n + B]
            opt.zero_grad(set_to_none=True)
            objective.loss("model", xb).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    return times


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def svi_loop(x, steps, jit):
    pyro.clear_param_store()
    vae = make_vae()

    def model(xb):
        pyro.module("vae", vae)
        return vae.model(xb)

    def guide(xb):
        pyro.module("vae", vae)
        return vae.guide(xb)

    elbo = (JitTrace_ELBO if jit else Trace_ELBO)()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo)
    n, times = x.shape[0], []
    for i in range(steps + (3 if jit else 0)):
        xb = x[(i * B) % n:(i * B) % n + B]
        t0 = time.perf_counter()
        svi.step(xb)
        times.append(time.perf_counter() - t0)
    return times[3:] if jit else times


def finite_check_ms(x, repeats=200):
    """ms of fit's per-step check that the gradient is finite (its norm over every tensor, one sync)."""
    from pyro_dgm.safety import total_norm

    vae = make_vae()
    loc, scale = vae.encoder(x[:B])
    logits = vae.decoder(loc + scale * torch.randn_like(loc))
    F.binary_cross_entropy_with_logits(logits, x[:B], reduction="sum").backward()
    grads = [p.grad for p in vae.parameters()]
    t0 = time.perf_counter()
    for _ in range(repeats):
        bool(torch.isfinite(total_norm(grads)))
    return (time.perf_counter() - t0) / repeats * 1e3


def batch_check_ms(x, repeats=200):
    """ms of the checks fit runs on each batch of a DataLoader (finite values, the Bernoulli's support)."""
    from pyro_dgm.training.batching import Batches
    from pyro_dgm.programs import trace_program

    vae = make_vae()
    batches = Batches(torch.utils.data.DataLoader(x, batch_size=B), B, False, False, 0, torch.device("cpu"))
    batches.watch(trace_program(vae.model, x[:B]).nodes["x"])
    t0 = time.perf_counter()
    for _ in range(repeats):
        batches._ready(x[:B])
    return (time.perf_counter() - t0) / repeats * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    keep_freed_cpu_memory()  # what fit sets up on the CPU, for every contender alike from the first round
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((B * 16, D), 0.3))
    compiled_vae = make_vae()
    contenders = {
        "hand-written loop": lambda: hand_loop(x, args.steps),
        "hand-written, fused Adam": lambda: hand_loop(x, args.steps, fused=True),
        "hand, fused, Pyro's dists": lambda: hand_loop(x, args.steps, negative_elbo_pyro, fused=True),
        "pyro_dgm.fit": lambda: fit_loop(x, args.steps),
        "fit's objective by hand": lambda: objective_loop(x, args.steps),
        "pyro_dgm.fit, compile=True": lambda: fit_loop(x, args.steps, compiled_vae, compile=True),
        "Pyro SVI Trace_ELBO": lambda: svi_loop(x, args.steps, jit=False),
        "Pyro SVI JitTrace_ELBO": lambda: svi_loop(x, args.steps, jit=True),
    }
    times = {k: [] for k in contenders}
    warm = None
    for _ in range(args.rounds):
        for name, run in contenders.items():
            times[name] += run()[2:]  # drop warm-up steps
        warm = graphs_compiled() if warm is None else warm  # after round 1: compiled once
    base = statistics.median(times["hand-written loop"])
    print(f"MLP VAE {D}-{H}-{Z}, batch {B}, Adam, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds x {args.steps} steps")
    same = statistics.median(times["hand-written, fused Adam"])
    print(f"{'contender':27s} {'median ms/step':>15s} {'IQR ms':>14s} {'x hand-written':>15s} {'x hand, fused':>14s}")
    for name, ts in times.items():
        q = statistics.quantiles([t * 1e3 for t in ts], n=4)
        med = statistics.median(ts)
        print(f"{name:27s} {med * 1e3:15.3f} {q[0]:6.2f}-{q[2]:6.2f} {med / base:15.3f} {med / same:14.3f}")
    fit_eager, fit_compiled = (statistics.median(times[k]) for k in ("pyro_dgm.fit", "pyro_dgm.fit, compile=True"))
    print(f"fit / hand-written with fused Adam: {fit_eager / same:.3f} (target <= 1.05); fit compile=True / "
          f"hand-written eager: {fit_compiled / base:.3f} (target < 1); graphs compiled after the first round: "
          f"{graphs_compiled() - warm} (recompilations after warm-up; {warm} in it)")
    dists = statistics.median(times["hand, fused, Pyro's dists"])
    print(f"fit / the hand loop whose loss uses Pyro's distributions (Bernoulli log_prob, kl_divergence): "
          f"{fit_eager / dists:.3f}; those distributions / BCE-with-logits: {dists / same:.3f}")
    check = finite_check_ms(x)
    fit_ms = statistics.median(times["pyro_dgm.fit"]) * 1e3
    print(f"fit's finite-gradient check: {check:.3f} ms/step, {100 * check / fit_ms:.2f}% of fit's step")
    per_batch = batch_check_ms(x)
    print(f"checks of each DataLoader batch (finite, support): {per_batch:.3f} ms/batch, "
          f"{100 * per_batch / fit_ms:.2f}% of fit's step (tensor data: one pass at setup instead)")


if __name__ == "__main__":
    main()
