"""Uniform dequantization and RealNVP's logit pre-processing, with their log-det terms.

Pixel levels :math:`k \\in \\{0, \\dots, L-1\\}^D` become continuous values
:math:`x = (k + u) / L`, :math:`u \\sim U[0, 1)^D`; a density :math:`p` on
:math:`[0, 1)^D` then bounds the discrete likelihood (Theis et al., 2016):

.. math:: \\log P(k) \\ge \\mathbb{E}_u[\\log p((k + u)/L)] - D \\log L .

So bits/dim of the discrete data = bits/dim of :math:`p` on :math:`[0, 1)^D` +
:math:`\\log_2 L` (:func:`discrete_bits_per_dim`). The logit pre-processing of
RealNVP (Dinh et al., 2017, sec. 4.1) maps :math:`[0, 1)` to the real line
first; its log-det is part of the flow, so reported likelihoods include it.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import Transform
from ...checks import count

__all__ = ["LogitTransform", "UniformDequantization", "discrete_bits_per_dim"]


def discrete_bits_per_dim(nll_nats: float, dims: int, num_levels: int) -> float:
    """Bits/dim of L-level data from the NLL (nats per example) of a density on [0, 1)^D.

    .. math:: \\mathrm{bpd} = \\frac{\\mathrm{NLL}}{D \\log 2} + \\log_2 L

    Example::

        >>> round(discrete_bits_per_dim(0.0, 64, 17), 4)  # the uniform density on [0, 1)^64
        4.0875
    """
    count("num_levels", num_levels, 2)
    return nll_nats / (dims * math.log(2.0)) + math.log2(num_levels)


class LogitTransform(Transform):
    """RealNVP's pre-processing :math:`y = \\mathrm{logit}(\\alpha + (1 - 2\\alpha) x)` of :math:`x \\in [0, 1)`.

    .. math:: \\log\\left|\\frac{dy}{dx}\\right| = \\log(1 - 2\\alpha) - \\log p - \\log(1 - p),
              \\quad p = \\alpha + (1 - 2\\alpha) x

    Elementwise (``event_dim = 0``); the flow sums it over the event. Its
    domain is the interval that the logit maps onto the real line,
    :math:`(-\\frac{\\alpha}{1-2\\alpha}, \\frac{1-\\alpha}{1-2\\alpha}) \\supset [0, 1)`:
    a flow's samples can fall slightly outside [0, 1), and the mass there is
    what the pre-processing costs in likelihood.

    Example::

        >>> import torch
        >>> t = LogitTransform(0.05)
        >>> t(torch.tensor([0.5]))
        tensor([0.])
        >>> t.inv(torch.tensor([0.]))
        tensor([0.5000])
    """

    codomain = constraints.real
    bijective = True

    def __init__(self, alpha: float = 0.05):
        super().__init__(cache_size=0)
        if not 0.0 <= float(alpha) < 0.5:
            raise ValueError(f"alpha: expected a number in [0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)
        a = self.alpha / (1 - 2 * self.alpha)
        self.domain = constraints.interval(-a, 1 + a)

    def _call(self, x):
        return torch.logit(self.alpha + (1 - 2 * self.alpha) * x)

    def _inverse(self, y):
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)

    def log_abs_det_jacobian(self, x, y):
        return math.log1p(-2 * self.alpha) + torch.nn.functional.softplus(y) + torch.nn.functional.softplus(-y)


class UniformDequantization(TorchDistribution):
    """A distribution over integer levels from a density on :math:`[0, 1)^D`.

    ``log_prob(k)`` is the one-sample dequantization bound
    :math:`\\log p((k + u)/L) - D \\log L` with a fresh :math:`u \\sim U[0,1)^D`
    on every call (its expectation is at most :math:`\\log P(k)`);
    ``sample()`` is :math:`\\lfloor L x \\rfloor` for :math:`x \\sim p`.

    Args:
        base: a distribution on :math:`[0, 1)^D` (for example a flow with a
            :class:`LogitTransform`).
        num_levels: L.

    Example::

        >>> import torch, pyro.distributions as dist
        >>> d = UniformDequantization(dist.Uniform(torch.zeros(2), torch.ones(2)).to_event(1), 17)
        >>> round(float(d.log_prob(torch.tensor([3.0, 16.0]))), 4)  # -2 log 17
        -5.6664
    """

    arg_constraints = {}

    def __init__(self, base, num_levels: int, validate_args=None):
        count("num_levels", num_levels, 2)
        self.base, self.num_levels = base, num_levels
        super().__init__(base.batch_shape, base.event_shape, validate_args=validate_args)

    @property
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.num_levels - 1), len(self.event_shape))

    def log_prob(self, value):
        value = value if value.is_floating_point() else value.to(torch.get_default_dtype())
        u = torch.rand_like(value)
        dims = math.prod(self.event_shape)
        return self.base.log_prob((value + u) / self.num_levels) - dims * math.log(self.num_levels)

    def sample(self, sample_shape=torch.Size()):
        x = self.base.sample(sample_shape)
        return (x * self.num_levels).floor().clamp(0, self.num_levels - 1)

    def expand(self, batch_shape, _instance=None):
        return UniformDequantization(self.base.expand(batch_shape), self.num_levels)
