import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_dgm.inference.likelihood import AnalyticKLEstimator
from pyro_dgm.models import VAE


@pytest.mark.parametrize("num_particles", [1, 3])
def test_analytic_kl_estimator_equals_pyros_trace_mean_field_elbo(num_particles):
    torch.manual_seed(0)
    vae = VAE(20, latent_dim=3, hidden=(16,))
    x = torch.bernoulli(torch.full((30, 20), 0.4))
    torch.manual_seed(5)
    ours = AnalyticKLEstimator(num_particles).differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(5)
    theirs = TraceMeanField_ELBO(num_particles=num_particles).differentiable_loss(vae.model, vae.guide, x)
    assert torch.allclose(ours, theirs, rtol=1e-5)
    g1 = torch.autograd.grad(ours, list(vae.parameters()))
    g2 = torch.autograd.grad(theirs, list(vae.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g1, g2))


def test_subsampling_scale_is_applied():
    torch.manual_seed(0)
    vae = VAE(6, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((10, 6), 0.5))

    def scaled_model(x):
        with pyro.poutine.scale(scale=4.0):
            return vae.model(x)

    def scaled_guide(x):
        with pyro.poutine.scale(scale=4.0):
            return vae.guide(x)

    torch.manual_seed(1)
    base = AnalyticKLEstimator().differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(1)
    scaled = AnalyticKLEstimator().differentiable_loss(scaled_model, scaled_guide, x)
    assert torch.allclose(scaled, 4 * base, rtol=1e-5)


def test_a_per_example_tensor_scale_gives_a_scalar_equal_to_pyros():
    torch.manual_seed(0)
    vae = VAE(6, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((10, 6), 0.5))
    weights = torch.linspace(0.5, 2.0, 10)
    model, guide = pyro.poutine.scale(vae.model, weights), pyro.poutine.scale(vae.guide, weights)
    torch.manual_seed(1)
    ours = AnalyticKLEstimator().differentiable_loss(model, guide, x)
    torch.manual_seed(1)
    theirs = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    assert ours.dim() == 0 and torch.allclose(ours, theirs, rtol=1e-5)


def test_an_autoguide_with_an_auxiliary_site_falls_back_to_trace_elbo():
    import pyro.distributions as dist
    from pyro.infer.autoguide import AutoDiagonalNormal

    import pyro_dgm
    from pyro_dgm.inference import ELBO

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    x = torch.randn(50) + 2.0
    guide = AutoDiagonalNormal(model)
    r = pyro_dgm.fit(model, guide, x, objective=ELBO(), epochs=300, batch_size=50, lr=0.05, progress=False)
    assert not r.objective.uses_analytic_kl
    assert guide.get_posterior().mean.item() == pytest.approx(x.sum().item() / (50 + 1 / 25), abs=0.1)
