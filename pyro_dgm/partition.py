"""Partition functions of energy-based models: ``log Z = log \\int exp(-E(x)) dx``.

* :func:`grid_log_partition`: numerical integration on a grid, for 1-D and
  2-D energies; accurate to the grid's resolution when the density has
  vanished at the edges. It turns a 2-D EBM into an exact test NLL::

      log_z = grid_log_partition(ebm.energy, bounds=(-4, 4))
      pyro_dgm.evaluate(ebm.model, test, log_normalizer=log_z)

* :func:`ais_log_partition`: annealed importance sampling (Neal, 2001) in any
  dimension, with MALA, HMC or Langevin transitions and a standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .inference.objective import device_of
from .samplers import hmc_step, langevin, mala_step
from .checks import count

__all__ = ["grid_log_partition", "grid_points", "ais_log_partition", "PartitionEstimate"]


def _bounds(bounds, dim):
    if isinstance(bounds, (int, float)):
        bounds = (-float(bounds), float(bounds))
    pairs = list(bounds) if isinstance(bounds[0], (tuple, list)) else [tuple(bounds)] * dim
    if len(pairs) != dim or any(len(p) != 2 or not p[0] < p[1] for p in pairs):
        raise ValueError(f"bounds: expected (low, high) with low < high, or one pair per dimension ({dim}), "
                         f"got {bounds!r}")
    return pairs


def grid_points(bounds=(-4.0, 4.0), num_points: int = 400, dim: int = 2, device=None):
    """Cell centres of a regular grid: ``(points (num_points**dim, dim), log cell volume)``."""
    if dim not in (1, 2):
        raise ValueError(f"dim: grid integration is for 1-D and 2-D energies, got dim={dim}")
    count("num_points", num_points, 2)
    axes, log_vol = [], 0.0
    for lo, hi in _bounds(bounds, dim):
        h = (hi - lo) / num_points
        axes.append(lo + h * (torch.arange(num_points, device=device, dtype=torch.get_default_dtype()) + 0.5))
        log_vol += math.log(h)
    pts = torch.cartesian_prod(*axes) if dim == 2 else axes[0].unsqueeze(-1)
    return pts, log_vol


def grid_log_partition(energy, bounds=(-4.0, 4.0), num_points: int = 400, dim: int = 2, device=None,
                       chunk: int = 65536) -> float:
    """``log Z`` by the midpoint rule on a grid.

    .. math:: \\log Z \\approx \\log \\sum_{i} \\exp(-E(x_i))\\, \\Delta, \\qquad
              x_i \\text{ the cell centres, } \\Delta \\text{ the cell volume}

    Args:
        energy: ``E(x) -> (n,)`` on points ``(n, dim)`` (``ebm.energy``).
        bounds: ``(low, high)`` for every axis, one pair per axis, or a number
            ``b`` for ``(-b, b)``. Choose them so that ``exp(-E)`` is negligible
            outside: mass outside is silently missed.
        num_points: grid points per axis (the cell must be small against the
            narrowest feature of the density).

    Example::

        >>> import math, torch
        >>> e = lambda x: 0.5 * x.pow(2).sum(-1)        # Z = 2 pi
        >>> abs(grid_log_partition(e, bounds=(-8, 8)) - math.log(2 * math.pi)) < 1e-4
        True
    """
    count("chunk", chunk)
    pts, log_vol = grid_points(bounds, num_points, dim, device if device is not None else device_of(energy))
    with torch.no_grad():
        neg = torch.cat([-energy(pts[i:i + chunk]).reshape(-1) for i in range(0, pts.shape[0], chunk)])
    return float(torch.logsumexp(neg.double(), 0)) + log_vol


@dataclass
class PartitionEstimate:
    """An AIS estimate of ``log Z``.

    Attributes:
        log_z: ``log (1/N sum_i w_i)``; unbiased in Z, so a stochastic lower
            bound in log Z (Jensen).
        stderr: delta-method standard error of ``log_z``: ``sd(w) / (sqrt(N) mean(w))``.
        log_weights: the N log importance weights.
        ess: effective sample size ``(sum w)^2 / sum w^2``.
        accept_rate: mean acceptance of the transitions (1 for Langevin).
    """

    log_z: float
    stderr: float
    log_weights: torch.Tensor
    ess: float
    accept_rate: float


def _sigmoid_schedule(num_temps, device, sharpness=4.0):
    s = torch.sigmoid(torch.linspace(-sharpness, sharpness, num_temps + 1, device=device, dtype=torch.float64))
    return ((s - s[0]) / (s[-1] - s[0])).tolist()


def _transition(kind, x, log_prob, step_size, num_leapfrog):
    if kind == "mala":
        x, _, _, a = mala_step(x, log_prob, step_size)
        return x, float(a.mean())
    if kind == "hmc":
        x, a = hmc_step(x, log_prob, step_size, num_leapfrog)
        return x, float(a.mean())
    return langevin(x, log_prob=log_prob, step_size=step_size, num_steps=1), 1.0


def ais_log_partition(energy, base: torch.distributions.Distribution, *, num_chains: int = 256,
                      num_temps: int = 500, transition: str = "hmc", step_size: float = 0.05,
                      num_leapfrog: int = 5, steps_per_temp: int = 1) -> PartitionEstimate:
    """Annealed importance sampling for ``log Z`` of ``p(x) = exp(-E(x)) / Z``.

    Anneals from a normalized ``base`` :math:`p_0` along the geometric path
    :math:`\\log \\pi_\\beta(x) = (1-\\beta)\\log p_0(x) - \\beta E(x)` over a sigmoid
    schedule :math:`0 = \\beta_0 < \\dots < \\beta_T = 1` (Grosse et al., 2013).
    Each chain starts at :math:`x_0 \\sim p_0`, accumulates

    .. math:: \\log w = \\sum_{t=1}^{T} (\\beta_t - \\beta_{t-1})\\,\\big(-E(x_{t-1}) - \\log p_0(x_{t-1})\\big)

    and moves by ``steps_per_temp`` transitions that leave :math:`\\pi_{\\beta_t}`
    invariant: ``"mala"`` or ``"hmc"`` (exact, per-chain accept), or
    ``"langevin"`` (unadjusted; slightly biased for a finite step). Then
    :math:`\\hat Z = \\frac1N \\sum_i w_i` (Neal, 2001, "Annealed importance sampling").

    Args:
        energy: ``E(x) -> (n,)`` on a batch ``(n, *event_shape)``.
        base: a normalized distribution with ``sample((n,))`` and
            ``log_prob(x) -> (n,)``; the closer to p, the tighter the estimate.

    Example::

        >>> import math, torch
        >>> from torch.distributions import Normal, Independent
        >>> base = Independent(Normal(torch.zeros(2), 2 * torch.ones(2)), 1)
        >>> est = ais_log_partition(lambda x: 0.5 * x.pow(2).sum(-1), base, num_temps=100)
        >>> abs(est.log_z - math.log(2 * math.pi)) < 3 * est.stderr + 0.02
        True
    """
    if transition not in ("mala", "hmc", "langevin"):
        raise ValueError(f"transition: expected 'mala', 'hmc' or 'langevin', got {transition!r}")
    for name, value in (("num_chains", num_chains), ("num_temps", num_temps), ("steps_per_temp", steps_per_temp)):
        count(name, value)
    if not step_size > 0:
        raise ValueError(f"step_size: expected a positive number, got {step_size!r}")
    with torch.no_grad():
        x = base.sample((num_chains,))
    betas = _sigmoid_schedule(num_temps, x.device)
    log_w = torch.zeros(num_chains, device=x.device, dtype=torch.float64)
    rates = []
    for b_prev, b in zip(betas[:-1], betas[1:]):
        with torch.no_grad():
            log_w += (b - b_prev) * (-energy(x) - base.log_prob(x)).double()

        def log_prob(y, b=b):
            return (1.0 - b) * base.log_prob(y) - b * energy(y)

        for _ in range(steps_per_temp):
            x, rate = _transition(transition, x, log_prob, step_size, num_leapfrog)
            rates.append(rate)
    return _summarize(log_w.cpu(), sum(rates) / len(rates))


def _summarize(log_w, accept_rate):
    n = log_w.numel()
    log_z = float(torch.logsumexp(log_w, 0)) - math.log(n)
    w = (log_w - log_w.max()).exp()
    stderr = float(w.std() / (math.sqrt(n) * w.mean())) if n > 1 else float("nan")
    ess = float(w.sum() ** 2 / w.pow(2).sum())
    return PartitionEstimate(log_z, stderr, log_w.float(), ess, accept_rate)
