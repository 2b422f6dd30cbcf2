"""The pyro-dgm command, run as a user runs it (a subprocess for the entry point)."""

import json
import subprocess
import sys

import pytest
import torch

from pyro_dgm.cli import main


def test_train_sample_evaluate_resume(tmp_path, capsys):
    run = tmp_path / "vae"
    assert main(["train", "--model", "vae", "--data", "digits", "--epochs", "2", "--out", str(run),
                 "--no-progress"]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["epochs"] == 2 and meta["event_shape"] == [64]
    assert main(["train", "--model", "vae", "--data", "digits", "--epochs", "3", "--out", str(run),
                 "--resume", "--no-progress"]) == 0
    assert json.loads((run / "run.json").read_text())["epochs"] == 3
    assert main(["sample", "--run", str(run), "--num", "16"]) == 0
    samples = torch.load(run / "samples.pt", weights_only=True)
    assert samples.shape == (16, 64) and (run / "samples.png").stat().st_size > 1000
    assert main(["evaluate", "--run", str(run), "--num-particles", "5"]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "IWAE, K=5" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "nope", "--data", "digits"], "model: unknown model 'nope'"),
    (["train", "--model", "vae", "--data", "nope"], "data: unknown data set 'nope'"),
    (["train", "--model", "vae", "--data", "digits", "--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["train", "--model", "bernoulli", "--data", "moons"], "--data: model 'bernoulli' takes binary data"),
    (["train", "--model", "vae", "--data", "digits", "--device", "cuda:7"], "device: "),
    (["train", "--model", "vae", "--data", "mnist", "--data-dir", "/nonexistent"], "looked for /nonexistent/train-images"),
    (["sample", "--run", "/nonexistent"], "--run: '/nonexistent' does not exist"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder runs/MODEL-DATA is relative
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_entry_point_and_argparse_errors(capsys):
    ok = subprocess.run([sys.executable, "-m", "pyro_dgm.cli", "list"], capture_output=True, text=True)
    assert ok.returncode == 0 and "vae" in ok.stdout and "digits" in ok.stdout
    with pytest.raises(SystemExit) as bad:  # in-process: a second interpreter costs seconds of imports
        main(["train", "--model"])
    assert bad.value.code == 2 and "--model" in capsys.readouterr().err


def test_demo_quick_writes_figures_metrics_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    for name in ("vae_samples.png", "vae_reconstructions.png", "vae_latent.png", "vae_loss.png", "metrics.csv"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "checkpoints").glob("*.pt"))
    text = capsys.readouterr().out
    assert "VAE (IWAE)" in text and str(out.resolve()) in text
    assert "demo: training a VAE on digits (3 epochs)" in text  # one line per stage


def _data_for(spec):
    return {"binary": "digits", "continuous": "digits-continuous", "points": "moons"}[spec.data_kinds[0]]


def _registered():
    from pyro_dgm import registry

    registry._load_all()
    return sorted(registry.MODELS)


@pytest.mark.parametrize("name", _registered())
def test_every_registered_model_trains_samples_and_evaluates(name, tmp_path, capsys):
    from pyro_dgm import registry

    spec = registry.get_model(name)
    data = _data_for(spec)
    run = tmp_path / name
    assert main(["train", "--model", name, "--data", data, "--steps", "2", "--batch-size", "16",
                 "--out", str(run), "--no-progress"]) == 0
    assert main(["sample", "--run", str(run), "--num", "4"]) == 0
    samples = torch.load(run / "samples.pt", weights_only=True)
    assert samples.shape[0] == 4 and torch.isfinite(samples).all()
    if spec.family == "ebm" and data != "moons":
        return
    assert main(["evaluate", "--run", str(run), "--num-particles", "2"]) == 0
    out = capsys.readouterr().out
    assert ("MMD^2" in out or "Frechet" in out) if spec.family == "gan" else "bits/dim" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", _registered())
def test_every_registered_model_trains_on_cuda(name, tmp_path):
    from pyro_dgm import registry

    spec = registry.get_model(name)
    assert main(["train", "--model", name, "--data", _data_for(spec), "--steps", "2", "--batch-size", "16",
                 "--device", "cuda", "--out", str(tmp_path / name), "--no-progress"]) == 0
