"""Energy-based models: test NLL of CD, PCD, score matching, NCE and FCE.

    python benchmarks/quality.py --family ebm [--epochs-scale 1] [--out runs/benchmarks]
    python benchmarks/quality_ebm.py --toys 8gaussians [--split valid]

2-D toys (4,000 train / 2,000 test points): every objective trains the same
EBM (MLP 2-128-128-1, SiLU, plus a Gaussian base term of scale 4) for the
steps of its row in ``OBJECTIVES``; log Z is integrated on a 500x500 grid over
[-6, 6]^2, so the test NLL is exact. Baselines: a Gaussian fitted to the
training data, and for the toys whose density is known ("8gaussians",
"checkerboard") the true density; "gap" is a row's NLL minus the truth's.
NCE and FCE also learn log Z: the table shows it beside the grid value. FCE
contrasts against its flow mixed with 25% of the fitted Gaussian
(``gaussian_weight=0.25``): with the flow alone (Gao et al.'s setting) the
energy between the modes is left unconstrained and the EBM puts mass there.
On 1,000 samples of MALA chains (``SAMPLER``, from N(0, 1.5^2 I), the step
adapted to an acceptance of 0.57 during 500 warm-up steps; Metropolis-adjusted,
so the samples follow the trained EBM, not the bias of unadjusted Langevin),
"modes" counts the modes of 8gaussians holding >= 1% of them within 3 std of
their centre and "sharp" is the fraction within 3 std of a mode
(:func:`pyro_dgm.metrics.mode_coverage`); the true density's row gives the
test data's own fraction.

CD-20 is Hinton's CD (chains start at the data) with Langevin steps of 2e-2
and a learning rate of 6e-2 decaying along a cosine, chosen on a validation
split (``--split valid``, another seed; the test set is never used to choose):
short-run chains from noise at 1e-3 (the earlier row) learned a blurred ring.
At a learning rate of 2e-2 the learned density held 94.5% of its mass within
3 std of a mode (training seeds 0 and 3: 94.5%, 95.4%), too little for any
exact sampler to be as sharp as the data; at 6e-2 it holds 96.5%, 96.4% and
96.1% (seeds 0, 3, 5) in the same 500 steps (4e-2: 95.9%, 95.4%). Not better,
each at 2e-2 on seed 0: Langevin steps of 5e-3 (87%), an energy penalty of 0.2
(67%; 0.01 diverges), MALA negatives (90%: the unadjusted chain's
overdispersion is what sharpens CD's model), CD-40 (93%); 1,000 steps at 2e-2
reach 97.2% (seeds 0 and 3) at twice the cost.
NCE (against the fitted Gaussian) runs 2,000 steps at 1e-2, cosine-decayed: at
500 or 1,000 steps it is still on a ring (gap 1.4 and 1.1 nats on the
validation split), at 2,000 it is 0.02 nats off; its steps are cheap (2,000
cost about what 500 of CD-20 do). FCE, on the same schedule with the flow at
3e-3, leaves the ring more slowly: 1.6, 1.2 and 0.84 nats off on the validation
split after 200, 400, 1,000 and 2,000 steps; the table runs 2,000 (FCE's steps
cost about 3 times NCE's).

Digits (continuous, dequantized to [0, 1)): an EBM with the convolutional
energy and a base Gaussian fitted to the training data is trained by
score matching; its test NLL uses log Z from annealed importance sampling
(HMC transitions) with its standard error, beside the diagonal Gaussian it
starts from.

Figures: ``<out>/ebm_toys.png`` (learned densities and Langevin samples) and
``<out>/ebm_digits.png``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Independent, Normal  # noqa: E402

import pyro_dgm  # noqa: E402
from pyro_dgm.data import (TOY_DENSITIES, TOY_STD, load_digits, mode_centers, toy_2d,  # noqa: E402
                           toy_log_prob)
from pyro_dgm.inference import (ContrastiveDivergence, FlowContrastiveEstimation,  # noqa: E402
                                NoiseContrastiveEstimation, PersistentContrastiveDivergence, ScoreMatching)
from pyro_dgm.inference.contrastive import FittedGaussian  # noqa: E402
from pyro_dgm.metrics import mode_coverage  # noqa: E402
from pyro_dgm.samplers import langevin, mala  # noqa: E402
from pyro_dgm.models import EBM, DigitsEnergy, EnergyMLP  # noqa: E402
from pyro_dgm.partition import ais_log_partition, grid_log_partition, grid_points  # noqa: E402

TOYS = ("8gaussians", "moons", "checkerboard")
#: the MALA chains whose samples give "modes" and "sharp" (from N(0, 1.5^2 I))
SAMPLER = {"step_size": 1e-3, "adapt_steps": 500, "num_steps": 500}
BOUNDS, GRID = (-6.0, 6.0), 500
#: name -> (objective factory, steps at epochs_scale 1, learning rates, cosine decay of the learning rate).
#: CD's, NCE's and FCE's settings were chosen on the validation split (--split valid) of 8gaussians.
OBJECTIVES = {
    "CD-20": (lambda: ContrastiveDivergence(num_steps=20, step_size=2e-2, init="data"), 500, 6e-2, True),
    "PCD-20": (lambda: PersistentContrastiveDivergence(num_steps=20), 500, 1e-3, False),
    "SM exact": (lambda: ScoreMatching("exact"), 500, 1e-3, False),
    "NCE (nu=4)": (lambda: NoiseContrastiveEstimation(noise_ratio=4), 2000, 1e-2, True),
    "FCE w=.25": (lambda: FlowContrastiveEstimation(gaussian_weight=0.25), 2000, {"model": 1e-2, "flow": 3e-3},
                  True),
}


def _cosine(steps):
    """fit's options for a learning rate decaying to 0 along a cosine over ``steps``."""
    return {"scheduler": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps), "scheduler_every": "step"}


def _gaussian_nll(train, test):
    q = FittedGaussian(train)
    return float(-q.log_prob(test).mean())


def _true_nll(name, test):
    return float(-toy_log_prob(name, test).mean()) if name in TOY_DENSITIES else None


def _coverage(name, samples):
    """Modes covered and "sharp", the fraction of samples within 3 std of a mode (None without modes)."""
    if name not in TOY_STD:
        return {"modes": None, "sharp": None}
    c = mode_coverage(samples, name)
    return {"modes": f"{c['modes']}/{c['num_modes']}", "sharp": c["high_quality"]}


def _mass_near_modes(name, log_density, num_points=1000):
    """The mass of a normalized ``log_density`` within 3 std of a mode, by the midpoint rule on a grid over the
    modes (cells of 0.005 on 8gaussians): what an exact sampler's "sharp" tends to (None without modes)."""
    if name not in TOY_STD:
        return None
    centers, std = mode_centers(name), TOY_STD[name]
    lim = float(centers.abs().max()) + 4 * std
    pts, log_vol = grid_points((-lim, lim), num_points, 2)
    with torch.no_grad():
        log_p = torch.cat([log_density(c) for c in pts.split(65536)]) + log_vol
    near = torch.cdist(pts, centers).min(-1).values <= 3 * std
    return float(log_p[near].exp().sum())


def _train_toy(name, label, train, test, scale, seed):
    make, steps, lr, cosine = OBJECTIVES[label]
    steps = max(1, int(steps * scale))
    torch.manual_seed(seed)
    ebm = EBM(EnergyMLP(2, (128, 128)), 2, base_scale=4.0)
    obj = make()
    t0 = time.perf_counter()
    pyro_dgm.fit(ebm.model, None, train, objective=obj, steps=steps, batch_size=256, lr=lr, seed=seed,
                 progress=False, **(_cosine(steps) if cosine else {}))
    seconds = time.perf_counter() - t0
    log_z = grid_log_partition(ebm.energy, bounds=BOUNDS, num_points=GRID)
    nll = pyro_dgm.evaluate(ebm.model, test, log_normalizer=log_z)["nll"]
    torch.manual_seed(seed)
    samples = mala(torch.randn(1000, 2) * 1.5, log_prob=lambda v: -ebm.energy(v), **SAMPLER).x
    learned = getattr(obj, "log_z", None)
    mass = _mass_near_modes(name, lambda v: -ebm.energy(v) - log_z)
    return {"nll": nll, "log_z": log_z, "learned": learned, "seconds": seconds, "ebm": ebm, "samples": samples,
            "mass": mass, **_coverage(name, samples)}


def _density_image(ebm, lim=4.0, n=200):
    pts, _ = grid_points((-lim, lim), n, 2)
    with torch.no_grad():
        return (-ebm.energy(pts)).reshape(n, n).T.exp().numpy()


def _fmt(value, spec, width):
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


def _row(name, label, nll, truth, log_z=None, learned=None, modes=None, sharp=None, mass=None, seconds=None):
    gap = nll - truth if truth is not None else None
    print(f"{name:<14}{label:<13}{nll:>9.3f}{_fmt(gap, '.3f', 7)}{_fmt(log_z, '.3f', 11)}{_fmt(learned, '.3f', 14)}"
          f"{modes or '-':>6}{_fmt(sharp, '.3f', 7)}{_fmt(mass, '.3f', 7)}{_fmt(seconds, '.1f', 9)}", flush=True)


def _toy_table(args, out):
    scale, toys = args.epochs_scale, _toys(args)
    split = getattr(args, "split", "test")
    print(f"2-D toys: {split} NLL in nats (log Z on a {GRID}x{GRID} grid over {BOUNDS}), steps x{scale:g}; "
          f"gap = NLL - true NLL; sharp = fraction of MALA samples ({SAMPLER['adapt_steps']} + "
          f"{SAMPLER['num_steps']} steps) within 3 std "
          "of a mode; mass = the learned density's own mass there")
    header = (f"{'toy':<14}{'model':<13}{'NLL':>9}{'gap':>7}{'log Z grid':>11}{'log Z learned':>14}{'modes':>6}"
              f"{'sharp':>7}{'mass':>7}{'train s':>9}")
    print(header)
    print("-" * len(header))
    fig, axes = plt.subplots(2 * len(toys), len(OBJECTIVES), figsize=(2.2 * len(OBJECTIVES), 4.4 * len(toys)),
                             squeeze=False)
    for i, name in enumerate(toys):
        train = toy_2d(name, 4000, seed=args.seed)
        # the validation split (another seed) is where OBJECTIVES' settings were chosen
        test = toy_2d(name, 2000, seed=args.seed + (2 if split == "valid" else 1))
        truth = _true_nll(name, test)
        _row(name, "Gaussian", _gaussian_nll(train, test), truth)
        if truth is not None:
            _row(name, "true density", truth, truth, sharp=_coverage(name, test)["sharp"],
                 mass=_mass_near_modes(name, lambda v: toy_log_prob(name, v)))
        for j, label in enumerate(OBJECTIVES):
            r = _train_toy(name, label, train, test, scale, args.seed)
            _row(name, label, r["nll"], truth, r["log_z"], r["learned"], r["modes"], r["sharp"], r["mass"],
                 r["seconds"])
            axes[2 * i, j].imshow(_density_image(r["ebm"]), origin="lower", extent=(-4, 4, -4, 4), cmap="magma")
            axes[2 * i, j].set_title(f"{name}\n{label}", fontsize=8)
            s = r["samples"].numpy()
            axes[2 * i + 1, j].scatter(s[:, 0], s[:, 1], s=1, alpha=0.5)
            axes[2 * i + 1, j].set_xlim(-4, 4)
            axes[2 * i + 1, j].set_ylim(-4, 4)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "ebm_toys.png", dpi=80)
    plt.close(fig)


AIS_TEMPS = 300


def _standardized_ais(ebm, loc, scale):
    """AIS in z = (x - loc) / scale, where HMC's unit mass fits every pixel:
    log Z = log Z_z + sum(log scale), with E_z(z) = E(loc + scale z)."""
    base = Independent(Normal(torch.zeros_like(loc), torch.ones_like(scale)), 1)
    est = ais_log_partition(lambda z: ebm.energy(loc + scale * z), base, num_chains=128, num_temps=AIS_TEMPS,
                            transition="hmc", step_size=0.3, num_leapfrog=5)
    est.log_z += float(scale.log().sum())
    return est


def _digits(args, out):
    if args.data != "digits":
        print(f"(digits AIS row: runs on --data digits only; got {args.data!r})")
        return
    train = load_digits("train", "continuous", seed=args.seed)
    test = load_digits("test", "continuous", seed=args.seed)
    q = FittedGaussian(train)
    torch.manual_seed(args.seed)
    ebm = EBM(DigitsEnergy(), 64, base_loc=q.loc, base_scale=q.scale)
    steps = max(1, int(400 * args.epochs_scale))
    t0 = time.perf_counter()
    pyro_dgm.fit(ebm.model, None, train, objective=ScoreMatching("sliced", num_projections=1), steps=steps,
                 batch_size=128, lr=3e-4, seed=args.seed, progress=False)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = _standardized_ais(ebm, q.loc, q.scale)
    ais_s = time.perf_counter() - t0
    nll = pyro_dgm.evaluate(ebm.model, test, log_normalizer=est.log_z)["nll"]
    gauss = _gaussian_nll(train, test)
    d = 64 * math.log(2)
    print(f"\ncontinuous digits (64 dims): test NLL in nats (bits/dim), log Z by AIS "
          f"({est.log_weights.numel()} chains, {AIS_TEMPS} temperatures, HMC in standardized coordinates)")
    print(f"{'model':<26}{'test NLL':>10}{'bits/dim':>10}{'AIS log Z':>11}{'+-':>7}{'ESS':>7}{'acc':>6}"
          f"{'train s':>9}{'AIS s':>7}")
    print(f"{'diagonal Gaussian':<26}{gauss:>10.2f}{gauss / d:>10.3f}")
    print(f"{'EBM, sliced SM':<26}{nll:>10.2f}{nll / d:>10.3f}{est.log_z:>11.2f}{est.stderr:>7.2f}"
          f"{est.ess:>7.1f}{est.accept_rate:>6.2f}{seconds:>9.0f}{ais_s:>7.0f}")
    samples = langevin(ebm.base_distribution().sample((16,)), log_prob=lambda v: -ebm.energy(v),
                       step_size=1e-4, num_steps=300)
    fig, axes = plt.subplots(2, 8, figsize=(8, 2))
    for ax, img in zip(axes.flat, samples.clamp(0, 1).reshape(-1, 8, 8)):
        ax.imshow(img.numpy(), cmap="gray_r")
        ax.axis("off")
    fig.savefig(out / "ebm_digits.png", dpi=80)
    plt.close(fig)


def _toys(args):
    toys = tuple(getattr(args, "toys", None) or TOYS)
    unknown = sorted(set(toys) - set(TOYS))
    if unknown:
        raise ValueError(f"toys: expected names from {TOYS}, got {unknown}")
    return toys


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    _toy_table(args, out)
    _digits(args, out)
    print(f"(figures: {out / 'ebm_toys.png'}, {out / 'ebm_digits.png'})")


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--toys", nargs="+", choices=TOYS, help="default: all")
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="score on the test set or on the validation set that chose the settings")
    p.add_argument("--data", default="none", help="'digits' adds the digits AIS row")
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/benchmarks")
    run(p.parse_args())
