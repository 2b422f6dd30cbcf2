"""Autoregressive models: the autoregressive property, receptive fields, normalization, sampling, masks."""

import itertools
import math

import pytest
import torch

import pyro_dgm
from pyro_dgm.distributions import AutoregressiveDistribution, DiscretizedLogisticMixture
from pyro_dgm.distributions.autoregressive import make_output
from pyro_dgm.inference import sample_program
from pyro_dgm.models.autoregressive import (FVSBN, MADE, NADE, AutoregressiveRNN, GatedPixelCNN, MaskedConv2d,
                                            PixelCNN)
from pyro_dgm.registry import get_model

OUTPUT_OPTIONS = {
    "bernoulli": {"output": "bernoulli"},
    "categorical": {"output": "categorical", "num_levels": 4},
    "logistic_mixture": {"output": "logistic_mixture", "num_levels": 4, "num_components": 2},
    "gaussian_mixture": {"output": "gaussian_mixture", "num_components": 2},
}

FLAT = {
    "fvsbn": lambda d, **o: FVSBN(d, **o),
    "nade": lambda d, **o: NADE(d, hidden=16, **o),
    "made": lambda d, **o: MADE(d, hidden=(64, 64), **o),
    "rnn-gru": lambda d, **o: AutoregressiveRNN(d, hidden=16, **o),
    "rnn-lstm": lambda d, **o: AutoregressiveRNN(d, hidden=16, cell="lstm", **o),
}
IMAGE = {
    "pixelcnn": lambda s, **o: PixelCNN(s, hidden=24, num_layers=2, kernel_size=3, **o),
    "gated-pixelcnn": lambda s, **o: GatedPixelCNN(s, hidden=24, num_layers=3, kernel_size=3, **o),
}


def _jacobian(model, shape, num_inputs=3):
    """|d params / d x| summed over a few random inputs, shape (D, D): row = output dim, column = input."""
    torch.manual_seed(1)
    total = 0
    for _ in range(num_inputs):
        x = torch.randn(1, *shape)
        jac = torch.autograd.functional.jacobian(lambda u: model.conditionals(u), x)  # (1, D, P, 1, *shape)
        total = total + jac.reshape(jac.shape[1], jac.shape[2], -1).abs().sum(1)
    return total


def _assert_autoregressive(jac, order):
    for d, i in enumerate(order.tolist()):
        assert float(jac[i, order[d:]].abs().max()) == 0.0, f"output {i} (position {d}) sees itself or the future"
        if d > 0:
            assert float(jac[i, order[:d]].abs().max()) > 0.0, f"output {i} (position {d}) sees no earlier input"


@pytest.mark.parametrize("output", list(OUTPUT_OPTIONS))
@pytest.mark.parametrize("name", list(FLAT))
def test_autoregressive_property_flat(name, output):
    torch.manual_seed(0)
    order = torch.randperm(9)
    model = FLAT[name](9, order=order, **OUTPUT_OPTIONS[output])
    _assert_autoregressive(_jacobian(model, (9,)), order)


@pytest.mark.parametrize("connectivity", ["random", "sequential"])
def test_made_every_mask_set_is_autoregressive_in_its_own_order(connectivity):
    torch.manual_seed(0)
    model = MADE(8, hidden=(64, 64, 64), num_masks=4, order="random", connectivity=connectivity)
    assert len({tuple(o.tolist()) for o in model.orders}) == 4  # four different orderings
    for k in range(4):
        model.use_mask(k)
        _assert_autoregressive(_jacobian(model, (8,)), model.ordering)


@pytest.mark.parametrize("output", ["bernoulli", "categorical", "logistic_mixture"])
@pytest.mark.parametrize("name", list(IMAGE))
def test_autoregressive_property_images_with_channels(name, output):
    """Raster order over pixels, then R, G, B inside a pixel."""
    model = IMAGE[name]((3, 4, 5), **OUTPUT_OPTIONS[output])
    order = model.ordering
    assert order[:4].tolist() == [0, 20, 40, 1]  # (c=0, 0, 0), (c=1, 0, 0), (c=2, 0, 0), (c=0, 0, 1)
    _assert_autoregressive(_jacobian(model, (3, 4, 5)), order)


def test_gated_pixelcnn_sees_every_earlier_pixel():
    """Vertical + horizontal stacks: after 5 layers (7x7 first), all 63 earlier pixels reach pixel 63."""
    model = GatedPixelCNN((1, 8, 8), hidden=8, num_layers=5, kernel_size=7)
    jac = _jacobian(model, (1, 8, 8))
    lower = torch.tril(torch.ones(64, 64), diagonal=-1).bool()
    assert bool((jac[lower] > 0).all()), f"{int((jac[lower] == 0).sum())} earlier pixels have no influence"
    assert float(jac[~lower].max()) == 0.0


def test_gated_pixelcnn_receptive_field_grows_with_layers():
    """Too few layers miss far earlier pixels; the count of blind pairs falls to 0 as layers are added."""
    lower = torch.tril(torch.ones(64, 64), diagonal=-1).bool()
    blind = [int((_jacobian(GatedPixelCNN((1, 8, 8), hidden=8, num_layers=n, kernel_size=3), (1, 8, 8),
                            num_inputs=2)[lower] == 0).sum()) for n in (2, 8)]
    assert blind[0] > 100 and blind[1] == 0, blind


def test_pixelcnn_has_a_blind_spot():
    """Mask A then mask B: pixel (4, 0) never sees (3, 5) above-right, however deep the stack."""
    model = PixelCNN((1, 8, 8), hidden=8, num_layers=8, kernel_size=7)
    jac = _jacobian(model, (1, 8, 8))
    pixel = lambda r, c: r * 8 + c  # noqa: E731
    assert float(jac[pixel(4, 0), pixel(3, 5)]) == 0.0  # earlier in raster order, yet no influence
    assert float(jac[pixel(4, 0), pixel(3, 3)]) > 0.0   # within the first kernel's reach
    assert float(jac[pixel(4, 0), pixel(0, 0)]) > 0.0   # far above-left is reached by depth
    lower = torch.tril(torch.ones(64, 64), diagonal=-1).bool()
    assert int((jac[lower] == 0).sum()) > 50


@pytest.mark.parametrize("name", list(IMAGE))
def test_image_sampler_on_cropped_rows_draws_what_full_passes_draw(name):
    """Sampling row r from rows 0..r only gives the same draws, seed for seed, as D full-image passes."""
    from pyro_dgm.models.autoregressive import AutoregressiveModel

    model = _randomize(IMAGE[name]((2, 3, 4), **OUTPUT_OPTIONS["categorical"]))
    torch.manual_seed(5)
    fast = model.sample(6)
    torch.manual_seed(5)
    assert torch.equal(fast, AutoregressiveModel.sample(model, 6))


def _binary_models(n):
    shape = (1, 2, n // 2)
    return {
        "fvsbn": FVSBN(n), "nade": NADE(n, hidden=7), "nade-ensemble": NADE(n, hidden=7, num_orderings=3, order="random"),
        "made-ensemble": MADE(n, (16, 16), num_masks=3, order="random"),
        "made-sequential": MADE(n, (16,), connectivity="sequential"),
        "pixelcnn": PixelCNN(shape, hidden=8, num_layers=2, kernel_size=3),
        "gated-pixelcnn": GatedPixelCNN(shape, hidden=8, num_layers=2, kernel_size=3),
        "rnn-gru": AutoregressiveRNN(n, hidden=8), "rnn-lstm": AutoregressiveRNN(n, hidden=8, cell="lstm"),
    }


def _randomize(model):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def test_log_prob_sums_to_one_over_all_binary_inputs():
    """n = 10: sum over all 2^10 inputs of exp(log p) is 1 (a sigmoid applied twice, or a leak, breaks it)."""
    allx = torch.tensor(list(itertools.product([0.0, 1.0], repeat=10)))
    for name, model in _binary_models(10).items():
        _randomize(model)
        with torch.no_grad():
            total = model.distribution(1024).log_prob(allx.view(1024, *model.event_shape)).exp().sum()
        assert abs(float(total) - 1.0) < 1e-5, (name, float(total))


@pytest.mark.parametrize("output", ["categorical", "logistic_mixture"])
def test_grey_level_outputs_sum_to_one(output):
    """Three dimensions with 4 levels: 64 inputs, probabilities sum to 1."""
    allx = torch.tensor(list(itertools.product(range(4), repeat=3)), dtype=torch.float)
    for make in FLAT.values():
        model = _randomize(make(3, **OUTPUT_OPTIONS[output]))
        with torch.no_grad():
            assert abs(float(model.log_prob(allx).exp().sum()) - 1.0) < 1e-5


def test_gaussian_mixture_output_integrates_to_one():
    """Two real dimensions: a Riemann sum of the density over [-8, 8]^2 is 1."""
    grid = torch.linspace(-8, 8, 321)
    xy = torch.cartesian_prod(grid, grid)
    cell = float(grid[1] - grid[0]) ** 2
    for make in FLAT.values():
        model = make(2, **OUTPUT_OPTIONS["gaussian_mixture"]).eval()  # scales near 0.7: the grid resolves them
        with torch.no_grad():
            assert abs(float(model.log_prob(xy).exp().sum()) * cell - 1.0) < 2e-3


def test_discretized_logistic_mixture_matches_bins_and_is_stable():
    loc, scale = torch.tensor([[2.0, 6.5]]), torch.tensor([[0.7, 2.0]])
    d = DiscretizedLogisticMixture(torch.tensor([[0.3, -0.2]]), loc, scale, 10)
    k = torch.arange(10.0).unsqueeze(1)
    w = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    cdf = lambda t: torch.sigmoid((t - loc) / scale)  # noqa: E731
    upper = torch.where(k == 9, torch.ones(1), cdf(k + 0.5))
    lower = torch.where(k == 0, torch.zeros(1), cdf(k - 0.5))
    expected = ((upper - lower) * w).sum(-1)
    assert torch.allclose(d.log_prob(k).exp().squeeze(-1), expected, atol=1e-6)
    sharp = DiscretizedLogisticMixture(torch.zeros(1), torch.tensor([-40.0]), torch.tensor([0.01]), 10)
    assert torch.isfinite(sharp.log_prob(torch.arange(10.0))).all()  # far tails stay finite
    draws = d.sample((20000,)).squeeze(-1)
    freq = torch.bincount(draws.long(), minlength=10).float() / 20000
    assert float((freq - expected).abs().sum()) / 2 < 0.02


def test_nade_running_sum_equals_separate_passes():
    """The O(D H) cumulative sum gives what D separate passes h_d = sigma(c + W_{<d} x_{<d}) give."""
    torch.manual_seed(0)
    order = torch.randperm(7)
    model = _randomize(NADE(7, hidden=5, order=order))
    x = torch.bernoulli(torch.full((4, 7), 0.5))
    expected = torch.empty(4, 7)
    for d, i in enumerate(order.tolist()):
        before = order[:d]
        h = torch.sigmoid(model.c + x[:, before] @ model.W[before])
        expected[:, i] = h @ model.V[i, 0] + model.b[i, 0]
    assert torch.allclose(model.conditionals(x)[..., 0], expected, atol=1e-5)


def test_nade_outputs_logits_not_probabilities():
    """Scoring NADE's outputs with a logits loss is right only if they are logits: p(x_1 = 1) = sigmoid(b)."""
    model = NADE(3, hidden=4)
    with torch.no_grad():
        model.b.fill_(2.0)
        model.V.zero_()
    x = torch.tensor([[1.0, 1.0, 1.0]])
    expected = 3 * math.log(torch.sigmoid(torch.tensor(2.0)).item())
    assert math.isclose(float(model.log_prob(x).detach()), expected, rel_tol=1e-5)


def test_made_cycling_masks_leaves_the_weights_intact():
    """Masks multiply the weights in the graph: training over 8 mask sets zeroes no weight."""
    torch.manual_seed(0)
    model = MADE(16, hidden=(32,), num_masks=8, order="random")
    before = [layer.weight.detach().clone() for layer in model.layers]
    x = torch.bernoulli(torch.full((64, 16), 0.4))
    with torch.no_grad():
        for _ in range(16):
            model.distribution(64).log_prob(x)
    assert all(torch.equal(b, layer.weight) for b, layer in zip(before, model.layers))
    pyro_dgm.fit(model.model, None, x, steps=16, batch_size=64, seed=0, progress=False)
    first = model.layers[0].weight
    assert float((first == 0).float().mean()) == 0.0  # in-place masking would zero about 90% here
    assert float(model.masks_0.mean(0).min()) < 1.0 and float(model.masks_0[0].mean()) < 0.9


def test_made_ensemble_is_the_average_of_its_mask_sets():
    torch.manual_seed(0)
    model = _randomize(MADE(6, hidden=(16,), num_masks=3, order="random"))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    each = torch.stack([model.log_prob_under(x, k) for k in range(3)])
    assert torch.allclose(model.log_prob(x), each.exp().mean(0).log(), atol=1e-5)
    model.train()
    lps = [model.distribution(5).log_prob(x) for _ in range(3)]  # training: one mask set per call, in turn
    assert all(torch.allclose(lp, each[k]) for k, lp in enumerate(lps))


def test_nade_ensemble_is_the_average_of_its_orderings_and_old_checkpoints_load():
    model = _randomize(NADE(6, hidden=8, num_orderings=3, order="random"))
    assert len({tuple(o.tolist()) for o in model.orders}) == 3
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    each = torch.stack([model.log_prob_under(x, k) for k in range(3)])
    assert torch.allclose(model.log_prob(x), each.exp().mean(0).log(), atol=1e-5)
    model.train()
    lps = [model.distribution(5).log_prob(x) for _ in range(3)]  # training: one ordering per call, in turn
    assert all(torch.allclose(lp, each[k]) for k, lp in enumerate(lps))
    one = _randomize(NADE(6, hidden=8, order=[5, 4, 3, 2, 1, 0]))
    state = {k: v for k, v in one.state_dict().items() if k not in ("orders", "ranks", "_turn")}
    state["order"], state["rank"] = one.orders[0], one.ranks[0]  # the keys NADE saved before num_orderings
    fresh = NADE(6, hidden=8).eval()
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.log_prob(x), one.log_prob(x)) and fresh.ordering.tolist() == [5, 4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="order='random'"):
        NADE(6, num_orderings=2)


def test_nade_ensemble_samples_follow_its_mixture_density():
    """Each component alone is 0.035 to 0.088 from the mixture in total variation: sampling one ordering fails."""
    torch.manual_seed(3)
    model = NADE(4, hidden=4, num_orderings=3, order="random", seed=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(3 * torch.randn_like(p))
    model.eval()
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    exact = model.log_prob(states).exp().detach()
    torch.manual_seed(0)
    s = model.sample(40000)
    freq = torch.stack([(s == state).all(-1).float().mean() for state in states])
    assert abs(float(exact.sum()) - 1) < 1e-5 and 0.5 * float((freq - exact).abs().sum()) < 0.015


@pytest.mark.parametrize("output", ["bernoulli", "logistic_mixture"])
def test_pixelcnn_window_conditionals_equal_the_full_pass(output):
    """Sampling computes each pixel on the (reach+1) x (2 reach+1) window it depends on: the same numbers."""
    torch.manual_seed(0)
    model = PixelCNN((2, 9, 11), hidden=8, num_layers=2, kernel_size=3, output=output,
                     num_levels=None if output == "bernoulli" else 16).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-zero position biases, so a window misaligned with them shows
            p.add_(0.1 * torch.randn_like(p))
        x = torch.rand(3, 2, 9, 11).round()
        full = model._grid(model.output.encode(x))
        assert model.reach == 3 and model._window(8, 10) != (slice(0, 9), slice(0, 11))  # a real crop
        for r, col in [(0, 0), (2, 5), (5, 0), (8, 10), (8, 4), (6, 7)]:
            assert torch.allclose(model.pixel_params(x, r, col), full[:, :, r, col], atol=1e-5), (r, col)
    s = model.sample(2)
    assert s.shape == (2, 2, 9, 11) and torch.isfinite(model.log_prob(s)).all()


def test_sampling_program_and_registry():
    for name in ("fvsbn", "nade", "made", "rnn"):
        module = get_model(name).build((64,), "binary")
        s = sample_program(module.model, 3)
        assert s.shape == (3, 64) and set(s.unique().tolist()) <= {0.0, 1.0}
    for name in ("pixelcnn", "gated-pixelcnn"):
        spec = get_model(name)
        assert spec.fit_defaults["image"] is True and spec.family == "autoregressive"
        module = spec.build((1, 8, 8), "continuous")
        assert module.output.num_params == 15 and sample_program(module.model, 2).shape == (2, 1, 8, 8)
    points = get_model("made").build((2,), "points")
    assert math.isfinite(pyro_dgm.evaluate(points.model, torch.randn(10, 2))["nll"])


def test_bad_arguments_raise_value_errors_naming_them():
    cases = [
        ("order", lambda: FVSBN(4, order=[0, 1, 1, 2])),
        ("order", lambda: MADE(4, order="reverse")),
        ("hidden", lambda: NADE(4, hidden=0)),
        ("hidden", lambda: MADE(4, hidden=())),
        ("num_masks", lambda: MADE(4, num_masks=0)),
        ("connectivity", lambda: MADE(4, connectivity="dense")),
        ("k", lambda: MADE(4, num_masks=2).use_mask(2)),
        ("output", lambda: NADE(4, output="poisson")),
        ("num_levels", lambda: FVSBN(4, output="categorical")),
        ("num_levels", lambda: make_output("logistic_mixture", num_levels=1)),
        ("num_components", lambda: make_output("gaussian_mixture", num_components=0)),
        ("event_shape", lambda: PixelCNN(64)),
        ("event_shape", lambda: NADE((4, 0))),
        ("kernel_size", lambda: GatedPixelCNN((1, 4, 4), kernel_size=4)),
        ("hidden", lambda: PixelCNN((3, 4, 4), hidden=2)),
        ("cell", lambda: AutoregressiveRNN(4, cell="vanilla")),
        ("mask_type", lambda: MaskedConv2d(1, 2, 3, data_channels=1, mask_type="C")),
        ("sample_shape", lambda: FVSBN(4).distribution(2).sample((3,))),
    ]
    for arg, make in cases:
        with pytest.raises(ValueError, match=arg):
            make()


def test_fit_rejects_data_outside_the_support():
    with pytest.raises(ValueError, match="data"):
        pyro_dgm.fit(FVSBN(4).model, None, torch.full((8, 4), 0.5), steps=1, progress=False)
    model = FVSBN(4, output="categorical", num_levels=3)
    with pytest.raises(ValueError, match="data"):
        pyro_dgm.fit(model.model, None, torch.full((8, 4), 3.0), steps=1, progress=False)


def test_distribution_wrapper_shapes():
    d = FVSBN(6).distribution(4)
    assert isinstance(d, AutoregressiveDistribution)
    assert d.batch_shape == (4,) and d.event_shape == (6,) and d.sample().shape == (4, 6)
    assert d.expand((4,)) is d
    assert d.log_prob(torch.zeros(2, 4, 6)).shape == (2, 4)


def _all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def _frequencies(samples, n):
    codes = (samples.reshape(samples.shape[0], -1) * 2 ** torch.arange(n - 1, -1, -1)).sum(-1).long()
    return torch.bincount(codes, minlength=2 ** n).float() / samples.shape[0]


@pytest.mark.parametrize("name", ["fvsbn", "nade", "made", "pixelcnn", "gated-pixelcnn", "rnn"])
def test_fitted_model_samples_follow_its_log_prob(name):
    """Fit a known distribution on 4 binary dims; the samples' frequencies match exp(log_prob)."""
    torch.manual_seed(0)
    target = torch.softmax(1.5 * torch.randn(16), 0)
    states = _all_states(4)
    data = states[torch.multinomial(target, 2000, replacement=True)]
    make = {"fvsbn": lambda: FVSBN(4), "nade": lambda: NADE(4, hidden=16),
            "made": lambda: MADE(4, hidden=(32,), num_masks=2, order="random"),
            "pixelcnn": lambda: PixelCNN((1, 2, 2), hidden=8, num_layers=1, kernel_size=3),
            "gated-pixelcnn": lambda: GatedPixelCNN((1, 2, 2), hidden=8, num_layers=2, kernel_size=3),
            "rnn": lambda: AutoregressiveRNN(4, hidden=16)}[name]
    model = make()
    pyro_dgm.fit(model.model, None, data.view(2000, *model.event_shape), epochs=30, batch_size=250, lr=3e-2,
                 seed=0, progress=False)
    model.eval()
    with torch.no_grad():
        probs = model.log_prob(states.view(16, *model.event_shape)).exp()
    empirical = _frequencies(data, 4)  # the maximum-likelihood fit over all distributions on 16 states
    independent = torch.where(states.bool(), data.mean(0), 1 - data.mean(0)).prod(1)  # best factorized fit
    fit_tv = 0.5 * float((probs - empirical).abs().sum())
    independent_tv = 0.5 * float((independent - empirical).abs().sum())
    # FVSBN has no interaction terms: better than independent pixels, not exact
    assert fit_tv < (0.8 if name == "fvsbn" else 0.3) * independent_tv, (fit_tv, independent_tv)
    torch.manual_seed(1)
    samples = sample_program(model.model, 10000)
    sample_tv = 0.5 * float((_frequencies(samples, 4) - probs).abs().sum())
    assert sample_tv < 0.035, sample_tv  # expected about 0.015 for 10,000 draws


@pytest.mark.parametrize("output", ["categorical", "logistic_mixture", "gaussian_mixture"])
def test_samples_of_grey_level_and_real_outputs_follow_log_prob(output):
    """Two dimensions: the sample histogram (levels) or the sample mean of 1/p (reals) match the density."""
    model = _randomize(NADE(2, hidden=8, **OUTPUT_OPTIONS[output]))
    torch.manual_seed(2)
    samples = model.sample(20000)
    with torch.no_grad():
        if output == "gaussian_mixture":  # E_p[f(x) / p(x)] = integral of f: here f = 1 on [-1, 1]^2
            inside = (samples.abs() <= 1).all(-1)
            grid = torch.cartesian_prod(*(torch.linspace(-1, 1, 201),) * 2)
            mass = float(model.log_prob(grid).exp().mean()) * 4.0
            assert abs(float(inside.float().mean()) - mass) < 0.015
            return
        states = torch.cartesian_prod(torch.arange(4.0), torch.arange(4.0))
        probs = model.log_prob(states).exp()
    freq = torch.bincount((samples[:, 0] * 4 + samples[:, 1]).long(), minlength=16).float() / 20000
    assert 0.5 * float((freq - probs).abs().sum()) < 0.025


def test_cli_trains_samples_and_evaluates_an_image_model(tmp_path, capsys):
    from pyro_dgm.cli import main

    run = tmp_path / "pixelcnn"
    assert main(["train", "--model", "pixelcnn", "--data", "digits", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["sample", "--run", str(run), "--num", "4"]) == 0
    samples = torch.load(run / "samples.pt", weights_only=True)
    assert samples.shape == (4, 1, 8, 8) and set(samples.unique().tolist()) <= {0.0, 1.0}
    assert main(["evaluate", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out


def test_made_resume_continues_with_the_right_mask_set(tmp_path):
    x = torch.bernoulli(torch.full((64, 6), 0.4, dtype=torch.float32))

    def made():
        torch.manual_seed(0)
        return MADE(6, hidden=(16,), num_masks=4)

    straight = made()
    ref = pyro_dgm.fit(straight.model, None, x, steps=6, batch_size=16, seed=1, progress=False)
    path = tmp_path / "made.pt"
    first = made()
    pyro_dgm.fit(first.model, None, x, steps=3, batch_size=16, seed=1, checkpoint=path, progress=False)
    again = made()
    resumed = pyro_dgm.fit(again.model, None, x, steps=6, batch_size=16, seed=1, checkpoint=path, resume=True,
                           progress=False)
    assert resumed.losses["model"] == ref.losses["model"]
    assert again.mask_index == straight.mask_index


def test_made_single_ordering_is_an_explicit_choice():
    natural, default = MADE(6, hidden=(16,), order="natural"), MADE(6, hidden=(16,))
    assert torch.equal(natural.ordering, torch.arange(6)) and torch.equal(default.ordering, torch.arange(6))
    shuffled = MADE(6, hidden=(16,), order="random", seed=3)
    assert sorted(shuffled.ordering.tolist()) == list(range(6)) and not torch.equal(shuffled.ordering, torch.arange(6))
    with pytest.raises(ValueError, match="'natural'"):
        MADE(6, order="raster")


def test_made_dropout_is_random_in_training_only_and_keeps_the_autoregressive_property():
    torch.manual_seed(0)
    model = MADE(9, hidden=(64, 64), order=torch.randperm(9), dropout=0.5)
    x = torch.bernoulli(torch.full((4, 9), 0.5))
    first, second = model.log_prob_under(x, 0), model.log_prob_under(x, 0)
    assert not torch.allclose(first, second)  # training mode: a new dropout mask per call
    model.eval()
    torch.testing.assert_close(model.log_prob(x), model.log_prob(x))
    _assert_autoregressive(_jacobian(model, (9,)), model.ordering)
    model.train()
    _assert_autoregressive(_jacobian(model, (9,)), model.ordering)  # dropout zeroes units, never adds a path
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout"):
            MADE(9, dropout=bad)
