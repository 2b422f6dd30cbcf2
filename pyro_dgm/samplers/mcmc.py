"""Samplers for differentiable (unnormalized) log densities and score fields.

Everything is batched over chains: ``x0`` has shape ``(chains, *event_shape)``
and every chain moves in parallel on ``x0``'s device. A log density is any
callable ``log_prob(x) -> (chains,)``, known up to a constant (an EBM's
``-E(x)``); a score is ``score(x) -> grad_x log p(x)`` of ``x``'s shape.

* :func:`langevin`: unadjusted Langevin dynamics (no accept step; biased for a
  finite step size, the EBM workhorse).
* :func:`mala`: Metropolis-adjusted Langevin (exact stationary law), with its
  acceptance rate and an optional step-size adaptation.
* :func:`hmc` and :func:`nuts`: Pyro's own ``HMC``/``NUTS`` kernels run by
  ``pyro.infer.MCMC`` on a ``potential_fn``, one chain per row of ``x0``.
* :func:`mala_step` and :func:`hmc_step`: single batched transitions with a
  per-chain accept, used as the transitions of annealed importance sampling.

Chains come out as a :class:`SamplerResult`; ``result.to_arviz()`` gives an
ArviZ object for ``az.rhat`` / ``az.ess``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from ..checks import count

__all__ = ["score_of", "langevin", "mala", "mala_step", "hmc", "hmc_step", "nuts", "SamplerResult"]


def score_of(log_prob):
    """The score ``grad_x log p(x)`` of a log density by autograd (one backward pass per call)."""

    def score(x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(log_prob(x).sum(), x)[0]

    return score


def _check_steps(step_size, num_steps, name="num_steps"):
    try:
        positive = bool(step_size > 0)
    except (TypeError, RuntimeError):
        positive = False
    if not positive:
        raise ValueError(f"step_size: expected a positive number, got {step_size!r}")
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {num_steps!r}")


def _check_x0(x0):
    if not isinstance(x0, torch.Tensor) or x0.dim() < 2:
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0: expected a tensor (chains, *event_shape), got {shape}")


def langevin(x0: torch.Tensor, *, log_prob=None, score=None, step_size: float, num_steps: int,
             noise_scale: float = 1.0, return_chain: bool = False, thin: int = 1):
    """Unadjusted Langevin dynamics.

    .. math:: x_{t+1} = x_t + \\frac{\\epsilon}{2} \\nabla_x \\log p(x_t) + \\lambda \\sqrt{\\epsilon}\\, \\xi_t,
              \\quad \\xi_t \\sim \\mathcal{N}(0, I)

    with step size :math:`\\epsilon` (``step_size``) and noise scale
    :math:`\\lambda` (``noise_scale``; 1 is the sampler whose stationary law
    tends to p as the step shrinks, smaller values are the "cold" chains many
    EBM papers use). Give either ``log_prob`` (the score is taken by
    autograd; for a Pyro program ``model(x)``, ``log_prob=pyro_dgm.programs.log_density(model)``)
    or ``score`` directly.

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
    _check_steps(step_size, num_steps)
    count("thin", thin)
    grad = score if score is not None else score_of(log_prob)
    x = x0.detach().clone()
    chain = []
    drift, noise = step_size / 2.0, noise_scale * math.sqrt(step_size)
    for t in range(num_steps):
        g = grad(x)
        with torch.no_grad():
            x = x.add(g, alpha=drift).add_(torch.randn_like(x), alpha=noise)
        if return_chain and (t + 1) % thin == 0:
            chain.append(x)
    if return_chain:
        return x, torch.stack(chain) if chain else x.new_zeros((0, *x.shape))
    return x


@dataclass
class SamplerResult:
    """What :func:`mala`, :func:`hmc` and :func:`nuts` return.

    Attributes:
        x: the final states, ``(chains, *event_shape)``.
        chain: the kept draws, ``(draws, chains, *event_shape)``, or None.
        accept_rate: mean acceptance probability over chains and kept steps.
        step_size: the step size used after adaptation (per chain for HMC/NUTS).
    """

    x: torch.Tensor
    chain: torch.Tensor | None
    accept_rate: float
    step_size: float | list

    def to_arviz(self, name: str = "x"):
        """The chains as an ArviZ posterior (dims ``chain, draw, x_dim``) for ``az.rhat``/``az.ess``."""
        if self.chain is None:
            raise ValueError("return_chain: the sampler ran without return_chain=True; no draws to convert")
        from ..arviz import chains_to_arviz

        return chains_to_arviz(self.chain.transpose(0, 1), name=name)


def _value_and_grad(log_prob, x):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        lp = log_prob(x)
        g = torch.autograd.grad(lp.sum(), x)[0]
    return lp.detach(), g


def _flat_sq(t):
    return t.reshape(t.shape[0], -1).pow(2).sum(-1)


def _per_chain(mask, x):
    return mask.reshape(-1, *([1] * (x.dim() - 1)))


def mala_step(x, log_prob, step_size: float, lp=None, grad=None):
    """One batched MALA transition with a Metropolis-Hastings accept per chain.

    Proposal :math:`y = x + \\frac{\\epsilon}{2}\\nabla \\log p(x) + \\sqrt{\\epsilon}\\,\\xi`,
    accepted with probability
    :math:`\\min\\{1, \\frac{p(y)\\, q(x|y)}{p(x)\\, q(y|x)}\\}`,
    :math:`q(y|x) = \\mathcal{N}(y; x + \\frac{\\epsilon}{2}\\nabla\\log p(x), \\epsilon I)`.

    Returns ``(x, lp, grad, accept_prob)``; pass ``lp`` and ``grad`` back in
    to save one gradient evaluation per step.
    """
    if lp is None or grad is None:
        lp, grad = _value_and_grad(log_prob, x)
    y = x + 0.5 * step_size * grad + math.sqrt(step_size) * torch.randn_like(x)
    lp_y, grad_y = _value_and_grad(log_prob, y)
    log_q_fwd = -_flat_sq(y - x - 0.5 * step_size * grad) / (2 * step_size)
    log_q_bwd = -_flat_sq(x - y - 0.5 * step_size * grad_y) / (2 * step_size)
    log_ratio = torch.nan_to_num(lp_y - lp + log_q_bwd - log_q_fwd, nan=-math.inf)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    ok = torch.rand_like(accept_prob) < accept_prob
    x = torch.where(_per_chain(ok, x), y, x)
    return x, torch.where(ok, lp_y, lp), torch.where(_per_chain(ok, x), grad_y, grad), accept_prob


def mala(x0: torch.Tensor, *, log_prob, step_size: float, num_steps: int, adapt_steps: int = 0,
         target_accept: float = 0.574, return_chain: bool = False, thin: int = 1) -> SamplerResult:
    """Metropolis-adjusted Langevin algorithm (Roberts and Tweedie, 1996), batched over chains.

    Each step is :func:`mala_step`. During the first ``adapt_steps`` steps
    (warm-up, not kept) the log step size follows a Robbins-Monro recursion
    :math:`\\log\\epsilon \\leftarrow \\log\\epsilon + t^{-0.6}(\\bar a_t - a^*)` toward the
    acceptance ``target_accept`` (0.574 is optimal for MALA in high dimension,
    Roberts and Rosenthal, 1998); then ``num_steps`` steps run at the tuned step.

    Returns a :class:`SamplerResult` with the acceptance rate of the kept steps.

    Example::

        >>> import torch
        >>> r = mala(torch.zeros(500, 2), log_prob=lambda x: -0.5 * x.pow(2).sum(-1),
        ...          step_size=0.5, num_steps=200, adapt_steps=100)
        >>> 0.4 < r.accept_rate < 0.9, abs(float(r.x.var()) - 1) < 0.2
        (True, True)
    """
    _check_x0(x0)
    _check_steps(step_size, num_steps)
    _check_steps(step_size, adapt_steps, "adapt_steps")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept: expected a number in (0, 1), got {target_accept!r}")
    count("thin", thin)
    x = x0.detach().clone()
    lp, grad = _value_and_grad(log_prob, x)
    log_eps = math.log(step_size)
    for t in range(1, adapt_steps + 1):
        x, lp, grad, a = mala_step(x, log_prob, math.exp(log_eps), lp, grad)
        log_eps += t ** -0.6 * (float(a.mean()) - target_accept)
    eps, chain, accepted = math.exp(log_eps), [], []
    for t in range(num_steps):
        x, lp, grad, a = mala_step(x, log_prob, eps, lp, grad)
        accepted.append(a.mean())
        if return_chain and (t + 1) % thin == 0:
            chain.append(x)
    rate = float(torch.stack(accepted).mean()) if accepted else float("nan")
    return SamplerResult(x, torch.stack(chain) if return_chain and chain else None, rate, eps)


def hmc_step(x, log_prob, step_size: float, num_leapfrog: int):
    """One batched HMC transition (leapfrog, unit mass) with a Metropolis accept per chain.

    .. math:: H(x, r) = -\\log p(x) + \\tfrac12 \\|r\\|^2, \\quad r \\sim \\mathcal{N}(0, I)

    (Neal, 2011, "MCMC using Hamiltonian dynamics"). Returns
    ``(x, accept_prob)``. :func:`hmc` runs Pyro's adaptive kernel instead; this
    plain step is what annealed importance sampling needs: a transition that
    leaves one tempered density invariant for every chain separately.
    """
    count("num_leapfrog", num_leapfrog)
    lp, grad = _value_and_grad(log_prob, x)
    r = torch.randn_like(x)
    h0 = -lp + 0.5 * _flat_sq(r)
    y, p = x, r + 0.5 * step_size * grad
    for i in range(num_leapfrog):
        y = y + step_size * p
        lp_y, grad_y = _value_and_grad(log_prob, y)
        p = p + (step_size if i < num_leapfrog - 1 else 0.5 * step_size) * grad_y
    h1 = -lp_y + 0.5 * _flat_sq(p)
    accept_prob = torch.nan_to_num(h0 - h1, nan=-math.inf).clamp(max=0.0).exp()
    ok = torch.rand_like(accept_prob) < accept_prob
    return torch.where(_per_chain(ok, x), y, x), accept_prob


def _pyro_mcmc(make_kernel, x0, log_prob, num_samples, warmup_steps):
    from pyro.infer import MCMC

    _check_x0(x0)
    for name, value in (("num_samples", num_samples), ("warmup_steps", warmup_steps)):
        if not isinstance(value, int) or value < (1 if name == "num_samples" else 0):
            raise ValueError(f"{name}: expected an integer >= {int(name == 'num_samples')}, got {value!r}")

    def potential_fn(params):
        return -log_prob(params["x"].unsqueeze(0)).sum()

    draws, rates, steps = [], [], []
    for start in x0.detach():
        kernel = make_kernel(potential_fn)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                    initial_params={"x": start.clone()}, disable_progbar=True)
        mcmc.run()
        draws.append(mcmc.get_samples()["x"])
        rates.append(float(mcmc.diagnostics()["acceptance rate"]["chain 0"]))
        steps.append(float(kernel.step_size))
    chain = torch.stack(draws, 1)
    return SamplerResult(chain[-1], chain, sum(rates) / len(rates), steps)


def hmc(x0: torch.Tensor, *, log_prob, num_samples: int, warmup_steps: int = 200, step_size: float = 0.1,
        num_leapfrog: int = 10, target_accept: float = 0.8, full_mass: bool = False) -> SamplerResult:
    """Hamiltonian Monte Carlo with Pyro's ``HMC`` kernel on ``potential_fn = -log_prob``.

    One Pyro ``MCMC`` run per row of ``x0`` (Pyro's own parallel chains need one
    process each), with step-size adaptation by dual averaging and a diagonal
    mass matrix during ``warmup_steps`` (Hoffman and Gelman, 2014); ``full_mass=True``
    adapts a dense one, which strongly correlated targets need.
    ``accept_rate`` is Pyro's mean acceptance probability, averaged over chains.

    Example::

        >>> import torch
        >>> r = hmc(torch.zeros(2, 2), log_prob=lambda x: -0.5 * x.pow(2).sum(-1),
        ...         num_samples=50, warmup_steps=50)
        >>> r.chain.shape
        torch.Size([50, 2, 2])
    """
    from pyro.infer import HMC

    _check_steps(step_size, num_leapfrog, "num_leapfrog")
    return _pyro_mcmc(lambda pot: HMC(potential_fn=pot, step_size=step_size, num_steps=num_leapfrog,
                                      target_accept_prob=target_accept, full_mass=full_mass),
                      x0, log_prob, num_samples, warmup_steps)


def nuts(x0: torch.Tensor, *, log_prob, num_samples: int, warmup_steps: int = 200, step_size: float = 0.1,
         max_tree_depth: int = 10, target_accept: float = 0.8, full_mass: bool = False) -> SamplerResult:
    """The No-U-Turn sampler (Hoffman and Gelman, 2014) with Pyro's ``NUTS`` kernel on ``-log_prob``.

    Same conventions as :func:`hmc`; the trajectory length is chosen per
    iteration by the U-turn criterion, up to ``2**max_tree_depth`` leapfrog steps.

    Example::

        >>> import torch
        >>> r = nuts(torch.zeros(2, 2), log_prob=lambda x: -0.5 * x.pow(2).sum(-1),
        ...          num_samples=50, warmup_steps=50)
        >>> r.to_arviz().posterior["x"].shape
        (2, 50, 2)
    """
    from pyro.infer import NUTS

    _check_steps(step_size, max_tree_depth, "max_tree_depth")
    return _pyro_mcmc(lambda pot: NUTS(potential_fn=pot, step_size=step_size, max_tree_depth=max_tree_depth,
                                       target_accept_prob=target_accept, full_mass=full_mass),
                      x0, log_prob, num_samples, warmup_steps)
