"""Data sets: scikit-learn's digits (bundled), 2-D toys (generated), MNIST and CIFAR-10 from local files.

Nothing is downloaded. Every loader returns float tensors of shape
``(N, *event_shape)``; a seed fixes both the split and any randomness.

Digits split (``seed`` permutes the 1,797 images, then): the first 1,257 are
``"train"``, the next 180 ``"val"`` and the last 360 ``"test"``.
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import torch

from .registry import register_data
from .checks import count

__all__ = [
    "load_digits", "load_digits_labels", "binarize", "dequantize", "toy_2d", "TOY_NAMES", "mode_centers",
    "load_mnist", "DynamicBinarized", "DynamicDequantized", "DIGITS_SPLIT", "split_indices", "load_cifar10",
    "load_cifar10_labels", "toy_log_prob",
]

DIGITS_SPLIT = {"train": (0, 1257), "val": (1257, 1437), "test": (1437, 1797)}
DIGITS_LEVELS = 17  # pixel values 0..16


def binarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """1.0 where ``x >= threshold``, else 0.0."""
    return (x >= threshold).to(torch.get_default_dtype())


def dequantize(levels: torch.Tensor, num_levels: int, generator=None) -> torch.Tensor:
    """Uniform dequantization: integer levels k in {0..L-1} -> (k + u) / L in [0, 1).

    A continuous density p on [0, 1)^D fitted to these values bounds the
    discrete log-likelihood: log P(k) >= E_u[log p((k + u)/L)] - D log L.
    """
    u = torch.rand(levels.shape, generator=generator, dtype=torch.get_default_dtype())
    return (levels.to(u.dtype) + u) / num_levels


def split_indices(n: int, split: str, seed: int, bounds: dict) -> torch.Tensor:
    if split not in bounds:
        raise ValueError(f"split: expected one of {sorted(bounds)}, got {split!r}")
    g = torch.Generator().manual_seed(int(seed))
    lo, hi = bounds[split]
    return torch.randperm(n, generator=g)[lo:hi]


def load_digits(split: str = "train", kind: str = "binary", seed: int = 0, flatten: bool = True,
                image: bool = False) -> torch.Tensor:
    """scikit-learn's 8x8 handwritten digits.

    Args:
        split: "train" (1,257), "val" (180) or "test" (360), see ``DIGITS_SPLIT``.
        kind: "binary" (pixel >= 8 -> 1), "continuous" (uniformly dequantized
            to [0, 1), with a fixed noise draw per ``seed``) or "levels"
            (the raw integers 0..16 as floats).
        flatten: shape (N, 64); else (N, 1, 8, 8) (``image=True`` is the same).

    Example::

        >>> from pyro_dgm.data import load_digits
        >>> load_digits("test").shape
        torch.Size([360, 64])
    """
    from sklearn.datasets import load_digits as _sk_digits

    if kind not in ("binary", "continuous", "levels"):
        raise ValueError(f"kind: expected 'binary', 'continuous' or 'levels', got {kind!r}")
    raw = torch.as_tensor(_sk_digits().images, dtype=torch.get_default_dtype())  # (1797, 8, 8)
    raw = raw[split_indices(raw.shape[0], split, seed, DIGITS_SPLIT)]
    if kind == "binary":
        x = binarize(raw, 8.0)
    elif kind == "continuous":
        g = torch.Generator().manual_seed(int(seed) + {"train": 1, "val": 2, "test": 3}[split])
        x = dequantize(raw, DIGITS_LEVELS, generator=g)
    else:
        x = raw
    if image or not flatten:
        return x.unsqueeze(1)
    return x.reshape(x.shape[0], -1)


def load_digits_labels(split: str = "train", seed: int = 0) -> torch.Tensor:
    """The class (0-9) of each image of ``load_digits(split, seed=seed)``, in the same order."""
    from sklearn.datasets import load_digits as _sk_digits

    y = torch.as_tensor(_sk_digits().target)
    return y[split_indices(y.shape[0], split, seed, DIGITS_SPLIT)]


# ---------------------------------------------------------------- 2-D toys

TOY_NAMES = ("8gaussians", "25gaussians", "moons", "circles", "checkerboard", "spirals")


def mode_centers(name: str) -> torch.Tensor:
    """Centers of the mixture components of "8gaussians" (radius 2) and "25gaussians" (grid -4..4)."""
    if name == "8gaussians":
        angles = torch.arange(8) * (2 * math.pi / 8)
        return 2.0 * torch.stack([angles.cos(), angles.sin()], -1)
    if name == "25gaussians":
        g = torch.arange(-4.0, 5.0, 2.0)
        return torch.cartesian_prod(g, g)
    raise ValueError(f"name: only '8gaussians' and '25gaussians' have modes, got {name!r}")


#: Standard deviation of each component of the Gaussian-mixture toys.
TOY_STD = {"8gaussians": 0.1, "25gaussians": 0.1}


def toy_2d(name: str, n: int = 2000, seed: int = 0, noise: float | None = None) -> torch.Tensor:
    """Sample ``n`` points of a 2-D toy distribution, shape (n, 2).

    ``name`` is one of ``TOY_NAMES``: "8gaussians" (8 modes on a circle of
    radius 2, std 0.1), "25gaussians" (a 5x5 grid at -4..4, std 0.1), "moons",
    "circles", "checkerboard" (uniform on the 8 dark squares of a 4x4 board
    on [-4, 4]^2: the best possible NLL is log 32 nats) and "spirals".
    """
    if name not in TOY_NAMES:
        raise ValueError(f"name: unknown toy {name!r}; expected one of {TOY_NAMES}")
    count("n", n)
    g = torch.Generator().manual_seed(int(seed))
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    if name in TOY_STD:
        centers = mode_centers(name)
        std = TOY_STD[name] if noise is None else noise
        idx = torch.randint(len(centers), (n,), generator=g)
        return centers[idx] + std * randn(n, 2)
    if name == "moons":
        from sklearn.datasets import make_moons
        x, _ = make_moons(n, noise=0.05 if noise is None else noise, random_state=int(seed))
        return torch.as_tensor((x - [0.5, 0.25]) * 2.0, dtype=torch.get_default_dtype())
    if name == "circles":
        from sklearn.datasets import make_circles
        x, _ = make_circles(n, factor=0.5, noise=0.05 if noise is None else noise, random_state=int(seed))
        return torch.as_tensor(x * 3.0, dtype=torch.get_default_dtype())
    if name == "checkerboard":
        # 8 of the 16 unit squares of [-2, 2]^2, alternating like a chess board, scaled to [-4, 4]^2
        x1 = rand(n) * 4 - 2
        x2 = rand(n) - 2 * torch.randint(0, 2, (n,), generator=g).float() + (x1.floor() % 2)
        return 2 * torch.stack([x1, x2], -1)
    # spirals: two interleaved arms
    t = torch.sqrt(rand(n)) * 3 * math.pi
    arm = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    r = t / (3 * math.pi) * 4
    pts = torch.stack([r * torch.cos(t), r * torch.sin(t)], -1) * arm.unsqueeze(-1)
    return pts + (0.1 if noise is None else noise) * randn(n, 2)


#: The toys whose true density :func:`toy_log_prob` knows in closed form.
TOY_DENSITIES = ("8gaussians", "25gaussians", "checkerboard")


def toy_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """The true log density of a 2-D toy at ``x`` (shape ``(n, 2)``), in nats: the mixture of
    Gaussians of "8gaussians"/"25gaussians", or ``-log 32`` on the dark squares of "checkerboard"
    (``-inf`` off them). The mean of ``-toy_log_prob`` over test points is the best NLL any model reaches.

    Example::

        >>> x = toy_2d("checkerboard", 5)
        >>> toy_log_prob("checkerboard", x)
        tensor([-3.4657, -3.4657, -3.4657, -3.4657, -3.4657])
    """
    if name not in TOY_DENSITIES:
        raise ValueError(f"name: the true density is known for {TOY_DENSITIES}, not {name!r}")
    if name in TOY_STD:
        centers = mode_centers(name).to(x)
        components = dist.Normal(centers, TOY_STD[name]).to_event(1)
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(len(centers), device=x.device)),
                                         components)
        return mixture.log_prob(x)
    inside = (x.abs() < 4).all(-1)
    dark = ((torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2 == 0) & inside
    return torch.where(dark, torch.full_like(x[:, 0], -math.log(32.0)), torch.full_like(x[:, 0], -math.inf))


# ---------------------------------------------------------------- MNIST files

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


MNIST_SIDE = 28
GZIP_MAGIC = b"\x1f\x8b"


def _file_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed if it is gzipped (told by its first bytes, whatever its name)."""
    data = path.read_bytes()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"data_dir: {str(path)!r} is a truncated or corrupt gzip file ({err})") from None


def _read_idx(path: Path) -> np.ndarray:
    """The uint8 array of an IDX file; ValueError naming the file and what is wrong (magic, header, length)."""
    data = _file_bytes(path)
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"data_dir: {str(path)!r} is not an IDX file of unsigned bytes: its header magic is "
                         f"{data[:4].hex() or 'missing (empty file)'}, expected 0000080N (N dimensions)")
    ndim = data[3]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f"data_dir: {str(path)!r} is truncated: {len(data)} bytes, less than its {start}-byte header")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    if len(data) != start + math.prod(shape):
        raise ValueError(f"data_dir: {str(path)!r} has {len(data) - start} bytes of data, but its header's shape "
                         f"{' x '.join(map(str, shape))} needs {math.prod(shape)}: the file is truncated or damaged")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape)


def _mnist_images(images: np.ndarray, path: Path) -> np.ndarray:
    """``images`` if they are N x 28 x 28; else a ValueError naming the file (a labels file, other images)."""
    if images.ndim != 3 or images.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise ValueError(f"data_dir: {str(path)!r} holds an array of shape {' x '.join(map(str, images.shape))}; "
                         f"MNIST images are N x {MNIST_SIDE} x {MNIST_SIDE}")
    return images


def _unit_interval(images: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1]: bytes / 255; floats already in [0, 1] (an .npz written by another loader) as they are."""
    if np.issubdtype(images.dtype, np.floating) and images.size and 0.0 <= images.min() and images.max() <= 1.0:
        return images.astype(np.float32)
    return images.astype(np.float32) / 255.0


def _read_npz(npz: Path, key: str) -> np.ndarray:
    try:
        with np.load(npz) as f:
            keys = sorted(f.files)
            images = f[key] if key in keys else None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"data_dir: {str(npz)!r} is not a readable .npz file ({err})") from None
    if images is None:
        raise ValueError(f"data_dir: {str(npz)!r} has no array {key!r} (keys: {keys})")
    return images


def _find_mnist(data_dir: Path, split: str, fashion: bool) -> np.ndarray:
    stem = _MNIST_FILES[split][0]
    candidates = [data_dir / stem, data_dir / f"{stem}.gz", data_dir / stem.replace("-idx3", ".idx3")]
    for c in candidates:
        if c.is_file():
            return _mnist_images(_read_idx(c), c)
    npz = data_dir / ("fashion-mnist.npz" if fashion else "mnist.npz")
    if npz.is_file():
        return _mnist_images(_read_npz(npz, "x_train" if split == "train" else "x_test"), npz)
    looked = ", ".join(str(c) for c in candidates + [npz])
    raise ValueError(
        f"data_dir: no {'Fashion-MNIST' if fashion else 'MNIST'} {split} images found; looked for {looked}. "
        "pyro_dgm downloads nothing: put the IDX files (gzipped or not) or an .npz with x_train/x_test there"
    )


class DynamicBinarized(torch.utils.data.Dataset):
    """Grey images in [0, 1] binarized afresh by a Bernoulli draw at every access."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return torch.bernoulli(self.images[i])


class DynamicDequantized(torch.utils.data.Dataset):
    """Integer levels dequantized afresh at every access, ``(k + u) / L`` with a new ``u ~ U[0, 1)^D``.

    A continuous density trained on one fixed draw (:func:`dequantize`) can
    fit that draw's noise; with a new draw each time it cannot. On the 8x8
    digits a conditional flow's validation NLL went from -78.86 to -85.15
    nats (``benchmarks/controlled.py``). Further tensors (labels) are returned
    beside x, row for row, so ``fit`` calls ``model(x, y)``.

    Args:
        levels: integer levels ``(N, ...)`` in 0..L-1 (``load_digits(split, "levels")``).
        num_levels: L.
        *extra: tensors with N rows each.
    """

    def __init__(self, levels: torch.Tensor, num_levels: int, *extra: torch.Tensor):
        count("num_levels", num_levels, 2)
        integers = levels.dim() >= 1 and torch.equal(levels, levels.round())
        if not integers or levels.min() < 0 or levels.max() >= num_levels:
            raise ValueError(f"levels: expected integers in 0..{num_levels - 1}")
        if any(t.shape[0] != levels.shape[0] for t in extra):
            raise ValueError(f"extra: every tensor needs {levels.shape[0]} rows, got {[t.shape[0] for t in extra]}")
        self.levels, self.num_levels, self.extra = levels.to(torch.get_default_dtype()), num_levels, extra

    def __len__(self):
        return self.levels.shape[0]

    def __getitem__(self, i):
        x = (self.levels[i] + torch.rand(self.levels.shape[1:])) / self.num_levels
        return (x, *(t[i] for t in self.extra)) if self.extra else x


def load_mnist(data_dir, split: str = "train", binarize: str | None = "static", fashion: bool = False,
               seed: int = 0, flatten: bool = True):
    """MNIST or Fashion-MNIST from files the user already has.

    Args:
        data_dir: folder (``~`` expanded) with ``train-images-idx3-ubyte[.gz]`` and
            ``t10k-images-idx3-ubyte[.gz]``, or ``mnist.npz`` / ``fashion-mnist.npz``.
        split: "train" or "test".
        binarize: "static" (one Bernoulli draw per pixel, fixed by ``seed``),
            "dynamic" (a Dataset that redraws at every access), or None
            (grey levels in [0, 1]).
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if binarize not in ("static", "dynamic", None):
        raise ValueError(f"binarize: expected 'static', 'dynamic' or None, got {binarize!r}")
    if data_dir is None:
        raise ValueError("data_dir: MNIST is read from local files; pass the folder that holds them")
    raw = _find_mnist(Path(data_dir).expanduser(), split, fashion)
    x = torch.as_tensor(_unit_interval(raw))
    x = x.reshape(x.shape[0], -1) if flatten else x.reshape(x.shape[0], 1, 28, 28)
    if binarize == "static":
        g = torch.Generator().manual_seed(int(seed))
        return torch.bernoulli(x, generator=g)
    if binarize == "dynamic":
        return DynamicBinarized(x)
    return x


# ---------------------------------------------------------------- CIFAR-10 files

CIFAR_SHAPE = (3, 32, 32)
CIFAR_LEVELS = 256
_CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR_KINDS = ("continuous", "grey", "levels", "binary")


def _numpy_rebuilders() -> dict:
    """The only globals a pickled CIFAR-10 dict needs: numpy's array and dtype rebuilders (and ``_codecs.encode``).

    Files written by Python 2 name ``numpy.core.multiarray``; numpy 2 writes
    ``numpy._core``. The functions are taken from numpy's own ``__reduce_ex__``
    so that no private module is imported.
    """
    reconstruct = np.zeros(1).__reduce_ex__(2)[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1"): it builds bytes from a str, nothing else
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses every other global (no code runs)."""

    allowed = _numpy_rebuilders()

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise pickle.UnpicklingError(f"refused to load the global {module}.{name}")


def _read_cifar_pickle(path: Path):
    """(uint8 images (n, 3072), int64 labels (n,)) of one batch of the python version."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"data_dir: {str(path)!r} is not a CIFAR-10 python batch ({err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"data_dir: {str(path)!r} holds a {type(batch).__name__}, not a CIFAR-10 batch dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images, labels = batch.get("data"), batch.get("labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3072 or labels is None or len(labels) != images.shape[0]:
        raise ValueError(f"data_dir: {str(path)!r} has no uint8 'data' of shape (n, 3072) with n 'labels'")
    return images, np.asarray(labels, dtype=np.int64)


def _read_cifar_bin(path: Path):
    """(uint8 images (n, 3072), int64 labels (n,)) of one batch of the binary version."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise ValueError(f"data_dir: {str(path)!r} is not a CIFAR-10 binary batch "
                         f"({raw.size} bytes, not a multiple of 3,073)")
    records = raw.reshape(-1, 3073)
    return records[:, 1:], records[:, 0].astype(np.int64)


def _cifar_paths(data_dir: Path, split: str):
    """The batch files of ``split`` and their reader, from the first folder that holds all of them."""
    stems, looked = _CIFAR_BATCHES[split], []
    for folder in (data_dir, data_dir / "cifar-10-batches-bin", data_dir / "cifar-10-batches-py"):
        for suffix, reader in ((".bin", _read_cifar_bin), ("", _read_cifar_pickle)):
            paths = [folder / (stem + suffix) for stem in stems]
            if all(p.is_file() for p in paths):
                return paths, reader
            looked.append(str(paths[0]) + (" ..." if len(paths) > 1 else ""))
    raise ValueError(
        f"data_dir: no CIFAR-10 {split} images found; looked for {', '.join(looked)}. "
        "pyro_dgm downloads nothing: put the binary version's .bin batches or the python version's "
        "pickled batches there"
    )


def _read_cifar(data_dir, split):
    if split not in _CIFAR_BATCHES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if data_dir is None:
        raise ValueError("data_dir: CIFAR-10 is read from local files; pass the folder that holds them")
    paths, reader = _cifar_paths(Path(data_dir).expanduser(), split)
    images, labels = zip(*(reader(p) for p in paths))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar10(data_dir, split: str = "train", kind: str = "continuous", seed: int = 0,
                 flatten: bool = False) -> torch.Tensor:
    """CIFAR-10 from files the user already has, shape (N, 3, 32, 32) (or (N, 3072) with ``flatten``).

    Args:
        data_dir: a folder (``~`` expanded) holding ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
            ``test_batch.bin`` (the binary version: a label byte and 3,072 pixel
            bytes per image) or ``data_batch_1`` .. ``data_batch_5`` and
            ``test_batch`` (the python version, pickled dicts, read without
            running any code they might name), directly or in the archives'
            folders ``cifar-10-batches-bin`` / ``cifar-10-batches-py``.
        split: "train" (the 50,000 images of the five data batches, in order) or "test".
        kind: "continuous" (uniformly dequantized to [0, 1), a fixed noise
            draw per ``seed``), "grey" (k / 255), "levels" (the integers
            0..255 as floats, for discrete outputs) or "binary" (one Bernoulli
            draw of k / 255 per pixel, fixed by ``seed``, like ``load_mnist``).
    """
    if kind not in _CIFAR_KINDS:
        raise ValueError(f"kind: expected one of {_CIFAR_KINDS}, got {kind!r}")
    images, _ = _read_cifar(data_dir, split)
    levels = torch.as_tensor(images).reshape(-1, *CIFAR_SHAPE)
    g = torch.Generator().manual_seed(int(seed) + {"train": 1, "test": 3}[split])
    if kind == "continuous":
        x = dequantize(levels, CIFAR_LEVELS, generator=g)
    elif kind == "levels":
        x = levels.to(torch.get_default_dtype())
    else:
        x = levels.to(torch.get_default_dtype()) / (CIFAR_LEVELS - 1)
        x = torch.bernoulli(x, generator=g) if kind == "binary" else x
    return x.reshape(x.shape[0], -1) if flatten else x


def load_cifar10_labels(data_dir, split: str = "train") -> torch.Tensor:
    """The class (0-9) of each image of ``load_cifar10(data_dir, split)``, in the same order."""
    return torch.as_tensor(_read_cifar(data_dir, split)[1])


# ---------------------------------------------------------------- registry

@register_data("digits", kind="binary", description="sklearn 8x8 digits, binarized at 8 (64 dims)",
               image_shape=(1, 8, 8))
def _digits_binary(split="train", seed=0, data_dir=None, image=False):
    return load_digits(split, "binary", seed, image=image)


@register_data("digits-continuous", kind="continuous",
               description="sklearn 8x8 digits, dequantized to [0, 1) (64 dims, 17 levels)", image_shape=(1, 8, 8))
def _digits_continuous(split="train", seed=0, data_dir=None, image=False):
    return load_digits(split, "continuous", seed, image=image)


def _register_toy(name):
    sizes = {"train": 4000, "val": 1000, "test": 2000}

    def load(split="train", seed=0, data_dir=None, image=False):
        if split not in sizes:
            raise ValueError(f"split: expected one of {sorted(sizes)}, got {split!r}")
        return toy_2d(name, sizes[split], seed=int(seed) * 3 + list(sizes).index(split))

    register_data(name, kind="points", description=f"2-D toy '{name}'")(load)


for _name in TOY_NAMES:
    _register_toy(_name)


def _register_mnist(name, fashion):
    def load(split="train", seed=0, data_dir=None, image=False):
        """train: the first 50,000 training images; val: the last 10,000; test: the 10,000 test images."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split: expected 'train', 'val' or 'test', got {split!r}")
        x = load_mnist(data_dir, "test" if split == "test" else "train", "static", fashion, seed,
                       flatten=not image)
        if split == "train":
            return x[:50000]
        return x[50000:] if split == "val" else x

    register_data(name, kind="binary", description=f"{name} from local files, statically binarized",
                  image_shape=(1, 28, 28))(load)


_register_mnist("mnist", False)
_register_mnist("fashion-mnist", True)


@register_data("cifar10", kind="continuous",
               description="CIFAR-10 from local files, dequantized to [0, 1) (3x32x32, 256 levels)",
               image_shape=CIFAR_SHAPE)
def _cifar10(split="train", seed=0, data_dir=None, image=False):
    """train: data batches 1-4 (40,000 images); val: data batch 5 (10,000); test: the test batch."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split: expected 'train', 'val' or 'test', got {split!r}")
    x = load_cifar10(data_dir, "test" if split == "test" else "train", "continuous", seed, flatten=not image)
    four_batches = x.shape[0] * 4 // 5  # the five data batches are equally large
    if split == "train":
        return x[:four_batches]
    return x[four_batches:] if split == "val" else x
