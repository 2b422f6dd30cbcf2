"""Variational autoencoders (Kingma and Welling, 2014) as Pyro model/guide pairs.

The model is ``p(z) p_theta(x|z)`` with a standard normal prior; the guide is
the amortized Gaussian ``q_phi(z|x) = N(mu_phi(x), diag sigma_phi(x)^2)``,
sampled with the reparametrization trick (Pyro's ``Normal.rsample``). Both
run inside one ``pyro.plate("data")``, so ``fit(vae.model, vae.guide, x)``
trains them with the ELBO, and ``evaluate(vae.model, x, guide=vae.guide,
num_particles=K)`` gives the importance-weighted bound (Burda et al., 2016).

Decoders: ``"bernoulli"`` for binary data, ``"gaussian"`` (a mean and a
learned per-pixel scale) for continuous data.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..registry import register_model
from .base import batch_size_of
from ..checks import as_event_shape, count, widths
from ..nets import GaussianHead, loc_scale, mlp
from ..programs import announce, sample_program

__all__ = ["VAE", "ConvVAE"]

LIKELIHOODS = ("bernoulli", "gaussian")


class VAE(PyroModule):
    """A VAE with MLP encoder and decoder.

    Args:
        event_shape: the shape of one example (an int for flat data).
        latent_dim: size of z.
        hidden: hidden layer widths of the encoder; the decoder mirrors them.
        likelihood: "bernoulli" or "gaussian" (learned per-pixel variance).
        encoder: optional ``nn.Module`` mapping a flat x to ``(loc, scale)`` of z.
        decoder: optional ``nn.Module`` mapping z to the likelihood's
            parameters (logits, or ``2 * D`` numbers: means and raw scales).

    Example::

        >>> import torch
        >>> vae = VAE(64, latent_dim=2, hidden=(32,))
        >>> vae.sample(5).shape
        torch.Size([5, 64])
    """

    def __init__(self, event_shape, latent_dim: int = 20, hidden=(400,), likelihood: str = "bernoulli",
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
        count("latent_dim", latent_dim)
        hidden = widths("hidden", hidden)
        self.event_shape = as_event_shape(event_shape)
        self.data_dim = math.prod(self.event_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        out = self.data_dim * (2 if likelihood == "gaussian" else 1)
        self.encoder = encoder if encoder is not None else GaussianHead(
            nn.Sequential(nn.Flatten(), mlp((self.data_dim, *hidden, 2 * self.latent_dim))))
        self.decoder = decoder if decoder is not None else mlp((self.latent_dim, *hidden[::-1], out))
        self.register_buffer("prior_loc", torch.zeros(self.latent_dim))
        self.register_buffer("prior_scale", torch.ones(self.latent_dim))

    # -- the Pyro program -------------------------------------------------
    def likelihood_dist(self, params: torch.Tensor):
        """p(x|z) given the decoder's output for a batch of z."""
        n = params.shape[0]
        if self.likelihood == "bernoulli":
            d = dist.Bernoulli(logits=params.reshape(n, *self.event_shape))
        else:
            loc, scale = loc_scale(params)
            d = dist.Normal(loc.reshape(n, *self.event_shape), scale.reshape(n, *self.event_shape))
        return d.to_event(len(self.event_shape))

    def prior(self, n):
        """p(z) = N(0, I) for a batch of n; built once per (n, device, dtype), since it never changes."""
        key = (n, self.prior_loc.device, self.prior_loc.dtype)
        cache = self.__dict__.setdefault("_prior_cache", {})
        if key not in cache:
            cache.clear()
            cache[key] = dist.Normal(self.prior_loc, self.prior_scale).expand([n, self.latent_dim]).to_event(1)
        return cache[key]

    def model(self, x=None, num_samples=None):
        """p(z) p(x|z): site "z" then site "x"."""
        announce(self)
        n = batch_size_of(x, num_samples)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            return pyro.sample("x", self.likelihood_dist(self.decoder(z)), obs=x)

    def guide(self, x=None, num_samples=None):
        """q(z|x) = N(mu(x), sigma(x)^2), reparametrized."""
        announce(self)
        if x is None:
            raise ValueError("x: the guide q(z|x) needs data")
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- conveniences -----------------------------------------------------
    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z]: probabilities (Bernoulli) or means (Gaussian)."""
        params = self.decoder(z)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(params).reshape(-1, *self.event_shape)
        return params.reshape(params.shape[0], 2, -1)[:, 0].reshape(-1, *self.event_shape)

    def sample(self, n: int, mean: bool = False) -> torch.Tensor:
        """Ancestral samples by running :meth:`model`: z ~ p(z), x ~ p(x|z) (or E[x|z] with ``mean=True``)."""
        node = sample_program(self.model, count("n", n), trace=True).nodes["x"]
        return node["fn"].mean if mean else node["value"]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of q(z|x)."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mean of q(z|x)]."""
        return self.mean(self.encode(x))

    @torch.no_grad()
    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode ``steps`` points on the straight line between the latent means of x1 and x2."""
        z1, z2 = self.encode(x1.unsqueeze(0)), self.encode(x2.unsqueeze(0))
        t = torch.linspace(0, 1, steps, device=z1.device).unsqueeze(-1)
        return self.mean((1 - t) * z1 + t * z2)


class _ConvEncoder(nn.Module):
    def __init__(self, event_shape, latent_dim, channels):
        super().__init__()
        c, h, w = event_shape
        c1, c2 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        flat = self.convs(torch.zeros(1, c, h, w)).shape[-1]
        self.head = GaussianHead(nn.Linear(flat, 2 * latent_dim))

    def forward(self, x):
        return self.head(self.convs(x))


class _ConvDecoder(nn.Module):
    def __init__(self, event_shape, latent_dim, channels, out_channels):
        super().__init__()
        c, h, w = event_shape
        c1, c2 = channels
        self.start = (c2, math.ceil(h / 4), math.ceil(w / 4))
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)), nn.ReLU())
        self.up = nn.Sequential(
            nn.Upsample(size=(math.ceil(h / 2), math.ceil(w / 2))), nn.Conv2d(c2, c1, 3, padding=1), nn.ReLU(),
            nn.Upsample(size=(h, w)), nn.Conv2d(c1, out_channels, 3, padding=1), nn.Flatten())

    def forward(self, z):
        return self.up(self.fc(z).reshape(-1, *self.start))


class ConvVAE(VAE):
    """A VAE with a two-layer convolutional encoder and an upsampling decoder.

    ``event_shape`` is ``(channels, height, width)``; data is ``(N, C, H, W)``.
    The decoder's output is laid out channel-major, so a Gaussian decoder
    produces its means in the first C channels and raw scales in the next C.
    """

    def __init__(self, event_shape, latent_dim: int = 16, channels=(32, 64), likelihood: str = "bernoulli"):
        shape = tuple(event_shape)
        if len(shape) != 3:
            raise ValueError(f"event_shape: ConvVAE needs (channels, height, width), got {shape}")
        out_channels = shape[0] * (2 if likelihood == "gaussian" else 1)
        super().__init__(shape, latent_dim, likelihood=likelihood,
                         encoder=_ConvEncoder(shape, latent_dim, channels),
                         decoder=_ConvDecoder(shape, latent_dim, channels, out_channels))


def _likelihood_for(data_kind):
    return "bernoulli" if data_kind == "binary" else "gaussian"


@register_model("vae", family="vae", data_kinds=("binary", "continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 64},
                description="MLP VAE (Gaussian guide, Bernoulli or Gaussian decoder)")
def _build_vae(event_shape, data_kind, latent_dim=16, hidden=(256,), **options):
    # latent 16: the better of 8 and 16 on the validation digits' IWAE bound (benchmarks/quality_vae.py)
    return VAE(event_shape, latent_dim=latent_dim, hidden=hidden, likelihood=_likelihood_for(data_kind))


@register_model("conv-vae", family="vae", data_kinds=("binary", "continuous"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 64, "image": True},
                description="convolutional VAE for images (C, H, W)")
def _build_conv_vae(event_shape, data_kind, latent_dim=8, **options):
    return ConvVAE(event_shape, latent_dim=latent_dim, likelihood=_likelihood_for(data_kind))
