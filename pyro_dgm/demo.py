"""``pyro-dgm demo``: the tour in one command (a few minutes on a laptop CPU).

Trains, on scikit-learn's digits, a factorized Bernoulli baseline and a VAE
(scored by the ELBO and the IWAE bound, K = 1000), and a density model on the
2-D "moons" toy; writes figures, a metrics table and checkpoints under ``out``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from . import plots, registry
from .data import load_digits, load_digits_labels, toy_2d
from .evaluation import evaluate
from .fit import fit
from .models import VAE, FactorizedBernoulli

#: Density models tried for the 2-D toy, best first (the flows register these).
TOY_MODELS = ("realnvp", "maf", "nice")


def _row(name, data, res, seconds, note=""):
    return {"model": name, "data": data, "test NLL (nats)": f"{res['nll']:.2f}",
            "± s.e.": f"{res['nll_stderr']:.2f}", "bits/dim": f"{res['bits_per_dim']:.4f}",
            "train s": f"{seconds:.1f}", "note": note}


def _stage(text):
    """One line per stage: the demo runs for minutes, often without a terminal for a progress bar."""
    print(f"demo: {text}", flush=True)


def _timed_fit(*args, **kwargs):
    t0 = time.perf_counter()
    result = fit(*args, **kwargs)
    return result, time.perf_counter() - t0


def _digits_part(out, device, seed, quick, rows):
    x, xt = load_digits("train"), load_digits("test")
    epochs = 3 if quick else 150
    base = FactorizedBernoulli(64)
    _stage(f"training a factorized Bernoulli baseline on digits ({max(1, epochs // 3)} epochs)")
    _, sec = _timed_fit(base.model, None, x, epochs=max(1, epochs // 3), lr=5e-2, seed=seed, device=device,
                        checkpoint=out / "checkpoints" / "bernoulli.pt", progress=None)
    rows.append(_row("factorized Bernoulli", "digits (binary)", evaluate(base.model, xt), sec))

    vae = VAE(64, latent_dim=8, hidden=(256,))
    _stage(f"training a VAE on digits ({epochs} epochs)")
    result, sec = _timed_fit(vae.model, vae.guide, x, epochs=epochs, batch_size=64, lr=1e-3, seed=seed,
                             device=device, checkpoint=out / "checkpoints" / "vae.pt", progress=None)
    vae.to("cpu")
    k = 50 if quick else 1000
    _stage(f"scoring the VAE on the test digits (ELBO, IWAE K={k})")
    rows.append(_row("VAE (ELBO)", "digits (binary)", evaluate(vae.model, xt, guide=vae.guide, num_particles=1, seed=seed), sec, "K=1"))
    rows.append(_row("VAE (IWAE)", "digits (binary)", evaluate(vae.model, xt, guide=vae.guide, num_particles=k, seed=seed), sec, f"K={k}"))

    _stage(f"writing the VAE figures to {out}")
    figs = [
        plots.sample_grid(vae.sample(100, mean=True), nrow=10, path=out / "vae_samples.png",
                          title=f"VAE samples E[x|z], binarized digits; test NLL {rows[-1]['test NLL (nats)']} nats "
                                f"(IWAE, K={k})"),
        plots.reconstructions(xt[:10], vae.reconstruct(xt[:10]), path=out / "vae_reconstructions.png",
                              title="VAE: test digits (top) and reconstructions E[x|z], z the encoder's mean"),
        plots.latent_scatter(plots.pca_2d(vae.encode(xt)), load_digits_labels("test"), path=out / "vae_latent.png",
                             title="VAE latent means of test digits (PCA of 8 dims)",
                             axis_names=("PC 1", "PC 2")),
        plots.loss_curves(result, path=out / "vae_loss.png", title="VAE on binarized digits: training loss"),
    ]
    for f in figs:
        plt.close(f)


def _toy_part(out, device, seed, quick, rows):
    registry._load_all()
    name = next((m for m in TOY_MODELS if m in registry.MODELS), None)
    x, xt = toy_2d("moons", 4000, seed=seed), toy_2d("moons", 2000, seed=seed + 1)
    if name is None:
        name, module = "vae", VAE(2, latent_dim=2, hidden=(64, 64), likelihood="gaussian")
        kwargs = {"epochs": 2 if quick else 200, "batch_size": 256}
    else:
        spec = registry.MODELS[name]
        module = spec.build((2,), "points")
        kwargs = {k: v for k, v in spec.fit_defaults.items() if k != "image"}
        if quick:
            kwargs.update(epochs=2, steps=None)
    _stage(f"training {name} on the 2-D moons")
    _, sec = _timed_fit(module.model, getattr(module, "guide", None), x, seed=seed, device=device,
                        checkpoint=out / "checkpoints" / f"moons-{name}.pt", progress=None, **kwargs)
    module.to("cpu")
    guide = getattr(module, "guide", None)
    res = evaluate(module.model, xt, guide=guide, num_particles=100 if guide else 1, seed=seed)
    rows.append(_row(name, "moons (2-D)", res, sec, "IWAE K=100" if guide else "exact"))
    if guide is None:
        from pyro import poutine

        def log_prob(pts):
            trace = poutine.trace(module.model).get_trace(pts)
            return trace.nodes["x"]["fn"].log_prob(pts)

        plt.close(plots.density_2d(log_prob, data=xt[:1000], path=out / "moons_density.png",
                                   title=f"{name} on moons (test points in cyan): NLL {res['nll']:.2f} nats"))


def run_demo(out: Path, device="cpu", seed: int = 0, quick: bool = False) -> list[dict]:
    """Run the demo and return the metrics rows (also written to ``out/metrics.csv``)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rows: list[dict] = []
    _digits_part(out, device, seed, quick, rows)
    _toy_part(out, device, seed, quick, rows)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = _markdown(rows)
    (out / "metrics.md").write_text(table + "\n")
    print(table)
    print(f"\nfigures, metrics.csv and checkpoints/ are in {out.resolve()}")
    return rows


def _markdown(rows):
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
