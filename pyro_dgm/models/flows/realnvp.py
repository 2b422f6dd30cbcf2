"""RealNVP: affine coupling with checkerboard and channel-wise masks, multi-scale (Dinh et al., 2017)."""

from __future__ import annotations

import torch
from torch import nn

from ...registry import register_model
from .core import FlowModel, Remembered
from .dequantization import LogitTransform
from .multiscale import FactorOut, Squeeze
from ...nets import conv_net, mlp
from .nice import MaskedCoupling, _flat_dim, _logit_for, alternating_mask
from ...checks import as_event_shape, count, widths

__all__ = ["MaskedAffineCoupling", "checkerboard_mask", "channel_mask", "RealNVP", "MultiScaleRealNVP"]


def checkerboard_mask(shape, parity: int = 0) -> torch.Tensor:
    """1 where ``(i + j + parity)`` is even, for an image event shape ``(C, H, W)``.

    Example::

        >>> checkerboard_mask((1, 2, 3))
        tensor([[[1., 0., 1.],
                 [0., 1., 0.]]])
    """
    c, h, w = shape
    ij = torch.arange(h).unsqueeze(1) + torch.arange(w).unsqueeze(0)
    m = ((ij + parity) % 2 == 0).to(torch.get_default_dtype())
    return m.expand(c, h, w).clone()


def channel_mask(shape, parity: int = 0) -> torch.Tensor:
    """1 on the first (``parity=0``) or second half of the channels of ``(C, H, W)``.

    Example::

        >>> channel_mask((4, 1, 1), parity=1).flatten()
        tensor([0., 0., 1., 1.])
    """
    c, h, w = shape
    first = (torch.arange(c) < c // 2).to(torch.get_default_dtype())
    m = first if parity == 0 else 1 - first
    return m.reshape(c, 1, 1).expand(c, h, w).clone()


class MaskedAffineCoupling(Remembered, MaskedCoupling):
    """RealNVP's affine coupling with a binary mask :math:`b` (Dinh et al., 2017, eq. 9):

    .. math:: y = b \\odot x + (1 - b) \\odot \\left(x \\odot \\exp(s(b \\odot x)) + t(b \\odot x)\\right),
              \\qquad \\log|\\det J| = \\sum_j (1 - b_j)\\, s_j(b \\odot x)

    with :math:`s = \\sigma \\tanh(\\tilde s)` (a learned per-coordinate
    :math:`\\sigma`) to keep the scales bounded. Both directions cost one pass
    of the network, which maps ``b * x`` to ``(s~, t)`` stacked along the
    first event axis (twice the channels of an image, twice the size of a vector).

    Pyro's :class:`~pyro.distributions.transforms.AffineCoupling` splits at
    an index; masks give the checkerboard pattern it cannot express.

    Example::

        >>> import torch
        >>> t = MaskedAffineCoupling(alternating_mask(4, 1), mlp((4, 8, 8)))
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-6)
        True

    Reference: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation
    using Real NVP. ICLR 2017, arXiv:1605.08803.
    """

    bijective = True

    def __init__(self, mask: torch.Tensor, net: nn.Module):
        super().__init__(mask, net)
        self.scale = nn.Parameter(torch.ones(mask.shape))

    def _params(self, x):
        batch = x.shape[:x.dim() - self._event_dim]
        h = self.net((self.mask * x).reshape(-1, *self.mask.shape))
        raw, shift = h.chunk(2, dim=1)
        free = 1 - self.mask
        log_scale = free * self.scale * torch.tanh(raw.reshape(*batch, *self.mask.shape))
        return log_scale, free * shift.reshape(*batch, *self.mask.shape)

    def _log_det(self, log_scale):
        return log_scale.reshape(*log_scale.shape[:log_scale.dim() - self._event_dim], -1).sum(-1)

    def _call(self, x):
        log_scale, shift = self._params(x)
        y = x * log_scale.exp() + shift
        self._remember(x, y, self._log_det(log_scale))
        return y

    def _inverse(self, y):
        log_scale, shift = self._params(y)
        x = (y - shift) * (-log_scale).exp()
        self._remember(x, y, self._log_det(log_scale))
        return x


class RealNVP(FlowModel):
    """RealNVP on vectors: affine couplings with alternating (even/odd) masks.

    Args:
        dim: the data dimension (>= 2).
        num_couplings: number of coupling layers.
        hidden: hidden widths of each coupling network.
        logit: ``alpha`` of a first :class:`LogitTransform` for data in [0, 1), or None.

    Example::

        >>> import torch
        >>> flow = RealNVP(2, num_couplings=2, hidden=(8,))
        >>> flow.sample(4).shape
        torch.Size([4, 2])
    """

    def __init__(self, dim: int, num_couplings: int = 6, hidden=(256, 256), logit: float | None = None):
        count("dim", dim, 2)
        count("num_couplings", num_couplings)
        parts = [LogitTransform(logit)] if logit is not None else []
        hidden = widths("hidden", hidden, allow_empty=True)
        parts += [MaskedAffineCoupling(alternating_mask(dim, i % 2), mlp((dim, *hidden, 2 * dim), zero_init=True))
                  for i in range(num_couplings)]
        super().__init__(dim, parts)


def _coupling(mask, hidden):
    c = mask.shape[0]
    return MaskedAffineCoupling(mask, conv_net(c, hidden, 2 * c))


def _scale(shape, num_scales, hidden, couplings):
    """The transforms of one scale of RealNVP on events of ``shape`` (C, H, W), recursively."""
    c, h, w = shape
    if num_scales == 1:  # the last scale: checkerboard couplings only
        return [_coupling(checkerboard_mask(shape, i % 2), hidden) for i in range(couplings + 1)]
    parts = [_coupling(checkerboard_mask(shape, i % 2), hidden) for i in range(couplings)]
    squeezed = (4 * c, h // 2, w // 2)
    parts += [Squeeze()] + [_coupling(channel_mask(squeezed, i % 2), hidden) for i in range(couplings)]
    inner = _scale((2 * c, h // 2, w // 2), num_scales - 1, hidden, couplings)
    return parts + [FactorOut(inner, keep=2 * c), Squeeze().inv]


class MultiScaleRealNVP(FlowModel):
    """RealNVP's multi-scale architecture on images ``(C, H, W)`` (Dinh et al., 2017, sec. 3.6).

    Each scale but the last: ``couplings`` checkerboard couplings, squeeze,
    ``couplings`` channel-wise couplings, then half of the channels are
    factored out and the next scale runs on the rest. The last scale has
    ``couplings + 1`` checkerboard couplings. A final unsqueeze returns the
    event to ``(C, H, W)``, so the base is N(0, I) over the whole image.

    Example::

        >>> import torch
        >>> flow = MultiScaleRealNVP((1, 4, 4), num_scales=2, hidden=4, couplings=1)
        >>> flow.log_prob(torch.rand(2, 1, 4, 4)).shape
        torch.Size([2])
    """

    def __init__(self, shape=(1, 8, 8), num_scales: int = 2, hidden: int = 32, couplings: int = 3,
                 logit: float | None = 0.05):
        shape = as_event_shape(shape, "shape")
        if len(shape) != 3:
            raise ValueError(f"shape: expected (channels, height, width), got {tuple(shape)}")
        count("num_scales", num_scales)
        if shape[1] % 2 ** (num_scales - 1) or shape[2] % 2 ** (num_scales - 1):
            raise ValueError(f"num_scales: {num_scales} scales need height and width divisible by "
                             f"{2 ** (num_scales - 1)}, got {tuple(shape)}")
        parts = [LogitTransform(logit)] if logit is not None else []
        super().__init__(shape, parts + _scale(tuple(shape), num_scales, hidden, couplings))


@register_model("realnvp", family="flow", data_kinds=("continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 128},
                description="RealNVP on vectors (alternating-mask affine couplings)")
def _build_realnvp(event_shape, data_kind, num_couplings=6, hidden=(256, 256), **options):
    return RealNVP(_flat_dim(event_shape), num_couplings, hidden, logit=_logit_for(data_kind))


@register_model("realnvp-image", family="flow", data_kinds=("continuous",),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 64, "image": True},
                description="multi-scale RealNVP for images (checkerboard/channel masks, squeeze)")
def _build_realnvp_image(event_shape, data_kind, num_scales=2, hidden=32, couplings=3, **options):
    return MultiScaleRealNVP(event_shape, num_scales, hidden, couplings)
