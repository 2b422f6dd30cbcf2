"""VAEs: the IWAE bound beats the baseline and tightens with K; decoders, conv, utilities."""

import math

import pytest
import torch

import pyro_dgm
from pyro_dgm.data import load_digits
from pyro_dgm.evaluation import iwae_log_weights
from pyro_dgm.models import VAE, ConvVAE, FactorizedBernoulli


@pytest.fixture(scope="module")
def trained():
    """A VAE and the factorized baseline, trained on binarized digits."""
    x = load_digits("train")
    torch.manual_seed(0)
    vae = VAE(64, latent_dim=8, hidden=(128,))
    pyro_dgm.fit(vae.model, vae.guide, x, epochs=60, batch_size=64, seed=0, progress=False)
    base = FactorizedBernoulli(64)
    pyro_dgm.fit(base.model, None, x, epochs=30, lr=5e-2, seed=0, progress=False)
    return vae, base, load_digits("test")


def test_iwae_beats_baseline_and_rises_with_k(trained):
    vae, base, xt = trained
    nll = {k: pyro_dgm.evaluate(vae.model, xt, guide=vae.guide, num_particles=k, seed=1) for k in (1, 10, 100)}
    baseline = pyro_dgm.evaluate(base.model, xt)
    assert nll[100]["nll"] < baseline["nll"] - 3.0, (nll[100], baseline)
    tol = 3 * nll[1]["nll_stderr"] / math.sqrt(len(xt))  # noise of the bound itself, far below example spread
    assert nll[10]["nll"] <= nll[1]["nll"] + tol
    assert nll[100]["nll"] <= nll[10]["nll"] + tol
    assert nll[1]["nll"] - nll[100]["nll"] > 0.1  # the bound really tightens
    assert math.isclose(nll[100]["bits_per_dim"], nll[100]["nll"] / (64 * math.log(2)))


def test_iwae_with_one_particle_is_the_elbo(trained):
    vae, _, xt = trained
    torch.manual_seed(0)
    with torch.no_grad():
        log_w = iwae_log_weights(vae.model, vae.guide, xt[:50], num_particles=400)
    elbo = log_w.mean()  # average of log weights = ELBO estimate
    k1 = pyro_dgm.evaluate(vae.model, xt[:50], guide=vae.guide, num_particles=1, seed=3)["nll"]
    assert abs(-float(elbo) - k1) < 0.5
    # and Pyro's own Trace_ELBO agrees on the same model/guide
    from pyro.infer import Trace_ELBO
    pyro_elbo = -Trace_ELBO(num_particles=200, vectorize_particles=False).loss(vae.model, vae.guide, xt[:50]) / 50
    assert abs(float(elbo) - pyro_elbo) < 0.3


def test_reconstruct_sample_interpolate(trained):
    vae, base, xt = trained
    rec = vae.reconstruct(xt[:100])
    assert rec.shape == (100, 64) and 0 <= rec.min() and rec.max() <= 1
    err_vae = torch.nn.functional.binary_cross_entropy(rec, xt[:100])
    err_mean = torch.nn.functional.binary_cross_entropy(torch.sigmoid(base.logits).expand(100, 64), xt[:100])
    assert err_vae < 0.6 * err_mean
    s = vae.sample(7)
    assert s.shape == (7, 64) and set(s.unique().tolist()) <= {0.0, 1.0}
    path = vae.interpolate(xt[0], xt[1], steps=5)
    assert path.shape == (5, 64)
    assert torch.allclose(path[0], rec[0], atol=1e-5) and torch.allclose(path[-1], rec[1], atol=1e-5)


def test_gaussian_decoder_learns_continuous_digits():
    x = load_digits("train", kind="continuous")[:512]
    vae = VAE(64, latent_dim=4, hidden=(64,), likelihood="gaussian")
    r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=25, batch_size=64, seed=0, progress=False)
    before, after = sum(r.losses["model"][:8]) / 8, sum(r.losses["model"][-8:]) / 8
    assert after < before - 40
    assert vae.sample(3).shape == (3, 64)


def test_conv_vae_trains_on_images():
    x = load_digits("train", image=True)[:256]
    assert x.shape == (256, 1, 8, 8)
    vae = ConvVAE((1, 8, 8), latent_dim=4, channels=(8, 16))
    r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=8, batch_size=32, seed=0, progress=False)
    assert sum(r.losses["model"][-8:]) < sum(r.losses["model"][:8])
    assert vae.sample(2).shape == (2, 1, 8, 8)
    res = pyro_dgm.evaluate(vae.model, x[:32], guide=vae.guide, num_particles=5)
    assert math.isfinite(res["nll"]) and res["bits_per_dim"] == pytest.approx(res["nll"] / (64 * math.log(2)))


def test_bad_vae_arguments():
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        VAE(4, likelihood="poisson")
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(4, latent_dim=0)
    with pytest.raises(ValueError, match="event_shape: ConvVAE needs"):
        ConvVAE((8, 8))
    with pytest.raises(ValueError, match="num_particles"):
        pyro_dgm.evaluate(VAE(4).model, torch.zeros(2, 4), guide=VAE(4).guide, num_particles=0)


@pytest.mark.parametrize("kwargs, match", [({"hidden": (0,)}, "hidden"), ({"latent_dim": 2.7}, "latent_dim"),
                                           ({"latent_dim": 0}, "latent_dim")])
def test_bad_sizes_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=f"^{match}: expected an integer >= 1"):
        VAE(64, **kwargs)
