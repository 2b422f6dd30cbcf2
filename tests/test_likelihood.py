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
