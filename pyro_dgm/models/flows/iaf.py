"""Inverse autoregressive flow as a VAE posterior (Kingma et al., 2016).

The guide is a conditional flow, built from Pyro's
``ConditionalTransformedDistribution``: given the encoder's features
:math:`h(x)`,

.. math:: z_0 = \\mu(h) + \\sigma(h) \\odot \\epsilon, \\quad
          z_t = \\mu_t(z_{t-1}, h) + \\sigma_t(z_{t-1}, h) \\odot z_{t-1}, \\quad
          \\log q(z_T|x) = \\log N(\\epsilon; 0, I) - \\sum_i \\log \\sigma_i - \\sum_{t,i} \\log \\sigma_{t,i}

where :math:`\\mu_t, \\sigma_t` are autoregressive in :math:`z` (a
conditional MADE, Pyro's ``ConditionalAffineAutoregressive``). Sampling and
scoring the sample both cost one pass per step, because Pyro's transforms
cache the (z_{t-1}, z_t) pairs of the sample they just drew. A flow guide has
no closed-form KL, so ``fit``'s ELBO uses Pyro's ``Trace_ELBO``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.conditional import (ConditionalDistribution, ConditionalTransformedDistribution,
                                            ConditionalTransformModule)
from pyro.distributions.transforms import AffineTransform, ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from ...registry import register_model
from ..vae import VAE
from ...nets import loc_scale, mlp
from ...checks import as_event_shape, count, widths
from ...programs import announce

__all__ = ["ConditionalIAF", "IAFVAE"]


class _StandardNormal(ConditionalDistribution):
    """N(0, I) over ``dim`` numbers, one independent draw per context row."""

    def __init__(self, dim):
        self.dim = dim

    def condition(self, context):
        zeros = context.new_zeros(*context.shape[:-1], self.dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


class _ConditionalGaussian(ConditionalTransformModule):
    """:math:`z \\mapsto \\mu(h) + \\sigma(h) \\odot z`, the Gaussian step of the IAF posterior."""

    def __init__(self, context_dim, dim):
        super().__init__()
        self.net = nn.Linear(context_dim, 2 * dim)

    def condition(self, context):
        loc, scale = loc_scale(self.net(context))
        return AffineTransform(loc, scale, event_dim=1, cache_size=1)


class ConditionalIAF(nn.Module):
    """The IAF posterior :math:`q(z|h)` as a Pyro ``ConditionalTransformedDistribution``.

    Args:
        dim: size of z.
        context_dim: size of the context h.
        num_steps: number of IAF steps after the Gaussian step.
        hidden: hidden widths of each conditional MADE.

    Example::

        >>> import torch
        >>> q = ConditionalIAF(2, 5, num_steps=2, hidden=(8,))
        >>> d = q.condition(torch.randn(3, 5))
        >>> z = d.rsample()
        >>> z.shape, d.log_prob(z).shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(self, dim: int, context_dim: int, num_steps: int = 2, hidden=(64,)):
        super().__init__()
        count("dim", dim)
        count("context_dim", context_dim)
        count("num_steps", num_steps, 0)
        order = torch.arange(dim)
        self.gaussian = _ConditionalGaussian(context_dim, dim)
        self.steps = nn.ModuleList(
            ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(
                dim, context_dim, list(widths("hidden", hidden)), permutation=order if i % 2 == 0 else order.flip(0)))
            for i in range(num_steps))
        self.flow = ConditionalTransformedDistribution(_StandardNormal(dim), [self.gaussian, *self.steps])

    def condition(self, context: torch.Tensor):
        """q(z | h = context): a ``TransformedDistribution`` with batch shape ``context.shape[:-1]``."""
        return self.flow.condition(context)


class IAFVAE(VAE):
    """A VAE whose guide is an inverse autoregressive flow (Kingma et al., 2016).

    The model is the foundation's :class:`~pyro_dgm.models.VAE` (prior,
    decoder, likelihood); the guide is :class:`ConditionalIAF` on the
    encoder's features, so ``fit(vae.model, vae.guide, x)`` trains it with
    the ELBO (by Pyro's ``Trace_ELBO``, as the KL has no closed form).

    Args:
        event_shape, latent_dim, hidden, likelihood: as for ``VAE``.
        num_steps: IAF steps on top of the Gaussian.
        flow_hidden: hidden widths of each step's MADE.

    Example::

        >>> import torch
        >>> vae = IAFVAE(16, latent_dim=2, hidden=(32,), num_steps=2)
        >>> vae.encode(torch.rand(3, 16)).shape
        torch.Size([3, 2])

    Reference: D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever,
    M. Welling. Improved Variational Inference with Inverse Autoregressive
    Flow. NeurIPS 2016, arXiv:1606.04934.
    """

    def __init__(self, event_shape, latent_dim: int = 20, hidden=(400,), likelihood: str = "bernoulli",
                 num_steps: int = 2, flow_hidden=(64,)):
        hidden = widths("hidden", hidden)
        features = nn.Sequential(nn.Flatten(), mlp((as_event_shape(event_shape).numel(), *hidden)), nn.ReLU())
        super().__init__(event_shape, latent_dim, hidden, likelihood, encoder=features)
        self.posterior = ConditionalIAF(self.latent_dim, hidden[-1], num_steps, flow_hidden)

    def guide(self, x=None, num_samples=None):
        """q(z|x): the IAF posterior conditioned on the encoder's features of x."""
        announce(self)
        if x is None:
            raise ValueError("x: the guide q(z|x) needs data")
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.posterior.condition(self.encoder(x)))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The image under the posterior's flow of the base's mode (epsilon = 0)."""
        q = self.posterior.condition(self.encoder(x))
        z = torch.zeros(x.shape[0], self.latent_dim, device=x.device, dtype=x.dtype)
        for t in q.transforms:
            z = t(z)
        return z


@register_model("iaf-vae", family="flow", data_kinds=("binary", "continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 64},
                description="VAE with an inverse autoregressive flow posterior")
def _build_iaf_vae(event_shape, data_kind, latent_dim=8, hidden=(256,), num_steps=2, **options):
    likelihood = "bernoulli" if data_kind == "binary" else "gaussian"
    return IAFVAE(event_shape, latent_dim, hidden, likelihood, num_steps)
