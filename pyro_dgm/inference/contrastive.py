"""Objectives for energy-based models: CD, persistent CD, score matching, NCE, FCE.

Each finds the site ``"x"`` of the program by tracing it on the batch and
uses its distribution (an :class:`~pyro_dgm.distributions.UnnormalizedDistribution`):
``energy`` for contrastive divergence and the classification losses,
``score`` for score matching. Model: ``p(x) = exp(-E(x)) / Z``.

Example::

    >>> import torch, pyro_dgm
    >>> from pyro_dgm.models.ebm import EBM, EnergyMLP
    >>> ebm = EBM(EnergyMLP(2, hidden=(16,)), event_shape=2, base_scale=3.0)
    >>> x = pyro_dgm.data.toy_2d("8gaussians", 256)
    >>> r = pyro_dgm.fit(ebm.model, None, x, objective=ContrastiveDivergence(num_steps=5),
    ...                  steps=3, batch_size=64, progress=False)
    >>> sorted(r.terms)
    ['model/cd', 'model/energy_reg']
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_program_on_batch, count, positive
from .objective import Objective, data_site, sample_program
from ..samplers import langevin
from .score_matching import (denoising_score_matching, exact_score_matching, hutchinson_score_matching,
                             sliced_score_matching)

__all__ = ["ContrastiveDivergence", "PersistentContrastiveDivergence", "ScoreMatching",
           "NoiseContrastiveEstimation", "FlowContrastiveEstimation", "FittedGaussian", "LogPartition"]


class FittedGaussian(nn.Module):
    """A diagonal Gaussian fitted to a batch (per-coordinate mean and std): the default noise.

    Example::

        >>> q = FittedGaussian(torch.randn(1000, 3) * 2 + 1)
        >>> q.sample(5).shape, q.log_prob(torch.zeros(5, 3)).shape
        (torch.Size([5, 3]), torch.Size([5]))
    """

    def __init__(self, batch: torch.Tensor, min_scale: float = 1e-3):
        super().__init__()
        if batch.shape[0] < 2:
            raise ValueError(f"batch: fitting a Gaussian needs at least 2 examples, got shape {tuple(batch.shape)}")
        self.register_buffer("loc", batch.mean(0))
        self.register_buffer("scale", batch.std(0).clamp_min(min_scale))

    def distribution(self) -> dist.Distribution:
        """Pyro's diagonal Normal over one example."""
        return dist.Normal(self.loc, self.scale).to_event(self.loc.dim())

    def sample(self, n: int) -> torch.Tensor:
        return self.distribution().sample((n,))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(x)


class LogPartition(nn.Module):
    """A learnable scalar ``log Z`` (NCE treats the normalizer as a parameter, Gutmann and Hyvarinen, 2010)."""

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.log_z = nn.Parameter(torch.tensor(float(init)))


class _EnergyObjective(Objective):
    """Shared setup: the program's site "x" must hold an energy distribution."""

    def setup(self, model, guide, batch):
        super().setup(model, guide, batch)
        fn = data_site(check_program_on_batch(model, batch, self.site, self.args), self.site)["fn"]
        if not (callable(getattr(fn, "energy", None)) and callable(getattr(fn, "score", None))):
            raise ValueError(
                f"model: {type(self).__name__} needs site {self.site!r} to hold an energy distribution with energy() "
                f"and score() (pyro_dgm.distributions.UnnormalizedDistribution), got {type(fn).__name__}")

    def _site(self, batch):
        return self.data_fn(self.model, batch)

    # A noise distribution that is a module (a fitted Gaussian, a flow) is state to checkpoint.
    noise = None

    def _noise_sample(self, n):
        """``n`` draws of the noise: a torch (Pyro) distribution over one example, or anything with ``sample(n)``."""
        if isinstance(self.noise, torch.distributions.Distribution):
            return self.noise.sample((n,))
        return self.noise.sample(n)

    def state_dict(self):
        return {"noise": self.noise.state_dict()} if isinstance(self.noise, nn.Module) else {}

    def load_state_dict(self, state):
        if "noise" in state and isinstance(self.noise, nn.Module):
            self.noise.load_state_dict(state["noise"])


class ContrastiveDivergence(_EnergyObjective):
    """Contrastive divergence with short-run Langevin negatives (CD-k).

    The gradient of the negative log-likelihood is
    :math:`\\nabla_\\theta E_\\theta(x^+) - \\mathbb{E}_{p_\\theta}[\\nabla_\\theta E_\\theta(x^-)]`
    (Hinton, 2002); the expectation is estimated on k steps of Langevin
    (:func:`~pyro_dgm.samplers.langevin`) started from the data
    (``init="data"``, Hinton's CD-k) or from noise (``init="noise"``, the
    short-run EBM of Nijkamp et al., 2019). The loss, per batch,

    .. math:: \\frac1B\\sum_b E(x^+_b) - E(\\bar x^-_b)
              + \\alpha \\big(E(x^+_b)^2 + E(\\bar x^-_b)^2\\big)

    with :math:`\\bar x^-` the detached negatives and the energy-magnitude
    penalty :math:`\\alpha` of Du and Mordatch (2019), which keeps energies
    from drifting to large magnitudes.

    Args:
        num_steps: k, Langevin steps per batch.
        step_size, noise_scale: of the Langevin chain (``noise_scale < 1`` runs it cold).
        init: "noise" or "data".
        noise: where chains from noise start: a torch (Pyro) distribution over
            one example, or anything with ``sample(n)``; default a
            :class:`FittedGaussian` fitted to the first batch.
        alpha: the energy-magnitude penalty.
    """

    def __init__(self, num_steps: int = 20, step_size: float = 1e-2, noise_scale: float = 1.0,
                 init: str = "noise", noise=None, alpha: float = 0.1):
        count("num_steps", num_steps)
        positive("step_size", step_size)
        positive("noise_scale", noise_scale)
        if init not in ("noise", "data"):
            raise ValueError(f"init: expected 'noise' or 'data', got {init!r}")
        if not alpha >= 0:
            raise ValueError(f"alpha: expected a number >= 0, got {alpha!r}")
        self.num_steps, self.step_size, self.noise_scale = num_steps, step_size, noise_scale
        self.init, self.noise, self.alpha = init, noise, alpha

    def setup(self, model, guide, batch):
        super().setup(model, guide, batch)
        if self.noise is None:
            self.noise = FittedGaussian(batch)

    def _start(self, batch):
        return batch if self.init == "data" else self._noise_sample(batch.shape[0])

    def negatives(self, site, batch):
        """Detached negative samples for ``batch``: k Langevin steps on ``-E``."""
        return langevin(self._start(batch), score=site.score, step_size=self.step_size,
                        num_steps=self.num_steps, noise_scale=self.noise_scale)

    def loss(self, group, batch):
        site = self._site(batch)
        neg = self.negatives(site, batch)
        e_pos, e_neg = site.energy(batch), site.energy(neg)
        return {"cd": e_pos.mean() - e_neg.mean(),
                "energy_reg": self.alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())}

    def __repr__(self):
        return (f"{type(self).__name__}(num_steps={self.num_steps}, step_size={self.step_size}, "
                f"noise_scale={self.noise_scale}, init={self.init!r}, alpha={self.alpha})")


class PersistentContrastiveDivergence(ContrastiveDivergence):
    """Persistent CD (Tieleman, 2008) with a replay buffer (Du and Mordatch, 2019).

    Negatives continue chains kept in a buffer of ``buffer_size`` states: each
    batch draws B distinct states, restarts each one **from the noise
    distribution** with probability ``reinit_prob`` (fresh restarts, not
    jitter: without them the buffer collapses onto the modes it found first),
    runs k Langevin steps and writes the states back. The loss is that of
    :class:`ContrastiveDivergence`. The buffer is checkpointed
    (``state_dict``), so a resumed run continues the same chains.
    """

    def __init__(self, num_steps: int = 20, step_size: float = 1e-2, noise_scale: float = 1.0, noise=None,
                 alpha: float = 0.1, buffer_size: int = 10000, reinit_prob: float = 0.05):
        super().__init__(num_steps, step_size, noise_scale, "noise", noise, alpha)
        count("buffer_size", buffer_size)
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob: expected a probability in [0, 1], got {reinit_prob!r}")
        self.buffer_size, self.reinit_prob = buffer_size, reinit_prob

    def setup(self, model, guide, batch):
        super().setup(model, guide, batch)
        self.buffer = self._noise_sample(self.buffer_size).detach()

    def _start(self, batch):
        b = batch.shape[0]
        if b > self.buffer_size:
            raise ValueError(f"buffer_size: {self.buffer_size} is smaller than the batch ({b}); expected >= batch_size")
        self._idx = torch.randperm(self.buffer_size, device=self.buffer.device)[:b]
        fresh = torch.rand(b, device=self.buffer.device) < self.reinit_prob
        fresh = fresh.reshape(-1, *([1] * (batch.dim() - 1)))
        return torch.where(fresh, self._noise_sample(b), self.buffer[self._idx])

    def negatives(self, site, batch):
        neg = super().negatives(site, batch)
        self.buffer[self._idx] = neg
        return neg

    def state_dict(self):
        return {**super().state_dict(), "buffer": self.buffer.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "buffer" in state:  # resumed with another buffer_size: the first chains kept, fresh noise after them
            saved = state["buffer"].to(self.buffer.device)[:self.buffer_size]
            self.buffer = torch.cat([saved, self.buffer[saved.shape[0]:]])

    def __repr__(self):
        return (f"{super().__repr__()[:-1]}, buffer_size={self.buffer_size}, "
                f"reinit_prob={self.reinit_prob})")


class ScoreMatching(_EnergyObjective):
    """Score matching for an EBM (Hyvarinen, 2005): the score ``-grad_x E`` needs no log Z.

    .. math:: J(\\theta) = \\mathbb{E}_{p_{data}}\\big[\\tfrac12 \\|\\nabla_x E_\\theta(x)\\|^2
              - \\Delta_x E_\\theta(x)\\big]

    computed by :mod:`pyro_dgm.inference.score_matching` on the site's ``score``:
    ``method="exact"`` (the Hessian trace by D backward passes),
    ``"hutchinson"`` (an unbiased Rademacher estimate of the trace, for larger D),
    ``"sliced"`` (Song et al., 2019) or ``"denoising"`` (Vincent, 2011, at ``sigma``).
    """

    _METHODS = ("exact", "hutchinson", "sliced", "denoising")
    double_backward = True  # the score is -grad_x E, taken with create_graph

    def __init__(self, method: str = "exact", num_projections: int = 1, sigma: float = 0.1):
        if method not in self._METHODS:
            raise ValueError(f"method: expected one of {self._METHODS}, got {method!r}")
        count("num_projections", num_projections)
        positive("sigma", sigma)
        self.method, self.num_projections, self.sigma = method, num_projections, sigma

    def loss(self, group, batch):
        site = self._site(batch)
        if self.method == "exact":
            return exact_score_matching(site.score, batch)
        if self.method == "hutchinson":
            return hutchinson_score_matching(site.score, batch, self.num_projections)
        if self.method == "sliced":
            return sliced_score_matching(site.score, batch, self.num_projections, variance_reduced=True)
        return denoising_score_matching(lambda x, s: site.score(x, create_graph=True), batch, self.sigma)

    def __repr__(self):
        return f"ScoreMatching(method={self.method!r}, num_projections={self.num_projections})"


def _nce_logit(site, log_z, log_noise, x, log_nu):
    """G(x) = log p_theta(x) - log(nu q(x)), with log p_theta = -E - log Z."""
    return -site.energy(x) - log_z - log_noise - log_nu


class NoiseContrastiveEstimation(_EnergyObjective):
    """Noise contrastive estimation (Gutmann and Hyvarinen, 2010) with a learnable log Z.

    Logistic regression of data against ``nu`` times as many noise samples
    :math:`y \\sim q`, with the classifier's logit
    :math:`G(x) = -E_\\theta(x) - c - \\log q(x) - \\log\\nu`:

    .. math:: \\mathcal{L}(\\theta, c) = -\\mathbb{E}_{p_{data}} \\log \\sigma(G(x))
              - \\nu\\, \\mathbb{E}_{q} \\log \\sigma(-G(y))

    At the optimum :math:`c = \\log Z(\\theta)`: the model normalizes itself. ``c``
    lives in a :class:`LogPartition` module trained with the model (group
    "model"); read it as ``objective.log_z``.

    Args:
        noise: q, a torch (Pyro) distribution over one example (a
            ``MixtureSameFamily``, for instance), or anything with ``sample(n)``
            and ``log_prob(x) -> (n,)``; default a :class:`FittedGaussian`
            fitted to the first batch.
        noise_ratio: nu, noise samples per data point.
        log_z_init: the initial c.
    """

    def __init__(self, noise=None, noise_ratio: int = 1, log_z_init: float = 0.0):
        count("noise_ratio", noise_ratio)
        self.noise, self.noise_ratio, self.log_z_init = noise, noise_ratio, log_z_init

    def setup(self, model, guide, batch):
        super().setup(model, guide, batch)
        if self.noise is None:
            self.noise = FittedGaussian(batch)
        self.log_partition = LogPartition(self.log_z_init).to(batch.device)

    def param_groups(self):
        return {"model": self._modules + [self.log_partition]}

    @property
    def log_z(self) -> float:
        """The learned log Z."""
        return float(self.log_partition.log_z.detach())

    def loss(self, group, batch):
        site, c = self._site(batch), self.log_partition.log_z
        log_nu = math.log(self.noise_ratio)
        with torch.no_grad():
            y = self._noise_sample(batch.shape[0] * self.noise_ratio)
            lq_x, lq_y = self.noise.log_prob(batch), self.noise.log_prob(y)
        g_x = _nce_logit(site, c, lq_x, batch, log_nu)
        g_y = _nce_logit(site, c, lq_y, y, log_nu)
        return -(F.logsigmoid(g_x).mean() + self.noise_ratio * F.logsigmoid(-g_y).mean())

    def __repr__(self):
        return f"NoiseContrastiveEstimation(noise_ratio={self.noise_ratio})"


class FlowContrastiveEstimation(NoiseContrastiveEstimation):
    """Flow contrastive estimation (Gao et al., 2020): NCE whose noise is a flow trained as the adversary.

    With the flow :math:`q_\\alpha` as noise (:math:`\\nu = 1`) and
    :math:`D(x) = \\sigma(G(x))`, :math:`G(x) = -E_\\theta(x) - c - \\log q_\\alpha(x)`,

    .. math:: \\min_\\alpha \\max_{\\theta, c}\\; V(\\theta, c, \\alpha) =
              \\mathbb{E}_{p_{data}} \\log D(x) + \\mathbb{E}_{q_\\alpha} \\log(1 - D(y)).

    Every batch steps group ``"model"`` (the EBM and c) on :math:`-V` with the
    flow's samples held fixed, then group ``"flow"`` on :math:`V` through
    reparametrized samples :math:`y = g_\\alpha(z)`. As the flow catches up
    with the EBM the noise stays hard to tell from data, which is what plain
    NCE with a fixed Gaussian lacks. ``fit(..., lr={"model": ..., "flow": ...})``.

    Args:
        flow: a Pyro program ``flow(x=None, num_samples=None)`` (or a module
            with ``.model``) whose site "x" can ``rsample`` and ``log_prob``;
            default a :class:`~pyro_dgm.models.ebm.FlowNoise` (Pyro's spline
            couplings) standardized by the first batch. Pre-train it by
            maximum likelihood (``fit(flow.model, None, data)``) for a head start.
        log_z_init: the initial c.
        gaussian_weight: w > 0 contrasts against the mixture
            :math:`(1-w)\\, q_\\alpha + w\\, \\mathcal{N}` with the Gaussian fitted to the
            first batch (not in Gao et al.): NCE constrains the energy only where
            data or noise has mass, and a flow that has caught up with the data
            leaves the EBM free to put mass in the empty space between modes.
    """

    def __init__(self, flow=None, log_z_init: float = 0.0, gaussian_weight: float = 0.0):
        super().__init__(None, 1, log_z_init)
        if not 0.0 <= gaussian_weight < 1.0:
            raise ValueError(f"gaussian_weight: expected a number in [0, 1), got {gaussian_weight!r}")
        self.flow, self.gaussian_weight = flow, gaussian_weight

    def setup(self, model, guide, batch):
        _EnergyObjective.setup(self, model, guide, batch)
        self.log_partition = LogPartition(self.log_z_init).to(batch.device)
        self.noise = FittedGaussian(batch)
        if self.flow is None:
            from ..models.ebm import FlowNoise

            if batch.dim() != 2:
                raise ValueError(f"flow: the default flow is for flat data (batch, D), got {tuple(batch.shape)}; "
                                 "pass a flow program")
            self.flow = FlowNoise(batch.shape[1], loc=self.noise.loc, scale=self.noise.scale)
        self._flow_program = getattr(self.flow, "model", self.flow)
        self._flow_module = self.flow if isinstance(self.flow, nn.Module) else getattr(self.flow, "__self__", None)
        if not isinstance(self._flow_module, nn.Module):
            raise ValueError("flow: expected an nn.Module with a .model program (or its bound .model)")
        self._flow_module.to(batch.device)

    def param_groups(self):
        return {"model": self._modules + [self.log_partition], "flow": [self._flow_module]}

    def _contrast(self, batch):
        """``(log q(x), y, log q(y))`` with y ~ q, the flow (mixed with the Gaussian if asked)."""
        n, w = batch.shape[0], self.gaussian_weight
        site = data_site(sample_program(self._flow_program, n, like=batch, trace=True, grad=True))
        q, y = site["fn"], site["value"]
        if w == 0.0:
            return q.log_prob(batch), y, q.log_prob(y)
        k = int(round(w * n))
        y = torch.cat([y[:n - k], self._noise_sample(k)])

        def log_mix(v):
            return torch.logaddexp(math.log1p(-w) + q.log_prob(v), math.log(w) + self.noise.log_prob(v))

        return log_mix(batch), y, log_mix(y)

    def loss(self, group, batch):
        site, c = self._site(batch), self.log_partition.log_z
        if group == "model":
            with torch.no_grad():
                lq_x, y, lq_y = self._contrast(batch)
        else:
            lq_x, y, lq_y = self._contrast(batch)
            c = c.detach()
        value = (F.logsigmoid(_nce_logit(site, c, lq_x, batch, 0.0)).mean()
                 + F.logsigmoid(-_nce_logit(site, c, lq_y, y, 0.0)).mean())
        return -value if group == "model" else value

    def __repr__(self):
        return f"FlowContrastiveEstimation(flow={type(self.flow).__name__})"
