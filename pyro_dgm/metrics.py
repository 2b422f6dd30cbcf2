"""Sample-quality metrics for models without a density (GANs) or with one.

* :func:`mmd2`: the squared maximum mean discrepancy with a sum of RBF kernels
  at several bandwidths (Gretton et al., 2012), between samples and held-out data.
* :func:`mode_coverage`: on the 8 and 25 Gaussian mixtures of
  :func:`pyro_dgm.data.toy_2d`, how many modes the samples cover and the
  fraction of high-quality samples (within 3 standard deviations of a mode),
  as in Metz et al. (2017) and Srivastava et al. (2017).
* :func:`frechet_distance` and :func:`precision_recall` (Kynkaanniemi et al.,
  2019) between two sets of features, and :func:`digits_quality`, which
  computes both in the feature space of :class:`DigitsClassifier`, a small
  classifier trained on the digits train split by
  ``scripts/make_digits_classifier.py`` and shipped as package data (an
  Inception network cannot be downloaded here).

Example::

    >>> import torch
    >>> from pyro_dgm.data import toy_2d
    >>> from pyro_dgm.metrics import mode_coverage
    >>> mode_coverage(toy_2d("8gaussians", 1000, seed=1), "8gaussians")["modes"]
    8
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
from torch import nn

from .data import TOY_STD, mode_centers
from .nets import mlp

__all__ = ["mmd2", "mode_coverage", "frechet_distance", "precision_recall", "DigitsClassifier",
           "digits_classifier", "digits_features", "digits_quality", "DEFAULT_BANDWIDTHS",
           "DIGITS_CLASSIFIER_PATH"]

#: RBF bandwidths of :func:`mmd2`: from below the toys' mode width to the scale of digit images.
DEFAULT_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

#: The weights of :class:`DigitsClassifier` made by ``scripts/make_digits_classifier.py``.
DIGITS_CLASSIFIER_PATH = Path(__file__).resolve().parent / "assets" / "digits_classifier.pt"


def _as_points(x, name) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor (N, ...) with N >= 2, got {got}")
    return x.detach().reshape(x.shape[0], -1).double().cpu()


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths=DEFAULT_BANDWIDTHS) -> float:
    """Unbiased estimate of the squared MMD between samples ``x`` and ``y``.

    .. math::
        \\mathrm{MMD}^2_u = \\frac{1}{m(m-1)}\\sum_{i \\ne j} k(x_i, x_j)
        + \\frac{1}{n(n-1)}\\sum_{i \\ne j} k(y_i, y_j)
        - \\frac{2}{mn}\\sum_{i, j} k(x_i, y_j),
        \\qquad k(a, b) = \\sum_{\\sigma} \\exp\\Big(-\\frac{\\|a - b\\|^2}{2\\sigma^2}\\Big)

    (Gretton et al., 2012, eq. 3). It is zero in expectation when the two
    distributions are equal, so small negative values occur.

    Args:
        x, y: samples ``(m, ...)`` and ``(n, ...)``, flattened per example.
        bandwidths: the kernel widths sigma, summed.

    Example::

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x, y = torch.randn(500, 2), torch.randn(500, 2) + 1.0
        >>> mmd2(x, y) > 10 * abs(mmd2(x, torch.randn(500, 2)))
        True
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: examples have {y.shape[1]} numbers but those of x have {x.shape[1]}")
    sigmas = torch.as_tensor(bandwidths, dtype=torch.float64).reshape(-1)
    if sigmas.numel() == 0 or not bool((sigmas > 0).all()):
        raise ValueError(f"bandwidths: expected positive numbers, got {bandwidths!r}")

    def kernel(a, b):
        d2 = torch.cdist(a, b).pow(2).unsqueeze(-1)
        return torch.exp(-d2 / (2 * sigmas**2)).sum(-1)

    m, n = x.shape[0], y.shape[0]
    kxx, kyy = kernel(x, x), kernel(y, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * kernel(x, y).mean())


def mode_coverage(samples: torch.Tensor, name: str = "8gaussians", num_std: float = 3.0,
                  min_fraction: float = 0.01) -> dict:
    """Modes covered and high-quality fraction of 2-D samples of a Gaussian-mixture toy.

    A sample is *high quality* when it lies within ``num_std`` standard
    deviations (``pyro_dgm.data.TOY_STD[name]``) of its nearest mode; a mode
    is *covered* when at least ``min_fraction`` of all samples are high-quality
    samples of that mode (1% of 2,500 samples is 25, a fifth of a fair share on
    8 modes; a single stray sample does not count as a mode).

    Returns:
        dict: ``modes`` (modes covered), ``num_modes`` (K), ``high_quality`` (the fraction of
        high-quality samples) and ``counts`` (high-quality samples per mode, a tensor of K counts).

    Example::

        >>> import torch
        >>> mode_coverage(torch.tensor([[2.0, 0.0]] * 10 + [[0.0, 0.0]] * 10))["high_quality"]
        0.5
    """
    if name not in TOY_STD:
        raise ValueError(f"name: expected one of {sorted(TOY_STD)}, got {name!r}")
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2 or samples.shape[1] != 2:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"samples: expected a tensor of 2-D points (N, 2), got {got}")
    if not 0 <= min_fraction <= 1:
        raise ValueError(f"min_fraction: expected a number in [0, 1], got {min_fraction!r}")
    centers = mode_centers(name).double()
    dist, nearest = torch.cdist(samples.detach().double().cpu(), centers).min(-1)
    good = dist <= num_std * TOY_STD[name]
    counts = torch.bincount(nearest[good], minlength=len(centers))
    covered = int((counts >= max(1, math.ceil(min_fraction * samples.shape[0]))).sum())
    return {"modes": covered, "num_modes": len(centers), "high_quality": float(good.double().mean()),
            "counts": counts}


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two sets of features.

    .. math:: d^2 = \\|\\mu_a - \\mu_b\\|^2 + \\operatorname{tr}\\big(\\Sigma_a + \\Sigma_b
              - 2 (\\Sigma_a^{1/2} \\Sigma_b \\Sigma_a^{1/2})^{1/2}\\big)

    (Heusel et al., 2017; the trace of the cross term is computed from the
    eigenvalues of the symmetric :math:`\\Sigma_a^{1/2}\\Sigma_b\\Sigma_a^{1/2}`).
    With features of :func:`digits_features` this is a digits "FID".

    Example::

        >>> import torch
        >>> round(frechet_distance(torch.zeros(10, 3), torch.ones(10, 3)), 6)
        3.0
    """
    a, b = _as_points(a, "a"), _as_points(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"b: features have {b.shape[1]} dimensions but those of a have {a.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of Kynkaanniemi et al. (2019).

    Each set's manifold is the union of balls around its points, the radius
    of a ball being the distance to the point's k-th nearest neighbour in its
    own set. Precision is the fraction of ``fake`` inside the manifold of
    ``real`` (quality); recall is the fraction of ``real`` inside the manifold
    of ``fake`` (coverage).

    Example::

        >>> import torch
        >>> x = torch.randn(200, 2)
        >>> precision_recall(x, x + 100.0)
        (0.0, 0.0)
    """
    real, fake = _as_points(real, "real"), _as_points(fake, "fake")
    if not isinstance(k, int) or not 1 <= k < min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k: expected an integer in [1, {min(real.shape[0], fake.shape[0]) - 1}], got {k!r}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"fake: features have {fake.shape[1]} dimensions but those of real have {real.shape[1]}")
    return _inside(fake, real, k), _inside(real, fake, k)


def _inside(points, support, k):
    """Fraction of ``points`` within the k-NN ball of at least one point of ``support``."""
    radii = torch.cdist(support, support).kthvalue(k + 1, dim=1).values  # +1: the point itself
    return float((torch.cdist(points, support) <= radii).any(dim=1).double().mean())


class DigitsClassifier(nn.Module):
    """A small MLP classifier of 8x8 digits with values in [0, 1]; its hidden layer is the feature space.

    ``features(x)`` gives the 32 activations before the last layer,
    ``forward(x)`` the 10 logits. Inputs are ``(N, 64)`` or ``(N, 1, 8, 8)``.

    Example::

        >>> net = DigitsClassifier()
        >>> net.features(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 32])
    """

    def __init__(self, hidden: int = 128, feature_dim: int = 32):
        super().__init__()
        self.body = mlp((64, hidden, feature_dim), last_activation=True)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or math.prod(x.shape[1:]) != 64:
            raise ValueError(f"x: expected digits of shape (N, 64) or (N, 1, 8, 8), got {tuple(x.shape)}")
        return self.body(x.reshape(x.shape[0], 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@functools.lru_cache(maxsize=1)
def digits_classifier() -> DigitsClassifier:
    """The shipped :class:`DigitsClassifier`, in eval mode (loaded once)."""
    net = DigitsClassifier()
    net.load_state_dict(torch.load(DIGITS_CLASSIFIER_PATH, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


def digits_features(x: torch.Tensor) -> torch.Tensor:
    """Features of the shipped classifier for digits in [0, 1], shape (N, 32)."""
    with torch.no_grad():
        return digits_classifier().features(x.detach().float().cpu())


def digits_quality(samples: torch.Tensor, reference: torch.Tensor, k: int = 3) -> dict:
    """Frechet distance, precision and recall of digit samples against reference digits.

    Both are computed in the feature space of the shipped
    :class:`DigitsClassifier`; ``samples`` and ``reference`` hold 8x8 digits
    with values in [0, 1] (``load_digits(kind="continuous")`` or ``"binary"``).

    Example::

        >>> import torch
        >>> from pyro_dgm.data import load_digits
        >>> x = load_digits("test", "continuous")
        >>> q = digits_quality(x[:180], x[180:])  # two halves of the test set
        >>> noise = torch.rand(180, 64, generator=torch.Generator().manual_seed(0))
        >>> q["frechet"] < 0.2 * digits_quality(noise, x[180:])["frechet"]  # about 5.7 against 70
        True
    """
    real, fake = digits_features(reference), digits_features(samples)
    precision, recall = precision_recall(real, fake, k)
    return {"frechet": frechet_distance(real, fake), "precision": precision, "recall": recall}
