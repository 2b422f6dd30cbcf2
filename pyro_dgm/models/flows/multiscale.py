"""Squeeze and factor-out: the multi-scale architecture of RealNVP and Glow as one bijection.

Dinh et al. (2017, sec. 3.6) factor out half of the dimensions at each scale:
they go straight to the Gaussian base while the other half is transformed
further. Written as a bijection of the *whole* event, this is
:class:`FactorOut`: the inner flow acts on the kept channels and is the
identity on the rest, so a multi-scale flow stays one distribution over the
full image with one ``log_prob`` and one ``sample``.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch.distributions import Transform

from .core import Remembered, SequentialFlow
from ...checks import count

__all__ = ["Squeeze", "FactorOut"]


class Squeeze(Transform):
    """RealNVP's squeeze: each 2x2 patch becomes 4 channels, ``(C, H, W) -> (4C, H/2, W/2)``.

    A permutation of coordinates, so :math:`\\log|\\det| = 0`.

    Example::

        >>> import torch
        >>> Squeeze()(torch.arange(16.).reshape(1, 1, 4, 4))[0, :, 0, 0]
        tensor([0., 1., 4., 5.])
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    bijective = True

    def __init__(self):
        super().__init__(cache_size=0)

    def forward_shape(self, shape):
        *batch, c, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"shape: Squeeze needs an even height and width, got {tuple(shape)}")
        return torch.Size([*batch, 4 * c, h // 2, w // 2])

    def inverse_shape(self, shape):
        *batch, c, h, w = shape
        if c % 4:
            raise ValueError(f"shape: the inverse of Squeeze needs channels divisible by 4, got {tuple(shape)}")
        return torch.Size([*batch, c // 4, 2 * h, 2 * w])

    def _call(self, x):
        *batch, c, h, w = x.shape
        self.forward_shape(x.shape)
        x = x.reshape(*batch, c, h // 2, 2, w // 2, 2)
        nb = len(batch)
        x = x.permute(*range(nb), nb, nb + 2, nb + 4, nb + 1, nb + 3)
        return x.reshape(*batch, 4 * c, h // 2, w // 2)

    def _inverse(self, y):
        *batch, c, h, w = y.shape
        self.inverse_shape(y.shape)
        nb = len(batch)
        y = y.reshape(*batch, c // 4, 2, 2, h, w)
        y = y.permute(*range(nb), nb, nb + 3, nb + 1, nb + 4, nb + 2)
        return y.reshape(*batch, c // 4, 2 * h, 2 * w)

    def log_abs_det_jacobian(self, x, y):
        return x.new_zeros(x.shape[:-3])


class FactorOut(Remembered, TransformModule):
    """Transform the first ``keep`` channels by ``inner``; pass the others through.

    .. math:: (x_1, x_2) \\mapsto (g(x_1), x_2), \\qquad
              \\log|\\det J| = \\log|\\det J_g(x_1)|

    The passed-through half is "factored out": in the generative direction it
    is base noise at this scale (Dinh et al., 2017, eq. 17-18).

    Args:
        inner: list of transforms acting on events with ``keep`` channels.
        keep: how many channels (along ``dim``) the inner flow sees.
        dim: the channel axis: -3 for images, -1 for vectors.

    Example::

        >>> import torch
        >>> from pyro_dgm.models.flows import DiagonalScaling
        >>> t = FactorOut([DiagonalScaling(2)], keep=2, dim=-1)
        >>> t(torch.ones(1, 4)).shape
        torch.Size([1, 4])
    """

    bijective = True

    def __init__(self, inner, keep: int, dim: int = -3):
        super().__init__(cache_size=0)
        if dim not in (-1, -3):
            raise ValueError(f"dim: expected -1 (vectors) or -3 (images), got {dim!r}")
        count("keep", keep)
        self.inner = SequentialFlow(list(inner))
        self.keep, self.dim = keep, dim

    @property
    def domain(self):
        return constraints.independent(constraints.real, -self.dim)

    codomain = domain

    def _split(self, x):
        if x.shape[self.dim] <= self.keep:
            raise ValueError(f"keep: {self.keep} channels kept, but the input has only {x.shape[self.dim]}")
        return x.split([self.keep, x.shape[self.dim] - self.keep], dim=self.dim)

    def _call(self, x):
        x1, x2 = self._split(x)
        y1 = self.inner(x1)
        y = torch.cat([y1, x2], dim=self.dim)
        self._remember(x, y, self.inner.log_abs_det_jacobian(x1, y1))
        return y

    def _inverse(self, y):
        y1, y2 = self._split(y)
        x1 = self.inner.inv(y1)
        x = torch.cat([x1, y2], dim=self.dim)
        self._remember(x, y, self.inner.log_abs_det_jacobian(x1, y1))
        return x
