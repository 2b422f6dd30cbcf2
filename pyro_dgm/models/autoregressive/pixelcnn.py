"""PixelCNN (masked convolutions) and Gated PixelCNN (vertical and horizontal stacks, no blind spot)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import AutoregressiveModel
from ...checks import as_event_shape, count

__all__ = ["PixelCNN", "GatedPixelCNN", "MaskedConv2d", "conv_mask"]


def _groups(channels: int, data_channels: int) -> torch.Tensor:
    """The data channel (0..C-1) each of ``channels`` feature maps belongs to, in contiguous blocks."""
    return torch.arange(channels) * data_channels // channels


def conv_mask(out_channels, in_channels, kernel_size, data_channels, mask_type, center=None):
    """A (out, in, kh, kw) mask: positions before ``center`` in raster order open, after it closed.

    At ``center`` (default: the middle of the kernel), feature maps are split into
    ``data_channels`` groups (R, G, B, ...): output group g sees input groups
    < g (``mask_type="A"``, the first layer: not the pixel's own value) or
    <= g (``"B"``, later layers).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type: expected 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    ci, cj = center if center is not None else (kh // 2, kw // 2)
    rows, cols = torch.arange(kh).unsqueeze(1), torch.arange(kw).unsqueeze(0)
    spatial = ((rows < ci) | ((rows == ci) & (cols < cj))).float()
    g_out, g_in = _groups(out_channels, data_channels), _groups(in_channels, data_channels)
    at_center = (g_out.unsqueeze(1) > g_in.unsqueeze(0)) if mask_type == "A" else (
        g_out.unsqueeze(1) >= g_in.unsqueeze(0))
    mask = spatial.expand(out_channels, in_channels, kh, kw).clone()
    mask[:, :, ci, cj] = at_center.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed mask in the graph: ``conv(x, W * M)``.

    Example::

        >>> c = MaskedConv2d(1, 4, 3, data_channels=1, mask_type="A", padding=1)
        >>> c.mask[0, 0]
        tensor([[1., 1., 1.],
                [1., 0., 0.],
                [0., 0., 0.]])
    """

    def __init__(self, in_channels, out_channels, kernel_size, data_channels, mask_type, center=None,
                 mask=None, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        if mask is None:
            mask = conv_mask(out_channels, in_channels, self.kernel_size, data_channels, mask_type, center)
        self.register_buffer("mask", mask)

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def _check_image(event_shape, hidden, num_layers, kernel_size):
    if len(event_shape) != 3:
        raise ValueError(f"event_shape: expected (channels, height, width), got {tuple(event_shape)}")
    for name, value, low in (("hidden", hidden, event_shape[0]), ("num_layers", num_layers, 1),
                             ("kernel_size", kernel_size, 1)):
        count(name, value, low)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected an odd integer, got {kernel_size}")


class _ImageAutoregressive(AutoregressiveModel):
    """Shared by both PixelCNNs: raster ordering with channels inside a pixel, output layers, position biases.

    Conditionals of pixel (i, j) channel c depend on all channels of the
    pixels before (i, j) in raster order and on channels < c of (i, j) itself.
    Subclasses define ``features(u) -> (n, hidden, H', W)``, which must never
    look at rows below, so that it also runs on the first H' rows alone.
    """

    def __init__(self, event_shape, hidden, output, num_levels, num_components, position_bias):
        super().__init__(event_shape, output, num_levels, num_components)
        c, h, w = self.event_shape
        self.register_buffer("order", torch.arange(self.dim).view(c, h, w).permute(1, 2, 0).reshape(-1))
        p = self.num_params
        self.head = nn.Sequential(nn.ReLU(), MaskedConv2d(hidden, hidden, 1, c, "B"), nn.ReLU(),
                                  MaskedConv2d(hidden, c * p, 1, c, "B"))
        self.position_bias = bool(position_bias)
        if position_bias:
            self.bias_out = nn.Parameter(torch.zeros(c * p, h, w))

    def _to_grid(self, out, rows: slice, cols: slice = slice(None)):
        """Output maps (n, C*P, h, w) of image rows ``rows`` and columns ``cols`` -> parameters (n, C, h, w, P)."""
        if self.position_bias:
            out = out + self.bias_out[:, rows, cols]
        n, c = out.shape[0], self.event_shape[0]
        return out.view(n, c, self.num_params, *out.shape[-2:]).permute(0, 1, 3, 4, 2)

    def _grid(self, u):
        """Parameters on the pixel grid, (n, C, H', W, P); ``u`` may hold only the first H' rows."""
        return self._to_grid(self.head(self.features(u)), slice(0, u.shape[-2]))

    def forward(self, u):
        return self._grid(u).reshape(u.shape[0], self.dim, self.num_params)


class PixelCNN(_ImageAutoregressive):
    """PixelCNN (van den Oord et al., 2016, "Pixel Recurrent Neural Networks", sec. 3.5).

    .. math:: p(x) = \\prod_{i=1}^{H W} \\prod_{c=1}^{C} p(x_{i,c} \\mid x_{<i}, x_{i,<c})

    A k x k convolution with mask A (the pixel itself and everything after it
    closed), then ``num_layers`` residual 3 x 3 convolutions with mask B
    (the pixel's own feature maps open, group by group over channels), then two
    masked 1 x 1 convolutions to P numbers per channel and pixel. The stacked
    masks leave a **blind spot**: pixels above and to the right beyond the
    reach of the first kernel never influence pixel i.

    On small images with a zero background and zero padding, every border
    pixel looks the same to a convolution; ``position_bias=True`` adds learned
    per-position biases after the first layer and to the output (the output
    bias alone contains the factorized per-pixel model). On binarized 8 x 8
    digits a small PixelCNN (hidden 16, 2 layers, 12 epochs) reaches 18.9 nats
    with them and 20.4 without (the per-pixel model: 25.4).

    Args:
        event_shape: (C, H, W), any size and channel count.
        hidden: feature maps per layer (>= C; split into C groups).
        num_layers: residual mask-B layers.
        kernel_size: of the first (mask A) layer, odd.
        position_bias: learned per-position biases.
        output, num_levels, num_components: the conditional (see
            :class:`~pyro_dgm.models.autoregressive.AutoregressiveModel`).

    Example::

        >>> import torch
        >>> m = PixelCNN((1, 8, 8), hidden=16, num_layers=2)
        >>> m.log_prob(torch.zeros(2, 1, 8, 8)).shape, m.sample(3).shape
        (torch.Size([2]), torch.Size([3, 1, 8, 8]))
    """

    def __init__(self, event_shape, hidden: int = 64, num_layers: int = 4, kernel_size: int = 7,
                 position_bias: bool = True, output: str = "bernoulli", num_levels: int | None = None,
                 num_components: int = 5):
        _check_image(as_event_shape(event_shape), hidden, num_layers, kernel_size)
        super().__init__(event_shape, hidden, output, num_levels, num_components, position_bias)
        c, height, width = self.event_shape
        if position_bias:
            self.bias_in = nn.Parameter(torch.zeros(hidden, height, width))
        self.conv_in = MaskedConv2d(c, hidden, kernel_size, c, "A", padding=kernel_size // 2)
        self.layers = nn.ModuleList(MaskedConv2d(hidden, hidden, 3, c, "B", padding=1) for _ in range(num_layers))

    @property
    def reach(self) -> int:
        """How many rows up, and columns either way, a conditional looks: k // 2 for the first layer, 1 per layer."""
        return self.conv_in.kernel_size[0] // 2 + len(self.layers)

    def features(self, u, window=None):
        """Feature maps of ``u``, which holds the image's first rows, or the (rows, cols) ``window`` of it."""
        rows, cols = window or (slice(0, u.shape[-2]), slice(None))
        h = self.conv_in(u)
        if self.position_bias:
            h = h + self.bias_in[:, rows, cols]
        for layer in self.layers:
            h = h + layer(F.relu(h))
        return h

    def _window(self, r: int, col: int):
        """The rows and columns pixel (r, col)'s conditional depends on; the zero padding beyond them is never read."""
        k = self.reach
        return slice(max(0, r - k), r + 1), slice(max(0, col - k), min(self.event_shape[2], col + k + 1))

    def pixel_params(self, x, r: int, col: int):
        """Parameters (n, C, P) of pixel (r, col)'s conditionals, computed on its window of ``x`` only."""
        rows, cols = self._window(r, col)
        out = self.head(self.features(self.output.encode(x[:, :, rows, cols]), (rows, cols)))
        return self._to_grid(out, rows, cols)[:, :, -1, col - cols.start]

    def sample(self, n: int) -> torch.Tensor:
        """Ancestral sampling in raster order, each pass on the window a pixel depends on.

        No layer looks down, and a conditional reaches :attr:`reach` rows up and
        columns either way, so the window's edges change nothing: the same
        draws as full passes, at (reach+1)(2 reach+1) pixels a pass (a third of
        the image at 28 x 28 with the default kernel 7 and 4 layers).
        """
        c, h, w = self.event_shape
        x = torch.zeros(n, c, h, w, device=self._device())
        with torch.no_grad():
            for r in range(h):
                for col in range(w):
                    for ch in range(c):
                        x[:, ch, r, col] = self.output.distribution(self.pixel_params(x, r, col)[:, ch]).sample()
        return x


def _gate(x):
    """tanh(a) * sigmoid(b), with tanh(a) = 2 sigmoid(2a) - 1 (several times faster than tanh on CPU)."""
    a, b = x.chunk(2, 1)
    return (2.0 * torch.sigmoid(2.0 * a) - 1.0) * torch.sigmoid(b)


def _down(x):
    """Shift feature maps one row down: row i then sees only what row i-1 saw."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class _GatedLayer(nn.Module):
    """One layer of both stacks.

    Vertical: a (k//2+1) x k convolution over the rows up to and including the
    current one. Horizontal: a 1 x (k//2+1) convolution over the pixels to the
    left and the pixel itself (mask A or B over channel groups there), plus a
    1 x 1 map of the vertical stack shifted one row down (the "link"), a gate
    :math:`\\tanh(W_f * x) \\odot \\sigma(W_g * x)`, a masked 1 x 1 and a residual.
    """

    def __init__(self, in_ch, hidden, kernel_size, data_channels, first):
        super().__init__()
        k, c = kernel_size // 2, data_channels
        self.k, self.first = k, first
        self.vertical = nn.Conv2d(in_ch, 2 * hidden, (k + 1, 2 * k + 1))
        gated_mask = conv_mask(hidden, in_ch, (1, k + 1), c, "A" if first else "B", center=(0, k))
        self.horizontal = MaskedConv2d(in_ch, 2 * hidden, (1, k + 1), c, None, mask=torch.cat([gated_mask] * 2))
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.h_out = MaskedConv2d(hidden, hidden, 1, c, "B")

    def vertical_pre(self, v):
        """Pre-activations of the vertical stack: row i sees rows <= i."""
        return self.vertical(F.pad(v, (self.k, self.k, self.k, 0)))

    def link(self, v_pre):
        """What the horizontal stack receives from the vertical one: row i sees rows < i."""
        return self.v_to_h(_down(v_pre))

    def horizontal_step(self, h, link):
        h_new = self.h_out(_gate(self.horizontal(F.pad(h, (self.k, 0, 0, 0))) + link))
        return h_new if self.first else h + h_new


class GatedPixelCNN(_ImageAutoregressive):
    """Gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN Decoders").

    Two stacks remove the blind spot: the vertical stack sees all rows above
    (its output is shifted one row down before it reaches the horizontal stack),
    the horizontal stack sees the pixels to the left in the current row. Each
    layer is gated,

    .. math:: y = \\tanh(W_{k,f} * x) \\odot \\sigma(W_{k,g} * x),

    and the horizontal stack is residual. After L layers with a first kernel k_1
    and later kernels 3, pixel i sees every earlier pixel within
    :math:`(k_1 - 1)/2 + L - 1` columns (and rows): on 8 x 8 images, L >= 5 with
    k_1 = 7 covers the whole past.

    Args:
        event_shape: (C, H, W), any size and channel count.
        hidden: feature maps per stack (>= C; split into C groups).
        num_layers: gated layers (the first uses ``kernel_size``, later ones 3).
        kernel_size: of the first layer, odd.
        position_bias: learned per-position biases (see :class:`PixelCNN`).
        output, num_levels, num_components: the conditional.

    Example::

        >>> import torch
        >>> m = GatedPixelCNN((1, 8, 8), hidden=16, num_layers=5)
        >>> m.log_prob(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2])
    """

    def __init__(self, event_shape, hidden: int = 64, num_layers: int = 6, kernel_size: int = 7,
                 position_bias: bool = True, output: str = "bernoulli", num_levels: int | None = None,
                 num_components: int = 5):
        _check_image(as_event_shape(event_shape), hidden, num_layers, kernel_size)
        super().__init__(event_shape, hidden, output, num_levels, num_components, position_bias)
        c, height, width = self.event_shape
        self.layers = nn.ModuleList(
            _GatedLayer(c if i == 0 else hidden, hidden, kernel_size if i == 0 else 3, c, i == 0)
            for i in range(num_layers))
        if position_bias:
            self.bias_in = nn.Parameter(torch.zeros(2, 2 * hidden, height, width))

    def _links(self, u):
        """The vertical stack over the rows of ``u``: each layer's link to the horizontal stack."""
        links, v = [], u
        for i, layer in enumerate(self.layers):
            v_pre = layer.vertical_pre(v)
            if i == 0 and self.position_bias:
                v_pre = v_pre + self.bias_in[0, :, :u.shape[-2]]
            link = layer.link(v_pre)
            links.append(link + self.bias_in[1, :, :u.shape[-2]] if i == 0 and self.position_bias else link)
            v = _gate(v_pre)
        return links

    def _horizontal(self, u, links):
        h = u
        for layer, link in zip(self.layers, links):
            h = layer.horizontal_step(h, link)
        return h

    def features(self, u):
        return self._horizontal(u, self._links(u))

    def sample(self, n: int) -> torch.Tensor:
        """Ancestral sampling that runs the vertical stack once per row, the horizontal one per pixel on one row.

        The horizontal stack of row r depends on row r and on the vertical
        stack's rows < r only, so the same draws as D full passes cost about
        one row's worth per pixel.
        """
        c, height, width = self.event_shape
        x = torch.zeros(n, c, height, width, device=self._device())
        with torch.no_grad():
            for r in range(height):
                links = [link[:, :, r:r + 1] for link in self._links(self.output.encode(x[:, :, :r + 1]))]
                for col in range(width):
                    for ch in range(c):
                        out = self.head(self._horizontal(self.output.encode(x[:, :, r:r + 1]), links))
                        params = self._to_grid(out, slice(r, r + 1))[:, ch, 0, col]
                        x[:, ch, r, col] = self.output.distribution(params).sample()
        return x
