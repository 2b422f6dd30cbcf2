"""GANs as Pyro programs: the adversarial objectives against closed forms, and training."""

import math

import pytest
import torch
from pyro import poutine
from torch import nn

import pyro_dgm
from pyro_dgm.data import toy_2d
from pyro_dgm.inference import F_DIVERGENCES, Adversarial, gradient_penalty, sample_program
from pyro_dgm.inference.adversarial import r1_penalty
from pyro_dgm.metrics import mode_coverage
from pyro_dgm.models import GAN, DCGANCritic, DCGANGenerator, Generator, MLPCritic, MLPGenerator
from pyro_dgm.registry import get_model

# P = N(0, 1) is the data, Q = N(MU_Q, SIGMA_Q^2) the (fixed) generator; quadrature on a fine grid.
MU_Q, SIGMA_Q = 1.0, 1.25
GRID = torch.linspace(-12.0, 12.0, 48001, dtype=torch.float64)


def normal_log_pdf(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))


def integral(values):
    return float(torch.trapezoid(values, GRID))


def log_p(x=GRID):
    return normal_log_pdf(x, 0.0, 1.0)


def log_q(x=GRID):
    return normal_log_pdf(x, MU_Q, SIGMA_Q)


def fixed_generator():
    """G(z) = MU_Q + SIGMA_Q z, so the generator's distribution is Q exactly."""
    net = nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(SIGMA_Q)
        net.bias.fill_(MU_Q)
    return Generator(net, event_shape=1, latent_dim=1)


def train_critic_only(loss, steps, **options):
    """Train only the critic against the fixed generator (n_critic > steps: G never steps)."""
    torch.manual_seed(0)
    gen, critic = fixed_generator(), MLPCritic(1, hidden=(32, 32))
    data = torch.randn(20000, 1)
    obj = Adversarial(critic, loss=loss, n_critic=steps + 1, **options)
    pyro_dgm.fit(gen.model, None, data, objective=obj, steps=steps, batch_size=256, seed=0, progress=False,
                 lr={"critic": 3e-3, "generator": 1e-3})
    return gen, critic


def critic_on_grid(critic):
    with torch.no_grad():
        return critic(GRID.float().unsqueeze(-1)).double()


# ------------------------------------------------------------ the original game

def test_optimal_discriminator_and_minimax_value():
    """D*(x) = p/(p + q) (Goodfellow et al., 2014, Prop. 1) and V(G, D*) = 2 JSD(P||Q) - log 4 (Thm. 1)."""
    gen, critic = train_critic_only("minimax", steps=1500)
    assert float(gen.net.weight.detach()) == pytest.approx(SIGMA_Q)  # the generator never stepped
    assert float(gen.net.bias.detach()) == pytest.approx(MU_Q)
    v = critic_on_grid(critic)
    d_star = torch.sigmoid(log_p() - log_q())
    mass = 0.5 * (log_p().exp() + log_q().exp())
    # Where the data or the generator put their mass, the trained D is close to D*.
    central = mass > 0.02
    assert float((torch.sigmoid(v) - d_star)[central].abs().max()) < 0.06
    assert integral(mass * (torch.sigmoid(v) - d_star).abs()) < 0.02
    # The value of the game at the trained D, by quadrature: E_P log D + E_Q log(1 - D).
    value = integral(log_p().exp() * torch.nn.functional.logsigmoid(v)
                     + log_q().exp() * torch.nn.functional.logsigmoid(-v))
    m = torch.logaddexp(log_p(), log_q()) - math.log(2)
    jsd = 0.5 * integral(log_p().exp() * (log_p() - m)) + 0.5 * integral(log_q().exp() * (log_q() - m))
    assert value == pytest.approx(2 * jsd - math.log(4), abs=0.01)
    assert value <= 2 * jsd - math.log(4) + 1e-6  # D* maximizes the value


# ------------------------------------------------------------ f-GAN

# Points t inside dom f* where the supremum over u >= 0 is attained at a moderate u.
CONJUGATE_RANGES = {"kl": (-2.0, 2.0), "reverse-kl": (-3.0, -0.3), "pearson": (-1.8, 3.0),
                    "hellinger": (-2.0, 0.7), "js": (-2.0, 0.6), "gan": (-3.0, -0.1), "tv": (-0.45, 0.45)}

# Output activations g_f of Nowozin et al. (2016), Table 6, written out here.
ACTIVATIONS = {
    "kl": lambda v: v,
    "reverse-kl": lambda v: -torch.exp(-v),
    "pearson": lambda v: v,
    "hellinger": lambda v: 1 - torch.exp(-v),
    "js": lambda v: math.log(2) - torch.log1p(torch.exp(-v)),
    "gan": lambda v: -torch.log1p(torch.exp(-v)),
    "tv": lambda v: 0.5 * torch.tanh(v),
}


def test_every_divergence_of_the_issue_is_there():
    assert set(F_DIVERGENCES) == set(CONJUGATE_RANGES)


@pytest.mark.parametrize("name", sorted(CONJUGATE_RANGES))
def test_conjugate_is_the_legendre_transform(name):
    """f*(t) = sup_u t u - f(u), maximized numerically over a fine grid of u >= 0."""
    d = F_DIVERGENCES[name]
    u = torch.logspace(-12, 3, 500001, dtype=torch.float64)
    fu = d.f(u)
    t = torch.linspace(*CONJUGATE_RANGES[name], 13, dtype=torch.float64)
    sup = (t.unsqueeze(-1) * u - fu).max(-1).values
    assert torch.allclose(d.conjugate(t), sup, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_table_and_lands_in_the_domain(name):
    d = F_DIVERGENCES[name]
    v = torch.linspace(-30, 30, 601, dtype=torch.float64)
    t = d.activation(v)
    assert torch.allclose(t, ACTIVATIONS[name](v), atol=1e-12)
    assert bool(torch.isfinite(d.conjugate(t[(v > -10) & (v < 10)])).all())


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_conjugate_of_activation_is_the_composition_and_stays_finite(name):
    d = F_DIVERGENCES[name]
    v = torch.linspace(-8, 8, 161, dtype=torch.float64)
    assert torch.allclose(d.conjugate_activation(v), d.conjugate(d.activation(v)), rtol=1e-9, atol=1e-9)
    extreme = torch.tensor([-200.0, 200.0])  # float32: exp(-200) = 0 and exp(200) = inf
    finite = torch.isfinite(d.conjugate_activation(extreme))
    grows_exponentially = name in ("kl", "hellinger")  # f*(g(v)) = e^(v - 1), e^v - 1 overflow themselves
    assert bool(finite[0]) if grows_exponentially else bool(finite.all())


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_fenchel_young_equality_at_the_derivative(name):
    """f*(f'(u)) = u f'(u) - f(u): T* = f'(p/q) attains the supremum pointwise."""
    d = F_DIVERGENCES[name]
    u = torch.tensor([0.2, 0.5, 0.9, 1.3, 2.0, 5.0], dtype=torch.float64)
    assert torch.allclose(d.conjugate(d.derivative(u)), u * d.derivative(u) - d.f(u), atol=1e-12)


def divergence_by_quadrature(d):
    u = (log_p() - log_q()).exp()
    return integral(log_q().exp() * d.f(u))


def bound_by_quadrature(d, t):
    """F(T) = E_P T - E_Q f*(T) for a critic T given on the grid."""
    return integral(log_p().exp() * t - log_q().exp() * d.conjugate(t))


def test_divergences_by_quadrature_match_closed_forms():
    kl_pq = math.log(SIGMA_Q) + (1 + MU_Q**2) / (2 * SIGMA_Q**2) - 0.5  # KL(P || Q)
    kl_qp = 0.5 * (SIGMA_Q**2 + MU_Q**2 - 1) - math.log(SIGMA_Q)  # KL(Q || P)
    assert divergence_by_quadrature(F_DIVERGENCES["kl"]) == pytest.approx(kl_pq, rel=1e-6)
    assert divergence_by_quadrature(F_DIVERGENCES["reverse-kl"]) == pytest.approx(kl_qp, rel=1e-6)
    hellinger = 2 * (1 - math.sqrt(2 * SIGMA_Q / (1 + SIGMA_Q**2)) * math.exp(-MU_Q**2 / (4 * (1 + SIGMA_Q**2))))
    assert divergence_by_quadrature(F_DIVERGENCES["hellinger"]) == pytest.approx(hellinger, rel=1e-6)
    m = torch.logaddexp(log_p(), log_q()) - math.log(2)  # the mixture M = (P + Q) / 2
    jsd = 0.5 * integral(log_p().exp() * (log_p() - m)) + 0.5 * integral(log_q().exp() * (log_q() - m))
    assert divergence_by_quadrature(F_DIVERGENCES["js"]) == pytest.approx(2 * jsd, rel=1e-6)
    assert divergence_by_quadrature(F_DIVERGENCES["gan"]) == pytest.approx(2 * jsd - math.log(4), rel=1e-6)


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_bound_is_below_the_divergence_and_tight_at_the_optimal_critic(name):
    d = F_DIVERGENCES[name]
    true = divergence_by_quadrature(d)
    t_star = d.derivative((log_p() - log_q()).exp())
    assert bound_by_quadrature(d, t_star) == pytest.approx(true, rel=1e-5, abs=1e-7)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):  # critics T = g_f(a x^2 + b x + c) of the f-GAN family
        a, b, c = (torch.randn(3, generator=g, dtype=torch.float64) * torch.tensor([0.1, 1.0, 1.0])).tolist()
        t = d.activation(a * GRID**2 + b * GRID + c)
        assert bound_by_quadrature(d, t) < true


@pytest.mark.parametrize("name", ["kl", "pearson", "hellinger"])
def test_trained_f_gan_critic_approaches_the_divergence_from_below(name):
    d = F_DIVERGENCES[name]
    _, critic = train_critic_only("f-gan", steps=800, divergence=name)
    estimate = bound_by_quadrature(d, d.activation(critic_on_grid(critic)))
    true = divergence_by_quadrature(d)
    assert 0.9 * true < estimate < true


# ------------------------------------------------------------ Wasserstein and hinge

class Quadratic(nn.Module):
    """V(x) = 1/2 |x|^2 + a . x, so grad V(x) = x + a."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.as_tensor(a))

    def forward(self, x):
        return 0.5 * x.pow(2).sum(-1) + x @ self.a


def test_gradient_penalty_equals_its_definition():
    torch.manual_seed(0)
    critic = Quadratic([0.3, -0.2, 0.5])
    real, fake, eps = torch.randn(16, 3), torch.randn(16, 3) + 2.0, torch.rand(16)
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    grad = x_hat + critic.a.detach()
    expected = (grad.norm(dim=-1) - 1).pow(2).mean()
    penalty = gradient_penalty(critic, real, fake, eps=eps)
    assert float(penalty.detach()) == pytest.approx(float(expected), rel=1e-6)
    penalty.backward()  # differentiable in the critic's parameters: d/da of the mean above
    norm = grad.norm(dim=-1, keepdim=True)
    assert torch.allclose(critic.a.grad, (2 * (norm - 1) * grad / norm).mean(0), atol=1e-6)
    linear = gradient_penalty(lambda x: x @ torch.tensor([3.0, 4.0, 0.0]), real, fake)
    assert float(linear) == pytest.approx(16.0)  # (|a| - 1)^2 whatever the interpolation


def test_wgan_gp_critic_loss_is_wasserstein_plus_weighted_penalty():
    critic = Quadratic([0.3, -0.2, 0.5])
    obj = Adversarial(critic, loss="wgan-gp", gp_weight=3.0)
    real, fake = torch.randn(16, 3), torch.randn(16, 3) + 1.0
    torch.manual_seed(5)
    terms = obj.critic_loss(real, fake)
    torch.manual_seed(5)
    penalty = gradient_penalty(critic, real, fake)
    assert float(terms["penalty"].detach()) == pytest.approx(3.0 * float(penalty.detach()), rel=1e-6)
    wasserstein = critic(fake).mean() - critic(real).mean()
    assert float(terms["wasserstein"].detach()) == pytest.approx(float(wasserstein.detach()), rel=1e-6)


def test_r1_penalty_is_the_squared_gradient_on_the_data_and_weighted_by_half_gamma():
    """R1 (Mescheder et al., 2018): gamma/2 E_P |grad V(x)|^2 on real x only, differentiable in the critic."""
    torch.manual_seed(0)
    critic = Quadratic([0.3, -0.2, 0.5])
    real, fake = torch.randn(16, 3), torch.randn(16, 3) + 2.0
    grad = real + critic.a.detach()
    penalty = r1_penalty(critic, real)
    assert float(penalty.detach()) == pytest.approx(float(grad.pow(2).sum(-1).mean()), rel=1e-6)
    penalty.backward()  # d/da E|x + a|^2 = 2 E(x + a)
    assert torch.allclose(critic.a.grad, 2 * grad.mean(0), atol=1e-6)
    for loss, extra in (("ns", {}), ("hinge", {}), ("f-gan", {"divergence": "kl"})):
        plain = Adversarial(critic, loss=loss, **extra).critic_loss(real, fake)
        terms = Adversarial(critic, loss=loss, r1_weight=4.0, **extra).critic_loss(real, fake)
        assert float(terms.pop("penalty").detach()) == pytest.approx(2.0 * float(penalty.detach()), rel=1e-6)
        assert {k: float(v.detach()) for k, v in terms.items()} == {k: float(v.detach()) for k, v in plain.items()}




def test_lazy_r1_penalizes_one_batch_in_r1_every_with_that_weight():
    """r1_every=k (Karras et al., 2020): the penalty k * gamma/2 E_P|grad V|^2 on steps 0, k, 2k, ..., 0 between."""
    torch.manual_seed(0)
    critic, x = Quadratic([0.3, -0.2, 0.5]), torch.randn(64, 3)
    eager = float(Adversarial(critic, r1_weight=2.0).critic_loss(x, x + 1.0)["penalty"].detach())
    gen = MLPGenerator(3, latent_dim=2, hidden=(8,))
    r = pyro_dgm.fit(gen.model, None, x, objective=Adversarial(critic, r1_weight=2.0, r1_every=3), steps=7,
                     batch_size=64, lr=1e-9, progress=False)  # a tiny lr: the critic stays the one scored above
    penalties = r.terms["critic/penalty"]
    assert [i for i, p in enumerate(penalties) if p != 0] == [0, 3, 6]
    assert penalties[0] == pytest.approx(3 * eager, rel=1e-4)
class Constant(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x):
        return self.c.expand(x.shape[0])


@pytest.mark.parametrize("c", [-1.5, 0.3, 2.0])
def test_losses_on_a_constant_critic(c):
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    relu = lambda v: max(v, 0.0)  # noqa: E731
    x = torch.randn(8, 2)
    expected = {  # (critic loss, generator loss)
        "minimax": (sp(-c) + sp(c), -sp(c)),
        "ns": (sp(-c) + sp(c), sp(-c)),
        "hinge": (relu(1 - c) + relu(1 + c), -c),
        "wgan": (0.0, -c),
        "wgan-gp": (10.0, -c),  # the gradient of a constant is 0: penalty (0 - 1)^2
    }
    value = lambda t: float(t.detach())  # noqa: E731
    for loss, (critic_loss, gen_loss) in expected.items():
        obj = Adversarial(Constant(c), loss=loss)
        assert value(sum(obj.critic_loss(x, x).values())) == pytest.approx(critic_loss, abs=1e-6), loss
        assert value(obj.generator_loss(x)) == pytest.approx(gen_loss, abs=1e-6), loss
    kl = Adversarial(Constant(c), loss="f-gan", divergence="kl")  # T = v, f*(t) = exp(t - 1)
    assert value(sum(kl.critic_loss(x, x).values())) == pytest.approx(-c + math.exp(c - 1), rel=1e-6)
    assert value(kl.generator_loss(x)) == pytest.approx(-math.exp(c - 1), rel=1e-6)
    # Nowozin et al. (2016), section 3.2: the generator maximizes E_Q g_f(V) instead; for "gan" that is "ns".
    for name, activation in ACTIVATIONS.items():
        obj = Adversarial(Constant(c), loss="f-gan", divergence=name, nonsaturating=True)
        assert value(obj.generator_loss(x)) == pytest.approx(-float(activation(torch.tensor(c))), rel=1e-6)
    gan = Adversarial(Constant(c), loss="f-gan", divergence="gan", nonsaturating=True)
    assert value(gan.generator_loss(x)) == pytest.approx(value(Adversarial(Constant(c)).generator_loss(x)))
    assert value(gan.critic_loss(x, x)["fake"]) == pytest.approx(sp(c), rel=1e-6)  # the critic's loss is unchanged


def test_wgan_clips_the_critics_weights_after_each_step():
    gen, critic = MLPGenerator(2, hidden=(16,)), MLPCritic(2, hidden=(16,))
    r = pyro_dgm.fit(gen.model, None, torch.randn(256, 2), objective=Adversarial(critic, loss="wgan", clip=0.02),
                     steps=6, batch_size=64, optimizer="rmsprop", lr=5e-3, seed=0, progress=False)
    weights = torch.cat([p.detach().flatten() for p in critic.parameters()])
    assert float(weights.abs().max()) == pytest.approx(0.02)
    assert len(r.losses["critic"]) == 6 and len(r.losses["generator"]) == 1  # n_critic = 5 by default


def test_alternating_updates_n_critic():
    obj = Adversarial(MLPCritic(2, hidden=(8,)), loss="hinge", n_critic=3)
    assert [obj.groups_for_step(s) for s in range(6)] == [["critic"], ["critic"], ["critic", "generator"]] * 2


def test_fit_steps_each_player_with_its_own_optimizer():
    torch.manual_seed(0)
    gen, critic = MLPGenerator(2, hidden=(16,)), MLPCritic(2, hidden=(16,))
    g0 = [p.detach().clone() for p in gen.parameters()]
    c0 = [p.detach().clone() for p in critic.parameters()]
    obj = Adversarial(critic, loss="ns", n_critic=2)
    r = pyro_dgm.fit(gen.model, None, toy_2d("8gaussians", 512), objective=obj, steps=8, batch_size=64,
                     lr={"generator": 1e-3, "critic": 1e-2},
                     optimizer_kwargs={"generator": {"betas": (0.5, 0.999)}, "critic": {"betas": (0.5, 0.999)}},
                     seed=0, progress=False)
    assert len(r.losses["critic"]) == 8 and len(r.losses["generator"]) == 4
    assert sorted(r.terms) == ["critic/fake", "critic/real"]
    assert all(not torch.equal(a, b) for a, b in zip(g0, gen.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(c0, critic.parameters()))


def test_spectral_norm_makes_the_critic_one_lipschitz():
    torch.manual_seed(0)
    critic = MLPCritic(2, hidden=(64, 64), spectral_norm=True)
    for _ in range(30):  # power iterations run in train mode
        critic(torch.randn(8, 2))
    critic.eval()
    linears = [m for m in critic.modules() if isinstance(m, nn.Linear)]
    for layer in linears:
        assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) == pytest.approx(1.0, abs=1e-3)
    x = torch.randn(256, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    assert float(grad.norm(dim=-1).max()) <= 1.0 + 1e-3
    plain = MLPCritic(2, hidden=(64, 64))
    assert max(float(torch.linalg.matrix_norm(m.weight.detach(), ord=2)) for m in plain.modules()
               if isinstance(m, nn.Linear)) > 1.0
    conv = DCGANCritic((1, 8, 8), channels=8, spectral_norm=True)
    assert sum(1 for n, _ in conv.named_parameters() if n.endswith("weight.original")) == 3


# ------------------------------------------------------------ programs and models

def test_generator_is_a_pyro_program_with_a_deterministic_data_site():
    gen = MLPGenerator(2, latent_dim=3, hidden=(8,))
    trace = poutine.trace(gen.model).get_trace(None, num_samples=5)
    assert trace.nodes["z"]["value"].shape == (5, 3) and not trace.nodes["z"]["is_observed"]
    x = trace.nodes["x"]
    assert x["value"].shape == (5, 2) and x["infer"].get("_deterministic")
    assert torch.equal(x["value"], gen(trace.nodes["z"]["value"]))
    assert sample_program(gen.model, 7).shape == (7, 2)
    assert poutine.trace(gen.model).get_trace(torch.zeros(4, 2)).nodes["x"]["value"].shape == (4, 2)


def test_dcgan_shapes_and_output_range():
    gen = DCGANGenerator((1, 8, 8), latent_dim=8, channels=8)
    x = gen.sample(6)
    assert x.shape == (6, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert DCGANCritic((1, 8, 8), channels=8)(x).shape == (6,)


def test_registered_models_build_and_train_through_their_spec():
    for name, shape, kind in (("gan", (2,), "points"), ("dcgan", (1, 8, 8), "continuous")):
        spec = get_model(name)
        assert spec.family == "gan"
        module = spec.build(shape, kind)
        obj = spec.objective(module=module, data_kind=kind)
        assert isinstance(module, GAN) and obj.critic is module.critic
        kwargs = {k: v for k, v in spec.fit_defaults.items() if k not in ("image", "epochs")}
        x = torch.rand(64, *shape)
        r = pyro_dgm.fit(module.model, None, x, objective=obj, steps=2, progress=False, **kwargs)
        assert len(r.losses["generator"]) == 2
        critic_ids = {id(p) for p in module.critic.parameters()}
        assert not any(id(p) in critic_ids for m in r.objective.param_groups()["generator"] for p in m.parameters())
        assert module.sample(3).shape == (3, *shape)


def test_bad_arguments_name_the_argument():
    critic = MLPCritic(2, hidden=(8,))
    cases = [
        (lambda: Adversarial("critic"), "critic"),
        (lambda: Adversarial(critic, loss="lsgan"), "loss"),
        (lambda: Adversarial(critic, loss="f-gan"), "divergence"),
        (lambda: Adversarial(critic, loss="ns", divergence="kl"), "divergence"),
        (lambda: Adversarial(critic, loss="f-gan", divergence="chi"), "divergence"),
        (lambda: Adversarial(critic, n_critic=0), "n_critic"),
        (lambda: Adversarial(critic, loss="ns", clip=0.01), "clip"),
        (lambda: Adversarial(critic, loss="wgan-gp", gp_weight=-1.0), "gp_weight"),
        (lambda: Adversarial(critic, loss="wgan", r1_weight=1.0), "r1_weight"),
        (lambda: Adversarial(critic, loss="ns", r1_weight=0.0), "r1_weight"),
        (lambda: Adversarial(critic, loss="ns", r1_every=4), "r1_every"),
        (lambda: Adversarial(critic, loss="ns", r1_weight=1.0, r1_every=0), "r1_every"),
        (lambda: Adversarial(critic, loss="ns", nonsaturating=True), "nonsaturating"),
        (lambda: MLPGenerator(2, output="relu"), "output"),
        (lambda: MLPGenerator(2, latent_dim=0), "latent_dim"),
        (lambda: DCGANGenerator((1, 7, 7)), "event_shape"),
        (lambda: DCGANCritic(64), "event_shape"),
        (lambda: GAN(critic, critic), "generator"),
        (lambda: gradient_penalty(critic, torch.zeros(4, 2), torch.zeros(3, 2)), "fake"),
    ]
    for make, word in cases:
        with pytest.raises(ValueError, match=word):
            make()
    gen = MLPGenerator(2, hidden=(8,))
    with pytest.raises(ValueError, match="data"):
        pyro_dgm.fit(gen.model, None, torch.zeros(16, 3), objective=Adversarial(critic), steps=1, progress=False)
    with pytest.raises(ValueError, match="guide"):
        pyro_dgm.fit(gen.model, gen.model, torch.zeros(16, 2), objective=Adversarial(critic), steps=1,
                     progress=False)
    with pytest.raises(ValueError, match="critic"):
        pyro_dgm.fit(gen.model, None, torch.zeros(16, 2), objective=Adversarial(nn.Linear(2, 3)), steps=1,
                     progress=False)


# ------------------------------------------------------------ slow: mode coverage

TOY_SETTINGS = {  # loss -> (objective options, steps, learning rate, Adam betas): the benchmark's, shorter
    "ns": ({"r1_weight": 0.1}, 1000, 2e-3, (0.5, 0.999)),
    # A weaker penalty than the paper's 10 sharpens the modes of toy data (cf. gan_toy.py of Gulrajani et al.);
    # two critic steps per generator step reach the same 1,000 generator updates as five in 2.5 times fewer steps.
    "wgan-gp": ({"gp_weight": 1.0, "n_critic": 2}, 2000, 1e-3, (0.5, 0.9)),
}


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(TOY_SETTINGS))
def test_8gaussians_modes_covered_with_high_quality_samples(loss):
    options, steps, lr, betas = TOY_SETTINGS[loss]
    torch.manual_seed(0)
    gen, critic = MLPGenerator(2, latent_dim=2), MLPCritic(2)
    objective = Adversarial(critic, loss=loss, **options)
    pyro_dgm.fit(gen.model, None, toy_2d("8gaussians", 20000, seed=0), objective=objective,
                 steps=steps, batch_size=256, lr=lr, seed=0,
                 optimizer_kwargs={"generator": {"betas": betas}, "critic": {"betas": betas}}, progress=False)
    cover = mode_coverage(gen.sample(2500), "8gaussians")
    assert cover["modes"] >= 7
    assert cover["high_quality"] >= 0.8


def test_a_generator_site_without_rsample_is_refused_before_training():
    """A Bernoulli data site cannot pass a gradient to the generator: refused at setup (before: 20 recorded
    generator updates that left its weights unchanged)."""
    import pyro
    import pyro.distributions as dist

    G = nn.Linear(2, 4)
    critic = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))

    def generator(x):
        pyro.module("G", G)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=G(z)).to_event(1), obs=x)

    seen = []
    with pytest.raises(ValueError, match="site 'x' has no reparametrized sample.*RelaxedBernoulliStraightThrough"):
        pyro_dgm.fit(generator, None, torch.bernoulli(torch.full((128, 4), 0.8)), objective=Adversarial(critic),
                     steps=20, progress=False, callbacks=[lambda s: seen.append(s.step)])
    assert seen == []


def test_scoring_a_gan_s_density_says_it_has_none():
    """to_arviz, compare and evaluate on a Dataset: a Delta generator has no density (before: "pass a guide for
    the IWAE bound", which no guide could satisfy)."""
    gen = MLPGenerator(2, latent_dim=2, hidden=(8,))
    x = torch.randn(20, 2)
    for score in (lambda: pyro_dgm.to_arviz(gen.model, None, x), lambda: pyro_dgm.compare({"gan": gen.model}, x),
                  lambda: pyro_dgm.evaluate(gen.model, torch.utils.data.TensorDataset(x))):
        with pytest.raises(ValueError, match="is a Delta at G\\(z\\).*no density"):
            score()
