"""Score matching losses for a score field ``s(x) ~ grad_x log p(x)``.

All losses are averaged over the batch, in the units of Hyvarinen (2005):

.. math:: J(\\theta) = \\mathbb{E}_{p_{data}}\\big[\\tfrac12 \\|s_\\theta(x)\\|^2 + \\operatorname{tr} \\nabla_x s_\\theta(x)\\big]

which equals the Fisher divergence up to a constant. The trace is computed
exactly (D backward passes), or estimated without bias by Hutchinson's
``v^T (grad_x (v^T s)) `` with ``E[v v^T] = I`` -- the estimate of the trace
itself, never divided by D (dividing fits a tempered model).
"""

from __future__ import annotations

import torch

__all__ = ["exact_score_matching", "hutchinson_score_matching", "sliced_score_matching",
           "denoising_score_matching", "hessian_trace"]


def _flat(t):
    return t.reshape(t.shape[0], -1)


def _with_input_grad(x):
    return x.detach().requires_grad_(True)


def hessian_trace(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact ``tr(d s / d x)`` per example, shape (batch,), differentiable in the parameters."""
    sf = _flat(s)
    tr = torch.zeros(sf.shape[0], device=s.device, dtype=s.dtype)
    for i in range(sf.shape[1]):
        g = torch.autograd.grad(sf[:, i].sum(), x, create_graph=True)[0]
        tr = tr + _flat(g)[:, i]
    return tr


def exact_score_matching(score, x: torch.Tensor) -> torch.Tensor:
    """Hyvarinen's objective with the exact Jacobian trace (cost: D backward passes)."""
    with torch.enable_grad():
        x = _with_input_grad(x)
        s = score(x)
        return (0.5 * _flat(s).pow(2).sum(-1) + hessian_trace(s, x)).mean()


def hutchinson_score_matching(score, x: torch.Tensor, num_projections: int = 1,
                              distribution: str = "rademacher") -> torch.Tensor:
    """Hyvarinen's objective with the trace estimated by Hutchinson's estimator."""
    return _sliced(score, x, num_projections, distribution, variance_reduced=True)


def sliced_score_matching(score, x: torch.Tensor, num_projections: int = 1,
                          variance_reduced: bool = False) -> torch.Tensor:
    """Sliced score matching (Song et al., 2019) with Gaussian projections v:

    .. math:: \\mathbb{E}_v\\big[v^T \\nabla_x (v^T s(x)) + \\tfrac12 (v^T s(x))^2\\big]

    ``variance_reduced=True`` replaces :math:`\\tfrac12 (v^T s)^2` by its
    expectation :math:`\\tfrac12 \\|s\\|^2` (SSM-VR). Both equal
    :func:`exact_score_matching` in expectation.
    """
    return _sliced(score, x, num_projections, "gaussian", variance_reduced)


def _sliced(score, x, num_projections, distribution, variance_reduced):
    if int(num_projections) < 1:
        raise ValueError(f"num_projections: expected an integer >= 1, got {num_projections!r}")
    with torch.enable_grad():
        x = _with_input_grad(x)
        s = score(x)
        total = 0.0
        for _ in range(int(num_projections)):
            v = torch.randn_like(x)
            if distribution == "rademacher":
                v = v.sign()
            sv = _flat(s * v).sum(-1)
            jv = torch.autograd.grad(sv.sum(), x, create_graph=True)[0]
            norm = 0.5 * _flat(s).pow(2).sum(-1) if variance_reduced else 0.5 * sv.pow(2)
            total = total + _flat(jv * v).sum(-1) + norm
        return (total / int(num_projections)).mean()


def denoising_score_matching(score, x: torch.Tensor, sigma) -> torch.Tensor:
    """Denoising score matching (Vincent, 2011) at noise level(s) ``sigma``:

    .. math:: \\tfrac12\\, \\mathbb{E}\\big\\|s(\\tilde x, \\sigma) + (\\tilde x - x)/\\sigma^2\\big\\|^2,
              \\quad \\tilde x = x + \\sigma \\epsilon

    weighted by :math:`\\sigma^2` (Song and Ermon, 2019) so every level
    contributes on the same scale. ``sigma`` is a float or a per-example
    tensor of shape (batch,); ``score`` is called as ``score(x_noisy, sigma)``.
    """
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sig.dim() == 0:
        sig = sig.expand(x.shape[0])
    sig_b = sig.reshape(-1, *([1] * (x.dim() - 1)))
    noise = torch.randn_like(x)
    x_noisy = x + sig_b * noise
    target = -noise / sig_b
    s = score(x_noisy, sig)
    return 0.5 * (_flat(s - target).pow(2).sum(-1) * sig.pow(2)).mean()
