"""Samplers for score fields: Langevin at one noise level, annealed Langevin over a ladder, predictor-corrector for an SDE."""

from __future__ import annotations

import torch

from ..checks import count, positive
from ..deprecation import renamed, renamed_attribute
from .mcmc import langevin
from .sde import column as _col


def as_sigmas(sigmas, name="sigmas") -> torch.Tensor:
    sig = torch.as_tensor(sigmas, dtype=torch.get_default_dtype()).reshape(-1)
    if sig.numel() == 0 or not bool(torch.isfinite(sig).all()) or not bool((sig > 0).all()):
        raise ValueError(f"{name}: expected positive finite noise levels, got {sigmas!r}")
    return sig


def _at(score, sigma):
    """The score at a fixed noise level, as a one-argument callable (what ``langevin`` takes)."""
    return lambda x: score(x, sigma)


class Langevin:
    """Plain Langevin dynamics with the score at one noise level (the notes' sampler).

    .. math:: x_{t+1} = x_t + \\frac{\\epsilon}{2} s_\\theta(x_t, \\sigma) + \\sqrt{\\epsilon}\\, z_t

    from :math:`x_0 \\sim \\mathcal{N}(0, \\text{init\\_scale}^2 I)`. It fails in two
    ways (Song and Ermon, 2019, Section 3): the score is untrained where the
    data has no mass, and chains do not move between separated modes, so
    their weights come from the initialization, not from :math:`p`.

    Example::

        >>> x = Langevin(sigma=1.0, step_size=0.1, num_steps=300)(lambda x, s: -x, (2000, 1))
        >>> abs(float(x.var()) - 1.0) < 0.15
        True
    """

    def __init__(self, sigma: float, step_size: float, num_steps: int = 1000, init_scale: float = 1.0):
        self.sigma = positive("sigma", sigma)
        self.step_size = positive("step_size", step_size)
        self.num_steps = count("num_steps", num_steps, 0)
        self.init_scale = positive("init_scale", init_scale)

    def __call__(self, score, shape, *, device=None, dtype=None):
        x0 = self.init_scale * torch.randn(shape, device=device, dtype=dtype)
        with torch.no_grad():
            return langevin(x0, score=_at(score, self.sigma), step_size=self.step_size,
                            num_steps=self.num_steps)


class AnnealedLangevin:
    """Annealed Langevin dynamics over a noise ladder (Song and Ermon, 2019, Algorithm 1).

    For :math:`i = 1, \\dots, L` with step :math:`\\alpha_i = \\epsilon\\, \\sigma_i^2 / \\sigma_L^2`,
    run T steps of

    .. math:: \\tilde x_t = \\tilde x_{t-1} + \\frac{\\alpha_i}{2} s_\\theta(\\tilde x_{t-1}, \\sigma_i)
              + \\sqrt{\\alpha_i}\\, z_t

    starting from :math:`\\mathcal{N}(0, \\sigma_1^2 I)`. At large
    :math:`\\sigma_1` the perturbed modes overlap, so chains settle between
    them in proportion to their weights, and the score is trained everywhere
    the chains go. ``denoise`` adds the final step
    :math:`x \\leftarrow x + \\sigma_L^2 s_\\theta(x, \\sigma_L)` (Tweedie's
    formula; Jolicoeur-Martineau et al., 2021) that removes the last noise.

    Args:
        sigmas: the ladder, descending.
        steps_per_level: T.
        step_size: :math:`\\epsilon` (the paper's ``step_lr``, still accepted as a deprecated name).
            Default :math:`0.2\\, \\sigma_L^2`, so that :math:`\\alpha_i = 0.2\\, \\sigma_i^2` at every
            level whatever the ladder: the paper's 2e-5 at its :math:`\\sigma_L = 0.01`. (A fixed 2e-5 on a
            ladder ending at 0.05 is 25 times too small a step: the chains do not reach the density.)

    Example::

        >>> x = AnnealedLangevin([3.0, 1.0], steps_per_level=200, step_size=0.1, denoise=False)(
        ...     lambda x, s: -x / (1 + s**2), (2000, 1))
        >>> abs(float(x.var()) - 2.0) < 0.3   # the last level's density N(0, 1 + 1^2)
        True
    """

    step_lr = renamed_attribute("step_size", "step_lr")

    @renamed(step_lr="step_size")
    def __init__(self, sigmas, steps_per_level: int = 100, step_size: float | None = None, denoise: bool = True):
        self.sigmas = [float(s) for s in as_sigmas(sigmas)]
        self.steps_per_level = count("steps_per_level", steps_per_level)
        self.step_size = 0.2 * self.sigmas[-1] ** 2 if step_size is None else positive("step_size", step_size)
        self.denoise = bool(denoise)

    def __call__(self, score, shape, *, device=None, dtype=None):
        x = self.sigmas[0] * torch.randn(shape, device=device, dtype=dtype)
        last = self.sigmas[-1]
        with torch.no_grad():
            for sigma in self.sigmas:
                x = langevin(x, score=_at(score, sigma), step_size=self.step_size * (sigma / last) ** 2,
                             num_steps=self.steps_per_level)
            return x + last**2 * score(x, last) if self.denoise else x


class PredictorCorrector:
    """Predictor-corrector sampling of a diffusion SDE (Song et al., 2021, Algorithms 2-3).

    From :math:`x(T)` drawn from the SDE's prior, on a grid
    :math:`T = t_0 > \\dots > t_N = \\epsilon`, each step runs ``corrector_steps``
    Langevin corrections at :math:`t_i` with the step size set by the
    signal-to-noise ratio ``snr``,

    .. math:: \\delta = 2\\alpha_i \\big(r \\|z\\| / \\|s_\\theta\\|\\big)^2, \\qquad
              x \\leftarrow x + \\delta\\, s_\\theta(x, \\sigma_{t_i}) + \\sqrt{2\\delta}\\, z,

    then one reverse-diffusion predictor step (the discretized reverse SDE
    :math:`dx = [f - g^2 \\nabla_x \\log p_t]\\, dt + g\\, d\\bar w`, ``sde.discretize``):

    .. math:: x \\leftarrow x - f_i + G_i^2 s_\\theta(x, \\sigma_{t_i}) + G_i z.

    ``corrector_steps=0`` is the reverse-diffusion sampler alone. The last
    step returns its mean (no noise), as in the paper's code.

    Example::

        >>> from pyro_dgm.samplers import VPSDE
        >>> x = PredictorCorrector(VPSDE(), num_steps=200)(lambda x, s: -x, (2000, 1))
        >>> abs(float(x.var()) - 1.0) < 0.15   # the exact score of N(0, 1) under the VP SDE
        True
    """

    def __init__(self, sde, num_steps: int = 500, snr: float = 0.16, corrector_steps: int = 1,
                 eps: float = 1e-3):
        if not callable(getattr(sde, "discretize", None)):
            raise ValueError(f"sde: expected a VESDE or VPSDE, got {type(sde).__name__}")
        self.sde = sde
        self.num_steps = count("num_steps", num_steps)
        self.snr = positive("snr", snr)
        self.corrector_steps = count("corrector_steps", corrector_steps, 0)
        self.eps = positive("eps", eps)

    def _correct(self, score, x, sigma, alpha):
        for _ in range(self.corrector_steps):
            g, z = score(x, sigma), torch.randn_like(x)
            ratio = z.reshape(len(z), -1).norm(dim=-1).mean() / g.reshape(len(g), -1).norm(dim=-1).mean()
            delta = 2 * alpha * (self.snr * ratio) ** 2
            x = x + _col(delta, x) * g + _col((2 * delta) ** 0.5, x) * z
        return x

    def __call__(self, score, shape, *, device=None, dtype=None):
        sde = self.sde
        x = sde.prior_sample(shape, device=device, dtype=dtype)
        times = torch.linspace(sde.T, self.eps, self.num_steps + 1, device=device, dtype=x.dtype)
        with torch.no_grad():
            for t, t_next in zip(times[:-1], times[1:]):
                tt, dt = t.expand(x.shape[0]), t - t_next
                sigma = sde.noise_level(tt)
                x = self._correct(score, x, sigma, sde.corrector_alpha(tt, dt))
                f, g = sde.discretize(x, tt, dt)
                mean = x - f + _col(g.pow(2), x) * score(x, sigma)
                x = mean + _col(g, x) * torch.randn_like(x)
        return mean
