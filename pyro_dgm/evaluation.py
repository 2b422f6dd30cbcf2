"""Held-out log-likelihoods: exact for densities, importance-weighted for latent-variable models.

All numbers are in nats per example; ``bits_per_dim`` divides by
``D * log 2`` where D is the number of dimensions of one example.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro import poutine

from .runtime import batches_of, eval_mode, repeat_rows, validation
from .checks import count, expected_event_shape
from .training.distributed import OneProcess, of_the_group, rank_device, scored_in_turn, shared_seed
from .programs import (data_plate, device_of, global_latents, latent_sites, modules_of, observed_item,
                       per_example_log_prob, resolve_site, sample_sites, split_batch, trace_program)

__all__ = ["evaluate", "per_example_log_prob", "iwae_log_weights", "pointwise_log_likelihood",
           "estimate_log_normalizer", "to_bits_per_dim", "eval_mode"]


def to_bits_per_dim(nll_nats: float, dims: int) -> float:
    """Nats per example -> bits per dimension."""
    return nll_nats / (dims * math.log(2.0))


def _in_plate(trace, plate):
    return [n for n in sample_sites(trace) if plate is None
            or any(f.name == plate for f in trace.nodes[n]["cond_indep_stack"])]


def weighted_sites(model_trace, guide_trace, plate=None):
    """The model sites (in ``plate``, if given) whose log density enters an importance weight p/q.

    A latent site the guide does not draw is drawn from its prior when the
    model is replayed on the guide: the prior is its proposal, so its p/q is
    1 and it is left out; the weight is then ``p(x | z) p(z_guided) / q``.
    Sites marked for enumeration are summed out instead (:func:`_log_p`).
    """
    return [n for n in _in_plate(model_trace, plate)
            if model_trace.nodes[n]["is_observed"] or n in guide_trace.nodes]


def _summed_out(model_trace, guide_trace, plate=None):
    """The latent sites (in ``plate``, if given) that the guide leaves to enumeration: ``config_enumerate``'s
    ``infer={"enumerate": "parallel"}``, which TraceEnum_ELBO sums out in training."""
    return [n for n in latent_sites(model_trace) if n not in guide_trace.nodes and n in _in_plate(model_trace, plate)
            and model_trace.nodes[n]["infer"].get("enumerate") == "parallel"]


def _log_p_enumerated(model, plain, guide_trace, x, args, sites, batch_size):
    """Per-example ``log sum_k p(sites, k)``, shape (batch,): the model replayed on ``guide_trace`` with its
    enumerated sites k summed out exactly (``poutine.enum``, as TraceEnum_ELBO sums them in training).

    Each example's enumerated sites must sit in its data plate (a discrete assignment per example), so
    that the sum over them factorizes per example; a global enumerated site is refused.
    """
    replayed = poutine.replay(model, trace=guide_trace)  # ``plain``: its trace without enumeration
    frames = [f for n in sample_sites(plain) for f in plain.nodes[n]["cond_indep_stack"] if f.vectorized]
    nesting = max((-f.dim for f in frames), default=0)
    data_dims = {f.dim for f in frames if f.size == batch_size}
    trace = trace_program(poutine.enum(replayed, first_available_dim=-1 - nesting), x, *args)
    enumerated = [n for n in latent_sites(trace) if trace.nodes[n]["infer"].get("_enumerate_dim") is not None]
    outside = [n for n in enumerated if not any(f.dim in data_dims for f in trace.nodes[n]["cond_indep_stack"])]
    if len(data_dims) != 1 or outside:
        raise ValueError(f"model: the enumerated sites {outside or enumerated} are not per example (in one plate "
                         f"of the {batch_size} examples), so their sum does not split per example; draw them in "
                         "the guide to evaluate this model")
    total = sum(trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]) for n in (*sites, *enumerated))
    total = total.reshape((1,) * (nesting - total.dim()) + tuple(total.shape))
    total = total.logsumexp(tuple(range(total.dim() - nesting))) if total.dim() > nesting else total
    dim = data_dims.pop()
    return total.movedim(dim, 0).reshape(batch_size, -1).sum(-1)


def _log_p(model, model_trace, guide_trace, x, args, batch_size, plate=None):
    """Per-example log p of the weighted sites (in ``plate``, if given), enumerated sites summed out."""
    sites = weighted_sites(model_trace, guide_trace, plate)
    if _summed_out(model_trace, guide_trace, plate):
        return _log_p_enumerated(model, model_trace, guide_trace, x, args, sites, batch_size)
    return per_example_log_prob(model_trace, batch_size, sites)


def iwae_log_weights(model, guide, x: torch.Tensor, num_particles: int, chunk: int = 64, args=()) -> torch.Tensor:
    """log w_k = log p(x, z_k) - log q(z_k|x) for z_k ~ q(z|x), shape (num_particles, batch).

    For models whose latents are all per example: the K draws run as one
    batch of K copies of ``x``.
    """
    out = []
    b = x.shape[0]
    for start in range(0, num_particles, chunk):
        c = min(chunk, num_particles - start)
        xr, ar = repeat_rows(x, args, c)
        guide_trace = trace_program(guide, xr, *ar)
        model_trace = trace_program(poutine.replay(model, trace=guide_trace), xr, *ar)
        log_q = per_example_log_prob(guide_trace, c * b, latent_sites(guide_trace))
        log_p = _log_p(model, model_trace, guide_trace, xr, ar, c * b)
        out.append((log_p - log_q).reshape(c, b))
    return torch.cat(out, 0)


def _global_log_weights(model, guide, x, num_particles, plate, args=()):
    """Like :func:`iwae_log_weights` for a model with global latents: one draw of them per particle.

    Each draw ``(theta_k, z_k) ~ q`` gives ``log p(x_i, z_ik | theta_k) - log
    q(z_ik | x_i, theta_k)`` over the sites inside the data plate; the global
    sites are not weighted (the guide stands for their posterior).
    """
    out = []
    for _ in range(num_particles):
        guide_trace = trace_program(guide, x, *args)
        model_trace = trace_program(poutine.replay(model, trace=guide_trace), x, *args)
        local_q = [n for n in _in_plate(guide_trace, plate) if not guide_trace.nodes[n]["is_observed"]
                   and n in model_trace.nodes]
        log_p = _log_p(model, model_trace, guide_trace, x, args, x.shape[0], plate)
        log_q = per_example_log_prob(guide_trace, x.shape[0], local_q)
        out.append(log_p - log_q)
    return torch.stack(out)


def pointwise_log_likelihood(model, x, guide=None, num_particles: int = 1, args=(), site=None) -> torch.Tensor:
    """Per-example held-out ``log p(x_i)`` estimates, shape (batch,) (see :func:`evaluate`)."""
    trace = trace_program(model, x, *args)
    site = resolve_site(trace, x, site, args)
    _refuse_unscorable(trace.nodes[site]["fn"])
    if guide is None:
        latent = latent_sites(trace)
        if latent and _implicit(trace.nodes[site]["fn"]):
            raise ValueError(f"model: the data site {site!r} is a Delta at G(z) (an implicit model, such as a GAN's "
                             "generator), which has no density to score; pyro_dgm.evaluate scores it by sample "
                             "metrics (MMD^2) on a tensor of data")
        if latent:
            raise ValueError(f"guide: the model has latent sites {latent}; pass a guide for the IWAE bound")
        return per_example_log_prob(trace, x.shape[0])
    guide_trace = trace_program(guide, x, *args)
    replayed = trace_program(poutine.replay(model, trace=guide_trace), x, *args)
    plate = data_plate(replayed, site, x.shape[0])
    if global_latents(replayed, plate) and plate is not None:
        log_w = _global_log_weights(model, guide, x, num_particles, plate, args)
    else:
        log_w = iwae_log_weights(model, guide, x, num_particles, args=args)
    return torch.logsumexp(log_w, 0) - math.log(num_particles)


def _refuse_unscorable(fn):
    from .distributions import ScoreField, UnnormalizedDistribution

    if isinstance(fn, UnnormalizedDistribution):
        raise ValueError("log_normalizer: the data site holds an unnormalized density (an EBM), whose log Z is "
                         "unknown; pass log_normalizer= (a number, or 'grid' for 2-D data, 'ais' otherwise, to "
                         "estimate it: pyro_dgm.partition)")
    if isinstance(fn, ScoreField):
        raise ValueError("model: the data site holds a score field, which has no density to evaluate here; "
                         "pyro_dgm.evaluate scores it by its probability flow")


def estimate_log_normalizer(fn, x: torch.Tensor, method: str) -> tuple[float, str]:
    """``(log Z, how)`` of an unnormalized density at the data site: ``"grid"`` (2-D) or ``"ais"``.

    The grid covers the data with a margin (500 points a side); AIS anneals
    from a Gaussian fitted to ``x`` (256 chains, 500 temperatures).
    """
    from . import partition
    from .inference.contrastive import FittedGaussian

    flat = x.reshape(x.shape[0], -1)
    if method == "grid":
        if flat.shape[1] != 2:
            raise ValueError(f"log_normalizer: 'grid' integrates 2-D densities; this data has {flat.shape[1]} "
                             "dimensions: use 'ais'")
        bounds = max(4.0, 1.25 * float(flat.abs().max()))
        log_z = partition.grid_log_partition(fn.energy, bounds=bounds, num_points=500, device=x.device)
        return log_z, f"log Z {log_z:.3f} on a 500x500 grid over [-{bounds:.2f}, {bounds:.2f}]^2"
    if method == "ais":
        base = FittedGaussian(x).to(x.device)
        est = partition.ais_log_partition(fn.energy, dist.Normal(base.loc, base.scale).to_event(x.dim() - 1))
        return est.log_z, f"AIS log Z {est.log_z:.3f} +- {est.stderr:.3f} (ESS {est.ess:.0f})"
    raise ValueError(f"log_normalizer: expected a number, 'grid' or 'ais', got {method!r}")


def _score_field_result(model, data, fn, num_levels, seed, args=(), all_ranks=False):
    from .inference import VESDE, probability_flow_nll

    sde = fn.sde
    if sde is None:  # a noise ladder: the VE SDE through the same range of sigmas
        sde = VESDE(float(fn.sigmas.min()), float(fn.sigmas.max()))
    res = probability_flow_nll(model, data, sde=sde, num_levels=num_levels, seed=seed, args=args, all_ranks=all_ranks)
    return {**res, "method": f"probability-flow ODE of {type(sde).__name__}"}


def _implicit_result(model, data, site):
    """An implicit model (a GAN): no density; MMD^2 between its samples and the data."""
    from . import metrics
    from .programs import sample_program

    samples = sample_program(model, data.shape[0], site, like=data)
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    return {"mmd2": metrics.mmd2(flat(samples), flat(data)), "num_examples": data.shape[0],
            "method": "MMD^2 between model samples and the data (an implicit model has no density)"}


def _dispatch(model, data, guide, site, dev, num_levels, seed, log_normalizer, num_particles, all_ranks):
    """A finished result for score fields and implicit models; else ``(log Z or None, how, dimensions of the
    observed item y when the data site observes y of a batch (x, y), else None)``."""
    from .distributions import ScoreField, UnnormalizedDistribution

    x, args = split_batch(next(iter(batches_of(data, 500, dev))))
    with torch.no_grad():
        trace = trace_program(model, x, *args)
    name = resolve_site(trace, x, site, args)
    fn = trace.nodes[name]["fn"]
    if isinstance(fn, ScoreField) and isinstance(data, (torch.Tensor, tuple, list)):
        full, full_args = split_batch(data)  # (x, y) of a class-conditional field: labels go batch by batch
        return _score_field_result(model, full.to(dev), fn, num_levels, seed, tuple(
            a.to(dev) if isinstance(a, torch.Tensor) else a for a in full_args), all_ranks)
    if guide is None and latent_sites(trace) and _implicit(fn) and isinstance(data, torch.Tensor):
        with torch.no_grad():
            return _implicit_result(model, data.to(dev), name)
    item = observed_item(trace.nodes[name], x, args)  # model(x, y) with obs=y: bits per dimension of y
    dims = math.prod(args[item - 1].shape[1:]) if item else None
    if isinstance(fn, UnnormalizedDistribution) and isinstance(log_normalizer, str):
        full = data.to(dev) if isinstance(data, torch.Tensor) else x
        return (*estimate_log_normalizer(fn, full, log_normalizer), dims)
    if log_normalizer is not None:
        return float(log_normalizer), "exact energy, given log Z", dims
    if guide is None:
        return None, "exact", dims
    return None, _estimator_name(model, guide, x, args, name, num_particles), dims


def _estimator_name(model, guide, x, args, site, num_particles):
    # On a fork of the random state: naming the estimate must not change the draws that make it.
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        guide_trace = trace_program(guide, x, *args)
        replayed = trace_program(poutine.replay(model, trace=guide_trace), x, *args)
    plate = data_plate(replayed, site, x.shape[0])
    if plate is not None and global_latents(replayed, plate):
        return f"posterior predictive, K={num_particles} draws of the global latents"
    return f"IWAE, K={num_particles}"


def scores_of_batches(data, batch_size, dev, ranks, seed, score) -> tuple[torch.Tensor, torch.Size]:
    """``(score(x, args) of every batch, concatenated (float64, CPU), the shape of one example)``.

    Through :func:`~pyro_dgm.training.distributed.scored_in_turn`: this rank scores its share of the
    batches (of a loader sharded already by a DistributedSampler, all its own) and every rank returns
    them all.
    """
    sharded = isinstance(data, torch.utils.data.DataLoader) and isinstance(
        data.sampler, torch.utils.data.DistributedSampler)
    if ranks.world > 1 and isinstance(data, torch.utils.data.DataLoader) and not sharded and not (
            isinstance(data.sampler, torch.utils.data.SequentialSampler)
            and type(data.batch_sampler) is torch.utils.data.BatchSampler):
        raise ValueError(f"data: the ranks share a DataLoader's batches by position, so its order must be the "
                         f"same on every rank: this one's {type(data.sampler).__name__} (or its batch sampler) "
                         "may draw its own on each; pass shuffle=False, a DistributedSampler, or a tensor")
    shape = []  # of the first batch's examples, whichever rank scores it

    def batches():
        for batch in batches_of(data, batch_size, dev):
            x, args = split_batch(batch)
            shape.append(x.shape[1:])
            yield x, args

    values = scored_in_turn(ranks, seed, batches(), lambda batch: score(*batch), sharded)
    return values, shape[0]


def _nll_of_batches(model, data, guide, ranks, seed, log_normalizer, batch_size, num_particles, site, dev):
    """``(per-example NLL of all the data, dimensions of one example)``; this rank scores its batches."""
    def nll(x, args):
        if log_normalizer is not None:
            return -per_example_log_prob(trace_program(model, x, *args), x.shape[0])
        return -pointwise_log_likelihood(model, x, guide, num_particles, args, site)

    with torch.no_grad(), validation(False), eval_mode(modules_of(model, guide)):
        values, shape = scores_of_batches(data, batch_size, dev, ranks, seed, nll)
    return values, _event_dims(model, shape)


def _implicit(fn) -> bool:
    """A data site with no usable density (a GAN's Delta at G(z))."""
    return isinstance(fn, dist.Delta) or getattr(getattr(fn, "base_dist", None), "__class__", None) is dist.Delta


def _event_dims(model, shape):
    """Dimensions of one example: of the model's declared event shape, else of the data's ``shape``."""
    expected = expected_event_shape(model)
    return math.prod(expected if expected is not None else shape)


def evaluate(model, data, guide=None, num_particles: int = 1, *, batch_size: int = 500,
             log_normalizer: float | None = None, num_levels: int | None = None, site: str | None = None,
             device=None, seed: int | None = None, all_ranks: bool = False) -> dict:
    """Held-out negative log-likelihood of ``data`` under a model, with every module in eval mode.

    * No guide: the exact ``-log p(x)`` summed over the model's sample sites
      (every site must be observed). For an unnormalized model (an EBM) pass
      its ``log_normalizer`` (log Z), which is added to the NLL; without it
      an EBM is refused.
    * A guide, latents only per example (a VAE): the importance-weighted
      bound of Burda et al. (2016), ``-log (1/K) sum_k p(x, z_k) / q(z_k|x)``
      with K = ``num_particles`` samples from the guide; K = 1 is the ELBO.
    * A guide and global latents (outside the data plate): the posterior
      predictive density ``-log (1/K) sum_k p(x_i | theta_k)`` with
      ``theta_k ~ q(theta)`` (local latents, if any, importance-weighted with
      the same draw), the guide standing for the posterior of theta.

    A latent the guide leaves out is drawn from its prior (its p/q is 1); one
    marked for enumeration (``config_enumerate``, as TraceEnum_ELBO trains
    it) is summed out exactly.

    ``num_levels=L`` (data dequantized from L levels into [0, 1)) adds
    ``bits_per_dim_discrete``, the bits per dimension of the discrete data.
    Batches that are tuples ``(x, y, ...)`` call ``model(x, y, ...)``; where
    the data site observes ``y`` (a regression), bits are per dimension of y.
    ``device``: where the data goes ("cpu", "cuda", "cuda:N", "auto" as in
    :func:`pyro_dgm.fit`; default: the model's device).

    This is the one way to score any model; it dispatches on the
    distribution at the data site:

    * an exact density, with or without a guide: as above;
    * an unnormalized density (an EBM): ``log_normalizer`` is required, a
      number or ``"grid"`` / ``"ais"`` to estimate it
      (:func:`estimate_log_normalizer`);
    * a score field: its probability-flow ODE likelihood
      (:func:`pyro_dgm.inference.probability_flow_nll`);
    * an implicit model (latent sites, no guide, no density at the data site:
      a GAN): sample metrics instead (``mmd2``), for tensor data.

    The result has a ``method`` entry saying which.

    Under ``torchrun``, ``all_ranks=True`` says that every rank calls
    ``evaluate``: the ranks then share the work and return the same result.
    Rank r scores batches r, r + N, ... (of a DataLoader with a
    ``DistributedSampler``, its own batches) and the ranks gather the
    per-example values. Without a seed, the ranks draw from rank 0's seed,
    on a fork of the random state, so each rank's own stream (its training
    noise, when an EarlyStopping callback evaluates) goes on unchanged. The
    default, ``all_ranks=False``, scores all the data in the calling process
    with no collective, so a call on one rank alone (``if rank == 0:``) works;
    a call with ``all_ranks=True`` on only some ranks would wait for the
    others forever (an error on one rank is raised on all). With a ``seed``,
    batch i draws from a stream of its own (batch 0 from the seed itself), so
    for a tensor, a Dataset or an unshuffled DataLoader the result is the
    same on any number of ranks and in one process. A ``DistributedSampler``
    pads each rank's share to equal length by repeating examples; the
    repeats are scored too, as in torch's own evaluation loops.

    Returns a dict: ``nll`` (nats per example), ``nll_stderr`` (standard error
    over examples), ``bits_per_dim``, ``num_examples``, ``num_particles``
    (and ``bits_per_dim_discrete``).

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> x = torch.zeros(10, 4)
        >>> round(pyro_dgm.evaluate(FactorizedBernoulli(4).model, x)["nll"], 4)  # 4 log 2
        2.7726
    """
    count("num_particles", num_particles)
    if num_levels is not None:
        count("num_levels", num_levels, 2)
    if isinstance(data, torch.Tensor) and data.shape[0] == 0:
        raise ValueError("data: is empty; expected at least one example")
    dev = rank_device(device) if device is not None else device_of(model)
    ranks = of_the_group(dev) if all_ranks else OneProcess()
    with shared_seed(ranks, seed, dev) as seed:
        if seed is not None:
            torch.manual_seed(seed)
        with validation(False), eval_mode(modules_of(model, guide)):  # the probability flow needs gradients
            special = _dispatch(model, data, guide, site, dev, num_levels, seed, log_normalizer, num_particles,
                                all_ranks)
        if isinstance(special, dict):
            return special
        log_normalizer, how, observed_dims = special
        nll, dims = _nll_of_batches(model, data, guide, ranks, seed, log_normalizer, batch_size, num_particles,
                                    site, dev)
    if log_normalizer is not None:
        nll = nll + float(log_normalizer)
    mean = float(nll.mean())
    stderr = float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else float("nan")
    out = {"nll": mean, "nll_stderr": stderr, "bits_per_dim": to_bits_per_dim(mean, observed_dims or dims),
           "num_examples": nll.numel(), "num_particles": num_particles, "method": how}
    if log_normalizer is not None:
        out["log_normalizer"] = float(log_normalizer)
    if num_levels is not None:
        out["bits_per_dim_discrete"] = out["bits_per_dim"] + math.log2(num_levels)
    return out
