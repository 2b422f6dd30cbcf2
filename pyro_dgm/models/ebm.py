"""Energy-based models: a Pyro program whose site "x" is an unnormalized distribution.

.. math:: p_\\theta(x) = \\exp(-E_\\theta(x)) / Z(\\theta), \\qquad
          E_\\theta(x) = f_\\theta(x) + \\tfrac12 \\|(x - \\mu_0) / \\sigma_0\\|^2

with :math:`f_\\theta` a network and an optional Gaussian base term (``base_scale``
:math:`\\sigma_0`) that keeps :math:`Z(\\theta)` finite however f extrapolates
and gives annealed importance sampling its starting distribution
:math:`\\mathcal{N}(\\mu_0, \\sigma_0^2 I)`. Train with an objective from
:mod:`pyro_dgm.inference.contrastive` (CD, PCD, score matching, NCE, FCE)::

    ebm = EBM(EnergyMLP(2), event_shape=2, base_scale=4.0)
    pyro_dgm.fit(ebm.model, None, data, objective=ContrastiveDivergence())

Also here: :class:`FlowNoise`, the small flow that flow contrastive
estimation uses as its trainable noise.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineTransform, Permute, spline_coupling
from pyro.nn import PyroModule
from torch import nn

from ..distributions.unnormalized import UnnormalizedDistribution
from ..inference.contrastive import (ContrastiveDivergence, FlowContrastiveEstimation,
                                     NoiseContrastiveEstimation, PersistentContrastiveDivergence,
                                     ScoreMatching)
from ..samplers import langevin
from ..registry import register_model
from .base import DistributionModel
from ..checks import as_event_shape, count, positive, widths
from ..deprecation import renamed, renamed_attribute
from ..nets import mlp

__all__ = ["EBM", "EnergyMLP", "DigitsEnergy", "FlowNoise"]


class EnergyMLP(nn.Module):
    """``f(x)``: an MLP ``D -> hidden... -> 1`` with SiLU activations (smooth, so scores and
    Hessian traces are too); returns shape ``(n,)``.

    Example::

        >>> EnergyMLP(2)(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, in_dim: int, hidden=(128, 128)):
        super().__init__()
        count("in_dim", in_dim)
        self.net = mlp((in_dim, *widths("hidden", hidden, allow_empty=True), 1), nn.SiLU)

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], -1)).squeeze(-1)


class DigitsEnergy(nn.Module):
    """``f(x)`` for 8x8 images: two SiLU convolutions (8x8 -> 4x4) then a linear read-out.

    The flattening read-out sees where each feature is, so the border of an
    image with a zero background is told apart from its centre. Accepts
    ``(n, 64)`` or ``(n, 1, 8, 8)``.

    Example::

        >>> DigitsEnergy()(torch.zeros(3, 64)).shape
        torch.Size([3])
    """

    def __init__(self, channels: int = 32, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(2 * channels * 16, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], 1, 8, 8)).squeeze(-1)


class EBM(DistributionModel, PyroModule):
    """An energy-based model as a Pyro program with site ``"x"``.

    Args:
        energy_net: ``f_theta(x) -> (n,)``, an ``nn.Module``.
        event_shape: the shape of one example.
        base_loc, base_scale: numbers or tensors of ``event_shape``: the Gaussian
            base term ``0.5 ||(x - mu0)/sigma0||^2`` added to the energy
            (``base_scale=None``: none). Fitted to the data (mean, std), it makes
            the untrained EBM the diagonal-Gaussian baseline.
        num_steps, step_size, noise_scale: the Langevin chain that
            ``model(num_samples=n)`` and :meth:`sample` run, from the base
            Gaussian (or N(0, I) without one); the arguments of
            :func:`pyro_dgm.samplers.langevin`. (``sample_steps``,
            ``sample_step_size`` and ``sample_noise`` are their deprecated names.)

    ``log_prob`` at site "x" is ``-E(x)``, the log density up to log Z; see
    :mod:`pyro_dgm.partition` for log Z.

    Example::

        >>> ebm = EBM(EnergyMLP(2, hidden=(16,)), event_shape=2, base_scale=3.0, num_steps=10)
        >>> ebm.energy(torch.zeros(4, 2)).shape, ebm.sample(4).shape
        (torch.Size([4]), torch.Size([4, 2]))
    """

    sample_steps = renamed_attribute("num_steps", "sample_steps")
    sample_step_size = renamed_attribute("step_size", "sample_step_size")
    sample_noise = renamed_attribute("noise_scale", "sample_noise")

    @renamed(sample_steps="num_steps", sample_step_size="step_size", sample_noise="noise_scale")
    def __init__(self, energy_net: nn.Module, event_shape, *, base_loc=0.0, base_scale=None,
                 num_steps: int = 200, step_size: float = 1e-2, noise_scale: float = 1.0):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.energy_net = energy_net
        self.register_buffer("base_loc", torch.as_tensor(base_loc, dtype=torch.get_default_dtype())
                             .expand(self.event_shape).clone())
        if base_scale is not None:
            base_scale = torch.as_tensor(base_scale, dtype=torch.get_default_dtype()).expand(self.event_shape).clone()
            if not bool((base_scale > 0).all()):
                raise ValueError(f"base_scale: expected positive numbers or None, got {base_scale}")
        self.register_buffer("base_scale", base_scale)
        self.num_steps = count("num_steps", num_steps)
        self.step_size, self.noise_scale = positive("step_size", step_size), float(noise_scale)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x) = f(x) + 0.5 ||(x - mu0)/sigma0||^2``, shape ``(n,)``."""
        e = self.energy_net(x)
        if self.base_scale is not None:
            z = (x - self.base_loc) / self.base_scale
            e = e + 0.5 * z.reshape(x.shape[0], -1).pow(2).sum(-1)
        return e

    def _scale(self):
        return self.base_scale if self.base_scale is not None else torch.ones_like(self.base_loc)

    def base_distribution(self):
        """The normalized Gaussian of the base term (the start of AIS and of sampling)."""
        return dist.Normal(self.base_loc, self._scale()).to_event(len(self.event_shape))

    def _sampler(self, x0, log_prob):
        return langevin(self.base_loc + self._scale() * x0, log_prob=log_prob, step_size=self.step_size,
                        num_steps=self.num_steps, noise_scale=self.noise_scale)

    def distribution(self, n: int) -> UnnormalizedDistribution:
        return UnnormalizedDistribution(self.energy, self.event_shape, torch.Size([n]), sampler=self._sampler)



class FlowNoise(DistributionModel, PyroModule):
    """A small spline-coupling flow as a Pyro program: the noise of flow contrastive estimation.

    .. math:: x = \\mu + \\sigma \\odot g_K \\circ \\dots \\circ g_1(z), \\quad z \\sim \\mathcal{N}(0, I)

    with :math:`g_k` Pyro's ``spline_coupling`` (Durkan et al., 2019) alternated
    with a reversal of the coordinates, and :math:`(\\mu, \\sigma)` fixed to the
    data's mean and standard deviation, so that data lies well inside the
    splines' ``bound`` (outside it they are the identity). Built from Pyro's
    own transforms; any program with a site "x" that can ``rsample`` and
    ``log_prob`` can be passed to :class:`~pyro_dgm.inference.FlowContrastiveEstimation`
    instead (the flows of :mod:`pyro_dgm.models.flows`, for instance).

    Example::

        >>> flow = FlowNoise(2, loc=torch.zeros(2), scale=torch.ones(2))
        >>> flow.distribution(5).rsample().shape
        torch.Size([5, 2])
    """

    def __init__(self, dim: int, loc=None, scale=None, num_layers: int = 3, hidden: int = 32,
                 count_bins: int = 8, bound: float = 4.0):
        super().__init__()
        count("dim", dim, 2)  # a coupling needs two halves
        self.event_shape = torch.Size([dim])
        self.couplings = nn.ModuleList(
            spline_coupling(dim, hidden_dims=[hidden, hidden], count_bins=count_bins, bound=bound)
            for _ in range(num_layers))
        self.register_buffer("loc", torch.zeros(dim) if loc is None else torch.as_tensor(loc).reshape(dim))
        self.register_buffer("scale", torch.ones(dim) if scale is None else torch.as_tensor(scale).reshape(dim))
        self.register_buffer("reverse", torch.arange(dim - 1, -1, -1))

    def distribution(self, n: int):
        transforms = []
        for c in self.couplings:
            transforms += [c, Permute(self.reverse)]
        transforms.append(AffineTransform(self.loc, self.scale, event_dim=1))
        base = dist.Normal(torch.zeros_like(self.loc), torch.ones_like(self.loc)).to_event(1)
        return dist.TransformedDistribution(base.expand([n]), transforms)



# ---------------------------------------------------------------- registry

def _build_ebm(event_shape, data_kind, **options):
    shape = as_event_shape(event_shape)
    if data_kind == "points":
        return EBM(EnergyMLP(math.prod(shape), tuple(options.get("hidden", (128, 128)))), shape,
                   base_scale=options.get("base_scale", 4.0))
    if math.prod(shape) != 64:
        raise ValueError(f"event_shape: the image EBM is built for 8x8 digits (64 values), got {tuple(shape)}")
    return EBM(DigitsEnergy(), shape, base_loc=0.5, base_scale=options.get("base_scale", 0.5))


def _objective(cls):
    """``objective(module=, data_kind=, **options)`` for the registry: ``cls(**options)`` (the registry
    refuses an option ``cls`` does not take, reading them from ``cls`` here)."""
    return lambda module=None, data_kind=None, **options: cls(**options)


_KINDS = ("points", "continuous")
_FIT = {"lr": 1e-3, "epochs": 30, "batch_size": 256}

register_model("ebm-cd", family="ebm", data_kinds=_KINDS, fit_defaults=_FIT,
               objective=_objective(ContrastiveDivergence),
               description="EBM trained by CD-k: short-run Langevin from noise")(_build_ebm)
register_model("ebm-pcd", family="ebm", data_kinds=_KINDS, fit_defaults=_FIT,
               objective=_objective(PersistentContrastiveDivergence),
               description="EBM trained by persistent CD with a replay buffer")(_build_ebm)
register_model("ebm-sm", family="ebm", data_kinds=_KINDS, fit_defaults=_FIT,
               objective=_objective(ScoreMatching),
               description="EBM trained by score matching (exact Hessian trace; method='hutchinson' for large D)")(
    _build_ebm)
register_model("ebm-nce", family="ebm", data_kinds=_KINDS, fit_defaults=_FIT,
               objective=_objective(NoiseContrastiveEstimation),
               description="EBM trained by NCE against a Gaussian fitted to the data, log Z learned")(_build_ebm)
register_model("ebm-fce", family="ebm", data_kinds=("points",), fit_defaults=_FIT,
               objective=_objective(FlowContrastiveEstimation),
               description="EBM trained by flow contrastive estimation against a jointly trained flow")(_build_ebm)
