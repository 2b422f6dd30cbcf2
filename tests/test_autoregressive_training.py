"""Autoregressive models trained on real data: binarized digits, grey levels, 2-D real values."""

import math

import pytest
import torch

import pyro_dgm
from pyro_dgm.data import load_digits, toy_2d
from pyro_dgm.models import DiagonalGaussian, FactorizedBernoulli
from pyro_dgm.models.autoregressive import MADE, NADE, AutoregressiveRNN, PixelCNN

pytestmark = pytest.mark.slow


def _fit_nll(model, x, xt, **fit_options):
    torch.manual_seed(0)
    pyro_dgm.fit(model.model, None, x, seed=0, progress=False, **fit_options)
    model.eval()
    return pyro_dgm.evaluate(model.model, xt)["nll"]


@pytest.fixture(scope="module")
def digits_baseline():
    x, xt = load_digits("train"), load_digits("test")
    return _fit_nll(FactorizedBernoulli(64), x, xt, epochs=30, lr=5e-2)


def test_pixelcnn_on_digits_needs_position_information(digits_baseline):
    """Zero padding on a zero background: learned position biases are worth nats on 8x8 digits."""
    x, xt = load_digits("train", image=True), load_digits("test", image=True)
    nll = {pos: _fit_nll(PixelCNN((1, 8, 8), hidden=16, num_layers=2, position_bias=pos), x, xt,
                         epochs=12, lr=5e-3, batch_size=64) for pos in (True, False)}
    assert nll[True] < digits_baseline - 5.0, (nll, digits_baseline)
    assert nll[True] < nll[False] - 0.5, nll


def test_made_ensemble_of_orderings_on_digits(digits_baseline):
    """8 random orderings: each beats the baseline, and the ensemble beats the average ordering."""
    x, xt = load_digits("train"), load_digits("test")
    made = MADE(64, hidden=(128, 128), num_masks=8, order="random")
    ensemble = _fit_nll(made, x, xt, epochs=25, lr=3e-3, batch_size=64)
    with torch.no_grad():
        single = [-float(made.log_prob_under(xt, k).mean()) for k in range(8)]
    assert ensemble < digits_baseline - 4.0, (ensemble, digits_baseline)
    assert max(single) < digits_baseline
    assert ensemble < sum(single) / 8 - 0.2, (ensemble, single)


@pytest.mark.parametrize("output", ["categorical", "logistic_mixture"])
def test_nade_on_grey_level_digits_beats_per_pixel_histograms(output):
    """17 grey levels: NADE with a categorical or a discretized logistic mixture beats independent histograms."""
    x, xt = load_digits("train", kind="levels"), load_digits("test", kind="levels")
    counts = torch.stack([torch.bincount(col.long(), minlength=17) for col in x.T]).float() + 1.0  # (64, 17)
    log_hist = (counts / counts.sum(1, keepdim=True)).log()
    per_pixel = -float(log_hist.gather(1, xt.T.long()).sum(0).mean())
    nade = NADE(64, hidden=64, output=output, num_levels=17, num_components=3)
    nll = _fit_nll(nade, x, xt, epochs=15, lr=5e-3, batch_size=64)
    assert nll < per_pixel - 10.0, (nll, per_pixel)
    assert nll / (64 * math.log(2)) < 2.2  # bits per dimension, out of log2(17) = 4.09


@pytest.mark.parametrize("make", [lambda: MADE(2, hidden=(64, 64), output="gaussian_mixture", num_components=8),
                                  lambda: AutoregressiveRNN(2, hidden=32, output="gaussian_mixture", num_components=8)],
                         ids=["made", "rnn"])
def test_gaussian_mixture_outputs_model_a_multimodal_density(make):
    """Eight Gaussians on a circle: mixtures of K Gaussians per conditional beat a diagonal Gaussian by far."""
    x, xt = toy_2d("8gaussians", 3000, seed=0), toy_2d("8gaussians", 1000, seed=1)
    diagonal = _fit_nll(DiagonalGaussian(2), x, xt, epochs=20, lr=5e-2)
    nll = _fit_nll(make(), x, xt, epochs=30, lr=1e-2, batch_size=200)
    assert nll < diagonal - 1.5, (nll, diagonal)
