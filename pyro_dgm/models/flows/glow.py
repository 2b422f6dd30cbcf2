"""Glow: ActNorm, invertible 1x1 convolution (LU), affine coupling, multi-scale (Kingma and Dhariwal, 2018)."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import AffineCoupling, GeneralizedChannelPermute
from torch import nn

from ...registry import register_model
from .core import FlowModel, ScoredOnce
from .dequantization import LogitTransform
from .multiscale import FactorOut, Squeeze
from ...nets import FlatToImage, conv_net
from ...checks import as_event_shape, count

__all__ = ["ActNorm", "InvertibleConv1x1", "ChannelAffineCoupling", "Glow"]


class ActNorm(TransformModule):
    """Per-channel affine map :math:`y = s \\odot x + b` with data-dependent initialization.

    On the first call in the normalizing direction (data to noise) ``s`` and
    ``b`` are set so that this batch's output has zero mean and unit variance
    per channel (Kingma and Dhariwal, 2018, sec. 3.1); after that they are
    ordinary parameters.

    .. math:: \\log|\\det J| = H \\cdot W \\cdot \\sum_c \\log|s_c|

    Args:
        channels: C (images, ``event_dim=3``) or D (vectors, ``event_dim=1``).
        event_dim: 3 for ``(C, H, W)`` events, 1 for vectors.

    Example::

        >>> import torch
        >>> t = ActNorm(2, event_dim=1)
        >>> y = t(torch.tensor([[0.0, 1.0], [2.0, 5.0]]))
        >>> y.mean(0).abs().max() < 1e-6, bool(t.initialized)
        (tensor(True), True)
    """

    bijective = True

    def __init__(self, channels: int, event_dim: int = 3):
        super().__init__(cache_size=0)
        if event_dim not in (1, 3):
            raise ValueError(f"event_dim: expected 1 (vectors) or 3 (images), got {event_dim!r}")
        count("channels", channels)
        shape = (channels, 1, 1) if event_dim == 3 else (channels,)
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self._event_dim = event_dim

    @property
    def domain(self):
        return constraints.independent(constraints.real, self._event_dim)

    codomain = domain

    @torch.no_grad()
    def _initialize(self, x):
        dims = [d for d in range(x.dim()) if d != x.dim() - self._event_dim]
        mean, std = x.mean(dims), x.std(dims) if x.shape[0] > 1 else torch.ones_like(x.mean(dims))
        self.log_scale.copy_(-(std + 1e-6).log().reshape(self.log_scale.shape))
        self.bias.copy_((-mean / (std + 1e-6)).reshape(self.bias.shape))
        self.initialized.fill_(True)

    def _call(self, x):
        if not self.initialized:
            self._initialize(x)
        return x * self.log_scale.exp() + self.bias

    def _inverse(self, y):
        return (y - self.bias) * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, x, y):
        pixels = x.shape[-2] * x.shape[-1] if self._event_dim == 3 else 1
        return (pixels * self.log_scale.sum()).expand(x.shape[:x.dim() - self._event_dim])


class InvertibleConv1x1(GeneralizedChannelPermute):
    """Glow's invertible 1x1 convolution :math:`W = P L (U + \\mathrm{diag}(s))`: Pyro's
    :class:`~pyro.distributions.transforms.GeneralizedChannelPermute`, with the
    (x, y) cache off so that a parameter update is never hidden.

    .. math:: \\log|\\det J| = H \\cdot W \\cdot \\sum_c \\log|s_c|

    Example::

        >>> import torch
        >>> t = InvertibleConv1x1(4)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    def __init__(self, channels: int):
        count("channels", channels)
        super().__init__(channels)
        self._cache_size = 0


class ChannelAffineCoupling(ScoredOnce, AffineCoupling):
    """Glow's affine coupling: Pyro's :class:`~pyro.distributions.transforms.AffineCoupling`
    split along channels, with a convolutional network and no stale cache.

    .. math:: y_{1:d} = x_{1:d}, \\quad y_{d+1:C} = \\mu(x_{1:d}) + \\sigma(x_{1:d}) \\odot x_{d+1:C},
              \\quad \\log|\\det J| = \\sum \\log \\sigma

    Args:
        shape: the event shape ``(C, H, W)`` (C >= 2).
        hidden: channels of the network's hidden layers.

    Example::

        >>> import torch
        >>> t = ChannelAffineCoupling((4, 2, 2), hidden=8)
        >>> t(torch.randn(3, 4, 2, 2)).shape
        torch.Size([3, 4, 2, 2])
    """

    def __init__(self, shape, hidden: int = 32):
        c, h, w = as_event_shape(shape, "shape")
        if c < 2:
            raise ValueError(f"shape: a channel coupling needs at least 2 channels, got {tuple(shape)}")
        d = c // 2
        net = FlatToImage(conv_net(d, hidden, 2 * (c - d)), (d, h, w))
        super().__init__(d, net, dim=-3)


def _glow_step(shape, hidden):
    c = shape[0]
    return [ActNorm(c), InvertibleConv1x1(c), ChannelAffineCoupling(shape, hidden)]


def _glow_level(shape, levels, steps, hidden):
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    parts = [Squeeze()] + [p for _ in range(steps) for p in _glow_step(squeezed, hidden)]
    if levels > 1:
        parts.append(FactorOut(_glow_level((2 * c, h // 2, w // 2), levels - 1, steps, hidden), keep=2 * c))
    return parts + [Squeeze().inv]


class Glow(FlowModel):
    """Glow on images ``(C, H, W)``: ``levels`` levels of squeeze, ``steps`` x (ActNorm,
    1x1 conv, affine coupling), and a split that factors out half the channels.

    A final unsqueeze at each level returns the event to ``(C, H, W)``, so
    ``log_prob`` and ``sample`` are over the full image.

    Example::

        >>> import torch
        >>> flow = Glow((1, 4, 4), levels=2, steps=1, hidden=4)
        >>> flow.sample(2).shape
        torch.Size([2, 1, 4, 4])

    Reference: D. P. Kingma, P. Dhariwal. Glow: Generative Flow with
    Invertible 1x1 Convolutions. NeurIPS 2018, arXiv:1807.03039.
    """

    def __init__(self, shape=(1, 8, 8), levels: int = 2, steps: int = 4, hidden: int = 32,
                 logit: float | None = 0.05):
        shape = as_event_shape(shape, "shape")
        if len(shape) != 3:
            raise ValueError(f"shape: expected (channels, height, width), got {tuple(shape)}")
        for name, value in (("levels", levels), ("steps", steps)):
            count(name, value)
        if shape[1] % 2 ** levels or shape[2] % 2 ** levels:
            raise ValueError(f"levels: {levels} levels need height and width divisible by {2 ** levels}, "
                             f"got {tuple(shape)}")
        parts = [LogitTransform(logit)] if logit is not None else []
        super().__init__(shape, parts + _glow_level(tuple(shape), levels, steps, hidden))


@register_model("glow", family="flow", data_kinds=("continuous",),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 64, "image": True},
                description="Glow for images (ActNorm, 1x1 conv with LU, affine coupling, multi-scale)")
def _build_glow(event_shape, data_kind, levels=2, steps=4, hidden=32, **options):
    return Glow(event_shape, levels, steps, hidden)
