"""What every autoregressive model shares: the output conditional, the ordering, the program.

A model computes, from data x, the parameters of every conditional
:math:`p(x_{o_d} \\mid x_{o_{<d}})` at once (``conditionals(x)``, shape
``(n, D, P)`` indexed by the flat position of ``x.reshape(n, -1)``), such that
the parameters of dimension :math:`o_d` depend on :math:`x_{o_{<d}}` only.
Then ``log_prob`` is one pass and ``sample`` is D passes along ``ordering``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...distributions.autoregressive import AutoregressiveDistribution, make_output
from ..base import DistributionModel
from ...checks import as_event_shape

__all__ = ["AutoregressiveModel", "check_order", "mixture_log_prob", "mixture_sample"]


def mixture_log_prob(log_prob_under, x: torch.Tensor, k: int, *args, log_weights=None) -> torch.Tensor:
    """:math:`\\log \\frac{1}{K}\\sum_k p(x \\mid M_k)` of an ensemble (MADE's mask sets, NADE's
    orderings) from ``log_prob_under(x, k, *args)``, shape ``(n,)``; with ``log_weights`` (K,),
    :math:`\\log \\sum_k w_k p(x \\mid M_k)` (:class:`~pyro_dgm.models.Mixture`)."""
    lps = torch.stack([log_prob_under(x, member, *args) for member in range(k)])
    if log_weights is None:
        return torch.logsumexp(lps, 0) - math.log(k)
    return torch.logsumexp(lps + log_weights.unsqueeze(-1), 0)


def mixture_sample(n: int, k: int, draw, shape, device, weights=None) -> torch.Tensor:
    """n draws ``(n, *shape)`` of a mixture of k members (uniform, or ``weights`` (k,)): each row's
    member first, then ``draw(rows, member)`` (a bool row mask and an index) for the rows of each
    member in turn."""
    which = (torch.randint(k, (n,), device=device) if weights is None
             else torch.multinomial(weights.to(device), n, replacement=True))
    out = torch.zeros(n, *shape, device=device)
    for member in which.unique().tolist():
        rows = which == member
        out[rows] = draw(rows, member)
    return out


def check_order(order, dim: int) -> torch.Tensor:
    """``order`` as a LongTensor permutation of ``range(dim)`` (None: the natural order 0..D-1).

    Example::

        >>> check_order([2, 0, 1], 3)
        tensor([2, 0, 1])
    """
    if order is None:
        return torch.arange(dim)
    perm = torch.as_tensor(order, dtype=torch.long).flatten() if not isinstance(order, str) else None
    if perm is None or perm.numel() != dim or not torch.equal(perm.sort().values, torch.arange(dim)):
        raise ValueError(f"order: expected a permutation of 0..{dim - 1}, got {order!r}")
    return perm


def inverse_order(order: torch.Tensor) -> torch.Tensor:
    """rank[j] = position of dimension j in ``order``."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return rank


class AutoregressiveModel(DistributionModel, nn.Module):
    """Base class: a Pyro program ``model(x=None, num_samples=None)`` with an exact density.

    Subclasses set the buffer ``order`` (the flat indices in sampling order)
    and define ``forward(u) -> (n, D, P)``, the conditionals' parameters
    computed from the encoded data ``u = output.encode(x)``.

    Args:
        event_shape: the shape of one example.
        output: "bernoulli", "categorical", "logistic_mixture" or "gaussian_mixture".
        num_levels: grey levels L of "categorical" and "logistic_mixture" (data in 0..L-1).
        num_components: K of the two mixtures.

    Example::

        >>> import torch
        >>> from pyro_dgm.models.autoregressive import FVSBN
        >>> m = FVSBN(3, order=[2, 0, 1])
        >>> m.ordering, m.conditionals(torch.zeros(5, 3)).shape
        (tensor([2, 0, 1]), torch.Size([5, 3, 1]))
    """

    def __init__(self, event_shape, output: str = "bernoulli", num_levels: int | None = None,
                 num_components: int = 5):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.dim = math.prod(self.event_shape)
        self.output = make_output(output, num_levels, num_components)
        self.num_params = self.output.num_params

    @property
    def ordering(self) -> torch.Tensor:
        """The flat indices of ``x.reshape(n, -1)`` in the order they are generated."""
        return self.order

    def _device(self):
        return next(iter(self.parameters())).device

    def conditionals(self, x: torch.Tensor) -> torch.Tensor:
        """Parameters of every conditional, shape ``(n, D, P)``; row d depends on x before d only."""
        return self(self.output.encode(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x) = \\sum_d \\log p(x_{o_d} \\mid x_{o_{<d}})`, shape ``(n,)``."""
        n = x.shape[0]
        return self.output.distribution(self.conditionals(x)).log_prob(x.reshape(n, -1)).sum(-1)

    def sample(self, n: int) -> torch.Tensor:
        """Ancestral sampling: D network passes, one dimension each, along ``ordering``."""
        x = torch.zeros(n, self.dim, device=self._device())
        with torch.no_grad():
            for j in self.ordering.tolist():
                params = self.conditionals(x.view(n, *self.event_shape))[:, j]
                x[:, j] = self.output.distribution(params).sample()
        return x.view(n, *self.event_shape)

    def distribution(self, n: int) -> AutoregressiveDistribution:
        """The distribution of a batch of ``n`` examples (the one at site "x")."""
        return AutoregressiveDistribution(self.log_prob, self.sample, self.event_shape, (n,), self.output.support)

