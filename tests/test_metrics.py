"""Sample-quality metrics against closed forms, and the shipped digits classifier."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from pyro_dgm.data import TOY_STD, load_digits, mode_centers, split_indices, DIGITS_SPLIT, toy_2d
from pyro_dgm.metrics import (digits_classifier, digits_features, digits_quality, frechet_distance, mmd2,
                              mode_coverage, precision_recall)


def test_mmd2_matches_the_closed_form_for_two_gaussians():
    """1-D, one bandwidth s: E k(x, x') = s / sqrt(s^2 + v) exp(-m^2 / (2 (s^2 + v))) for x - x' ~ N(m, v)."""
    g = torch.Generator().manual_seed(0)
    s, shift = 1.0, 1.0
    x, y = torch.randn(2000, 1, generator=g), torch.randn(2000, 1, generator=g) + shift
    same = s / math.sqrt(s**2 + 2)
    expected = 2 * same * (1 - math.exp(-shift**2 / (2 * (s**2 + 2))))
    assert mmd2(x, y, bandwidths=[s]) == pytest.approx(expected, rel=0.1)
    assert abs(mmd2(x, torch.randn(2000, 1, generator=g), bandwidths=[s])) < 0.1 * expected


def test_mmd2_sums_kernels_and_is_unbiased_on_equal_samples():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g) * 1.5
    total = mmd2(x, y, bandwidths=(0.5, 2.0))
    assert total == pytest.approx(mmd2(x, y, bandwidths=[0.5]) + mmd2(x, y, bandwidths=[2.0]), rel=1e-9)
    draws = [mmd2(torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g)) for _ in range(200)]
    assert abs(np.mean(draws)) < 3 * np.std(draws) / math.sqrt(len(draws))
    assert min(draws) < 0  # unbiased: negative values occur


@pytest.mark.parametrize("name", sorted(TOY_STD))
def test_mode_coverage_of_the_data_itself(name):
    cover = mode_coverage(toy_2d(name, 5000, seed=3), name)
    assert cover["modes"] == cover["num_modes"] == len(mode_centers(name))
    # A 2-D Gaussian puts 1 - exp(-9/2) of its mass within 3 standard deviations.
    assert cover["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.005)


def test_mode_coverage_counts_missing_modes_and_off_mode_samples():
    centers = mode_centers("8gaussians")
    g = torch.Generator().manual_seed(0)
    on_three = centers[torch.arange(300) % 3] + TOY_STD["8gaussians"] * torch.randn(300, 2, generator=g)
    between = torch.zeros(100, 2)  # the center of the ring is 2 away from every mode
    cover = mode_coverage(torch.cat([on_three, between]), "8gaussians")
    assert cover["modes"] == 3 and cover["counts"][3:].sum() == 0
    assert cover["high_quality"] == pytest.approx(0.75 * (1 - math.exp(-4.5)), abs=0.02)
    stray = torch.cat([on_three, centers[3:4]])  # one sample on a 4th mode is below 1% of 301
    assert mode_coverage(stray, "8gaussians")["modes"] == 3


def test_frechet_distance_matches_the_formula_with_scipy_sqrtm():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    b = torch.randn(400, 4, generator=g, dtype=torch.float64) * 2 + 0.5
    ca, cb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    cross = scipy.linalg.sqrtm(ca @ cb).real
    expected = np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2) + np.trace(ca + cb - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_on_subsets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 2, generator=g)
    fake = real[real[:, 0] > 0] + 0.01  # half the support, sharp: high precision, recall about 1/2
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.95 and 0.4 < recall < 0.65
    wide = torch.randn(1000, 2, generator=g) * 4  # spread everywhere: high recall, low precision
    precision, recall = precision_recall(real, wide, k=3)
    assert precision < 0.5 and recall > 0.9
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_shipped_classifier_is_accurate_on_the_test_split():
    from sklearn.datasets import load_digits as sk_digits

    labels = torch.as_tensor(sk_digits().target)[split_indices(1797, "test", 0, DIGITS_SPLIT)]
    net = digits_classifier()
    for kind, floor in (("continuous", 0.95), ("binary", 0.9)):
        with torch.no_grad():
            acc = (net(load_digits("test", kind)).argmax(-1) == labels).float().mean()
        assert float(acc) > floor, kind
    assert digits_features(load_digits("test", image=True)).shape == (360, 32)


def test_digits_frechet_distance_near_zero_on_halves_and_growing_with_noise():
    x = load_digits("test", "continuous")
    half_a, half_b = x[:180], x[180:]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(half_b.shape, generator=g)
    results = [digits_quality((half_b + s * noise).clamp(0, 1), half_a) for s in (0.0, 0.2, 0.4, 0.8)]
    fds = [r["frechet"] for r in results]
    uniform = digits_quality(torch.rand(180, 64, generator=g), half_a)["frechet"]
    assert fds[0] < 0.1 * uniform  # two halves of one data set: near zero on the scale of the metric
    assert all(a < b for a, b in zip(fds, fds[1:]))
    assert fds[-1] > 3 * fds[0]
    assert results[0]["precision"] > 0.8 and results[0]["recall"] > 0.8
    assert results[-1]["precision"] < 0.5 * results[0]["precision"]


def test_bad_arguments_name_the_argument():
    x = torch.randn(10, 2)
    cases = [
        (lambda: mmd2(x, torch.randn(10, 3)), "y"),
        (lambda: mmd2(x, x, bandwidths=[0.0]), "bandwidths"),
        (lambda: mmd2(torch.randn(1, 2), x), "x"),
        (lambda: mode_coverage(x, "moons"), "name"),
        (lambda: mode_coverage(torch.randn(10, 3)), "samples"),
        (lambda: mode_coverage(x, min_fraction=2.0), "min_fraction"),
        (lambda: precision_recall(x, x, k=10), "k"),
        (lambda: frechet_distance(x, torch.randn(10, 3)), "b"),
        (lambda: digits_features(torch.rand(4, 63)), "x"),
    ]
    for make, word in cases:
        with pytest.raises(ValueError, match=word):
            make()
