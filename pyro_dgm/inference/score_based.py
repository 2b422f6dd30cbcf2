"""Score-based generative models: objectives, noise processes, samplers and likelihood.

A score model's site ``"x"`` holds a :class:`~pyro_dgm.distributions.ScoreField`,
a network :math:`s_\\theta(x, \\sigma) \\approx \\nabla_x \\log p_\\sigma(x)` where
:math:`p_\\sigma = p_{data} * \\mathcal{N}(0, \\sigma^2 I)` is the data density
perturbed by Gaussian noise of scale :math:`\\sigma`. No density is needed.

Objectives (what :func:`pyro_dgm.fit` minimizes; each finds site "x" by
tracing the program and calls its ``score``):

* :class:`DenoisingScoreMatching`: at one noise level (Vincent, 2011) or over a
  geometric ladder :math:`\\sigma_1 > \\dots > \\sigma_L` with the
  :math:`\\lambda(\\sigma) = \\sigma^2` weighting of NCSN (Song and Ermon, 2019).
* :class:`SlicedScoreMatching`: sliced score matching and its variance-reduced
  form (Song et al., 2019) for any score field, on the noise-perturbed data.
* :class:`SDEScoreMatching`: denoising score matching in continuous time for
  a :class:`VESDE` or :class:`VPSDE` (Song et al., 2021, eq. 7).

Samplers (callables ``sampler(score, shape, device=, dtype=)``, the ``sampler``
of a ``ScoreField``): :class:`Langevin` at one noise level, :class:`AnnealedLangevin`
over the ladder (Song and Ermon, 2019, Algorithm 1), and :class:`PredictorCorrector`
for an SDE (Song et al., 2021, Algorithms 2-3). Likelihood:
:func:`probability_flow_log_prob` and :func:`probability_flow_nll` integrate the
probability-flow ODE with a Hutchinson trace (Song et al., 2021, Appendix D.2).

References:
    Vincent (2011), "A connection between score matching and denoising autoencoders".
    Song and Ermon (2019), "Generative modeling by estimating gradients of the data distribution".
    Song, Garg, Shi and Ermon (2019), "Sliced score matching".
    Song and Ermon (2020), "Improved techniques for training score-based generative models".
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon and Poole (2021), "Score-based generative
    modeling through stochastic differential equations".
"""

from __future__ import annotations

import math

import torch

from ..checks import count, positive, trace_on_batch
from .objective import Objective, data_site
from ..samplers import VESDE, VPSDE, AnnealedLangevin, Langevin, PredictorCorrector, as_sigmas as _as_sigmas
from ..samplers.sde import column as _col, sum_event as _sum_event
from ..training.distributed import OneProcess, of_the_group, scored_in_turn, shared_seed
from .score_matching import denoising_score_matching, sliced_score_matching

__all__ = ["geometric_sigmas", "max_pairwise_distance", "score_field_of", "DenoisingScoreMatching",
           "SlicedScoreMatching", "SDEScoreMatching", "VESDE", "VPSDE", "Langevin", "AnnealedLangevin",
           "PredictorCorrector", "probability_flow_log_prob", "probability_flow_nll"]


# ---------------------------------------------------------------- noise levels

def geometric_sigmas(sigma_max: float, sigma_min: float, num: int) -> torch.Tensor:
    """The noise ladder :math:`\\sigma_i = \\sigma_1 (\\sigma_L/\\sigma_1)^{(i-1)/(L-1)}`, descending.

    Song and Ermon (2020, Technique 1) advise :math:`\\sigma_1` about the largest
    distance between two training points (:func:`max_pairwise_distance`).

    Example::

        >>> geometric_sigmas(1.0, 0.01, 3)
        tensor([1.0000, 0.1000, 0.0100])
    """
    hi, lo = positive("sigma_max", sigma_max), positive("sigma_min", sigma_min)
    if lo > hi:
        raise ValueError(f"sigma_min: {sigma_min!r} is larger than sigma_max={sigma_max!r}")
    count("num", num)
    return torch.logspace(math.log10(hi), math.log10(lo), num)


def max_pairwise_distance(x: torch.Tensor, max_points: int = 2000) -> float:
    """Largest Euclidean distance between two of the first ``max_points`` examples of ``x``.

    Example::

        >>> max_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]))
        5.0
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"x: expected a tensor (N, ...) with N >= 2, got {getattr(x, 'shape', type(x))}")
    flat = x[:max_points].reshape(min(x.shape[0], max_points), -1).double()
    return float(torch.cdist(flat, flat).max())


def _per_example(x, sigma):
    """sigma broadcast to (batch,), and a view of it that broadcasts against x."""
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    sig = sig.expand(x.shape[0]) if sig.dim() == 0 else sig
    return sig, sig.reshape(-1, *([1] * (x.dim() - 1)))


# ---------------------------------------------------------------- objectives

def score_field_of(model, batch: torch.Tensor, site: str = "x", args=()):
    """The distribution at the data site of ``model`` traced on ``batch``; it must have a ``score``."""
    fn = data_site(trace_on_batch(model, batch, args), site)["fn"]
    if not callable(getattr(fn, "score", None)):
        raise ValueError(
            f"model: site {site!r} holds a {type(fn).__name__}, which has no score(x, sigma); "
            "score-based objectives need a ScoreField (pyro_dgm.distributions.ScoreField) there")
    return fn


class _ScoreObjective(Objective):
    """Finds the score field at site "x" and checks that its score has the data's shape.

    Subclasses define ``_resolve(field) -> sigma``: fix their noise levels from
    their arguments or the field, and return one level to probe the score at.
    A batch without further items reuses the field found at setup (its
    network is the model's module, so parameter updates reach it); a batch
    ``(x, y, ...)`` traces the program afresh on every step (:meth:`field_for`),
    so a conditional score ``s(x, sigma, y)`` sees that batch's labels.
    """

    def field_for(self, batch):
        """The score field of ``batch``: the one found at setup, or traced afresh on ``(x, *self.args)``."""
        if not self.args:
            return self.field
        return data_site(self.trace(self.model, batch), self.site)["fn"]

    def setup(self, model, guide, batch):
        super().setup(model, guide, batch)
        self.field = score_field_of(model, batch, self.site, self.args)
        sigma = self._resolve(self.field)
        probe = batch if self.args else batch[:2]  # a field that reads labels scores their whole batch
        try:
            s = self.field.score(probe, sigma)
        except TypeError as err:
            raise ValueError(f"model: the score at site 'x' ({type(self.field).__name__}) cannot be called as "
                             f"score(x, sigma): {err}; use a noise-conditional ScoreField") from err
        if s.shape != probe.shape:
            raise ValueError(f"model: the score network returned shape {tuple(s.shape)} for a batch of shape "
                             f"{tuple(probe.shape)}; a score has the shape of its input")


class _LadderObjective(_ScoreObjective):
    def __init__(self, sigmas=None):
        self.sigmas = None if sigmas is None else _as_sigmas(sigmas)

    def _resolve(self, field):
        levels = self.sigmas if self.sigmas is not None else getattr(field, "sigmas", None)
        if levels is None:
            raise ValueError(f"sigmas: {type(self).__name__} got no noise levels and the model's ScoreField "
                             "declares none; pass sigmas= (a float or a ladder, see geometric_sigmas)")
        self.levels = _as_sigmas(levels)
        return float(self.levels[-1])

    def _draw(self, batch):
        """One noise level per example, uniform over the ladder."""
        levels = self.levels.to(device=batch.device, dtype=batch.dtype)
        return levels[torch.randint(len(levels), (batch.shape[0],), device=batch.device)]


class DenoisingScoreMatching(_LadderObjective):
    """Denoising score matching, at one noise level or over a ladder (NCSN).

    .. math:: \\ell(\\theta; \\sigma) = \\tfrac12\\, \\mathbb{E}_{p_{data}(x)}
              \\mathbb{E}_{\\tilde x \\sim \\mathcal{N}(x, \\sigma^2 I)}
              \\Big\\| s_\\theta(\\tilde x, \\sigma) + \\frac{\\tilde x - x}{\\sigma^2} \\Big\\|_2^2,
              \\qquad
              \\mathcal{L}(\\theta) = \\frac1L \\sum_{i=1}^{L} \\lambda(\\sigma_i)\\, \\ell(\\theta; \\sigma_i),
              \\quad \\lambda(\\sigma) = \\sigma^2

    (Song and Ermon, 2019, eqs. 5-6). Its minimizer is the score of the
    perturbed density, :math:`s^*(\\tilde x, \\sigma) = \\nabla_{\\tilde x} \\log p_\\sigma(\\tilde x)`
    (Vincent, 2011). Each example of a batch gets one level drawn uniformly
    from the ladder, an unbiased estimate of the sum.

    Args:
        sigmas: a float (one level) or a ladder of levels; None takes the
            ``sigmas`` of the model's ScoreField.

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import NCSN
        >>> m = NCSN(2, sigmas=geometric_sigmas(1.0, 0.1, 4))
        >>> r = pyro_dgm.fit(m.model, None, torch.randn(64, 2), objective=DenoisingScoreMatching(),
        ...                  steps=2, progress=False)
        >>> len(r.losses["model"])
        2
    """

    def loss(self, group, batch):
        return denoising_score_matching(self.field_for(batch).score, batch, self._draw(batch))

    def __repr__(self):
        return f"DenoisingScoreMatching(sigmas={self.sigmas})"


class SlicedScoreMatching(_LadderObjective):
    """Sliced score matching (Song et al., 2019) of the noise-perturbed densities.

    For each example a level :math:`\\sigma` is drawn from the ladder and
    :math:`\\tilde x = x + \\sigma \\epsilon`; then, with random projections
    :math:`v \\sim \\mathcal{N}(0, I)`,

    .. math:: \\lambda(\\sigma)\\, \\mathbb{E}_v\\Big[
              v^T \\nabla_{\\tilde x}\\big(v^T s_\\theta(\\tilde x, \\sigma)\\big)
              + \\tfrac12 \\big(v^T s_\\theta(\\tilde x, \\sigma)\\big)^2 \\Big], \\qquad \\lambda(\\sigma) = \\sigma^2,

    which equals, in expectation, Hyvarinen's objective
    :math:`\\tfrac12\\|s_\\theta\\|^2 + \\operatorname{tr}\\nabla_{\\tilde x} s_\\theta` of
    :math:`p_\\sigma`, i.e. the Fisher divergence to :math:`p_\\sigma` up to a
    constant. ``variance_reduced=True`` replaces the last term by
    :math:`\\tfrac12\\|s_\\theta\\|^2` (SSM-VR). Unlike denoising score matching
    it needs no noise at all: a one-level ladder with a tiny sigma fits the
    data's own score. The :math:`\\sigma^2` weight is applied exactly by
    scoring :math:`y = \\tilde x / \\sigma` with :math:`s_y(y) = \\sigma s_\\theta(\\sigma y, \\sigma)`.

    Args:
        sigmas: as in :class:`DenoisingScoreMatching`.
        num_projections: projections v per example.
        variance_reduced: SSM-VR.

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import NCSN
        >>> m = NCSN(2, sigmas=[0.1])
        >>> r = pyro_dgm.fit(m.model, None, torch.randn(64, 2), objective=SlicedScoreMatching(),
        ...                  steps=2, progress=False)
        >>> len(r.losses["model"])
        2
    """

    double_backward = True  # the projected Jacobian v^T d(v^T s)/dx, taken with create_graph

    def __init__(self, sigmas=None, num_projections: int = 1, variance_reduced: bool = False):
        super().__init__(sigmas)
        self.num_projections = count("num_projections", num_projections)
        self.variance_reduced = bool(variance_reduced)

    def loss(self, group, batch):
        sig, sig_b = _per_example(batch, self._draw(batch))
        noisy = batch + sig_b * torch.randn_like(batch)

        field = self.field_for(batch)

        def scaled_score(y):
            return sig_b * field.score(sig_b * y, sig)

        return sliced_score_matching(scaled_score, noisy / sig_b, self.num_projections, self.variance_reduced)

    def __repr__(self):
        return (f"SlicedScoreMatching(sigmas={self.sigmas}, num_projections={self.num_projections}, "
                f"variance_reduced={self.variance_reduced})")


class SDEScoreMatching(_ScoreObjective):
    """Denoising score matching in continuous time for a diffusion SDE (Song et al., 2021, eq. 7).

    .. math:: \\mathbb{E}_{t \\sim U(\\epsilon, T)}\\, \\lambda(t)\\, \\mathbb{E}_{x(0)}
              \\mathbb{E}_{x(t) | x(0)} \\tfrac12 \\big\\| s_\\theta(x(t), \\sigma_t)
              - \\nabla_{x(t)} \\log p_{0t}(x(t) | x(0)) \\big\\|^2,
              \\qquad \\lambda(t) = \\sigma_t^2

    with the Gaussian transition :math:`p_{0t}(x(t)|x(0)) = \\mathcal{N}(m_t x(0), \\sigma_t^2 I)`
    of the SDE (``sde.marginal``). The network is conditioned on
    :math:`\\sigma_t`, the standard deviation of that transition, so a VE SDE
    whose range matches an NCSN ladder trains the same network as
    :class:`DenoisingScoreMatching` with a continuum of levels.

    Args:
        sde: a :class:`VESDE` or :class:`VPSDE`; None takes the ``sde`` of the
            model's ScoreField.
        eps: the smallest time drawn (the score at :math:`t = 0` is not needed).

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import NCSN
        >>> m = NCSN(2, sde=VPSDE())
        >>> r = pyro_dgm.fit(m.model, None, torch.randn(64, 2), objective=SDEScoreMatching(),
        ...                  steps=2, progress=False)
        >>> len(r.losses["model"])
        2
    """

    def __init__(self, sde=None, eps: float = 1e-5):
        self.sde = sde
        self.eps = positive("eps", eps)

    def _resolve(self, field):
        sde = self.sde if self.sde is not None else getattr(field, "sde", None)
        if sde is None:
            raise ValueError("sde: SDEScoreMatching got no SDE and the model's ScoreField declares none; "
                             "pass sde=VESDE(...) or VPSDE()")
        if not self.eps < sde.T:
            raise ValueError(f"eps: expected a time below the SDE's horizon T={sde.T}, got {self.eps!r}")
        self.process = sde
        return float(sde.noise_level(torch.tensor(sde.T)))

    def loss(self, group, batch):
        t = self.eps + (self.process.T - self.eps) * torch.rand(batch.shape[0], device=batch.device,
                                                                dtype=batch.dtype)
        mean, std = self.process.marginal(batch, t)
        _, std_b = _per_example(batch, std)
        z = torch.randn_like(batch)
        s = self.field_for(batch).score(mean + std_b * z, std)
        return 0.5 * (std_b * s + z).reshape(batch.shape[0], -1).pow(2).sum(-1).mean()

    def __repr__(self):
        return f"SDEScoreMatching(sde={self.sde}, eps={self.eps})"


# ---------------------------------------------------------------- probability flow

def _flow_and_divergence(score, sde, x, t, probe):
    """The probability-flow drift :math:`f - \\tfrac12 g^2 s` and its divergence.

    The divergence is exact when ``probe`` is None, else Hutchinson's estimate with ``probe``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        tt = t.expand(x.shape[0])
        f, g = sde.sde(x, tt)
        drift = f - 0.5 * _col(g.pow(2), x) * score(x, sde.noise_level(tt))
        if probe is not None:
            vjp = torch.autograd.grad((drift * probe).sum(), x)[0]
            return drift.detach(), _sum_event(vjp * probe)
        flat = drift.reshape(x.shape[0], -1)
        div = sum(torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)[0].reshape(x.shape[0], -1)[:, i]
                  for i in range(flat.shape[1]))
        return drift.detach(), div.detach()


def probability_flow_log_prob(score, x: torch.Tensor, sde, *, num_steps: int = 100, eps: float = 1e-5,
                              trace: str = "hutchinson") -> torch.Tensor:
    """Log density of ``x`` under the probability-flow ODE of a score model, shape (batch,).

    The ODE :math:`\\frac{dx}{dt} = \\tilde f(x, t) = f(x, t) - \\tfrac12 g(t)^2 s_\\theta(x, \\sigma_t)`
    shares its marginals with the SDE, and maps :math:`x(\\epsilon)` to
    :math:`x(T)` invertibly, so (Song et al., 2021, eq. 39; Chen et al., 2018)

    .. math:: \\log p_\\epsilon(x(\\epsilon)) = \\log p_T(x(T))
              + \\int_\\epsilon^T \\nabla \\cdot \\tilde f(x(t), t)\\, dt.

    The divergence is exact (``trace="exact"``, D backward passes per
    evaluation) or Hutchinson's unbiased :math:`v^T \\nabla \\tilde f\\, v` with one
    Rademacher probe v held fixed along the path (``"hutchinson"``, as in
    FFJORD). The ODE is integrated by ``num_steps`` classical Runge-Kutta
    (RK4) steps. The density is of :math:`p_\\epsilon`, the data perturbed at
    :math:`\\sigma_\\epsilon` (tiny) -- a continuous density, in nats.

    Example::

        >>> import math
        >>> x = torch.randn(5, 2)
        >>> lp = probability_flow_log_prob(lambda x, s: -x, x, VPSDE(), trace="exact")
        >>> torch.allclose(lp, -0.5 * x.pow(2).sum(-1) - math.log(2 * math.pi), atol=1e-3)
        True
    """
    if trace not in ("hutchinson", "exact"):
        raise ValueError(f"trace: expected 'hutchinson' or 'exact', got {trace!r}")
    count("num_steps", num_steps)
    if not 0 < eps < sde.T:
        raise ValueError(f"eps: expected a time in (0, {sde.T}), got {eps!r}")
    probe = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1 if trace == "hutchinson" else None

    def rhs(y, t):
        return _flow_and_divergence(score, sde, y, t, probe)

    h = (sde.T - eps) / num_steps
    y, integral = x.detach(), torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for i in range(num_steps):
        t = torch.as_tensor(eps + i * h, device=x.device, dtype=x.dtype)
        k1, d1 = rhs(y, t)
        k2, d2 = rhs(y + 0.5 * h * k1, t + 0.5 * h)
        k3, d3 = rhs(y + 0.5 * h * k2, t + 0.5 * h)
        k4, d4 = rhs(y + h * k3, t + h)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    return sde.prior_log_prob(y) + integral


def probability_flow_nll(model, data: torch.Tensor, sde=None, *, batch_size: int = 500, num_steps: int = 100,
                         eps: float = 1e-5, trace: str = "hutchinson", num_levels: int | None = None,
                         seed: int | None = None, args=(), all_ranks: bool = False) -> dict:
    """Test NLL of a score model by its probability-flow ODE, in nats and bits/dim.

    ``all_ranks=True`` (every rank calls it, under ``torchrun``): the ranks
    share the batches and return the same result, as in
    :func:`pyro_dgm.evaluate`; by default this process scores every batch.

    Args:
        model: a program whose site "x" holds a ScoreField.
        data: a tensor ``(N, *event_shape)``.
        sde: the diffusion; None takes the ScoreField's ``sde``.
        args: further items aligned with the rows of ``data`` (labels of a
            class-conditional field): each batch's field is traced on its own rows.
        num_levels: for data dequantized from L levels (``dequantize``), also
            report the discrete bits/dim :math:`(\\text{NLL} + D \\log L) / (D \\log 2)`,
            the density on :math:`[0, 1)^D` rescaled to the integer grid
            (``bits_per_dim`` is that of the continuous density itself).

    Returns:
        ``{"nll", "nll_stderr", "bits_per_dim"}`` (and ``"bits_per_dim_discrete"``).

    Example::

        >>> from pyro_dgm.models import NCSN
        >>> m = NCSN(2, sde=VPSDE())
        >>> sorted(probability_flow_nll(m.model, torch.randn(8, 2), num_steps=2))
        ['bits_per_dim', 'nll', 'nll_stderr']
    """
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] == 0:
        raise ValueError(f"data: expected a tensor (N, *event_shape) with N >= 1, got {getattr(data, 'shape', data)}")
    count("batch_size", batch_size)
    if num_levels is not None:
        count("num_levels", num_levels, 2)

    def rows(i, j):
        return data[i:j], tuple(a[i:j] if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)

    x0, args0 = rows(0, 2)
    field = score_field_of(model, x0, args=args0)
    sde = sde if sde is not None else getattr(field, "sde", None)
    if sde is None:
        raise ValueError("sde: the model's ScoreField declares no SDE; pass sde=VESDE(...) or VPSDE()")
    device = field.device
    ranks = of_the_group(device) if all_ranks else OneProcess()

    def batch_nll(batch):
        x, batch_args = batch[0].to(device), batch[1]
        score = score_field_of(model, x, args=batch_args).score if args else field.score
        return -probability_flow_log_prob(score, x, sde, num_steps=num_steps, eps=eps, trace=trace)

    with shared_seed(ranks, seed, device) as seed:
        batches = (rows(i, i + batch_size) for i in range(0, data.shape[0], batch_size))
        nll = scored_in_turn(ranks, seed, batches, batch_nll)
    dims = data[0].numel()
    mean = float(nll.mean())
    out = {"nll": mean, "nll_stderr": float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else float("nan"),
           "bits_per_dim": mean / (dims * math.log(2))}
    if num_levels is not None:
        out["bits_per_dim_discrete"] = (mean + dims * math.log(num_levels)) / (dims * math.log(2))
    return out
