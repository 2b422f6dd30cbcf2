"""Samplers on known targets: moments, acceptance, r_hat."""

import math

import arviz as az
import pytest
import torch

from pyro_dgm.samplers import SamplerResult, hmc, hmc_step, langevin, mala, mala_step, nuts

MU = torch.tensor([1.0, -1.0])
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
PREC = torch.linalg.inv(COV)


def gauss_log_prob(x):
    d = x - MU
    return -0.5 * ((d @ PREC) * d).sum(-1)


# two-Gaussian mixture, equal weights, means +-m, isotropic std s
M2 = torch.tensor([1.0, 0.5])
S2 = 0.6


def mixture_log_prob(x):
    a = -(x - M2).pow(2).sum(-1) / (2 * S2 ** 2)
    b = -(x + M2).pow(2).sum(-1) / (2 * S2 ** 2)
    return torch.logaddexp(a, b)


MIX_COV = S2 ** 2 * torch.eye(2) + torch.outer(M2, M2)  # mean 0


def moments(x):
    x = x.reshape(-1, x.shape[-1])
    return x.mean(0), torch.cov(x.T)


def test_langevin_keeps_signature_and_matches_correlated_gaussian():
    x, chain = langevin(torch.zeros(2000, 2), log_prob=gauss_log_prob, step_size=0.02, num_steps=400,
                        noise_scale=1.0, return_chain=True, thin=100)
    assert chain.shape == (4, 2000, 2)
    m, c = moments(x)
    assert torch.allclose(m, MU, atol=0.08)
    assert torch.allclose(c, COV, atol=0.1)


def test_mala_correlated_gaussian_moments_and_acceptance():
    r = mala(torch.zeros(1000, 2), log_prob=gauss_log_prob, step_size=1.0, num_steps=200, adapt_steps=150,
             return_chain=True, thin=20)
    assert 0.4 <= r.accept_rate <= 0.9
    assert r.chain.shape == (10, 1000, 2)
    m, c = moments(r.chain)
    assert torch.allclose(m, MU, atol=0.05)
    assert torch.allclose(c, COV, atol=0.06)


def test_mala_two_gaussian_mixture_moments():
    x0 = torch.randn(2000, 2) * 2
    r = mala(x0, log_prob=mixture_log_prob, step_size=0.3, num_steps=300, adapt_steps=100)
    m, c = moments(r.x)
    assert m.abs().max() < 0.1
    assert torch.allclose(c, MIX_COV, atol=0.12)
    # both components are visited in equal proportion
    frac = float(((r.x @ M2) > 0).float().mean())
    assert abs(frac - 0.5) < 0.05


def test_mala_rhat_over_four_overdispersed_chains():
    x0 = torch.tensor([[4.0, 4.0], [-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0]])
    r = mala(x0, log_prob=gauss_log_prob, step_size=0.5, num_steps=4000, adapt_steps=500, return_chain=True)
    idata = r.to_arviz()
    assert float(az.rhat(idata)["x"].max()) < 1.05
    assert float(az.ess(idata)["x"].min()) > 300


def test_nuts_rhat_and_moments_through_pyro():
    r = nuts(torch.randn(4, 2) * 3, log_prob=gauss_log_prob, num_samples=250, warmup_steps=150)
    assert r.chain.shape == (250, 4, 2)
    idata = r.to_arviz()
    assert float(az.rhat(idata)["x"].max()) < 1.05
    m, c = moments(r.chain)
    assert torch.allclose(m, MU, atol=0.15)
    assert torch.allclose(c, COV, atol=0.2)
    assert 0.5 < r.accept_rate <= 1.0


def test_hmc_full_mass_moments_through_pyro():
    r = hmc(torch.randn(4, 2), log_prob=gauss_log_prob, num_samples=300, warmup_steps=200, num_leapfrog=4,
            full_mass=True)
    assert len(r.step_size) == 4
    idata = r.to_arviz()
    assert float(az.rhat(idata)["x"].max()) < 1.05
    m, c = moments(r.chain)
    assert torch.allclose(m, MU, atol=0.15)
    assert torch.allclose(c, COV, atol=0.2)


def test_batched_hmc_step_leaves_mixture_invariant():
    x = torch.randn(4000, 2) * 2
    for _ in range(60):
        x, a = hmc_step(x, mixture_log_prob, 0.25, 6)
    assert float(a.mean()) > 0.8
    m, c = moments(x)
    assert m.abs().max() < 0.1
    assert torch.allclose(c, MIX_COV, atol=0.12)


def test_mala_step_accepts_per_chain():
    x = torch.zeros(500, 2)
    y, lp, g, a = mala_step(x, gauss_log_prob, 1.0)  # a large step: some chains reject
    moved = (y != x).any(-1)
    assert a.shape == (500,) and 0 < int(moved.sum()) < 500
    assert torch.allclose(lp, gauss_log_prob(y))


@pytest.mark.parametrize("kwargs, name", [
    (dict(step_size=0.0, num_steps=5), "step_size"),
    (dict(step_size=0.1, num_steps=-1), "num_steps"),
    (dict(step_size=0.1, num_steps=5, adapt_steps=1.5), "adapt_steps"),
    (dict(step_size=0.1, num_steps=5, target_accept=1.5), "target_accept"),
    (dict(step_size=0.1, num_steps=5, thin=0), "thin"),
])
def test_mala_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        mala(torch.zeros(3, 2), log_prob=gauss_log_prob, **kwargs)


def test_bad_arguments_elsewhere():
    with pytest.raises(ValueError, match="x0"):
        mala(torch.zeros(3), log_prob=gauss_log_prob, step_size=0.1, num_steps=1)
    with pytest.raises(ValueError, match="num_samples"):
        nuts(torch.zeros(1, 2), log_prob=gauss_log_prob, num_samples=0)
    with pytest.raises(ValueError, match="num_leapfrog"):
        hmc_step(torch.zeros(3, 2), gauss_log_prob, 0.1, 0)
    with pytest.raises(ValueError, match="log_prob"):
        langevin(torch.zeros(3, 2), step_size=0.1, num_steps=1)
    with pytest.raises(ValueError, match="return_chain"):
        SamplerResult(torch.zeros(1, 2), None, 1.0, 0.1).to_arviz()


def test_langevin_runs_on_the_input_device_and_dtype():
    x0 = torch.zeros(10, 2, dtype=torch.float64)
    x = langevin(x0, score=lambda x: -x, step_size=0.1, num_steps=3)
    assert x.dtype == torch.float64 and x.device == x0.device
    assert not math.isnan(float(x.sum()))


@pytest.mark.parametrize("lowest", [0.01, 0.05])
def test_annealed_langevin_s_default_step_fits_any_ladder(lowest):
    """With the exact score of N(mu, diag(v)), the default step (0.2 sigma_L^2, the paper's 2e-5 at 0.01)
    reaches the density whatever the ladder ends at (before: a fixed 2e-5 gave std [1.94, 3.16] at 0.05)."""
    from pyro_dgm.inference import geometric_sigmas
    from pyro_dgm.samplers import AnnealedLangevin

    mu, v = torch.tensor([1.0, -0.5]), torch.tensor([0.49, 2.25])
    torch.manual_seed(0)
    x = AnnealedLangevin(geometric_sigmas(5.0, lowest, 10))(lambda x, s: -(x - mu) / (v + s**2), (4000, 2))
    torch.testing.assert_close(x.mean(0), mu, atol=0.1, rtol=0)
    torch.testing.assert_close(x.std(0), v.sqrt(), atol=0.1, rtol=0)
