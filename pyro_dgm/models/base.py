"""The shape most families share: a program with one data site ``x ~ self.distribution(n)``.

A family whose model is a distribution over a plate of examples (a density,
an autoregressive model, a flow, an EBM's unnormalized density, a score
field) mixes :class:`DistributionModel` into its ``nn.Module`` (or
``PyroModule``) and writes ``distribution(n)`` and ``event_shape``; the Pyro
program, its sampling convenience and the announcement of its parameters to
Pyro come from here.
"""

from __future__ import annotations

import pyro
import torch

from ..checks import count
from ..programs import announce, sample_program

__all__ = ["DistributionModel", "batch_size_of"]


def batch_size_of(x, num_samples):
    """The plate size of a program called as ``model(x)`` or ``model(None, num_samples=n)``."""
    if x is not None:
        return x.shape[0]
    if num_samples is None:
        raise ValueError("num_samples: give data x or the number of samples to draw")
    return int(num_samples)


class DistributionModel:
    """Mixin for a module whose program is ``x ~ self.distribution(n)`` inside ``pyro.plate("data", n)``.

    Example::

        >>> import pyro.distributions as dist
        >>> class Coin(DistributionModel, torch.nn.Module):
        ...     event_shape = torch.Size([1])
        ...     def distribution(self, n):
        ...         return dist.Bernoulli(torch.full((n, 1), 0.3)).to_event(1)
        >>> Coin().sample(4).shape
        torch.Size([4, 1])
    """

    def model(self, x=None, num_samples=None):
        """The Pyro program: site "x" inside ``pyro.plate("data")``, observed when ``x`` is given."""
        announce(self)
        n = batch_size_of(x, num_samples)
        with pyro.plate("data", n):
            return pyro.sample("x", self.distribution(n), obs=x)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples by running :meth:`model`, so handlers around the call apply."""
        return sample_program(self.model, count("n", n))
