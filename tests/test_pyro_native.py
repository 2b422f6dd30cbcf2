"""Programs written the way Pyro's tutorials write them train, sample and evaluate unchanged.

No pyro_dgm code inside these models: ``model(x)`` signatures, ``pyro.module``,
``pyro.param``, autoguides, data sites not named "x", Pyro's ELBO and optim
objects, global latents trained on minibatches.
"""

import math

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer import autoguide
from torch import nn
from torch.distributions import constraints
from torch.utils.data import TensorDataset

import pyro_dgm
from pyro_dgm.callbacks import EarlyStopping
from pyro_dgm.data import load_digits
from pyro_dgm.inference import ELBO, Adversarial, MaximumLikelihood, PyroELBO
from pyro_dgm.models import MLPCritic, VAE, FactorizedBernoulli, RealNVP
from pyro_dgm.programs import sample_program


@pytest.fixture(scope="module")
def digits():
    return load_digits("train")[:256]


# -- the tutorial VAE (Pyro's "Variational Autoencoders" tutorial, at 8x8) ------------------
class Decoder(nn.Module):
    def __init__(self, z_dim, hidden):
        super().__init__()
        self.fc1, self.fc21 = nn.Linear(z_dim, hidden), nn.Linear(hidden, 64)

    def forward(self, z):
        return torch.sigmoid(self.fc21(torch.relu(self.fc1(z))))


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(64, hidden), nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)

    def forward(self, x):
        h = torch.relu(self.fc1(x.reshape(-1, 64)))
        return self.fc21(h), torch.exp(self.fc22(h))


class TutorialVAE(nn.Module):
    def __init__(self, z_dim=4, hidden=64):
        super().__init__()
        self.encoder, self.decoder, self.z_dim = Encoder(z_dim, hidden), Decoder(z_dim, hidden), z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x.reshape(-1, 64))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


def test_tutorial_vae_trains_samples_and_evaluates(digits):
    torch.manual_seed(0)
    vae = TutorialVAE()
    r = pyro_dgm.fit(vae.model, vae.guide, digits, epochs=10, batch_size=32, seed=0, progress=False)
    assert r.objective.site == "obs"
    losses = r.losses["model"]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 5.0
    res = pyro_dgm.evaluate(vae.model, digits[:100], guide=vae.guide, num_particles=20)
    baseline = pyro_dgm.evaluate(FactorizedBernoulli(64).model, digits[:100])["nll"]  # 64 log 2 at p = 1/2
    assert res["nll"] < baseline - 5.0
    samples = sample_program(vae.model, 7, "obs", like=digits[:3])
    assert samples.shape == (7, 64) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_tutorial_vae_trained_by_svi_and_fit_agree(digits):
    """fit's loss on the tutorial VAE is Pyro's own ELBO per example."""
    torch.manual_seed(0)
    vae = TutorialVAE()
    x = digits[:64]
    pyro.set_rng_seed(3)
    ours = ELBO(analytic_kl=False)
    ours.site, ours.args = "obs", ()
    ours.setup(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    a = ours.loss("model", x).item()
    pyro.set_rng_seed(3)
    b = Trace_ELBO().loss(vae.model, vae.guide, x) / 64
    assert a == pytest.approx(b, rel=1e-5)


# -- flows built from Pyro's transforms ---------------------------------------------------
def _moons(n=512):
    torch.manual_seed(0)
    t = torch.rand(n) * math.pi
    x = torch.stack([torch.cos(t), torch.sin(t)], -1) + 0.1 * torch.randn(n, 2)
    return x - x.mean(0)


def test_pyro_transform_flow_as_plain_function():
    x = _moons()
    torch.manual_seed(0)
    transforms = [T.affine_coupling(2, hidden_dims=[32]), T.permute(2, torch.tensor([1, 0])),
                  T.affine_coupling(2, hidden_dims=[32])]
    flow = dist.TransformedDistribution(dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1), transforms)

    def model(data=None):
        pyro.module("flow", nn.ModuleList([t for t in transforms if isinstance(t, nn.Module)]))
        with pyro.plate("data", len(data) if data is not None else 100):
            pyro.sample("x", flow, obs=data)

    before = pyro_dgm.evaluate(model, x)["nll"]
    r = pyro_dgm.fit(model, None, x, epochs=30, batch_size=128, lr=1e-2, seed=0, progress=False)
    assert isinstance(r.objective, MaximumLikelihood)
    after = pyro_dgm.evaluate(model, x)["nll"]
    assert after < before - 0.3, (before, after)
    assert sample_program(model, 50, like=x).shape == (50, 2)


class PyroFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.iafs = nn.ModuleList([T.affine_autoregressive(2, hidden_dims=[32]) for _ in range(3)])

    def model(self, x):
        base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.TransformedDistribution(base, list(self.iafs)), obs=x)


def test_pyro_transform_flow_as_module_resumes(tmp_path):
    x = _moons()
    torch.manual_seed(0)
    f = PyroFlow()
    full = pyro_dgm.fit(f.model, None, x, epochs=4, batch_size=128, seed=0, progress=False)
    torch.manual_seed(0)
    g = PyroFlow()
    path = tmp_path / "flow.pt"
    pyro_dgm.fit(g.model, None, x, epochs=2, batch_size=128, seed=0, progress=False, checkpoint=path)
    torch.manual_seed(0)
    h = PyroFlow()
    resumed = pyro_dgm.fit(h.model, None, x, epochs=4, batch_size=128, seed=0, progress=False,
                           checkpoint=path, resume=True)
    assert resumed.losses["model"] == pytest.approx(full.losses["model"], rel=1e-5)
    assert full.losses["model"][-1] < full.losses["model"][0]


# -- an IAF guide for a VAE, from Pyro's transforms ------------------------------------------
def iaf_vae(z_dim=4):
    """A VAE whose guide is an encoder followed by one of Pyro's IAF transforms: (model, guide, networks)."""
    enc, dec = Encoder(z_dim, 64), Decoder(z_dim, 64)
    iaf = T.affine_autoregressive(z_dim, hidden_dims=[16])

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(dec(z), validate_args=False).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", enc)
        pyro.module("iaf", iaf)
        with pyro.plate("data", len(x)):
            loc, scale = enc(x)
            pyro.sample("z", dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), [iaf]))

    return model, guide, (enc, dec, iaf)


def test_vae_with_pyro_iaf_guide(digits):
    torch.manual_seed(0)
    model, guide, (enc, dec, iaf) = iaf_vae()
    r = pyro_dgm.fit(model, guide, digits, epochs=10, batch_size=32, seed=0, progress=False)
    assert not r.objective.uses_analytic_kl  # an IAF posterior has no closed-form KL
    groups = r.objective.param_groups()["model"]
    trained = {id(p) for m in groups for p in m.parameters()}
    assert all(id(p) in trained for m in (enc, dec, iaf) for p in m.parameters())
    losses = r.losses["model"]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 5.0


# -- global latents, minibatches, autoguides -----------------------------------------------
def coin_model(data):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Bernoulli(f), obs=data)


def coin_guide(data):
    alpha_q = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
    beta_q = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
    pyro.sample("latent_fairness", dist.Beta(alpha_q, beta_q))


def test_coin_example_on_minibatches_gives_the_exact_beta_posterior():
    data = torch.cat([torch.ones(60), torch.zeros(40)])  # Beta(10 + 60, 10 + 40) = Beta(70, 50)
    r = pyro_dgm.fit(coin_model, coin_guide, data, epochs=300, batch_size=10, lr=0.05, seed=0, progress=False)
    assert r.objective.site == "obs" and r.objective.plate == "data"
    a, b = pyro.param("alpha_q").item(), pyro.param("beta_q").item()
    mean, exact_mean = a / (a + b), 70 / 120
    std, exact_std = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))), math.sqrt(70 * 50 / (120 ** 2 * 121))
    assert mean == pytest.approx(exact_mean, abs=0.01), (a, b)
    assert std == pytest.approx(exact_std, rel=0.10), (a, b)  # unscaled: about Beta(16, 14), std 0.09


def test_minibatch_losses_average_to_the_full_data_loss():
    """With the same draw of the global latent, the N/B-scaled batch losses average to the full loss."""
    data = torch.cat([torch.ones(60), torch.zeros(40)])[torch.randperm(100)]
    r = pyro_dgm.fit(coin_model, coin_guide, data, steps=1, batch_size=10, progress=False)
    obj = r.objective
    full = ELBO(analytic_kl=True)
    full.site, full.num_data = "obs", 100
    full.setup(coin_model, coin_guide, data)
    with torch.no_grad():
        pyro.set_rng_seed(5)
        whole = float(full.loss("model", data))
        parts = []
        for i in range(0, 100, 10):
            pyro.set_rng_seed(5)
            parts.append(float(obj.loss("model", data[i:i + 10])))
    assert sum(parts) / 10 == pytest.approx(whole, rel=1e-5)
    assert obj.plate == "data" and full.plate is None


def gaussian_mean_model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)


@pytest.mark.parametrize("make_guide, rel", [(autoguide.AutoNormal, 0.10), (autoguide.AutoDiagonalNormal, 0.25)])
def test_gaussian_mean_posterior_std_from_minibatches(make_guide, rel):
    """N = 1000 at batch 10. Minibatch noise in the scale's gradient is averaged by 32 vectorized particles
    and a falling lr; AutoDiagonalNormal's sampled entropy is noisier, hence its wider tolerance."""
    torch.manual_seed(0)
    x = 1.5 + torch.randn(1000)
    guide = make_guide(gaussian_mean_model)
    elbo = pyro.infer.Trace_ELBO(num_particles=32, vectorize_particles=True, max_plate_nesting=1)
    pyro_dgm.fit(gaussian_mean_model, guide, x, objective=elbo, epochs=10, batch_size=10, lr=0.05, seed=0,
                 progress=False, scheduler=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 7], 0.3))
    post_var = 1.0 / (1 / 100 + 1000)
    exact_mean, exact_std = post_var * x.sum().item(), math.sqrt(post_var)
    q = guide.get_posterior() if isinstance(guide, autoguide.AutoContinuous) else None
    if q is None:
        loc, scale = guide.locs.mu.item(), guide.scales.mu.item()
    else:
        loc, scale = q.mean.item(), q.stddev.item()
    assert loc == pytest.approx(exact_mean, abs=3 * exact_std)
    assert scale == pytest.approx(exact_std, rel=rel), (scale, exact_std)


def test_without_scaling_the_gaussian_mean_posterior_would_be_far_too_wide():
    """The check above can fail: the unscaled minibatch posterior has std sqrt(N/B) = 10x too large."""
    torch.manual_seed(0)
    x = 1.5 + torch.randn(1000)
    guide = autoguide.AutoNormal(gaussian_mean_model)
    svi = SVI(gaussian_mean_model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for epoch in range(6):
        for i in range(0, 1000, 10):
            svi.step(x[i:i + 10])
    assert guide.scales.mu.item() > 3 * math.sqrt(1.0 / (1 / 100 + 1000))


@pytest.mark.parametrize("make_guide", [autoguide.AutoNormal, autoguide.AutoDiagonalNormal,
                                        autoguide.AutoMultivariateNormal,
                                        autoguide.AutoLowRankMultivariateNormal,
                                        autoguide.AutoIAFNormal, autoguide.AutoDelta])
def test_autoguides_are_found_trained_and_resumed(make_guide, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(200, 2) * 0.5 + torch.tensor([1.0, -2.0])

    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 5.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(mu, 0.5).to_event(1), obs=x)

    kwargs = {"hidden_dim": [8]} if make_guide is autoguide.AutoIAFNormal else {}
    guide = make_guide(model, **kwargs)
    path = tmp_path / "g.pt"
    r = pyro_dgm.fit(model, guide, x, epochs=40, batch_size=50, lr=0.05, seed=0, progress=False,
                     checkpoint=path)
    mu = Predictive(model, guide=guide, num_samples=200, return_sites=["mu"])(x)["mu"].mean(0).squeeze()
    assert torch.allclose(mu, x.mean(0), atol=0.15), mu
    # the checkpoint holds the guide's parameters and restores them into a fresh guide
    pyro.clear_param_store()
    fresh = make_guide(model, **kwargs)
    pyro_dgm.fit(model, fresh, x, epochs=40, batch_size=50, lr=0.05, seed=0, progress=False,
                 checkpoint=path, resume=True)
    old = {k: v for m in r.modules for k, v in m.state_dict().items()}
    new = {k: v for m in r.objective.param_groups()["model"] for k, v in m.state_dict().items()}
    restored = {k: v for k, v in fresh.state_dict().items()}
    assert restored.keys() == {k for k in old if k in restored} and restored
    for k in restored:
        assert torch.equal(restored[k], old[k]), k
    assert new.keys() == old.keys()


def test_per_example_autoguide_is_refused_on_minibatches():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    def model_with_global(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    x = torch.randn(100)
    for m in (model, model_with_global):
        for make in (autoguide.AutoNormal, autoguide.AutoDiagonalNormal):
            pyro.clear_param_store()
            with pytest.raises(ValueError, match="per-example parameters.*subsample"):
                pyro_dgm.fit(m, make(m), x, epochs=1, batch_size=10, progress=False)
    # full batch is fine
    pyro.clear_param_store()
    r = pyro_dgm.fit(model_with_global, autoguide.AutoNormal(model_with_global), x, epochs=3,
                     batch_size=100, progress=False)
    assert len(r.losses["model"]) == 3


def test_subsampled_plate_idiom_trains_a_local_autoguide_on_shuffled_minibatches():
    """Pyro's own idiom: plate(size=N, subsample=idx), indices as a batch item; AutoNormal indexes its params."""
    torch.manual_seed(0)
    n = 60
    x = torch.randn(n) * 2.0

    def model(x, idx):
        with pyro.plate("data", n, subsample=idx):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    guide = autoguide.AutoNormal(model, create_plates=lambda x, idx: pyro.plate("data", n, subsample=idx))
    r = pyro_dgm.fit(model, guide, TensorDataset(x, torch.arange(n)), epochs=300, batch_size=10, lr=0.05,
                     seed=0, progress=False)
    assert r.objective.plate is None  # the program scales itself
    # the exact posterior of each z_i is N(x_i / 2, 1/2)
    # every row where it belongs (a row fitted to random examples would be off by about 1 on average)
    err = (guide.locs.z.detach() - x / 2).abs().mean()
    shuffled = (guide.locs.z.detach() - x[torch.randperm(n)] / 2).abs().mean()
    assert err < 0.2 and shuffled > 4 * err, (err, shuffled)
    assert (guide.scales.z.detach() - math.sqrt(0.5)).abs().mean() < 0.15


GROUPS = 4


def hierarchical_model(x, g):
    """Group means theta_k ~ N(mu, tau) with global mu, tau; x_i ~ N(theta_{g_i}, 1)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfNormal(5.0))
    with pyro.plate("groups", GROUPS):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(theta[g], 1.0), obs=x)


def hierarchical_data(n=400):
    g = torch.arange(n) % GROUPS
    return torch.tensor([-2.0, 0.0, 1.0, 3.0])[g] + torch.randn(n), g


def test_hierarchical_model_with_groups_as_a_batch_item():
    """(x, group) batches call model(x, group); a global hierarchy trained on minibatches."""
    torch.manual_seed(0)
    groups, model = GROUPS, hierarchical_model
    x, g = hierarchical_data()
    guide = autoguide.AutoNormal(model)
    pyro_dgm.fit(model, guide, TensorDataset(x, g), epochs=20, batch_size=40, lr=0.05, seed=0, progress=False)
    post = Predictive(model, guide=guide, num_samples=400, return_sites=["theta"])(x, g)["theta"]
    means = torch.stack([x[g == k].mean() for k in range(groups)])
    assert torch.allclose(post.mean(0).squeeze(), means, atol=0.2)
    # posterior std of each theta_k is about 1/sqrt(100) = 0.1
    assert torch.allclose(post.std(0).squeeze(), torch.full((groups,), 0.1), atol=0.06)


def test_minibatches_without_a_data_plate_are_refused_for_global_latents():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        pyro.sample("obs", dist.Normal(mu, 1.0).expand([len(x)]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="inside pyro.plate"):
        pyro_dgm.fit(model, autoguide.AutoNormal(model), torch.randn(100), batch_size=10, progress=False)


# -- Pyro's own objects ------------------------------------------------------------------
@pytest.mark.parametrize("elbo", [pyro.infer.Trace_ELBO(), pyro.infer.TraceMeanField_ELBO(),
                                  pyro.infer.TraceGraph_ELBO(), pyro.infer.RenyiELBO(alpha=0.5, num_particles=2)])
def test_pyro_elbo_objects_train_the_tutorial_vae(elbo, digits):
    torch.manual_seed(0)
    vae = TutorialVAE()
    r = pyro_dgm.fit(vae.model, vae.guide, digits, objective=elbo, epochs=6, batch_size=32, seed=0,
                     optimizer=pyro.optim.Adam({"lr": 1e-3}), progress=False)
    assert isinstance(r.objective, PyroELBO)
    losses = r.losses["model"]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 3.0, (losses[:8], losses[-8:])


def test_pyro_optim_options_are_used():
    torch.manual_seed(0)
    vae = VAE(64, latent_dim=2, hidden=(16,))
    x = torch.bernoulli(torch.rand(64, 64))
    r = pyro_dgm.fit(vae.model, vae.guide, x, steps=2, progress=False,
                     optimizer=pyro.optim.ClippedAdam({"lr": 0.0123, "clip_norm": 5.0}))
    opt = r.optimizers["model"]
    assert type(opt).__name__ == "ClippedAdam" and opt.param_groups[0]["lr"] == 0.0123
    r = pyro_dgm.fit(vae.model, vae.guide, x, steps=2, progress=False, optimizer=pyro.optim.Adam({"lr": 0.5}),
                     lr=0.01)
    assert r.optimizers["model"].param_groups[0]["lr"] == 0.01  # an explicit lr= wins


@pytest.mark.parametrize("bad, match", [
    (lambda: torch.optim.Adam([nn.Parameter(torch.zeros(1))]), "optimizer instance"),
    (lambda: 3, "optimizer: expected"),
    (lambda: dict, "not a torch.optim.Optimizer"),
    (lambda: pyro.optim.Adam(lambda name, p: {"lr": 1e-3}), "per-parameter"),
])
def test_unusable_optimizers_are_named(bad, match):
    vae = VAE(8, latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=match):
        pyro_dgm.fit(vae.model, vae.guide, torch.bernoulli(torch.rand(16, 8)), steps=1, optimizer=bad(),
                     progress=False)


def test_unusable_objective_is_named():
    vae = VAE(8, latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="objective: expected.*got SVI"):
        pyro_dgm.fit(vae.model, vae.guide, torch.bernoulli(torch.rand(16, 8)), steps=1, progress=False,
                     objective=SVI(vae.model, vae.guide, pyro.optim.Adam({}), Trace_ELBO()))


def test_trace_enum_elbo_on_an_enumerated_mixture():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(150) - 3.0, torch.randn(150) + 3.0])

    @pyro.infer.config_enumerate
    def model(x):
        w = pyro.param("w", torch.ones(2) / 2, constraint=constraints.simplex)
        locs = pyro.param("locs", torch.tensor([-0.5, 0.5]))
        with pyro.plate("data", len(x)):
            k = pyro.sample("k", dist.Categorical(w))
            pyro.sample("obs", dist.Normal(locs[k], 1.0), obs=x)

    def guide(x):
        """Nothing to guide: TraceEnum_ELBO sums the discrete k out exactly."""

    r = pyro_dgm.fit(model, guide, x, objective=pyro.infer.TraceEnum_ELBO(max_plate_nesting=1), epochs=150,
                     batch_size=300, lr=0.05, seed=0, progress=False)
    locs = pyro.param("locs").detach().sort().values
    assert torch.allclose(locs, torch.tensor([-3.0, 3.0]), atol=0.3), locs
    assert r.losses["model"][-1] < r.losses["model"][0]


# -- Pyro's machinery on pyro_dgm's models -------------------------------------------------
def test_svi_trains_pyro_dgm_vae(digits):
    torch.manual_seed(0)
    vae = VAE(64, latent_dim=4, hidden=(32,))
    before = [p.detach().clone() for p in vae.parameters()]
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    losses = [svi.step(digits[:64]) / 64 for _ in range(150)]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 5.0
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))
    assert set(pyro.get_param_store().keys())  # registered under a name of its own


def test_svi_trains_pyro_dgm_flow():
    x = _moons()
    torch.manual_seed(0)
    flow = RealNVP(2, num_couplings=4, hidden=(32,))
    before = pyro_dgm.evaluate(flow.model, x)["nll"]
    svi = SVI(flow.model, lambda x: None, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    for _ in range(100):
        svi.step(x)
    assert pyro_dgm.evaluate(flow.model, x)["nll"] < before - 0.3


def test_two_library_models_do_not_share_parameters_under_svi(digits):
    torch.manual_seed(0)
    a, b = VAE(64, latent_dim=2, hidden=(8,)), VAE(64, latent_dim=2, hidden=(8,))
    a_before = [p.detach().clone() for p in a.parameters()]
    svi = SVI(b.model, b.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(digits[:32])
    svi_a = SVI(a.model, a.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi_a.evaluate_loss(digits[:32])
    assert all(torch.equal(p, q) for p, q in zip(a_before, a.parameters()))


def test_predictive_condition_and_trace_on_a_library_model():
    torch.manual_seed(0)
    vae = VAE(8, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.rand(5, 8))
    out = Predictive(vae.model, guide=vae.guide, num_samples=3)(x)
    assert out["x"].shape == (3, 5, 8)
    z = torch.zeros(5, 2)
    tr = poutine.trace(poutine.condition(vae.model, data={"z": z})).get_trace(x)
    assert torch.equal(tr.nodes["z"]["value"], z)


# -- the data site and the default objective -------------------------------------------------
def test_site_is_found_named_or_refused_when_ambiguous():
    def model(x, y):
        p = pyro.param("p", torch.tensor(0.5), constraint=constraints.unit_interval)
        with pyro.plate("data", len(x)):
            pyro.sample("a", dist.Bernoulli(p), obs=x)
            pyro.sample("b", dist.Bernoulli(p), obs=y)

    x = torch.bernoulli(torch.full((40,), 0.8))
    with pytest.raises(ValueError, match="several sites observe the data"):
        pyro_dgm.fit(model, None, TensorDataset(x, x.clone()), steps=1, progress=False)
    r = pyro_dgm.fit(model, None, TensorDataset(x, x.clone()), epochs=100, batch_size=40, lr=0.05, site="a",
                     progress=False)
    assert r.objective.site == "a"
    assert pyro.param("p").item() == pytest.approx(float(x.mean()), abs=0.03)
    with pytest.raises(ValueError, match="no sample site 'c'"):
        pyro_dgm.fit(model, None, TensorDataset(x, x.clone()), steps=1, site="c", progress=False)


def test_default_objective_follows_the_data_site():
    from pyro_dgm.inference import DenoisingScoreMatching
    from pyro_dgm.registry import get_model

    x = torch.randn(64, 2)
    ebm = get_model("ebm-cd").build((2,), "points")
    with pytest.raises(ValueError, match="ContrastiveDivergence.*NoiseContrastiveEstimation.*ScoreMatching"):
        pyro_dgm.fit(ebm.model, None, x, steps=1, progress=False)
    with pytest.raises(ValueError, match="unnormalized"):
        pyro_dgm.fit(ebm.model, None, x, steps=1, progress=False, objective=MaximumLikelihood())
    with pytest.raises(ValueError, match="log_normalizer"):
        pyro_dgm.evaluate(ebm.model, x)
    score = get_model("ncsn").build((2,), "points")
    r = pyro_dgm.fit(score.model, None, x, steps=2, progress=False)
    assert isinstance(r.objective, DenoisingScoreMatching)


# -- a GAN whose generator is a plain function -------------------------------------------------
def plain_generator():
    """A GAN generator as a plain function: x = G(z) at site "x", G registered with pyro.module."""
    net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))

    def generator(x):
        pyro.module("generator", net)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 4), 1.0).to_event(1))
            pyro.sample("x", dist.Delta(net(z), event_dim=1), obs=x)

    return generator


def test_plain_function_gan_generator_trains_with_adversarial():
    torch.manual_seed(0)
    x = torch.randn(512, 2) * 0.3 + torch.tensor([2.0, -1.0])
    generator = plain_generator()

    critic = MLPCritic(2, hidden=(32,))
    before = sample_program(generator, 500, like=x).mean(0)
    pyro_dgm.fit(generator, None, x, objective=Adversarial(critic), epochs=40, batch_size=64, lr=2e-3, seed=0,
                 progress=False)
    after = sample_program(generator, 500, like=x).mean(0)
    assert (after - x.mean(0)).norm() < 0.5 * (before - x.mean(0)).norm(), (before, after)



def test_weight_average_with_no_module_averages_a_plain_generator_and_leaves_the_critic_live():
    """``WeightAverage()`` on a GAN whose generator is a plain function with ``pyro.module``: the same
    weights as ``WeightAverage(net)``, bit for bit, for the generator's network and the (live) critic."""
    from pyro_dgm.callbacks import WeightAverage

    def run(given):
        pyro.clear_param_store()  # pyro.module would hand the second run the first one's trained weights
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        critic = MLPCritic(2, hidden=(16,))

        def generator(x):
            pyro.module("generator", net)
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 4), 1.0).to_event(1))
                pyro.sample("x", dist.Delta(net(z), event_dim=1), obs=x)

        average = WeightAverage(net if given else None, decay=0.5)
        pyro_dgm.fit(generator, None, torch.randn(256, 2), objective=Adversarial(critic), steps=6, batch_size=64,
                     seed=0, progress=False, callbacks=[average])
        return net, critic, average

    net, critic, average = run(given=False)
    net_given, critic_given, _ = run(given=True)
    assert len(average.average) == len(list(net.parameters()))
    for a, b in [(net, net_given), (critic, critic_given)]:
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)

# -- evaluate ---------------------------------------------------------------------------
def test_evaluate_global_latents_is_the_exact_posterior_predictive():
    """Conjugate Gaussian mean: the posterior predictive N(m_n, 1 + v_n) in closed form."""
    torch.manual_seed(0)
    x, x_test = 1.0 + torch.randn(1), 1.0 + torch.randn(200)
    v = 1.0 / (1 / 100 + 1)
    m = v * x.sum()

    def guide(x):
        pyro.sample("mu", dist.Normal(m, math.sqrt(v)))

    res = pyro_dgm.evaluate(gaussian_mean_model, x_test, guide=guide, num_particles=2000, seed=0)
    exact = -dist.Normal(m, math.sqrt(1 + v)).log_prob(x_test).mean().item()
    assert res["nll"] == pytest.approx(exact, abs=0.02)
    plug_in = -dist.Normal(m, 1.0).log_prob(x_test).mean().item()
    assert abs(plug_in - exact) > 0.1  # the test can tell the predictive from the plug-in


def test_evaluate_in_eval_mode_and_discrete_bits():
    made = pyro_dgm.models.MADE(16, hidden=(32,), num_masks=4)
    x = torch.bernoulli(torch.rand(20, 16))
    made.train()
    a = pyro_dgm.evaluate(made.model, x)["nll"]
    b = pyro_dgm.evaluate(made.model, x)["nll"]
    assert a == b and made.training  # the ensemble in eval mode, every time; the mode restored
    flow = RealNVP(4, num_couplings=2, hidden=(8,))
    res = pyro_dgm.evaluate(flow.model, torch.rand(10, 4), num_levels=256)
    assert res["bits_per_dim_discrete"] == pytest.approx(res["bits_per_dim"] + 8.0)


def test_pyro_module_with_pyro_sample_and_pyro_param_regression_on_minibatches():
    """Pyro's Bayesian regression tutorial: PyroSample weights, a PyroParam noise scale, model(x, y) with obs=y."""
    from pyro.nn import PyroModule, PyroParam, PyroSample

    class BayesianRegression(PyroModule):
        def __init__(self):
            super().__init__()
            self.linear = PyroModule[nn.Linear](3, 1)
            self.linear.weight = PyroSample(dist.Normal(0.0, 10.0).expand([1, 3]).to_event(2))
            self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))
            self.sigma = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

        def forward(self, x, y=None):
            mean = self.linear(x).squeeze(-1)
            with pyro.plate("data", x.shape[0]):
                return pyro.sample("obs", dist.Normal(mean, self.sigma), obs=y)

    torch.manual_seed(0)
    x = torch.randn(500, 3)
    w, b = torch.tensor([1.0, -2.0, 0.5]), 0.3
    y = x @ w + b + 0.5 * torch.randn(500)
    model = BayesianRegression()
    guide = autoguide.AutoNormal(model)
    stop = EarlyStopping((x[:100], y[:100]), patience=100)  # validation batches are (x, y) too
    r = pyro_dgm.fit(model, guide, TensorDataset(x, y), epochs=30, batch_size=50, lr=0.03, seed=0, progress=False,
                     callbacks=[stop])
    assert r.objective.site == "obs" and r.objective.plate == "data"
    assert len(stop.history) == 30 and stop.history[-1] < stop.history[0]
    assert model.sigma.item() == pytest.approx(0.5, rel=0.1)
    post = Predictive(model, guide=guide, num_samples=300, return_sites=["linear.weight"])(x)["linear.weight"]
    assert torch.allclose(post.mean(0).squeeze(), w, atol=0.06)


def test_jit_svi_on_a_library_model_registered_by_the_user_too():
    """pyro.module("vae", vae) around the library's programs: one name per tensor, so JitTrace_ELBO traces."""
    vae = VAE(16, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.rand(8, 16))

    def model(x):
        pyro.module("vae", vae)
        return vae.model(x)

    def guide(x):
        pyro.module("vae", vae)
        return vae.guide(x)

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.JitTrace_ELBO())
    assert math.isfinite(svi.step(x))
    assert all(k.startswith("vae$$$") for k in pyro.get_param_store().keys())


def test_samplers_run_on_a_plain_pyro_program():
    """A tutorial-style program as the target of Langevin and NUTS, through log_density."""
    from pyro_dgm.inference import langevin, nuts
    from pyro_dgm.programs import log_density

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(torch.tensor([2.0, -1.0]), 0.5).to_event(1), obs=x)

    target = log_density(model, "obs")
    x = langevin(torch.zeros(4000, 2), log_prob=target, step_size=0.01, num_steps=500)
    assert torch.allclose(x.mean(0), torch.tensor([2.0, -1.0]), atol=0.05)
    assert torch.allclose(x.std(0), torch.full((2,), 0.5), atol=0.05)
    out = nuts(torch.zeros(1, 2), log_prob=target, num_samples=300, warmup_steps=150)
    assert torch.allclose(out.chain.reshape(-1, 2).mean(0), torch.tensor([2.0, -1.0]), atol=0.15)


# -- what a user of Pyro's tutorials found (stop 33) -------------------------------------
def _local_and_global_model(x):
    """mu ~ N(0, 10), z_i ~ N(mu, 1), x_i ~ N(z_i, 1): AutoNormal keeps one row of z per example."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x)


def test_full_batch_keeps_each_example_at_its_autoguide_row():
    """One batch of all the data is not reordered: with shuffle (the default), row i of AutoNormal's z still
    meets example i, as under SVI (before, every row drifted to the mean: max error 2.27 against 0.54)."""
    torch.manual_seed(0)
    n = 30
    x = 2 + torch.randn(n) * 2 ** 0.5
    v = 1 / (1 / 100 + n / 2)
    exact = (x + v * x.sum() / 2) / 2  # E[z_i | x]
    locs = {}
    for shuffle in (True, False):
        pyro.clear_param_store()
        guide = autoguide.AutoNormal(_local_and_global_model)
        pyro_dgm.fit(_local_and_global_model, guide, x, steps=300, batch_size=n, shuffle=shuffle, lr=0.1, seed=0,
                     progress=False)
        locs[shuffle] = pyro.param("AutoNormal.locs.z").detach().clone()
    assert torch.equal(locs[True], locs[False])
    assert (locs[True] - exact).abs().max() < 1.0, (locs[True] - exact).abs().max()


def test_an_autoguide_drawing_its_own_subsample_is_refused_and_the_subsampled_loss_is_per_example():
    """model(x, idx) with plate(N, subsample=idx): an AutoNormal without create_plates draws other indices
    (refused); with them the loss is per example of the full data, as on the plain plate fit scales."""
    torch.manual_seed(0)
    n = 30
    x = 2 + torch.randn(n) * 2 ** 0.5

    def model(x, idx):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", n, subsample=idx):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    data = TensorDataset(x, torch.arange(n))
    with pytest.raises(ValueError, match="own subsample of plate 'data'.*create_plates"):
        pyro_dgm.fit(model, autoguide.AutoNormal(model), data, steps=1, batch_size=10, progress=False)
    pyro.clear_param_store()
    guide = autoguide.AutoNormal(model, create_plates=lambda x, idx: pyro.plate("data", n, subsample=idx))
    sub = pyro_dgm.fit(model, guide, data, steps=900, batch_size=10, lr=0.05, seed=0, progress=False)
    pyro.clear_param_store()
    full = pyro_dgm.fit(_local_and_global_model, autoguide.AutoNormal(_local_and_global_model), x, steps=900,
                        batch_size=n, lr=0.05, seed=0, progress=False)
    tail = [sum(r.losses["model"][-90:]) / 90 for r in (sub, full)]
    assert tail[0] == pytest.approx(tail[1], rel=0.05), tail  # was N/B = 3 times the full-data value


def test_renyi_elbo_at_alpha_0_trains_its_own_bound_not_the_elbo():
    """RenyiELBO(alpha=0, K) is IWAE: fit's loss and gradients are Pyro's divided by N (scaling the log-weights
    by 1/N inside the programs, as before, made it the ELBO: 2.459 against the bound's 1.79)."""
    torch.manual_seed(0)
    n = 100
    x = torch.randn(n) * 2 ** 0.5

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(a * x, 1.0))

    iwae = pyro.infer.RenyiELBO(alpha=0.0, num_particles=300)
    exact = -dist.Normal(0.0, 2 ** 0.5).log_prob(x).mean().item()
    elbo = pyro.infer.Trace_ELBO(num_particles=300).loss(model, guide, x) / n
    r = pyro_dgm.fit(model, guide, x, objective=iwae, steps=1, lr=1e-9, batch_size=n, seed=0, progress=False)
    assert r.losses["model"][0] == pytest.approx(exact, abs=0.05) and elbo > exact + 0.5
    pyro.set_rng_seed(1)
    a = pyro.param("a").unconstrained()
    a.grad = None
    iwae.loss_and_grads(model, guide, x)
    expected = a.grad.clone() / n
    pyro.set_rng_seed(1)
    a.grad = None
    r.objective.loss("model", x)
    torch.testing.assert_close(a.grad, expected)


def test_a_model_latent_left_out_of_the_guide_is_scored_by_sampling_as_svi_does():
    """A latent the guide leaves out (here a per-example Bernoulli) rules out the closed-form KL: the default
    objective estimates the ELBO by sampling, as Trace_ELBO under SVI (before: KeyError 'k')."""
    data = torch.randn(50) + 3

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            k = pyro.sample("k", dist.Bernoulli(0.9))
            pyro.sample("obs", dist.Normal(mu, 1.0 + k), obs=data)

    def guide(data):
        pyro.sample("mu", dist.Normal(pyro.param("loc", torch.tensor(0.0)),
                                      pyro.param("sc", torch.tensor(1.0), constraint=constraints.positive)))

    with pytest.warns(UserWarning, match="in model but not guide"):  # Pyro's own warning, as under SVI
        r = pyro_dgm.fit(model, guide, data, steps=300, lr=0.05, progress=False, seed=0)
    assert not r.objective.uses_analytic_kl
    assert pyro.param("loc").item() == pytest.approx(data.mean().item(), abs=0.3)
    with pytest.raises(ValueError, match=r"analytic_kl=True: the model's latent site\(s\) \['k'\]"):
        pyro_dgm.fit(model, guide, data, steps=1, objective=ELBO(analytic_kl=True), progress=False)


def _logistic_regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 3.0))
    with pyro.plate("data", len(x)):
        return pyro.sample("obs", dist.Bernoulli(logits=w * x), obs=y)


def test_a_regression_is_checked_on_the_y_it_observes_not_on_x():
    """model(x, y) with obs=y: the Bernoulli's support holds for y; real x is fine (before: refused as
    'outside the support'), and a NaN or a 2 in y is refused before any step."""
    torch.manual_seed(0)
    x = torch.randn(200)
    y = torch.bernoulli(torch.sigmoid(2 * x))
    pyro_dgm.fit(_logistic_regression, autoguide.AutoNormal(_logistic_regression), (x, y), epochs=30,
                 batch_size=50, lr=0.05, seed=0, progress=False)
    assert pyro.param("AutoNormal.locs.w").item() == pytest.approx(2.0, abs=0.8)
    for bad, match in ((float("nan"), "batch item 1, observed at site 'obs'.*NaN"), (2.0, "outside the support")):
        y_bad = y.clone()
        y_bad[-1] = bad
        pyro.clear_param_store()
        seen = []
        with pytest.raises(ValueError, match=match):
            pyro_dgm.fit(_logistic_regression, autoguide.AutoNormal(_logistic_regression), (x, y_bad), epochs=1,
                         batch_size=50, shuffle=False, progress=False, callbacks=[lambda s: seen.append(s.step)])
        assert seen == []
        loader = torch.utils.data.DataLoader(TensorDataset(x, y_bad), batch_size=50)
        pyro.clear_param_store()
        with pytest.raises(ValueError, match="outside the support" if bad == 2.0 else "NaN"):
            pyro_dgm.fit(_logistic_regression, autoguide.AutoNormal(_logistic_regression), loader, epochs=1,
                         progress=False)


def test_to_arviz_and_evaluate_of_a_regression_report_y():
    """to_arviz finds the site observing y (before: 'no sample site observes the data', or x as the observed
    data); evaluate's bits are per dimension of y and its method names the posterior predictive."""
    torch.manual_seed(0)

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(x @ w, 1.0), obs=y)

    x = torch.randn(40, 3)
    y = x.sum(1) + torch.randn(40)
    guide = autoguide.AutoNormal(model)
    pyro_dgm.fit(model, guide, (x, y), epochs=100, batch_size=40, lr=0.1, seed=0, progress=False)
    idata = pyro_dgm.to_arviz(model, guide, (x, y), num_samples=10, seed=0)
    assert torch.equal(torch.as_tensor(idata.observed_data["obs"].values), y)
    assert idata.log_likelihood["obs"].shape == (1, 10, 40)
    assert idata.posterior_predictive["obs"].shape == (1, 10, 40)
    res = pyro_dgm.evaluate(model, (x, y), guide=guide, num_particles=10, seed=0)
    assert res["bits_per_dim"] == pytest.approx(res["nll"] / math.log(2))
    assert res["method"].startswith("posterior predictive")

    def plain(x, y=None):  # no latents: y ~ p(y | x) drawn for each example
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(x.sum(1), 1.0), obs=y)

    idata = pyro_dgm.to_arviz(plain, None, (x, y), num_samples=5, seed=0)
    pred = torch.as_tensor(idata.posterior_predictive["obs"].values)
    assert pred.shape == (1, 5, 40) and (pred - x.sum(1)).abs().mean() < 1.5
    exact = dist.Normal(x.sum(1), 1.0).log_prob(y)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["obs"].values).reshape(-1).float(), exact)


def test_a_pyro_scheduler_is_taken_as_svi_takes_it():
    """optimizer=pyro.optim.ExponentialLR({...}): its optimizer and its scheduler, stepped every epoch
    (before: TypeError "'Adam' object is not iterable" as scheduler=, refused as optimizer=)."""
    data = torch.cat([torch.ones(60), torch.zeros(40)])
    model, guide = coin_model, coin_guide
    scheduler = pyro.optim.ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.05},
                                          "gamma": 0.5})
    r = pyro_dgm.fit(model, guide, data, epochs=3, batch_size=50, optimizer=scheduler, progress=False)
    assert type(r.optimizers["model"]).__name__ == "SGD"
    assert r.optimizers["model"].param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 ** 3)
    with pytest.raises(ValueError, match="pass it as optimizer="):
        pyro_dgm.fit(model, guide, data, steps=1, scheduler=scheduler, progress=False)
    with pytest.raises(ValueError, match="scheduler: expected a callable"):
        pyro_dgm.fit(model, guide, data, steps=1, scheduler=3, progress=False)


@pyro.infer.config_enumerate
def _mixture(data):
    """Pyro's Gaussian mixture tutorial, with the assignment enumerated."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(2)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def test_an_enumerated_assignment_is_summed_out_in_evaluate_and_to_arviz():
    """The tutorial mixture with AutoDelta at known values: evaluate, held_out_log_likelihood and to_arviz give
    the mixture density exactly (before: the assignment drawn from the prior and its log p added unweighted,
    NLL 2.447 against 1.745, log-likelihoods down to -136)."""
    from pyro.infer.autoguide.initialization import init_to_value

    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    theta = {"weights": torch.tensor([0.4, 0.6]), "scale": torch.tensor(0.7), "locs": torch.tensor([0.5, 11.0])}
    guide = autoguide.AutoDelta(poutine.block(_mixture, expose=list(theta)), init_loc_fn=init_to_value(values=theta))
    guide(data)
    exact = torch.logsumexp(theta["weights"].log() + dist.Normal(theta["locs"], theta["scale"]).log_prob(data[:, None]),
                            -1)
    assert pyro_dgm.evaluate(_mixture, data, guide=guide, seed=0)["nll"] == pytest.approx(-exact.mean().item(),
                                                                                            abs=1e-5)
    held_out = pyro_dgm.arviz.held_out_log_likelihood(_mixture, data, guide=guide, num_particles=3, seed=0)
    torch.testing.assert_close(torch.as_tensor(held_out).float(), exact)
    idata = pyro_dgm.to_arviz(_mixture, guide, data, num_samples=3, num_particles=2, seed=0)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["obs"].values).float(), exact.expand(1, 3, 5))


def test_evaluate_takes_device_auto_as_fit_does():
    made = pyro_dgm.models.MADE(8, hidden=(16,))
    x = torch.bernoulli(torch.rand(10, 8))
    assert pyro_dgm.evaluate(made.model, x, device="auto")["nll"] == pyro_dgm.evaluate(made.model, x)["nll"]
    with pytest.raises(ValueError, match="device: unknown device 'gpu0'"):
        pyro_dgm.evaluate(made.model, x, device="gpu0")


def test_a_program_drawing_its_own_subsample_size_is_refused_with_the_rewrite():
    """SVI tutorial part II's pyro.plate("data", len(data), subsample_size=10) with obs=data[ind]: before,
    "no sample site observes the data", or with site="obs" a shape mismatch that said nothing of subsampling."""
    data = torch.randn(100) + 3

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data), subsample_size=10) as ind:
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data[ind])

    def guide(data):
        pyro.sample("mu", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    for site in (None, "obs"):
        with pytest.raises(ValueError, match=r"subsample_size=10.*pyro.plate\('data', len\(x\)\).*batch_size=10"):
            pyro_dgm.fit(model, guide, data, steps=1, batch_size=100, site=site, progress=False)
    with pytest.raises(ValueError, match="subsample_size=10"):
        pyro_dgm.evaluate(model, data, guide=guide)


def _batchnorm_flow():
    """A script's flow: Pyro's transforms built beside the program, registered with pyro.module."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    bn, coupling = T.batchnorm(2), T.affine_coupling(2, hidden_dims=[16])
    flow = nn.ModuleList([coupling, bn])
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)

    def model(x):
        pyro.module("flow", flow)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.TransformedDistribution(base, [coupling, bn]), obs=x)

    return flow, bn, model


def test_a_network_a_plain_program_registers_is_fit_s_module_buffers_mode_and_dtype_included(tmp_path):
    """pyro.module("flow", flow) in a plain function: fit trains flow as a module, so its BatchNorm statistics
    resume exactly, it is left in eval mode (evaluate does not move them), and a float64 net gets float64
    data (before: only its parameters were found; moving mean 1.79 resumed against 1.98 straight, training
    mode after fit, and 'mat1 and mat2 must have the same dtype')."""
    torch.manual_seed(0)
    data = torch.randn(512, 2) * torch.tensor([3.0, 0.5]) + 2
    flow, bn, model = _batchnorm_flow()
    r = pyro_dgm.fit(model, None, data, steps=40, batch_size=64, seed=0, progress=False)
    assert r.modules == [flow] and not flow.training
    straight = bn.moving_mean.clone()
    pyro_dgm.evaluate(model, data[:100])
    assert torch.equal(bn.moving_mean, straight)
    path = tmp_path / "flow.pt"
    _, _, model = _batchnorm_flow()
    pyro_dgm.fit(model, None, data, steps=20, batch_size=64, seed=0, checkpoint=path, progress=False)
    _, bn, model = _batchnorm_flow()
    pyro_dgm.fit(model, None, data, steps=40, batch_size=64, seed=0, checkpoint=path, resume=True, progress=False)
    assert torch.equal(bn.moving_mean, straight)

    net = nn.Linear(2, 2).double()
    frozen = nn.Linear(2, 2).double().requires_grad_(False)

    def m64(x):
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(net(frozen(torch.ones_like(x))), 1.0).to_event(1), obs=x)

    before = frozen.weight.clone()
    r = pyro_dgm.fit(m64, None, torch.randn(64, 2, dtype=torch.float64), steps=3, progress=False)
    assert r.modules == [net] and math.isfinite(r.losses["model"][-1])
    assert torch.equal(frozen.weight, before)  # named but not registered: not trained
