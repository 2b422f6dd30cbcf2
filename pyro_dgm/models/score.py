"""Noise-conditional score networks (NCSN) and score-SDE models as Pyro programs.

The model's site ``"x"`` holds a :class:`~pyro_dgm.distributions.ScoreField`
around a network :math:`s_\\theta(x, \\sigma) \\approx \\nabla_x \\log p_\\sigma(x)`
(Song and Ermon, 2019). Two networks are provided:

* :class:`ScoreMLP` for flat data (2-D toys): an MLP whose hidden layers get
  an embedding of :math:`\\log \\sigma` added.
* :class:`ScoreUNet` for small images (8x8 digits): a U-Net with residual
  blocks, GroupNorm, an additive noise embedding in every block and a learned
  position bias (zero-padded convolutions on a zero background cannot tell
  border pixels apart otherwise).

Both use two preconditionings that make one network serve noise levels from
0.01 to 10: the input is scaled by :math:`1/\\sqrt{1 + \\sigma^2}` (Karras et
al., 2022, :math:`c_{in}` with unit data scale) and the output is divided by
:math:`\\sigma` (Song and Ermon, 2020, Technique 3), since
:math:`\\|\\nabla \\log p_\\sigma\\| \\propto 1/\\sigma`.

:class:`NCSN` wraps a network, a noise ladder and/or an SDE, and a sampler::

    m = NCSN(2, sigmas=geometric_sigmas(10.0, 0.01, 10))     # annealed Langevin
    fit(m.model, None, x, objective=DenoisingScoreMatching())
    m = NCSN(2, sde=VESDE(0.01, 10.0))                        # predictor-corrector
    fit(m.model, None, x, objective=SDEScoreMatching())
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from ..distributions.score_field import ScoreField
from ..inference.score_based import (DenoisingScoreMatching, PredictorCorrector, SDEScoreMatching, VESDE,
                                     geometric_sigmas)
from ..registry import register_model
from .base import DistributionModel
from ..checks import as_event_shape, count, widths

__all__ = ["NCSN", "ScoreMLP", "ScoreUNet", "NoiseEmbedding", "default_score_net"]


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of :math:`\\log \\sigma` at ``dim // 2`` fixed frequencies from 0.05 to 4.

    Example::

        >>> NoiseEmbedding(16)(torch.tensor([0.1, 1.0])).shape
        torch.Size([2, 16])
    """

    def __init__(self, dim: int = 32):
        super().__init__()
        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim: expected an even integer >= 2, got {dim!r}")
        self.register_buffer("freqs", torch.logspace(math.log10(0.05), math.log10(4.0), dim // 2))

    def forward(self, sigma):
        angle = sigma.log().unsqueeze(-1) * self.freqs
        return torch.cat([angle.sin(), angle.cos()], -1)


def _precondition(x, sigma):
    return x / (1 + sigma.pow(2)).sqrt().reshape(-1, *([1] * (x.dim() - 1)))


class ScoreMLP(nn.Module):
    """:math:`s_\\theta(x, \\sigma) = \\mathrm{MLP}(x / \\sqrt{1+\\sigma^2}, e(\\sigma)) / \\sigma` for flat data.

    Every hidden layer is :math:`h \\leftarrow \\mathrm{SiLU}(W h + U e(\\sigma))` with
    :math:`e` a learned map of :class:`NoiseEmbedding`.

    Example::

        >>> net = ScoreMLP(2, hidden=(16, 16))
        >>> net(torch.zeros(3, 2), torch.ones(3)).shape
        torch.Size([3, 2])
    """

    def __init__(self, dim: int, hidden=(128, 128, 128), embed_dim: int = 32):
        super().__init__()
        count("dim", dim)
        hidden = widths("hidden", hidden)
        self.embed = nn.Sequential(NoiseEmbedding(embed_dim), nn.Linear(embed_dim, embed_dim), nn.SiLU())
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip((dim,) + hidden[:-1], hidden))
        self.cond = nn.ModuleList(nn.Linear(embed_dim, h) for h in hidden)
        self.out = nn.Linear(hidden[-1], dim)

    def forward(self, x, sigma):
        return self.conditioned(x, sigma, self.embed(sigma))

    def conditioned(self, x, sigma, e):
        """The network with the embedding ``e`` (of sigma, and of whatever else a subclass adds) given."""
        h = _precondition(x, sigma)
        for layer, cond in zip(self.layers, self.cond):
            h = F.silu(layer(h) + cond(e))
        return self.out(h) / sigma.unsqueeze(-1)


def _groups(channels):
    return math.gcd(8, channels)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding added between, and a (1x1) skip."""

    def __init__(self, cin, cout, embed_dim):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(embed_dim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class ScoreUNet(nn.Module):
    """A small U-Net score network for images of shape ``(C, H, W)`` with H, W divisible by 4.

    Resolutions H (``channels``), H/2 and H/4 (``2 * channels``), one residual
    block each on the way down and up, skip connections by concatenation, a
    learned position bias after the input convolution, output divided by sigma.
    Inputs may be flat ``(n, C*H*W)``; the output has the input's shape.

    Example::

        >>> net = ScoreUNet((1, 8, 8), channels=8)
        >>> net(torch.zeros(3, 64), torch.ones(3)).shape
        torch.Size([3, 64])
    """

    def __init__(self, image_shape=(1, 8, 8), channels: int = 32, embed_dim: int = 64):
        super().__init__()
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
            raise ValueError(f"image_shape: expected (C, H, W) with H and W divisible by 4, got {image_shape!r}")
        count("channels", channels)
        self.image_shape = image_shape
        c, cin = channels, image_shape[0]
        self.embed = nn.Sequential(NoiseEmbedding(embed_dim), nn.Linear(embed_dim, embed_dim), nn.SiLU())
        self.inp = nn.Conv2d(cin, c, 3, padding=1)
        self.position = nn.Parameter(torch.zeros(1, c, *image_shape[1:]))
        self.down1, self.pool1 = _ResBlock(c, c, embed_dim), nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down2, self.pool2 = _ResBlock(2 * c, 2 * c, embed_dim), nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.mid = _ResBlock(2 * c, 2 * c, embed_dim)
        self.up2 = _ResBlock(4 * c, 2 * c, embed_dim)
        self.up1 = _ResBlock(3 * c, c, embed_dim)
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, cin, 3, padding=1))

    def forward(self, x, sigma):
        e = self.embed(sigma)
        h = self.inp(_precondition(x, sigma).reshape(-1, *self.image_shape)) + self.position
        h1 = self.down1(h, e)
        h2 = self.down2(self.pool1(h1), e)
        h = self.mid(self.pool2(h2), e)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0), h2], 1), e)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), h1], 1), e)
        return (self.out(h) / sigma.reshape(-1, 1, 1, 1)).reshape(x.shape)


def default_score_net(event_shape) -> nn.Module:
    """ScoreUNet for square single-channel images (flat of size 64, 256, ...), else ScoreMLP."""
    event_shape = torch.Size(event_shape)
    numel = math.prod(event_shape)
    side = math.isqrt(numel)
    if len(event_shape) == 3:
        return ScoreUNet(tuple(event_shape))
    if len(event_shape) == 1 and numel >= 16 and side * side == numel and side % 4 == 0:
        return ScoreUNet((1, side, side))
    if len(event_shape) == 1:
        return ScoreMLP(numel)
    raise ValueError(f"event_shape: no default score network for examples of shape {tuple(event_shape)}; pass net=")


class NCSN(DistributionModel, nn.Module):
    """A score-based model: a noise-conditional score network at site "x".

    Args:
        event_shape: the shape of one example (an int for flat data).
        net: ``net(x, sigma)``; default :class:`ScoreUNet` for square images
            (flat 64 = 8x8 digits too), :class:`ScoreMLP` for other flat data.
        sigmas: the noise ladder (a tensor or list, descending), read by
            ``DenoisingScoreMatching()`` and annealed Langevin sampling.
            Default: ``geometric_sigmas(10, 0.01, 10)`` unless ``sde`` is given.
        sde: a ``VESDE`` / ``VPSDE``, read by ``SDEScoreMatching()`` and
            ``probability_flow_nll``; sampling then defaults to predictor-corrector.
        sampler: overrides the default sampler (see ``ScoreField``).

    Example::

        >>> import torch
        >>> m = NCSN(2, sigmas=geometric_sigmas(1.0, 0.1, 3))
        >>> m.sample(4).shape
        torch.Size([4, 2])
    """

    def __init__(self, event_shape, net: nn.Module | None = None, *, sigmas=None, sde=None, sampler=None):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.net = default_score_net(self.event_shape) if net is None else net
        if sigmas is None and sde is None:
            sigmas = geometric_sigmas(10.0, 0.01, 10)
        self.register_buffer("sigmas", None if sigmas is None else torch.as_tensor(
            sigmas, dtype=torch.get_default_dtype()).reshape(-1))
        self.sde, self.sampler = sde, sampler

    def distribution(self, n: int, sampler=None) -> ScoreField:
        """The ScoreField of a plate of ``n`` examples (the distribution at site "x")."""
        return ScoreField(self.net, self.event_shape, torch.Size([n]), sigmas=self.sigmas, sde=self.sde,
                          sampler=sampler or self.sampler)

    def score(self, x, sigma=None):
        """:math:`s_\\theta(x, \\sigma)`; sigma defaults to the smallest level of the ladder."""
        return self.distribution(x.shape[0]).score(x, sigma)

    def sample(self, n: int, sampler=None) -> torch.Tensor:
        """``n`` samples from the model's sampler, or from ``sampler``."""
        return self.distribution(int(n), sampler).sample()

    def field(self, n: int, sampler=None) -> ScoreField:
        """Deprecated name of :meth:`distribution` (goes in the next release)."""
        warnings.warn("ScoreModel.field is deprecated and goes in the next release; use .distribution",
                      FutureWarning, stacklevel=2)
        return self.distribution(n, sampler)


#: Default noise ranges (sigma_max, sigma_min) by data kind: sigma_max about the
#: largest distance between two training points (digits in [0, 1)^64: 4.6; the 2-D toys: up to 12).
DEFAULT_RANGES = {"points": (12.0, 0.01), "continuous": (5.0, 0.01)}


@register_model("ncsn", family="score", data_kinds=("points", "continuous"),
                objective=lambda **o: DenoisingScoreMatching(),
                fit_defaults={"lr": 1e-3, "epochs": 200, "batch_size": 128},
                description="noise-conditional score network, 12 levels, annealed Langevin (Song and Ermon, 2019)")
def _build_ncsn(event_shape, data_kind, **options):
    hi, lo = DEFAULT_RANGES[data_kind]
    return NCSN(event_shape, sigmas=geometric_sigmas(hi, lo, 12))


@register_model("score-sde", family="score", data_kinds=("points", "continuous"),
                objective=lambda **o: SDEScoreMatching(),
                fit_defaults={"lr": 1e-3, "epochs": 200, "batch_size": 128},
                description="VE-SDE score model, predictor-corrector sampling, probability-flow NLL "
                            "(Song et al., 2021)")
def _build_score_sde(event_shape, data_kind, **options):
    sde = VESDE(*reversed(DEFAULT_RANGES[data_kind]))
    return NCSN(event_shape, sde=sde, sampler=PredictorCorrector(sde))
