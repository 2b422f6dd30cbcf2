"""Figures: sample grids, reconstructions, latent scatter, loss curves, 2-D densities.

Every function returns the matplotlib ``Figure`` and, given ``path``, also
saves it (PNG at 120 dpi). Nothing is shown; use ``fig.show()`` in a notebook.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib


import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

__all__ = ["save", "sample_grid", "reconstructions", "latent_scatter", "pca_2d", "loss_curves", "density_2d", "scatter_2d"]


def save(fig, path):
    """Save ``fig`` as a PNG at 120 dpi (folders created) when ``path`` is given; return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _as_images(x, image_shape=None):
    x = torch.as_tensor(x).detach().cpu().float()
    if image_shape is not None:
        return x.reshape(-1, *image_shape)
    if x.dim() == 4:
        return x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    side = int(math.isqrt(x.shape[-1]))
    if side * side != x.shape[-1]:
        raise ValueError(f"x: cannot lay out examples of {x.shape[-1]} values as square images; pass image_shape")
    return x.reshape(-1, side, side)


def sample_grid(x, nrow: int = 10, title: str | None = None, path=None, image_shape=None):
    """A grid of images (N, D) with D a square, or (N, C, H, W)."""
    imgs = _as_images(x, image_shape)
    n = imgs.shape[0]
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    fig, axes = plt.subplots(rows, ncol, figsize=(ncol * 0.8, rows * 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, imgs):
        ax.imshow(img.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    if title:
        fig.suptitle(title)
    return save(fig, path)


def reconstructions(x, x_hat, n: int = 10, path=None, title="data (top) and reconstructions (bottom)"):
    """Originals above their reconstructions."""
    both = torch.cat([torch.as_tensor(x[:n]).cpu(), torch.as_tensor(x_hat[:n]).cpu()])
    return sample_grid(both, nrow=n, title=title, path=path)


def latent_scatter(z, labels=None, path=None, title="latent means"):
    """Scatter of 2-D latent codes (the first two coordinates), coloured by label."""
    z = torch.as_tensor(z).detach().cpu().numpy()
    if labels is not None and len(labels) != len(z):
        raise ValueError(f"labels: expected one per code ({len(z)}), got {len(labels)}")
    fig, ax = plt.subplots(figsize=(5, 5))
    sns.scatterplot(x=z[:, 0], y=z[:, 1], hue=None if labels is None else np.asarray(labels),
                    palette="tab10", s=12, ax=ax, legend=labels is not None)
    ax.set(xlabel="z1", ylabel="z2", title=title)
    if labels is not None:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return save(fig, path)


def pca_2d(z):
    """The first two principal components of codes ``z`` (N, D), as an (N, 2) tensor (scikit-learn's PCA)."""
    from sklearn.decomposition import PCA

    z = torch.as_tensor(z).detach().cpu()
    return torch.as_tensor(PCA(2).fit_transform(z.numpy()), dtype=torch.float32)


def loss_curves(result_or_losses, path=None, smooth: int = 20, title="training loss"):
    """Loss per update for every parameter group of a FitResult (moving average of ``smooth``)."""
    losses = getattr(result_or_losses, "losses", result_or_losses)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for group, values in losses.items():
        v = np.asarray(values, dtype=float)
        if len(v) == 0:
            continue
        k = max(1, min(smooth, len(v) // 5 or 1))
        ax.plot(np.convolve(v, np.ones(k) / k, mode="valid"), label=group)
    ax.set(xlabel="update", ylabel="loss (nats per example)", title=title)
    ax.legend()
    sns.despine(fig)
    return save(fig, path)


def density_2d(log_prob, lim=4.0, n: int = 200, path=None, title="density", ax=None, data=None):
    """Heat map of exp(log_prob) on [-lim, lim]^2; ``log_prob`` maps (M, 2) -> (M,)."""
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    with torch.no_grad():
        lp = torch.cat([log_prob(c) for c in pts.split(10_000)]).reshape(n, n)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(lp.exp().cpu().numpy(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="magma")
    if data is not None:
        d = torch.as_tensor(data).cpu().numpy()
        ax.scatter(d[:, 0], d[:, 1], s=1, c="cyan", alpha=0.3)
    ax.set(title=title, xticks=[], yticks=[])
    return save(fig if fig is not None else ax.figure, path)


def scatter_2d(x, lim=4.0, path=None, title="samples", ax=None):
    """Scatter of 2-D points."""
    x = torch.as_tensor(x).detach().cpu().numpy()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
    outside = int((np.abs(x) > lim).any(axis=1).sum())
    if outside:  # points off the plot would otherwise go unnoticed
        title = f"{title}\n({outside} of {len(x)} points outside the plotted range)"
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=title, aspect="equal")
    return save(fig if fig is not None else ax.figure, path)
