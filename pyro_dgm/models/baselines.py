"""Per-pixel baselines: every dimension independent of every other."""

from __future__ import annotations


import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..registry import register_model
from ..checks import as_event_shape
from .base import DistributionModel

__all__ = ["FactorizedBernoulli", "DiagonalGaussian"]


class _Factorized(DistributionModel, PyroModule):
    """A distribution with independent dimensions at site "x"; subclasses give ``distribution(n)``."""

    def __init__(self, event_shape):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)



class FactorizedBernoulli(_Factorized):
    """p(x) = prod_i Bernoulli(x_i; sigmoid(theta_i)): the baseline any model of binary data must beat.

    Example::

        >>> m = FactorizedBernoulli(64)
        >>> m.sample(3).shape
        torch.Size([3, 64])
    """

    def __init__(self, event_shape):
        super().__init__(event_shape)
        self.logits = nn.Parameter(torch.zeros(self.event_shape))

    def distribution(self, n):
        logits = self.__dict__["_parameters"]["logits"]  # plain tensor: no pyro.param overhead
        return dist.Bernoulli(logits=logits.expand(n, *self.event_shape)).to_event(len(self.event_shape))


class DiagonalGaussian(_Factorized):
    """p(x) = prod_i N(x_i; mu_i, sigma_i^2): the baseline for continuous data."""

    def __init__(self, event_shape):
        super().__init__(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def distribution(self, n):
        p = self.__dict__["_parameters"]
        return dist.Normal(p["loc"], p["log_scale"].exp()).expand([n, *self.event_shape]).to_event(
            len(self.event_shape))


@register_model("bernoulli", family="baseline", data_kinds=("binary",),
                fit_defaults={"lr": 5e-2, "epochs": 20},
                description="factorized Bernoulli baseline")
def _build_bernoulli(event_shape, data_kind, **options):
    return FactorizedBernoulli(event_shape)


@register_model("gaussian", family="baseline", data_kinds=("continuous", "points"),
                fit_defaults={"lr": 5e-2, "epochs": 20},
                description="diagonal Gaussian baseline")
def _build_gaussian(event_shape, data_kind, **options):
    return DiagonalGaussian(event_shape)
