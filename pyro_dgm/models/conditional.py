"""Class-conditional models: Pyro programs ``model(x, y)`` whose site "x" follows :math:`p(x \\mid y)`.

Each is trained by the plain ``pyro_dgm.fit(m.model, m.guide, TensorDataset(x, y))``: the label is the program's second argument, so fit,
evaluate and to_arviz pass it through and the objectives see it. Sampling a
class: ``m.sample(y)`` or ``pyro_dgm.programs.sample_program(m.model, n, args=(y,))``.

* :class:`ConditionalVAE`: encoder :math:`q(z \\mid x, y)` and decoder
  :math:`p(x \\mid z, y)` both get the one-hot label (Sohn et al., 2015).
* :class:`ConditionalMADE`: a :class:`~pyro_dgm.models.MADE` whose label
  units have degree 0, so they reach every hidden unit and every output.
* :class:`ConditionalFlow`: Pyro's ``ConditionalTransformedDistribution`` of
  conditional MAF layers or affine couplings (the label as an input of each
  layer's network) and a final sigmoid onto (0, 1).
* :class:`ConditionalGAN` with :class:`ProjectionCritic`: generator
  :math:`G(z, y)`, critic :math:`V(x, y) = \\psi(\\phi(x)) + e_y^T \\phi(x)` (Miyato and
  Koyama, 2018).
* :class:`GuidedNCSN`: a noise-conditional score network with classifier-free
  guidance (Ho and Salimans, 2021): labels are dropped to a null class with
  probability ``p_uncond`` in training, and sampling follows
  :math:`(1 + w)\\, s(x, \\sigma, y) - w\\, s(x, \\sigma, \\varnothing)`.
"""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import Permute, conditional_affine_autoregressive, conditional_affine_coupling
from pyro.nn import DenseNN, PyroModule
from torch import nn
from torch.distributions.transforms import AffineTransform, SigmoidTransform
from torch.nn import functional as F

from ..checks import as_event_shape, count, widths
from ..nets import mlp, positive_scale
from ..deprecation import renamed
from ..distributions.autoregressive import AutoregressiveDistribution
from ..distributions.score_field import ScoreField
from ..inference.score_based import DenoisingScoreMatching, geometric_sigmas
from ..programs import announce, sample_program
from ..registry import register_model
from ..samplers import AnnealedLangevin
from .autoregressive import MADE
from .autoregressive.base import mixture_log_prob, mixture_sample
from .gan import adversarial_objective
from .score import ScoreMLP

__all__ = ["ConditionalVAE", "LabelledMLP", "ConditionalMADE", "ConditionalFlow", "ConditionalGenerator",
           "ProjectionCritic", "ConditionalGAN", "ConditionalScoreMLP", "GuidedNCSN", "one_hot"]



def one_hot(y: torch.Tensor, num_classes: int, dtype=None) -> torch.Tensor:
    """Labels ``(n,)`` in 0..C-1 as one-hot rows ``(n, C)``, with a clear error for anything else."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        raise ValueError(f"y: expected a tensor of class labels of shape (n,), got "
                         f"{getattr(y, 'shape', type(y).__name__)}; a conditional model is called model(x, y)")
    if y.numel() and (bool((y < 0).any()) or bool((y >= num_classes).any()) or bool((y != y.round()).any())):
        raise ValueError(f"y: expected integer labels in 0..{num_classes - 1}, got values from "
                         f"{y.min().item()} to {y.max().item()}")
    return F.one_hot(y.long(), num_classes).to(dtype or torch.get_default_dtype())


def _batch(x, y, num_samples):
    if y is None:
        raise ValueError("y: a class-conditional model needs labels: call model(x, y) or model(None, y)")
    if x is not None and x.shape[0] != y.shape[0]:
        raise ValueError(f"y: {y.shape[0]} labels for a batch of {x.shape[0]} examples")
    if num_samples is not None and num_samples != y.shape[0]:
        raise ValueError(f"num_samples: {num_samples} draws asked for {y.shape[0]} labels; give one label per draw")
    return y.shape[0]


def _flat(x, event_shape):
    return x.reshape(x.shape[0], math.prod(event_shape))


# ---------------------------------------------------------------- VAE

class LabelledMLP(nn.Module):
    """An MLP whose every layer also sees the one-hot label: :math:`h^{l} = \\mathrm{relu}(W^l [h^{l-1}, e_y] + b^l)`.

    Concatenating :math:`e_y` is a per-class bias in each layer, so the label
    reaches every depth instead of the input alone (pyro's ``ConditionalDenseNN``
    concatenates it once). ``forward(z, e)`` returns one tensor per entry of
    ``param_dims``, as ``DenseNN`` does.

    Example::

        >>> import torch
        >>> net = LabelledMLP(2, num_classes=3, hidden=(8, 8), param_dims=[5, 5])
        >>> loc, raw = net(torch.randn(4, 2), one_hot(torch.tensor([0, 1, 2, 0]), 3))
        >>> loc.shape, [layer.in_features for layer in net.layers]
        (torch.Size([4, 5]), [5, 11, 11])
    """

    def __init__(self, input_dim: int, num_classes: int, hidden, param_dims):
        super().__init__()
        sizes = (input_dim, *widths("hidden", hidden), sum(param_dims))
        self.layers = nn.ModuleList(nn.Linear(a + num_classes, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.param_dims = list(param_dims)

    def forward(self, z, e):
        h = z
        for l, layer in enumerate(self.layers):
            if l:
                h = F.relu(h)
            h = layer(torch.cat([h, e], -1))
        return h if len(self.param_dims) == 1 else h.split(self.param_dims, -1)


class ConditionalVAE(PyroModule):
    """A conditional VAE: :math:`p(z)\\, p_\\theta(x \\mid z, y)` and :math:`q_\\phi(z \\mid x, y)`.

    Args:
        event_shape: the shape of one example.
        num_classes: C.
        latent_dim, hidden: sizes of z and of the MLPs (``pyro.nn.DenseNN``; the
            decoder's widths are ``hidden`` reversed).
        likelihood: "bernoulli" or "gaussian" (learned per-pixel scales).
        label_every_layer: the decoder gets the label in every layer
            (:class:`LabelledMLP`), not only with z at its input.

    Example::

        >>> import torch, pyro_dgm
        >>> from torch.utils.data import TensorDataset
        >>> m = ConditionalVAE(6, num_classes=3, latent_dim=2, hidden=(8,))
        >>> x, y = torch.bernoulli(torch.full((20, 6), 0.5)), torch.arange(20) % 3
        >>> r = pyro_dgm.fit(m.model, m.guide, TensorDataset(x, y), steps=2, progress=False)
        >>> m.sample(torch.tensor([0, 2])).shape
        torch.Size([2, 6])
    """

    def __init__(self, event_shape, num_classes: int = 10, latent_dim: int = 8, hidden=(256,),
                 likelihood: str = "bernoulli", label_every_layer: bool = False):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood: expected 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.event_shape = as_event_shape(event_shape)
        self.num_classes, self.latent_dim = count("num_classes", num_classes), count("latent_dim", latent_dim)
        self.likelihood = likelihood
        d, hidden = math.prod(self.event_shape), list(widths("hidden", hidden))
        self.encoder = DenseNN(d + num_classes, hidden, [latent_dim, latent_dim])
        outputs = [d, d] if likelihood == "gaussian" else [d]
        self.label_every_layer = bool(label_every_layer)
        self.decoder = (LabelledMLP(latent_dim, num_classes, hidden[::-1], outputs) if label_every_layer
                        else DenseNN(latent_dim + num_classes, hidden[::-1], outputs))
        self.register_buffer("prior_loc", torch.zeros(latent_dim))

    def likelihood_dist(self, z, e):
        out = self.decoder(z, e) if self.label_every_layer else self.decoder(torch.cat([z, e], -1))
        shape = (z.shape[0], *self.event_shape)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out.reshape(shape)).to_event(len(self.event_shape))
        loc, raw = out
        return dist.Normal(loc.reshape(shape), positive_scale(raw).reshape(shape)).to_event(
            len(self.event_shape))

    def model(self, x=None, y=None, num_samples=None):
        """p(z) p(x | z, y): site "z" then site "x"."""
        announce(self)
        n = _batch(x, y, num_samples)
        e = one_hot(y, self.num_classes, self.prior_loc.dtype)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(self.prior_loc, 1.0).expand([n, self.latent_dim]).to_event(1))
            return pyro.sample("x", self.likelihood_dist(z, e), obs=x)

    def guide(self, x=None, y=None, num_samples=None):
        """q(z | x, y) = N(mu, diag sigma^2), reparametrized."""
        announce(self)
        if x is None:
            raise ValueError("x: the guide q(z | x, y) needs data")
        n = _batch(x, y, None)
        loc, raw = self.encoder(torch.cat([_flat(x, self.event_shape), one_hot(y, self.num_classes, x.dtype)], -1))
        with pyro.plate("data", n):
            return pyro.sample("z", dist.Normal(loc, positive_scale(raw)).to_event(1))

    def sample(self, y: torch.Tensor, mean: bool = False) -> torch.Tensor:
        """One draw of x | y per label by running :meth:`model` (or the decoder's mean E[x | z, y] with ``mean=True``)."""
        node = sample_program(self.model, len(y), args=(y,), trace=True).nodes["x"]
        return node["fn"].mean if mean else node["value"]


# ---------------------------------------------------------------- MADE

class ConditionalMADE(MADE):
    """A MADE with the label as an extra input of degree 0 (Germain et al., 2015, Section 4.3 for context).

    The one-hot label enters the first hidden layer and the output layer
    through unmasked weights, so every conditional :math:`p(x_{o_d} \\mid x_{o_{<d}}, y)`
    sees y and the autoregressive property in x is kept. Other arguments are :class:`MADE`'s.

    Example::

        >>> import torch
        >>> m = ConditionalMADE(5, num_classes=2, hidden=(16,))
        >>> x, y = torch.bernoulli(torch.full((3, 5), 0.5)), torch.tensor([0, 1, 1])
        >>> m.log_prob(x, y).shape, m.sample(y).shape
        (torch.Size([3]), torch.Size([3, 5]))
    """

    def __init__(self, event_shape, num_classes: int = 10, hidden=(500,), **options):
        super().__init__(event_shape, hidden, **options)
        self.num_classes = count("num_classes", num_classes)
        first = self.layers[0].out_features
        self.label_hidden = nn.Linear(num_classes, first, bias=False)
        self.label_out = nn.Linear(num_classes, self.dim * self.num_params, bias=False)

    def extra_inputs(self, y=None):
        """The label's terms: unmasked weights into the first hidden layer and into the output."""
        e = one_hot(y, self.num_classes, self.label_hidden.weight.dtype)
        return self.label_hidden(e), self.label_out(e)

    def log_prob_under(self, x, k, y=None):
        params = self(self.output.encode(x), k, y)
        return self.output.distribution(params).log_prob(x.reshape(x.shape[0], -1)).sum(-1)

    def log_prob(self, x, y=None):
        return mixture_log_prob(self.log_prob_under, x, self.num_masks, y)

    @torch.no_grad()
    def sample(self, y: torch.Tensor) -> torch.Tensor:
        """One draw per label: the mask set uniformly, then ancestrally along its ordering."""
        x = mixture_sample(len(y), self.num_masks, lambda rows, k: self._sample_with_labels(y[rows], k), (self.dim,),
                           self._device())
        return x.view(len(y), *self.event_shape)

    def _sample_with_labels(self, y, k):
        part = torch.zeros(len(y), self.dim, device=self._device())
        for j in self.orders[k].tolist():
            params = self(self.output.encode(part), k, y)[:, j]
            part[:, j] = self.output.distribution(params).sample()
        return part

    def distribution(self, n: int, y=None) -> AutoregressiveDistribution:
        """p(x | y) of a batch; in training mode, the masks of :meth:`~MADE.training_masks`."""
        masks = self.training_masks()
        log_prob = functools.partial(self.log_prob, y=y) if masks is None else functools.partial(
            self.log_prob_under, k=masks, y=y)
        return AutoregressiveDistribution(log_prob, lambda m: self.sample(y), self.event_shape, (n,),
                                          self.output.support)

    def model(self, x=None, y=None, num_samples=None):
        announce(self)
        n = _batch(x, y, num_samples)
        with pyro.plate("data", n):
            return pyro.sample("x", self.distribution(n, y), obs=x)


# ---------------------------------------------------------------- flow

class _ConditionalInverse(ConditionalTransformModule):
    """The inverse of a conditional transform given the context (Pyro's conditional transforms have no ``inv``).

    A MAF layer in the sampling direction is Pyro's autoregressive transform inverted: the data-to-noise
    direction, the one scoring needs, is then its one parallel pass.
    """

    def __init__(self, transform):
        super().__init__()
        self.transform = transform

    def condition(self, context):
        return self.transform.condition(context).inv


class ConditionalFlow(PyroModule):
    """:math:`x = (\\mathrm{sigmoid}(g_K \\circ \\dots \\circ g_1(z; y)) - \\alpha) / (1 - 2\\alpha)` for data in [0, 1).

    The last affine map is RealNVP's logit preprocessing (Dinh et al., 2017,
    :math:`\\alpha = 0.05`): data at the edges of [0, 1) stay away from the
    sigmoid's infinite tails, so a test pixel brighter than any training one
    costs a bounded number of nats.

    Each :math:`g_i` is followed by a fixed random permutation and is, with
    ``transform="coupling"``, Pyro's conditional affine coupling (a
    ``ConditionalDenseNN`` on the kept half and the one-hot label), or, with
    ``transform="autoregressive"``, the inverse of Pyro's conditional affine
    autoregressive transform (a MAF layer, Papamakarios et al., 2017: its
    ``ConditionalAutoRegressiveNN`` reads the label at degree 0). Either way the
    density is one pass; a MAF draws one pixel at a time.
    :math:`z \\sim \\mathcal N(\\mu_y, \\mathrm{diag}\\, \\sigma_y^2)` has a learned mean
    and scale per class (Glow's class-conditional prior); site "x" is
    ``ConditionalTransformedDistribution(base_y, ...).condition(e_y)``, scored
    exactly by the change of variables.

    On the digits the shipped classifier labels 0.942 of 12 MAF layers' samples as
    their class, against 0.789 for 10 couplings (``benchmarks/controlled.py``).

    Example::

        >>> import torch
        >>> f = ConditionalFlow(4, num_classes=2, num_layers=2, hidden=(8,))
        >>> y = torch.tensor([0, 1, 1])
        >>> x = f.sample(y)
        >>> x.shape, bool(((x > -0.06) & (x < 1.06)).all()), f.log_prob(x, y).shape
        (torch.Size([3, 4]), True, torch.Size([3]))
        >>> maf = ConditionalFlow(4, num_classes=2, num_layers=2, hidden=(8,), transform="autoregressive")
        >>> maf.sample(y).shape, maf.log_prob(x, y).shape
        (torch.Size([3, 4]), torch.Size([3]))
    """

    def __init__(self, event_shape, num_classes: int = 10, num_layers: int = 6, hidden=(256, 256), seed: int = 0,
                 alpha: float = 0.05, transform: str = "coupling"):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        if len(self.event_shape) != 1:
            raise ValueError(f"event_shape: ConditionalFlow models flat data, got {tuple(self.event_shape)}")
        if transform not in ("coupling", "autoregressive"):
            raise ValueError(f"transform: expected 'coupling' or 'autoregressive', got {transform!r}")
        d = self.event_shape[0]
        self.num_classes = count("num_classes", num_classes)
        count("num_layers", num_layers)
        g = torch.Generator().manual_seed(seed)
        if transform == "coupling":
            self.couplings = nn.ModuleList(conditional_affine_coupling(d, num_classes, list(hidden))
                                           for _ in range(num_layers))
            for c in self.couplings:  # start each coupling at the identity
                nn.init.zeros_(c.nn.layers[-1].weight)
                nn.init.zeros_(c.nn.layers[-1].bias)
        else:
            self.couplings = nn.ModuleList(_ConditionalInverse(conditional_affine_autoregressive(d, num_classes,
                                                                                                 list(hidden)))
                                           for _ in range(num_layers))
        self.register_buffer("perms", torch.stack([torch.randperm(d, generator=g) for _ in range(num_layers)]))
        self.register_buffer("base_loc", torch.zeros(d))
        # Glow's class-conditional prior (Kingma and Dhariwal, 2018): a learned mean and log-scale of z per class.
        self.prior = nn.Embedding(num_classes, 2 * d)
        nn.init.zeros_(self.prior.weight)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha: expected a number in [0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)

    def distribution(self, y, temperature: float = 1.0):
        """p(x | y); ``temperature`` T < 1 shrinks the base scales to T sigma_y (Glow's reduced-temperature draws)."""
        parts = []
        for coupling, perm in zip(self.couplings, self.perms):
            parts += [coupling, Permute(perm)]
        loc, log_scale = self.prior(y.long()).chunk(2, -1)
        base = dist.Normal(self.base_loc + loc, temperature * log_scale.exp()).to_event(1)
        squash = AffineTransform(-self.alpha / (1 - 2 * self.alpha), 1 / (1 - 2 * self.alpha), event_dim=1)
        flow = dist.ConditionalTransformedDistribution(base, parts + [SigmoidTransform(), squash])
        return flow.condition(one_hot(y, self.num_classes, self.base_loc.dtype))

    def model(self, x=None, y=None, num_samples=None):
        announce(self)
        n = _batch(x, y, num_samples)
        with pyro.plate("data", n):
            return pyro.sample("x", self.distribution(y), obs=x)

    def log_prob(self, x, y):
        return self.distribution(y).log_prob(x)

    @torch.no_grad()
    def sample(self, y, temperature: float = 1.0):
        """One draw per label, at ``temperature`` (1: the model itself)."""
        return self.distribution(y, temperature).sample()


# ---------------------------------------------------------------- GAN

class ConditionalGenerator(PyroModule):
    """:math:`x = G(z, y)`, an MLP on ``[z, e_y]`` with a sigmoid output, as site "x" (deterministic)."""

    def __init__(self, event_shape, num_classes: int = 10, latent_dim: int = 16, hidden=(256, 256)):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.num_classes, self.latent_dim = count("num_classes", num_classes), count("latent_dim", latent_dim)
        self.net = DenseNN(latent_dim + num_classes, list(hidden), [math.prod(self.event_shape)])
        self.register_buffer("prior_loc", torch.zeros(latent_dim))

    def forward(self, z, y):
        out = self.net(torch.cat([z, one_hot(y, self.num_classes, z.dtype)], -1))
        return torch.sigmoid(out).reshape(z.shape[0], *self.event_shape)

    def model(self, x=None, y=None, num_samples=None):
        announce(self)
        n = _batch(x, y, num_samples)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(self.prior_loc, 1.0).expand([n, self.latent_dim]).to_event(1))
            return pyro.deterministic("x", self(z, y), event_dim=len(self.event_shape))

    def sample(self, y):
        """One draw G(z, y) per label, by running :meth:`model`."""
        return sample_program(self.model, len(y), args=(y,))


class ProjectionCritic(nn.Module):
    """:math:`V(x, y) = \\psi(\\phi(x)) + \\langle E y, \\phi(x) \\rangle`, spectrally normalized (Miyato and Koyama, 2018).

    ``conditional = True`` tells :class:`~pyro_dgm.inference.Adversarial` to pass the batch's labels.
    """

    conditional = True

    def __init__(self, event_shape, num_classes: int = 10, hidden=(256, 256)):
        super().__init__()
        sizes = (math.prod(as_event_shape(event_shape)), *widths("hidden", hidden))
        sn = nn.utils.parametrizations.spectral_norm
        self.phi = mlp(sizes, lambda: nn.LeakyReLU(0.2), last_activation=True, spectral_norm=True)
        self.psi = sn(nn.Linear(sizes[-1], 1))
        self.embed = sn(nn.Embedding(count("num_classes", num_classes), sizes[-1]))

    def forward(self, x, y):
        h = self.phi(x.reshape(x.shape[0], -1))
        return self.psi(h).squeeze(-1) + (self.embed(y.long()) * h).sum(-1)


class ConditionalGAN(nn.Module):
    """A conditional generator and its projection critic kept together (``gan.model``: the generator's program)."""

    def __init__(self, generator: ConditionalGenerator, critic: ProjectionCritic):
        super().__init__()
        self.generator, self.critic = generator, critic

    @property
    def model(self):
        return self.generator.model

    @property
    def event_shape(self):
        return self.generator.event_shape

    def sample(self, y):
        return self.generator.sample(y)


# ---------------------------------------------------------------- score model with classifier-free guidance

class ConditionalScoreMLP(ScoreMLP):
    """:math:`s_\\theta(x, \\sigma, y)`: :class:`~pyro_dgm.models.ScoreMLP` whose embedding of
    :math:`\\sigma` gets a learned embedding of the label added.

    Label C (one past the classes) is the null label of classifier-free guidance.
    """

    def __init__(self, dim: int, num_classes: int = 10, hidden=(256, 256, 256), embed_dim: int = 64):
        super().__init__(dim, hidden, embed_dim)
        self.label = nn.Embedding(count("num_classes", num_classes) + 1, embed_dim)

    def forward(self, x, sigma, y):
        return self.conditioned(x, sigma, self.embed(sigma) + self.label(y.long()))


class GuidedNCSN(nn.Module):
    """A class-conditional score model with classifier-free guidance (Ho and Salimans, 2021).

    In training mode each label is replaced by the null label C with
    probability ``p_uncond``, so one network learns both :math:`s(x, \\sigma, y)` and
    :math:`s(x, \\sigma, \\varnothing)`; in eval mode site "x" holds the guided field

    .. math:: \\tilde s(x, \\sigma, y) = (1 + w)\\, s(x, \\sigma, y) - w\\, s(x, \\sigma, \\varnothing),

    sampled by annealed Langevin over ``sigmas``. Train with
    ``fit(m.model, None, (x, y), objective=DenoisingScoreMatching())``.

    Example::

        >>> import torch
        >>> m = GuidedNCSN(4, num_classes=2, sigmas=geometric_sigmas(1.0, 0.1, 3), hidden=(16,))
        >>> m.eval().sample(torch.tensor([0, 1])).shape
        torch.Size([2, 4])
    """

    @renamed(step_lr="step_size")
    def __init__(self, dim: int, num_classes: int = 10, *, sigmas=None, guidance: float = 1.0,
                 p_uncond: float = 0.1, hidden=(256, 256, 256), steps_per_level: int = 100, step_size: float = 2e-5):
        super().__init__()
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond: expected a probability in [0, 1), got {p_uncond!r}")
        if guidance < 0:
            raise ValueError(f"guidance: expected w >= 0, got {guidance!r}")
        self.event_shape = torch.Size([count("dim", dim)])
        self.num_classes, self.guidance, self.p_uncond = count("num_classes", num_classes), float(guidance), p_uncond
        self.net = ConditionalScoreMLP(dim, num_classes, widths("hidden", hidden))
        sigmas = geometric_sigmas(5.0, 0.01, 12) if sigmas is None else sigmas
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.get_default_dtype()).reshape(-1))
        self.sampler = AnnealedLangevin(self.sigmas, steps_per_level, step_size)

    def score_fn(self, y):
        """``(x, sigma) -> score``: label dropout in training mode, the guided score in eval mode."""
        null = torch.full_like(y, self.num_classes)
        if self.training:
            drop = torch.rand(y.shape, device=y.device) < self.p_uncond
            labels = torch.where(drop, null, y)
            return lambda x, sigma: self.net(x, sigma, labels)
        w = self.guidance
        return lambda x, sigma: (1 + w) * self.net(x, sigma, y) - w * self.net(x, sigma, null)

    def model(self, x=None, y=None, num_samples=None):
        announce(self)
        n = _batch(x, y, num_samples)
        one_hot(y, self.num_classes)  # checks the labels
        field = ScoreField(self.score_fn(y.long()), self.event_shape, torch.Size([n]), sigmas=self.sigmas,
                           sampler=self.sampler)
        with pyro.plate("data", n):
            return pyro.sample("x", field, obs=x)

    def sample(self, y):
        """One draw per label by running :meth:`model` (guided in eval mode)."""
        return sample_program(self.model, len(y), args=(y,))


# ---------------------------------------------------------------- registry
# Conditional models train on batches (x, y): the CLI must load labels (pyro_dgm.data.load_digits_labels)
# and pass TensorDataset(x, y); ``conditional=True`` marks them in the registry.

def _likelihood(data_kind):
    return "bernoulli" if data_kind == "binary" else "gaussian"


@register_model("cvae", family="vae", data_kinds=("binary", "continuous"), conditional=True,
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 64},
                description="class-conditional VAE: q(z | x, y), p(x | z, y) with the label in every decoder layer")
def _build_cvae(event_shape, data_kind, num_classes=10, latent_dim=16, hidden=(256, 256), **options):
    # benchmarks/controlled.py's settings: latent size chosen on the digits' validation IWAE bound
    return ConditionalVAE(event_shape, num_classes, latent_dim, hidden, likelihood=_likelihood(data_kind),
                          label_every_layer=True)


@register_model("cmade", family="autoregressive", data_kinds=("binary",), conditional=True,
                fit_defaults={"lr": 3e-3, "epochs": 60, "batch_size": 64},
                description="class-conditional MADE: the label as a degree-0 input")
def _build_cmade(event_shape, data_kind, num_classes=10, hidden=(500,), **options):
    return ConditionalMADE(event_shape, num_classes, hidden)


@register_model("cflow", family="flow", data_kinds=("continuous",), conditional=True,
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 64},
                description="class-conditional MAF, or couplings with transform='coupling' "
                            "(Pyro's ConditionalTransformedDistribution)",
                options_added={"transform": "coupling"})
def _build_cflow(event_shape, data_kind, num_classes=10, num_layers=12, hidden=(256, 256), transform="autoregressive",
                 **options):
    return ConditionalFlow(event_shape, num_classes, num_layers, hidden, transform=transform)


@register_model("cgan", family="gan", data_kinds=("binary", "continuous"), conditional=True,
                objective=adversarial_objective("hinge"),
                fit_defaults={"lr": {"generator": 2e-4, "critic": 2e-4}, "batch_size": 64, "epochs": 200,
                              "optimizer_kwargs": {"generator": {"betas": (0.5, 0.999)},
                                                   "critic": {"betas": (0.5, 0.999)}}},
                description="class-conditional GAN: G(z, y) against a projection critic, hinge loss")
def _build_cgan(event_shape, data_kind, num_classes=10, latent_dim=16, hidden=(256, 256), **options):
    return ConditionalGAN(ConditionalGenerator(event_shape, num_classes, latent_dim, hidden),
                          ProjectionCritic(event_shape, num_classes, hidden))


@register_model("cncsn", family="score", data_kinds=("continuous",), conditional=True,
                objective=lambda **o: DenoisingScoreMatching(),
                fit_defaults={"lr": 1e-3, "epochs": 200, "batch_size": 128},
                description="class-conditional score model with classifier-free guidance (w = 1)")
def _build_cncsn(event_shape, data_kind, num_classes=10, guidance=1.0, **options):
    return GuidedNCSN(math.prod(event_shape), num_classes, guidance=guidance)
