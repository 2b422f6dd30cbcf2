"""inpaint against conditionals known in closed form: a Gaussian's, and a small binary model's by enumeration."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import LowerCholeskyAffine

from pyro_dgm.distributions import ScoreField
from pyro_dgm.inpaint import MaskedObservation, conditional_log_prob, inpaint, inpaint_method
from pyro_dgm.models import FVSBN, MADE, MLPGenerator

# -- a small binary model, enumerated over all 2^6 states ---------------------------------------
D = 6
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)))


def _sharp(model):
    """Random, large weights: a binary model far from uniform, with strong dependencies."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(2.0 * torch.randn(p.shape, generator=g))
    return model


def _exact_conditional(log_prob, x, mask):
    """p(x_u | x_k) over the states that agree with x on the known pixels, as a dict state -> prob."""
    agree = (STATES[:, mask] == x[mask]).all(-1)
    lp = log_prob(STATES[agree])
    return {tuple(s.tolist()): float(p) for s, p in zip(STATES[agree][:, ~mask], lp.softmax(0))}


def _tv(samples, exact, mask):
    counts = {}
    for s in samples[:, ~mask].tolist():
        counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    n = len(samples)
    return 0.5 * sum(abs(counts.get(k, 0) / n - p) for k, p in exact.items()) + 0.5 * sum(
        c / n for k, c in counts.items() if k not in exact)


# With 4,000 draws over 8 states the total variation of an exact sampler is about 0.02 (its sd ~0.01).
TV_BOUND = 0.05


@pytest.mark.parametrize("known, method", [((0, 1, 2), "ancestral"), ((1, 3, 4), "gibbs")])
def test_fvsbn_completions_match_the_enumerated_conditional(known, method):
    m = _sharp(FVSBN(D))
    mask = torch.zeros(D, dtype=torch.bool)
    mask[list(known)] = True
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]])
    assert inpaint_method(m.model, x, mask) == method
    out = inpaint(m.model, x, mask, num_samples=4000, seed=0)
    assert torch.equal(out[:, 0][:, mask], x[:, mask].expand(4000, -1))
    with torch.no_grad():
        exact = _exact_conditional(m.log_prob, x[0], mask)
    assert _tv(out[:, 0], exact, mask) < TV_BOUND


def test_made_ensemble_samples_its_mixture_conditional_and_scores_it_exactly():
    """Two connectivities, one raster ordering: the mask set is drawn from its posterior given the known part."""
    m = _sharp(MADE(D, hidden=(16,), num_masks=2))
    mask = torch.tensor([True, True, True, False, False, False])
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    m.train()  # inpaint switches to the ensemble (eval mode) itself
    out = inpaint(m.model, x, mask, num_samples=4000, seed=0)
    assert m.training
    m.eval()
    with torch.no_grad():
        exact = _exact_conditional(m.log_prob, x[0], mask)
        assert _tv(out[:, 0], exact, mask) < TV_BOUND
        full = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0, 1.0]])
        want = torch.tensor(exact[(1.0, 0.0, 1.0)]).log()
        assert float(conditional_log_prob(m.model, full, mask)) == pytest.approx(float(want), abs=1e-4)


def _mixture_of_known_first_models(m, mask):
    """log p(x) over STATES of (1/K) sum_k p(x | ordering k with the known pixels first): full masked passes."""
    lps = []
    for k in range(m.num_masks):
        order = m.known_first(mask.expand(1, -1), k)[0]
        assert mask[order[:int(mask.sum())]].all()  # the known pixels come first
        lps.append(m.log_prob_under(STATES, m.masks_along(order, k)))
        # MADE.walk, pixel by pixel, gives the same conditionals as the full pass
        walked = m.walk(STATES, mask.expand(len(STATES), -1), k, draw=False)[1].sum(-1)
        assert torch.allclose(walked, lps[-1], atol=1e-5)
    return torch.logsumexp(torch.stack(lps), 0) - math.log(m.num_masks)


def test_order_agnostic_made_completes_any_mask_exactly_along_orderings_with_the_known_pixels_first():
    """A non-prefix mask: ancestral sampling (not Gibbs) from the mixture over its three reordered mask sets."""
    m = MADE(D, hidden=(16,), num_masks=3, order="agnostic")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # moderate weights: a spread-out conditional, so a wrong one shows
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    mask = torch.tensor([False, True, False, True, True, False])
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]])
    assert inpaint_method(m.model, x, mask) == "ancestral"
    out = inpaint(m.model, x, mask, num_samples=4000, seed=0)
    assert torch.equal(out[:, 0][:, mask], x[:, mask].expand(4000, -1))
    m.eval()
    with torch.no_grad():
        joint = _mixture_of_known_first_models(m, mask)
        assert float(joint.exp().sum()) == pytest.approx(1.0, abs=1e-5)  # a normalized autoregressive model
        exact = _exact_conditional(lambda s: joint[(s * 2 ** torch.arange(D - 1, -1, -1)).sum(-1).long()], x[0], mask)
        assert _tv(out[:, 0], exact, mask) < TV_BOUND
        # The ensemble's own conditional (orderings not moved) is another one; the bound tells them apart.
        assert _tv(out[:, 0], _exact_conditional(m.log_prob, x[0], mask), mask) > 2 * TV_BOUND
        full = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
        want = torch.tensor(exact[(1.0, 0.0, 1.0)]).log()
        assert float(conditional_log_prob(m.model, full, mask)) == pytest.approx(float(want), abs=1e-4)


def test_order_agnostic_training_draws_new_masks_per_step_and_scores_the_stored_ensemble():
    """(tests/test_conditional.py fits an order-agnostic conditional MADE.)"""
    m = MADE(D, hidden=(16,), num_masks=2, order="agnostic")
    x = torch.bernoulli(torch.full((8, D), 0.5))
    torch.manual_seed(0)
    first, second = m.training_masks(), m.training_masks()
    assert not torch.equal(first[0], second[0])
    m.eval()
    assert m.training_masks() is None
    assert torch.allclose(m.distribution(8).log_prob(x), m.log_prob(x))


# -- a Gaussian ---------------------------------------------------------------------------------
MU = torch.tensor([0.5, -1.0, 0.0])
COV = torch.tensor([[1.0, 0.6, 0.3], [0.6, 1.5, -0.4], [0.3, -0.4, 0.8]])
KNOWN = torch.tensor([True, False, False])
X = torch.tensor([[1.5, 0.0, 0.0]])


def _gaussian_truth(cov=COV):
    """The conditional mean and covariance of the hidden coordinates given the known one."""
    k, u = KNOWN, ~KNOWN
    gain = cov[u][:, k] @ torch.linalg.inv(cov[k][:, k])
    mean = MU[u] + gain @ (X[0, k] - MU[k])
    return mean, cov[u][:, u] - gain @ cov[k][:, u]


def _moments_close(out, tol, cov=COV):
    mean, cov = _gaussian_truth(cov)
    hidden = out[:, 0][:, ~KNOWN]
    assert torch.equal(out[:, 0, 0], X[0, 0].expand(len(out)))
    assert torch.allclose(hidden.mean(0), mean, atol=tol), (hidden.mean(0), mean)
    assert torch.allclose(torch.cov(hidden.T), cov, atol=tol), (torch.cov(hidden.T), cov)


def mvn_program(x):
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.MultivariateNormal(MU, COV), obs=x)


def flow_program(x):
    """The same Gaussian as a flow: N(0, I) pushed through x = mu + L z (Pyro's LowerCholeskyAffine)."""
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.TransformedDistribution(base, [LowerCholeskyAffine(MU, torch.linalg.cholesky(COV))]),
                    obs=x)


@pytest.mark.parametrize("program", [mvn_program, flow_program])
def test_langevin_completion_of_a_gaussian_matches_its_conditional(program):
    assert inpaint_method(program, X, KNOWN) == "langevin"
    _moments_close(inpaint(program, X, KNOWN, num_samples=3000, num_steps=300, seed=0), 0.08)


# A linear-Gaussian latent model: z ~ N(0, I_2), x | z ~ N(W z + MU, s^2 I), so x ~ N(MU, W W^T + s^2 I).
W = torch.tensor([[0.9, 0.2], [0.5, 1.0], [0.2, -0.6]])
NOISE = 0.4
LINEAR_COV = W @ W.T + NOISE**2 * torch.eye(3)


def linear_vae(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + MU, NOISE).to_event(1), obs=x)


def prior_guide(x):
    """A deliberately poor proposal, q(z | x) = p(z): importance weights do all the work."""
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))


@pytest.mark.parametrize("method", ["importance", "nuts"])
def test_latent_model_completion_matches_the_gaussian_conditional(method):
    guide = prior_guide if method == "importance" else None
    assert inpaint_method(linear_vae, X, KNOWN, guide=guide) == method
    # NUTS keeps 300 correlated draws of one chain (about 12 s); the particles give 1500 nearly independent ones.
    num_samples, tol = (1500, 0.12) if guide else (300, 0.15)
    out = inpaint(linear_vae, X, KNOWN, num_samples=num_samples, guide=guide, num_particles=2000, warmup_steps=100,
                  seed=0)
    _moments_close(out, tol, LINEAR_COV)
    if method == "importance":
        # log p(x_u | x_k) against the Gaussian's exact conditional density.
        mean, cov = _gaussian_truth(LINEAR_COV)
        full = torch.tensor([[1.5, 0.3, -0.2]])
        want = dist.MultivariateNormal(mean, cov).log_prob(full[0, ~KNOWN])
        got = conditional_log_prob(linear_vae, full, KNOWN, guide=guide, num_particles=20000)
        assert float(got) == pytest.approx(float(want), abs=0.05)


def score_program(x):
    """The exact score of the Gaussian perturbed at sigma: -(COV + sigma^2 I)^{-1} (x - MU)."""
    def score(x, sigma):
        prec = torch.linalg.inv(COV + sigma[:, None, None] ** 2 * torch.eye(3))
        return -((x - MU).unsqueeze(1) @ prec).squeeze(1)

    with pyro.plate("data", len(x)):
        pyro.sample("x", ScoreField(score, (3,), (len(x),), sigmas=torch.logspace(0.3, -2, 8)), obs=x)


def test_replacement_annealed_langevin_matches_the_gaussian_conditional():
    """Replacement imputation is approximate; with the exact score its moments land within 0.15."""
    assert inpaint_method(score_program, X, KNOWN) == "annealed"
    out = inpaint(score_program, X, KNOWN, num_samples=3000, num_steps=100, step_size=2e-4, seed=0)
    _moments_close(out, 0.15)


# -- bad input -----------------------------------------------------------------------------------
def test_bad_masks_and_models_without_a_route_are_refused():
    m = FVSBN(4)
    x = torch.ones(2, 4)
    with pytest.raises(ValueError, match="mask: expected a bool"):
        inpaint(m.model, x, torch.ones(4))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 4\)"):
        inpaint(m.model, x, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="examples of shape"):
        inpaint(m.model, torch.ones(2, 5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="method: 'langevin' does not fit"):
        inpaint(m.model, x, torch.tensor([True, True, False, False]), method="langevin")
    gen = MLPGenerator(4, latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="implicit model such as a GAN"):
        inpaint(gen.model, x, torch.tensor([True, True, False, False]))


def test_masked_observation_needs_a_per_pixel_likelihood():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.MultivariateNormal(z[:, None].expand(-1, 3), torch.eye(3)), obs=x)

    with pytest.raises(ValueError, match="does not factor over pixels"):
        inpaint(model, X, KNOWN, guide=lambda x: pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0)))
    tr = pyro.poutine.trace(MaskedObservation("x", torch.tensor([True, False, True]))(linear_vae)).get_trace(X)
    tr.compute_log_prob()
    assert tr.nodes["x"]["log_prob"].shape == (1,)
