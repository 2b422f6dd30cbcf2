"""NADE: shared hidden weights, all D conditionals in O(D H) with a running sum."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AutoregressiveModel, check_order, inverse_order
from ...checks import count

__all__ = ["NADE"]


class NADE(AutoregressiveModel):
    """Neural autoregressive distribution estimator (Larochelle and Murray, 2011).

    One hidden layer whose input weights are shared by all conditionals:

    .. math:: h_d = \\sigma(a_d), \\quad a_d = c + W_{:, o_{<d}}\\, x_{o_{<d}}, \\qquad
              p(x_{o_d} = 1 \\mid x_{o_{<d}}) = \\sigma(b_{o_d} + V_{o_d} h_d).

    Since :math:`a_{d+1} = a_d + W_{:, o_d} x_{o_d}`, all D pre-activations are one
    exclusive cumulative sum over the ordering: ``log_prob`` costs O(D H), not the
    O(D^2 H) of D separate passes, and so does ``sample`` (the same running sum,
    one dimension at a time). The network returns logits, scored by
    ``Bernoulli(logits=...)``: the sigmoid is applied once.

    Args:
        event_shape: the shape of one example (flattened in C order).
        hidden: H.
        order: a permutation of the D flat indices, or None for 0..D-1.
        output, num_levels, num_components: the conditional (see
            :class:`~pyro_dgm.models.autoregressive.AutoregressiveModel`); with P
            parameters per dimension, :math:`V_{o_d}` is a P x H matrix.

    Example::

        >>> import torch
        >>> m = NADE(10, hidden=16)
        >>> x = torch.bernoulli(torch.full((3, 10), 0.5))
        >>> m.log_prob(x).shape, m.sample(2).shape
        (torch.Size([3]), torch.Size([2, 10]))
    """

    def __init__(self, event_shape, hidden: int = 500, order=None, output: str = "bernoulli",
                 num_levels: int | None = None, num_components: int = 5):
        super().__init__(event_shape, output, num_levels, num_components)
        count("hidden", hidden)
        d, p = self.dim, self.num_params
        self.register_buffer("order", check_order(order, d))
        self.register_buffer("rank", inverse_order(self.order))
        self.W = nn.Parameter(torch.randn(d, hidden) / math.sqrt(d))  # row j: weights of input x_j
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(d, p, hidden) / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(d, p))

    def forward(self, u):
        n = u.shape[0]
        up = u.reshape(n, -1)[:, self.order]                           # (n, D) in the ordering
        running = torch.cumsum(up.unsqueeze(-1) * self.W[self.order], 1)  # (n, D, H): sum over k <= d
        h = torch.sigmoid(self.c + F.pad(running[:, :-1], (0, 0, 1, 0)))  # exclusive: k < d
        params = torch.einsum("ndh,dph->ndp", h, self.V[self.order]) + self.b[self.order]
        return params[:, self.rank]

    def sample(self, n: int) -> torch.Tensor:
        """Ancestral sampling in O(D H) per example: the running sum, one dimension at a time."""
        x = torch.zeros(n, self.dim, device=self._device())
        with torch.no_grad():
            a = self.c.expand(n, -1)
            for j in self.order.tolist():
                params = torch.sigmoid(a) @ self.V[j].T + self.b[j]
                x[:, j] = self.output.distribution(params).sample()
                a = a + self.output.encode(x[:, j]).unsqueeze(-1) * self.W[j]
        return x.view(n, *self.event_shape)
