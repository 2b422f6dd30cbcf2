"""GANs: sample quality of every adversarial objective, on 2-D toys and on digits.

    python benchmarks/quality.py --family gan
    python benchmarks/quality.py --family gan --epochs-scale 0.2   # a quick look

2-D toys ("8gaussians", "25gaussians"): an MLP generator (z in R^2, three
hidden layers of 128) against an MLP critic of the same size, trained on
20,000 points with batches of 256. Printed per objective: modes covered and
the fraction of high-quality samples (within 3 standard deviations of a
mode) among 2,500 samples (:func:`pyro_dgm.metrics.mode_coverage`), and the
squared MMD against 2,000 held-out points (RBF kernels of bandwidths 0.1 to 5).

Digits: a DCGAN-style generator and critic on the 1,257 training digits
(dequantized to [0, 1)), scored against the 360 test digits with the Frechet
distance and precision/recall (k = 3) in the feature space of the shipped
digits classifier; the first row is the training split itself, the floor of
these numbers at this sample size.

Settings (steps, learning rate, optimizer) are in ``TOY_RUNS`` and
``DIGIT_RUNS``; ``--epochs-scale`` multiplies every number of steps.
"""

from __future__ import annotations

import time

import torch

import pyro_dgm
from pyro_dgm.data import load_digits, toy_2d
from pyro_dgm.fit import NonFiniteLossError
from pyro_dgm.inference import Adversarial
from pyro_dgm.metrics import digits_quality, mmd2, mode_coverage
from pyro_dgm.models import DCGANCritic, DCGANGenerator, MLPCritic, MLPGenerator



def _adam(lr, betas):
    """Adam with the same settings for both players (``fit`` reads a dict of options as one per group)."""
    return {"optimizer": "adam", "lr": lr,
            "optimizer_kwargs": {"generator": {"betas": betas}, "critic": {"betas": betas}}}


ADAM_GAN, ADAM_WGAN = _adam(1e-3, (0.5, 0.999)), _adam(1e-3, (0.5, 0.9))

#: label -> (Adversarial keyword arguments, steps, fit keyword arguments). WGAN: RMSprop (Arjovsky et al., 2017).
TOY_RUNS = {
    "minimax": ({"loss": "minimax"}, 3000, ADAM_GAN),
    "ns": ({"loss": "ns"}, 3000, ADAM_GAN),
    "hinge": ({"loss": "hinge"}, 3000, ADAM_GAN),
    "f-gan kl": ({"loss": "f-gan", "divergence": "kl"}, 3000, ADAM_GAN),
    "f-gan reverse-kl": ({"loss": "f-gan", "divergence": "reverse-kl"}, 3000, ADAM_GAN),
    "wgan (clip)": ({"loss": "wgan"}, 5000, {"optimizer": "rmsprop", "lr": 5e-4}),
    # lambda = 1 rather than the paper's 10: a weaker penalty sharpens the modes of toy data.
    "wgan-gp": ({"loss": "wgan-gp", "gp_weight": 1.0}, 5000, ADAM_WGAN),
}

#: label -> (Adversarial keyword arguments, DCGAN channels, steps, fit keyword arguments).
DIGIT_RUNS = {
    "ns": ({"loss": "ns"}, 64, 2000, _adam(5e-4, (0.5, 0.999))),
    "wgan-gp": ({"loss": "wgan-gp"}, 32, 3000, _adam(5e-4, (0.5, 0.9))),
}


def _train(gen, critic, data, objective_kwargs, steps, fit_kwargs, batch_size, seed):
    """Train; return (wall-clock, CPU) seconds. On a shared machine the CPU time is the one-core cost.

    A run whose loss becomes NaN or infinite is reported and its generator scored as it was then.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        pyro_dgm.fit(gen.model, None, data, objective=Adversarial(critic, **objective_kwargs), steps=steps,
                     batch_size=batch_size, seed=seed, progress=False, **fit_kwargs)
    except NonFiniteLossError as err:
        print(f"  (diverged: {str(err).split(';')[0]})")
    gen.eval()
    return time.perf_counter() - t0, time.process_time() - c0


def _steps(steps, args):
    return max(1, round(steps * args.epochs_scale))


def run_toys(args):
    print("2-D toys: modes covered, high-quality fraction (within 3 std) of 2,500 samples; "
          "MMD^2 against 2,000 held-out points")
    print(f"{'data':12s} {'objective':18s} {'steps':>6s} {'modes':>6s} {'HQ':>6s} {'MMD^2':>8s} {'wall s':>7s} "
          f"{'CPU s':>6s}")
    for name in ("8gaussians", "25gaussians"):
        data, held_out = toy_2d(name, 20000, seed=args.seed), toy_2d(name, 2000, seed=args.seed + 1)
        for label, (objective_kwargs, steps, fit_kwargs) in TOY_RUNS.items():
            torch.manual_seed(args.seed)
            gen, critic = MLPGenerator(2, latent_dim=2), MLPCritic(2)
            n = _steps(steps, args)
            wall, cpu = _train(gen, critic, data, objective_kwargs, n, fit_kwargs, 256, args.seed)
            samples = gen.sample(2500)
            cover = mode_coverage(samples, name)
            print(f"{name:12s} {label:18s} {n:6d} {cover['modes']:3d}/{cover['num_modes']:<2d} "
                  f"{cover['high_quality']:6.3f} {mmd2(samples[:2000], held_out):8.4f} {wall:7.1f} {cpu:6.1f}",
                  flush=True)


def run_digits(args):
    if args.data not in ("digits", "digits-continuous"):
        print(f"digits metrics: skipped (the feature classifier is for 8x8 digits, not {args.data!r})")
        return
    train = load_digits("train", "continuous", seed=args.seed, image=True)
    test = load_digits("test", "continuous", seed=args.seed, image=True)
    print("\ndigits, DCGAN-style generator: Frechet distance, precision and recall (k=3) in the "
          "classifier's feature space, 1,000 samples against the 360 test digits")
    print(f"{'objective':18s} {'channels':>8s} {'steps':>6s} {'FD':>7s} {'precision':>9s} {'recall':>6s} "
          f"{'wall s':>7s} {'CPU s':>6s}")
    ref = digits_quality(train, test)
    print(f"{'(train split)':18s} {'-':>8s} {'-':>6s} {ref['frechet']:7.2f} {ref['precision']:9.3f} "
          f"{ref['recall']:6.3f} {'-':>7s} {'-':>6s}")
    for label, (objective_kwargs, channels, steps, fit_kwargs) in DIGIT_RUNS.items():
        torch.manual_seed(args.seed)
        gen = DCGANGenerator((1, 8, 8), latent_dim=16, channels=channels)
        critic = DCGANCritic((1, 8, 8), channels=channels)
        n = _steps(steps, args)
        wall, cpu = _train(gen, critic, train, objective_kwargs, n, fit_kwargs, 64, args.seed)
        q = digits_quality(gen.sample(1000), test)
        print(f"{label:18s} {channels:8d} {n:6d} {q['frechet']:7.2f} {q['precision']:9.3f} {q['recall']:6.3f} "
              f"{wall:7.1f} {cpu:6.1f}", flush=True)


def run(args):
    torch.set_num_threads(1)
    run_toys(args)
    run_digits(args)
