"""Normalizing flows: log-dets against autograd Jacobians, inverses, normalization, training in fit."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings, strategies as st
from pyro.distributions.transforms import BatchNorm
from pyro.nn import AutoRegressiveNN

import pyro_dgm
from pyro_dgm.models import DiagonalGaussian, flows as F
from pyro_dgm.nets import conv_net, mlp
from pyro_dgm.registry import get_model

FAST = settings(max_examples=4, deadline=None, derandomize=True)


def perturb(module, seed, scale=0.3):
    """Random, non-trivial parameters (zero-initialized layers would make every coupling the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def event_dim_of(t):
    return t.domain.event_dim


def check_transform(t, x, tol=1e-4):
    """log|det J| vs autograd, and inverse(forward(x)) == x, on float64 inputs of shape (B, *event)."""
    ev = event_dim_of(t)
    y = t(x)
    assert torch.allclose(t.inv(y), x, atol=1e-6), "inverse(forward(x)) != x"
    ladj = t.log_abs_det_jacobian(x, y)
    if ev == 0:
        ladj = ladj.expand(x.shape).reshape(x.shape[0], -1).sum(-1)
    for b in range(x.shape[0]):
        xb = x[b:b + 1]

        def f(flat):
            return t(flat.reshape(xb.shape)).reshape(-1)

        jac = torch.autograd.functional.jacobian(f, xb.reshape(-1))
        expected = torch.linalg.slogdet(jac).logabsdet
        got = float(ladj.detach().reshape(-1)[b])
        assert abs(got - float(expected)) < tol, (got, float(expected))


# ----------------------------------------------------------------- factories: (transform, x) from drawn sizes

def _vector(draw, seed, lo=2):
    dim, batch = draw(st.integers(lo, 5)), draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(seed)
    return dim, torch.randn(batch, dim, generator=g, dtype=torch.float64)


def _image(draw, seed, channels=(1, 2)):
    c, h, w = draw(st.sampled_from(channels)), draw(st.sampled_from([2, 4])), draw(st.sampled_from([2, 4]))
    g = torch.Generator().manual_seed(seed)
    return (c, h, w), torch.randn(draw(st.integers(1, 2)), c, h, w, generator=g, dtype=torch.float64)


def additive_vector(draw, seed):
    dim, x = _vector(draw, seed)
    return F.AdditiveCoupling(F.alternating_mask(dim, seed % 2), mlp((dim, 8, dim), zero_init=True)), x


def additive_image(draw, seed):
    shape, x = _image(draw, seed)
    return F.AdditiveCoupling(F.checkerboard_mask(shape, seed % 2), conv_net(shape[0], 4, shape[0])), x


def diagonal_scaling(draw, seed):
    dim, x = _vector(draw, seed)
    return F.DiagonalScaling(dim), x


def affine_vector(draw, seed):
    dim, x = _vector(draw, seed)
    return F.MaskedAffineCoupling(F.alternating_mask(dim, seed % 2), mlp((dim, 8, 2 * dim), zero_init=True)), x


def affine_checkerboard(draw, seed):
    shape, x = _image(draw, seed)
    return F.MaskedAffineCoupling(F.checkerboard_mask(shape, seed % 2), conv_net(shape[0], 4, 2 * shape[0])), x


def affine_channel(draw, seed):
    shape, x = _image(draw, seed, channels=(2, 4))
    return F.MaskedAffineCoupling(F.channel_mask(shape, seed % 2), conv_net(shape[0], 4, 2 * shape[0])), x


def squeeze(draw, seed):
    return F.Squeeze(), _image(draw, seed)[1]


def unsqueeze(draw, seed):
    shape, x = _image(draw, seed, channels=(4, 8))
    return F.Squeeze().inv, x


def factor_out(draw, seed):
    shape, x = _image(draw, seed, channels=(2, 4))
    keep = shape[0] // 2
    inner = [F.ActNorm(keep), F.MaskedAffineCoupling(F.checkerboard_mask((keep, *shape[1:])),
                                                      conv_net(keep, 4, 2 * keep))]
    return F.FactorOut(inner, keep=keep), x


def actnorm(draw, seed):
    shape, x = _image(draw, seed)
    t = F.ActNorm(shape[0])
    t(x)  # the data-dependent initialization
    return t, x


def conv1x1(draw, seed):
    shape, x = _image(draw, seed, channels=(2, 3))
    return F.InvertibleConv1x1(shape[0]), x


def channel_coupling(draw, seed):
    shape, x = _image(draw, seed, channels=(2, 3))
    return F.ChannelAffineCoupling(shape, hidden=4), x


def maf_layer(draw, seed):
    dim, x = _vector(draw, seed)
    return F.MaskedAffineAutoregressive(AutoRegressiveNN(dim, [8])), x


def batchnorm_inv(draw, seed):
    dim, x = _vector(draw, seed)
    t = BatchNorm(dim)
    t.moving_variance.uniform_(0.5, 2.0)
    t.eval()
    return t.inv, x


def normalizing_batchnorm(draw, seed):
    dim, x = _vector(draw, seed)
    t = F.NormalizingBatchNorm(dim).double()
    t.moving_variance.uniform_(0.5, 2.0)
    t.moving_mean.uniform_(-1.0, 1.0)
    with torch.no_grad():
        t.gamma.uniform_(0.5, 2.0)
    return t.eval(), x


def settle(t, dim, passes=30):
    """Converge the spectral-norm power iterations after changing weights, then freeze them (eval mode)."""
    t.train()
    for _ in range(passes):
        t.g(torch.zeros(1, dim, dtype=torch.float64))
    return t.eval()


def invertible_residual(draw, seed):
    dim, x = _vector(draw, seed, lo=1)
    t = perturb(F.InvertibleResidual(dim, hidden=(8,), log_det="exact", max_iter=500, atol=1e-12).double(), seed)
    return settle(t, dim), x


def logit(draw, seed):
    dim, x = _vector(draw, seed)
    return F.LogitTransform(0.05), torch.sigmoid(x)


def glow_flow(draw, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64)
    flow = F.Glow((1, 4, 4), levels=2, steps=1, hidden=4).flow.double()
    flow(x)  # ActNorm's data-dependent initialization
    return flow, x


def realnvp_flow(draw, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64)
    return F.MultiScaleRealNVP((1, 4, 4), num_scales=2, hidden=4, couplings=1).flow, x


FACTORIES = [additive_vector, additive_image, diagonal_scaling, affine_vector, affine_checkerboard, affine_channel,
             squeeze, unsqueeze, factor_out, actnorm, conv1x1, channel_coupling, maf_layer, batchnorm_inv,
             invertible_residual, logit, glow_flow, realnvp_flow]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
@FAST
@given(data=st.data(), seed=st.integers(0, 10_000))
def test_log_det_matches_autograd_jacobian_and_inverse(factory, data, seed):
    torch.manual_seed(seed)
    t, x = factory(data.draw, seed)
    if isinstance(t, F.InvertibleResidual):
        pass  # perturbed and settled by its factory
    elif isinstance(t, torch.nn.Module):
        perturb(t.double(), seed)
    elif isinstance(getattr(t, "_inv", None), torch.nn.Module):
        t._inv.double()
    check_transform(t, x)


# ----------------------------------------------------------------- i-ResNet

def test_iresnet_power_series_is_unbiased_against_exact_log_det():
    torch.manual_seed(1)
    t = F.InvertibleResidual(3, hidden=(3,), coeff=0.6, num_terms=25).double()
    with torch.no_grad():  # near-identity weights: J_g has a trace far from 0, so log|det| is not ~0
        for layer in t.net[::2]:
            layer.parametrizations.weight.original.copy_(torch.eye(3) + 0.3 * torch.randn(3, 3))
    settle(t, 3)
    x = torch.randn(4, 3, dtype=torch.float64)
    exact = t.exact_log_det(x.requires_grad_())
    reps = 3000
    est = t.series_log_det(x.repeat(reps, 1).detach().requires_grad_()).reshape(reps, 4).detach()
    stderr = est.std(0) / math.sqrt(reps)
    assert exact.abs().min() > 0.05  # the test is not trivially 0 = 0
    assert ((est.mean(0) - exact).abs() < 4 * stderr + 1e-3).all(), (est.mean(0), exact, stderr)


@pytest.mark.parametrize("hidden", [(3,), (4, 3), (16,)])
def test_iresnet_exact_log_det_matches_the_autograd_jacobian_through_a_narrow_last_layer(hidden):
    """Hidden widths below dim take the w x w determinant (Sylvester's identity); (16,) the full one."""
    t = settle(perturb(F.InvertibleResidual(7, hidden=hidden, log_det="exact").double(), 4), 7)
    x = torch.randn(5, 7, dtype=torch.float64)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: v + t.g(v), row) for row in x])
    expected = torch.linalg.slogdet(jac).logabsdet
    got = t.exact_log_det(x.clone().requires_grad_(), create_graph=True)
    assert expected.abs().min() > 1e-3  # not trivially 0 = 0
    assert torch.allclose(got, expected, atol=1e-10), (got, expected)
    assert got.requires_grad  # differentiable when asked


def test_iresnet_fixed_point_inverse_converges_geometrically():
    torch.manual_seed(2)
    t = F.InvertibleResidual(4, hidden=(32,), coeff=0.7).double()
    for _ in range(5):  # training-mode passes run the spectral-norm power iterations
        t(torch.randn(8, 4, dtype=torch.float64))
    t.eval()
    assert t.lipschitz_bound() < 1.0
    x = torch.randn(16, 4, dtype=torch.float64)
    y = t(x)
    errors = []
    for iters in (1, 5, 10, 20):
        t.max_iter, t.atol = iters, 0.0
        errors.append(float((t.inv(y) - x).abs().max().detach()))
    assert errors[-1] < 1e-4 and errors[-1] < errors[0] * 1e-2, errors
    t.max_iter, t.atol = 200, 1e-13
    assert float((t.inv(y) - x).abs().max().detach()) < 1e-10


def test_iresnet_log_det_modes_and_gradients():
    t = settle(perturb(F.InvertibleResidual(2, hidden=(8,), num_terms=30, num_projections=200).double(), 3), 2)
    x = torch.randn(5, 2, dtype=torch.float64)
    exact = F.InvertibleResidual.exact_log_det(t, x.clone().requires_grad_())
    t.train()
    series = t.log_abs_det_jacobian(x, t(x))
    assert series.requires_grad  # differentiable in training
    assert torch.allclose(series, exact, atol=0.1)
    t.eval()
    with torch.no_grad():
        assert torch.allclose(t.log_abs_det_jacobian(x, t(x)), exact, atol=1e-8)  # "auto": exact in eval mode


# ----------------------------------------------------------------- normalization and caching

def _grid_mass(flow, lim=7.0, n=500):
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pts = torch.cartesian_prod(g, g)
    with torch.no_grad():
        logp = torch.cat([flow.log_prob(c) for c in pts.split(50_000)])
    return float(logp.exp().sum() * (g[1] - g[0]) ** 2)


@pytest.mark.parametrize("make", [
    lambda: F.NICE(2, num_couplings=3, hidden=(16,)),
    lambda: F.RealNVP(2, num_couplings=3, hidden=(16,)),
    lambda: F.MAF(2, num_layers=3, hidden=(16,)),
    lambda: F.IResNet(2, num_blocks=2, hidden=(16,)),
], ids=["nice", "realnvp", "maf", "iresnet"])
def test_log_prob_integrates_to_one_on_a_2d_grid(make):
    torch.manual_seed(0)
    flow = perturb(make().double(), 0, 0.2).eval()
    for m in flow.modules():
        if isinstance(m, F.ActNorm):
            m.initialized.fill_(True)
    mass = _grid_mass(flow)
    assert abs(mass - 1.0) < 0.01, mass


@pytest.mark.parametrize("make", [
    lambda: F.MAF(3, num_layers=2, hidden=(16,)),
    lambda: F.RealNVP(3, num_couplings=2, hidden=(16,)),
    lambda: F.MultiScaleRealNVP((1, 4, 4), num_scales=2, hidden=4, couplings=1, logit=None),
    lambda: F.Glow((1, 4, 4), levels=1, steps=2, hidden=4, logit=None),
], ids=["maf", "realnvp", "realnvp-image", "glow"])
def test_validation_loss_changes_after_a_step_on_the_same_tensor(make):
    flow = make()
    x = torch.randn(16, *flow.event_shape)
    opt = torch.optim.SGD(flow.parameters(), lr=1e-3)
    before = flow.log_prob(x).mean()
    (-before).backward()
    opt.step()
    after = flow.log_prob(x).mean()  # the same tensor object: a stale cache would return `before`
    assert float(after.detach()) > float(before.detach()) + 1e-6
    assert torch.allclose(after, flow.log_prob(x.clone()).mean())


def test_a_scored_flow_holds_no_graph_and_deep_copies():
    import copy

    for flow in (F.MAF(3, 2, (8,)), F.Glow((1, 4, 4), 1, 1, 4), F.RealNVP(3, 2, (8,))):
        x = torch.rand(2, *flow.event_shape)
        flow.log_prob(x).sum().backward()
        twin = copy.deepcopy(flow)
        assert torch.allclose(twin.log_prob(x), flow.log_prob(x))


def test_actnorm_data_dependent_initialization():
    t = F.ActNorm(3)
    x = 2.0 + 5.0 * torch.randn(64, 3, 4, 4)
    y = t(x)
    assert bool(t.initialized)
    assert y.mean((0, 2, 3)).abs().max() < 1e-4
    assert (y.std((0, 2, 3)) - 1).abs().max() < 1e-3
    x2 = torch.randn(8, 3, 4, 4)
    assert torch.allclose(t(x2), x2 * t.log_scale.exp() + t.bias)  # no re-initialization


def test_multiscale_flow_is_one_distribution_over_the_image():
    flow = F.Glow((1, 8, 8), levels=2, steps=1, hidden=4)
    d = flow.distribution(3)
    assert d.event_shape == torch.Size([1, 8, 8]) and d.batch_shape == torch.Size([3])
    x = flow.sample(3)
    a = 0.05 / 0.9  # the logit pre-processing's domain is (-a, 1 + a)
    assert x.shape == (3, 1, 8, 8) and bool(((x > -a) & (x < 1 + a)).all())
    assert torch.isfinite(flow.log_prob(x)).all()


# ----------------------------------------------------------------- dequantization

def test_uniform_dequantization_counts_its_log_det():
    base = dist.Uniform(torch.zeros(3), torch.ones(3)).to_event(1)
    d = F.UniformDequantization(base, 17)
    k = torch.tensor([[0.0, 5.0, 16.0], [1.0, 1.0, 1.0]])
    assert torch.allclose(d.log_prob(k), torch.full((2,), -3 * math.log(17)))
    s = d.sample((100,))
    assert bool((s == s.floor()).all()) and s.min() >= 0 and s.max() <= 16
    assert F.discrete_bits_per_dim(0.0, 3, 17) == pytest.approx(math.log2(17))


def test_dequantized_flow_scores_levels_by_the_bound():
    torch.manual_seed(0)
    flow = F.MAF(4, num_layers=1, hidden=(8,), logit=0.05)
    levels = F.FlowModel(4, list(flow.flow.parts), num_levels=17)
    k = torch.randint(0, 17, (6, 4)).float()
    torch.manual_seed(5)
    lp = levels.log_prob(k)
    torch.manual_seed(5)
    u = torch.rand_like(k)
    assert torch.allclose(lp, flow.log_prob((k + u) / 17) - 4 * math.log(17), atol=1e-5)
    with pytest.raises(ValueError, match="num_levels"):
        F.UniformDequantization(flow.distribution(), 1)


def test_logit_transform_log_det_in_reported_likelihood():
    flow = F.NICE(2, num_couplings=1, hidden=(4,), logit=0.1)
    torch.nn.init.zeros_(flow.flow.parts[1].net[-1].weight)  # the coupling made the identity
    x = torch.rand(5, 2)
    z = torch.logit(0.1 + 0.8 * x)
    expected = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + (math.log(0.8) - torch.log(0.1 + 0.8 * x)
                                                            - torch.log(0.9 - 0.8 * x)).sum(-1)
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-5)


# ----------------------------------------------------------------- training with fit

def test_nice_couplings_start_near_the_identity_with_gradient_in_every_layer():
    x = pyro_dgm.data.toy_2d("8gaussians", 4000, seed=0)
    torch.manual_seed(0)
    flow = F.NICE(2, num_couplings=4, hidden=(64, 64))
    nets = [part.net for part in flow.flow.parts if isinstance(part, F.AdditiveCoupling)]
    with torch.no_grad():
        assert max(float(net(x).abs().max()) for net in nets) < 0.1  # shifts of a few hundredths
    (-flow.log_prob(x).mean()).backward()
    # a zero last layer gives the hidden layers no gradient at all, whatever the data
    assert min(float(net[0].weight.grad.norm()) for net in nets) > 1e-4


def test_nice_leaves_the_gaussian_on_8000_points_of_8_gaussians():
    # The symmetric data once kept NICE exactly at the Gaussian (3.540 nats here): a zero last layer had only
    # sampling noise as gradient, and under Adam the coupling nets' ReLUs died.
    x = pyro_dgm.data.toy_2d("8gaussians", 8000, seed=1)
    xtest = pyro_dgm.data.toy_2d("8gaussians", 1000, seed=101)
    torch.manual_seed(1)
    gaussian = DiagonalGaussian(2)
    pyro_dgm.fit(gaussian.model, None, x, epochs=20, batch_size=1000, lr=5e-2, seed=1, progress=False)
    flow = get_model("nice").build(torch.Size([2]), "points", num_couplings=4, hidden=(64, 64))
    pyro_dgm.fit(flow.model, None, x, epochs=12, batch_size=256, lr=3e-3, seed=1, progress=False)
    nll, baseline = (pyro_dgm.evaluate(m.model, xtest)["nll"] for m in (flow, gaussian))
    assert nll < baseline - 1.0, (nll, baseline)


@pytest.mark.parametrize("name, gain", [("nice", 0.5), ("realnvp", 0.5), ("maf", 0.5), ("iresnet", 0.05)])
def test_flows_train_with_fit_on_a_2d_toy(name, gain):
    x = pyro_dgm.data.toy_2d("moons", 512, seed=0)
    xtest = pyro_dgm.data.toy_2d("moons", 256, seed=1)
    flow = get_model(name).build(torch.Size([2]), "points", hidden=(32, 32))
    before = pyro_dgm.evaluate(flow.model, xtest)["nll"]
    r = pyro_dgm.fit(flow.model, None, x, epochs=6, batch_size=64, lr=3e-3, seed=0, progress=False)
    after = pyro_dgm.evaluate(flow.model, xtest)["nll"]  # exact log-dets: fit leaves the modules in eval mode
    assert type(r.objective).__name__ == "MaximumLikelihood"
    assert after < before - gain, (before, after)


@pytest.mark.parametrize("name", ["realnvp-image", "glow"])
def test_image_flows_train_with_fit_on_digits(name):
    x = pyro_dgm.data.load_digits("train", "continuous", image=True)[:256]
    spec = get_model(name)
    assert spec.fit_defaults["image"] is True
    flow = spec.build(torch.Size([1, 8, 8]), "continuous", hidden=8)
    r = pyro_dgm.fit(flow.model, None, x, steps=12, batch_size=64, lr=3e-3, seed=0, progress=False)
    losses = r.losses["model"]
    assert sum(losses[-3:]) / 3 < losses[0] - 5.0, losses
    res = pyro_dgm.evaluate(flow.model, x[:64])
    assert math.isfinite(res["bits_per_dim"])


def test_iaf_vae_trains_with_trace_elbo():
    x = pyro_dgm.data.load_digits("train", "binary")[:256]
    vae = F.IAFVAE(64, latent_dim=4, hidden=(64,), num_steps=2, flow_hidden=(32,))
    r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=8, batch_size=64, lr=3e-3, seed=0, progress=False)
    assert r.objective.uses_analytic_kl is False  # a flow guide has no closed-form KL: Trace_ELBO
    losses = r.losses["model"]
    assert sum(losses[-4:]) / 4 < losses[0] - 5.0
    iwae = pyro_dgm.evaluate(vae.model, x[:64], guide=vae.guide, num_particles=8)["nll"]
    assert math.isfinite(iwae) and iwae < losses[0]


class _ConjugateGaussian(torch.nn.Module):
    """z ~ N(0, I), x | z ~ N(z, 0.5^2 I): p(x) = N(0, 1.25 I); guide q(z|x) is a conditional flow."""

    def __init__(self):
        super().__init__()
        self.q = F.ConditionalIAF(2, 2, num_steps=1, hidden=(16,))

    def model(self, x=None, num_samples=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(self, x=None, num_samples=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.q.condition(x))


def test_conditional_flow_guide_reaches_the_exact_evidence_with_elbo():
    torch.manual_seed(0)
    x = math.sqrt(1.25) * torch.randn(512, 2)
    m = _ConjugateGaussian()
    pyro_dgm.fit(m.model, m.guide, x, epochs=30, batch_size=128, lr=1e-2, seed=0, progress=False)
    exact = -dist.Normal(0.0, math.sqrt(1.25)).log_prob(x[:128]).sum(-1).mean()
    elbo = pyro_dgm.evaluate(m.model, x[:128], guide=m.guide, num_particles=1, seed=1)["nll"]
    assert 0.0 <= elbo - float(exact) + 0.02 and elbo - float(exact) < 0.05, (elbo, float(exact))


# ----------------------------------------------------------------- arguments

@pytest.mark.parametrize("call, arg", [
    (lambda: F.NICE(1), "dim"),
    (lambda: F.RealNVP(4, num_couplings=0), "num_couplings"),
    (lambda: F.MAF(4, num_layers=0), "num_layers"),
    (lambda: F.Glow((1, 6, 6), levels=2), "levels"),
    (lambda: F.MultiScaleRealNVP((8, 8)), "shape"),
    (lambda: F.InvertibleResidual(2, coeff=1.0), "coeff"),
    (lambda: F.InvertibleResidual(2, log_det="magic"), "log_det"),
    (lambda: F.LogitTransform(0.5), "alpha"),
    (lambda: F.ActNorm(3, event_dim=2), "event_dim"),
    (lambda: F.AdditiveCoupling(torch.tensor([0.0, 0.5]), torch.nn.Identity()), "mask"),
    (lambda: F.FactorOut([], keep=0), "keep"),
    (lambda: F.ConditionalIAF(0, 3), "dim"),
    (lambda: F.FlowModel(2, []), "transforms"),
    (lambda: get_model("maf").build(torch.Size([1, 8, 8]), "continuous"), "event_shape"),
])
def test_bad_arguments_raise_value_error_naming_them(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_maf_scores_data_with_one_made_pass_per_layer():
    """The normalizing direction is the cheap one: no sequential inverse while training (speed regression)."""
    flow = F.MAF(8, num_layers=3, hidden=(16,))
    calls = []
    for m in flow.modules():
        if isinstance(m, AutoRegressiveNN):
            m.register_forward_hook(lambda *a: calls.append(1))
    flow.log_prob(torch.randn(4, 8)).sum().backward()
    assert len(calls) == 3
    calls.clear()
    flow.sample(2)
    assert len(calls) == 3 * 8  # sampling inverts each layer coordinate by coordinate


# ----------------------------------------------------------------- longer training (slow)

@pytest.mark.slow
@pytest.mark.parametrize("name", ["realnvp", "maf"])
def test_flows_beat_the_gaussian_on_moons(name):
    x = pyro_dgm.data.toy_2d("moons", 2000, seed=0)
    xtest = pyro_dgm.data.toy_2d("moons", 1000, seed=1)
    gauss = pyro_dgm.models.DiagonalGaussian(2)
    pyro_dgm.fit(gauss.model, None, x, epochs=30, lr=5e-2, batch_size=256, seed=0, progress=False)
    flow = get_model(name).build(torch.Size([2]), "points", hidden=(64, 64))
    pyro_dgm.fit(flow.model, None, x, epochs=30, batch_size=128, lr=3e-3, seed=0, progress=False)
    g, f = pyro_dgm.evaluate(gauss.model, xtest)["nll"], pyro_dgm.evaluate(flow.model, xtest)["nll"]
    assert f < g - 0.8, (g, f)  # the Gaussian scores ~3.4 nats, a flow ~2.3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maf", "glow"])
def test_flows_beat_the_gaussian_on_digits_in_bits_per_dim(name):
    image = get_model(name).fit_defaults.get("image", False)
    x = pyro_dgm.data.load_digits("train", "continuous", image=image)
    xtest = pyro_dgm.data.load_digits("test", "continuous", image=image)
    gauss = pyro_dgm.models.DiagonalGaussian(x.shape[1:])
    pyro_dgm.fit(gauss.model, None, x, epochs=30, lr=5e-2, seed=0, progress=False)
    options = {"hidden": 16, "steps": 2} if name == "glow" else {"hidden": (128, 128), "num_layers": 3}
    flow = get_model(name).build(x.shape[1:], "continuous", **options)
    pyro_dgm.fit(flow.model, None, x, epochs=8, lr=2e-3, seed=0, progress=False)
    g = pyro_dgm.evaluate(gauss.model, xtest)["bits_per_dim"]
    f = pyro_dgm.evaluate(flow.model, xtest)["bits_per_dim"]
    assert f < g - 0.5, (g, f)


def test_iresnet_series_log_det_reuses_the_forward_pass_in_training():
    """In training mode each g(x) runs a spectral-norm power iteration; the log-det must use the pass's own g."""
    torch.manual_seed(0)
    block = F.InvertibleResidual(2, hidden=(16,), log_det="series")
    block.train()
    calls = []
    block.net.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(5, 2)
    y = block(x)
    ld = block.log_abs_det_jacobian(x, y)
    assert len(calls) == 1 and ld.shape == (5,)


# ----------------------------------------------------------------- flows are classes; MAF's batch norm is a module

@pytest.mark.parametrize("make", [lambda: F.NICE(2, num_couplings=1, hidden=(4,)),
                                  lambda: F.RealNVP(2, num_couplings=1, hidden=(4,)),
                                  lambda: F.MAF(2, num_layers=1, hidden=(4,)),
                                  lambda: F.IResNet(2, num_blocks=1, hidden=(4,)),
                                  lambda: F.Glow((1, 4, 4), levels=1, steps=1, hidden=4),
                                  lambda: F.MultiScaleRealNVP((1, 4, 4), num_scales=1, hidden=4, couplings=1)])
def test_flows_are_classes_named_in_their_repr(make):
    flow = make()
    assert isinstance(flow, F.FlowModel) and type(flow) is not F.FlowModel
    assert repr(flow).startswith(type(flow).__name__ + "(")


def test_maf_batch_norm_is_registered_trained_saved_and_switched_to_eval():
    torch.manual_seed(0)
    plain, normed = F.MAF(3, num_layers=3, hidden=(8,)), F.MAF(3, num_layers=3, hidden=(8,), batch_norm=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(normed) == count(plain) + 2 * (2 * 3)  # gamma and beta of the two batch norms
    keys = normed.state_dict().keys()
    assert sum(k.endswith("moving_mean") for k in keys) == 2 and sum(k.endswith("moving_variance") for k in keys) == 2
    x = torch.randn(256, 3) * 2 + 1
    r = pyro_dgm.fit(normed.model, None, x, epochs=3, batch_size=64, lr=1e-2, progress=False)
    bns = [m for m in normed.modules() if isinstance(m, F.NormalizingBatchNorm)]
    assert all(not bn.training for bn in bns)  # fit leaves the model in eval mode
    assert all(not torch.allclose(bn.moving_mean, torch.zeros(3)) for bn in bns)  # running statistics moved
    assert any(not torch.allclose(bn.gamma, torch.ones(3)) for bn in bns)  # gamma trained
    assert r.losses["model"][-1] < r.losses["model"][0]
    # in eval mode one example's density does not depend on the rest of its batch
    alone = normed.log_prob(x[:1])
    together = normed.log_prob(x[:50])[:1]
    assert torch.allclose(alone, together, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(st.data(), st.integers(0, 2**16))
def test_normalizing_batchnorm_log_det_matches_autograd(data, seed):
    t, x = normalizing_batchnorm(data.draw, seed)
    check_transform(t, x)


def test_a_flow_without_an_inverse_is_refused_for_maximum_likelihood():
    """Pyro's planar flow scores only its own samples: refused with the reason (before: Pyro's KeyError about
    its intermediates cache at the first step)."""
    import pyro.distributions.transforms as T

    planar = T.planar(2)
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)

    def model(x):
        pyro.module("planar", planar)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.TransformedDistribution(base, [planar]), obs=x)

    with pytest.raises(ValueError, match="transform without an inverse.*invertible one"):
        pyro_dgm.fit(model, None, torch.randn(32, 2), steps=1, progress=False)
