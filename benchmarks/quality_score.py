"""Score-based models: samplers on the 2-D toys, samples and probability-flow bits/dim on digits.

    python benchmarks/quality.py --family score

1. 2-D toys ("8gaussians", "25gaussians"): one NCSN (ScoreMLP, denoising
   score matching over a 10-level geometric ladder, sigma_1 = the largest
   distance between two training points) sampled three ways with the same
   start N(0, sigma_1^2 I) and about the same number of score evaluations:
   plain Langevin with the score at sigma_L, annealed Langevin over the ladder
   (Song and Ermon, 2019) and predictor-corrector sampling of the VE SDE that
   spans the ladder (Song et al., 2021; the network interpolates between its
   levels). Columns: MMD^2 to held-out data (``pyro_dgm.metrics.mmd2``), modes
   covered and high-quality fraction (``mode_coverage``), and the total
   variation between the modes' sample shares and their true equal weights
   (the notes' "wrong weights between modes").
2. Continuous digits (dequantized to [0, 1)^64; for training afresh at every epoch): a ScoreUNet trained with
   continuous-time denoising score matching for the VE SDE; samples by
   annealed Langevin and predictor-corrector, scored by the digits-classifier
   Frechet distance, precision and recall (``pyro_dgm.metrics.digits_quality``);
   and the test NLL by the probability-flow ODE (Hutchinson trace, RK4).

Scales of bits/dim: "continuous" is the density on [0, 1)^64 itself,
NLL / (64 log 2) (negative when the density exceeds 1); "discrete" is the
17-level pixel space the digits come from, (NLL + 64 log 17) / (64 log 2),
the number to put beside the flows' and autoregressive models' tables.
"""

from __future__ import annotations

import math
import time

import torch

import pyro_dgm
from pyro_dgm.data import DIGITS_LEVELS, DynamicDequantized, load_digits, mode_centers
from pyro_dgm.inference.score_based import (AnnealedLangevin, DenoisingScoreMatching, Langevin, PredictorCorrector,
                                            SDEScoreMatching, VESDE, geometric_sigmas, max_pairwise_distance,
                                            probability_flow_nll)
from pyro_dgm.metrics import digits_quality, mmd2, mode_coverage
from pyro_dgm.models import NCSN, DiagonalGaussian, ScoreMLP, ScoreUNet
from pyro_dgm.registry import get_data

TOYS = ("8gaussians", "25gaussians")
# Large batches matter: with 256 per batch the 25-Gaussian NCSN covered 16/25 modes, with 512 all 25.
TOY = {"hidden": (128, 128, 128), "levels": 10, "sigma_min": 0.01, "steps": 3000, "batch_size": 512, "lr": 2e-3,
       "samples": 1000}  # lr decays to 0 on a cosine over the steps
TOY_SAMPLERS = {"langevin_step": 2e-3, "steps_per_level": 100, "step_size": 2e-5, "pc_steps": 500, "snr": 0.16}
# Chosen on the validation digits (probability-flow NLL): 800 steps at a constant lr gave -83.94 (25 or 50
# RK4 steps alike, so the ODE is solved), 2,000 steps with the lr decaying to 0 on a cosine -89.84 (16 channels)
# and -91.08 (32 channels). On one fixed dequantization it overfits (4,000 steps -79.52; an EMA of the weights
# 0.999 from step 1 -75.14). Trained on the digits dequantized afresh at every epoch ("fresh": DynamicDequantized,
# as the spline flow): 2,000 steps -96.01 (training seed 1: -95.46), 4,000 steps -93.81, 2,000 steps with an EMA
# 0.999 from step 1,001 -95.29. Test: -97.53 (1.889 bits/dim in the 17-level space; one fixed draw: -92.96).
DIGITS = {"channels": 32, "sigma_min": 0.01, "steps": 2000, "batch_size": 128, "lr": 2e-3, "cosine": True,
          "fresh": True, "samples": 360, "levels": 10, "steps_per_level": 30, "step_size": 2e-5, "pc_steps": 150,
          "ode_steps": 25}


def _steps(n, args):
    return max(1, int(n * getattr(args, "epochs_scale", 1.0)))


def _weights_tv(counts):
    """Total variation between the modes' shares of the high-quality samples and equal weights."""
    share = counts.double() / max(1, int(counts.sum()))
    return 0.5 * float((share - 1.0 / len(counts)).abs().sum())


def _toy_rows(name, args):
    spec = get_data(name)
    x, xt = spec.load("train", args.seed), spec.load("test", args.seed)
    sigmas = geometric_sigmas(max_pairwise_distance(x), TOY["sigma_min"], TOY["levels"])
    torch.manual_seed(args.seed)
    m = NCSN(2, net=ScoreMLP(2, hidden=TOY["hidden"]), sigmas=sigmas)
    t0 = time.perf_counter()
    steps = _steps(TOY["steps"], args)
    pyro_dgm.fit(m.model, None, x, objective=DenoisingScoreMatching(), steps=steps, batch_size=TOY["batch_size"],
                 lr=TOY["lr"], scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
                 scheduler_every="step", seed=args.seed, progress=False)
    train_s = time.perf_counter() - t0
    s = TOY_SAMPLERS
    evals = TOY["levels"] * s["steps_per_level"]
    samplers = {
        "Langevin (sigma_L)": Langevin(float(sigmas[-1]), s["langevin_step"], evals, init_scale=float(sigmas[0])),
        "annealed Langevin": AnnealedLangevin(sigmas, s["steps_per_level"], s["step_size"]),
        "PC (VE SDE)": PredictorCorrector(VESDE(float(sigmas[-1]), float(sigmas[0])), s["pc_steps"], s["snr"]),
    }
    rows = [(name, "data (held-out)", toy_row(spec.load("val", args.seed)[:TOY["samples"]], xt, name), 0.0)]
    for label, sampler in samplers.items():
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        samples = m.sample(TOY["samples"], sampler)
        rows.append((name, label, toy_row(samples, xt, name), time.perf_counter() - t0))
    return rows, train_s


def toy_row(samples, test, name):
    cov = mode_coverage(samples, name)
    return {"mmd2": mmd2(samples, test), "modes": f"{cov['modes']}/{cov['num_modes']}",
            "hq": cov["high_quality"], "tv": _weights_tv(cov["counts"])}


def _print_toys(args):
    print(f"2-D toys: NCSN {TOY}; samplers {TOY_SAMPLERS}")
    print(f"{'toy':12s} {'sampler':20s} {'MMD^2':>8s} {'modes':>6s} {'high-q':>7s} {'weight TV':>9s} {'sample s':>9s}")
    for name in TOYS:
        rows, train_s = _toy_rows(name, args)
        for toy, label, r, sec in rows:
            print(f"{toy:12s} {label:20s} {r['mmd2']:8.4f} {r['modes']:>6s} {r['hq']:7.3f} {r['tv']:9.3f} {sec:9.1f}")
        print(f"{'':12s} (training {train_s:.1f} s; {len(mode_centers(name))} modes of equal weight)")


def _digit_models(x, args):
    d = DIGITS
    sde = VESDE(d["sigma_min"], max_pairwise_distance(x))
    torch.manual_seed(args.seed)
    m = NCSN(64, net=ScoreUNet((1, 8, 8), channels=d["channels"]), sde=sde,
             sigmas=geometric_sigmas(sde.sigma_max, sde.sigma_min, d["levels"]))
    t0 = time.perf_counter()
    steps = _steps(d["steps"], args)
    cosine = (lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)) if d["cosine"] else None
    train = DynamicDequantized(load_digits("train", "levels", args.seed), DIGITS_LEVELS) if d["fresh"] else x
    pyro_dgm.fit(m.model, None, train, objective=SDEScoreMatching(), steps=steps, batch_size=d["batch_size"],
                 lr=d["lr"], scheduler=cosine, scheduler_every="step", seed=args.seed, progress=False)
    score_s = time.perf_counter() - t0
    base = DiagonalGaussian(64)
    pyro_dgm.fit(base.model, None, x, epochs=50, lr=5e-2, batch_size=128, seed=args.seed, progress=False)
    return m, base, score_s


def _print_digits(args):
    if args.data != "digits":
        print(f"score: digits only at these settings; --data {args.data} not run for the image part")
        return
    x = get_data("digits-continuous").load("train", args.seed)
    xt = get_data("digits-continuous").load("test", args.seed)
    m, base, train_s = _digit_models(x, args)
    d = DIGITS
    samplers = {"annealed Langevin": AnnealedLangevin(m.sigmas, d["steps_per_level"], d["step_size"]),
                "PC (VE SDE)": PredictorCorrector(m.sde, d["pc_steps"])}
    print(f"\ncontinuous digits: ScoreUNet (VE SDE, sigma {m.sde.sigma_min}..{m.sde.sigma_max:.2f}) {d}; "
          f"trained in {train_s:.1f} s")
    print(f"{'samples':28s} {'Frechet':>8s} {'precision':>9s} {'recall':>7s} {'sample s':>9s}")
    candidates = [("train data (reference)", lambda: x[:d["samples"]]),
                  ("diagonal Gaussian", lambda: base.sample(d["samples"]))]
    candidates += [(f"score {k}", lambda s=s: m.sample(d["samples"], s)) for k, s in samplers.items()]
    for label, draw in candidates:
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        samples = draw().clamp(0, 1)
        q = digits_quality(samples, xt)
        seconds = time.perf_counter() - t0
        print(f"{label:28s} {q['frechet']:8.3f} {q['precision']:9.3f} {q['recall']:7.3f} {seconds:9.1f}")

    t0 = time.perf_counter()
    pf = probability_flow_nll(m.model, xt, num_steps=d["ode_steps"], num_levels=DIGITS_LEVELS, seed=args.seed)
    pf_s = time.perf_counter() - t0
    g = pyro_dgm.evaluate(base.model, xt)
    discrete = (g["nll"] + 64 * math.log(DIGITS_LEVELS)) / (64 * math.log(2))
    print("\ntest NLL (360 digits): continuous = density on [0,1)^64; discrete = (NLL + 64 log 17) / (64 log 2)")
    print(f"{'model':36s} {'NLL nats':>9s} {'± s.e.':>7s} {'bpd cont.':>9s} {'bpd disc.':>9s} {'eval s':>7s}")
    print(f"{'diagonal Gaussian (exact)':36s} {g['nll']:9.2f} {g['nll_stderr']:7.2f} {g['bits_per_dim']:9.3f} "
          f"{discrete:9.3f} {'':>7s}")
    print(f"{'score VE SDE (probability flow, RK4)':36s} {pf['nll']:9.2f} {pf['nll_stderr']:7.2f} "
          f"{pf['bits_per_dim']:9.3f} {pf['bits_per_dim_discrete']:9.3f} {pf_s:7.1f}")


def run(args):
    _print_toys(args)
    _print_digits(args)
