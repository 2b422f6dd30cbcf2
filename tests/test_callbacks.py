"""EarlyStopping watches the estimate it is told to (issue 15): the objective's loss, evaluate's NLL, or a callable."""

import shutil
import warnings

import pyro
import pytest
import torch

import pyro_dgm
from pyro_dgm.callbacks import EarlyStopping, WeightAverage
from pyro_dgm.data import load_digits
from pyro_dgm.models import VAE, FactorizedBernoulli


def test_nll_monitor_is_evaluate_on_the_validation_data():
    x, xv = load_digits("train")[:400], load_digits("val")
    model = FactorizedBernoulli(64)
    stop = EarlyStopping(xv, monitor="nll", restore_best=False)
    pyro_dgm.fit(model.model, None, x, epochs=3, lr=0.05, callbacks=[stop], progress=False)
    assert len(stop.history) == 3
    assert stop.history[-1] == pytest.approx(pyro_dgm.evaluate(model.model, xv)["nll"], rel=1e-6)


def test_nll_monitor_of_a_vae_is_the_tighter_importance_weighted_bound():
    pyro.set_rng_seed(0)
    x, xv = load_digits("train")[:400], load_digits("val")
    vae = VAE(64, latent_dim=4, hidden=32)
    by_loss, by_nll = EarlyStopping(xv, restore_best=False), EarlyStopping(xv, monitor="nll", num_particles=200,
                                                                            restore_best=False)
    pyro_dgm.fit(vae.model, vae.guide, x, epochs=3, lr=3e-3, callbacks=[by_loss, by_nll], progress=False)
    elbo_nll, iwae_nll = by_loss.history[-1], by_nll.history[-1]
    assert iwae_nll < elbo_nll - 0.2  # IWAE-200 bounds -log p(x) from below the 1-sample ELBO


def test_callable_monitor_and_patience():
    x = torch.bernoulli(torch.full((64, 4), 0.3))
    stop = EarlyStopping(x[:16], patience=2, monitor=lambda state: 1.0)
    result = pyro_dgm.fit(FactorizedBernoulli(4).model, None, x, epochs=20, callbacks=[stop], progress=False)
    assert stop.history == [1.0, 1.0, 1.0] and result.epochs == 3


@pytest.mark.parametrize("kwargs, match", [({"monitor": "elbo"}, "monitor"), ({"num_particles": 0}, "num_particles")])
def test_bad_monitor_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(torch.zeros(2, 4), **kwargs)


def test_nll_monitor_on_a_plain_pyro_program_with_an_autoguide():
    import pyro.distributions as dist
    from pyro.infer.autoguide import AutoNormal

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)

    pyro.clear_param_store()
    x = 3.0 + torch.randn(200, generator=torch.Generator().manual_seed(0))
    guide = AutoNormal(model)
    stop = EarlyStopping(x[:50], patience=50, monitor="nll", num_particles=50, restore_best=False)
    pyro_dgm.fit(model, guide, x, epochs=30, batch_size=50, lr=0.1, seed=0, callbacks=[stop], progress=False)
    assert len(stop.history) == 30
    # -log N(x; 3, 1) per point is about 1.42; the first epochs, with loc near 0, are far worse
    assert stop.history[-1] < 1.7 < stop.history[0]


def test_a_state_only_callback_rides_in_the_checkpoint_of_a_plain_pyro_program(tmp_path):
    """An object with only state_dict/load_state_dict is a callback: its state is saved and handed back on resume."""
    import pyro.distributions as dist

    def model(x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    class Tag:
        def __init__(self, value):
            self.value, self.restored = value, None

        def state_dict(self):
            return {"value": self.value}

        def load_state_dict(self, state):
            self.restored = state

    pyro.clear_param_store()
    x, path = torch.randn(64, 2) + 3.0, tmp_path / "ck.pt"
    pyro_dgm.fit(model, None, x, steps=3, batch_size=32, checkpoint=path, callbacks=[Tag(1)], progress=False)
    later = Tag(2)
    r = pyro_dgm.fit(model, None, x, steps=5, batch_size=32, checkpoint=path, resume=True, callbacks=[later],
                     progress=False)
    assert later.restored == {"value": 1} and r.steps == 5
    with pytest.raises(ValueError, match="state_dict and load_state_dict"):
        pyro_dgm.fit(model, None, x, steps=1, callbacks=[object()], progress=False)


class GaussianMean(torch.nn.Module):
    """A plain Pyro program (``pyro.module``): the mean of unit-variance Gaussian data."""

    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(2))

    def model(self, x):
        pyro.module("mean", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pyro.distributions.Normal(self.loc, 1.0).to_event(1), obs=x)


def _mean_fit(steps, seed=0, callbacks=lambda m: [], **kwargs):
    """``(module, data)``: the mean fitted by SGD at batch 4, with ``callbacks(module)``."""
    torch.manual_seed(seed)
    x = torch.randn(256, 2) + torch.tensor([3.0, -1.0])
    m = GaussianMean()
    pyro_dgm.fit(m.model, None, x, steps=steps, batch_size=4, lr=0.1, optimizer="sgd", seed=seed, progress=False,
                 callbacks=callbacks(m), **kwargs)
    return m, x


def test_weight_average_is_the_exponential_average_of_the_weights_after_each_step():
    from pyro_dgm.callbacks import WeightAverage

    seen, made = [], []

    def callbacks(m):
        made.append(WeightAverage(m, decay=0.9, start=3))
        return [lambda state: seen.append(m.loc.detach().clone()), made[0]]

    m, _ = _mean_fit(12, callbacks=callbacks)
    expected = seen[2]  # steps 1 and 2 are not averaged; step 3's weights start the average
    for w in seen[3:]:
        expected = 0.9 * expected + 0.1 * w
    torch.testing.assert_close(m.loc.detach(), expected)  # loaded into the module at the end
    assert made[0].n_averaged == 10 and not torch.equal(expected, seen[-1])


def test_weight_average_smooths_small_batch_noise_out_of_the_weights():
    """SGD at batch 4 leaves the last iterate jittering around the optimum (the data's mean); the average
    of its last 200 steps sits far closer to it."""
    from pyro_dgm.callbacks import WeightAverage

    last, averaged = [], []
    for seed in range(4):
        m, x = _mean_fit(400, seed)
        last.append((m.loc.detach() - x.mean(0)).norm())
        m, x = _mean_fit(400, seed, callbacks=lambda m: [WeightAverage(m, decay=0.98, start=200)])
        averaged.append((m.loc.detach() - x.mean(0)).norm())
    assert torch.stack(averaged).mean() < 0.5 * torch.stack(last).mean()


def test_weight_average_resumes_from_the_checkpoint_as_if_never_stopped(tmp_path):
    from pyro_dgm.callbacks import WeightAverage

    def run(steps, path, resume=False):
        m, _ = _mean_fit(steps, callbacks=lambda m: [WeightAverage(m, decay=0.8)], checkpoint=path, resume=resume)
        return m.loc.detach()

    full = run(10, tmp_path / "full.pt")
    run(4, tmp_path / "cut.pt")
    torch.testing.assert_close(run(10, tmp_path / "cut.pt", resume=True), full, rtol=0, atol=0)


def _param_store_fit(steps, seen=None, **kwargs):
    """A plain Pyro program with no module: ``pyro.param("loc")``, fitted by SGD at batch 4 with
    ``WeightAverage()`` (every parameter fit trains); returns (the store's loc, the WeightAverage)."""
    def model(x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pyro.distributions.Normal(loc, 1.0).to_event(1), obs=x)

    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.randn(256, 2) + torch.tensor([3.0, -1.0])
    average = WeightAverage(decay=0.8, start=2)
    record = [] if seen is None else [lambda state: seen.append(pyro.param("loc").detach().clone())]
    pyro_dgm.fit(model, None, x, steps=steps, batch_size=4, lr=0.1, optimizer="sgd", progress=False,
                 callbacks=record + [average], **kwargs)
    return pyro.param("loc").detach(), average


def test_a_resume_matches_callback_states_by_type_whatever_the_order(tmp_path):
    """Two averages and an early stopping, resumed in another order with a stateless callback in front and
    a new average added: each takes its own type's saved state (the k-th WeightAverage the k-th one's), the
    run ends as the uninterrupted one, and the new one starts afresh with a warning."""
    x = torch.randn(256, 2) + torch.tensor([3.0, -1.0])

    def run(steps, path, order, resume=False, extra=()):
        torch.manual_seed(0)
        m = GaussianMean()
        made = {"slow": WeightAverage(m, decay=0.9, load_at_end=False),
                "fast": WeightAverage(m, decay=0.5, load_at_end=False),
                "stop": EarlyStopping(x[:32], patience=100)}
        pyro_dgm.fit(m.model, None, x, steps=steps, batch_size=4, lr=0.1, optimizer="sgd", seed=0, progress=False,
                     callbacks=[*extra, *(made[k] for k in order)], checkpoint=path, resume=resume)
        return made

    full = run(130, tmp_path / "full.pt", ("slow", "fast", "stop"))
    run(70, tmp_path / "cut.pt", ("slow", "fast", "stop"))
    for copy in ("added.pt", "left_out.pt"):
        shutil.copy(tmp_path / "cut.pt", tmp_path / copy)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        resumed = run(130, tmp_path / "cut.pt", ("stop", "slow", "fast"), resume=True,
                      extra=(lambda state: None,))
    assert not [w for w in seen if "callback" in str(w.message)]
    with pytest.warns(UserWarning, match="holds no state of a WeightAverage callback for this one.*starts afresh"):
        run(71, tmp_path / "added.pt", ("slow", "fast", "stop"), resume=True, extra=(WeightAverage(GaussianMean()),))
    with pytest.warns(UserWarning, match=r"callback\(s\) \['WeightAverage'\] that this call does not pass"):
        run(71, tmp_path / "left_out.pt", ("slow", "stop"), resume=True)
    for k in ("slow", "fast"):
        torch.testing.assert_close(resumed[k].average, full[k].average, rtol=0, atol=0)
        assert resumed[k].n_averaged == full[k].n_averaged == 130
    assert resumed["stop"].history == full["stop"].history and len(full["stop"].history) == 2


def test_weight_average_of_the_param_store_of_a_program_without_a_module():
    seen = []
    loc, average = _param_store_fit(10, seen)
    expected = seen[1]
    for w in seen[2:]:
        expected = 0.8 * expected + 0.2 * w
    torch.testing.assert_close(loc, expected)  # the store holds the average after training
    assert average.n_averaged == 9 and not torch.equal(loc, seen[-1])


def test_weight_average_of_the_param_store_resumes_as_if_never_stopped(tmp_path):
    full, _ = _param_store_fit(10, checkpoint=tmp_path / "full.pt")
    _param_store_fit(4, checkpoint=tmp_path / "cut.pt")
    resumed, average = _param_store_fit(10, checkpoint=tmp_path / "cut.pt", resume=True)
    torch.testing.assert_close(resumed, full, rtol=0, atol=0)
    assert average.n_averaged == 9


@pytest.mark.parametrize("kwargs, match", [({"decay": 1.0}, "decay"), ({"decay": -0.1}, "decay"),
                                           ({"start": 0}, "start")])
def test_bad_weight_average_settings_are_refused(kwargs, match):
    from pyro_dgm.callbacks import WeightAverage

    with pytest.raises(ValueError, match=match):
        WeightAverage(GaussianMean(), **kwargs)
    with pytest.raises(ValueError, match="module"):
        WeightAverage(lambda x: x)


def test_weight_average_of_a_plain_pyro_flow_and_early_stopping_on_the_average():
    """Pyro's own transforms cache their last pass (torch's AveragedModel could not deep-copy them); the
    stopping scores the average, keeps its best, and `applied` scores the same weights."""
    import pyro.distributions.transforms as T

    from pyro_dgm.callbacks import WeightAverage

    torch.manual_seed(0)
    x, xv = torch.randn(512, 2) * torch.tensor([2.0, 0.5]) + 1.0, torch.randn(128, 2) * torch.tensor([2.0, 0.5]) + 1.0
    flow = T.affine_coupling(2, hidden_dims=[16])
    layers = torch.nn.ModuleList([flow])

    def model(x):
        pyro.module("flow", layers)
        d = pyro.distributions.TransformedDistribution(pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1),
                                                       [flow])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", d, obs=x)

    average = WeightAverage(layers, decay=0.9)
    stop = EarlyStopping(xv, patience=50, monitor="nll", average=average)
    pyro_dgm.fit(model, None, x, epochs=6, batch_size=64, lr=1e-2, callbacks=[average, stop], progress=False)
    assert average.n_averaged == 48 and not average.load_at_end
    final = pyro_dgm.evaluate(model, xv)["nll"]
    assert final == pytest.approx(stop.best, rel=1e-6)  # the best average is what the module holds now
    with average.applied():
        assert pyro_dgm.evaluate(model, xv)["nll"] == pytest.approx(stop.history[-1], rel=1e-6)
    assert pyro_dgm.evaluate(model, xv)["nll"] == pytest.approx(final, rel=1e-6)  # put back after the block
    with pytest.raises(ValueError, match="average: expected a WeightAverage"):
        EarlyStopping(xv, average=layers)


@pytest.mark.parametrize("given", [True, False], ids=["the guide", "no module"])
def test_weight_average_of_an_autoguide_made_on_the_first_step(given):
    """An AutoNormal guide creates its parameters when first called: the average starts from them (given
    the guide, or with no module: every parameter fit trains, here the guide's alone)."""
    from pyro.infer.autoguide import AutoNormal

    from pyro_dgm.callbacks import WeightAverage

    def model(x):
        loc = pyro.sample("loc", pyro.distributions.Normal(torch.zeros(2), 10.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pyro.distributions.Normal(loc, 1.0).to_event(1), obs=x)

    pyro.clear_param_store()
    torch.manual_seed(0)
    guide = AutoNormal(model)
    seen = []
    average = WeightAverage(guide if given else None, decay=0.8, start=2)
    pyro_dgm.fit(model, guide, torch.randn(64, 2) + 3.0, steps=8, batch_size=16, lr=0.05, progress=False,
                 callbacks=[lambda state: seen.append([p.detach().clone() for p in guide.parameters()]), average])
    expected = seen[1]
    for step in seen[2:]:
        expected = [0.8 * e + 0.2 * w for e, w in zip(expected, step)]
    assert average.n_averaged == 7
    for live, mean in zip(guide.parameters(), expected):
        torch.testing.assert_close(live.detach(), mean)


def test_weight_average_with_no_module_leaves_a_gans_critic_live():
    """``WeightAverage()`` on a GAN averages what samples, the generator, as ``WeightAverage(generator)``
    does; the critic keeps its live weights."""
    from pyro_dgm.callbacks import WeightAverage
    from pyro_dgm.data import toy_2d
    from pyro_dgm.inference import Adversarial
    from pyro_dgm.models import MLPCritic, MLPGenerator

    def run(average_of):
        torch.manual_seed(0)
        gen, critic = MLPGenerator(2, hidden=(16,)), MLPCritic(2, hidden=(16,))
        average = WeightAverage(average_of(gen), decay=0.5)
        pyro_dgm.fit(gen.model, None, toy_2d("8gaussians", 256, seed=0), objective=Adversarial(critic, loss="ns"),
                     steps=6, batch_size=64, seed=0, progress=False, callbacks=[average])
        return gen, critic, average

    gen, critic, average = run(lambda gen: None)
    gen_only, critic_live, _ = run(lambda gen: gen)
    assert len(average.average) == len(list(gen.parameters()))
    for a, b in [(gen, gen_only), (critic, critic_live)]:
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
