"""Class-conditional programs model(x, y): labels reach every objective, and the conditional models use them."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints
from torch.utils.data import TensorDataset

import pyro_dgm
from pyro_dgm.data import load_digits, load_digits_labels
from pyro_dgm.distributions import ScoreField
from pyro_dgm.inference import Adversarial, DenoisingScoreMatching, SDEScoreMatching, VESDE, probability_flow_nll
from pyro_dgm.inpaint import inpaint, inpaint_method
from pyro_dgm.models.conditional import (ConditionalFlow, ConditionalGAN, ConditionalGenerator, ConditionalMADE,
                                         ConditionalVAE, GuidedNCSN, ProjectionCritic)
from pyro_dgm.programs import sample_program
from pyro_dgm.registry import get_model


def test_a_plain_pyro_class_conditional_program_fits_and_evaluates_per_class():
    """Pyro's way: model(x, y) with one Bernoulli vector per class, a TensorDataset of (x, y) batches."""
    probs = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    y = torch.arange(600) % 2
    x = torch.bernoulli(probs[y])

    def model(x, y):
        p = pyro.param("p", torch.full((2, 3), 0.5), constraint=constraints.unit_interval)
        with pyro.plate("data", len(y)):
            pyro.sample("x", dist.Bernoulli(p[y]).to_event(1), obs=x)

    pyro_dgm.fit(model, None, TensorDataset(x, y), epochs=40, batch_size=100, lr=0.05, progress=False)
    means = torch.stack([x[y == c].mean(0) for c in range(2)])
    assert torch.allclose(pyro.param("p").detach(), means, atol=0.03)
    exact = -dist.Bernoulli(pyro.param("p").detach()[y]).log_prob(x).sum(-1).mean()
    assert pyro_dgm.evaluate(model, (x, y), batch_size=128)["nll"] == pytest.approx(float(exact), rel=1e-5)


MEANS = torch.tensor([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]])


class GaussianClassScore(torch.nn.Module):
    """s(x, sigma, y) = -(x - m_y) / (1 + sigma^2), the exact score of N(m_y, I) perturbed at sigma."""

    def __init__(self):
        super().__init__()
        self.m = torch.nn.Parameter(torch.zeros(3, 2))

    def model(self, x, y):
        field = ScoreField(lambda v, s: -(v - self.m[y]) / (1 + s[:, None] ** 2), (2,), (len(y),),
                           sigmas=[1.0, 0.5, 0.1], sde=VESDE(0.1, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("x", field, obs=x)


@pytest.mark.parametrize("objective", [DenoisingScoreMatching, SDEScoreMatching])
def test_score_objectives_see_each_batch_s_labels(objective):
    """The labels of every batch reach the score: the per-class means are learned (not the setup batch's)."""
    y = torch.arange(1500) % 3
    x = MEANS[y] + torch.randn(1500, 2)
    m = GaussianClassScore()
    pyro_dgm.fit(m.model, None, TensorDataset(x, y), objective=objective(), epochs=20, batch_size=100, lr=0.05,
                 progress=False, seed=0)
    assert torch.allclose(m.m.detach(), MEANS, atol=0.2), m.m


def test_evaluate_scores_a_conditional_score_field_by_its_probability_flow_with_each_batch_s_labels():
    """With the exact score of N(m_y, I), the flow's NLL of (x, y) is the Gaussian's; wrong labels cost more."""
    y = torch.arange(300) % 3
    x = MEANS[y] + torch.randn(300, 2)

    def model(x, y):
        field = ScoreField(lambda v, s: -(v - MEANS[y]) / (1 + s[:, None] ** 2), (2,), (len(y),),
                           sde=VESDE(0.01, 30.0))
        with pyro.plate("data", len(y)):
            pyro.sample("x", field, obs=x)

    exact = -dist.Normal(MEANS[y], 1.0).log_prob(x).sum(-1).mean()
    got = pyro_dgm.evaluate(model, (x, y), seed=0)["nll"]
    assert got == pytest.approx(float(exact), abs=0.1)
    by_batches = probability_flow_nll(model, x, args=(y,), batch_size=64, trace="exact", num_steps=50)["nll"]
    assert by_batches == pytest.approx(float(exact), abs=0.1)
    assert pyro_dgm.evaluate(model, (x, (y + 1) % 3), seed=0)["nll"] > float(exact) + 2.0


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    y = load_digits_labels("train")[:600]
    return load_digits("train", "binary")[:600], load_digits("train", "continuous")[:600], y


@pytest.mark.parametrize("make, kind, guide, margin", [
    (lambda: ConditionalVAE(64, latent_dim=4, hidden=(64,)), "binary", True, 2.0),
    (lambda: ConditionalVAE(64, latent_dim=4, hidden=(64, 64), label_every_layer=True), "binary", True, 2.0),
    (lambda: ConditionalMADE(64, hidden=(128,)), "binary", False, 2.0),
    (lambda: ConditionalFlow(64, num_layers=4, hidden=(64,)), "continuous", False, 1.0),
    (lambda: ConditionalFlow(64, num_layers=2, hidden=(64,), transform="autoregressive"), "continuous", False, 1.0),
])
def test_conditional_densities_prefer_the_true_label(digits, make, kind, guide, margin):
    """After a short fit (240 steps), log p(x | y) beats log p(x | wrong y) on average by the margin in nats."""
    xb, xc, y = digits
    x = xb if kind == "binary" else xc
    m = make()
    pyro_dgm.fit(m.model, m.guide if guide else None, TensorDataset(x, y), epochs=8, batch_size=50, lr=3e-3,
                 progress=False, seed=0)
    wrong = (y + 1 + torch.randint(9, y.shape)) % 10
    g = m.guide if guide else None
    right_nll = pyro_dgm.evaluate(m.model, (x, y), guide=g, num_particles=8)["nll"]
    wrong_nll = pyro_dgm.evaluate(m.model, (x, wrong), guide=g, num_particles=8)["nll"]
    assert wrong_nll - right_nll > margin, (right_nll, wrong_nll)
    samples = sample_program(m.model, 5, args=(torch.arange(5),))
    assert samples.shape == (5, 64)


@pytest.mark.parametrize("transform", ["coupling", "autoregressive"])
def test_a_conditional_flow_scores_by_the_change_of_variables_and_samples_its_class(transform):
    """log p(x | y) = log N(f(x); mu_y, sigma_y) + log|det df/dx|, f the normalizing map and its Jacobian by
    autograd; draws for label y map back to the base of y."""
    torch.manual_seed(0)
    m = ConditionalFlow(3, num_classes=2, num_layers=3, hidden=(8,), transform=transform).double()
    with torch.no_grad():
        m.prior.weight.normal_(0, 0.5)
        for p in m.couplings.parameters():  # couplings start at the identity: move them off it
            p.add_(0.3 * torch.randn_like(p))
    x, y = torch.rand(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    for i in range(4):
        d = m.distribution(y[i:i + 1])

        def f(v):
            for t in reversed(d.transforms):
                v = t.inv(v)
            return v

        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).squeeze(0), x[i])
        expected = d.base_dist.log_prob(f(x[i:i + 1])) + torch.linalg.slogdet(jac).logabsdet
        assert torch.allclose(m.log_prob(x[i:i + 1], y[i:i + 1]), expected, atol=1e-8)
    assert not torch.allclose(m.log_prob(x, y), m.log_prob(x, 1 - y))
    ones = torch.ones(4000, dtype=torch.long)
    torch.manual_seed(1)
    z = m.sample(ones)
    for t in reversed(m.distribution(ones).transforms):  # back to the base: N(mu_1, sigma_1^2)
        z = t.inv(z)
    loc, log_scale = m.prior.weight[1].chunk(2)
    assert torch.allclose(z.mean(0), loc, atol=0.1) and torch.allclose(z.std(0), log_scale.exp(), rtol=0.1)
    with pytest.raises(ValueError, match="transform"):
        ConditionalFlow(3, transform="spline")


def test_label_every_layer_reaches_the_decoder_s_output_through_each_layer():
    m = ConditionalVAE(5, num_classes=3, latent_dim=2, hidden=(8, 8), label_every_layer=True)
    z, ys = torch.randn(4, 2), (torch.zeros(4, dtype=torch.long), torch.full((4,), 2))

    def gap():
        with torch.no_grad():
            a, b = (m.likelihood_dist(z, torch.nn.functional.one_hot(y, 3).float()).mean for y in ys)
        return float((a - b).abs().max())

    layers = m.decoder.layers
    assert len(layers) == 3 and all(layer.in_features == width + 3 for layer, width in zip(layers, (2, 8, 8)))
    for layer in layers:  # take away the label's columns one layer at a time: the others still carry it
        assert gap() > 1e-4
        with torch.no_grad():
            layer.weight[:, -3:] = 0.0
    assert gap() == 0.0


def test_projection_critic_gets_the_labels_and_the_gan_trains(digits):
    _, xc, y = digits
    gan = ConditionalGAN(ConditionalGenerator(64, hidden=(32,)), ProjectionCritic(64, hidden=(32,)))
    obj = Adversarial(gan.critic, loss="hinge")
    r = pyro_dgm.fit(gan.model, None, TensorDataset(xc, y), objective=obj, steps=4, batch_size=32, progress=False)
    assert len(r.losses["generator"]) == 4
    obj.args = (y[:32],)
    with torch.no_grad():
        a = obj._critic_out(xc[:32])
        obj.args = (y[:32].flip(0),)
        assert not torch.allclose(a, obj._critic_out(xc[:32]))
    assert gan.sample(torch.tensor([3, 4])).shape == (2, 64)


def test_classifier_free_guidance_drops_labels_in_training_and_guides_in_eval():
    m = GuidedNCSN(4, num_classes=3, p_uncond=0.5, guidance=2.0, hidden=(8,))
    x, y, sigma = torch.randn(400, 4), torch.full((400,), 1), torch.ones(400)
    null = torch.full_like(y, 3)
    with torch.no_grad():
        s_y, s_null = m.net(x, sigma, y), m.net(x, sigma, null)
        dropped = (m.score_fn(y)(x, sigma) - s_null).abs().sum(-1) < 1e-6
        assert 0.4 < float(dropped.float().mean()) < 0.6
        m.eval()
        assert torch.allclose(m.score_fn(y)(x, sigma), 3.0 * s_y - 2.0 * s_null, atol=1e-5)
    with pytest.raises(ValueError, match="p_uncond"):
        GuidedNCSN(4, p_uncond=1.0)


def test_conditional_programs_refuse_missing_or_bad_labels_and_are_registered():
    m = ConditionalVAE(4, num_classes=3, latent_dim=2, hidden=(4,))
    with pytest.raises(ValueError, match="needs labels"):
        m.model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="labels in 0..2"):
        m.model(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="2 labels for a batch of 3"):
        m.model(torch.zeros(3, 4), torch.tensor([0, 1]))
    for name in ("cvae", "cmade", "cflow", "cgan", "cncsn"):
        assert get_model(name).conditional


def test_inpaint_passes_the_label_to_a_conditional_made():
    m = ConditionalMADE(6, num_classes=2, hidden=(8,))
    x, mask = torch.ones(2, 6), torch.tensor([True, True, True, False, False, False])
    y = torch.tensor([0, 1])
    assert inpaint_method(m.model, x, mask, args=(y,)) == "ancestral"
    out = inpaint(m.model, x, mask, num_samples=3, args=(y,))
    assert out.shape == (3, 2, 6) and bool((out[..., :3] == 1).all())
    with torch.no_grad():
        m.label_out.weight.copy_(torch.tensor([[-30.0, 30.0]]).expand(6, 2))  # y decides every pixel
    out = inpaint(m.model, x, mask, num_samples=3, args=(y,))
    assert bool((out[:, 0, 3:] == 0).all()) and bool((out[:, 1, 3:] == 1).all())


def test_an_order_agnostic_conditional_made_completes_a_scattered_mask_ancestrally_with_its_label():
    m = ConditionalMADE(6, num_classes=2, hidden=(8,), num_masks=2, order="agnostic")
    x, mask, y = torch.ones(2, 6), torch.tensor([False, True, False, True, False, True]), torch.tensor([0, 1])
    assert inpaint_method(m.model, x, mask, args=(y,)) == "ancestral"
    with torch.no_grad():
        m.label_out.weight.copy_(torch.tensor([[-30.0, 30.0]]).expand(6, 2))
    out = inpaint(m.model, x, mask, num_samples=3, args=(y,))
    assert bool((out[:, :, mask] == 1).all())
    assert bool((out[:, 0, ~mask] == 0).all()) and bool((out[:, 1, ~mask] == 1).all())
    with torch.no_grad():  # walking pixel by pixel, the label's two paths count as in one full masked pass
        for p in m.parameters():
            p.normal_()
        xs = torch.bernoulli(torch.full((2, 6), 0.5))
        for k in range(2):
            order = m.known_first(mask.expand(1, -1), k)[0]
            full = m.log_prob_under(xs, m.masks_along(order, k), y)
            assert torch.allclose(m.walk(xs, mask.expand(2, -1), k, y, draw=False)[1].sum(-1), full, atol=1e-5)
    m.train()
    r = pyro_dgm.fit(m.model, None, TensorDataset(torch.bernoulli(torch.full((8, 6), 0.5)), y.repeat(4)), steps=2,
                     progress=False)
    assert len(r.losses["model"]) == 2
