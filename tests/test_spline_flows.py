"""Neural spline flows (issue 15): exact log-dets, the box set from the data, training to the truth,
and the true toy densities the gap is measured against."""

import copy
import math

import pyro_dgm
import pytest
import torch
from pyro.distributions.transforms import spline_coupling
from torch.autograd.functional import jacobian

from pyro_dgm.callbacks import WeightAverage
from pyro_dgm.data import toy_2d, toy_log_prob
from pyro_dgm.models import DiagonalGaussian
from pyro_dgm.models.flows import BoxScale, NeuralSplineFlow, RQSplineAutoregressive, RQSplineCoupling
from pyro_dgm.registry import get_model


def _perturbed(t):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return t.double()


@pytest.mark.parametrize("make", [lambda: RQSplineCoupling(3, hidden=(8,)),
                                  lambda: RQSplineAutoregressive(3, hidden=(8,)),
                                  lambda: BoxScale(3, scale=[0.5, 2.0, 1.5])], ids=["coupling", "ar", "box"])
def test_log_det_matches_the_autograd_jacobian(make):
    t = _perturbed(make())
    x = torch.randn(4, 3, dtype=torch.float64) * 2
    y = t(x)
    ld = t.log_abs_det_jacobian(x, y)
    for i in range(4):
        jac = jacobian(lambda v: t(v.unsqueeze(0)).squeeze(0), x[i])
        assert abs(torch.linalg.slogdet(jac).logabsdet.item() - ld[i].item()) < 1e-8
    assert torch.allclose(t.inv(y), x, atol=1e-6)


def test_whole_flow_density_integrates_to_one():
    torch.manual_seed(0)
    flow = NeuralSplineFlow(2, num_layers=2, hidden=(8,), autoregressive=True, scale=[1.0, 1.0])
    _perturbed(flow.flow)  # float64
    g = torch.linspace(-6, 6, 601, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    mass = flow.log_prob(grid).exp().sum().item() * (g[1] - g[0]).item() ** 2
    assert abs(mass - 1.0) < 1e-2


def test_pyro_default_box_leaves_far_data_untransformed_and_ours_does_not():
    far = torch.tensor([[4.4, -4.4], [-3.5, 4.2]])
    pyro_layer = _perturbed(spline_coupling(2, hidden_dims=[8], count_bins=8)).float()
    out = pyro_layer(far)
    assert torch.equal(out[:, 1], far[:, 1]) and torch.equal(out[:, 0], far[:, 0])  # identity beyond bound 3
    x = toy_2d("25gaussians", 500, seed=0)
    flow = NeuralSplineFlow(2, num_layers=1, hidden=(8,))
    flow.log_prob(x)  # the first batch sets the box
    box = flow.flow.parts[0]
    assert bool((box(x).abs() <= box.fill * box.bound + 1e-6).all())
    assert bool((box(far).abs() < box.bound).all())  # well inside the splines' box


def test_the_box_scale_is_saved_and_not_reset_on_load():
    x = toy_2d("8gaussians", 256, seed=0)
    a = NeuralSplineFlow(2, num_layers=2, hidden=(8,))
    a.log_prob(x)
    b = NeuralSplineFlow(2, num_layers=2, hidden=(8,))
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.flow.parts[0].scale, a.flow.parts[0].scale)
    assert torch.allclose(b.log_prob(3 * x), a.log_prob(3 * x))


def test_box_scale_refuses_bad_settings():
    with pytest.raises(ValueError, match="fill"):
        BoxScale(2, fill=1.5)
    with pytest.raises(ValueError, match="count_bins"):
        RQSplineCoupling(2, count_bins=1)


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_registered_spline_flows_train_past_the_gaussian(name):
    torch.manual_seed(0)
    x, xt = toy_2d("8gaussians", 2000, seed=0), toy_2d("8gaussians", 1000, seed=1)
    flow = get_model(name).build(torch.Size([2]), "points", num_layers=2, hidden=(32, 32), count_bins=8)
    pyro_dgm.fit(flow.model, None, x, epochs=8, batch_size=128, lr=5e-3, progress=False)
    gauss = DiagonalGaussian(2)
    pyro_dgm.fit(gauss.model, None, x, epochs=20, batch_size=256, lr=5e-2, progress=False)
    nll, base = pyro_dgm.evaluate(flow.model, xt)["nll"], pyro_dgm.evaluate(gauss.model, xt)["nll"]
    truth = -toy_log_prob("8gaussians", xt).mean().item()
    assert nll < base - 1.0 and nll > truth - 0.05  # far better than the Gaussian, never better than the truth


@pytest.mark.parametrize("toy", ["8gaussians", "25gaussians", "checkerboard"])
def test_true_toy_densities_integrate_to_one_and_match_samples(toy):
    g = torch.linspace(-6, 6, 1201)
    grid = torch.cartesian_prod(g, g)
    mass = toy_log_prob(toy, grid).exp().sum().item() * (g[1] - g[0]).item() ** 2
    assert abs(mass - 1.0) < 1e-2
    assert bool(torch.isfinite(toy_log_prob(toy, toy_2d(toy, 5000, seed=2))).all())  # samples lie on the support
    if toy == "checkerboard":
        assert toy_log_prob(toy, torch.tensor([[1.0, -1.0]])).item() == -math.inf  # a light square
    with pytest.raises(ValueError, match="true density"):
        toy_log_prob("moons", grid[:2])


@pytest.mark.parametrize("name", ["nsf", "nsf-ar"])
def test_a_trained_spline_flow_holds_no_graph_so_it_can_be_deep_copied_and_averaged(name):
    x = toy_2d("checkerboard", 256, seed=0)
    torch.manual_seed(0)
    flow = get_model(name).build(torch.Size([2]), "points", num_layers=3, hidden=(8,))
    ema = WeightAverage(flow, decay=0.5, load_at_end=False)
    pyro_dgm.fit(flow.model, None, x, steps=6, batch_size=64, callbacks=[ema], progress=False)
    with torch.no_grad():
        live, twin = flow.log_prob(x), copy.deepcopy(flow).log_prob(x)  # Pyro's caches made deepcopy fail
        assert torch.equal(twin, live)
        with ema.applied():
            average = flow.log_prob(x)
        assert (average - live).abs().max() > 1e-4  # the average is not the last iterate
        assert torch.equal(flow.log_prob(x), live)
