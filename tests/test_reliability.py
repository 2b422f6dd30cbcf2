"""fit loses nothing and refuses bad input before any work: orphans, NaNs, signals, threads, arguments, data."""

import errno
import os
import signal
import subprocess
import sys
import threading
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pyro_dgm
from pyro_dgm import checkpoint as ckpt
from pyro_dgm.fit import NonFiniteLossError
from pyro_dgm.inference import Objective
from pyro_dgm.models import VAE, FactorizedBernoulli


@pytest.fixture()
def x():
    torch.manual_seed(0)
    return torch.bernoulli(torch.full((64, 8), 0.3))


def small_vae():
    torch.manual_seed(1)
    return VAE(8, latent_dim=2, hidden=(16,))


class Steps:
    """A callback that counts training steps (to show an error came before any)."""

    def __init__(self):
        self.n = 0

    def on_step_end(self, state):
        self.n += 1


# -- data and state --------------------------------------------------------------------
def test_orphan_temp_files_are_removed_and_nothing_else(x, tmp_path):
    path = tmp_path / "ck.pt"
    orphan = tmp_path / ".ck.pt.abc123.tmp"
    orphan.write_bytes(b"x" * 1000)
    other = tmp_path / ".other.pt.abc123.tmp"
    other.write_bytes(b"keep")
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, x, steps=2, batch_size=32, checkpoint=path, progress=False)
    assert not orphan.exists() and other.exists()
    orphan.write_bytes(b"x")
    pyro_dgm.fit(vae.model, vae.guide, x, steps=3, batch_size=32, checkpoint=path, resume=True, progress=False)
    assert not orphan.exists() and other.read_bytes() == b"keep"


def _nan_gradient_model():
    p = nn.Parameter(torch.zeros(8))

    def model(x):
        pyro.module("m", nn.ParameterList([p]))
        q = p * 1.0
        if q.requires_grad:  # not in fit's checking pass, which runs without gradients
            q.register_hook(lambda g: torch.full_like(g, float("nan")))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(logits=q).to_event(1), obs=x)

    return model, p


def test_finite_loss_with_a_nan_gradient_is_caught_before_the_step(x, tmp_path):
    model, p = _nan_gradient_model()
    with pytest.raises(NonFiniteLossError, match="gradient is not.*not updated"):
        pyro_dgm.fit(model, None, x, steps=3, batch_size=32, progress=False)
    assert torch.equal(p.detach(), torch.zeros(8))  # never applied


def test_a_weight_that_becomes_infinite_is_never_checkpointed(x, tmp_path):
    path = tmp_path / "ck.pt"
    m = FactorizedBernoulli(8)
    pyro_dgm.fit(m.model, None, x, steps=2, batch_size=32, checkpoint=path, checkpoint_every=1, optimizer="sgd",
                 progress=False)
    good = ckpt.load(path)
    with pytest.raises(NonFiniteLossError, match="parameter became NaN or infinite.*is kept"):
        pyro_dgm.fit(m.model, None, x, steps=5, batch_size=32, checkpoint=path, checkpoint_every=1, resume=True,
                     optimizer="sgd", lr=1e39, progress=False)
    after = ckpt.load(path)
    assert after["step"] == good["step"]
    assert all(torch.isfinite(v).all() for sd in after["modules"] for v in sd.values())


class TwoGroups(Objective):
    """Group "a" then group "b" on each batch; b's loss is NaN from step ``bad_step`` on."""

    def __init__(self, a, b, bad_step):
        self.a, self.b, self.bad_step, self.step = a, b, bad_step, 0

    def setup(self, model, guide, batch):
        self.model = model

    def param_groups(self):
        return {"a": [self.a], "b": [self.b]}

    def groups_for_step(self, step):
        self.step = step
        return ["a", "b"]

    def loss(self, group, batch):
        net = self.a if group == "a" else self.b
        out = (net(batch) ** 2).mean()
        return out * float("nan") if group == "b" and self.step >= self.bad_step else out


def test_a_nan_in_the_second_group_undoes_the_first_groups_update(x, tmp_path):
    torch.manual_seed(0)
    a, b = nn.Linear(8, 1), nn.Linear(8, 1)
    m = FactorizedBernoulli(8)
    seen = {}

    def remember(state):
        seen[state.step] = [p.detach().clone() for p in a.parameters()]

    path = tmp_path / "ck.pt"
    with pytest.raises(NonFiniteLossError, match=r"undone.*after step 2"):
        pyro_dgm.fit(m.model, None, x, objective=TwoGroups(a, b, bad_step=3), steps=10, batch_size=16,
                     callbacks=[remember], checkpoint=path, checkpoint_every=1, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), seen[3]))  # as after the 3rd step (step 2)
    state = ckpt.load(path)
    assert state["step"] == 3 and len(state["losses"]["a"]) == len(state["losses"]["b"]) == 3
    assert not a.training and not b.training  # eval mode after the error, as after success


CHILD = """
import sys, time, torch, pyro_dgm
from pyro_dgm.models import VAE
torch.manual_seed(0)
x = torch.bernoulli(torch.full((256, 8), 0.3))
torch.manual_seed(1)
vae = VAE(8, latent_dim=2, hidden=(16,))
def slow(state):
    if state.step == 5:
        print("ready", flush=True)
    time.sleep(0.02)
pyro_dgm.fit(vae.model, vae.guide, x, steps=400, batch_size=16, seed=3, checkpoint=sys.argv[1],
             callbacks=[slow], progress=False)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_writes_a_checkpoint_and_leaves_with_one_line(sig, tmp_path, x):
    path = tmp_path / "ck.pt"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    lines = [line for line in err.strip().splitlines() if "Warning" not in line and line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and signal.Signals(sig).name in lines[0], err
    state = ckpt.load(path)
    assert 5 <= state["step"] < 400
    # the resumed run equals an uninterrupted one
    torch.manual_seed(0)
    data = torch.bernoulli(torch.full((256, 8), 0.3))
    steps = state["step"] + 5
    a = small_vae()
    resumed = pyro_dgm.fit(a.model, a.guide, data, steps=steps, batch_size=16, seed=3, checkpoint=path,
                           resume=True, progress=False)
    b = small_vae()
    full = pyro_dgm.fit(b.model, b.guide, data, steps=steps, batch_size=16, seed=3, progress=False)
    assert resumed.losses["model"] == full.losses["model"]


def test_disk_full_says_so_and_keeps_the_previous_checkpoint(x, tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, x, steps=2, batch_size=32, checkpoint=path, progress=False)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(OSError, match="no space left.*previous checkpoint is kept"):
        pyro_dgm.fit(vae.model, vae.guide, x, steps=4, batch_size=32, checkpoint=path, resume=True, progress=False)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".ck.pt.*.tmp"))


def test_resume_with_other_settings_says_what_differs_and_what_is_used(x, tmp_path):
    path = tmp_path / "ck.pt"
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, x, steps=2, batch_size=32, lr=1e-3, checkpoint=path, progress=False)
    with pytest.warns(UserWarning, match=r"lr .*0\.001.* -> .*0\.01.*new lr is used"):
        r = pyro_dgm.fit(vae.model, vae.guide, x, steps=4, batch_size=32, lr=1e-2, checkpoint=path, resume=True,
                         progress=False)
    assert r.optimizers["model"].param_groups[0]["lr"] == 1e-2
    with pytest.raises(ValueError, match="resume: .*optimizer .*Adam.*SGD"):
        pyro_dgm.fit(vae.model, vae.guide, x, steps=6, batch_size=32, optimizer="sgd", checkpoint=path,
                     resume=True, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same settings: no warning
        pyro_dgm.fit(vae.model, vae.guide, x, steps=6, batch_size=32, lr=1e-2, checkpoint=path, resume=True,
                     progress=False)


@pytest.mark.parametrize("first, then", [(64, 16), (16, 128)])
def test_a_resume_with_another_batch_size_trains_the_epochs_left(first, then, tmp_path):
    """2 epochs at one batch size, then epochs=4 at another: 2 more epochs at the new size (before: the
    steps so far, of the old size, were compared with 4 epochs of the new: 5 epochs, or none at all)."""
    x = torch.bernoulli(torch.rand(256, 8))
    path = tmp_path / "ck.pt"
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, x, epochs=2, batch_size=first, checkpoint=path, seed=0, progress=False)
    with pytest.warns(UserWarning, match="batch_size"):
        r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=4, batch_size=then, checkpoint=path, resume=True, seed=0,
                         progress=False)
    assert (r.epochs, r.steps) == (4, 2 * 256 // first + 2 * 256 // then)


def test_a_concurrent_fit_is_refused(x):
    started, release = threading.Event(), threading.Event()

    def hold(state):
        started.set()
        release.wait(30)

    vae = small_vae()
    t = threading.Thread(target=lambda: pyro_dgm.fit(vae.model, vae.guide, x, steps=2, batch_size=32,
                                                     callbacks=[hold], progress=False))
    t.start()
    try:
        assert started.wait(30)
        other = small_vae()
        with pytest.raises(RuntimeError, match="another fit is running"):
            pyro_dgm.fit(other.model, other.guide, x, steps=2, progress=False)
    finally:
        release.set()
        t.join()
    r = pyro_dgm.fit(vae.model, vae.guide, x, steps=2, batch_size=32, progress=False)  # free again
    assert len(r.losses["model"]) == 2


# -- input checks, before any work ----------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8, torch.float64, torch.float16])
def test_data_dtypes_are_converted_by_the_rule(dtype, x):
    m = FactorizedBernoulli(8)
    r = pyro_dgm.fit(m.model, None, x.to(dtype), steps=2, batch_size=32, progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in r.losses["model"])
    loader = DataLoader(TensorDataset(x.to(dtype)), batch_size=16)
    assert len(pyro_dgm.fit(m.model, None, loader, steps=2, progress=False).losses["model"]) == 2


def test_complex_data_is_refused(x):
    with pytest.raises(ValueError, match="data: has dtype torch.complex64"):
        pyro_dgm.fit(FactorizedBernoulli(8).model, None, x.to(torch.complex64), steps=1, progress=False)


def test_a_bad_value_anywhere_in_a_tensor_is_found_before_training(x):
    bad = x.clone()
    bad[-1, 0] = 2.0  # not in the first batch
    steps = Steps()
    with pytest.raises(ValueError, match="data: values \\[2.0, .*lie outside the support"):
        pyro_dgm.fit(FactorizedBernoulli(8).model, None, bad, steps=10, batch_size=16, callbacks=[steps],
                     progress=False)
    assert steps.n == 0


@pytest.mark.parametrize("value, match", [(float("nan"), "NaN or infinite"), (3.0, "outside the support")])
def test_a_bad_batch_from_a_data_loader_is_refused_before_it_is_used(x, value, match):
    bad = x.clone()
    bad[40, 0] = value
    m = FactorizedBernoulli(8)
    before = m.logits.detach().clone()
    steps = Steps()
    with pytest.raises(ValueError, match=match):
        pyro_dgm.fit(m.model, None, DataLoader(TensorDataset(bad), batch_size=16), epochs=1, callbacks=[steps],
                     progress=False)
    assert steps.n == 2  # batches 0 and 1 trained, batch 2 (rows 32-47) refused
    assert not torch.equal(m.logits, before)


@pytest.mark.parametrize("kwargs, match", [
    ({"clip_grad": -1.0}, "clip_grad"), ({"clip_grad": 0}, "clip_grad"), ({"clip_grad": float("nan")}, "clip_grad"),
    ({"lr": 0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": float("inf")}, "lr"),
    ({"lr": "fast"}, "lr"), ({"lr": True}, "lr"), ({"epochs": True}, "epochs"), ({"steps": 0}, "steps"),
    ({"epochs": 2.5}, "epochs"), ({"optimizer": "adamm"}, "optimizer"),
    ({"optimizer_kwargs": {"betas": 3}}, "optimizer_kwargs"), ({"device": "mps"}, "device"),
    ({"device": "tpu"}, "device"), ({"seed": "abc"}, "seed"), ({"callbacks": [42]}, "callbacks"),
    ({"shuffle": "yes"}, "shuffle"), ({"precision": "fp8"}, "precision"),
])
def test_bad_arguments_are_named_before_any_work(kwargs, match, x):
    vae = small_vae()
    steps = Steps()
    callbacks = kwargs.pop("callbacks", [steps])
    with pytest.raises(ValueError, match=f"^{match}"):
        pyro_dgm.fit(vae.model, vae.guide, x, steps=kwargs.pop("steps", 2), progress=False, callbacks=callbacks,
                     **kwargs)
    assert steps.n == 0


def test_bad_checkpoint_paths_are_refused_before_step_one(x, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    vae = small_vae()
    for path, match in [(a_file / "ck.pt", "which is a file"), (tmp_path, "is a directory")]:
        steps = Steps()
        with pytest.raises(ValueError, match=f"checkpoint: .*{match}"):
            pyro_dgm.fit(vae.model, vae.guide, x, steps=2, checkpoint=path, callbacks=[steps], progress=False)
        assert steps.n == 0


def test_checkpoints_get_the_users_file_mode_and_mismatches_name_the_parameters(x, tmp_path):
    path = tmp_path / "ck.pt"
    old = os.umask(0o022)
    try:
        vae = small_vae()
        pyro_dgm.fit(vae.model, vae.guide, x, steps=2, batch_size=32, checkpoint=path, progress=False)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    other = VAE(8, latent_dim=3, hidden=(16,))
    with pytest.raises(ValueError, match=r"decoder\.0\.weight: \[16, 2\] in the checkpoint, \[16, 3\] now"):
        pyro_dgm.fit(other.model, other.guide, x, steps=4, checkpoint=path, resume=True, progress=False)


def test_interrupt_handlers_are_restored_after_fit(x):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    vae = small_vae()
    pyro_dgm.fit(vae.model, vae.guide, x, steps=2, progress=False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
