"""Mixture of exact-likelihood models: its density, its weights (EM), its sampler, bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_dgm
from pyro_dgm.data import load_digits
from pyro_dgm.models import VAE, FactorizedBernoulli, Mixture
from pyro_dgm.models.autoregressive import FVSBN, MADE, NADE, GatedPixelCNN
from pyro_dgm.models.mixture import em_weights


def _coin(p):
    """A plain Pyro program: independent Bernoulli(p) pixels, 4 of them."""
    def program(x=None):
        n = 1 if x is None else x.shape[0]
        with pyro.plate("data", n):
            return pyro.sample("x", dist.Bernoulli(torch.full((n, 4), p)).to_event(1), obs=x)
    return program


def test_log_prob_is_the_weighted_logsumexp_of_the_components():
    torch.manual_seed(0)
    made = MADE(16, hidden=(32,), num_masks=3, order="random").eval()
    nade = NADE(16, hidden=8, num_orderings=2, order="random").eval()
    cnn = GatedPixelCNN((1, 4, 4), hidden=8, num_layers=2, kernel_size=3).eval()
    weights = torch.tensor([0.5, 0.3, 0.2])
    mix = Mixture([made, nade, cnn], weights)
    x = torch.bernoulli(torch.full((7, 16), 0.4))
    by_hand = torch.logsumexp(torch.stack([made.log_prob(x), nade.log_prob(x),
                                           cnn.log_prob(x.view(7, 1, 4, 4))]) + weights.log().unsqueeze(1), 0)
    torch.testing.assert_close(mix.log_prob(x), by_hand)
    result = pyro_dgm.evaluate(mix.model, x)  # one data site, scored exactly, components in eval mode
    assert result["nll"] == pytest.approx(-float(by_hand.detach().mean()), rel=1e-5)


def test_plain_pyro_program_component_density_and_sampling_follow_the_weights():
    ones, zeros = _coin(0.999), _coin(0.001)
    mix = Mixture([ones, zeros], weights=[0.3, 0.7], event_shape=4)
    x = torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]])
    expected = torch.tensor([0.3 * 0.999 ** 4 + 0.7 * 0.001 ** 4, 0.3 * 0.001 ** 4 + 0.7 * 0.999 ** 4]).log()
    torch.testing.assert_close(mix.log_prob(x), expected)
    torch.manual_seed(0)
    draws = mix.sample(4000)
    assert draws.shape == (4000, 4)
    assert float(draws.mean()) == pytest.approx(0.3 * 0.999 + 0.7 * 0.001, abs=0.025)  # s.e. about 0.007


def test_em_weights_recover_the_weights_of_a_known_mixture():
    torch.manual_seed(0)
    a, b = dist.Bernoulli(torch.full((6,), 0.8)).to_event(1), dist.Bernoulli(torch.full((6,), 0.3)).to_event(1)
    which = torch.rand(5000) < 0.25
    x = torch.where(which.unsqueeze(1), a.sample((5000,)), b.sample((5000,)))
    weights = em_weights(torch.stack([a.log_prob(x), b.log_prob(x)]), num_steps=200)
    assert float(weights[0]) == pytest.approx(0.25, abs=0.03)
    assert float(weights.sum()) == pytest.approx(1.0)


def _trained(model, x, epochs):
    pyro_dgm.fit(model.model, None, x, epochs=epochs, lr=1e-2, batch_size=64, seed=0, progress=False)
    return model.eval()


def test_mixture_with_weights_fitted_on_validation_beats_its_worse_component_on_test():
    x, xv, xt = (load_digits(split) for split in ("train", "val", "test"))
    torch.manual_seed(0)
    fvsbn, base = _trained(FVSBN(64), x, 15), _trained(FactorizedBernoulli(64), x, 15)
    mix = Mixture([fvsbn, base]).fit_weights(xv)
    nll = {name: pyro_dgm.evaluate(m.model, xt)["nll"] for name, m in
           (("fvsbn", fvsbn), ("base", base), ("mix", mix))}
    assert nll["mix"] < max(nll["fvsbn"], nll["base"]) - 1.0, nll
    assert nll["mix"] < min(nll["fvsbn"], nll["base"]) + 0.1, nll   # EM leans on the better one


def test_fit_trains_the_components_through_the_mixture():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((256, 4), 0.9))
    mix = Mixture([FactorizedBernoulli(4), FactorizedBernoulli(4)])
    before = pyro_dgm.evaluate(mix.model, x)["nll"]
    pyro_dgm.fit(mix.model, None, x, epochs=20, lr=5e-2, batch_size=64, seed=0, progress=False)
    after = pyro_dgm.evaluate(mix.model, x)["nll"]
    entropy = -4 * (0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # the data's, per example
    assert after < before - 1.0 and after == pytest.approx(entropy, abs=0.1)


@pytest.mark.parametrize("weights", [[0.5], [0.7, 0.7], [-0.5, 1.5], [float("nan"), 1.0]])
def test_bad_weights_are_refused(weights):
    with pytest.raises(ValueError, match="weights"):
        Mixture([FactorizedBernoulli(4), FactorizedBernoulli(4)], weights)


def test_bad_components_are_refused():
    with pytest.raises(ValueError, match="components"):
        Mixture([])
    with pytest.raises(ValueError, match=r"components\[1\]"):
        Mixture([FactorizedBernoulli(4), FactorizedBernoulli(5)])
    with pytest.raises(ValueError, match="event_shape"):
        Mixture([_coin(0.5)])
    mix = Mixture([FactorizedBernoulli(4), VAE(4, latent_dim=2, hidden=(8,))])
    with pytest.raises(ValueError, match=r"components\[1\].*latent"):
        mix.log_prob(torch.ones(2, 4))


def _benchmark(name):
    """A module of ``benchmarks/`` (scripts, not a package), imported once."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


@pytest.mark.parametrize("transpose, flip", [(False, ()), (False, (-1,)), (False, (-2,)), (False, (-2, -1)),
                                             (True, ()), (True, (-1,)), (True, (-2,)), (True, (-2, -1))])
def test_the_ensemble_benchmarks_reoriented_pixelcnn_is_a_normalized_density(transpose, flip):
    """``benchmarks/quality_ensemble.Reoriented`` (a gated PixelCNN read from another corner, a mixture
    member): over all 512 binary 3x3 images its probabilities sum to 1, it scores x as the inner model
    scores the moved pixels, and its samples are the inner model's moved back."""
    Reoriented = _benchmark("quality_ensemble").Reoriented
    torch.manual_seed(0)
    m = Reoriented((1, 3, 3), transpose=transpose, flip=flip, hidden=8, num_layers=2, kernel_size=3).eval()
    bits = torch.arange(512).unsqueeze(1).bitwise_right_shift(torch.arange(9)).bitwise_and(1)
    images = bits.float().reshape(512, 1, 3, 3)
    with torch.no_grad():
        log_p = m.distribution(512).log_prob(images)
        torch.testing.assert_close(log_p, m.inner.log_prob(m.forward_map(images)))
        assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-5)
        torch.testing.assert_close(m.inverse_map(m.forward_map(images)), images, rtol=0, atol=0)
        torch.manual_seed(1)
        drawn = m.sample(64)
        torch.manual_seed(1)
        torch.testing.assert_close(drawn, m.inverse_map(m.inner.sample(64)), rtol=0, atol=0)
    if transpose or flip:  # another raster order: not the same density as the inner model's on x itself
        assert not torch.allclose(log_p, m.inner.log_prob(images))
