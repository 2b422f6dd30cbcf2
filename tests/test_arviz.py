import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import autoguide

import pyro_dgm
from pyro_dgm.arviz import ARVIZ_MAJOR, chains_to_arviz, elpd_data, held_out_log_likelihood
from pyro_dgm.data import load_digits
from pyro_dgm.models import EBM, MADE, VAE, FactorizedBernoulli
from pyro_dgm.models.ebm import EnergyMLP


def _loo_elpd(loo):
    """elpd_loo of ``az.loo``'s result, arviz 0.x (a Series) or 1.x (a dataclass)."""
    return float(loo["elpd_loo"]) if hasattr(loo, "index") else float(loo.elpd)


# -- a linear-Gaussian model whose log p(x) is known: x ~ N(b, W W^T + sigma^2 I) ------------------
K, D, SIGMA = 2, 6, 0.3
_g = torch.Generator().manual_seed(0)
W, B = torch.randn(D, K, generator=_g), torch.randn(D, generator=_g)
MARGINAL = dist.MultivariateNormal(B, W @ W.T + SIGMA ** 2 * torch.eye(D))
POST_COV = torch.linalg.inv(torch.eye(K) + W.T @ W / SIGMA ** 2)  # of z given x, for every x


def linear_gaussian(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + B, SIGMA).to_event(1), obs=x)


def posterior_guide(inflate=1.0):
    """q(z|x) = N(S W^T (x - b) / sigma^2, (inflate^2) S): exact for inflate = 1."""
    scale_tril = torch.linalg.cholesky(POST_COV) * inflate

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal((x - B) @ W @ POST_COV / SIGMA ** 2, scale_tril=scale_tril))

    return guide


@pytest.fixture(scope="module")
def gaussian_data():
    torch.manual_seed(1)
    x = MARGINAL.sample((200,))
    return x, MARGINAL.log_prob(x).double().numpy()


def test_linear_gaussian_log_likelihood_is_the_exact_log_marginal(gaussian_data):
    x, exact = gaussian_data
    idata = pyro_dgm.to_arviz(linear_gaussian, posterior_guide(1.2), x, num_samples=20, num_particles=100, seed=0)
    est = idata.log_likelihood["x"].values
    assert est.shape == (1, 1, 200)
    err = est.reshape(-1) - exact
    # IWAE with a 1.2x-too-wide proposal and K = 100: every example within 0.2 nats, no bias across examples
    assert np.abs(err).max() < 0.2, np.abs(err).max()
    assert abs(err.mean()) < 3 * err.std() / math.sqrt(err.size) + 1e-3, (err.mean(), err.std())
    # the guide's per-example draws are kept for inspection, under a name that says what they are
    assert idata.posterior["z_given_x"].shape == (1, 20, 200, K)
    assert list(idata.posterior["z_given_x"].dims) == ["chain", "draw", "example", "z_dim"]
    assert idata.posterior_predictive["x"].shape == (1, 20, 200, D)


def test_compare_elpd_is_the_exact_sum_and_harmonic_mean_is_too_high(gaussian_data):
    x, exact = gaussian_data
    table = pyro_dgm.compare({"exact q": (linear_gaussian, posterior_guide(1.0)),
                              "wide q": (linear_gaussian, posterior_guide(1.2))}, x, num_particles=100, seed=0)
    for name in table.index:
        elpd, se = table.loc[name, "elpd"], table.loc[name, "se"]
        assert abs(elpd - exact.sum()) < se, (name, elpd, exact.sum(), se)
        assert abs(elpd - exact.sum()) < 1.0, (name, elpd, exact.sum())  # far tighter than se here
        assert se == pytest.approx(math.sqrt(exact.size * exact.var()), rel=0.01)
    assert table.loc["exact q", "elpd"] == pytest.approx(exact.sum(), abs=1e-2)  # IWAE is exact with exact q
    # The old semantics: log p(x_i | z_s) with z_s ~ q(z | x_i), read by log-mean-exp over S draws,
    # uses x_i twice and reads several nats per example too high (well outside se).
    s = 100
    guide_trace = poutine.trace(posterior_guide(1.0)).get_trace(x.repeat(s, 1))
    model_trace = poutine.trace(poutine.replay(linear_gaussian, trace=guide_trace)).get_trace(x.repeat(s, 1))
    log_lik = model_trace.nodes["x"]["fn"].log_prob(x.repeat(s, 1)).reshape(s, -1)
    old = (torch.logsumexp(log_lik, 0) - math.log(s)).double().numpy()
    assert (old - exact).mean() > 2.0
    assert old.sum() - exact.sum() > 5 * table.loc["exact q", "se"]


# -- global latents: a Gaussian mean with a conjugate prior --------------------------------------
TAU0, NOISE = 2.0, 1.0


def gaussian_mean(x):
    mu = pyro.sample("mu", dist.Normal(0.0, TAU0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu, NOISE), obs=x)


def conjugate_posterior(x):
    """(mean, variance) of mu given x."""
    precision = 1 / TAU0 ** 2 + len(x) / NOISE ** 2
    return float(x.sum()) / NOISE ** 2 / precision, 1 / precision


def exact_guide(x_train):
    mean, var = conjugate_posterior(x_train)

    def guide(x):
        pyro.sample("mu", dist.Normal(mean, math.sqrt(var)))

    return guide


def exact_loo(x):
    total = 0.0
    for i in range(len(x)):
        mean, var = conjugate_posterior(torch.cat([x[:i], x[i + 1:]]))
        total += float(dist.Normal(mean, math.sqrt(var + NOISE ** 2)).log_prob(x[i]))
    return total


def test_global_latents_log_likelihood_per_draw_and_loo_is_exact():
    torch.manual_seed(2)
    x = 1.0 + NOISE * torch.randn(30)
    idata = pyro_dgm.to_arviz(gaussian_mean, exact_guide(x), x, num_samples=1000, seed=0)
    assert idata.log_likelihood["x"].shape == (1, 1000, 30)
    assert idata.posterior["mu"].shape == (1, 1000)
    assert idata.posterior_predictive["x"].shape == (1, 1000, 30)
    mu = torch.as_tensor(idata.posterior["mu"].values.reshape(-1, 1))
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], dist.Normal(mu, NOISE).log_prob(x).numpy(),
                               rtol=1e-5, atol=1e-5)  # log p(x_i | mu_s)
    assert float(idata.posterior["mu"].mean()) == pytest.approx(conjugate_posterior(x)[0], abs=0.02)
    # PSIS-LOO over draws of mu is the exact leave-one-out predictive sum, to Monte Carlo error (~0.01)
    assert _loo_elpd(az.loo(idata)) == pytest.approx(exact_loo(x), abs=0.1)


def test_global_and_local_latents_marginalize_the_local_ones():
    """x_i = mu + z_i + noise: log p(x_i | mu_s) = log N(x_i; mu_s, 1 + s^2), z_i integrated out by IWAE."""
    s = 0.5

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(mu + z, s), obs=x)

    def guide(x):
        mu = pyro.sample("mu", dist.Normal(1.0, 0.3))
        with pyro.plate("data", len(x)):  # the exact q(z_i | x_i, mu): the IWAE estimate is exact
            pyro.sample("z", dist.Normal((x - mu) / (1 + s ** 2), s / math.sqrt(1 + s ** 2)))

    x = torch.randn(8) * 1.5 + 1.0
    idata = pyro_dgm.to_arviz(model, guide, x, num_samples=15, num_particles=4, seed=0)
    assert list(idata.posterior.data_vars) == ["mu"]
    mu = torch.as_tensor(idata.posterior["mu"].values.reshape(-1, 1))
    exact = dist.Normal(mu, math.sqrt(1 + s ** 2)).log_prob(x).numpy()
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], exact, atol=1e-4)


def test_compare_scores_global_latent_models_by_the_posterior_predictive():
    torch.manual_seed(3)
    x_train, x_test = 1.0 + torch.randn(40), 1.0 + torch.randn(60)
    mean, var = conjugate_posterior(x_train)
    exact = float(dist.Normal(mean, math.sqrt(var + NOISE ** 2)).log_prob(x_test).sum())

    def off_guide(x):
        pyro.sample("mu", dist.Normal(-1.0, 0.1))

    table = pyro_dgm.compare({"off": (gaussian_mean, off_guide), "exact": (gaussian_mean, exact_guide(x_train))},
                             x_test, num_particles=200, seed=0)
    assert list(table.index) == ["exact", "off"]
    assert table.loc["exact", "elpd"] == pytest.approx(exact, abs=0.2)
    assert table.loc["exact", "weight"] > 0.9
    assert table.loc["off", "elpd_diff"] == pytest.approx(table.loc["off", "elpd"] - table.loc["exact", "elpd"])
    assert table.loc["off", "elpd_diff"] < 0 < table.loc["off", "dse"]


# -- a tutorial-style program: model(x) only, data site "obs", an autoguide ----------------------
def tutorial_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def test_tutorial_program_with_autoguide():
    torch.manual_seed(4)
    x = 2.0 + 0.5 * torch.randn(100)
    guide = autoguide.AutoNormal(tutorial_model)
    pyro_dgm.fit(tutorial_model, guide, x, steps=200, batch_size=100, lr=0.05, seed=0, progress=False)
    idata = pyro_dgm.to_arviz(tutorial_model, guide, x, num_samples=200, seed=0)
    assert idata.log_likelihood["obs"].shape == (1, 200, 100)
    assert idata.posterior_predictive["obs"].shape == (1, 200, 100)
    summary = az.summary(idata, var_names=["loc", "scale"], kind="stats")
    # the posterior sds are about 0.05 and 0.035: the fitted q is within 2 of them of the sample moments
    assert summary.loc["loc", "mean"] == pytest.approx(float(x.mean()), abs=0.1)
    assert summary.loc["scale", "mean"] == pytest.approx(float(x.std()), abs=0.07)
    # two parameters: PSIS-LOO's effective number of parameters is about 2
    lppd = float(np.sum(np.log(np.mean(np.exp(idata.log_likelihood["obs"].values[0]), 0))))
    assert 1.0 < lppd - _loo_elpd(az.loo(idata)) < 3.5


def test_tuple_batches_call_model_with_labels():
    def model(x, y):
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(y.float().unsqueeze(-1).expand(len(x), 2), 1.0).to_event(1), obs=x)

    x, y = torch.zeros(5, 2), torch.tensor([0, 1, 0, 1, 0])
    idata = pyro_dgm.to_arviz(model, None, (x, y), num_samples=7)
    exact = dist.Normal(y.float().unsqueeze(-1), 1.0).log_prob(x).sum(-1).numpy()
    np.testing.assert_allclose(idata.log_likelihood["obs"].values.reshape(-1), exact, rtol=1e-6)
    assert idata.posterior_predictive["obs_sample"].shape == (1, 7, 2)


# -- VAE vs MADE on binary digits --------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_and_made():
    x = load_digits("train")[:512]
    torch.manual_seed(0)
    vae = VAE(64, latent_dim=4, hidden=(64,))
    pyro_dgm.fit(vae.model, vae.guide, x, epochs=10, batch_size=64, seed=0, progress=False)
    made = MADE(64, hidden=(128,))
    pyro_dgm.fit(made.model, None, x, epochs=60, batch_size=64, seed=0, progress=False)
    return vae, made, load_digits("test")[:100]


def test_compare_ranks_vae_and_made_as_evaluate_does(vae_and_made):
    vae, made, xt = vae_and_made
    table = pyro_dgm.compare({"vae": (vae.model, vae.guide), "made": made.model}, xt, num_particles=50, seed=0)
    nll = {"vae": pyro_dgm.evaluate(vae.model, xt, guide=vae.guide, num_particles=50, seed=1)["nll"],
           "made": pyro_dgm.evaluate(made.model, xt)["nll"]}
    assert list(table.index) == sorted(nll, key=nll.get)
    for name in nll:  # elpd is minus the NLL summed: the MADE exactly, the VAE up to IWAE noise
        assert table.loc[name, "elpd"] / len(xt) == pytest.approx(-nll[name], abs=0.1 if name == "vae" else 1e-4)
    assert {"elpd", "se", "dse", "weight"} <= set(table.columns)
    assert table.loc[table.index[1], "dse"] > 0 and table["weight"].sum() == pytest.approx(1.0, abs=1e-6)


def test_vae_groups_shapes_and_dims(vae_and_made):
    vae, _, xt = vae_and_made
    xt = xt[:40]
    idata = pyro_dgm.to_arviz(vae.model, vae.guide, xt, num_samples=30, num_particles=50, seed=0)
    assert idata.log_likelihood["x"].shape == (1, 1, 40)
    assert idata.posterior["z_given_x"].shape == (1, 30, 40, 4)
    assert idata.posterior_predictive["x"].shape == (1, 30, 40, 64)
    np.testing.assert_array_equal(idata.observed_data["x"].values, xt.numpy())
    torch.manual_seed(0)
    again = held_out_log_likelihood(vae.model, xt, vae.guide, num_particles=50)
    np.testing.assert_allclose(idata.log_likelihood["x"].values.reshape(-1), again, atol=0.5)
    assert len(az.summary(idata, var_names=["z_given_x"], kind="stats")) == 40 * 4


# -- exact densities, EBMs, bad input ----------------------------------------------------------
def test_density_model_without_guide():
    m = FactorizedBernoulli(4)
    x = torch.zeros(6, 4)
    idata = pyro_dgm.to_arviz(m.model, None, x, num_samples=8)
    np.testing.assert_allclose(idata.log_likelihood["x"].values, np.full((1, 1, 6), 4 * np.log(0.5)), rtol=1e-6)
    assert idata.posterior_predictive["x_sample"].shape == (1, 8, 4)


def test_ebm_needs_a_log_normalizer():
    ebm = EBM(EnergyMLP(2, hidden=(8,)), event_shape=2, base_scale=1.0, num_steps=2)
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="log_normalizer"):
        pyro_dgm.to_arviz(ebm.model, None, x)
    with pytest.raises(ValueError, match="log_normalizer"):
        pyro_dgm.compare({"ebm": ebm.model}, x)
    idata = pyro_dgm.to_arviz(ebm.model, None, x, num_samples=3, log_normalizer=1.5)
    with torch.no_grad():
        expected = (-ebm.energy(x) - 1.5).numpy()
    np.testing.assert_allclose(idata.log_likelihood["x"].values.reshape(-1), expected, rtol=1e-5)
    table = pyro_dgm.compare({"ebm": ebm.model}, x, log_normalizers={"ebm": 1.5})
    assert table.loc["ebm", "elpd"] == pytest.approx(float(expected.sum()), rel=1e-5)


def test_elpd_data_holds_the_sum_and_se():
    values = np.array([-1.0, -2.0, -4.0])
    a, b = elpd_data(values), elpd_data(values - 0.5)
    table = az.compare({"b": b, "a": a}, **({"round_to": "none"} if ARVIZ_MAJOR >= 1 else {}))
    assert list(table.index) == ["a", "b"]
    col = "elpd" if ARVIZ_MAJOR >= 1 else "elpd_loo"
    assert table.loc["a", col] == pytest.approx(-7.0)
    assert table.loc["a", "se"] == pytest.approx(math.sqrt(3 * values.var()))
    with pytest.raises(ValueError, match="pointwise"):
        elpd_data(np.array([-1.0, np.nan]))


def test_chains_to_arviz_rhat():
    torch.manual_seed(0)
    good = chains_to_arviz(torch.randn(4, 500, 2))
    assert float(az.rhat(good)["x"].max()) < 1.02
    stuck = torch.randn(4, 500, 2) + torch.arange(4.0).reshape(4, 1, 1) * 3
    assert float(az.rhat(chains_to_arviz(stuck))["x"].min()) > 1.5


def test_bad_data():
    with pytest.raises(ValueError, match="data: expected a non-empty tensor"):
        pyro_dgm.to_arviz(FactorizedBernoulli(4).model, None, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="models"):
        pyro_dgm.compare({"m": (FactorizedBernoulli(4).model, None, None)}, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="guide"):
        pyro_dgm.to_arviz(linear_gaussian, None, torch.zeros(3, D))
    with pytest.raises(ValueError, match="num_particles"):
        pyro_dgm.compare({"m": FactorizedBernoulli(4).model}, torch.zeros(3, 4), num_particles=0)
    with pytest.raises(ValueError, match="site"):  # a tutorial program whose data site is "obs", asked for "y"
        pyro_dgm.to_arviz(tutorial_model, None, torch.zeros(3), site="y")


def test_to_arviz_and_compare_estimate_an_ebm_s_log_z_as_evaluate_does():
    """log_normalizer="grid", which the refusal recommends, works in to_arviz and compare as in evaluate
    (before: "could not convert string to float: 'grid'"); on an energy that is exactly N(0, I)."""
    from pyro_dgm.distributions import UnnormalizedDistribution

    def ebm(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", UnnormalizedDistribution(lambda v: 0.5 * v.pow(2).sum(-1), torch.Size([2])), obs=x)

    def gauss(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1), obs=x)

    torch.manual_seed(0)
    x = torch.randn(50, 2)
    exact = dist.Normal(0.0, 1.0).log_prob(x).sum(-1)
    idata = pyro_dgm.to_arviz(ebm, None, x, log_normalizer="grid")
    np.testing.assert_allclose(idata.log_likelihood["x"].values.reshape(-1), exact.numpy(), atol=1e-3)
    table = pyro_dgm.compare({"ebm": ebm, "gauss": gauss}, x, log_normalizers={"ebm": "grid"})
    assert table.loc["ebm", "elpd"] == pytest.approx(table.loc["gauss", "elpd"], abs=0.05)
    with pytest.raises(ValueError, match="'grid' estimates the log Z of an unnormalized density"):
        pyro_dgm.to_arviz(gauss, None, x, log_normalizer="grid")
