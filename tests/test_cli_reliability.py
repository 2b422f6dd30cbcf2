"""The CLI with run folders that already hold a run, crashes while saving, and broken folders.

One small run (the Bernoulli baseline, two steps) is trained once; each test
works on its own copy.
"""

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from pyro_dgm import cli
from pyro_dgm.cli import main

TRAIN = ["train", "--model", "bernoulli", "--data", "digits", "--batch-size", "16", "--no-progress"]
RUN_FILES = ("run.json", "model.pt", "checkpoint.pt")
LEFTOVERS = (".model.pt.tmp", ".run.json.pending")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(TRAIN + ["--steps", "2", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run folder."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _contents(folder):
    """Every file in a folder, byte for byte."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def _one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"pyro-dgm {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _meta(run):
    return json.loads((run / "run.json").read_text())


# ------------------------------------------------------------------ 10: train over an existing run

@pytest.mark.parametrize("present", [RUN_FILES, ("run.json",), ("model.pt",)])
def test_train_refuses_a_folder_that_holds_a_run(present, run, capsys):
    for name in set(RUN_FILES) - set(present):
        (run / name).unlink()
    before = _contents(run)
    assert main(TRAIN + ["--steps", "1", "--out", str(run)]) == 2
    err = _one_line_error(capsys, "train")
    assert f"--out: {str(run)!r} already holds a run ({', '.join(present)})" in err
    assert "--resume" in err and "--overwrite" in err
    assert _contents(run) == before


def test_overwrite_trains_afresh_over_a_run(run, capsys):
    assert _meta(run)["steps"] == 2
    assert main(TRAIN + ["--steps", "1", "--out", str(run), "--overwrite"]) == 0
    assert _meta(run)["steps"] == 1
    assert main(TRAIN + ["--steps", "1", "--out", str(run), "--overwrite", "--resume"]) == 2
    assert "pass one of them" in _one_line_error(capsys, "train")


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "run without checkpoint.pt"])
def test_resume_with_nothing_to_resume_from_exits_2(case, run, tmp_path, capsys):
    out = {"missing folder": tmp_path / "nothing", "empty folder": tmp_path / "empty"}.get(case, run)
    if case == "empty folder":
        out.mkdir()
    if case == "run without checkpoint.pt":
        (run / "checkpoint.pt").unlink()
    before = _contents(out) if out.exists() else None
    assert main(TRAIN + ["--steps", "1", "--out", str(out), "--resume"]) == 2
    err = _one_line_error(capsys, "train")
    assert f"--resume: {str(out)!r} has no checkpoint.pt to resume from" in err
    assert (_contents(out) if out.exists() else None) == before


# ------------------------------------------------------------------ 11: model.pt and run.json together

def test_run_json_records_the_sha256_of_model_pt(run):
    meta = _meta(run)
    assert meta["weights_sha256"] == hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()
    assert not any((run / name).exists() for name in LEFTOVERS)


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_while_writing_weights():
    """Write half of the weights' temp file, then die."""
    write = cli._write_synced

    def torn(path, data):
        if path.name == ".model.pt.tmp":
            path.write_bytes(data[: len(data) // 2])
            _kill_self()
        write(path, data)

    cli._write_synced = torn


def _kill_before_renaming_to(name):
    """Die just before a rename onto ``name`` (fit's checkpoint renames pass through)."""
    replace = os.replace

    def install():
        def dying(src, dst):
            if Path(dst).name == name:
                _kill_self()
            replace(src, dst)

        os.replace = dying

    return install


def _run_in_killed_child(argv, install):
    """Fork, install the hook, run the CLI; return the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            install()
            main(argv)
        finally:
            os._exit(3)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the child training process hung")


@pytest.mark.parametrize("when, new_pair", [
    ("writing model.pt", False),
    ("renaming model.pt", False),
    ("renaming run.json", True),
])
def test_sigkill_while_saving_leaves_the_old_pair_or_the_new_one(when, new_pair, run, capsys):
    install = {"writing model.pt": lambda: _kill_while_writing_weights(),
               "renaming model.pt": _kill_before_renaming_to("model.pt"),
               "renaming run.json": _kill_before_renaming_to("run.json")}[when]
    old = _contents(run)
    resume = TRAIN + ["--steps", "4", "--out", str(run), "--resume"]
    status = _run_in_killed_child(resume, install)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status

    weights = (run / "model.pt").read_bytes()
    torch.load(run / "model.pt", weights_only=True)  # never torn
    meta, *_ = cli.load_run(run)
    assert meta["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    if new_pair:  # model.pt is new; the pending run.json that matches it is read
        assert meta["steps"] == 4 and weights != old["model.pt"]
    else:
        assert meta == json.loads(old["run.json"]) and meta["steps"] == 2
        assert (run / "run.json").read_bytes() == old["run.json"] and weights == old["model.pt"]
    assert main(["sample", "--run", str(run), "--num", "2"]) == 0

    # Resuming again completes the run and tidies what the kill left.
    assert main(resume) == 0
    assert _meta(run)["steps"] == 4
    assert not any((run / name).exists() for name in LEFTOVERS)
    assert cli.load_run(run)[0]["steps"] == 4


def test_sigkill_between_the_renames_of_a_first_run(tmp_path, capsys):
    run = tmp_path / "first"
    first = TRAIN + ["--steps", "2", "--out", str(run)]
    status = _run_in_killed_child(first, _kill_before_renaming_to("run.json"))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert not (run / "run.json").exists() and (run / ".run.json.pending").is_file()
    assert cli.load_run(run)[0]["steps"] == 2  # model.pt and its pending run.json
    assert main(first) == 2  # the folder holds a run now
    assert "already holds a run (model.pt, checkpoint.pt)" in _one_line_error(capsys, "train")
    assert main(first + ["--resume"]) == 0
    assert _meta(run)["steps"] == 2 and not (run / ".run.json.pending").exists()


def test_error_while_saving_keeps_the_old_pair_and_no_temp_files(run, monkeypatch):
    old = _contents(run)
    replace = os.replace

    def failing(src, dst):
        if Path(dst).name == "model.pt":
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space left"):
        main(TRAIN + ["--steps", "3", "--out", str(run), "--resume"])
    now = _contents(run)
    assert now.pop("checkpoint.pt") and now == {k: v for k, v in old.items() if k != "checkpoint.pt"}
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)


# ------------------------------------------------------------------ 12: sample --out and the run's files

@pytest.mark.parametrize("out, clobbered", [
    ("model.png", "model.pt"),        # the tensor beside model.png is model.pt
    ("model", "model.pt"),
    ("run.json", "run.json"),
    ("checkpoint.png", "checkpoint.pt"),
    ("notes.txt", "notes.txt"),       # a file the sampler did not write
    ("weights.png", "weights.pt"),    # a .pt that is not a sample tensor
])
def test_sample_out_never_replaces_the_runs_files(out, clobbered, run, capsys):
    (run / "notes.txt").write_text("keep me\n")
    torch.save({"w": torch.ones(2)}, run / "weights.pt")
    before = _contents(run)
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(run / out)]) == 2
    err = _one_line_error(capsys, "sample")
    assert f"would replace a file of the run in {str(run)!r}" in err and clobbered in err
    assert _contents(run) == before


def test_sample_out_refuses_a_pt_path_and_another_runs_weights(run, trained, capsys):
    before = _contents(run)
    assert main(["sample", "--run", str(trained), "--num", "2", "--out", str(run / "samples.pt")]) == 2
    assert "should be an image path" in _one_line_error(capsys, "sample")
    assert main(["sample", "--run", str(trained), "--num", "2", "--out", str(run / "model.png")]) == 2
    assert "model.pt" in _one_line_error(capsys, "sample")
    assert _contents(run) == before


def test_sample_out_replaces_earlier_samples(run):
    weights = (run / "model.pt").read_bytes()
    for _ in range(2):
        assert main(["sample", "--run", str(run), "--num", "3"]) == 0
        assert main(["sample", "--run", str(run), "--num", "3", "--out", str(run / "grid.png")]) == 0
    assert torch.load(run / "grid.pt", weights_only=True).shape == (3, 64)
    assert (run / "samples.png").read_bytes().startswith(b"\x89PNG")
    assert (run / "model.pt").read_bytes() == weights


@pytest.mark.parametrize("change", [["--data", "moons"], ["--seed", "3"]])
def test_resume_refuses_other_data_or_another_seed_before_any_step(tmp_path, capsys, change):
    """8gaussians and moons have the same shapes: only the checkpoint's record of the run tells them apart."""
    run = tmp_path / "maf"
    base = ["train", "--model", "maf", "--data", "8gaussians", "--steps", "2", "--batch-size", "32", "--no-progress",
            "--out", str(run)]
    assert main(base) == 0
    before = _contents(run)
    again = base[:base.index("--steps")] + ["--steps", "4"] + base[base.index("--batch-size"):]
    swapped = [change[1] if a == "8gaussians" and change[0] == "--data" else a for a in again]
    if change[0] == "--seed":
        swapped += change
    assert main(swapped + ["--resume"]) == 2
    err = _one_line_error(capsys, "train")
    assert "the checkpoint was trained with" in err and change[0] in err and "--overwrite" in err
    assert _contents(run) == before
    assert main(again + ["--resume"]) == 0  # the same settings resume


@pytest.mark.parametrize("dies_in", ["figure", "tensor"])
def test_a_sample_that_dies_while_writing_leaves_every_file_whole(run, monkeypatch, dies_in):
    assert main(["sample", "--run", str(run), "--num", "3"]) == 0
    before = {name: (run / name).read_bytes() for name in ("samples.png", "samples.pt")}

    def torn(f):  # half a file, then the process is killed
        f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    if dies_in == "figure":
        import matplotlib.figure

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, f, **kw: torn(f))
    else:
        monkeypatch.setattr(torch, "save", lambda obj, f, **kw: torn(f))
    with pytest.raises(KeyboardInterrupt):
        main(["sample", "--run", str(run), "--num", "5"])
    assert (run / "samples.png").read_bytes() == before["samples.png"]
    if dies_in == "tensor":  # written first: nothing was replaced
        assert (run / "samples.pt").read_bytes() == before["samples.pt"]
    else:  # the new draws are there whole; the old picture stays until the new one is complete
        assert torch.load(run / "samples.pt", weights_only=True).shape == (5, 64)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ 13: broken run folders

def _set_meta(run, **changes):
    meta = {**_meta(run), **changes}
    (run / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


def _foreign_weights(run):
    """model.pt of another model; run.json updated to record it."""
    torch.save({"loc": torch.zeros(3)}, run / "model.pt")
    _set_meta(run, weights_sha256=hashlib.sha256((run / "model.pt").read_bytes()).hexdigest())


BROKEN = {
    "missing folder": (lambda run: shutil.rmtree(run), "does not exist"),
    "a file": (lambda run: shutil.rmtree(run) or run.write_text("x"), "is not a folder"),
    "empty folder": (lambda run: [p.unlink() for p in run.iterdir()], "has no run.json"),
    "no model.pt": (lambda run: (run / "model.pt").unlink(), "has run.json but no model.pt"),
    "truncated model.pt": (lambda run: (run / "model.pt").write_bytes((run / "model.pt").read_bytes()[:300]),
                           "is not the model.pt that run.json records"),
    "truncated legacy model.pt": (
        lambda run: _set_meta(run, weights_sha256=None) or (run / "model.pt").write_bytes(b"PK\x03\x04 torn"),
        "does not hold the weights of a 'bernoulli' model"),
    "foreign model.pt": (_foreign_weights, "does not hold the weights of a 'bernoulli' model"),
    "event_shape of another model": (lambda run: _set_meta(run, event_shape=[32]),
                                     "does not hold the weights of a 'bernoulli' model"),
    "bad JSON": (lambda run: (run / "run.json").write_text('{"model": "bernoulli",'), "is not valid JSON"),
    "not UTF-8": (lambda run: (run / "run.json").write_bytes(b"\xff\xfe{}"), "is not valid JSON"),
    "JSON list": (lambda run: (run / "run.json").write_text("[1, 2]"), "expected a JSON object"),
    "no event_shape": (lambda run: _set_meta(run, event_shape=None), "'event_shape' should be a list"),
    "unknown model": (lambda run: _set_meta(run, model="nope"), "model: unknown model 'nope'"),
    "unknown data": (lambda run: _set_meta(run, data="nope"), "data: unknown data set 'nope'"),
    "data the model does not take": (lambda run: _set_meta(run, data="moons"), "which it does not take"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_run_folder_is_a_one_line_error(case, run, capsys):
    breaks, message = BROKEN[case]
    breaks(run)
    assert main(["sample", "--run", str(run), "--num", "2"]) == 2
    err = _one_line_error(capsys, "sample")
    assert err.startswith("pyro-dgm sample: error: --run: ") and message in err, err
    assert not (run / "samples.pt").exists()


def test_evaluate_reports_a_broken_run_on_one_line(run, capsys):
    _set_meta(run, model="nope")
    assert main(["evaluate", "--run", str(run)]) == 2
    err = _one_line_error(capsys, "evaluate")
    assert f"--run: {str(run / 'run.json')!r}: model: unknown model 'nope'" in err


# ------------------------------------------------------------------ 14: file modes

def test_run_files_get_the_users_normal_mode(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(TRAIN + ["--steps", "1", "--out", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    for name in RUN_FILES:
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_train_stopped_by_sigint_says_that_resume_continues(tmp_path, monkeypatch, capsys):
    def interrupt(self, state):  # as Ctrl-C during a step
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli.RunIdentity, "on_step_end", interrupt, raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(TRAIN + ["--steps", "5", "--out", str(tmp_path / "run")])
    assert stopped.value.code == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert f"interrupted: the same command with --resume continues from {tmp_path / 'run' / 'checkpoint.pt'}" in err
    monkeypatch.undo()
    assert main(TRAIN + ["--steps", "5", "--out", str(tmp_path / "run"), "--resume"]) == 0
