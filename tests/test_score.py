"""Score-based models: ScoreField, DSM / SSM / SDE objectives, samplers, probability-flow likelihood."""

import math

import pyro
import pytest
import torch
from torch import nn

import pyro_dgm
from pyro_dgm.data import toy_2d
from pyro_dgm.distributions import ScoreField
from pyro_dgm.samplers import langevin
from pyro_dgm.inference.score_based import (
    AnnealedLangevin, DenoisingScoreMatching, Langevin, PredictorCorrector, SDEScoreMatching,
    SlicedScoreMatching, VESDE, VPSDE, geometric_sigmas, max_pairwise_distance, probability_flow_log_prob,
    probability_flow_nll)
from pyro_dgm.inference.score_matching import exact_score_matching, sliced_score_matching
from pyro_dgm.metrics import mmd2, mode_coverage
from pyro_dgm.models import NCSN, ScoreMLP, ScoreUNet
from pyro_dgm.models.baselines import DiagonalGaussian
from pyro_dgm.registry import get_model

MU = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])


def gaussian_score(mu, cov):
    """The exact score of N(mu, cov + sigma^2 I) as a net(x, sigma) (the VE-noised Gaussian)."""

    def net(x, sigma):
        prec = torch.linalg.inv(cov + sigma.reshape(-1, 1, 1) ** 2 * torch.eye(len(mu)))
        return -(prec @ (x - mu).unsqueeze(-1)).squeeze(-1)

    return net


def vp_gaussian_score(mu, cov):
    """The exact score of the VP marginal N(m mu, m^2 cov + sigma^2 I), m = sqrt(1 - sigma^2)."""

    def net(x, sigma):
        m = (1 - sigma**2).clamp(min=0).sqrt().reshape(-1, 1)
        c = m.reshape(-1, 1, 1) ** 2 * cov + sigma.reshape(-1, 1, 1) ** 2 * torch.eye(len(mu))
        return -(torch.linalg.inv(c) @ (x - m * mu).unsqueeze(-1)).squeeze(-1)

    return net


def gaussian_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(COV).T


class Linear(nn.Module):
    """s(x, sigma) = W x + b, a score family that contains every Gaussian's score."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x, sigma):
        return self.lin(x)


# ---------------------------------------------------------------- ScoreField and the program


def test_score_field_in_a_program_samples_and_scores():
    m = NCSN(2, sigmas=geometric_sigmas(1.0, 0.1, 3))
    x = torch.randn(5, 2)
    trace = pyro.poutine.trace(m.model).get_trace(x)
    field = trace.nodes["x"]["fn"]
    assert isinstance(field, ScoreField) and field.batch_shape == (5,) and field.event_shape == (2,)
    assert torch.equal(field.score(x), m.net(x, torch.full((5,), 0.1)))  # default: the smallest level
    assert pyro_dgm.inference.sample_program(m.model, 7).shape == (7, 2)


def test_score_field_has_no_log_prob():
    field = NCSN(2).distribution(3)
    with pytest.raises(TypeError, match="normalizing constant"):
        field.log_prob(torch.zeros(3, 2))
    with pytest.raises(TypeError):
        pyro.poutine.trace(NCSN(2).model).get_trace(torch.zeros(3, 2)).log_prob_sum()


def test_score_field_rejects_bad_arguments():
    with pytest.raises(ValueError, match="net"):
        ScoreField("not a net", torch.Size([2]))
    field = ScoreField(lambda x, s: -x, torch.Size([2]))
    with pytest.raises(ValueError, match="sigma"):
        field.score(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="x: expected a batch of shape"):
        field.score(torch.zeros(3, 4), 1.0)
    with pytest.raises(ValueError, match="sampler"):
        field.sample()
    with pytest.raises(ValueError, match="sigmas"):
        ScoreField(lambda x, s: -x, torch.Size([2]), sigmas=[1.0, -0.1])


def test_objectives_validate_before_training():
    x = torch.randn(32, 2)
    with pytest.raises(ValueError, match="model: site 'x' holds a"):
        pyro_dgm.fit(DiagonalGaussian(2).model, None, x, objective=DenoisingScoreMatching(1.0), steps=1)
    with pytest.raises(ValueError, match="sigmas"):
        pyro_dgm.fit(NCSN(2, sde=VESDE()).model, None, x, objective=DenoisingScoreMatching(), steps=1)
    with pytest.raises(ValueError, match="sde"):
        pyro_dgm.fit(NCSN(2).model, None, x, objective=SDEScoreMatching(), steps=1)
    with pytest.raises(ValueError, match="data: each example has shape"):
        pyro_dgm.fit(NCSN(3).model, None, x, objective=DenoisingScoreMatching(), steps=1)
    bad = NCSN(2, net=lambda x, s: x[:, :1])
    with pytest.raises(ValueError, match="score network returned shape"):
        pyro_dgm.fit(bad.model, None, x, objective=DenoisingScoreMatching(), steps=1, modules=[nn.Linear(1, 1)])
    with pytest.raises(ValueError, match="num_projections"):
        SlicedScoreMatching(num_projections=0)
    with pytest.raises(ValueError, match="sigma_min"):
        geometric_sigmas(0.1, 1.0, 3)
    with pytest.raises(ValueError, match="eps"):
        SDEScoreMatching(eps=0.0)
    with pytest.raises(ValueError, match="snr"):
        PredictorCorrector(VESDE(), snr=-1.0)
    with pytest.raises(ValueError, match="trace"):
        probability_flow_log_prob(lambda x, s: -x, x, VPSDE(), trace="sliced")


def test_networks_shapes_and_noise_conditioning():
    unet = ScoreUNet((1, 8, 8), channels=8)
    x = torch.rand(4, 64)
    s1, s2 = unet(x, torch.full((4,), 0.1)), unet(x, torch.full((4,), 1.0))
    assert s1.shape == (4, 64) and not torch.allclose(s1 * 0.1, s2)  # the output depends on sigma
    assert NCSN(64).net.__class__ is ScoreUNet and NCSN(2).net.__class__ is ScoreMLP
    with pytest.raises(ValueError, match="image_shape"):
        ScoreUNet((1, 6, 6))
    assert max_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == 5.0


def test_registered_models_build_and_train():
    for name in ("ncsn", "score-sde"):
        spec = get_model(name)
        assert spec.family == "score"
        m = spec.build(torch.Size([2]), "points")
        r = pyro_dgm.fit(m.model, None, toy_2d("moons", 64), objective=spec.objective(), steps=2, progress=False)
        assert len(r.losses["model"]) == 2
        assert m.sample(3).shape == (3, 2)


# ---------------------------------------------------------------- objectives against closed forms


def test_dsm_fits_the_analytic_score_of_the_noised_gaussian():
    """DSM at sigma = 0.5: the minimizer is grad log N(mu, cov + sigma^2 I), here W = -(cov + sigma^2 I)^-1."""
    sigma = 0.5
    m = NCSN(2, net=Linear(2), sigmas=[sigma])
    pyro_dgm.fit(m.model, None, gaussian_data(4000), objective=DenoisingScoreMatching(sigma), steps=1500,
                 batch_size=500, lr=2e-2, seed=0, progress=False)
    prec = torch.linalg.inv(COV + sigma**2 * torch.eye(2))
    assert torch.allclose(m.net.lin.weight.detach(), -prec, atol=0.08)
    assert torch.allclose(m.net.lin.bias.detach(), prec @ MU, atol=0.1)


def test_dsm_ladder_fits_noised_scores_with_a_network():
    """A ScoreMLP trained over a 3-level ladder matches the analytic noised score at each level."""
    sigmas = [1.0, 0.5, 0.25]
    m = NCSN(2, net=ScoreMLP(2, hidden=(64, 64)), sigmas=sigmas)
    pyro_dgm.fit(m.model, None, gaussian_data(4000), objective=DenoisingScoreMatching(), steps=1500,
                 batch_size=256, lr=2e-3, seed=0, progress=False)
    exact = gaussian_score(MU, COV)
    for s in sigmas:
        x = gaussian_data(2000, seed=1) + s * torch.randn(2000, 2)
        with torch.no_grad():
            err = (m.score(x, s) - exact(x, torch.full((2000,), s))).pow(2).sum(-1).mean()
        ref = exact(x, torch.full((2000,), s)).pow(2).sum(-1).mean()
        assert err / ref < 0.05, (s, float(err / ref))


def test_ssm_and_exact_score_matching_agree_in_expectation():
    """For a fixed nonlinear score network: the mean of many SSM and SSM-VR draws equals Hyvarinen's exact loss."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(256, 3)
    exact = float(exact_score_matching(net, x).detach())
    draws = 400
    ssm = sum(float(sliced_score_matching(net, x).detach()) for _ in range(draws)) / draws
    vr = sum(float(sliced_score_matching(net, x, variance_reduced=True).detach()) for _ in range(draws)) / draws
    assert abs(ssm - exact) < 0.03 * abs(exact) + 0.01
    assert abs(vr - exact) < 0.03 * abs(exact) + 0.01


def test_sliced_objective_equals_weighted_hyvarinen_loss_of_the_noised_data():
    """SlicedScoreMatching on s(x) = W x + b: E = sigma^2 [1/2 mean|W x + b|^2 + 1/2 sigma^2 |W|_F^2 + tr W]."""
    torch.manual_seed(0)
    sigma = 0.3
    net = Linear(2)
    m = NCSN(2, net=net, sigmas=[sigma])
    x = gaussian_data(2000)
    W, b = net.lin.weight.detach(), net.lin.bias.detach()
    closed = sigma**2 * (0.5 * (x @ W.T + b).pow(2).sum(-1).mean() + 0.5 * sigma**2 * W.pow(2).sum() + W.trace())
    for vr in (False, True):
        obj = SlicedScoreMatching(num_projections=4, variance_reduced=vr)
        obj.setup(m.model, None, x)
        est = sum(float(obj.loss("model", x).detach()) for _ in range(50)) / 50
        assert abs(est - float(closed)) < 0.02 * abs(float(closed)) + 1e-3, (vr, est, float(closed))


def test_ssm_fits_the_gaussian_score():
    """Minimizing SSM-VR (one tiny level) recovers grad log N(mu, cov) = -cov^-1 (x - mu)."""
    m = NCSN(2, net=Linear(2), sigmas=[1e-3])
    pyro_dgm.fit(m.model, None, gaussian_data(4000), objective=SlicedScoreMatching(variance_reduced=True),
                 steps=2000, batch_size=500, lr=5e-2, seed=0, progress=False)
    prec = torch.linalg.inv(COV)
    assert (m.net.lin.weight.detach() + prec).norm() / prec.norm() < 0.08


def test_sde_objective_is_minimized_by_the_exact_score():
    """The continuous-time DSM loss is lower at the exact VP score than at a perturbed one, and both are finite."""
    torch.manual_seed(0)
    x = gaussian_data(4000)
    exact = NCSN(2, net=vp_gaussian_score(MU, COV), sde=VPSDE())
    wrong = NCSN(2, net=lambda y, s: 1.2 * vp_gaussian_score(MU, COV)(y, s), sde=VPSDE())
    losses = []
    for m in (exact, wrong):
        obj = SDEScoreMatching()
        obj.setup(m.model, None, x)
        losses.append(sum(float(obj.loss("model", x)) for _ in range(20)) / 20)
    assert losses[0] < losses[1] - 0.01
    # At the optimum, E 1/2 |sigma s + z|^2 = D/2 - 1/2 E[sigma^2 |grad log p_t|^2] < D/2 = 1.
    assert 0.0 < losses[0] < 1.0


# ---------------------------------------------------------------- samplers with the true score

W_MIX = torch.tensor([0.8, 0.2])
MU_MIX = torch.tensor([[-5.0, -5.0], [5.0, 5.0]])


def mixture_score(x, sigma):
    """grad log of 0.8 N(-5, I) + 0.2 N(5, I) convolved with N(0, sigma^2 I)."""
    var = (1 + torch.as_tensor(sigma).expand(x.shape[0]) ** 2).reshape(-1, 1, 1)
    d = x.unsqueeze(1) - MU_MIX
    r = torch.softmax(W_MIX.log() - 0.5 * (d.pow(2) / var).sum(-1), -1)
    return -(r.unsqueeze(-1) * d / var).sum(1)


def major_fraction(x):
    return float(((x - MU_MIX[0]).norm(dim=-1) < (x - MU_MIX[1]).norm(dim=-1)).float().mean())


def test_langevin_gets_mode_weights_wrong_and_annealing_fixes_it():
    """Song and Ermon (2019), Fig. 3: with the exact score, plain Langevin splits the chains by their start."""
    torch.manual_seed(0)
    x0 = torch.rand(2000, 2) * 16 - 8
    plain = langevin(x0, score=lambda x: mixture_score(x, 0.0), step_size=0.1, num_steps=1000)
    assert abs(major_fraction(plain) - 0.8) > 0.2
    annealed = AnnealedLangevin(geometric_sigmas(20.0, 0.1, 20), steps_per_level=100, step_size=2e-3)(
        mixture_score, (2000, 2))
    assert abs(major_fraction(annealed) - 0.8) < 0.05
    # and each mode has the right shape: unit variance around its center
    near = annealed[(annealed - MU_MIX[0]).norm(dim=-1) < 4]
    assert torch.allclose(near.mean(0), MU_MIX[0], atol=0.15) and torch.allclose(near.var(0), torch.ones(2), atol=0.2)


def test_plain_langevin_sampler_object_matches_langevin():
    torch.manual_seed(0)
    x = Langevin(sigma=1e-3, step_size=0.1, num_steps=500, init_scale=5.0)(mixture_score, (2000, 2))
    assert abs(major_fraction(x) - 0.5) < 0.05


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE()], ids=["ve", "vp"])
def test_predictor_corrector_samples_the_gaussian(sde):
    torch.manual_seed(0)
    if isinstance(sde, VESDE):
        score = gaussian_score(MU, COV)
    else:
        score = vp_gaussian_score(MU, COV)
    x = PredictorCorrector(sde, num_steps=300)(score, (4000, 2))
    assert torch.allclose(x.mean(0), MU, atol=0.08)
    assert torch.allclose(torch.cov(x.T), COV, atol=0.08)


def test_predictor_corrector_recovers_mode_weights():
    torch.manual_seed(0)
    x = PredictorCorrector(VESDE(0.01, 20.0), num_steps=300)(mixture_score, (2000, 2))
    assert abs(major_fraction(x) - 0.8) < 0.05


# ---------------------------------------------------------------- probability flow likelihood


def gaussian_log_prob(x, mu, cov):
    return torch.distributions.MultivariateNormal(mu, cov).log_prob(x)


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_probability_flow_likelihood_of_an_exact_score_is_the_true_density(kind):
    """Exact scores of N(0, cov) under each SDE: the ODE's log density is log N(x; 0, cov) at t = eps.

    The data is centered because the ODE starts from the SDE's prior, which is
    p_T only approximately: for a mean mu, log N(x_T; m_T mu, .) - log N(x_T; 0, .)
    ~ m_T mu . x_T, a few hundredths of a nat per point (mean zero).
    """
    torch.manual_seed(0)
    x = gaussian_data(300, seed=2) - MU
    zero = torch.zeros(2)
    if kind == "ve":
        sde, net = VESDE(1e-3, 50.0), gaussian_score(zero, COV)
        cov_eps = COV + sde.noise_level(torch.tensor(1e-5)) ** 2 * torch.eye(2)
    else:
        sde, net = VPSDE(), vp_gaussian_score(zero, COV)
        std = sde.noise_level(torch.tensor(1e-5))
        cov_eps = (1 - std**2) * COV + std**2 * torch.eye(2)
    truth = gaussian_log_prob(x, zero, cov_eps)
    exact = probability_flow_log_prob(net, x, sde, num_steps=50, trace="exact")
    assert (exact - truth).abs().max() < 5e-3
    hutch = probability_flow_log_prob(net, x, sde, num_steps=50)
    assert abs(float((hutch - truth).mean())) < 0.05
    assert (hutch - truth).abs().max() > 1e-3  # a stochastic estimate, unbiased on average


def test_probability_flow_nll_of_a_model_reports_bits_per_dim():
    m = NCSN(2, net=vp_gaussian_score(torch.zeros(2), COV), sde=VPSDE())
    x = gaussian_data(200, seed=3) - MU
    out = probability_flow_nll(m.model, x, num_steps=50, trace="exact", num_levels=17)
    truth = -float(gaussian_log_prob(x, torch.zeros(2), COV).mean())
    assert abs(out["nll"] - truth) < 0.01
    assert math.isclose(out["bits_per_dim"], out["nll"] / (2 * math.log(2)))
    assert math.isclose(out["bits_per_dim_discrete"], (out["nll"] + 2 * math.log(17)) / (2 * math.log(2)))
    with pytest.raises(ValueError, match="sde"):
        probability_flow_nll(NCSN(2).model, x)


# ---------------------------------------------------------------- trained models


@pytest.mark.slow
def test_trained_ncsn_annealed_langevin_beats_plain_langevin_on_25_gaussians():
    """A learned score: plain Langevin (same start, same number of score calls) misses modes and
    gets their weights wrong; annealing over the ladder fixes much of both."""
    x, test = toy_2d("25gaussians", 4000, seed=0), toy_2d("25gaussians", 1000, seed=1)
    sigmas = geometric_sigmas(max_pairwise_distance(x), 0.01, 10)
    m = NCSN(2, net=ScoreMLP(2), sigmas=sigmas)
    pyro_dgm.fit(m.model, None, x, objective=DenoisingScoreMatching(), steps=2000, batch_size=256, lr=2e-3,
                 scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2000),
                 scheduler_every="step", seed=0, progress=False)
    torch.manual_seed(1)
    annealed = m.sample(1000, AnnealedLangevin(sigmas, steps_per_level=100, step_size=2e-5))
    plain = m.sample(1000, Langevin(0.01, step_size=2e-3, num_steps=1000, init_scale=float(sigmas[0])))
    cov_a, cov_p = mode_coverage(annealed, "25gaussians"), mode_coverage(plain, "25gaussians")

    def weights_tv(counts):
        return 0.5 * float((counts / counts.sum() - 1 / 25).abs().sum())

    assert mmd2(annealed, test) < 0.5 * mmd2(plain, test)  # seen: 0.044 vs 0.144
    assert weights_tv(cov_a["counts"].double()) < weights_tv(cov_p["counts"].double()) - 0.05  # 0.39 vs 0.49
    assert cov_a["modes"] >= 10  # seen: 13 of 25


@pytest.mark.slow
def test_trained_score_sde_gives_likelihood_near_the_truth():
    """VP-SDE training on a Gaussian: the probability-flow NLL of held-out data is close to the true entropy."""
    m = NCSN(2, net=ScoreMLP(2, hidden=(64, 64)), sde=VPSDE())
    x = gaussian_data(4000) - MU
    pyro_dgm.fit(m.model, None, x, objective=SDEScoreMatching(), steps=2000, batch_size=256, lr=2e-3, seed=0,
                 progress=False)
    test = gaussian_data(500, seed=5) - MU
    out = probability_flow_nll(m.model, test, num_steps=50, seed=0)
    truth = -float(gaussian_log_prob(test, torch.zeros(2), COV).mean())
    assert abs(out["nll"] - truth) < 0.15, (out["nll"], truth)  # ignoring the correlation costs 0.64
    # Seeded here: this draw used to start from probability_flow_nll's seed, left set in the caller's stream.
    # Over sampling seeds 0-3 the first variance is 1.05, 1.10, 1.13, 1.16 (the data's 0.98, the truth 1.0).
    torch.manual_seed(0)
    s = m.sample(2000)
    assert torch.allclose(torch.cov(s.T), COV, atol=0.2)
