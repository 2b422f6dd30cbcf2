"""A weighted mixture of trained exact-likelihood models, itself a Pyro program with one data site."""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from torch import nn
from torch.distributions import constraints

from ..checks import as_event_shape, count
from ..distributions.autoregressive import AutoregressiveDistribution
from ..programs import data_site, latent_sites, module_of, sample_program, trace_program
from ..runtime import eval_mode
from .autoregressive.base import mixture_log_prob, mixture_sample
from .base import DistributionModel

__all__ = ["Mixture", "em_weights"]


def em_weights(log_likelihoods: torch.Tensor, num_steps: int = 50) -> torch.Tensor:
    """Mixture weights that maximize :math:`\\sum_i \\log \\sum_k w_k p_k(x_i)` for fixed components, by EM.

    Only the K weights are fitted (the E step's responsibilities
    :math:`r_{ik} \\propto w_k p_k(x_i)`, the M step's :math:`w_k = \\frac{1}{n} \\sum_i r_{ik}`,
    from uniform weights), written out since it is two lines on a (K, n) table
    that no Pyro or torch routine takes. Fit them on held-out data, not on the
    data the components were trained on.

    Args:
        log_likelihoods: :math:`\\log p_k(x_i)`, shape ``(K, n)``.
        num_steps: EM steps.

    Example::

        >>> lls = torch.tensor([[0.0, 0.0, 0.0], [-9.0, -9.0, -9.0]])   # the first component is better
        >>> em_weights(lls, 30)[0] > 0.99
        tensor(True)
    """
    if log_likelihoods.dim() != 2 or not torch.isfinite(log_likelihoods).all():
        raise ValueError(f"log_likelihoods: expected finite values of shape (K, n), got shape "
                         f"{tuple(log_likelihoods.shape)}")
    log_w = torch.full((log_likelihoods.shape[0], 1), -math.log(log_likelihoods.shape[0]),
                       dtype=log_likelihoods.dtype, device=log_likelihoods.device)
    for _ in range(count("num_steps", num_steps)):
        joint = log_w + log_likelihoods
        log_w = torch.logsumexp(joint - torch.logsumexp(joint, 0), 1, keepdim=True) - math.log(joint.shape[1])
    return log_w.squeeze(1).exp()


def _check_weights(weights, k: int) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.get_default_dtype()).flatten()
    if (w.numel() != k or not torch.isfinite(w).all() or (w < 0).any()
            or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-4)):
        raise ValueError(f"weights: expected {k} non-negative numbers that sum to 1, got {weights!r}")
    return w / w.sum()


class Mixture(DistributionModel, nn.Module):
    """:math:`p(x) = \\sum_{k=1}^{K} w_k\\, p_k(x)`, a mixture of models with exact densities.

    Each component is a pyro_dgm model (a module with a ``model`` program:
    MADE, NADE, PixelCNN, a flow) or any Pyro program ``program(x)`` whose
    data site holds an exact density and that has no latent sites (a VAE's
    program gives only a bound, and is refused at the first call). The
    mixture's program has one observed data site whose ``log_prob`` is
    :math:`\\log\\sum_k w_k p_k(x)`, computed as MADE's ensemble over its
    masks computes it (``mixture_log_prob``), from each component's data-site
    log density (``programs.site_log_prob`` under ``poutine.block``, so the
    components' sites stay out of the mixture's trace). So
    ``pyro_dgm.evaluate(mix.model, x)`` gives its exact NLL, in eval mode for
    every component (MADE's and NADE's ensembles), and ``mix.sample(n)``
    draws a component per row, then a sample of it. Components may have
    other event shapes of the same size (a PixelCNN's ``(1, 8, 8)`` beside a
    MADE's ``(64,)``): data are reshaped to each component's shape.

    Args:
        components: K models or programs.
        weights: K non-negative numbers that sum to 1 (default: uniform);
            :func:`em_weights` or :meth:`fit_weights` fits them on held-out data.
        event_shape: the mixture's shape of one example (default: the first
            component's ``event_shape``).
        site: the components' data site.
        support: the support of one dimension, for the data check of ``fit``.

    Example::

        >>> import pyro_dgm
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> a, b = FactorizedBernoulli(4), FactorizedBernoulli(4)
        >>> mix = Mixture([a, b], weights=[0.25, 0.75])
        >>> x = torch.ones(3, 4)
        >>> lp_a, lp_b = a.distribution(3).log_prob(x), b.distribution(3).log_prob(x)
        >>> bool(torch.allclose(mix.log_prob(x), torch.logsumexp(torch.stack(
        ...     [lp_a + math.log(0.25), lp_b + math.log(0.75)]), 0)))
        True
        >>> mix.sample(5).shape
        torch.Size([5, 4])
    """

    def __init__(self, components, weights=None, event_shape=None, site: str = "x",
                 support=constraints.real):
        super().__init__()
        components = list(components)
        if not components or not all(callable(c) for c in components):
            raise ValueError(f"components: expected one or more models or Pyro programs, got {components!r}")
        self.programs = [c.model if isinstance(c, nn.Module) and hasattr(c, "model") else c for c in components]
        # The modules that own the programs are submodules, so fit, eval() and .to() reach them.
        self.members = nn.ModuleList(dict.fromkeys(m for m in map(module_of, self.programs) if m is not None))
        k = len(self.programs)
        self.register_buffer("weights", _check_weights(torch.full((k,), 1.0 / k) if weights is None else weights, k))
        first = getattr(module_of(self.programs[0]), "event_shape", None)
        if event_shape is None and first is None:
            raise ValueError("event_shape: the first component has none; give the mixture's event_shape")
        self.event_shape = as_event_shape(first if event_shape is None else event_shape)
        self.shapes = [getattr(module_of(p), "event_shape", self.event_shape) for p in self.programs]
        for j, shape in enumerate(self.shapes):
            if math.prod(shape) != math.prod(self.event_shape):
                raise ValueError(f"components[{j}]: event shape {tuple(shape)} does not have the size of "
                                 f"{tuple(self.event_shape)}")
        self.site, self.support = site, support

    def component_log_prob(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """:math:`\\log p_k(x)` of each row, shape ``(n,)``."""
        with poutine.block():
            trace = trace_program(self.programs[k], x.reshape(x.shape[0], *self.shapes[k]))
        if latent_sites(trace):
            raise ValueError(f"components[{k}]: has latent sites {latent_sites(trace)}; a mixture needs "
                             f"components with an exact density at the data site")
        node = data_site(trace, self.site)
        return node["fn"].log_prob(node["value"])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \\sum_k w_k p_k(x)`, shape ``(n,)``."""
        return mixture_log_prob(self.component_log_prob, x, len(self.programs), log_weights=self.weights.log())

    @torch.no_grad()
    def fit_weights(self, x: torch.Tensor, num_steps: int = 50) -> "Mixture":
        """Set the weights by :func:`em_weights` on the eval-mode components' log densities of ``x``
        (held-out data); returns the mixture."""
        with eval_mode([self]):
            lls = torch.stack([self.component_log_prob(x, k) for k in range(len(self.programs))])
        self.weights.copy_(em_weights(lls, num_steps))
        return self

    def sample(self, n: int) -> torch.Tensor:
        """Each row's component drawn with probabilities ``weights``, then that component's samples."""
        return mixture_sample(count("n", n), len(self.programs), self._sample_component, self.event_shape,
                              self.weights.device, weights=self.weights)

    def _sample_component(self, rows, k):
        m = int(rows.sum())
        like = torch.zeros(m, *self.shapes[k], device=self.weights.device)
        with poutine.block():
            return sample_program(self.programs[k], m, self.site, like=like).reshape(m, *self.event_shape)

    def distribution(self, n: int) -> AutoregressiveDistribution:
        """The distribution at the data site: the mixture's exact density and its sampler."""
        return AutoregressiveDistribution(self.log_prob, self.sample, self.event_shape, (n,), self.support)
