"""Inverse problems: draw the unknown pixels of ``x`` from the model's conditional :math:`p(x_u \\mid x_k)`.

:func:`inpaint` looks at what the program's data site offers and picks a route:

* ``"ancestral"``: an autoregressive model whose ordering puts every known
  pixel before every unknown one (raster models with a bottom-half mask) is
  sampled exactly, dimension by dimension; for a MADE ensemble
  :math:`p(x) = \\frac1K \\sum_k p(x \\mid M_k)` the mask set is drawn from its
  posterior :math:`w_k \\propto p(x_k \\mid M_k)` first. A MADE trained
  order-agnostically (``MADE(order="agnostic")``) takes this route for any
  mask: each row's known pixels are moved to the front of each ordering
  (:meth:`~pyro_dgm.models.MADE.known_first`), then the unknown ones are drawn
  one at a time (:meth:`~pyro_dgm.models.MADE.walk`).
* ``"gibbs"``: any other exact density over a discrete support (binary or
  integer levels), by systematic-scan Gibbs sweeps over the unknown pixels,
  each conditional computed from ``log_prob`` at every value of the support.
* ``"importance"``: a model with latents and a guide (a VAE): K particles
  :math:`z \\sim q(z \\mid \\hat x)` on the input with the unknown pixels filled,
  weighted by :math:`p(z)\\, p(x_k \\mid z) / q(z \\mid \\hat x)` and resampled,
  then :math:`x_u \\sim p(x_u \\mid z)`.
* ``"nuts"``: a model with latents, no guide: Pyro's NUTS over the latents
  of the model conditioned on the known pixels.
* ``"langevin"``: a continuous density without latents (a flow, an EBM, a
  plain Pyro program): MALA (:func:`pyro_dgm.samplers.mala`) over the
  unknown pixels, in unconstrained coordinates when the support is bounded.
* ``"annealed"``: a score field: annealed Langevin in which the known pixels
  are replaced, at every step, by themselves perturbed to the current noise
  level (Song et al., 2021, Appendix I.2).

The known pixels enter the likelihood as Pyro's ``obs_mask`` would have them:
:class:`MaskedObservation` masks the data site's per-pixel log density, so
:math:`\\log p(x_k \\mid z)` is what the guide's particles and NUTS see.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.poutine.messenger import Messenger
from torch.distributions import biject_to, constraints

from .checks import count, positive
from .distributions.autoregressive import AutoregressiveDistribution
from .programs import (data_site, latent_sites, module_of, per_example_log_prob, program_modules, site_log_prob,
                       trace_program, uncondition_site)
from .runtime import eval_mode, repeat_rows
from .samplers import AnnealedLangevin, mala

__all__ = ["inpaint", "inpaint_method", "conditional_log_prob", "MaskedObservation", "METHODS"]

METHODS = ("ancestral", "gibbs", "importance", "nuts", "langevin", "annealed")


# ---------------------------------------------------------------- checks and the data site

def _check_inputs(x, mask):
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a tensor (n, *event_shape) with n >= 1, got {getattr(x, 'shape', type(x))}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True where a pixel is known), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape == x.shape[1:]:
        mask = mask.expand(x.shape)
    if mask.shape != x.shape:
        raise ValueError(f"mask: expected shape {tuple(x.shape)} or {tuple(x.shape[1:])} (one example's), "
                         f"got {tuple(mask.shape)}")
    return mask


def _site_of(model, x, args, site):
    with torch.no_grad():
        trace = trace_program(model, x, *args)
    node = data_site(trace, site)
    shape = tuple(getattr(node["fn"], "event_shape", ()))
    if shape and shape != tuple(x.shape[1:]):
        raise ValueError(f"x: the model's site {site!r} has examples of shape {shape}, got a batch of "
                         f"{tuple(x.shape)}")
    return trace, node


def _discrete_values(support):
    """The values of a one-pixel discrete support, or None for a continuous one."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is constraints.boolean:
        return torch.tensor([0.0, 1.0])
    if isinstance(support, constraints.integer_interval):
        return torch.arange(float(support.lower_bound), float(support.upper_bound) + 1)
    return None


def _is_score_field(fn):
    return callable(getattr(fn, "score", None)) and not callable(getattr(fn, "energy", None)) \
        and hasattr(fn, "sigmas")


def _autoregressive_module(model, fn):
    from .models.autoregressive import AutoregressiveModel

    module = module_of(model)
    return module if isinstance(fn, AutoregressiveDistribution) and isinstance(module, AutoregressiveModel) else None


def _orders(module):
    return module.orders if hasattr(module, "orders") else module.ordering.unsqueeze(0)


def _is_prefix(module, mask):
    """Whether, for every mask set, the known pixels of every row come before its unknown ones."""
    known = mask.reshape(mask.shape[0], -1)
    c = known.sum(-1, keepdim=True)
    for order in _orders(module).to(mask.device):
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        if bool((known & (rank.unsqueeze(0) >= c)).any()):
            return False
    return True


def inpaint_method(model, x, mask, guide=None, *, args=(), site: str = "x") -> str:
    """The route :func:`inpaint` takes for this model and mask (one of :data:`METHODS`).

    Raises a ValueError for a model with no route (a GAN: no density, no score).
    """
    mask = _check_inputs(x, mask)
    trace, node = _site_of(model, x, args, site)
    return _route(model, trace, node, mask, guide, site)


def _route(model, trace, node, mask, guide, site):
    fn = node["fn"]
    if node["infer"].get("_deterministic") or isinstance(fn, dist.Delta) or not node["is_observed"]:
        raise ValueError(f"model: site {site!r} is deterministic given the latents (an implicit model such as a "
                         "GAN): it has no likelihood or score to condition on, so inpaint has no route")
    if latent_sites(trace):
        return "importance" if guide is not None else "nuts"
    if _is_score_field(fn):
        return "annealed"
    if not callable(getattr(fn, "log_prob", None)):
        raise ValueError(f"model: site {site!r} holds a {type(fn).__name__}, with neither log_prob nor score")
    module = _autoregressive_module(model, fn)
    if module is not None and (_agnostic(module) or _is_prefix(module, mask)):
        return "ancestral"
    return "gibbs" if _discrete_values(fn.support) is not None else "langevin"


# ---------------------------------------------------------------- the entry point

def inpaint(model, x: torch.Tensor, mask: torch.Tensor, num_samples: int = 1, guide=None, *, args=(),
            site: str = "x", method: str | None = None, num_steps: int | None = None,
            step_size: float | None = None, num_particles: int = 256, warmup_steps: int = 100,
            sigmas=None, seed: int | None = None) -> torch.Tensor:
    """Completions of ``x`` where ``mask`` is False, drawn from the model's :math:`p(x_u \\mid x_k)`.

    Args:
        model: a Pyro program ``model(x, *args)`` with data site ``site``.
        x: a batch ``(n, *event_shape)``; its unknown entries are ignored.
        mask: bool, True where a pixel is known: the shape of ``x`` or of one example.
        num_samples: completions per example.
        guide: for a model with latents, the amortized ``q(z | x)`` of the
            ``"importance"`` route (without one, ``"nuts"``).
        args: further batch items, e.g. ``(y,)`` for a class-conditional model.
        method: one of :data:`METHODS`; None picks it (see the module docstring).
        num_steps: Gibbs sweeps (default 20), MALA steps (default 500) or
            Langevin steps per noise level (default: the field's sampler's, or 100).
        step_size: MALA's initial step (default 0.1, then tuned during
            ``warmup_steps``) or annealed Langevin's :math:`\\epsilon` (default:
            the field's sampler's, or 2e-5).
        num_particles: K of the ``"importance"`` route.
        warmup_steps: MALA's step-size adaptation and NUTS's warm-up.
        sigmas: the noise ladder of ``"annealed"`` (default: the field's).
        seed: seeds ``torch`` and ``pyro`` first.

    Returns:
        a tensor ``(num_samples, n, *event_shape)``, equal to ``x`` where ``mask`` is True.

    Example::

        >>> import torch
        >>> from pyro_dgm.models import FVSBN
        >>> m = FVSBN(4)
        >>> x, mask = torch.ones(3, 4), torch.tensor([True, True, False, False])
        >>> out = inpaint(m.model, x, mask, num_samples=5)
        >>> out.shape, bool((out[..., :2] == 1).all()), inpaint_method(m.model, x, mask)
        (torch.Size([5, 3, 4]), True, 'ancestral')
    """
    mask = _check_inputs(x, mask)
    count("num_samples", num_samples)
    count("num_particles", num_particles)
    count("warmup_steps", warmup_steps, 0)
    if num_steps is not None:
        count("num_steps", num_steps)
    if step_size is not None:
        positive("step_size", step_size)
    if method is not None and method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS} or None, got {method!r}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    args = tuple(args)
    modules = program_modules(model, guide, x, args) if _has_modules(model, guide) else []
    with eval_mode(modules):
        trace, node = _site_of(model, x, args, site)
        chosen = _route(model, trace, node, mask, guide, site)
        method = method or chosen
        _check_method(method, chosen)
        xs, ms = x.detach().repeat(num_samples, *([1] * (x.dim() - 1))), mask.repeat(num_samples, *([1] * (x.dim() - 1)))
        _, rargs = repeat_rows(x, args, num_samples)
        out = _ROUTES[method](model, xs, ms, rargs, site=site, guide=guide, num_steps=num_steps,
                              step_size=step_size, num_particles=num_particles, warmup_steps=warmup_steps,
                              sigmas=sigmas, node=node, n=x.shape[0])
    out = torch.where(ms, xs, out.detach())
    return out.reshape(num_samples, *x.shape)


def _has_modules(model, guide):
    return module_of(model) is not None or (guide is not None and module_of(guide) is not None)


#: The routes that may replace the one :func:`inpaint` picks (exact ancestral -> Gibbs; a guide's particles -> NUTS).
ALTERNATIVES = {"ancestral": ("gibbs",), "importance": ("nuts",)}


def _check_method(method, chosen):
    if method != chosen and method not in ALTERNATIVES.get(chosen, ()):
        raise ValueError(f"method: {method!r} does not fit this model and mask; the route that fits is {chosen!r}"
                         f"{' (or ' + ', '.join(ALTERNATIVES[chosen]) + ')' if chosen in ALTERNATIVES else ''}")


# ---------------------------------------------------------------- exact density routes

def _run_ar(module, u, k, args):
    """The conditionals' parameters ``(n, D, P)`` of mask set k (MADE) or of the model, on encoded data u."""
    return module(u, k, *args) if hasattr(module, "orders") else module(u, *args)


def _take(args, rows):
    return tuple(a[rows] if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)


def _agnostic(module):
    return getattr(module, "agnostic", False)


def _pixel_log_probs(module, x, known, args):
    """``(K, n, D)``: per mask set k, each pixel's log density under its conditional, along ordering k (for an
    order-agnostic MADE, each row's ordering k with its known pixels first, :meth:`~pyro_dgm.models.MADE.walk`)."""
    out, flat = module.output, x.reshape(x.shape[0], -1)
    per_set = []
    for k in range(len(_orders(module))):
        if _agnostic(module):
            per_set.append(module.walk(x, known, k, *args, draw=False)[1])
        else:
            per_set.append(out.distribution(_run_ar(module, out.encode(x), k, args)).log_prob(flat))
    return torch.stack(per_set)


@torch.no_grad()
def _ancestral(model, x, mask, args, **_):
    module = module_of(model)
    flat, known = x.reshape(x.shape[0], -1).clone(), mask.reshape(x.shape[0], -1)
    flat[~known] = 0.0
    # The mask set's posterior given the known pixels, w_k ∝ p(x_k | M_k) (exact: they come first).
    logw = (_pixel_log_probs(module, flat.view(x.shape), known, args) * known).sum(-1).T
    which = torch.distributions.Categorical(logits=logw).sample()
    for k in which.unique().tolist():
        rows = which == k
        part, part_known, part_args = flat[rows], known[rows], _take(args, rows)
        if _agnostic(module):
            flat[rows] = module.walk(part, part_known, k, *part_args)[0]
            continue
        for j in _orders(module)[k].tolist():
            hidden = ~part_known[:, j]
            if not bool(hidden.any()):
                continue
            params = _run_ar(module, module.output.encode(part.view(-1, *x.shape[1:])), k, part_args)[:, j]
            part[:, j] = torch.where(hidden, module.output.distribution(params).sample(), part[:, j])
        flat[rows] = part
    return flat.view(x.shape)


def _log_prob_fn(model, site, args, n_args):
    """``x -> log p(x)`` per row, tracing the program with the batch items repeated to the rows of x."""
    def log_prob(x):
        k = x.shape[0] // n_args
        _, rargs = repeat_rows(x, args, k) if k > 1 else (x, args)
        return site_log_prob(model, x, site, rargs).reshape(x.shape[0])

    return log_prob


@torch.no_grad()
def _gibbs(model, x, mask, args, *, site, node, num_steps, **_):
    values = _discrete_values(node["fn"].support).to(x)
    log_prob = _log_prob_fn(model, site, args, x.shape[0])
    flat, known = x.reshape(x.shape[0], -1).clone(), mask.reshape(x.shape[0], -1)
    start = values[torch.randint(len(values), flat.shape, device=x.device)]
    flat = torch.where(known, flat, start)
    positions = (~known).any(0).nonzero().flatten().tolist()
    for _ in range(num_steps or 20):
        for j in positions:
            cand = flat.repeat(len(values), 1)
            cand[:, j] = values.repeat_interleave(flat.shape[0])
            logits = log_prob(cand.view(-1, *x.shape[1:])).view(len(values), -1).T
            pick = values[torch.distributions.Categorical(logits=logits).sample()]
            flat[:, j] = torch.where(known[:, j], flat[:, j], pick)
    return flat.view(x.shape)


def _langevin(model, x, mask, args, *, site, node, num_steps, step_size, warmup_steps, **_):
    support = node["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    to_x = biject_to(support)
    log_prob = _log_prob_fn(model, site, args, x.shape[0])
    n = x.shape[0]

    def target(v):
        # Known pixels come from x; only the unknown ones move (and carry the log-Jacobian of to_x).
        moved = to_x(v)
        full = torch.where(mask, x, moved)
        ladj = (to_x.log_abs_det_jacobian(v, moved) * (~mask)).reshape(n, -1).sum(-1)
        return log_prob(full) + ladj

    v0 = torch.where(mask, to_x.inv(_inside(x, support)), torch.randn_like(x))
    result = mala(v0, log_prob=target, step_size=step_size or 0.1, num_steps=num_steps or 500,
                  adapt_steps=warmup_steps)
    return to_x(result.x)


def _inside(x, support, eps=1e-6):
    """``x`` moved strictly inside an interval support, so ``to_x.inv`` is finite at the known pixels."""
    lo, hi = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
    if lo is not None:
        x = x.clamp(min=float(lo) + eps)
    return x if hi is None else x.clamp(max=float(hi) - eps)


# ---------------------------------------------------------------- latent-variable routes

def _per_pixel(fn):
    """``(base, ndims)``: the distribution with one batch element per pixel, and how many dims to re-reinterpret."""
    ndims = 0
    while isinstance(fn, dist.Independent):
        ndims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, ndims


class MaskedObservation(Messenger):
    """Score only the known pixels of the data site: :math:`\\log p(x_k \\mid z)`, as ``obs_mask`` does.

    The site's distribution must factor over pixels (``Independent`` of a
    per-pixel distribution, as a VAE's decoder is); its base distribution is
    masked with Pyro's ``.mask(mask)`` and reinterpreted again.

    Example::

        >>> import pyro, pyro.distributions as dist, torch
        >>> def model(x):
        ...     pyro.sample("x", dist.Normal(torch.zeros(2, 3), 1.0).to_event(1), obs=x)
        >>> tr = poutine.trace(MaskedObservation("x", torch.tensor([True, False, False]))(model)).get_trace(
        ...     torch.zeros(2, 3))
        >>> tr.log_prob_sum().item() == 2 * dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.0)).item()
        True
    """

    def __init__(self, site: str, mask: torch.Tensor):
        super().__init__()
        self.site, self.mask = site, mask

    def _pyro_sample(self, msg):
        if msg["name"] != self.site:
            return
        base, ndims = _per_pixel(msg["fn"])
        if tuple(base.batch_shape)[-self.mask.dim():] != tuple(self.mask.shape) and \
                tuple(base.batch_shape) != tuple(self.mask.shape[-len(base.batch_shape):]):
            raise ValueError(f"model: site {self.site!r} holds a {type(msg['fn']).__name__} that does not factor "
                             f"over pixels (batch shape {tuple(base.batch_shape)}), so its known pixels cannot be "
                             "scored alone; inpaint needs a per-pixel likelihood p(x | z) there")
        msg["fn"] = base.mask(self.mask).to_event(ndims)


def _fill(x, mask):
    """The unknown pixels set to the mean of the row's known ones: the input the guide proposes from."""
    known = mask.reshape(x.shape[0], -1).to(x.dtype)
    mean = (x.reshape(x.shape[0], -1) * known).sum(-1) / known.sum(-1).clamp(min=1)
    return torch.where(mask, x, mean.reshape(-1, *([1] * (x.dim() - 1))).expand_as(x))


def _weighted_particles(model, guide, x, mask, args, site, k):
    """K guide particles per row: the guide trace and log weights ``(K, n)`` of :math:`p(z, x_k) / q(z)`."""
    n = x.shape[0]
    xk, kargs = repeat_rows(_fill(x, mask), args, k)
    mk, _ = repeat_rows(mask, (), k)
    with torch.no_grad():
        guide_trace = trace_program(guide, xk, *kargs)
        model_trace = trace_program(poutine.replay(MaskedObservation(site, mk)(model), trace=guide_trace),
                                    repeat_rows(x, (), k)[0], *kargs)
        logw = per_example_log_prob(model_trace, k * n) - per_example_log_prob(guide_trace, k * n)
    return guide_trace, logw.view(k, n)


def _sample_given(model, latents, x, args, site):
    conditioned = poutine.condition(uncondition_site(site)(model), data=latents)
    with torch.no_grad():
        return data_site(trace_program(conditioned, x, *args), site)["value"]


def _importance(model, x, mask, args, *, guide, site, num_particles, n, **_):
    # Rows of x are num_samples copies of n examples; one particle set per example, resampled num_samples times.
    base, base_mask, base_args = x[:n], mask[:n], tuple(a[:n] if isinstance(a, torch.Tensor) and a.dim() else a
                                                        for a in args)
    guide_trace, logw = _weighted_particles(model, guide, base, base_mask, base_args, site, num_particles)
    s = x.shape[0] // n
    pick = torch.distributions.Categorical(logits=logw.T).sample((s,))  # (s, n): particle index per draw
    rows = (pick * n + torch.arange(n)).reshape(-1)
    latents = {name: guide_trace.nodes[name]["value"][rows] for name in latent_sites(guide_trace)}
    return _sample_given(model, latents, x, args, site)


def _nuts(model, x, mask, args, *, site, warmup_steps, n, **_):
    base, base_mask = x[:n], mask[:n]
    base_args = tuple(a[:n] if isinstance(a, torch.Tensor) and a.dim() else a for a in args)
    s = x.shape[0] // n
    mcmc = MCMC(NUTS(MaskedObservation(site, base_mask)(model)), num_samples=s, warmup_steps=warmup_steps,
                disable_progbar=True)
    mcmc.run(base, *base_args)
    latents = {name: v.reshape(s * n, *v.shape[2:]) for name, v in mcmc.get_samples().items()}
    return _sample_given(model, latents, x, args, site)


# ---------------------------------------------------------------- score fields

@torch.no_grad()
def _annealed(model, x, mask, args, *, site, node, num_steps, step_size, sigmas, **_):
    fn = data_site(trace_program(model, x, *args), site)["fn"]  # the field of these rows (labels included)
    sampler = fn.sampler if isinstance(fn.sampler, AnnealedLangevin) else None
    levels = sigmas if sigmas is not None else fn.sigmas
    if levels is None:
        raise ValueError("sigmas: the score field has no noise ladder; pass sigmas= to inpaint")
    levels = [float(v) for v in torch.as_tensor(levels).reshape(-1)]
    steps = num_steps or (sampler.steps_per_level if sampler else 100)
    eps = step_size or (sampler.step_size if sampler else 2e-5)
    last = levels[-1]
    state = torch.where(mask, x, levels[0] * torch.randn_like(x))
    for sigma in levels:
        alpha = eps * (sigma / last) ** 2
        for _ in range(steps):
            # Replacement: the known pixels, perturbed to this level, stand in for the model's own.
            state = torch.where(mask, x + sigma * torch.randn_like(x), state)
            state = state + 0.5 * alpha * fn.score(state, sigma) + math.sqrt(alpha) * torch.randn_like(x)
    state = torch.where(mask, x, state)
    return state + last ** 2 * fn.score(state, last)


_ROUTES = {"ancestral": _ancestral, "gibbs": _gibbs, "importance": _importance, "nuts": _nuts,
           "langevin": _langevin, "annealed": _annealed}


# ---------------------------------------------------------------- the likelihood of the hidden part

def conditional_log_prob(model, x, mask, guide=None, *, args=(), site: str = "x", num_particles: int = 256):
    """:math:`\\log p(x_u \\mid x_k)` per example, in nats.

    Exact for an autoregressive model whose ordering puts the known pixels
    first (the MADE ensemble: :math:`\\log \\sum_k w_k\\, p(x_u \\mid x_k, M_k)` with the
    posterior weights :math:`w_k`; an order-agnostic MADE, any mask, with each
    ordering's known pixels moved to the front); for a model with latents and a guide, the
    importance estimate :math:`\\log \\hat p(x) - \\log \\hat p(x_k)` with one set of
    ``num_particles`` particles drawn from the guide on the full ``x``.
    Any other model: a ValueError.
    """
    mask = _check_inputs(x, mask)
    args = tuple(args)
    modules = program_modules(model, guide, x, args) if _has_modules(model, guide) else []
    with eval_mode(modules), torch.no_grad():
        trace, node = _site_of(model, x, args, site)
        route = _route(model, trace, node, mask, guide, site)
        if route == "ancestral":
            known = mask.reshape(x.shape[0], -1)
            lp = _pixel_log_probs(module_of(model), x, known, args)
            return torch.logsumexp(lp.sum(-1), 0) - torch.logsumexp((lp * known).sum(-1), 0)
        if route == "importance":
            count("num_particles", num_particles)
            guide_trace, logw_full = _weighted_particles(model, guide, x, torch.ones_like(mask), args, site,
                                                         num_particles)
            xk, kargs = repeat_rows(x, args, num_particles)
            mk = repeat_rows(mask, (), num_particles)[0]
            masked = trace_program(poutine.replay(MaskedObservation(site, mk)(model), trace=guide_trace), xk, *kargs)
            logw_known = (per_example_log_prob(masked, xk.shape[0]) - per_example_log_prob(guide_trace, xk.shape[0]))
            return torch.logsumexp(logw_full, 0) - torch.logsumexp(logw_known.view(num_particles, -1), 0)
    raise ValueError(f"model: no exact or importance-weighted conditional density for route {route!r}; "
                     "conditional_log_prob needs an autoregressive model with the known pixels first, or a guide")
