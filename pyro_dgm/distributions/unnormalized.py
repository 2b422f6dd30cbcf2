"""The distribution at site "x" of an energy-based model: known only up to its normalizer.

An energy :math:`E_\\theta: \\mathbb{R}^D \\to \\mathbb{R}` defines

.. math:: p_\\theta(x) = \\frac{\\exp(-E_\\theta(x))}{Z(\\theta)}, \\qquad
          Z(\\theta) = \\int \\exp(-E_\\theta(x))\\, dx

(LeCun et al., 2006, "A tutorial on energy-based learning"). ``log_prob``
returns :math:`-E_\\theta(x)`, which is :math:`\\log p_\\theta(x) + \\log Z(\\theta)`:
differences between points are exact, absolute values are not. For a test
NLL add log Z from :mod:`pyro_dgm.partition` (``evaluate(..., log_normalizer=)``).
"""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from ..programs import device_of

__all__ = ["UnnormalizedDistribution"]


class UnnormalizedDistribution(TorchDistribution):
    """An energy-based distribution ``p(x) = exp(-E(x)) / Z`` with Z unknown.

    Args:
        energy: a callable ``E(x)`` mapping a batch ``(n, *event_shape)`` to
            energies of shape ``(n,)`` (an ``nn.Module`` usually).
        event_shape: the shape of one example.
        batch_shape: the batch shape (the ``pyro.plate("data", n)`` size).
        sampler: ``sampler(x0, log_prob) -> x`` used by :meth:`sample`; default
            200 steps of unadjusted Langevin (step 1e-2) from ``x0 ~ N(0, I)``.

    ``log_prob(x) = -E(x)``: the log density **up to the constant log Z**.
    ``score(x) = -grad_x E(x)`` is exact (Z does not depend on x).

    Example::

        >>> import torch
        >>> d = UnnormalizedDistribution(lambda x: 0.5 * x.pow(2).sum(-1), torch.Size([2]))
        >>> d.log_prob(torch.ones(3, 2))
        tensor([-1., -1., -1.])
        >>> d.score(torch.ones(1, 2))
        tensor([[-1., -1.]])
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, energy, event_shape, batch_shape=torch.Size(), sampler=None, validate_args=None):
        if not callable(energy):
            raise ValueError(f"energy: expected a callable E(x), got {type(energy).__name__}")
        self._energy = energy
        self._sampler = sampler
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=validate_args)

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x), one value per example: shape ``x.shape[:-len(event_shape)]``."""
        k = len(self.event_shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k:]) != tuple(self.event_shape):
            raise ValueError(f"x: each example has shape {tuple(x.shape[1:])}, but the energy's event_shape is "
                             f"{tuple(self.event_shape)} (a batch of shape {tuple(x.shape)})")
        lead = x.shape[:x.dim() - k]
        return self._energy(x.reshape(-1, *self.event_shape)).reshape(lead)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``-E(value)``: log p(value) + log Z, the log density up to its normalizer."""
        return -self.energy(value)

    def score(self, x: torch.Tensor, create_graph: bool | None = None) -> torch.Tensor:
        """``grad_x log p(x) = -grad_x E(x)``.

        ``create_graph`` (default: ``x.requires_grad``) keeps the graph, so the
        score is differentiable in x and in the parameters, as score matching
        needs; without it the score is computed on a detached copy of ``x`` and
        carries no graph, as samplers need.
        """
        graph = x.requires_grad if create_graph is None else bool(create_graph)
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
            e = self.energy(leaf).sum()
            return -torch.autograd.grad(e, leaf, create_graph=graph)[0]

    def expand(self, batch_shape, _instance=None):
        return UnnormalizedDistribution(self._energy, self.event_shape, batch_shape, self._sampler)

    def sample(self, sample_shape=torch.Size()):
        """Approximate samples by MCMC on ``-E`` (``sampler``), shape ``sample_shape + batch_shape + event_shape``."""
        shape = torch.Size(sample_shape) + self.batch_shape
        n = max(shape.numel(), 1)
        x0 = torch.randn(n, *self.event_shape, device=device_of(self._energy))
        sampler = self._sampler or _default_sampler
        with torch.no_grad():
            x = sampler(x0, self.log_prob)
        return x.reshape(shape + self.event_shape)


def _default_sampler(x0, log_prob):
    from ..samplers import langevin

    return langevin(x0, log_prob=log_prob, step_size=1e-2, num_steps=200)
