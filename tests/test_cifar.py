"""CIFAR-10 from the user's files: both versions built tiny in tmp_path, values and labels checked exactly."""

import os
import pickle

import numpy as np
import pytest
import torch

from pyro_dgm import data
from pyro_dgm.registry import get_data

N = 4  # images per fake batch


def _batches(seed=0):
    """{stem: (uint8 images (N, 3072), labels (N,))} for the six batches of the archive."""
    rng = np.random.default_rng(seed)
    stems = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {s: (rng.integers(0, 256, (N, 3072), dtype=np.uint8), rng.integers(0, 10, N)) for s in stems}


def _write_bin(folder, batches):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (images, labels) in batches.items():
        records = np.concatenate([labels.astype(np.uint8)[:, None], images], 1)
        records.tofile(folder / f"{stem}.bin")


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (BINSTRING), as the archive's own cPickle files do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj) -> bytes:
    """Protocol 2 as Python 2 with numpy 1 wrote it: py2 strings and ``numpy.core.multiarray``."""
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _write_py(folder, batches, py2=True):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (images, labels) in batches.items():
        batch = {b"batch_label": stem.encode(), b"labels": labels.tolist(), b"data": images,
                 b"filenames": [b"img%d.png" % i for i in range(N)]}
        (folder / stem).write_bytes(_py2_pickle(batch) if py2 else pickle.dumps(batch, protocol=5))


def _expected(batches, stems):
    images = np.concatenate([batches[s][0] for s in stems]).reshape(-1, 3, 32, 32)
    return torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(np.concatenate([batches[s][1] for s in stems]))


@pytest.mark.parametrize("version", ["bin", "py2", "py5"])
def test_cifar_values_labels_and_kinds(tmp_path, version):
    batches = _batches()
    folder = tmp_path / ("cifar-10-batches-bin" if version == "bin" else "cifar-10-batches-py")
    if version == "bin":
        _write_bin(folder, batches)
    else:
        _write_py(folder, batches, py2=version == "py2")
    train_stems = [f"data_batch_{i}" for i in range(1, 6)]
    levels, labels = _expected(batches, train_stems)
    x = data.load_cifar10(tmp_path, "train", kind="levels")
    assert x.shape == (5 * N, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, levels)
    assert torch.equal(data.load_cifar10_labels(tmp_path, "train"), labels)
    test_levels, test_labels = _expected(batches, ["test_batch"])
    assert torch.equal(data.load_cifar10(tmp_path, "test", kind="levels", flatten=True), test_levels.reshape(N, -1))
    assert torch.equal(data.load_cifar10_labels(tmp_path, "test"), test_labels)
    # pixel 0 of channel 1 (green) is byte 1024 of a record
    assert x[0, 1, 0, 0] == batches["data_batch_1"][0][0, 1024]
    grey = data.load_cifar10(tmp_path, "train", kind="grey")
    assert torch.allclose(grey, levels / 255)
    cont = data.load_cifar10(tmp_path, "train", kind="continuous", seed=0)
    u = cont * 256 - levels  # (k + u) / 256 with u uniform in [0, 1)
    assert u.min() >= 0 and u.max() <= 1 and abs(u.mean() - 0.5) < 0.02
    assert torch.equal(cont, data.load_cifar10(tmp_path, "train", kind="continuous", seed=0))
    assert not torch.equal(cont, data.load_cifar10(tmp_path, "train", kind="continuous", seed=1))
    binary = data.load_cifar10(tmp_path, "train", kind="binary", seed=0)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert binary[levels == 0].sum() == 0 and binary[levels == 255].min() == 1


def test_cifar_registered_splits(tmp_path):
    batches = _batches(1)
    _write_bin(tmp_path, batches)  # the .bin files straight in data_dir
    spec = get_data("cifar10")
    assert spec.kind == "continuous"
    train, val = spec.load("train", 0, tmp_path, image=True), spec.load("val", 0, tmp_path, image=True)
    assert train.shape == (4 * N, 3, 32, 32) and val.shape == (N, 3, 32, 32)
    levels, _ = _expected(batches, ["data_batch_5"])
    assert ((val * 256 - levels) >= 0).all() and ((val * 256 - levels) <= 1).all()
    assert spec.load("test", 0, tmp_path).shape == (N, 3072)


def test_cifar_missing_files_and_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"no CIFAR-10 train images found; looked for .*data_batch_1\.bin"):
        data.load_cifar10(tmp_path, "train")
    with pytest.raises(ValueError, match="data_dir: CIFAR-10 is read from local files"):
        get_data("cifar10").load("train", 0, None)
    with pytest.raises(ValueError, match="kind: expected one of"):
        data.load_cifar10(tmp_path, kind="ints")
    with pytest.raises(ValueError, match="split: expected 'train' or 'test'"):
        data.load_cifar10(tmp_path, "val")
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="not a CIFAR-10 binary batch"):
        data.load_cifar10(tmp_path, "test")


class _Evil:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_cifar_pickle_that_names_other_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    batch = {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8), b"payload": _Evil()}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(ValueError, match=r"not a CIFAR-10 python batch \(refused to load the global (posix|os)\.system"):
        data.load_cifar10(tmp_path, "test")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "test_batch").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match="holds a list, not a CIFAR-10 batch dict"):
        data.load_cifar10(tmp_path, "test")


@pytest.fixture
def cifar_dir(tmp_path):
    _write_bin(tmp_path / "cifar", _batches())
    return tmp_path / "cifar"


def _train(model, folder, cifar_dir):
    from pyro_dgm.cli import main

    argv = ["train", "--model", model, "--data", "cifar10", "--data-dir", str(cifar_dir), "--steps", "2",
            "--batch-size", "8", "--no-progress", "--out", str(folder)]
    assert main(argv) == 0


def test_a_flat_model_on_cifar_samples_a_grid_of_colour_images(tmp_path, cifar_dir, monkeypatch, capsys):
    from pyro_dgm import plots
    from pyro_dgm.cli import main

    _train("vae", tmp_path / "vae", cifar_dir)
    grids, sample_grid = [], plots.sample_grid
    monkeypatch.setattr(plots, "sample_grid", lambda *a, **k: grids.append(sample_grid(*a, **k)) or grids[-1])
    assert main(["sample", str(tmp_path / "vae"), "--num", "4"]) == 0, capsys.readouterr().err
    assert torch.load(tmp_path / "vae" / "samples.pt", weights_only=True).shape == (4, 3072)
    assert grids[0].axes[0].images[0].get_array().shape == (32, 4 * 33 - 1, 3)  # 4 RGB images of 32 x 32


def test_a_gan_on_cifar_evaluates_by_mmd_and_says_the_classifier_is_for_digits(tmp_path, cifar_dir, capsys):
    from pyro_dgm.cli import main

    _train("gan", tmp_path / "gan", cifar_dir)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "gan")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "MMD^2" in out and "between 4 samples and the data, in pixel space" in out
    assert "for the digits only" in out


def test_a_relative_data_dir_is_recorded_absolute_and_evaluate_can_override_it(tmp_path, cifar_dir, monkeypatch,
                                                                              capsys):
    import json

    from pyro_dgm.cli import main

    monkeypatch.chdir(cifar_dir.parent)
    _train("vae", tmp_path / "vae", "cifar")  # --data-dir cifar, relative to the working folder
    assert json.loads((tmp_path / "vae" / "run.json").read_text())["data_dir"] == str(cifar_dir.resolve())
    monkeypatch.chdir(tmp_path / "vae")
    assert main(["evaluate", str(tmp_path / "vae"), "--num-particles", "2"]) == 0, capsys.readouterr().err
    cifar_dir.rename(tmp_path / "moved")
    assert main(["evaluate", str(tmp_path / "vae"), "--num-particles", "2"]) == 2
    assert main(["evaluate", str(tmp_path / "vae"), "--num-particles", "2", "--data-dir", "../moved"]) == 0
    assert "bits/dim" in capsys.readouterr().out


def test_a_data_dir_under_home_is_expanded(tmp_path, cifar_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.load_cifar10("~/cifar", "test").shape == (N, 3, 32, 32)
    assert get_data("cifar10").load("test", 0, "~/cifar").shape == (N, 3072)


def test_cifar_pickles_written_by_python_3_at_protocol_2_load(tmp_path):
    batches = _batches(2)
    for stem, (images, labels) in batches.items():
        with open(tmp_path / stem, "wb") as f:
            pickle.dump({b"data": images, b"labels": labels.tolist()}, f, protocol=2)  # bytes as _codecs.encode
    assert b"_codecs" in (tmp_path / "test_batch").read_bytes()
    levels, labels = _expected(batches, ["test_batch"])
    assert torch.equal(data.load_cifar10(tmp_path, "test", kind="levels"), levels)
    assert torch.equal(data.load_cifar10_labels(tmp_path, "test"), labels)


def test_cifar_pickle_naming_another_codecs_function_is_refused(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"\x80\x02c_codecs\ndecode\nq\x00.")
    with pytest.raises(ValueError, match="refused to load the global _codecs.decode"):
        data.load_cifar10(tmp_path, "test")
