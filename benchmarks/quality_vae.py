"""VAE vs the factorized Bernoulli baseline on binarized digits (or MNIST files).

Test NLL in nats per example and bits/dim: the baseline's exact NLL, the
VAE's negative ELBO (K = 1) and its importance-weighted bound with K = 10,
100 and 1,000 samples from the guide. Settings are fixed below so the
numbers reproduce with ``python benchmarks/quality.py --family vae``.
"""

from __future__ import annotations

import time

import torch

import pyro_dgm
from pyro_dgm.models import VAE, FactorizedBernoulli
from pyro_dgm.registry import get_data

SETTINGS = {"latent_dim": 8, "hidden": (256,), "epochs": 150, "batch_size": 64, "lr": 1e-3}
BASELINE = {"epochs": 50, "lr": 5e-2, "batch_size": 128}
PARTICLES = (1, 10, 100, 1000)


def _data(args):
    spec = get_data(args.data)
    return (spec.load("train", args.seed, args.data_dir), spec.load("test", args.seed, args.data_dir))


def run(args):
    x, xt = _data(args)
    d = x.shape[1]
    scale = getattr(args, "epochs_scale", 1.0)
    rows = []

    torch.manual_seed(args.seed)
    base = FactorizedBernoulli(d)
    t0 = time.perf_counter()
    pyro_dgm.fit(base.model, None, x, epochs=max(1, int(BASELINE["epochs"] * scale)), lr=BASELINE["lr"],
                 batch_size=BASELINE["batch_size"], seed=args.seed, progress=False)
    rows.append(("factorized Bernoulli", "exact", pyro_dgm.evaluate(base.model, xt), time.perf_counter() - t0))

    torch.manual_seed(args.seed)
    vae = VAE(d, latent_dim=SETTINGS["latent_dim"], hidden=SETTINGS["hidden"])
    t0 = time.perf_counter()
    pyro_dgm.fit(vae.model, vae.guide, x, epochs=max(1, int(SETTINGS["epochs"] * scale)),
                 batch_size=SETTINGS["batch_size"], lr=SETTINGS["lr"], seed=args.seed, progress=False)
    seconds = time.perf_counter() - t0
    for k in PARTICLES:
        label = "ELBO (K=1)" if k == 1 else f"IWAE K={k}"
        rows.append((f"VAE {d}-{SETTINGS['hidden'][0]}-{SETTINGS['latent_dim']}", label,
                     pyro_dgm.evaluate(vae.model, xt, guide=vae.guide, num_particles=k, seed=args.seed), seconds))

    print(f"data: {args.data} ({x.shape[0]} train / {xt.shape[0]} test, {d} dims); VAE settings {SETTINGS}")
    print(f"{'model':22s} {'bound':12s} {'NLL nats':>9s} {'± s.e.':>7s} {'bits/dim':>9s} {'train s':>8s}")
    for name, bound, res, sec in rows:
        print(f"{name:22s} {bound:12s} {res['nll']:9.3f} {res['nll_stderr']:7.3f} {res['bits_per_dim']:9.4f} {sec:8.1f}")
