"""The diffusions of score-based models (Song et al., 2021): the VE and VP SDEs."""

from __future__ import annotations

import math

import torch

from ..checks import positive


def sum_event(t):
    return t.reshape(t.shape[0], -1).sum(-1)


class VESDE:
    """The variance-exploding SDE, the continuous limit of the NCSN ladder (Song et al., 2021, eq. 30).

    .. math:: dx = \\sqrt{\\frac{d[\\sigma^2(t)]}{dt}}\\, dw, \\qquad
              \\sigma(t) = \\sigma_{min} \\Big(\\frac{\\sigma_{max}}{\\sigma_{min}}\\Big)^t, \\quad t \\in [0, 1]

    so :math:`x(t) | x(0) \\sim \\mathcal{N}(x(0), \\sigma(t)^2 I)` (the
    :math:`\\sigma_{min}^2` offset is dropped, as in the paper) and the prior
    is :math:`\\mathcal{N}(0, \\sigma_{max}^2 I)`.

    Example::

        >>> sde = VESDE(0.01, 10.0)
        >>> round(float(sde.noise_level(torch.tensor(1.0))), 4)
        10.0
    """

    T = 1.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min, self.sigma_max = positive("sigma_min", sigma_min), positive("sigma_max", sigma_max)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min: expected a value below sigma_max={sigma_max!r}, got {sigma_min!r}")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def noise_level(self, t):
        """:math:`\\sigma(t)`, the standard deviation of :math:`x(t) | x(0)`; the score network's condition."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def sde(self, x, t):
        """Drift :math:`f(x, t)` and diffusion :math:`g(t)` (shape of t)."""
        return torch.zeros_like(x), self.noise_level(t) * math.sqrt(2 * self._log_ratio)

    def marginal(self, x0, t):
        """Mean and standard deviation (shape of t) of :math:`x(t) | x(0)`."""
        return x0, self.noise_level(t)

    def prior_sample(self, shape, device=None, dtype=None):
        return self.sigma_max * torch.randn(shape, device=device, dtype=dtype)

    def prior_log_prob(self, z):
        d = z[0].numel()
        return -0.5 * sum_event(z.pow(2)) / self.sigma_max**2 - d * (math.log(self.sigma_max)
                                                                    + 0.5 * math.log(2 * math.pi))

    def discretize(self, x, t, dt):
        """One reverse-diffusion step from t to t - dt: :math:`f = 0`, :math:`G^2 = \\sigma(t)^2 - \\sigma(t-dt)^2`."""
        g2 = self.noise_level(t).pow(2) - self.noise_level(t - dt).pow(2)
        return torch.zeros_like(x), g2.sqrt()

    def corrector_alpha(self, t, dt):
        return 1.0

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


class VPSDE:
    """The variance-preserving SDE, the continuous limit of DDPM (Song et al., 2021, eq. 32).

    .. math:: dx = -\\tfrac12 \\beta(t)\\, x\\, dt + \\sqrt{\\beta(t)}\\, dw, \\qquad
              \\beta(t) = \\beta_{min} + t(\\beta_{max} - \\beta_{min})

    so :math:`x(t) | x(0) \\sim \\mathcal{N}(m_t x(0), (1 - m_t^2) I)` with
    :math:`\\log m_t = -\\tfrac14 t^2 (\\beta_{max} - \\beta_{min}) - \\tfrac12 t \\beta_{min}`,
    and the prior is :math:`\\mathcal{N}(0, I)`. Data should be centered and of unit scale.

    Example::

        >>> sde = VPSDE()
        >>> round(float(sde.marginal(torch.ones(1), torch.tensor(1.0))[1]), 4)
        1.0
    """

    T = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = positive("beta_min", beta_min), positive("beta_max", beta_max)
        if self.beta_min >= self.beta_max:
            raise ValueError(f"beta_min: expected a value below beta_max={beta_max!r}, got {beta_min!r}")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean(self, t):
        return -0.25 * t.pow(2) * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def noise_level(self, t):
        """:math:`\\sqrt{1 - m_t^2}`, the standard deviation of :math:`x(t) | x(0)`."""
        return (-torch.expm1(2 * self._log_mean(t))).sqrt()

    def sde(self, x, t):
        b = self.beta(t)
        return -0.5 * b.reshape(-1, *([1] * (x.dim() - 1))) * x, b.sqrt()

    def marginal(self, x0, t):
        m = self._log_mean(t).exp().reshape(-1, *([1] * (x0.dim() - 1)))
        return m * x0, self.noise_level(t)

    def prior_sample(self, shape, device=None, dtype=None):
        return torch.randn(shape, device=device, dtype=dtype)

    def prior_log_prob(self, z):
        return -0.5 * sum_event(z.pow(2)) - 0.5 * z[0].numel() * math.log(2 * math.pi)

    def discretize(self, x, t, dt):
        """The DDPM step with :math:`\\beta = \\beta(t) dt`:
        :math:`f = (\\sqrt{1-\\beta} - 1) x`, :math:`G = \\sqrt\\beta`."""
        b = (self.beta(t) * dt).clamp(max=0.999)
        return ((1 - b).sqrt() - 1).reshape(-1, *([1] * (x.dim() - 1))) * x, b.sqrt()

    def corrector_alpha(self, t, dt):
        return 1 - (self.beta(t) * dt).clamp(max=0.999)

    def __repr__(self):
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


def column(v, x):
    """A scalar or a per-example (batch,) tensor, shaped to broadcast against x."""
    if isinstance(v, torch.Tensor) and v.dim() == 1:
        return v.reshape(-1, *([1] * (x.dim() - 1)))
    return v
