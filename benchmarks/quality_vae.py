"""VAE vs the factorized Bernoulli baseline on binarized digits (or MNIST files).

Test NLL in nats per example and bits/dim: the baseline's exact NLL, the
VAE's negative ELBO (K = 1) and its importance-weighted bound with K = 10,
100 and 1,000 samples from the guide. Then the VAE trained until its
validation IWAE bound (K = 100, ``EarlyStopping(monitor="nll")``) stops
improving, for each latent size in ``EARLY["latent_dims"]``; the one with the
best validation bound (K = 1,000) is the one to quote, chosen without the test
split. Settings are fixed below so the numbers reproduce with
``python benchmarks/quality.py --family vae``.
"""

from __future__ import annotations

import time

import pyro
import torch

import pyro_dgm
from pyro_dgm.callbacks import EarlyStopping
from pyro_dgm.models import VAE, FactorizedBernoulli
from pyro_dgm.registry import get_data

SETTINGS = {"latent_dim": 8, "hidden": (256,), "epochs": 150, "batch_size": 64, "lr": 1e-3}
BASELINE = {"epochs": 50, "lr": 5e-2, "batch_size": 128}
PARTICLES = (1, 10, 100, 1000)
EARLY = {"latent_dims": (8, 16), "patience": 30, "max_epochs": 800, "num_particles": 100}


def _data(args, split="test"):
    spec = get_data(args.data)
    return (spec.load("train", args.seed, args.data_dir), spec.load(split, args.seed, args.data_dir))


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
    run_early_stopping(args, x, xt)


def run_early_stopping(args, x, xt):
    _, xv = _data(args, "val")
    scale = getattr(args, "epochs_scale", 1.0)
    print(f"\nVAE {x.shape[1]}-{SETTINGS['hidden'][0]}-z, trained until the validation IWAE bound "
          f"(K={EARLY['num_particles']}) has not improved for {EARLY['patience']} epochs (best weights kept)")
    print(f"{'latent':>6s} {'epochs':>7s} {'best':>5s} {'val K=1000':>11s} {'test K=1000':>12s} {'± s.e.':>7s} "
          f"{'train s':>8s}")
    results = []
    for latent in EARLY["latent_dims"]:
        pyro.set_rng_seed(args.seed)
        vae = VAE(x.shape[1], latent_dim=latent, hidden=SETTINGS["hidden"])
        stop = EarlyStopping(xv, patience=EARLY["patience"], monitor="nll", num_particles=EARLY["num_particles"])
        t0 = time.perf_counter()
        r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=max(1, int(EARLY["max_epochs"] * scale)),
                         batch_size=SETTINGS["batch_size"], lr=SETTINGS["lr"], callbacks=[stop], progress=False)
        seconds = time.perf_counter() - t0
        val = pyro_dgm.evaluate(vae.model, xv, guide=vae.guide, num_particles=1000, seed=args.seed)
        test = pyro_dgm.evaluate(vae.model, xt, guide=vae.guide, num_particles=1000, seed=args.seed)
        results.append((val["nll"], latent))
        print(f"{latent:6d} {r.epochs:7d} {stop.history.index(stop.best) + 1:5d} {val['nll']:11.3f} "
              f"{test['nll']:12.3f} {test['nll_stderr']:7.3f} {seconds:8.1f}")
    print(f"chosen on validation: latent {min(results)[1]}")
