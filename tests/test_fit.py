"""fit: losses fall, seeds reproduce, checkpoints resume exactly, bad input fails early."""

import math
import signal
import subprocess
import sys
import textwrap
import time

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_dgm
from pyro_dgm import checkpoint as ckpt
from pyro_dgm.callbacks import EarlyStopping
from pyro_dgm.data import load_digits
from pyro_dgm.inference import ELBO, MaximumLikelihood
from pyro_dgm.models import VAE, ConvVAE, DiagonalGaussian, FactorizedBernoulli


@pytest.fixture(scope="module")
def digits():
    return load_digits("train")[:256]


def small_vae():
    torch.manual_seed(1)
    return VAE(64, latent_dim=4, hidden=(32,))


def test_vae_loss_falls_on_digits(digits):
    vae = small_vae()
    r = pyro_dgm.fit(vae.model, vae.guide, digits, epochs=15, batch_size=32, seed=0, progress=False)
    losses = r.losses["model"]
    assert len(losses) == 15 * 8
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 5.0, (first, last)
    assert r.objective.uses_analytic_kl  # Normal guide vs Normal prior: the KL is closed-form


def test_same_seed_same_losses(digits):
    runs = []
    for _ in range(2):
        vae = small_vae()
        runs.append(pyro_dgm.fit(vae.model, vae.guide, digits, steps=12, batch_size=32, seed=3,
                                 progress=False).losses["model"])
    assert runs[0] == runs[1]
    vae = small_vae()
    other = pyro_dgm.fit(vae.model, vae.guide, digits, steps=12, batch_size=32, seed=4, progress=False)
    assert other.losses["model"] != runs[0]


def test_default_objective_is_mle_without_guide(digits):
    m = FactorizedBernoulli(64)
    r = pyro_dgm.fit(m.model, None, digits, epochs=30, lr=0.1, batch_size=64, seed=0, progress=False)
    assert isinstance(r.objective, MaximumLikelihood)
    # The MLE of a factorized Bernoulli is the per-pixel mean: the loss approaches its entropy.
    p = digits.mean(0).clamp(1e-4, 1 - 1e-4)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).sum()
    assert abs(pyro_dgm.evaluate(m.model, digits)["nll"] - float(entropy)) < 0.3


def test_dataset_and_dataloader_inputs(digits):
    ds = torch.utils.data.TensorDataset(digits)
    m1, m2 = FactorizedBernoulli(64), FactorizedBernoulli(64)
    r1 = pyro_dgm.fit(m1.model, None, ds, steps=5, batch_size=64, seed=0, progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    r2 = pyro_dgm.fit(m2.model, None, loader, epochs=1, seed=0, progress=False)
    assert len(r1.losses["model"]) == 5 and len(r2.losses["model"]) == 4


def test_scheduler_clipping_and_bf16(digits):
    vae = small_vae()
    r = pyro_dgm.fit(vae.model, vae.guide, digits, epochs=2, batch_size=64, lr=1e-2, seed=0,
                     scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
                     clip_grad=1.0, precision="bf16", progress=False)
    assert all(math.isfinite(v) for v in r.losses["model"])
    # Two epochs, two scheduler steps: 1e-2 * 0.5^2.
    assert r.steps == 8
    assert math.isclose(r.optimizers["model"].param_groups[0]["lr"], 1e-2 * 0.25)


def test_two_models_side_by_side_do_not_share_parameters(digits):
    a, b = small_vae(), small_vae()
    pyro_dgm.fit(a.model, a.guide, digits, steps=5, batch_size=32, seed=0, progress=False)
    w_b = b.decoder[0].weight.clone()
    pyro_dgm.fit(b.model, b.guide, digits, steps=5, batch_size=32, seed=1, progress=False)
    assert not torch.equal(a.decoder[0].weight, b.decoder[0].weight)
    assert not torch.equal(b.decoder[0].weight, w_b)


def test_early_stopping_stops_and_restores_best(digits):
    vae = small_vae()
    stop = EarlyStopping(load_digits("val"), patience=2)
    r = pyro_dgm.fit(vae.model, vae.guide, digits, epochs=200, batch_size=128, lr=3e-2, seed=0,
                     callbacks=[stop], progress=False)
    assert r.epochs < 200
    assert len(stop.history) == r.epochs
    assert stop.best == min(stop.history)


# ------------------------------------------------------------------ checkpoints

def test_checkpoint_resume_matches_uninterrupted_run(digits, tmp_path):
    full = small_vae()
    ref = pyro_dgm.fit(full.model, full.guide, digits, steps=20, batch_size=48, seed=7, progress=False)

    class Crash(Exception):
        """Stands for a crash in the middle of training."""

    def crash_at_13(state):
        if state.step == 13:
            raise Crash

    path = tmp_path / "ck.pt"
    part = small_vae()
    with pytest.raises(Crash):
        pyro_dgm.fit(part.model, part.guide, digits, steps=20, batch_size=48, seed=7, checkpoint=path,
                     checkpoint_every=4, callbacks=[crash_at_13], progress=False)
    assert ckpt.load(path)["step"] == 12
    again = small_vae()
    resumed = pyro_dgm.fit(again.model, again.guide, digits, steps=20, batch_size=48, seed=7,
                           checkpoint=path, resume=True, progress=False)
    assert resumed.losses["model"] == ref.losses["model"]
    assert torch.equal(again.decoder[0].weight, full.decoder[0].weight)


CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    import pyro_dgm
    from pyro_dgm.data import load_digits
    from pyro_dgm.models import VAE
    x = load_digits("train")[:256]
    torch.manual_seed(1)
    vae = VAE(64, latent_dim=4, hidden=(32,))
    slow = lambda state: time.sleep(0.05)
    pyro_dgm.fit(vae.model, vae.guide, x, steps=400, batch_size=48, seed=7, checkpoint=sys.argv[1],
                 checkpoint_every=1, callbacks=[slow], progress=False)
""")


def test_killed_child_process_resumes_exactly(digits, tmp_path):
    path = tmp_path / "ck.pt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(path)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if path.exists() and ckpt.load(path)["step"] >= 6:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = ckpt.load(path)["step"]  # readable: the atomic write left no torn file
    assert 6 <= killed_at < 400
    steps = killed_at + 8
    again = small_vae()
    resumed = pyro_dgm.fit(again.model, again.guide, digits, steps=steps, batch_size=48, seed=7,
                           checkpoint=path, resume=True, progress=False)
    full = small_vae()
    ref = pyro_dgm.fit(full.model, full.guide, digits, steps=steps, batch_size=48, seed=7, progress=False)
    assert resumed.losses["model"] == ref.losses["model"]


def test_checkpoint_of_another_model_is_refused(digits, tmp_path):
    path = tmp_path / "ck.pt"
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, digits, steps=2, batch_size=32, checkpoint=path, progress=False)
    other = VAE(64, latent_dim=3, hidden=(32,))
    with pytest.raises(ValueError, match="checkpoint: .*other modules"):
        pyro_dgm.fit(other.model, other.guide, digits, steps=4, batch_size=32, checkpoint=path, resume=True,
                     progress=False)


def test_corrupt_checkpoint_is_refused(digits, tmp_path):
    path = tmp_path / "ck.pt"
    path.write_bytes(b"not a checkpoint at all")
    vae = small_vae()
    with pytest.raises(ValueError, match="checkpoint: .*corrupt"):
        pyro_dgm.fit(vae.model, vae.guide, digits, steps=2, checkpoint=path, resume=True, progress=False)


def test_checkpoint_loads_with_weights_only(digits, tmp_path):
    path = tmp_path / "ck.pt"
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, digits, steps=3, batch_size=32, checkpoint=path, progress=False)
    state = torch.load(path, weights_only=True)
    assert state["format"] == ckpt.FORMAT and state["step"] == 3


# ------------------------------------------------------------------ NaN

class ExplodesAtStep(MaximumLikelihood):
    def __init__(self, step):
        self.bad_step, self.calls = step, 0

    def loss(self, group, batch):
        nll = super().loss(group, batch)
        self.calls += 1
        boom = torch.tensor(float("nan")) if self.calls > self.bad_step + 1 else torch.tensor(0.0)
        return {"nll": nll, "penalty": boom}


def test_nan_loss_stops_with_step_and_term_and_keeps_checkpoint(digits, tmp_path):
    path = tmp_path / "ck.pt"
    m = FactorizedBernoulli(64)
    with pytest.raises(pyro_dgm.NonFiniteLossError, match=r"at step 5.*'model/penalty'"):
        # setup's validation pass calls loss once, so step k is call k + 2
        pyro_dgm.fit(m.model, None, digits, objective=ExplodesAtStep(5), steps=50, batch_size=16,
                     checkpoint=path, checkpoint_every=2, progress=False)
    saved = ckpt.load(path)
    assert saved["step"] == 4
    assert all(math.isfinite(v) for v in saved["losses"]["model"])
    assert torch.isfinite(m.logits).all()


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size: expected an integer >= 1"),
    ({"batch_size": 1000, "drop_last": True}, "batch_size: 1000 is larger than the data"),
    ({"device": "tpu"}, "device: "),
    ({"device": "banana"}, "device: unknown device"),
    ({"epochs": 0}, "epochs: expected an integer >= 1"),
    ({"optimizer": "adamax2"}, "optimizer: unknown name"),
    ({"precision": "fp8"}, "precision: expected"),
])
def test_bad_arguments(digits, kwargs, match):
    m = FactorizedBernoulli(64)
    with pytest.raises(ValueError, match=match):
        pyro_dgm.fit(m.model, None, digits, progress=False, **{"steps": 1, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_none_exists():
    m = FactorizedBernoulli(4)
    with pytest.raises(ValueError, match="device: 'cuda' asked for CUDA, but no CUDA device"):
        pyro_dgm.fit(m.model, None, torch.zeros(4, 4), device="cuda", progress=False)


def test_wrong_data_shape(digits):
    vae = small_vae()
    with pytest.raises(ValueError, match=r"data: each example has shape \(32,\).*\(64,\)"):
        pyro_dgm.fit(vae.model, vae.guide, digits[:, :32], steps=1, progress=False)
    conv = ConvVAE((1, 8, 8))
    with pytest.raises(ValueError, match=r"data: each example has shape \(64,\).*\(1, 8, 8\)"):
        pyro_dgm.fit(conv.model, conv.guide, digits, steps=1, progress=False)


def test_non_binary_data_to_bernoulli():
    x = load_digits("train", kind="continuous")[:64]
    vae = small_vae()
    with pytest.raises(ValueError, match="data: values .* outside the support .*binarize"):
        pyro_dgm.fit(vae.model, vae.guide, x, steps=1, progress=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_data(bad):
    x = torch.zeros(16, 4)
    x[3, 1] = bad
    with pytest.raises(ValueError, match="data: contains 1 NaN or infinite"):
        pyro_dgm.fit(DiagonalGaussian(4).model, None, x, steps=1, progress=False)


def test_empty_data():
    with pytest.raises(ValueError, match="data: is empty"):
        pyro_dgm.fit(DiagonalGaussian(4).model, None, torch.zeros(0, 4), steps=1, progress=False)
    with pytest.raises(ValueError, match="data: the Dataset is empty"):
        pyro_dgm.fit(DiagonalGaussian(4).model, None, torch.utils.data.TensorDataset(torch.zeros(0, 4)),
                     steps=1, progress=False)


def test_elbo_needs_guide_and_mle_refuses_latents(digits):
    vae = small_vae()
    with pytest.raises(ValueError, match="guide: ELBO needs a guide"):
        pyro_dgm.fit(vae.model, None, digits, objective=ELBO(), steps=1, progress=False)
    with pytest.raises(ValueError, match="MaximumLikelihood needs a model without latent sites"):
        pyro_dgm.fit(vae.model, None, digits, steps=1, progress=False)


def test_no_work_done_before_bad_input_is_reported(digits, tmp_path):
    path = tmp_path / "ck.pt"
    vae = small_vae()
    before = vae.decoder[0].weight.clone()
    with pytest.raises(ValueError):
        pyro_dgm.fit(vae.model, vae.guide, digits[:, :10], steps=5, checkpoint=path, progress=False)
    assert torch.equal(before, vae.decoder[0].weight) and not path.exists()


def test_early_stopping_restores_best_weights_when_epochs_run_out():
    from pyro_dgm.fit import FitState

    layer = torch.nn.Linear(1, 1, bias=False)

    class WeightIsTheLoss(MaximumLikelihood):
        def param_groups(self):
            return {"model": [layer]}

        def loss(self, group, batch):
            return layer.weight.sum().abs()

    stop = EarlyStopping(torch.zeros(4, 1), patience=10)
    state = FitState(0, 0, {}, [layer], WeightIsTheLoss(), torch.device("cpu"))
    for w in (3.0, 1.0, 2.0):  # the best epoch is the second
        layer.weight.data.fill_(w)
        stop.on_epoch_end(state)
    assert not state.stop and stop.history == [3.0, 1.0, 2.0]
    stop.on_train_end(state)
    assert float(layer.weight.detach()) == 1.0


def test_early_stopping_state_survives_a_resume(digits, tmp_path):
    path = tmp_path / "ck.pt"
    val = load_digits("val")
    first = EarlyStopping(val, patience=50)
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, digits, epochs=3, batch_size=128, seed=0, checkpoint=path,
                 callbacks=[first], progress=False)
    second = EarlyStopping(val, patience=50)
    again = small_vae()
    pyro_dgm.fit(again.model, again.guide, digits, epochs=5, batch_size=128, seed=0, checkpoint=path,
                 resume=True, callbacks=[second], progress=False)
    assert len(second.history) == 5 and second.history[:3] == first.history


def test_shuffled_dataloader_resumes_exactly(digits, tmp_path):
    loader = lambda: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits), batch_size=48,  # noqa: E731
                                                 shuffle=True)
    full = small_vae()
    ref = pyro_dgm.fit(full.model, full.guide, loader(), steps=14, seed=2, progress=False)

    def stop_at_9(state):
        if state.step == 9:
            state.stop = True

    path = tmp_path / "ck.pt"
    part = small_vae()
    pyro_dgm.fit(part.model, part.guide, loader(), steps=14, seed=2, checkpoint=path, callbacks=[stop_at_9],
                 progress=False)
    torch.randn(100)  # the global RNG moves on between the runs, as it does between processes
    again = small_vae()
    resumed = pyro_dgm.fit(again.model, again.guide, loader(), steps=14, seed=2, checkpoint=path, resume=True,
                           progress=False)
    assert resumed.losses["model"] == ref.losses["model"]


def test_modules_must_be_modules_and_loaders_must_yield(digits):
    m = FactorizedBernoulli(64)
    with pytest.raises(ValueError, match="modules: expected torch.nn.Modules"):
        pyro_dgm.fit(m.model, None, digits, modules=["nope"], steps=1, progress=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits[:10]), batch_size=64, drop_last=True)
    with pytest.raises(ValueError, match="data: the DataLoader yields no batches"):
        pyro_dgm.fit(m.model, None, loader, steps=1, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_checkpoint_resume_and_evaluate(digits, tmp_path):
    path = tmp_path / "ck.pt"
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, digits, steps=4, batch_size=32, seed=0, device="cuda", checkpoint=path,
                 progress=False)
    assert next(vae.parameters()).device.type == "cuda"
    again = small_vae()
    r = pyro_dgm.fit(again.model, again.guide, digits, steps=8, batch_size=32, seed=0, device="cuda",
                     checkpoint=path, resume=True, progress=False)
    assert r.steps == 8 and len(r.losses["model"]) == 8
    res = pyro_dgm.evaluate(again.model, digits[:50], guide=again.guide, num_particles=4)
    assert math.isfinite(res["nll"])


def test_plain_function_programs_train_the_modules_given():
    import pyro
    import pyro.distributions as dist

    loc = torch.nn.Linear(1, 2, bias=False)  # a module the program uses but does not own

    def model(x=None, num_samples=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc.weight.squeeze(-1), 1.0).to_event(1), obs=x)

    x = torch.randn(256, 2) + torch.tensor([3.0, -1.0])
    pyro_dgm.fit(model, None, x, modules=[loc], epochs=60, lr=0.1, batch_size=64, seed=0, progress=False)
    assert torch.allclose(loc.weight.squeeze(-1), x.mean(0), atol=0.1)


def test_steps_count_batches_and_updates_count_each_groups_optimizer_steps(capsys):
    from pyro_dgm.inference import Adversarial
    from pyro_dgm.models import MLPCritic, MLPGenerator

    x = torch.randn(64, 2)
    gen, critic = MLPGenerator(2, latent_dim=2, hidden=(8,)), MLPCritic(2, hidden=(8,))
    objective = Adversarial(critic, loss="wgan-gp", n_critic=5)
    result = pyro_dgm.fit(gen.model, None, x, objective=objective, steps=20, batch_size=16, progress=True)
    assert result.steps == 20 and result.updates == {"critic": 20, "generator": 4}
    err = capsys.readouterr().err
    assert "generator=" in err and "(4 updates)" in err and "batch" in err



def test_a_tuple_x_y_trains_model_x_y_as_evaluate_takes_it():
    def model(x, y):
        loc = pyro.param("class_loc", torch.zeros(2, 3))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc[y], 1.0).to_event(1), obs=x)

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    x = torch.randn(400, 3, generator=g) + torch.tensor([[-2.0], [2.0]])[y]
    pyro.clear_param_store()
    pyro_dgm.fit(model, None, (x, y), epochs=40, batch_size=50, lr=0.1, seed=0, progress=False)
    means = torch.stack([x[y == k].mean(0) for k in (0, 1)])
    assert torch.allclose(pyro.param("class_loc"), means, atol=0.15)
    assert pyro_dgm.evaluate(model, (x, y))["nll"] < pyro_dgm.evaluate(model, (x, 1 - y))["nll"] - 5
    with pytest.raises(ValueError, match="same number of rows"):
        pyro_dgm.fit(model, None, (x, y[:10]), epochs=1, progress=False)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_fit_on_the_cpu_reuses_freed_activations_instead_of_faulting_them_in_each_step():
    """glibc's defaults hand a Glow step's freed activations back to the kernel, so the next step page-faults
    them in again (about 650 minor faults per step here in a fresh process: benchmarks/cpu_allocator.py);
    fit keeps them for reuse."""
    import resource

    from pyro_dgm.models import Glow
    from pyro_dgm.training.devices import keep_freed_cpu_memory

    torch.manual_seed(0)
    m = Glow((3, 16, 16), levels=2, steps=2, hidden=32)
    faults, mark = [], [0]

    def count(state):
        now = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        faults.append(now - mark[0])
        mark[0] = now

    pyro_dgm.fit(m.model, None, torch.rand(32, 3, 16, 16), steps=8, progress=False, callbacks=[count])
    assert keep_freed_cpu_memory() and sorted(faults[3:])[2] < 50


def test_the_cpu_malloc_is_left_alone_when_the_user_says_so(monkeypatch):
    from pyro_dgm.training import devices

    for env in ({"PYRO_DGM_MALLOC": "system"}, {"MALLOC_TRIM_THRESHOLD_": "0"}):
        monkeypatch.setattr(devices, "_allocator_tuned", False)
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            m.setattr("ctypes.CDLL", lambda *a: pytest.fail("mallopt was called"))
            assert devices.keep_freed_cpu_memory() is False
