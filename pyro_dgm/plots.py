"""Figures: sample grids, reconstructions, latent scatter, loss curves, 2-D densities.

Every function returns the matplotlib ``Figure`` and, given ``path``, also
saves it (at 120 dpi, in the format of the path's suffix: PNG,
PDF, SVG, JPEG, ...). Nothing is shown; use ``fig.show()`` in a notebook.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.backend_bases import FigureCanvasBase

from .checkpoint import write_atomic

__all__ = ["save", "figure_format", "grid_columns", "sample_grid", "reconstructions", "latent_scatter", "pca_2d",
           "loss_curves", "LOSS_UNITS", "density_2d", "scatter_2d"]


def figure_format(path) -> str:
    """The file format of ``path`` from its suffix ("png" without one); ValueError for one matplotlib cannot write."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(f"path: {str(path)!r}: cannot write a figure as .{suffix}; "
                         f"use one of {', '.join('.' + k for k in sorted(supported))}")
    return suffix


def save(fig, path):
    """Save ``fig`` at 120 dpi (folders created) when ``path`` is given, in the format of its suffix
    (PNG without one: .png, .pdf, .svg, .jpg, ... as matplotlib writes them); return it.

    The file is written whole or not at all (a temporary file renamed into place), so a crash
    while saving leaves the previous figure.
    """
    if path is not None:
        fmt = figure_format(path)
        write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"), "figure")
    return fig


def _as_images(x, image_shape=None):
    x = torch.as_tensor(x).detach().cpu().float()
    if image_shape is not None:
        x = x.reshape(-1, *image_shape)
        if x.dim() == 3:  # (N, H, W): grey
            return x
    if x.dim() == 4:
        return x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    side = int(math.isqrt(x.shape[-1]))
    if side * side != x.shape[-1]:
        raise ValueError(f"x: cannot lay out examples of {x.shape[-1]} values as square images; pass image_shape")
    return x.reshape(-1, side, side)


def grid_columns(n: int, nrow: int) -> int:
    """Columns for n images, at most ``nrow``, chosen so that every row is full when a divisor of n allows.

    >>> grid_columns(64, 10), grid_columns(100, 10), grid_columns(7, 10), grid_columns(13, 10)
    (8, 10, 7, 10)
    """
    if n <= nrow:
        return n
    full = [c for c in range(nrow, (nrow + 1) // 2 - 1, -1) if n % c == 0]
    return full[0] if full else nrow


def _tile(imgs, ncol: int, pad: int = 1):
    """Images (N, H, W) or (N, H, W, C) as one array with ``pad`` light grey pixels between them.

    One picture instead of one matplotlib axes per image: pixels stay square, and a
    100-image grid draws in one call (torchvision's make_grid does this, but is not a dependency).
    """
    n, h, w = imgs.shape[:3]
    rows = math.ceil(n / ncol)
    canvas = torch.full((rows * (h + pad) - pad, ncol * (w + pad) - pad, *imgs.shape[3:]), 0.75)
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncol)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = img
    return canvas.clamp(0, 1).numpy()


def sample_grid(x, nrow: int = 10, title: str | None = None, path=None, image_shape=None, columns=None):
    """A grid of images (N, D) with D a square, or (N, C, H, W), values in [0, 1], dark = 1.

    At most ``nrow`` images per row, every row full where a divisor of N
    allows (:func:`grid_columns`); exactly ``columns`` per row if given (the
    last row partial: one column per class of a class-conditional grid);
    square pixels; the title right above. ``image_shape`` ((C, H, W) or (H, W))
    lays out flat examples.
    """
    imgs = _as_images(x, image_shape)
    ncol = grid_columns(imgs.shape[0], nrow) if columns is None else min(columns, imgs.shape[0])
    canvas = _tile(imgs if imgs.dim() == 4 else 1 - imgs, ncol)  # grey images: ink dark on white
    height, width = canvas.shape[:2]
    fig, ax = plt.subplots(figsize=(max(2.5, width / 12), max(1.2, height / 12) + (0.35 if title else 0)),
                           layout="constrained")
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return save(fig, path)


def reconstructions(x, x_hat, n: int = 10, path=None, title="data (top) and reconstructions (bottom)"):
    """Originals above their reconstructions."""
    both = torch.cat([torch.as_tensor(x[:n]).cpu(), torch.as_tensor(x_hat[:n]).cpu()])
    return sample_grid(both, nrow=n, title=title, path=path)


def latent_scatter(z, labels=None, path=None, title="latent means", axis_names=("z1", "z2")):
    """Scatter of 2-D latent codes (the first two coordinates), coloured by label.

    ``axis_names``: ("PC 1", "PC 2") for codes projected by :func:`pca_2d`.
    """
    z = torch.as_tensor(z).detach().cpu().numpy()
    if labels is not None and len(labels) != len(z):
        raise ValueError(f"labels: expected one per code ({len(z)}), got {len(labels)}")
    fig, ax = plt.subplots(figsize=(5, 5))
    sns.scatterplot(x=z[:, 0], y=z[:, 1], hue=None if labels is None else np.asarray(labels),
                    palette="tab10", s=12, ax=ax, legend=labels is not None)
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1], title=title)
    if labels is not None:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return save(fig, path)


def pca_2d(z):
    """The first two principal components of codes ``z`` (N, D), as an (N, 2) tensor (scikit-learn's PCA)."""
    from sklearn.decomposition import PCA

    z = torch.as_tensor(z).detach().cpu()
    return torch.as_tensor(PCA(2).fit_transform(z.numpy()), dtype=torch.float32)


#: The unit of each likelihood objective's loss; other objectives' losses are labelled "loss".
LOSS_UNITS = {"ELBO": "negative ELBO (nats per example)", "PyroELBO": "negative ELBO (nats per example)",
              "MaximumLikelihood": "NLL (nats per example)"}


def loss_curves(result_or_losses, path=None, smooth: int = 20, title="training loss", ylabel=None,
                validation=None):
    """Loss per update for every parameter group of a FitResult (moving average of ``smooth``).

    ``ylabel`` defaults to the objective's unit (:data:`LOSS_UNITS`).
    ``validation`` is one value per epoch (``EarlyStopping(...).history``, or
    an EarlyStopping itself), drawn at the update that ended each epoch.
    """
    losses = getattr(result_or_losses, "losses", result_or_losses)
    objective = type(getattr(result_or_losses, "objective", None)).__name__
    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    for group, values in losses.items():
        v = np.asarray(values, dtype=float)
        if len(v) == 0:
            continue
        k = max(1, min(smooth, len(v) // 5 or 1))
        label = f"{group} (train, mean of {k})" if k > 1 else f"{group} (train)"
        ax.plot(np.arange(k, len(v) + 1), np.convolve(v, np.ones(k) / k, mode="valid"), label=label)
    if validation is not None:
        values = np.asarray(getattr(validation, "history", validation), dtype=float)
        updates = max(len(v) for v in losses.values())
        ends = np.linspace(updates / len(values), updates, len(values)) if len(values) else []
        ax.plot(ends, values, "o-", label="validation (per epoch)")
    ax.set(xlabel="update", ylabel=ylabel or LOSS_UNITS.get(objective, "loss"), title=title)
    ax.legend()
    sns.despine(fig)
    return save(fig, path)


def _covering_lim(data, lim):
    """``lim`` if given; else a symmetric range covering the data with a 10% margin (4 without data)."""
    if lim is not None:
        return float(lim)
    if data is None:
        return 4.0
    return 1.1 * float(torch.as_tensor(data).abs().max())


def density_2d(log_prob, lim=None, n: int = 200, path=None, title="density", ax=None, data=None):
    """Heat map of exp(log_prob) on [-lim, lim]^2, with ``data`` overlaid; ``log_prob`` maps (M, 2) -> (M,).

    Without ``lim`` the range covers the data (with a 10% margin), or [-4, 4]^2 without data.
    """
    lim = _covering_lim(data, lim)
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    with torch.no_grad():
        lp = torch.cat([log_prob(c) for c in pts.split(10_000)]).reshape(n, n)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    ax.imshow(lp.exp().cpu().numpy(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="magma")
    if data is not None:
        d = torch.as_tensor(data).cpu().numpy()
        ax.scatter(d[:, 0], d[:, 1], s=1, c="cyan", alpha=0.3, label="data")
    ax.set(title=title, xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
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
