"""The distribution at site "x" of a score-based model: a score field, with no density.

A noise-conditional score network :math:`s_\\theta(x, \\sigma)` estimates the
score of the data perturbed by Gaussian noise of scale :math:`\\sigma`,

.. math:: s_\\theta(x, \\sigma) \\approx \\nabla_x \\log p_\\sigma(x), \\qquad
          p_\\sigma(x) = \\int p_{data}(y)\\, \\mathcal{N}(x; y, \\sigma^2 I)\\, dy

(Song and Ermon, 2019, "Generative modeling by estimating gradients of the
data distribution"). The score fixes the density up to its normalizer, which is
never computed: ``log_prob`` raises. Objectives
(:mod:`pyro_dgm.inference.score_based`) call :meth:`ScoreField.score`; sampling
runs the field's sampler, by default annealed Langevin dynamics over the noise
ladder ``sigmas`` (or predictor-corrector sampling of ``sde`` when there is no
ladder). For a likelihood, integrate the probability-flow ODE
(:func:`pyro_dgm.inference.score_based.probability_flow_nll`).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from ..samplers import AnnealedLangevin, PredictorCorrector, as_sigmas as _as_sigmas

__all__ = ["ScoreField"]


class ScoreField(TorchDistribution):
    """A score field :math:`s_\\theta(x, \\sigma) \\approx \\nabla_x \\log p_\\sigma(x)` at a sample site.

    Args:
        net: a callable ``net(x, sigma)``: ``x`` of shape ``(n, *event_shape)``,
            ``sigma`` of shape ``(n,)``, returning the score, shaped like ``x``.
        event_shape: the shape of one example.
        batch_shape: the ``pyro.plate("data", n)`` size.
        sigmas: the noise ladder :math:`\\sigma_1 > \\dots > \\sigma_L` the field
            was trained on (read by ``DenoisingScoreMatching()`` and the
            default sampler), or None.
        sde: the diffusion (``VESDE`` / ``VPSDE``) the field was trained for, or None.
        sampler: ``sampler(score, shape, device=, dtype=) -> x``; default
            ``AnnealedLangevin(sigmas)``, else ``PredictorCorrector(sde)``.

    Example::

        >>> import torch
        >>> d = ScoreField(lambda x, s: -x / (1 + s[:, None] ** 2), torch.Size([2]), sigmas=[1.0, 0.1])
        >>> d.score(torch.ones(1, 2))          # sigma defaults to the smallest level
        tensor([[-0.9901, -0.9901]])
        >>> d.expand(torch.Size([5])).sample().shape
        torch.Size([5, 2])
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, net, event_shape, batch_shape=torch.Size(), *, sigmas=None, sde=None, sampler=None,
                 validate_args=None):
        if not callable(net):
            raise ValueError(f"net: expected a callable net(x, sigma), got {type(net).__name__}")
        if sampler is not None and not callable(sampler):
            raise ValueError(f"sampler: expected a callable sampler(score, shape), got {type(sampler).__name__}")
        self.net = net
        self.sigmas = None if sigmas is None else _as_sigmas(sigmas)
        self.sde = sde
        self.sampler = sampler
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def device(self) -> torch.device:
        params = list(self.net.parameters()) if isinstance(self.net, torch.nn.Module) else []
        return params[0].device if params else torch.device("cpu")

    def score(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """:math:`s_\\theta(x, \\sigma)` for ``x`` of shape ``(n, *event_shape)``.

        ``sigma``: a float, or a tensor of shape ``(n,)``; None is the
        smallest level of ``sigmas``.
        """
        if tuple(x.shape[1:]) != tuple(self.event_shape) or x.dim() != len(self.event_shape) + 1:
            raise ValueError(f"x: expected a batch of shape (n, {', '.join(map(str, self.event_shape))}), "
                             f"got {tuple(x.shape)}")
        if sigma is None:
            if self.sigmas is None:
                raise ValueError("sigma: this ScoreField has no noise ladder; give the noise level sigma")
            sigma = float(self.sigmas.min())
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sig.dim() == 0:
            sig = sig.expand(x.shape[0])
        elif sig.shape != (x.shape[0],):
            raise ValueError(f"sigma: expected a number or a tensor of shape ({x.shape[0]},), got {tuple(sig.shape)}")
        return self.net(x, sig)

    def _sampler(self):
        if self.sampler is not None:
            return self.sampler
        if self.sigmas is not None:
            return AnnealedLangevin(self.sigmas)
        if self.sde is not None:
            return PredictorCorrector(self.sde)
        raise ValueError("sampler: this ScoreField has no sampler, noise ladder or SDE to sample with; "
                         "pass sampler=, sigmas= or sde=")

    def sample(self, sample_shape=torch.Size()):
        """Draw ``sample_shape + batch_shape`` examples with the sampler (no gradients)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        sampler = self._sampler()
        n = math.prod(shape)
        dtype = torch.get_default_dtype()
        with torch.no_grad():
            x = sampler(self.score, (n, *self.event_shape), device=self.device, dtype=dtype)
        return x.reshape(shape + self.event_shape)

    def log_prob(self, value):
        raise TypeError(
            "ScoreField.log_prob: a score field s(x, sigma) = grad_x log p_sigma(x) fixes log p only up to "
            "its normalizing constant, which is never computed, so it has no log density to return. Train it "
            "with a score-matching objective (pyro_dgm.inference.DenoisingScoreMatching) and get a "
            "likelihood from the probability-flow ODE (pyro_dgm.inference.probability_flow_nll)")

    def expand(self, batch_shape, _instance=None):
        return ScoreField(self.net, self.event_shape, torch.Size(batch_shape), sigmas=self.sigmas, sde=self.sde,
                          sampler=self.sampler, validate_args=False)

    def __repr__(self):
        return (f"ScoreField(batch_shape={tuple(self.batch_shape)}, event_shape={tuple(self.event_shape)}, "
                f"levels={None if self.sigmas is None else len(self.sigmas)}, sde={self.sde})")
