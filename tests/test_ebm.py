"""Energy-based models: the distribution, objectives (CD, PCD, SM, NCE, FCE) and partition functions."""

import math

import pyro
import pyro.distributions
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

import pyro_dgm
from pyro_dgm.data import toy_2d, toy_log_prob
from pyro_dgm.metrics import mode_coverage
from pyro_dgm.distributions import UnnormalizedDistribution
from pyro_dgm.inference import (ContrastiveDivergence, FlowContrastiveEstimation, NoiseContrastiveEstimation,
                                PersistentContrastiveDivergence, ScoreMatching, trace_program)
from pyro_dgm.samplers import mala
from pyro_dgm.models import EBM, DiagonalGaussian, DigitsEnergy, EnergyMLP
from pyro_dgm.partition import ais_log_partition, grid_log_partition
from pyro_dgm.registry import get_model


class GaussianEnergy(nn.Module):
    """E(x) = 0.5 (x - mu)^T P (x - mu), P = L L^T + 1e-3 I."""

    def __init__(self, dim):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.chol = nn.Parameter(torch.eye(dim))

    def precision(self):
        lower = torch.tril(self.chol)
        return lower @ lower.T + 1e-3 * torch.eye(lower.shape[0])

    def forward(self, x):
        d = x - self.mu
        return 0.5 * ((d @ self.precision()) * d).sum(-1)


MIX = torch.tensor([[-1.5, 0.0], [1.5, 0.5]])


def mixture_energy(x, s=0.4, shift=3.0):
    """-log of a normalized two-Gaussian mixture, minus 3: log Z = 3 exactly."""
    d = -((x.unsqueeze(-2) - MIX) ** 2).sum(-1) / (2 * s * s) - math.log(2 * math.pi * s * s)
    return -(torch.logsumexp(d, -1) - math.log(2)) - shift


def correlated_data(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
    return torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(cov).T + torch.tensor([0.5, -1.0])


def gaussian_nll(train, test):
    m = DiagonalGaussian(2)
    with torch.no_grad():
        m.loc.copy_(train.mean(0))
        m.log_scale.copy_(train.std(0).log())
    return pyro_dgm.evaluate(m.model, test)["nll"]


# ---------------------------------------------------------------- distribution and model

def test_unnormalized_distribution_log_prob_score_sample():
    d = UnnormalizedDistribution(lambda x: 0.5 * x.pow(2).sum(-1) + 2.0, torch.Size([2]), torch.Size([4]))
    x = torch.randn(4, 2)
    assert torch.allclose(d.log_prob(x), -0.5 * x.pow(2).sum(-1) - 2.0)
    assert torch.allclose(d.score(x), -x)
    assert not d.score(x).requires_grad
    assert d.score(x.requires_grad_()).requires_grad
    assert d.sample().shape == (4, 2) and d.sample((3,)).shape == (3, 4, 2)
    assert d.expand(torch.Size([7])).batch_shape == (7,)
    s = d.sample((500,)).reshape(-1, 2)  # 200 Langevin steps of 1e-2 from N(0, I): still N(0, I)
    assert abs(float(s.var()) - 1.0) < 0.15
    with pytest.raises(ValueError, match="energy"):
        UnnormalizedDistribution(3.0, torch.Size([2]))


def test_ebm_program_has_energy_site_and_checks_data_shape():
    ebm = EBM(EnergyMLP(2, hidden=(16,)), 2, base_scale=3.0, num_steps=5)
    site = trace_program(ebm.model, torch.zeros(5, 2)).nodes["x"]
    assert isinstance(site["fn"], UnnormalizedDistribution) and site["is_observed"]
    assert torch.allclose(site["fn"].log_prob(site["value"]), -ebm.energy(site["value"]))
    assert trace_program(ebm.model, None, num_samples=3).nodes["x"]["value"].shape == (3, 2)
    with pytest.raises(ValueError, match="shape"):
        pyro_dgm.fit(ebm.model, None, torch.zeros(8, 3), objective=ContrastiveDivergence(), steps=1,
                     progress=False)
    with pytest.raises(ValueError, match="base_scale"):
        EBM(EnergyMLP(2), 2, base_scale=-1.0)
    assert DigitsEnergy()(torch.zeros(3, 1, 8, 8)).shape == (3,)


def test_objectives_reject_a_model_without_an_energy():
    m = DiagonalGaussian(2)
    with pytest.raises(ValueError, match="energy"):
        pyro_dgm.fit(m.model, None, torch.randn(16, 2), objective=ScoreMatching(), steps=1, progress=False)


@pytest.mark.parametrize("make, name", [
    (lambda: ContrastiveDivergence(num_steps=0), "num_steps"),
    (lambda: ContrastiveDivergence(step_size=-1.0), "step_size"),
    (lambda: ContrastiveDivergence(init="box"), "init"),
    (lambda: PersistentContrastiveDivergence(reinit_prob=2.0), "reinit_prob"),
    (lambda: PersistentContrastiveDivergence(buffer_size=0), "buffer_size"),
    (lambda: ScoreMatching(method="magic"), "method"),
    (lambda: NoiseContrastiveEstimation(noise_ratio=0), "noise_ratio"),
    (lambda: FlowContrastiveEstimation(gaussian_weight=1.0), "gaussian_weight"),
])
def test_objective_bad_arguments_name_themselves(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_registered_models_build_and_train_a_step():
    x = toy_2d("8gaussians", 64)
    for name in ("ebm-cd", "ebm-pcd", "ebm-sm", "ebm-nce", "ebm-fce"):
        spec = get_model(name)
        assert spec.family == "ebm"
        ebm = spec.build(torch.Size([2]), "points")
        obj = spec.objective(**({"num_steps": 2} if name in ("ebm-cd", "ebm-pcd") else {}))
        r = pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=1, batch_size=32, progress=False)
        assert all(math.isfinite(v[-1]) for v in r.losses.values())


# ---------------------------------------------------------------- partition functions

def test_grid_log_partition_matches_closed_form():
    e = GaussianEnergy(2)
    with torch.no_grad():
        e.chol.copy_(torch.tensor([[2.0, 0.0], [0.5, 1.0]]))
    expected = math.log(2 * math.pi) - 0.5 * float(torch.logdet(e.precision().detach()))
    assert abs(grid_log_partition(e, bounds=(-6, 6), num_points=300) - expected) < 1e-3
    assert abs(grid_log_partition(mixture_energy, bounds=(-5, 5)) - 3.0) < 1e-3
    with pytest.raises(ValueError, match="bounds"):
        grid_log_partition(e, bounds=(2, -2))
    with pytest.raises(ValueError, match="dim"):
        grid_log_partition(e, dim=3)


@pytest.mark.parametrize("transition, step", [("hmc", 0.1), ("mala", 0.05)])
def test_ais_log_z_within_a_tenth_of_a_nat_of_the_grid(transition, step):
    grid = grid_log_partition(mixture_energy, bounds=(-5, 5))
    base = Independent(Normal(torch.zeros(2), 2 * torch.ones(2)), 1)
    est = ais_log_partition(mixture_energy, base, num_chains=256, num_temps=300, transition=transition,
                            step_size=step)
    assert abs(est.log_z - grid) < 0.1
    assert 0 < est.stderr < 0.1 and est.ess > 50


def test_ais_on_an_ebm_with_its_base_matches_the_grid():
    torch.manual_seed(1)
    ebm = EBM(EnergyMLP(2, hidden=(32, 32)), 2, base_scale=1.5)
    with torch.no_grad():
        for p in ebm.energy_net.parameters():
            p.mul_(3.0)  # a rugged random energy
    grid = grid_log_partition(ebm.energy, bounds=(-8, 8), num_points=400)
    est = ais_log_partition(ebm.energy, ebm.base_distribution(), num_chains=256, num_temps=200,
                            transition="hmc", step_size=0.1)
    assert abs(est.log_z - grid) < 0.1
    with pytest.raises(ValueError, match="transition"):
        ais_log_partition(ebm.energy, ebm.base_distribution(), transition="gibbs")


# ---------------------------------------------------------------- objectives

def test_exact_score_matching_recovers_sample_mean_and_inverse_covariance():
    x = correlated_data(1000)
    ebm = EBM(GaussianEnergy(2), 2)
    pyro_dgm.fit(ebm.model, None, x, objective=ScoreMatching("exact"), steps=600, batch_size=1000,
                 lr=2e-2, shuffle=False, progress=False)
    mean = x.mean(0)
    prec = torch.linalg.inv(torch.cov(x.T, correction=0))  # the closed-form score matching estimate
    e = ebm.energy_net
    assert torch.allclose(e.mu.detach(), mean, atol=1e-2)
    assert torch.allclose(e.precision().detach(), prec, rtol=2e-2, atol=2e-2)


def test_hutchinson_score_matching_is_unbiased_for_the_exact_loss():
    x = correlated_data(500)
    d = EBM(EnergyMLP(2, hidden=(16,)), 2).distribution(500)
    from pyro_dgm.inference.score_matching import exact_score_matching, hutchinson_score_matching
    exact = float(exact_score_matching(d.score, x).detach())
    est = sum(float(hutchinson_score_matching(d.score, x, num_projections=8).detach()) for _ in range(10)) / 10
    assert abs(est - exact) < 0.02 * abs(exact) + 1e-3


def test_nce_learns_log_z_within_a_tenth_of_a_nat_of_the_grid():
    x = correlated_data(4000)
    ebm = EBM(EnergyMLP(2, hidden=(32, 32)), 2, base_scale=3.0)
    obj = NoiseContrastiveEstimation(noise_ratio=4)
    pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=500, batch_size=500, lr=3e-3, seed=0, progress=False)
    grid = grid_log_partition(ebm.energy, bounds=(-7, 7), num_points=400)
    assert abs(obj.log_z - grid) < 0.1
    nll = pyro_dgm.evaluate(ebm.model, correlated_data(1000, seed=1), log_normalizer=grid)["nll"]
    assert nll < gaussian_nll(x, correlated_data(1000, seed=1)) + 0.05  # as good as the right Gaussian


@pytest.mark.parametrize("init", ["noise", "data"])
def test_cd_lowers_data_energy_against_its_negatives(init):
    x = toy_2d("8gaussians", 512)
    ebm = EBM(EnergyMLP(2, hidden=(32, 32)), 2, base_scale=4.0)
    obj = ContrastiveDivergence(num_steps=10, init=init)
    r = pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=100, batch_size=128, lr=1e-2, seed=0,
                     progress=False)
    assert set(r.terms) == {"model/cd", "model/energy_reg"}
    # from noise the chains visit the empty middle of the ring; from data only the data's surroundings
    away = torch.randn(512, 2) * 0.5 if init == "noise" else x + 0.3 * torch.randn_like(x)
    with torch.no_grad():
        assert float(ebm.energy(x).mean()) < float(ebm.energy(away).mean()) - 1.0


def test_cd_and_nce_take_a_pyro_distribution_as_noise():
    x = toy_2d("8gaussians", 256)
    far = pyro.distributions.Normal(torch.full((2,), 50.0), torch.ones(2)).to_event(1)
    cd = ContrastiveDivergence(noise=far)
    cd.setup(EBM(EnergyMLP(2, hidden=(8,)), 2).model, None, x)
    assert cd._start(x).shape == (256, 2) and bool((cd._start(x) > 40).all())
    ebm = EBM(EnergyMLP(2, hidden=(8,)), 2, base_scale=4.0)
    nce = NoiseContrastiveEstimation(noise=pyro.distributions.Normal(torch.zeros(2), 3 * torch.ones(2)).to_event(1))
    r = pyro_dgm.fit(ebm.model, None, x, objective=nce, steps=20, batch_size=64, lr=1e-2, seed=0, progress=False)
    assert r.losses["model"][-1] < r.losses["model"][0]


def test_pcd_restarts_from_noise_not_jitter():
    x = toy_2d("8gaussians", 256)
    ebm = EBM(EnergyMLP(2, hidden=(8,)), 2)
    obj = PersistentContrastiveDivergence(buffer_size=1000, reinit_prob=0.3)
    obj.setup(ebm.model, None, x)
    obj.buffer.fill_(100.0)
    start = obj._start(torch.zeros(1000, 2))
    fresh = (start != 100.0).all(-1)
    assert abs(float(fresh.float().mean()) - 0.3) < 0.05
    assert float(start[fresh].abs().max()) < 10  # fresh states come from the noise, far from the old chains


def test_pcd_buffer_survives_checkpoint_resume(tmp_path):
    x = toy_2d("8gaussians", 256)

    def run(steps, resume):
        torch.manual_seed(0)
        ebm = EBM(EnergyMLP(2, hidden=(8,)), 2)
        obj = PersistentContrastiveDivergence(num_steps=3, buffer_size=300)
        pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=steps, batch_size=64, seed=0, progress=False,
                     checkpoint=tmp_path / ("a.pt" if resume else f"b{steps}.pt"), resume=resume)
        return obj.buffer

    run(3, False)
    (tmp_path / "b3.pt").rename(tmp_path / "a.pt")
    resumed = run(6, True)
    straight = run(6, False)
    assert torch.allclose(resumed, straight)
    assert not torch.allclose(straight, run(3, False))


@pytest.mark.parametrize("before, after", [(200, 500), (500, 200)])
def test_pcd_resumed_with_another_buffer_size_uses_the_new_one(before, after, tmp_path):
    """The resume warning says the new objective is used: the buffer takes the new size, the saved chains
    first (before: an IndexError for a larger buffer, or the old 500 rows kept for a smaller one)."""
    x = toy_2d("8gaussians", 256)
    path = tmp_path / "pcd.pt"
    torch.manual_seed(0)
    ebm = EBM(EnergyMLP(2, hidden=(8,)), 2)
    first = PersistentContrastiveDivergence(num_steps=2, buffer_size=before)
    pyro_dgm.fit(ebm.model, None, x, objective=first, steps=3, batch_size=64, seed=0, progress=False, checkpoint=path)
    saved = first.buffer.clone()
    then = PersistentContrastiveDivergence(num_steps=2, buffer_size=after)
    with pytest.warns(UserWarning, match="buffer_size=.*the new one is used"):
        pyro_dgm.fit(ebm.model, None, x, objective=then, steps=3, batch_size=64, seed=0, progress=False,
                     checkpoint=path, resume=True)
    kept = min(before, after)
    assert then.buffer.shape == (after, 2)
    torch.testing.assert_close(then.buffer[:kept], saved[:kept])
    then.load_state_dict(first.state_dict())  # and through a later resume the chains beyond the saved ones stay
    assert then.buffer.shape == (after, 2)


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_fce_trains_the_flow_as_the_adversary(weight):
    x = toy_2d("8gaussians", 512)
    ebm = EBM(EnergyMLP(2, hidden=(16,)), 2, base_scale=4.0)
    obj = FlowContrastiveEstimation(gaussian_weight=weight)
    r = pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=2, batch_size=128, seed=0, progress=False)
    before = [p.detach().clone() for p in obj.flow.parameters()]
    r = pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=3, batch_size=128, seed=1, progress=False)
    assert set(r.losses) == {"model", "flow"} and len(r.losses["flow"]) == 3
    # the flow's loss is V and the model's is -V, evaluated on different samples
    assert any(not torch.equal(a, b) for a, b in zip(before, obj.flow.parameters()))


class _NoEnergy(torch.nn.Module):
    def forward(self, x):
        return x.new_zeros(x.shape[0])


class _ShiftedNormal(torch.nn.Module):
    """The simplest flow: x = mu + z, z ~ N(0, I), with a learnable shift mu."""

    def __init__(self, start):
        super().__init__()
        self.loc = nn.Parameter(torch.full((2,), float(start)))

    def model(self, x=None, num_samples=None):
        n = x.shape[0] if x is not None else num_samples
        with pyro.plate("data", n):
            return pyro.sample("x", pyro.distributions.Normal(self.loc, torch.ones(2)).to_event(1), obs=x)


def test_fce_moves_the_flow_toward_the_ebm_and_a_flipped_flow_loss_would_not():
    """With data and the EBM both N((3, 3), I) and c the exact log Z, V(mu) = 2 JS(p, q_mu) - log 4 is
    smallest at mu = (3, 3): the flow's steps on V take mu there from (1, 1). Stepping on -V sends it away."""
    ebm = EBM(_NoEnergy(), 2, base_loc=3.0, base_scale=1.0)
    flow = _ShiftedNormal(1.0)
    obj = FlowContrastiveEstimation(flow=flow, log_z_init=math.log(2 * math.pi))
    x = 3.0 + torch.randn(1024, 2, generator=torch.Generator().manual_seed(0))
    pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=150, batch_size=256, lr={"model": 1e-12, "flow": 0.05},
                 seed=0, progress=False)
    assert abs(obj.log_partition.log_z.item() - math.log(2 * math.pi)) < 1e-6  # the EBM side stayed put
    assert (flow.loc - 3.0).abs().max().item() < 0.3, flow.loc


# ---------------------------------------------------------------- long training

def _fit_8gaussians(objective, lr=1e-3, steps=500, **options):
    tr, te = toy_2d("8gaussians", 4000, seed=0), toy_2d("8gaussians", 2000, seed=1)
    torch.manual_seed(0)
    ebm = EBM(EnergyMLP(2, (128, 128)), 2, base_scale=4.0)
    pyro_dgm.fit(ebm.model, None, tr, objective=objective, steps=steps, batch_size=256, lr=lr, seed=0,
                 progress=False, **options)
    log_z = grid_log_partition(ebm.energy, bounds=(-6, 6), num_points=500)
    nll = pyro_dgm.evaluate(ebm.model, te, log_normalizer=log_z)["nll"]
    # the benchmark's sampler: MALA, so the samples follow the trained EBM rather than the bias of a Langevin chain
    samples = mala(torch.randn(1000, 2) * 1.5, log_prob=lambda v: -ebm.energy(v), step_size=1e-3, adapt_steps=500,
                   num_steps=500).x
    cover = mode_coverage(samples)
    return {"nll": nll, "gaussian": gaussian_nll(tr, te), "modes": cover["modes"], "sharp": cover["high_quality"],
            "log_z": log_z, "gap": nll + float(toy_log_prob("8gaussians", te).mean())}


def _cosine(steps):
    return {"scheduler": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps), "scheduler_every": "step"}


@pytest.mark.slow
def test_pcd_beats_a_gaussian_and_covers_the_modes():
    r = _fit_8gaussians(PersistentContrastiveDivergence())
    assert r["nll"] < r["gaussian"] - 1.0
    assert r["modes"] >= 7


@pytest.mark.slow
def test_cd_from_data_comes_near_the_true_density_with_sharp_samples():
    """The benchmark's CD-20 (chosen on a validation split): the true density's NLL is 0.32 nats, a
    Gaussian's 3.5; short-run CD from noise at lr 1e-3 (the old benchmark row) was 1.8 nats off, with a
    fifth of its samples near a mode; at lr 2e-2 the samples were 0.935 sharp (the model's own mass near a
    mode 0.945)."""
    r = _fit_8gaussians(ContrastiveDivergence(step_size=2e-2, init="data"), lr=6e-2, **_cosine(500))
    assert r["gap"] < 0.1 and r["modes"] == 8
    assert r["sharp"] >= 0.95  # the data's own fraction within 3 std of a mode is 0.99


@pytest.mark.slow
def test_nce_comes_near_the_true_density_and_learns_its_log_z():
    """The benchmark's NCE row: 2,000 cheap steps; at 500 it is still a ring around the modes (1.4 nats off)."""
    obj = NoiseContrastiveEstimation(noise_ratio=4)
    r = _fit_8gaussians(obj, lr=1e-2, steps=2000, **_cosine(2000))
    assert r["gap"] < 0.2 and r["modes"] == 8 and r["sharp"] > 0.9
    assert abs(obj.log_z - r["log_z"]) < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_objectives_samplers_and_partition_run_on_cuda():
    x = toy_2d("8gaussians", 256)
    for obj in (ContrastiveDivergence(num_steps=2), PersistentContrastiveDivergence(num_steps=2, buffer_size=300),
                ScoreMatching(), NoiseContrastiveEstimation(), FlowContrastiveEstimation()):
        ebm = EBM(EnergyMLP(2, hidden=(8,)), 2, base_scale=4.0, num_steps=2)
        pyro_dgm.fit(ebm.model, None, x, objective=obj, steps=2, batch_size=64, device="cuda", progress=False)
        assert ebm.sample(4).device.type == "cuda"
    est = ais_log_partition(ebm.energy, ebm.base_distribution(), num_chains=8, num_temps=3)
    assert math.isfinite(est.log_z)
    assert math.isfinite(grid_log_partition(ebm.energy, device="cuda", num_points=50))


def test_a_user_s_energy_given_data_of_another_shape_says_so():
    """UnnormalizedDistribution(E, (2,)) with examples of shape (3,): a clear error before any step (before:
    "shape '[64]' is invalid for input of size 96" from inside the energy's reshape)."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", UnnormalizedDistribution(lambda v: 0.5 * v.pow(2).sum(-1), torch.Size([2])), obs=x)

    x = torch.randn(64, 3)
    with pytest.raises(ValueError, match=r"each example has shape \(3,\), but the energy's event_shape is \(2,\)"):
        pyro_dgm.fit(model, None, x, objective=ScoreMatching(), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"each example has shape \(3,\)"):
        pyro_dgm.evaluate(model, x, log_normalizer=0.0)
