"""MADE: a masked MLP, trained over several orderings and connectivities, averaged at test time."""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from ...distributions.autoregressive import AutoregressiveDistribution
from .base import AutoregressiveModel, check_order, inverse_order, mixture_log_prob, mixture_sample
from ...checks import count, widths

__all__ = ["MADE", "made_degrees"]

CONNECTIVITY = ("random", "sequential")
ORDERS = ("natural", "random", "agnostic")


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

    With ``order="agnostic"`` every training call draws a new ordering and, with
    random connectivity, new hidden degrees (Germain et al.'s order-agnostic
    training, after Uria et al., 2014), so the network learns the conditionals
    of every ordering; the K stored mask sets are the test-time ensemble, and
    :func:`pyro_dgm.inpaint` completes any mask exactly by moving each row's
    known pixels to the front of each ordering (:meth:`known_first`, :meth:`walk`).

    Args:
        event_shape: the shape of one example (flattened in C order).
        hidden: widths of the hidden layers (one or more).
        num_masks: K.
        order: "natural" or None (0..D-1 for every mask set), "random" (a new
            ordering per mask set, drawn with ``seed``: training over K orderings;
            with ``num_masks=1`` this is the paper's single random ordering),
            "agnostic" (a new ordering per training call, K random ones stored
            for evaluation) or a permutation used by all. The default keeps the raster order, which
            ``inpaint`` uses for an exact bottom-half completion; the benchmark
            (``benchmarks/quality_autoregressive.py``) reports both single-ordering choices.
        connectivity: "random" (degrees drawn per mask set) or "sequential".
        seed: seeds the orderings and degrees.
        dropout: the probability of zeroing a hidden unit in training mode
            (``F.dropout`` after each hidden layer); 0 turns it off.
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
                 seed: int = 0, output: str = "bernoulli", num_levels: int | None = None, num_components: int = 5,
                 dropout: float = 0.0):
        super().__init__(event_shape, output, num_levels, num_components)
        hidden = widths("hidden", hidden)
        count("num_masks", num_masks)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        if connectivity not in CONNECTIVITY:
            raise ValueError(f"connectivity: expected one of {CONNECTIVITY}, got {connectivity!r}")
        if isinstance(order, str) and order not in ORDERS:
            raise ValueError(f"order: expected 'natural' (or None), 'random', 'agnostic' or a permutation, "
                             f"got {order!r}")
        self.agnostic = order == "agnostic"
        self.hidden, self.connectivity = hidden, connectivity
        g = torch.Generator().manual_seed(int(seed))
        orders, masks, degrees = [], [], []
        random = order in ("random", "agnostic")
        for _ in range(num_masks):
            o = torch.randperm(self.dim, generator=g) if random else check_order(
                None if order == "natural" else order, self.dim)
            orders.append(o)
            degrees.append(made_degrees(o, hidden, connectivity, g))
            masks.append(made_masks(degrees[-1], self.num_params))
        self.num_masks = num_masks
        # A buffer, so checkpoints carry which mask set trains next.
        self.register_buffer("_mask_index", torch.zeros((), dtype=torch.long))
        self.register_buffer("orders", torch.stack(orders))
        sizes = (self.dim,) + hidden + (self.dim * self.num_params,)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for l in range(len(self.layers)):
            self.register_buffer(f"masks_{l}", torch.stack([m[l] for m in masks]))
        # The hidden degrees, for known_first; not saved (seed rebuilds them), so older checkpoints still load.
        for l in range(1, len(self.layers)):
            self.register_buffer(f"degrees_{l}", torch.stack([m[l] for m in degrees]), persistent=False)

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

    def forward(self, u, mask=None, *args):
        """The conditionals' parameters ``(n, D, P)`` under mask set ``mask`` (an index, default the
        current one, or the masks themselves, as :meth:`fresh_masks` and :meth:`masks_along` give them)."""
        first, last = self.extra_inputs(*args)
        n, h = u.shape[0], u.reshape(u.shape[0], -1)
        for l, (layer, m) in enumerate(zip(self.layers, self.masks_of(mask))):
            if l:
                h = F.dropout(F.relu(h), self.dropout, self.training)
            h = F.linear(h, layer.weight * m, layer.bias) + (first if l == 0 else 0.0)
        return (h + last).view(n, self.dim, self.num_params)

    def extra_inputs(self, *args):
        """What further inputs (a label) add to the first hidden layer and to the output: none here."""
        return 0.0, 0.0

    def masks_of(self, mask=None) -> list:
        """The per-layer masks of mask set ``mask`` (an index or None: the current one); a list passes through."""
        if isinstance(mask, (list, tuple)):
            return list(mask)
        k = self.mask_index if mask is None else mask
        return [getattr(self, f"masks_{l}")[k] for l in range(len(self.layers))]

    def fresh_masks(self) -> list:
        """A new random ordering and connectivity (torch's random stream): one order-agnostic training step's."""
        order = torch.randperm(self.dim)
        masks = made_masks(made_degrees(order, self.hidden, self.connectivity, None), self.num_params)
        return [m.to(self.masks_0) for m in masks]

    def known_first(self, known: torch.Tensor, k: int) -> torch.Tensor:
        """Per row, ordering k with the row's known pixels moved to the front: ``(n, D)``.

        The moves are stable (the known pixels, then the unknown ones, each in
        ordering k's order). With mask set k's hidden degrees this is another
        ordering of the same network, which order-agnostic training has taught.

        Args:
            known: bool ``(n, *event_shape)``, True where a pixel is known.
        """
        known = known.reshape(known.shape[0], self.dim)
        return torch.argsort((~known).long() * self.dim + inverse_order(self.orders[k]).to(known.device), dim=-1)

    def masks_along(self, order: torch.Tensor, k: int) -> list:
        """The masks of ordering ``order`` (one permutation) with mask set k's hidden degrees, for :meth:`forward`."""
        degrees = [inverse_order(order) + 1] + [getattr(self, f"degrees_{l}")[k] for l in range(1, len(self.layers))]
        return [m.to(self.masks_0) for m in made_masks(degrees, self.num_params)]

    @torch.no_grad()
    def walk(self, x: torch.Tensor, known: torch.Tensor, k: int, *args, draw: bool = True):
        """Go through each row's :meth:`known_first` ordering under mask set k, one pixel at a time.

        Returns ``(values, log_probs)``, both ``(n, D)``: the pixels (the unknown
        ones drawn from their conditionals if ``draw``, else ``x``'s) and the log
        density of each under its conditional, so with the known pixels first
        :math:`\\log p(x_u \\mid x_k)` is the sum over the unknown ones, exactly.

        Written by hand, as NADE samples: the first layer's pre-activations take
        each pixel's column once the pixel is set, for the hidden units whose
        degree reaches its position, so rows with different orderings share
        every matrix product (per-row masks would cost a (rows, H, D) product
        per step).
        """
        n, d, p = x.shape[0], self.dim, self.num_params
        values, known = x.reshape(n, d).clone(), known.reshape(n, d)
        orders, rows = self.known_first(known, k), torch.arange(n, device=x.device)
        first, last = self.extra_inputs(*args)
        deepest = len(self.layers) - 1
        degree_in, degree_out = self.degrees_1[k], getattr(self, f"degrees_{deepest}")[k]
        out, w_in = self.layers[-1], self.layers[0].weight.T.contiguous()  # w_in[j]: pixel j's column
        last = torch.as_tensor(last, dtype=x.dtype, device=x.device).expand(n, d * p).reshape(n, d, p)
        pre = (self.layers[0].bias + first).expand(n, -1).clone()
        log_probs = torch.zeros(n, d, dtype=x.dtype, device=x.device)
        for t in range(d):
            j = orders[:, t]  # each row's pixel at position t + 1 (degree t + 1)
            h = F.relu(pre)
            for l in range(1, deepest):
                h = F.relu(F.linear(h, self.layers[l].weight * getattr(self, f"masks_{l}")[k], self.layers[l].bias))
            h = h * (degree_out <= t)  # the output of degree t + 1 sees hidden units of degree <= t
            # All D outputs by one matrix product (cheaper than gathering each row's output weights), then row j's.
            params = F.linear(h, out.weight, out.bias).view(n, d, p)[rows, j] + last[rows, j]
            conditional = self.output.distribution(params)
            if draw:
                values[rows, j] = torch.where(known[rows, j], values[rows, j], conditional.sample())
            log_probs[rows, j] = conditional.log_prob(values[rows, j])
            # Hidden units of degree >= t + 1 see this pixel from now on.
            seen = self.output.encode(values[rows, j]).unsqueeze(-1) * w_in[j]
            pre += seen * (degree_in > t)
        return values.view(x.shape), log_probs

    def use_mask(self, k: int) -> "MADE":
        """Make mask set k the current one (``conditionals``, ``ordering``, training)."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_masks:
            raise ValueError(f"k: expected a mask index in 0..{self.num_masks - 1}, got {k!r}")
        self.mask_index = k
        return self

    def log_prob_under(self, x: torch.Tensor, k) -> torch.Tensor:
        """:math:`\\log p(x \\mid M_k)`, the density of mask set k alone (an index or its masks), shape ``(n,)``."""
        params = self(self.output.encode(x), k)
        return self.output.distribution(params).log_prob(x.reshape(x.shape[0], -1)).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's :math:`\\log \\frac{1}{K}\\sum_k p(x \\mid M_k)`, shape ``(n,)``."""
        return mixture_log_prob(self.log_prob_under, x, self.num_masks)

    def sample(self, n: int) -> torch.Tensor:
        """Draw each example's mask set uniformly, then sample ancestrally along its ordering."""
        current = self.mask_index
        try:
            return mixture_sample(n, self.num_masks, self._sample_with_mask, self.event_shape, self._device())
        finally:
            self.mask_index = current

    def _sample_with_mask(self, rows, k):
        self.mask_index = k
        return super().sample(int(rows.sum()))

    def training_masks(self):
        """The masks of this training call: fresh ones (order-agnostic), the next of K > 1 sets, or None
        (eval mode, or one mask set: the ensemble's density)."""
        if not self.training:
            return None
        if self.agnostic:
            return self.fresh_masks()
        if self.num_masks == 1:
            return None
        k = self.mask_index
        self.mask_index = (k + 1) % self.num_masks
        return k

    def distribution(self, n: int) -> AutoregressiveDistribution:
        """In training mode: :meth:`training_masks`' density; otherwise the ensemble's."""
        masks = self.training_masks()
        log_prob = self.log_prob if masks is None else functools.partial(self.log_prob_under, k=masks)
        return AutoregressiveDistribution(log_prob, self.sample, self.event_shape, (n,), self.output.support)
