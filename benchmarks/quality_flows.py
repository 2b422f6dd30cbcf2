"""Normalizing flows vs a diagonal Gaussian: test NLL on 2-D toys and on continuous digits.

    python benchmarks/quality.py --family flows [--epochs-scale 0.5] [--out runs/benchmarks]

2-D toys: exact test NLL in nats per point, and for the toys whose density is
known (``pyro_dgm.data.toy_log_prob``: 8 and 25 Gaussians, checkerboard) the
gap to the truth, NLL minus the true density's NLL on the same test points. Digits: the 8x8 digits with
their 17 grey levels uniformly dequantized to [0, 1) (``digits-continuous``);
every NLL is exact (i-ResNet's log-det is the exact one in evaluation) and
includes the logit pre-processing's log-det. Two scales are printed:

* ``bpd [0,1)``: bits/dim of the density on [0, 1)^64 (``pyro_dgm.evaluate``);
* ``bpd 17-lvl``: bits/dim of the discrete 17-level pixels, the dequantization
  bound  -log P(k) <= -log p((k+u)/17) + 64 log 17, i.e. ``bpd [0,1)`` + log2(17) = + 4.087.
  (A uniform distribution over the 17 levels scores 4.087.)

Figures of the learned 2-D densities go to ``<out>/flows_2d_densities.png``.
The settings below are the published ones: one command reproduces the table.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import pyro_dgm  # noqa: E402
from pyro_dgm.callbacks import EarlyStopping, WeightAverage  # noqa: E402
from pyro_dgm.data import (DIGITS_LEVELS, TOY_DENSITIES, DynamicDequantized, load_digits,  # noqa: E402
                           toy_2d, toy_log_prob)
from pyro_dgm.models import DiagonalGaussian  # noqa: E402
from pyro_dgm.models.flows import discrete_bits_per_dim  # noqa: E402
from pyro_dgm.plots import density_2d  # noqa: E402
from pyro_dgm.registry import get_data, get_model  # noqa: E402

TOYS = {"names": ("moons", "8gaussians", "25gaussians", "checkerboard"), "n_train": 4000, "n_test": 2000,
        "epochs": 25, "batch_size": 256, "lr": 3e-3}
TOY_MODELS = {  # registry name -> builder options
    "nice": {"num_couplings": 4, "hidden": (64, 64)},
    "realnvp": {"num_couplings": 6, "hidden": (64, 64)},
    "maf": {"num_layers": 5, "hidden": (64, 64)},
    "iresnet": {"num_blocks": 4, "hidden": (64, 64)},
    "nsf": {"num_layers": 6, "hidden": (64, 64), "count_bins": 16},
    "nsf-ar": {"num_layers": 6, "hidden": (64, 64), "count_bins": 16},
}
# The spline flows' training, chosen on a validation sample (toy_2d seed 500, never the test points) among
# {4, 6} layers x {8, 16} bins x {25, 50, 150} epochs x lr {3e-3, 1e-3} x (64, 64) / (128, 128) hidden:
# 150 epochs with a cosine learning-rate decay; the other flows keep TOYS' 25 epochs at 3e-3.
TOY_TRAINING = {name: {**TOYS, "epochs": 150, "lr": 1e-3, "cosine": True} for name in ("nsf", "nsf-ar")}
# Per toy, on the same validation sample: the checkerboard's sharp edges need more updates. Batch 64 (four times
# the steps) took the autoregressive spline flow's validation gap from 0.125 to 0.096 (batch 256 vs 64).
# Then, at batch 64, on 20,000 validation points (seed 500; 2,000 in brackets): lr 1e-3 0.102 (0.096), 2e-3 0.099
# (0.104), 5e-4 0.124; 32 bins 0.141; 10 layers of (32, 32) 0.119. lr 2e-3 is kept, a difference within the noise.
# Then a weight average ("average": its decay, from the fraction "average_from" of the steps on), one run at lr 2e-3,
# 20,000 validation points: live weights 0.0991, decay 0.999 from the start 0.0975, 0.9995 from a third 0.0950,
# 0.9998 from half 0.0947 (test gap 0.119 -> 0.118). Worse with the averages: batch 32
# (live 0.1105, best average 0.1060), 8 layers (live 0.1043, best average 0.1002). Better: lr 3e-3, live 0.0905,
# 0.9995 from a third 0.0850, 0.9998 from half 0.0852, 0.9999 from half 0.0893; kept: lr 3e-3, 0.9998 from half
# (test gap 0.106: the 0.10 target is not met).
# The test gap is one run (seed 0) scored on 2,000 test points; the truth's NLL is log 32 at every point, so the
# printed ±0.008 (the NLL's s.e.) is the gap's too. The kept run's gap on 20 other 2,000-point samples (seeds
# 600-619): mean 0.087, s.d. 0.008, 0.074 to 0.105; on 200,000 points 0.088. The test points score ~2 s.e. above
# that, +0.02 over the validation gap for both the lr 2e-3 and 3e-3 runs: a property of that sample, not of the
# choice (validation and test score the same seed-0 run). Not better, one run each, on the 20,000 validation points
# (best average; kept 0.0852):
# lr 5e-3 with 500 warm-up steps 0.0920, hidden (128, 128) 0.0977, 200 epochs 0.0953 (0.9998 from a third),
# 24 bins 0.1193 (0.9998 from a third); 12 bins 0.0858 (0.9995 from a third), the same within the noise.
# Run-to-run noise, the kept settings with training seeds 1 and 2 (same data, 20,000 validation points): 0.0944,
# 0.0948 (seed 0 0.0852; mean 0.0915, s.d. 0.0054), so differences under ~0.01 are noise and seed 0 is the
# luckiest of three. Not better, seed 0: the coupling flow "nsf" at these settings 0.1377; nsf-ar with each
# layer's autoregressive order fixed, so that the reversals alternate the conditioned coordinate, 0.0998 (the
# builder's orders are random per layer: seed 0's condition coordinate 0 on 1 in four layers in a row). Test gap
# still 0.106 (rerun): the 0.10 target is not met. Not better either (one run each, seed 0, the 20,000 validation
# points; kept 0.0852): 100 epochs 0.1117, 120 epochs 0.1059, hidden (64, 64, 64) 0.0878, hidden (96, 96) 0.1047.
TOY_OVERRIDES = {("nsf-ar", "checkerboard"): {"batch_size": 64, "lr": 3e-3, "average": 0.9998, "average_from": 0.5}}
DIGITS = {"epochs": 40, "batch_size": 128, "lr": 2e-3, "patience": 4}  # early stopping on the 180 val images
DIGIT_MODELS = {
    "nice": {"num_couplings": 4, "hidden": (256, 256)},
    "realnvp-image": {"num_scales": 2, "hidden": 32, "couplings": 3},
    "maf": {"num_layers": 5, "hidden": (256, 256)},
    "glow": {"levels": 2, "steps": 4, "hidden": 32},
    "iresnet": {"num_blocks": 4, "hidden": (128, 128)},
    "nsf-ar": {"num_layers": 5, "hidden": (256, 256), "count_bins": 16},
}
# The autoregressive spline flow trains on digits dequantized afresh at every epoch (DynamicDequantized: it
# cannot fit one noise draw), its lr decayed by 0.96 per epoch. On the validation NLL, 5 layers of 8 bins
# (-93.88) beat 3 (-91.71) and 8 (-93.37); 16 bins (-94.42, 100 epochs) beat 8 and 32 (-92.71), 6 layers
# of 16 bins (-94.11) and width 512 (-94.06); then batch 32 (-94.64) beat 64, and lr 5e-4 (-93.10) did not.
# Then an exponential average of the weights from step 1 ("average": its decay; early stopping scores the average
# and keeps its best), best val NLL from one run: live weights -94.64, decay 0.995 -95.07, 0.998 -95.22, 0.999 from
# step 1000 -95.08, 0.9995 from step 1600 -94.88.
DIGIT_TRAINING = {"nsf-ar": {"epochs": 150, "batch_size": 32, "lr": 1e-3, "patience": 10, "decay": 0.96,
                             "fresh": True, "average": 0.998}}
BASELINE = {"epochs": 50, "lr": 5e-2, "batch_size": 128}


def _epochs(n, args):
    return max(1, int(round(n * getattr(args, "epochs_scale", 1.0))))


def _train(module, x, settings, args, callbacks=()):
    t0 = time.perf_counter()
    epochs = _epochs(settings["epochs"], args)
    scheduler = None
    if settings.get("cosine"):
        scheduler = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)  # noqa: E731
    elif settings.get("decay"):
        scheduler = lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, settings["decay"])  # noqa: E731
    r = pyro_dgm.fit(module.model, None, x, epochs=epochs, batch_size=settings["batch_size"], lr=settings["lr"],
                     seed=args.seed, callbacks=callbacks, progress=False, scheduler=scheduler)
    return time.perf_counter() - t0, r.epochs


def _train_stopped(module, x, xv, settings, args):
    """Train with early stopping on ``xv``; with ``settings["average"]``, stop on and keep the best weight average."""
    if not settings.get("average"):
        return _train(module, x, settings, args, [EarlyStopping(xv, patience=settings["patience"])])
    average = WeightAverage(module, decay=settings["average"])
    stop = EarlyStopping(xv, patience=settings["patience"], monitor="nll", average=average)
    return _train(module, x, settings, args, [average, stop])


def _toy_average(module, x, settings, args):
    """``settings["average"]``: a weight average with that decay over the last ``1 - average_from`` of the steps."""
    if not settings.get("average"):
        return []
    steps = _epochs(settings["epochs"], args) * math.ceil(x.shape[0] / settings["batch_size"])
    return [WeightAverage(module, decay=settings["average"], start=int(settings["average_from"] * steps) + 1)]


def _gap(toy, nll, xt):
    return nll + toy_log_prob(toy, xt).mean().item() if toy in TOY_DENSITIES else float("nan")


def run_toys(args, out: Path):
    names = ["gaussian", *(getattr(args, "toy_models", None) or TOY_MODELS)]
    toys = getattr(args, "toys", None) or TOYS["names"]
    table, figure = {}, plt.figure(figsize=(2.2 * (len(names) + 1), 2.2 * len(toys)))
    xts = {}
    for row, toy in enumerate(toys):
        x = toy_2d(toy, TOYS["n_train"], seed=args.seed)
        xt = xts[toy] = toy_2d(toy, TOYS["n_test"], seed=args.seed + 1000)
        ax = figure.add_subplot(len(toys), len(names) + 1, row * (len(names) + 1) + 1)
        ax.scatter(x[:, 0], x[:, 1], s=0.5, alpha=0.4)
        ax.set(xlim=(-5, 5), ylim=(-5, 5), xticks=[], yticks=[], title=f"{toy}: data")
        for col, name in enumerate(names):
            torch.manual_seed(args.seed)
            if name == "gaussian":
                module = DiagonalGaussian(2)
                seconds, _ = _train(module, x, BASELINE, args)
            else:
                module = get_model(name).build(torch.Size([2]), "points", **TOY_MODELS[name])
                settings = {**TOY_TRAINING.get(name, TOYS), **TOY_OVERRIDES.get((name, toy), {})}
                seconds, _ = _train(module, x, settings, args, _toy_average(module, x, settings, args))
            res = pyro_dgm.evaluate(module.model, xt)
            table[toy, name] = (res["nll"], res["nll_stderr"], seconds, _gap(toy, res["nll"], xt))
            ax = figure.add_subplot(len(toys), len(names) + 1, row * (len(names) + 1) + col + 2)
            density_2d(lambda p, m=module: m.distribution(p.shape[0]).log_prob(p), lim=5.0, n=120,
                       ax=ax, title=f"{name} {res['nll']:.2f}")
    path = out / "flows_2d_densities.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

    print(f"2-D toys: test NLL in nats per point (± s.e.), {TOYS['n_train']} train / {TOYS['n_test']} test points, "
          f"{_epochs(TOYS['epochs'], args)} epochs (spline flows: {_epochs(150, args)}, cosine lr; {TOY_OVERRIDES}); "
          "train seconds in brackets")
    print(f"{'toy':14s}{'truth':>8s}" + "".join(f"{n:>22s}" for n in names))
    for toy in toys:
        truth = f"{-toy_log_prob(toy, xts[toy]).mean().item():8.3f}" if toy in TOY_DENSITIES else f"{'':8s}"
        cells = [f"{table[toy, n][0]:7.3f} ±{table[toy, n][1]:.3f} [{table[toy, n][2]:4.0f}s]" for n in names]
        print(f"{toy:14s}{truth}" + "".join(f"{c:>22s}" for c in cells))
    print("gap to the truth (NLL - true NLL on the same test points, nats per point):")
    for toy in (t for t in toys if t in TOY_DENSITIES):
        print(f"{toy:14s}{'':8s}" + "".join(f"{table[toy, n][3]:>22.3f}" for n in names))
    print(f"figure: {path}")


def _digits(args):
    name = "digits-continuous" if args.data == "digits" else args.data
    spec = get_data(name)
    if spec.kind != "continuous":
        print(f"(flows need continuous data; {args.data!r} is {spec.kind}: using digits-continuous)")
        name, spec = "digits-continuous", get_data("digits-continuous")
    return name, spec


def run_digits(args):
    name, spec = _digits(args)
    rows = []
    for model in ["gaussian", *(getattr(args, "digit_models", None) or DIGIT_MODELS)]:
        image = model != "gaussian" and get_model(model).fit_defaults.get("image", False)
        x = spec.load("train", args.seed, args.data_dir, image=image)
        xv = spec.load("val", args.seed, args.data_dir, image=image)
        xt = spec.load("test", args.seed, args.data_dir, image=image)
        torch.manual_seed(args.seed)
        if model == "gaussian":
            module = DiagonalGaussian(x.shape[1:])
            seconds, epochs = _train(module, x, BASELINE, args)
        else:
            module = get_model(model).build(x.shape[1:], "continuous", **DIGIT_MODELS[model])
            settings = DIGIT_TRAINING.get(model, DIGITS)
            train = x
            if settings.get("fresh") and name == "digits-continuous":
                train = DynamicDequantized(load_digits("train", "levels", args.seed, image=image), DIGITS_LEVELS)
            seconds, epochs = _train_stopped(module, train, xv, settings, args)
        res = pyro_dgm.evaluate(module.model, xt)
        dims = math.prod(x.shape[1:])
        rows.append((model, res, discrete_bits_per_dim(res["nll"], dims, DIGITS_LEVELS), seconds, epochs))
    print(f"\n{name}: {x.shape[0]} train / {xv.shape[0]} val / {xt.shape[0]} test images of 64 dims; flows: at most "
          f"{_epochs(DIGITS['epochs'], args)} epochs, early stopping on val "
          f"(patience {DIGITS['patience']}, best weights); {DIGIT_TRAINING}")
    print("NLL of the density on [0,1)^64 in nats per image (exact, logit pre-processing's log-det included);")
    print(f"bpd 17-lvl = bits/dim of the 17-level pixels = bpd [0,1) + log2(17) (uniform over levels: "
          f"{math.log2(DIGITS_LEVELS):.3f})")
    print(f"{'model':16s} {'NLL nats':>9s} {'± s.e.':>7s} {'bpd [0,1)':>10s} {'bpd 17-lvl':>11s} {'epochs':>7s} "
          f"{'train s':>8s}")
    for model, res, bpd, seconds, epochs in rows:
        print(f"{model:16s} {res['nll']:9.2f} {res['nll_stderr']:7.2f} {res['bits_per_dim']:10.3f} {bpd:11.3f} "
              f"{epochs:7d} {seconds:8.1f}")


def run(args):
    torch.set_num_threads(1)
    out = Path(getattr(args, "out", "runs/benchmarks"))
    run_toys(args, out)
    run_digits(args)


def _names(value, known, option):
    """The comma-separated names of an option, each one of ``known`` (None: all of them)."""
    if not value:
        return None
    unknown = [n for n in value.split(",") if n not in known]
    if unknown:
        raise ValueError(f"{option}: unknown {unknown}; expected some of {','.join(known)}")
    return value.split(",")


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="flows on the 2-D toys and the digits (quality.py --family flows runs both)")
    p.add_argument("--part", choices=("toys", "digits"), default=None, help="only one of the two tables")
    p.add_argument("--digit-models", default=None, help=f"comma-separated, of {','.join(DIGIT_MODELS)}")
    p.add_argument("--toys", default=None, help=f"comma-separated, of {','.join(TOYS['names'])}")
    p.add_argument("--toy-models", default=None, help=f"comma-separated, of {','.join(TOY_MODELS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--out", default="runs/benchmarks")
    args = p.parse_args(argv)
    args.data, args.data_dir = "digits", None
    args.digit_models = _names(args.digit_models, DIGIT_MODELS, "--digit-models")
    args.toys = _names(args.toys, TOYS["names"], "--toys")
    args.toy_models = _names(args.toy_models, TOY_MODELS, "--toy-models")
    torch.set_num_threads(1)
    if args.part != "digits":
        run_toys(args, Path(args.out))
    if args.part != "toys":
        run_digits(args)


if __name__ == "__main__":
    main()
