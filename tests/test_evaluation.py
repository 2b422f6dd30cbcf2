"""evaluate is the one way to score any model: it dispatches on the distribution at the data site."""

import math

import pytest
import torch

import pyro_dgm
from pyro_dgm.inference import VESDE, probability_flow_nll
from pyro_dgm.partition import grid_log_partition
from pyro_dgm.registry import get_model


def test_an_ebm_is_scored_with_a_grid_log_z_that_matches_the_partition_module():
    torch.manual_seed(0)
    ebm = get_model("ebm-nce").build((2,), "points")
    x = torch.randn(100, 2)
    res = pyro_dgm.evaluate(ebm.model, x, log_normalizer="grid")
    bounds = max(4.0, 1.25 * float(x.abs().max()))
    log_z = grid_log_partition(ebm.energy, bounds=bounds, num_points=500)
    assert res["log_normalizer"] == pytest.approx(log_z, rel=1e-6)
    assert res["nll"] == pytest.approx(pyro_dgm.evaluate(ebm.model, x, log_normalizer=log_z)["nll"], rel=1e-6)
    assert "grid" in res["method"]
    with pytest.raises(ValueError, match="log_normalizer: expected a number, 'grid' or 'ais'"):
        pyro_dgm.evaluate(ebm.model, x, log_normalizer="simpson")


def test_an_ebm_with_a_known_normalizer_is_recovered_by_ais():
    """E(x) = |x|^2 / 2 in 2-D: Z = 2 pi; AIS within its error."""
    from pyro_dgm.distributions import UnnormalizedDistribution
    from pyro_dgm.evaluation import estimate_log_normalizer

    fn = UnnormalizedDistribution(lambda x: 0.5 * x.pow(2).sum(-1), torch.Size([2]))
    torch.manual_seed(0)
    log_z, how = estimate_log_normalizer(fn, torch.randn(500, 2) * 1.3, "ais")
    assert log_z == pytest.approx(math.log(2 * math.pi), abs=0.05), how


def test_a_score_field_is_scored_by_its_probability_flow():
    torch.manual_seed(0)
    model = get_model("ncsn").build((2,), "points")
    x = torch.randn(20, 2)
    res = pyro_dgm.evaluate(model.model, x, seed=0)
    field = model.distribution(2)
    sde = field.sde or VESDE(float(field.sigmas.min()), float(field.sigmas.max()))
    ref = probability_flow_nll(model.model, x, sde=sde, seed=0)
    assert res["nll"] == pytest.approx(ref["nll"], rel=1e-5) and "probability-flow" in res["method"]


def test_a_gan_is_scored_by_sample_metrics():
    from pyro_dgm.models import MLPGenerator

    torch.manual_seed(0)
    gen = MLPGenerator(2, hidden=(8,))
    x = torch.randn(200, 2) + 3.0
    res = pyro_dgm.evaluate(gen.model, x)
    near = pyro_dgm.evaluate(gen.model, gen.sample(200))
    assert "mmd2" in res and "MMD" in res["method"]
    assert res["mmd2"] > near["mmd2"]  # samples far from the data score worse than the model's own samples


def test_a_tuple_of_tensors_is_batched_together():
    """evaluate((x, y)) calls model(x, y) batch by batch, as fit does with a TensorDataset."""
    import pyro
    import pyro.distributions as dist

    def model(x, y):
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(x, 1.0), obs=y)

    torch.manual_seed(0)
    x = torch.randn(7)
    y = x + torch.randn(7)
    exact = -dist.Normal(x, 1.0).log_prob(y).mean().item()
    assert pyro_dgm.evaluate(model, (x, y), batch_size=3)["nll"] == pytest.approx(exact, rel=1e-6)


def test_a_seeded_evaluation_does_not_reseed_its_caller():
    """evaluate(seed=0) draws on a fork of the random state: the caller's stream goes on as if it had not run,
    so the next model of a loop gets new initial weights (before: torch.manual_seed(0) was left set and every
    later model started alike); the seed still fixes the estimate."""
    from pyro_dgm.models import VAE

    vae = VAE(8, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.rand(20, 8))
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = pyro_dgm.evaluate(vae.model, x, guide=vae.guide, num_particles=10, seed=0)["nll"]
    assert torch.equal(torch.get_rng_state(), state)
    assert pyro_dgm.evaluate(vae.model, x, guide=vae.guide, num_particles=10, seed=0)["nll"] == a
    assert pyro_dgm.evaluate(vae.model, x, guide=vae.guide, num_particles=10)["nll"] != a
    state = torch.get_rng_state()
    pyro_dgm.to_arviz(vae.model, vae.guide, x, num_samples=3, num_particles=4, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
