"""NADE: shared hidden weights, all D conditionals in O(D H) with a running sum."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AutoregressiveModel, check_order, inverse_order, mixture_log_prob, mixture_sample
from ...checks import count
from ...distributions.autoregressive import AutoregressiveDistribution

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

    With ``num_orderings = K > 1`` (and ``order="random"``) one set of weights
    serves K random orderings (a finite set of Uria et al.'s order-agnostic NADE, 2014):
    in training mode each call of ``distribution`` / ``model`` uses the next
    ordering in turn, and in eval mode the density is the ensemble's uniform
    mixture :math:`\\frac{1}{K}\\sum_k p(x \\mid o_k)`, sampled by drawing k
    first.

    Args:
        event_shape: the shape of one example (flattened in C order).
        hidden: H.
        order: a permutation of the D flat indices, None or "natural" for
            0..D-1, or "random" (orderings drawn with ``seed``).
        num_orderings: K, the orderings of the ensemble (K > 1 needs ``order="random"``).
        seed: seeds the random orderings.
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
                 num_levels: int | None = None, num_components: int = 5, num_orderings: int = 1, seed: int = 0):
        super().__init__(event_shape, output, num_levels, num_components)
        count("hidden", hidden)
        count("num_orderings", num_orderings)
        if num_orderings > 1 and order != "random":
            raise ValueError(f"order: num_orderings={num_orderings} needs order='random', got {order!r}")
        d, p = self.dim, self.num_params
        g = torch.Generator().manual_seed(int(seed))
        orders = [torch.randperm(d, generator=g) if order == "random" else
                  check_order(None if order == "natural" else order, d) for _ in range(num_orderings)]
        self.num_orderings = num_orderings
        self.register_buffer("orders", torch.stack(orders))
        self.register_buffer("ranks", torch.stack([inverse_order(o) for o in orders]))
        self.register_buffer("_turn", torch.zeros((), dtype=torch.long))  # the ordering that trains next
        self._register_load_state_dict_pre_hook(_one_ordering_checkpoint)
        self.W = nn.Parameter(torch.randn(d, hidden) / math.sqrt(d))  # row j: weights of input x_j
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(d, p, hidden) / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(d, p))

    @property
    def order(self) -> torch.Tensor:
        """The ordering in use: the one that trains next (the only one when K = 1)."""
        return self.orders[int(self._turn)]

    def forward(self, u, k: int | None = None):
        """Parameters ``(n, D, P)`` of the conditionals along ordering k (default: :attr:`order`)."""
        k = int(self._turn) if k is None else k
        order, rank = self.orders[k], self.ranks[k]
        n = u.shape[0]
        up = u.reshape(n, -1)[:, order]                           # (n, D) in the ordering
        running = torch.cumsum(up.unsqueeze(-1) * self.W[order], 1)  # (n, D, H): sum over k <= d
        h = torch.sigmoid(self.c + F.pad(running[:, :-1], (0, 0, 1, 0)))  # exclusive: k < d
        params = torch.einsum("ndh,dph->ndp", h, self.V[order]) + self.b[order]
        return params[:, rank]

    def log_prob_under(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """:math:`\\log p(x \\mid o_k)`, the density along ordering k alone, shape ``(n,)``."""
        params = self(self.output.encode(x), k)
        return self.output.distribution(params).log_prob(x.reshape(x.shape[0], -1)).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's :math:`\\log \\frac{1}{K}\\sum_k p(x \\mid o_k)` (K = 1: the one ordering's)."""
        return mixture_log_prob(self.log_prob_under, x, self.num_orderings)

    def sample(self, n: int) -> torch.Tensor:
        """Ancestral sampling in O(D H) per example: draw each example's ordering, then the running sum,
        one dimension at a time."""
        with torch.no_grad():
            x = mixture_sample(n, self.num_orderings, self._sample_along, (self.dim,), self._device())
        return x.view(n, *self.event_shape)

    def _sample_along(self, rows: torch.Tensor, k: int) -> torch.Tensor:
        """Draws for the ``rows`` (a bool mask) that take ordering k."""
        n, order = int(rows.sum()), self.orders[k]
        x = torch.zeros(n, self.dim, device=self._device())
        a = self.c.expand(n, -1)
        for j in order.tolist():
            params = torch.sigmoid(a) @ self.V[j].T + self.b[j]
            x[:, j] = self.output.distribution(params).sample()
            a = a + self.output.encode(x[:, j]).unsqueeze(-1) * self.W[j]
        return x

    def distribution(self, n: int) -> AutoregressiveDistribution:
        """In training mode with K > 1: the density along the next ordering in turn; otherwise the ensemble's."""
        log_prob = self.log_prob
        if self.training and self.num_orderings > 1:
            k = int(self._turn)
            self._turn.fill_((k + 1) % self.num_orderings)
            log_prob = functools.partial(self.log_prob_under, k=k)
        return AutoregressiveDistribution(log_prob, self.sample, self.event_shape, (n,), self.output.support)


def _one_ordering_checkpoint(state, prefix, *_):
    """Checkpoints from before ``num_orderings`` hold ``order`` and ``rank``: they are ordering 0."""
    if prefix + "order" in state:
        state[prefix + "orders"] = state.pop(prefix + "order").unsqueeze(0)
        state[prefix + "ranks"] = state.pop(prefix + "rank").unsqueeze(0)
        state.setdefault(prefix + "_turn", torch.zeros((), dtype=torch.long))
