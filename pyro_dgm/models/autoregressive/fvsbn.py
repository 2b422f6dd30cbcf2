"""The fully visible sigmoid belief network: one logistic regression per dimension."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AutoregressiveModel, check_order, inverse_order

__all__ = ["FVSBN"]


class FVSBN(AutoregressiveModel):
    """Fully visible sigmoid belief network (Neal, 1992; Frey et al., 1996).

    Each conditional is a logistic regression on all previous dimensions:

    .. math:: p(x_{o_d} = 1 \\mid x_{o_{<d}})
              = \\sigma\\Big(\\alpha_0^{(d)} + \\sum_{k<d} \\alpha_k^{(d)} x_{o_k}\\Big),

    that is a strictly lower-triangular (in the ordering) weight matrix: about
    :math:`D^2/2` parameters. With another ``output`` the same linear map gives
    the P parameters of each conditional (``D * P`` rows).

    Args:
        event_shape: the shape of one example (flattened in C order).
        order: a permutation of the D flat indices, or None for 0..D-1.
        output, num_levels, num_components: the conditional (see
            :class:`~pyro_dgm.models.autoregressive.AutoregressiveModel`).

    Cost: ``log_prob`` O(D^2) per example; ``sample`` D passes, O(D^3).

    Example::

        >>> import torch, pyro_dgm
        >>> m = FVSBN(10)
        >>> x = torch.bernoulli(torch.full((64, 10), 0.3))
        >>> _ = pyro_dgm.fit(m.model, None, x, steps=5, progress=False)
        >>> m.sample(4).shape
        torch.Size([4, 10])
    """

    def __init__(self, event_shape, order=None, output: str = "bernoulli", num_levels: int | None = None,
                 num_components: int = 5):
        super().__init__(event_shape, output, num_levels, num_components)
        d, p = self.dim, self.num_params
        self.register_buffer("order", check_order(order, d))
        rank = inverse_order(self.order)
        self.register_buffer("mask", (rank.unsqueeze(1) > rank.unsqueeze(0)).float().repeat_interleave(p, 0))
        self.weight = nn.Parameter(torch.empty(d * p, d).uniform_(-1, 1) / math.sqrt(d))
        self.bias = nn.Parameter(torch.zeros(d, p))

    def forward(self, u):
        n = u.shape[0]
        return F.linear(u.reshape(n, -1), self.weight * self.mask).view(n, self.dim, self.num_params) + self.bias
