import gzip
import re
import struct

import numpy as np
import pytest
import torch

from pyro_dgm import data
from pyro_dgm.registry import get_data


def test_digits_splits_are_fixed_disjoint_and_complete():
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().images).reshape(-1, 64)
    parts = {s: data.load_digits(s, kind="levels") for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1257, 180, 360]
    allx = torch.cat(list(parts.values()))
    # every image appears exactly as often as in the original set
    key = lambda t: sorted(map(tuple, t.int().tolist()))  # noqa: E731
    assert key(allx) == key(raw)
    assert torch.equal(data.load_digits("test", kind="levels"), parts["test"])
    assert not torch.equal(data.load_digits("test", kind="levels", seed=1), parts["test"])
    y = data.load_digits_labels("test")
    assert y.shape == (360,) and set(y.tolist()) == set(range(10))


def test_binarized_and_dequantized_digits():
    levels = data.load_digits("train", kind="levels")
    b = data.load_digits("train")
    assert torch.equal(b, (levels >= 8).float())
    c = data.load_digits("train", kind="continuous")
    assert 0 <= c.min() and c.max() < 1
    assert torch.equal((c * 17).floor(), levels)  # dequantization keeps the level
    assert data.load_digits("val", image=True).shape == (180, 1, 8, 8)
    with pytest.raises(ValueError, match="split: expected one of"):
        data.load_digits("dev")
    with pytest.raises(ValueError, match="kind: expected"):
        data.load_digits(kind="grey")


@pytest.mark.parametrize("name", data.TOY_NAMES)
def test_toys(name):
    x = data.toy_2d(name, 500, seed=0)
    assert x.shape == (500, 2) and torch.isfinite(x).all()
    assert torch.equal(x, data.toy_2d(name, 500, seed=0))
    assert x.abs().max() < 6


def test_gaussian_mixture_toys_sit_on_their_modes():
    for name in ("8gaussians", "25gaussians"):
        x = data.toy_2d(name, 4000, seed=0)
        centers = data.mode_centers(name)
        d = torch.cdist(x, centers).min(1).values
        assert (d < 3 * data.TOY_STD[name]).float().mean() > 0.98
        assert len(torch.cdist(x, centers).argmin(1).unique()) == len(centers)


def _write_idx(path, images, gz):
    header = struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", *images.shape)
    payload = header + images.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(30, 28, 28))
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        _write_idx(tmp_path / (stem + (".gz" if gz else "")), imgs, gz)
    grey = data.load_mnist(tmp_path, "train", binarize=None)
    assert grey.shape == (30, 784)
    assert torch.allclose(grey, torch.as_tensor(imgs.reshape(30, -1) / 255.0, dtype=torch.float32))
    static = data.load_mnist(tmp_path, "test", binarize="static", seed=0)
    assert torch.equal(static, data.load_mnist(tmp_path, "test", binarize="static", seed=0))
    assert set(static.unique().tolist()) <= {0.0, 1.0}
    dyn = data.load_mnist(tmp_path, "train", binarize="dynamic", flatten=False)
    assert dyn[0].shape == (1, 28, 28)
    torch.manual_seed(0)
    a = torch.stack([dyn[0] for _ in range(200)]).mean(0)
    assert torch.allclose(a, torch.as_tensor(imgs[0] / 255.0, dtype=torch.float32), atol=0.15)


def test_mnist_npz_and_missing_files(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((5, 28, 28), np.uint8), x_test=np.ones((3, 28, 28), np.uint8) * 255)
    assert data.load_mnist(tmp_path, "test", binarize=None).sum() == 3 * 784
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no MNIST train images found; looked for .*train-images-idx3-ubyte"):
        data.load_mnist(empty, "train")
    with pytest.raises(ValueError, match="data_dir: MNIST is read from local files"):
        get_data("mnist").load("train", 0, None)
    floats = np.full((2, 28, 28), 0.5, np.float32)  # an .npz of pixels already in [0, 1] (before: / 255 again)
    np.savez(tmp_path / "mnist.npz", x_train=floats, x_test=floats)
    assert torch.allclose(data.load_mnist(tmp_path, "test", binarize=None), torch.full((2, 784), 0.5))


def _idx_bytes(images):
    return struct.pack(">HBB", 0, 8, images.ndim) + struct.pack(f">{images.ndim}I", *images.shape) + images.tobytes()


IMAGES = _idx_bytes(np.zeros((3, 28, 28), np.uint8))
BAD_MNIST = {  # name: (file name, content, what the error says)
    "truncated": ("train-images-idx3-ubyte", IMAGES[:-100], r"has 2252 bytes of data, but its header's shape "
                                                            r"3 x 28 x 28 needs 2352: the file is truncated"),
    "trailing bytes": ("train-images-idx3-ubyte", IMAGES + b"\0", "has 2353 bytes of data"),
    "empty": ("train-images-idx3-ubyte", b"", "not an IDX file of unsigned bytes: its header magic is missing"),
    "two bytes": ("train-images-idx3-ubyte", b"\0\0", "not an IDX file of unsigned bytes: its header magic is 0000"),
    "short header": ("train-images-idx3-ubyte", IMAGES[:9], "is truncated: 9 bytes, less than its 16-byte header"),
    "html page": ("train-images-idx3-ubyte", b"<html>404</html>", "its header magic is 3c68746d"),
    "truncated gzip": ("train-images-idx3-ubyte.gz", gzip.compress(IMAGES)[:-20], "is a truncated or corrupt gzip"),
    "labels": ("train-images-idx3-ubyte", _idx_bytes(np.zeros(3, np.uint8)), "holds an array of shape 3; MNIST "
                                                                            "images are N x 28 x 28"),
    "32 x 32": ("train-images-idx3-ubyte", _idx_bytes(np.zeros((3, 32, 32), np.uint8)), "shape 3 x 32 x 32; MNIST"),
    "corrupt npz": ("mnist.npz", b"PK\x03\x04garbage", "is not a readable .npz file"),
    "not an npz": ("mnist.npz", b"hello", "is not a readable .npz file"),
}


@pytest.mark.parametrize("case", BAD_MNIST)
def test_a_bad_mnist_file_is_one_value_error_naming_the_file_and_the_fault(case, tmp_path, capsys):
    from pyro_dgm.cli import main

    name, content, message = BAD_MNIST[case]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=f"data_dir: '{re.escape(str(tmp_path / name))}' .*{message}"):
        data.load_mnist(tmp_path)
    assert main(["train", "--model", "bernoulli", "--data", "mnist", "--data-dir", str(tmp_path), "--steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-dgm train: error: data_dir: ") and str(tmp_path / name) in err


@pytest.mark.parametrize("name, content", [("train-images-idx3-ubyte.gz", IMAGES),
                                           ("train-images-idx3-ubyte", gzip.compress(IMAGES))],
                         ids=["plain named .gz", "gzipped named plain"])
def test_an_idx_file_is_read_by_its_content_whatever_its_suffix(name, content, tmp_path):
    (tmp_path / name).write_bytes(content)
    assert data.load_mnist(tmp_path, binarize=None).shape == (3, 784)


def test_checkerboard_fills_only_the_dark_squares():
    x = data.toy_2d("checkerboard", 20000, seed=0)
    assert x.min() >= -4 and x.max() <= 4
    cells = ((x + 4) // 2).long()  # 4x4 board of 2x2 squares
    counts = torch.zeros(4, 4)
    counts.index_put_((cells[:, 0].clamp(max=3), cells[:, 1].clamp(max=3)), torch.ones(len(x)), accumulate=True)
    occupied = counts > 0
    assert int(occupied.sum()) == 8
    assert bool((occupied ^ occupied.roll(1, 0)).all())  # neighbours alternate
    assert counts[occupied].min() > 0.8 * len(x) / 8


def test_dynamic_dequantized_draws_fresh_noise_inside_each_level_and_trains_with_labels():
    import pyro_dgm
    from pyro_dgm.data import DynamicDequantized, load_digits, load_digits_labels
    from pyro_dgm.models import DiagonalGaussian

    levels, y = load_digits("train", "levels")[:64], load_digits_labels("train")[:64]
    ds = DynamicDequantized(levels, 17, y)
    draws = torch.stack([ds[5][0] for _ in range(2000)])
    assert torch.equal((draws * 17).floor(), levels[5].expand_as(draws))  # always inside the level's bin
    assert (draws.std(0) - 1 / (17 * 12 ** 0.5)).abs().max() < 0.004  # U[0, 1) / 17 noise, new at every access
    assert torch.equal(ds[5][1], y[5]) and isinstance(DynamicDequantized(levels, 17)[0], torch.Tensor)
    m = DiagonalGaussian(64)
    r = pyro_dgm.fit(m.model, None, DynamicDequantized(levels, 17), steps=3, batch_size=32, progress=False)
    assert len(r.losses["model"]) == 3
    for bad, match in [(lambda: DynamicDequantized(levels + 0.5, 17), "integers"),
                       (lambda: DynamicDequantized(levels, 16), "integers in 0..15"),
                       (lambda: DynamicDequantized(levels, 17, y[:3]), "64 rows")]:
        with pytest.raises(ValueError, match=match):
            bad()


def test_dynamic_dequantized_feeds_a_plain_pyro_program_with_its_labels():
    import pyro
    import pyro.distributions as dist

    import pyro_dgm
    from pyro_dgm.data import DynamicDequantized, load_digits, load_digits_labels

    levels, y = load_digits("train", "levels"), load_digits_labels("train")
    seen = []

    def model(x, y):
        seen.append(y.shape)
        loc = pyro.param("loc", torch.zeros(64))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    pyro.clear_param_store()
    pyro_dgm.fit(model, None, DynamicDequantized(levels, 17, y), epochs=30, batch_size=256, lr=0.05,
                     progress=False)
    loc = pyro.param("loc")  # fit trains the param store's tensor in place
    target = ((levels + 0.5) / 17).mean(0)  # the mean of the dequantized pixels
    assert seen[0] == (256,) and (loc.detach() - target).abs().max() < 0.05
