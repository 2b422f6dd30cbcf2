"""The networks every family builds on: one MLP builder, one Gaussian head, Glow's coupling CNN.

Each model family used to write its own ``Linear -> activation -> ... -> Linear``
loop (VAE, flows, i-ResNet, EBM, GAN critic, score network, the digits
classifier). :func:`mlp` is that loop once; its layer indices are the ones
those copies had, so ``state_dict`` keys (and the shipped digits classifier's
weights) are unchanged. Hypernetworks with several outputs (Pyro's coupling
and autoregressive transforms) use :class:`pyro.nn.DenseNN` directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

__all__ = ["mlp", "GaussianHead", "loc_scale", "positive_scale", "conv_net", "FlatToImage", "zero_last", "MIN_SCALE"]

MIN_SCALE = 1e-3


def zero_last(net: nn.Sequential) -> nn.Sequential:
    """Zero the last layer's weight and bias, so a coupling built on ``net`` starts as the identity."""
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def mlp(sizes, activation=nn.ReLU, *, last_activation: bool = False, spectral_norm: bool = False,
        n_power_iterations: int = 1, zero_init: bool = False, flatten: bool = False) -> nn.Sequential:
    """Linear layers of widths ``sizes`` with ``activation()`` between them.

    Args:
        sizes: ``(in, hidden..., out)``; at least two numbers.
        activation: a module class (``nn.ReLU``, ``nn.SiLU``, ...) or a
            zero-argument callable returning a module.
        last_activation: also put an activation after the last layer.
        spectral_norm: wrap every linear layer in torch's spectral
            normalization (Miyato et al., 2018), so each is 1-Lipschitz.
        n_power_iterations: power iterations per step of that normalization.
        zero_init: start with a zero last layer (:func:`zero_last`).
        flatten: an ``nn.Flatten()`` first, for image-shaped inputs.

    Example::

        >>> mlp((4, 8, 2))
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): ReLU()
          (2): Linear(in_features=8, out_features=2, bias=True)
        )
    """
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected (in, ..., out) with at least two widths, got {sizes!r}")
    layers = [nn.Flatten()] if flatten else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        layers.append(_spectral_norm(linear, n_power_iterations=n_power_iterations) if spectral_norm else linear)
        if last_activation or i < len(sizes) - 2:
            layers.append(activation())
    net = nn.Sequential(*layers)
    return zero_last(net) if zero_init else net


def positive_scale(raw: torch.Tensor, min_scale: float = MIN_SCALE) -> torch.Tensor:
    """``softplus(raw) + min_scale``: a scale bounded away from zero, so log densities stay finite."""
    return F.softplus(raw) + min_scale


def loc_scale(out: torch.Tensor, min_scale: float = MIN_SCALE):
    """A network's output split in two along the last axis: ``(loc, positive_scale(raw))``."""
    loc, raw = out.chunk(2, dim=-1)
    return loc, positive_scale(raw, min_scale)


class GaussianHead(nn.Module):
    """``net`` followed by :func:`loc_scale`: a Gaussian's location and positive scale."""

    def __init__(self, net: nn.Module, min_scale: float = MIN_SCALE):
        super().__init__()
        self.net, self.min_scale = net, min_scale

    def forward(self, x):
        return loc_scale(self.net(x), self.min_scale)


def conv_net(in_channels: int, hidden: int, out_channels: int, zero_init: bool = True) -> nn.Sequential:
    """Glow's coupling network: 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv (same spatial size)."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1))
    return zero_last(net) if zero_init else net


class FlatToImage(nn.Module):
    """Runs an image network on flat inputs: ``(..., C*H*W) -> net -> (..., K*H*W)`` split in ``chunks``.

    Pyro's :class:`~pyro.distributions.transforms.AffineCoupling` hands its
    hypernet the kept half flattened; this puts the image shape back.
    """

    def __init__(self, net: nn.Module, shape, chunks: int = 2):
        super().__init__()
        self.net, self.shape, self.chunks = net, tuple(shape), chunks

    def forward(self, x_flat: torch.Tensor):
        batch = x_flat.shape[:-1]
        out = self.net(x_flat.reshape(-1, *self.shape))
        return tuple(p.reshape(*batch, -1) for p in out.chunk(self.chunks, dim=1))
