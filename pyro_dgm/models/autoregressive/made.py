"""MADE: a masked MLP, trained over several orderings and connectivities, averaged at test time."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from ...distributions.autoregressive import AutoregressiveDistribution
from .base import AutoregressiveModel, check_order
from ...checks import count, widths

__all__ = ["MADE", "made_degrees"]

CONNECTIVITY = ("random", "sequential")


def made_degrees(order: torch.Tensor, hidden, connectivity: str, generator: torch.Generator):
    """The degrees :math:`m^0, m^1, \\dots, m^L` of the input and hidden units of one mask set.

    :math:`m^0(j)` is the position (1..D) of input j in ``order``; hidden degrees lie
    in :math:`[\\min m^{l-1}, D-1]`, drawn uniformly ("random", Germain et al.) or
    cycled (``"sequential"``).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> [m.tolist() for m in made_degrees(torch.tensor([2, 0, 1]), (4,), "sequential", g)]
        [[2, 3, 1], [1, 2, 1, 2]]
    """
    d = order.numel()
    degrees = [torch.empty_like(order)]
    degrees[0][order] = torch.arange(1, d + 1)
    top = max(d - 1, 1)
    for width in hidden:
        low = min(int(degrees[-1].min()), top)
        if connectivity == "random":
            degrees.append(torch.randint(low, top + 1, (width,), generator=generator))
        else:
            degrees.append(low + torch.arange(width) % (top - low + 1))
    return degrees


def made_masks(degrees, num_params: int):
    """Masks :math:`M^l_{k k'} = [m^l(k) \\ge m^{l-1}(k')]` and :math:`M^V_{d k} = [m^0(d) > m^L(k)]`.

    The output mask repeats each row ``num_params`` times (P numbers per dimension).

    Example::

        >>> degrees = [torch.tensor([1, 2, 3]), torch.tensor([1, 2])]
        >>> [m.int().tolist() for m in made_masks(degrees, 1)]
        [[[1, 0, 0], [1, 1, 0]], [[0, 0], [1, 0], [1, 1]]]
    """
    masks = [(cur.unsqueeze(1) >= prev.unsqueeze(0)).float() for prev, cur in zip(degrees[:-1], degrees[1:])]
    out = (degrees[0].unsqueeze(1) > degrees[-1].unsqueeze(0)).float()
    return masks + [out.repeat_interleave(num_params, 0)]


class MADE(AutoregressiveModel):
    """Masked autoencoder for distribution estimation (Germain et al., 2015).

    An MLP :math:`h^l = \\mathrm{relu}(b^l + (W^l \\odot M^l) h^{l-1})` whose binary
    masks come from unit degrees :math:`m^l(k)`: a hidden unit of degree m sees
    inputs :math:`x_{o_1..o_m}` only, and the output of :math:`x_{o_d}` sees
    hidden units of degree < d. The masks multiply the weights inside the graph
    (``F.linear(h, W * M)``), so switching masks never changes the weights.

    With ``num_masks = K > 1`` the model holds K mask sets (orderings and/or
    connectivities). In training mode (``module.train()``, as in ``fit``) each
    call of ``distribution`` / ``model`` uses the next mask set in turn; in eval
    mode the density is the paper's ensemble, the average over the K models,

    .. math:: p(x) = \\frac{1}{K} \\sum_{k=1}^{K} p(x \\mid M_k),

    a uniform mixture, sampled by drawing k then ancestrally along ordering k.

    Args:
        event_shape: the shape of one example (flattened in C order).
        hidden: widths of the hidden layers (one or more).
        num_masks: K.
        order: "natural" or None (0..D-1 for every mask set), "random" (a new
            ordering per mask set, drawn with ``seed``: order-agnostic training;
            with ``num_masks=1`` this is the paper's single random ordering) or a
            permutation used by all. The default keeps the raster order, which
            ``inpaint`` uses for an exact bottom-half completion; the benchmark
            (``benchmarks/quality_autoregressive.py``) reports both single-ordering choices.
        connectivity: "random" (degrees drawn per mask set) or "sequential".
        seed: seeds the orderings and degrees.
        output, num_levels, num_components: the conditional (see
            :class:`~pyro_dgm.models.autoregressive.AutoregressiveModel`).

    Example::

        >>> import torch
        >>> m = MADE(10, hidden=(32, 32), num_masks=4, order="random")
        >>> w = m.layers[0].weight.clone()
        >>> x = torch.bernoulli(torch.full((5, 10), 0.5))
        >>> _ = [m.distribution(5).log_prob(x) for _ in range(8)]   # cycles the 4 masks twice
        >>> bool(torch.equal(w, m.layers[0].weight))
        True
    """

    def __init__(self, event_shape, hidden=(500,), num_masks: int = 1, order=None, connectivity: str = "random",
                 seed: int = 0, output: str = "bernoulli", num_levels: int | None = None, num_components: int = 5):
        super().__init__(event_shape, output, num_levels, num_components)
        hidden = widths("hidden", hidden)
        count("num_masks", num_masks)
        if connectivity not in CONNECTIVITY:
            raise ValueError(f"connectivity: expected one of {CONNECTIVITY}, got {connectivity!r}")
        if isinstance(order, str) and order not in ("natural", "random"):
            raise ValueError(f"order: expected 'natural' (or None), 'random' or a permutation, got {order!r}")
        order = None if order == "natural" else order
        g = torch.Generator().manual_seed(int(seed))
        orders, masks = [], []
        for _ in range(num_masks):
            o = torch.randperm(self.dim, generator=g) if order == "random" else check_order(order, self.dim)
            orders.append(o)
            masks.append(made_masks(made_degrees(o, hidden, connectivity, g), self.num_params))
        self.num_masks = num_masks
        # A buffer, so checkpoints carry which mask set trains next.
        self.register_buffer("_mask_index", torch.zeros((), dtype=torch.long))
        self.register_buffer("orders", torch.stack(orders))
        sizes = (self.dim,) + hidden + (self.dim * self.num_params,)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for l in range(len(self.layers)):
            self.register_buffer(f"masks_{l}", torch.stack([m[l] for m in masks]))

    @property
    def mask_index(self) -> int:
        """The current mask set (0..num_masks-1)."""
        return int(self._mask_index)

    @mask_index.setter
    def mask_index(self, k: int) -> None:
        self._mask_index.fill_(k)

    @property
    def ordering(self) -> torch.Tensor:
        """The ordering of the current mask set."""
        return self.orders[self.mask_index]

    def forward(self, u, mask: int | None = None):
        k = self.mask_index if mask is None else mask
        n, h = u.shape[0], u.reshape(u.shape[0], -1)
        for l, layer in enumerate(self.layers):
            if l:
                h = F.relu(h)
            h = F.linear(h, layer.weight * getattr(self, f"masks_{l}")[k], layer.bias)
        return h.view(n, self.dim, self.num_params)

    def use_mask(self, k: int) -> "MADE":
        """Make mask set k the current one (``conditionals``, ``ordering``, training)."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_masks:
            raise ValueError(f"k: expected a mask index in 0..{self.num_masks - 1}, got {k!r}")
        self.mask_index = k
        return self

    def log_prob_under(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """:math:`\\log p(x \\mid M_k)`, the density of mask set k alone, shape ``(n,)``."""
        params = self(self.output.encode(x), k)
        return self.output.distribution(params).log_prob(x.reshape(x.shape[0], -1)).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's :math:`\\log \\frac{1}{K}\\sum_k p(x \\mid M_k)`, shape ``(n,)``."""
        lps = torch.stack([self.log_prob_under(x, k) for k in range(self.num_masks)])
        return torch.logsumexp(lps, 0) - math.log(self.num_masks)

    def sample(self, n: int) -> torch.Tensor:
        """Draw each example's mask set uniformly, then sample ancestrally along its ordering."""
        which = torch.randint(self.num_masks, (n,), device=self._device())
        x = torch.zeros(n, *self.event_shape, device=self._device())
        current = self.mask_index
        try:
            for k in which.unique().tolist():
                self.mask_index = k
                x[which == k] = super().sample(int((which == k).sum()))
        finally:
            self.mask_index = current
        return x

    def distribution(self, n: int) -> AutoregressiveDistribution:
        """In training mode with K > 1: the next mask set's density; otherwise the ensemble's."""
        log_prob = self.log_prob
        if self.training and self.num_masks > 1:
            log_prob = functools.partial(self.log_prob_under, k=self.mask_index)
            self.mask_index = (self.mask_index + 1) % self.num_masks
        return AutoregressiveDistribution(log_prob, self.sample, self.event_shape, (n,), self.output.support)
