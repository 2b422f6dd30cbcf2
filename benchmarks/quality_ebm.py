"""Energy-based models: test NLL of CD, PCD, score matching, NCE and FCE.

    python benchmarks/quality.py --family ebm [--epochs-scale 1] [--out runs/benchmarks]

2-D toys (4,000 train / 2,000 test points): every objective trains the same
EBM (MLP 2-128-128-1, SiLU, plus a Gaussian base term of scale 4) for the
same number of steps; log Z is integrated on a 500x500 grid over [-6, 6]^2,
so the test NLL is exact. Baselines: a Gaussian fitted to the training data,
and for "8gaussians" the true density. NCE and FCE also learn log Z: the
table shows it beside the grid value. FCE contrasts against its flow mixed
with 25% of the fitted Gaussian (``gaussian_weight=0.25``): with the flow
alone (Gao et al.'s setting) the energy between the modes is left
unconstrained and the EBM puts mass there. "modes" counts the modes of 8gaussians
(of 8) that hold >= 1% of 1,000 Langevin samples within 0.3 of their centre.

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
from pyro_dgm.data import TOY_STD, load_digits, mode_centers, toy_2d  # noqa: E402
from pyro_dgm.inference import (ContrastiveDivergence, FlowContrastiveEstimation,  # noqa: E402
                                NoiseContrastiveEstimation, PersistentContrastiveDivergence, ScoreMatching)
from pyro_dgm.inference.contrastive import FittedGaussian  # noqa: E402
from pyro_dgm.samplers import langevin  # noqa: E402
from pyro_dgm.models import EBM, DigitsEnergy, EnergyMLP  # noqa: E402
from pyro_dgm.partition import ais_log_partition, grid_log_partition, grid_points  # noqa: E402

TOYS = ("8gaussians", "moons", "checkerboard")
BOUNDS, GRID = (-6.0, 6.0), 500
#: name -> (objective factory, steps at epochs_scale 1, learning rates)
OBJECTIVES = {
    "CD-20": (lambda: ContrastiveDivergence(num_steps=20), 500, 1e-3),
    "PCD-20": (lambda: PersistentContrastiveDivergence(num_steps=20), 500, 1e-3),
    "SM exact": (lambda: ScoreMatching("exact"), 500, 1e-3),
    "NCE (nu=4)": (lambda: NoiseContrastiveEstimation(noise_ratio=4), 500, 1e-3),
    "FCE w=.25": (lambda: FlowContrastiveEstimation(gaussian_weight=0.25), 200, {"model": 3e-3, "flow": 1e-3}),
}


def _gaussian_nll(train, test):
    q = FittedGaussian(train)
    return float(-q.log_prob(test).mean())


def _true_8gaussians_nll(test):
    c, s = mode_centers("8gaussians"), TOY_STD["8gaussians"]
    d = -(test.unsqueeze(1) - c).pow(2).sum(-1) / (2 * s * s) - math.log(2 * math.pi * s * s)
    return float(-(torch.logsumexp(d, 1) - math.log(8)).mean())


def _modes(samples):
    d = torch.cdist(samples, mode_centers("8gaussians"))
    near = d.min(1).values < 0.3
    return int((torch.bincount(d.argmin(1)[near], minlength=8) >= 10).sum())


def _train_toy(name, label, train, test, scale, seed):
    make, steps, lr = OBJECTIVES[label]
    torch.manual_seed(seed)
    ebm = EBM(EnergyMLP(2, (128, 128)), 2, base_scale=4.0)
    obj = make()
    t0 = time.perf_counter()
    pyro_dgm.fit(ebm.model, None, train, objective=obj, steps=max(1, int(steps * scale)), batch_size=256, lr=lr,
                 seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    log_z = grid_log_partition(ebm.energy, bounds=BOUNDS, num_points=GRID)
    nll = pyro_dgm.evaluate(ebm.model, test, log_normalizer=log_z)["nll"]
    samples = langevin(torch.randn(1000, 2) * 1.5, log_prob=lambda v: -ebm.energy(v), step_size=1e-3,
                       num_steps=500)
    learned = getattr(obj, "log_z", None)
    return {"nll": nll, "log_z": log_z, "learned": learned, "seconds": seconds, "ebm": ebm, "samples": samples,
            "modes": _modes(samples) if name == "8gaussians" else None}


def _density_image(ebm, lim=4.0, n=200):
    pts, _ = grid_points((-lim, lim), n, 2)
    with torch.no_grad():
        return (-ebm.energy(pts)).reshape(n, n).T.exp().numpy()


def _toy_table(args, out):
    scale = args.epochs_scale
    print(f"2-D toys: test NLL in nats (log Z on a {GRID}x{GRID} grid over {BOUNDS}), steps x{scale:g}")
    header = f"{'toy':<14}{'model':<13}{'test NLL':>9}{'log Z grid':>11}{'log Z learned':>14}{'modes':>6}{'train s':>9}"
    print(header)
    print("-" * len(header))
    fig, axes = plt.subplots(2 * len(TOYS), len(OBJECTIVES), figsize=(2.2 * len(OBJECTIVES), 4.4 * len(TOYS)))
    for i, name in enumerate(TOYS):
        train = toy_2d(name, 4000, seed=args.seed)
        test = toy_2d(name, 2000, seed=args.seed + 1)
        print(f"{name:<14}{'Gaussian':<13}{_gaussian_nll(train, test):>9.3f}")
        if name == "8gaussians":
            print(f"{name:<14}{'true density':<13}{_true_8gaussians_nll(test):>9.3f}")
        for j, label in enumerate(OBJECTIVES):
            r = _train_toy(name, label, train, test, scale, args.seed)
            learned = f"{r['learned']:.3f}" if r["learned"] is not None else "-"
            modes = f"{r['modes']}/8" if r["modes"] is not None else "-"
            print(f"{name:<14}{label:<13}{r['nll']:>9.3f}{r['log_z']:>11.3f}{learned:>14}{modes:>6}"
                  f"{r['seconds']:>9.1f}", flush=True)
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


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    _toy_table(args, out)
    _digits(args, out)
    print(f"(figures: {out / 'ebm_toys.png'}, {out / 'ebm_digits.png'})")
