"""Networks the coupling layers condition on; a zero last layer makes each coupling start as the identity."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["mlp_net", "conv_net"]


def _zero_last(net: nn.Sequential) -> nn.Sequential:
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def mlp_net(in_features: int, hidden, out_features: int, zero_init: bool = True) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` with the given hidden widths."""
    sizes = (in_features, *hidden, out_features)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    return _zero_last(net) if zero_init else net


def conv_net(in_channels: int, hidden: int, out_channels: int, zero_init: bool = True) -> nn.Sequential:
    """Glow's coupling network: 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv (same spatial size)."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1))
    return _zero_last(net) if zero_init else net


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
