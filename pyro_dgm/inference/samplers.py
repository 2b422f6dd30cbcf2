"""Samplers for differentiable (unnormalized) log densities and score fields.

Everything is batched over chains: ``x0`` has shape ``(chains, *event_shape)``
and every chain moves in parallel on ``x0``'s device.
"""

from __future__ import annotations

import math

import torch

__all__ = ["score_of", "langevin"]


def score_of(log_prob):
    """The score ``grad_x log p(x)`` of a log density by autograd (one backward pass per call)."""

    def score(x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(log_prob(x).sum(), x)[0]

    return score


def langevin(x0: torch.Tensor, *, log_prob=None, score=None, step_size: float, num_steps: int,
             noise_scale: float = 1.0, return_chain: bool = False, thin: int = 1):
    """Unadjusted Langevin dynamics.

    .. math:: x_{t+1} = x_t + \\frac{\\epsilon}{2} \\nabla_x \\log p(x_t) + \\lambda \\sqrt{\\epsilon}\\, \\xi_t,
              \\quad \\xi_t \\sim \\mathcal{N}(0, I)

    with step size :math:`\\epsilon` (``step_size``) and noise scale
    :math:`\\lambda` (``noise_scale``; 1 is the sampler whose stationary law
    tends to p as the step shrinks, smaller values are the "cold" chains many
    EBM papers use). Give either ``log_prob`` (the score is taken by
    autograd) or ``score`` directly.

    Returns the final states, or ``(final, chain)`` with ``chain`` of shape
    ``(num_steps // thin, *x0.shape)`` when ``return_chain``.

    Example::

        >>> import torch
        >>> x = langevin(torch.zeros(2000, 1), score=lambda x: -x, step_size=0.1, num_steps=300)
        >>> abs(float(x.var()) - 1.0) < 0.15
        True
    """
    if (log_prob is None) == (score is None):
        raise ValueError("give exactly one of log_prob= or score=")
    if not step_size > 0:
        raise ValueError(f"step_size: expected a positive number, got {step_size!r}")
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps: expected an integer >= 0, got {num_steps!r}")
    grad = score if score is not None else score_of(log_prob)
    x = x0.detach().clone()
    chain = []
    drift, noise = step_size / 2.0, noise_scale * math.sqrt(step_size)
    for t in range(num_steps):
        with torch.no_grad():
            g = grad(x)
            x = x + drift * g + noise * torch.randn_like(x)
        if return_chain and (t + 1) % thin == 0:
            chain.append(x)
    if return_chain:
        return x, torch.stack(chain) if chain else x.new_zeros((0, *x.shape))
    return x
