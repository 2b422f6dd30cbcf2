"""Generative adversarial networks (Goodfellow et al., 2014) as Pyro programs.

A generator is the program

.. math:: z \\sim p(z) = \\mathcal{N}(0, I), \\qquad x = G_\\theta(z)

with a latent sample site ``"z"`` and the data site ``"x"`` recorded by
``pyro.deterministic`` (a point mass: no density). A critic (discriminator)
is a plain ``nn.Module`` ``V_omega(x) -> (N,)`` of real numbers, handed to
:class:`pyro_dgm.inference.Adversarial`, which says what both players
minimize; :func:`pyro_dgm.fit` alternates their updates.

* :class:`Generator` wraps any network ``G`` from z to x;
  :class:`MLPGenerator` is an MLP for points and flat data,
  :class:`DCGANGenerator` a small DCGAN-style stack of transposed
  convolutions for images such as 8x8 digits (Radford et al., 2016).
* :class:`MLPCritic` and :class:`DCGANCritic` are the matching critics, with
  spectral normalization of every layer as an option (Miyato et al., 2018).
* :class:`GAN` keeps a generator and its critic together (the registered
  models build one): its ``model`` is the generator's program, so ``fit``
  gives the generator's parameters to group "generator" only.

Sampling is one forward pass; there is no likelihood to evaluate.

Example::

    >>> import torch, pyro_dgm
    >>> from pyro_dgm.inference import Adversarial
    >>> gen, critic = MLPGenerator(2, latent_dim=2, hidden=(32,)), MLPCritic(2, hidden=(32,))
    >>> x = torch.randn(128, 2)
    >>> r = pyro_dgm.fit(gen.model, None, x, objective=Adversarial(critic, loss="ns"),
    ...                  steps=4, batch_size=64, progress=False)
    >>> sorted(r.losses), gen.sample(3).shape
    (['critic', 'generator'], torch.Size([3, 2]))
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..registry import register_model
from .base import batch_size_of
from ..checks import as_event_shape, count, widths
from ..nets import mlp
from ..programs import announce, sample_program

__all__ = ["Generator", "MLPGenerator", "DCGANGenerator", "MLPCritic", "DCGANCritic", "GAN"]

OUTPUTS = {"identity": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _image_shape(event_shape, who) -> tuple:
    shape = tuple(as_event_shape(event_shape))
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"event_shape: {who} needs (channels, height, width) with height and width "
                         f"divisible by 4, got {shape}")
    return shape


def _output(name):
    if name not in OUTPUTS:
        raise ValueError(f"output: expected one of {sorted(OUTPUTS)}, got {name!r}")
    return OUTPUTS[name]()


def _maybe_sn(layer: nn.Module, on: bool) -> nn.Module:
    return _spectral_norm(layer) if on else layer


class Generator(PyroModule):
    """The program ``z ~ N(0, I); x = G(z)`` for any network ``net`` from z to x.

    Args:
        net: an ``nn.Module`` mapping ``(N, latent_dim)`` to ``N * prod(event_shape)`` numbers.
        event_shape: the shape of one example (an int for flat data).
        latent_dim: the size of z.

    Example::

        >>> import torch
        >>> g = Generator(torch.nn.Linear(1, 1), event_shape=1, latent_dim=1)
        >>> g.sample(4).shape
        torch.Size([4, 1])
    """

    def __init__(self, net: nn.Module, event_shape, latent_dim: int):
        super().__init__()
        self.net = net
        self.event_shape = as_event_shape(event_shape)
        self.latent_dim = count("latent_dim", latent_dim)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def prior(self, n: int):
        return dist.Normal(self.prior_loc, self.prior_scale).expand([n, self.latent_dim]).to_event(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """x = G(z), shape ``(N, *event_shape)``."""
        return self.net(z).reshape(z.shape[0], *self.event_shape)

    def model(self, x=None, num_samples=None):
        """Site "z" from the prior, then site "x" = G(z) (deterministic). ``x`` only sets the batch size."""
        announce(self)
        n = batch_size_of(x, num_samples)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(n))
            return pyro.deterministic("x", self(z), event_dim=len(self.event_shape))

    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples G(z), z ~ p(z), by running :meth:`model`."""
        return sample_program(self.model, count("n", n))


class MLPGenerator(Generator):
    """An MLP generator ``G(z) = out(W_L relu(... relu(W_1 z)))`` for points and flat data.

    Args:
        event_shape: the shape of one example (2 for 2-D points).
        latent_dim: the size of z.
        hidden: hidden layer widths.
        output: the output activation: "identity" (points), "sigmoid" (data in [0, 1]) or "tanh".

    Example::

        >>> gen = MLPGenerator(64, latent_dim=8, hidden=(32,), output="sigmoid")
        >>> x = gen.sample(5)
        >>> x.shape, bool(((x > 0) & (x < 1)).all())
        (torch.Size([5, 64]), True)
    """

    def __init__(self, event_shape, latent_dim: int = 2, hidden=(128, 128, 128), output: str = "identity"):
        shape = as_event_shape(event_shape)
        hidden = widths("hidden", hidden, allow_empty=True)
        net = nn.Sequential(mlp((count("latent_dim", latent_dim), *hidden, math.prod(shape))), _output(output))
        super().__init__(net, shape, latent_dim)


class DCGANGenerator(Generator):
    """A DCGAN-style generator (Radford et al., 2016) for small images ``(C, H, W)``, H and W divisible by 4.

    z -> linear -> ``(2c, H/4, W/4)`` -> [batch norm, ReLU, 4x4 transposed conv
    with stride 2] twice -> ``(C, H, W)`` -> ``output`` activation, c being
    ``channels``. With the default c = 32, an 8x8 digit generator has about 38k parameters.

    Example::

        >>> DCGANGenerator((1, 8, 8), latent_dim=16).sample(2).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, event_shape, latent_dim: int = 16, channels: int = 32, output: str = "sigmoid"):
        c, h, w = _image_shape(event_shape, "DCGANGenerator")
        net = nn.Sequential(
            nn.Linear(count("latent_dim", latent_dim), 2 * channels * (h // 4) * (w // 4)),
            nn.Unflatten(1, (2 * channels, h // 4, w // 4)),
            nn.BatchNorm2d(2 * channels), nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.ConvTranspose2d(channels, c, 4, stride=2, padding=1),
            _output(output))
        super().__init__(net, (c, h, w), latent_dim)


class MLPCritic(nn.Module):
    """An MLP critic ``V(x)`` with LeakyReLU(0.2) activations, returning shape (N,).

    Args:
        event_shape: the shape of one example.
        hidden: hidden layer widths.
        spectral_norm: normalize every linear layer by its largest singular
            value (Miyato et al., 2018), making V 1-Lipschitz.

    Example::

        >>> critic = MLPCritic(2, hidden=(16, 16), spectral_norm=True)
        >>> critic(torch.randn(4, 2)).shape
        torch.Size([4])
    """

    def __init__(self, event_shape, hidden=(128, 128, 128), spectral_norm: bool = False):
        super().__init__()
        sizes = (math.prod(as_event_shape(event_shape)), *widths("hidden", hidden, allow_empty=True), 1)
        self.net = mlp(sizes, lambda: nn.LeakyReLU(0.2), spectral_norm=spectral_norm, flatten=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])


class DCGANCritic(nn.Module):
    """A DCGAN-style critic for images ``(C, H, W)``: two 4x4 stride-2 convolutions, LeakyReLU(0.2), a linear layer.

    No batch normalization, so it can be used with a gradient penalty;
    ``spectral_norm=True`` normalizes every layer.

    Example::

        >>> DCGANCritic((1, 8, 8))(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5])
    """

    def __init__(self, event_shape, channels: int = 32, spectral_norm: bool = False):
        super().__init__()
        c, h, w = _image_shape(event_shape, "DCGANCritic")
        self.net = nn.Sequential(
            _maybe_sn(nn.Conv2d(c, channels, 4, stride=2, padding=1), spectral_norm), nn.LeakyReLU(0.2),
            _maybe_sn(nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), spectral_norm),
            nn.LeakyReLU(0.2), nn.Flatten(),
            _maybe_sn(nn.Linear(2 * channels * (h // 4) * (w // 4), 1), spectral_norm))
        self.event_shape = torch.Size((c, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], *self.event_shape)).reshape(x.shape[0])


class GAN(nn.Module):
    """A generator and its critic kept together (what the registered models build).

    ``gan.model`` is the generator's program, so ``fit(gan.model, None, x,
    objective=Adversarial(gan.critic))`` puts only the generator's parameters
    in group "generator"; ``state_dict`` holds both players.

    Example::

        >>> gan = GAN(MLPGenerator(2, hidden=(16,)), MLPCritic(2, hidden=(16,)))
        >>> gan.sample(3).shape, gan.event_shape
        (torch.Size([3, 2]), torch.Size([2]))
    """

    def __init__(self, generator: Generator, critic: nn.Module):
        super().__init__()
        if not isinstance(generator, Generator):
            raise ValueError(f"generator: expected a pyro_dgm.models.Generator, got {type(generator).__name__}")
        if not isinstance(critic, nn.Module):
            raise ValueError(f"critic: expected an nn.Module, got {type(critic).__name__}")
        self.generator, self.critic = generator, critic

    @property
    def model(self):
        return self.generator.model

    @property
    def event_shape(self) -> torch.Size:
        return self.generator.event_shape

    def sample(self, n: int) -> torch.Tensor:
        return self.generator.sample(n)


# ---------------------------------------------------------------- registry

#: ``fit`` settings of the registered GANs: Adam(0.5, 0.999) for both players (Radford et al., 2016).
FIT_DEFAULTS = {"lr": {"generator": 2e-4, "critic": 2e-4}, "batch_size": 128,
                "optimizer_kwargs": {"generator": {"betas": (0.5, 0.999)}, "critic": {"betas": (0.5, 0.999)}}}


def adversarial_objective(default_loss: str):
    """The registered GANs' objective: ``objective(module, **options)`` is
    :class:`~pyro_dgm.inference.Adversarial` on ``module.critic`` with ``loss=default_loss``
    unless ``options`` say otherwise. The registry (``options_of``) reads the options it takes,
    Adversarial's (``n_critic``, ``gp_weight``, ``clip``, ``r1_weight``, ...), from ``cls`` and
    ``defaults``, so the CLI's ``--model-option`` accepts them and refuses a misspelt one."""
    from ..inference.adversarial import Adversarial

    cls, defaults = Adversarial, {"loss": default_loss}

    def objective(module, data_kind=None, **options):
        return cls(module.critic, **{**defaults, **options})

    return objective


@register_model("gan", family="gan", data_kinds=("points", "binary", "continuous"),
                objective=adversarial_objective("ns"),
                fit_defaults={**FIT_DEFAULTS, "epochs": 200},
                description="MLP generator and critic, non-saturating GAN loss")
def _build_gan(event_shape, data_kind, latent_dim=None, hidden=(128, 128, 128), spectral_norm=False, **options):
    points = data_kind == "points"
    latent = latent_dim or (2 if points else 16)
    gen = MLPGenerator(event_shape, latent, hidden, output="identity" if points else "sigmoid")
    return GAN(gen, MLPCritic(event_shape, hidden, spectral_norm=spectral_norm))


@register_model("dcgan", family="gan", data_kinds=("binary", "continuous"), objective=adversarial_objective("ns"),
                fit_defaults={**FIT_DEFAULTS, "epochs": 200, "image": True},
                description="DCGAN-style convolutional generator and critic for images (C, H, W)")
def _build_dcgan(event_shape, data_kind, latent_dim=16, channels=32, spectral_norm=False, **options):
    gen = DCGANGenerator(event_shape, latent_dim, channels)
    return GAN(gen, DCGANCritic(event_shape, channels, spectral_norm=spectral_norm))
