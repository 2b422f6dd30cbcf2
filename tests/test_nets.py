"""One network toolkit (pyro_dgm.nets), one shape and width check, deprecated names, and
conveniences that run the program (issue 18)."""

import warnings

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_dgm.checks import as_event_shape, widths
from pyro_dgm.metrics import digits_classifier
from pyro_dgm.models import (EBM, IResNet, MADE, MAF, NCSN, NICE, VAE, EnergyMLP, FactorizedBernoulli,
                             MLPCritic, MLPGenerator, RealNVP, ScoreMLP)
from pyro_dgm.models.flows import InvertibleResidual
from pyro_dgm.nets import GaussianHead, loc_scale, mlp
from pyro_dgm.samplers import AnnealedLangevin


def test_mlp_layout_and_options():
    net = mlp((3, 5, 2), nn.SiLU)
    assert [type(m) for m in net] == [nn.Linear, nn.SiLU, nn.Linear]
    assert [type(m) for m in mlp((3, 5, 2), last_activation=True, flatten=True)] == [
        nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    zero = mlp((3, 4, 2), zero_init=True)
    assert torch.equal(zero(torch.randn(7, 3)), torch.zeros(7, 2))
    with pytest.raises(ValueError, match="sizes"):
        mlp((3,))


def test_spectral_norm_makes_every_layer_1_lipschitz():
    torch.manual_seed(0)
    net = mlp((6, 32, 6), spectral_norm=True, n_power_iterations=5)
    for _ in range(20):  # the power iteration runs in training mode
        net(torch.randn(4, 6))
    for layer in (net[0], net[2]):
        assert abs(torch.linalg.matrix_norm(layer.weight, ord=2).item() - 1.0) < 1e-3


def test_gaussian_head_splits_loc_and_a_positive_scale():
    head = GaussianHead(nn.Linear(3, 4), min_scale=0.5)
    x = torch.randn(10, 3)
    loc, scale = head(x)
    out = head.net(x)
    assert torch.equal(loc, out[:, :2])
    assert torch.allclose(scale, nn.functional.softplus(out[:, 2:]) + 0.5)
    assert bool((loc_scale(torch.full((2, 4), -50.0))[1] >= 1e-3).all())


def test_shipped_classifier_still_loads_into_the_shared_mlp():
    net = digits_classifier()
    assert list(net.body.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("value, expected", [(8, (8,)), ((8, 4), (8, 4)), ([3], (3,))])
def test_widths_accepts_an_int_or_a_sequence(value, expected):
    assert widths("hidden", value) == expected


@pytest.mark.parametrize("value", [0, (), (4, 0), "64", True, (2.5,), None])
def test_widths_refuses_anything_else(value):
    with pytest.raises(ValueError, match="^hidden: expected an integer >= 1"):
        widths("hidden", value)


@pytest.mark.parametrize("value", [0, (), (3, 0), (True,), "8", 2.0])
def test_event_shape_is_checked_in_one_place(value):
    with pytest.raises(ValueError, match="^event_shape: expected a positive int or a tuple"):
        as_event_shape(value)
    assert as_event_shape(4) == torch.Size([4]) and as_event_shape((1, 8, 8)) == torch.Size([1, 8, 8])


@pytest.mark.parametrize("make", [
    lambda h: VAE(4, latent_dim=2, hidden=h), lambda h: NICE(4, num_couplings=1, hidden=h),
    lambda h: RealNVP(4, num_couplings=1, hidden=h), lambda h: MADE(4, hidden=h), lambda h: MAF(4, 1, hidden=h),
    lambda h: IResNet(4, num_blocks=1, hidden=h), lambda h: MLPCritic(4, hidden=h),
    lambda h: MLPGenerator(4, latent_dim=2, hidden=h), lambda h: EnergyMLP(4, hidden=h),
    lambda h: ScoreMLP(4, hidden=h)], ids=["vae", "nice", "realnvp", "made", "maf", "iresnet", "critic",
                                           "generator", "energy", "score"])
def test_hidden_as_int_means_one_layer_everywhere(make):
    torch.manual_seed(0)
    as_int, as_tuple = make(6), make((6,))
    assert [p.shape for p in as_int.parameters()] == [p.shape for p in as_tuple.parameters()]
    with pytest.raises(ValueError, match="hidden"):
        make(0)


# -- deprecated names -------------------------------------------------------------
def test_old_langevin_names_still_work_with_a_warning():
    with pytest.warns(FutureWarning, match="step_lr= is deprecated.*use step_size="):
        sampler = AnnealedLangevin([1.0], steps_per_level=3, step_lr=0.1)
    assert sampler.step_size == 0.1
    with pytest.warns(FutureWarning, match="step_lr is deprecated"):
        assert sampler.step_lr == 0.1
    with pytest.warns(FutureWarning, match="sample_steps= is deprecated"):
        ebm = EBM(EnergyMLP(2, hidden=4), 2, sample_steps=7, sample_step_size=0.2, sample_noise=0.5)
    assert (ebm.num_steps, ebm.step_size, ebm.noise_scale) == (7, 0.2, 0.5)
    with pytest.raises(TypeError, match="both step_lr= and its new name step_size="):
        AnnealedLangevin([1.0], step_lr=0.1, step_size=0.2)


def test_old_counting_names_still_work_with_a_warning():
    with pytest.warns(FutureWarning, match="n_terms= is deprecated"):
        block = InvertibleResidual(2, hidden=4, n_terms=3, n_samples=2)
    assert (block.num_terms, block.num_projections) == (3, 2)
    with pytest.warns(FutureWarning, match="field is deprecated"):
        field = NCSN(2).field(3)
    assert field.batch_shape == torch.Size([3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names do not warn
        InvertibleResidual(2, hidden=4, num_terms=3, num_projections=2)
        AnnealedLangevin([1.0], step_size=0.1)


# -- no side doors: conveniences run the program ----------------------------------
def test_vae_sample_runs_the_program_so_handlers_apply():
    pyro.set_rng_seed(0)
    vae = VAE(4, latent_dim=2, hidden=8)
    z = torch.randn(3, 2)
    with poutine.condition(data={"z": z}):
        means = vae.sample(3, mean=True)
    assert torch.allclose(means, vae.mean(z))
    with poutine.trace() as tracer:
        vae.sample(5)
    assert tracer.trace.nodes["x"]["value"].shape == (5, 4)


def test_generator_sample_runs_the_program_so_handlers_apply():
    gen = MLPGenerator(2, latent_dim=2, hidden=8)
    z = torch.randn(4, 2)
    with poutine.condition(data={"z": z}):
        assert torch.allclose(gen.sample(4), gen(z))


def test_flow_log_prob_and_sample_run_the_program():
    flow = NICE(2, num_couplings=2, hidden=8)
    x = torch.randn(6, 2)
    with poutine.trace() as tracer:
        lp = flow.log_prob(x)
    assert torch.equal(tracer.trace.nodes["x"]["value"], x)
    assert torch.allclose(lp, flow.distribution(6).log_prob(x))
    with poutine.trace() as tracer:
        assert flow.sample(5).shape == (5, 2)
    assert "x" in tracer.trace.nodes


@pytest.mark.parametrize("make", [lambda: EBM(EnergyMLP(2, hidden=4), 2, num_steps=2),
                                  lambda: FactorizedBernoulli(3)], ids=["ebm", "bernoulli"])
def test_other_conveniences_run_the_program(make):
    model = make()
    with poutine.trace() as tracer:
        x = model.sample(4)
    assert torch.equal(tracer.trace.nodes["x"]["value"], x)
    with pytest.raises(ValueError, match="^n: expected an integer >= 1"):
        model.sample(0)
