"""An RNN (GRU or LSTM) over the dimensions in a fixed ordering."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import AutoregressiveModel, check_order, inverse_order
from ...checks import count

__all__ = ["AutoregressiveRNN"]

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class AutoregressiveRNN(AutoregressiveModel):
    """A recurrent network reads :math:`x_{o_1}, \\dots, x_{o_{d-1}}` and emits the conditional of :math:`x_{o_d}`.

    .. math:: s_d = \\mathrm{RNN}(s_{d-1}, [x_{o_{d-1}}, \\mathbb{1}_{d=1}]), \\qquad
              p(x_{o_d} \\mid x_{o_{<d}}) = p(x_{o_d};\\, A s_d + c_d)

    (a raster ordering on images, as in the row/diagonal LSTMs of van den Oord
    et al., 2016, here over single dimensions). :math:`c_d` is a learned bias per
    step, so the model holds the factorized model. ``log_prob`` is one pass of
    the RNN over the shifted sequence; ``sample`` steps the same RNN D times,
    carrying its state: O(D) cells in total.

    Args:
        event_shape: the shape of one example (flattened in C order: raster on images).
        hidden: state size.
        num_layers: stacked RNN layers.
        cell: "gru" or "lstm".
        order: a permutation of the D flat indices, or None for 0..D-1.
        output, num_levels, num_components: the conditional (see
            :class:`~pyro_dgm.models.autoregressive.AutoregressiveModel`).

    Example::

        >>> import torch
        >>> m = AutoregressiveRNN((1, 4, 4), hidden=8, cell="lstm")
        >>> m.log_prob(torch.ones(2, 1, 4, 4)).shape, m.sample(3).shape
        (torch.Size([2]), torch.Size([3, 1, 4, 4]))
    """

    def __init__(self, event_shape, hidden: int = 128, num_layers: int = 1, cell: str = "gru", order=None,
                 output: str = "bernoulli", num_levels: int | None = None, num_components: int = 5):
        super().__init__(event_shape, output, num_levels, num_components)
        if cell not in CELLS:
            raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
        for name, value in (("hidden", hidden), ("num_layers", num_layers)):
            count(name, value)
        self.register_buffer("order", check_order(order, self.dim))
        self.register_buffer("rank", inverse_order(self.order))
        self.rnn = CELLS[cell](2, hidden, num_layers, batch_first=True)
        self.readout = nn.Linear(hidden, self.num_params)
        self.step_bias = nn.Parameter(torch.zeros(self.dim, self.num_params))

    def forward(self, u):
        n = u.shape[0]
        seq = u.reshape(n, -1)[:, self.order]
        prev = F.pad(seq[:, :-1], (1, 0))
        first = torch.zeros_like(seq)
        first[:, 0] = 1.0
        states, _ = self.rnn(torch.stack([prev, first], -1))
        return (self.readout(states) + self.step_bias)[:, self.rank]

    def sample(self, n: int) -> torch.Tensor:
        """Ancestral sampling, one RNN step per dimension."""
        x = torch.zeros(n, self.dim, device=self._device())
        inp = torch.zeros(n, 1, 2, device=x.device)
        inp[:, 0, 1] = 1.0
        state = None
        with torch.no_grad():
            for d, j in enumerate(self.order.tolist()):
                out, state = self.rnn(inp, state)
                x[:, j] = self.output.distribution(self.readout(out[:, 0]) + self.step_bias[d]).sample()
                inp = torch.stack([self.output.encode(x[:, j]), torch.zeros_like(x[:, j])], -1).unsqueeze(1)
        return x.view(n, *self.event_shape)
