"""Fitted Pyro programs and sampler chains as ArviZ objects; model comparison by held-out log p(x_i).

What ``log_likelihood`` holds decides what ArviZ's numbers mean, so
:func:`to_arviz` fills it as ArviZ assumes:

* a model with **global latents** theta (outside the data plate) and a guide
  q(theta): ``log p(x_i | theta_s)`` for S draws ``theta_s ~ q``, shape
  ``(1, S, N)``. ``az.loo`` is then PSIS-LOO (Vehtari et al., 2017) over
  draws of the parameters, as it is for an MCMC fit.
* a model with **only per-example latents** (a VAE) or **no latents** (an
  autoregressive model, a flow): there are no parameter draws, and PSIS-LOO
  over draws of z from q(z|x_i) would be a harmonic-mean estimate, biased
  high (by 2-3 nats per example on a linear-Gaussian model). ``log_likelihood``
  holds instead one per-example held-out estimate of ``log p(x_i)``, exact or
  importance-weighted (Burda et al., 2016), shape ``(1, 1, N)``.

:func:`compare` ranks any mix of families by these per-example held-out
``log p(x_i)`` on test data, and returns ArviZ's own comparison table.
Works with arviz 0.x (``InferenceData``, pandas-based ``ELPDData``) and 1.x
(``DataTree``, the ``arviz_stats`` dataclass).
"""

from __future__ import annotations

import dataclasses
import math

import arviz as az
import numpy as np
import torch
import xarray as xr
from pyro import poutine

from .distributions import UnnormalizedDistribution
from .evaluation import (_in_plate, _log_p, _refuse_unscorable, _summed_out, estimate_log_normalizer,
                         per_example_log_prob, pointwise_log_likelihood, scores_of_batches, weighted_sites)
from .runtime import batches_of, eval_mode, on_device, repeat_rows, validation
from .checks import count
from .deprecation import renamed
from .programs import (data_plate, device_of, global_latents, latent_sites, modules_of, observed_item,
                       predictive_trace, resolve_site, sample_program, split_batch, trace_program)
from .training.distributed import OneProcess, of_the_group, shared_seed

__all__ = ["to_arviz", "compare", "held_out_log_likelihood", "elpd_data", "from_groups", "chains_to_arviz",
           "ARVIZ_MAJOR"]

ARVIZ_MAJOR = int(az.__version__.split(".")[0])


def _np(t):
    return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def from_groups(groups: dict, dims: dict | None = None, coords: dict | None = None, attrs: dict | None = None):
    """``{group: {variable: array (chain, draw, ...)}}`` -> an ArviZ object of the installed version.

    ``observed_data`` variables carry no chain/draw dimensions; ``attrs`` is
    ``{group: {name: value}}``, attributes of those groups.

    Example::

        >>> import numpy as np
        >>> idata = from_groups({"posterior": {"mu": np.zeros((1, 5))}})
        >>> idata.posterior["mu"].shape
        (1, 5)
    """
    groups = {g: {k: _np(v) for k, v in vs.items()} for g, vs in groups.items() if vs}
    attrs = {g: a for g, a in (attrs or {}).items() if g in groups}
    if ARVIZ_MAJOR >= 1:
        return az.from_dict(groups, dims=dims, coords=coords, attrs=attrs)
    return az.from_dict(**groups, dims=dims, coords=coords, **{f"{g}_attrs": a for g, a in attrs.items()})


def chains_to_arviz(samples: torch.Tensor, name: str = "x", extra: dict | None = None):
    """Sampler output ``(chains, draws, *shape)`` -> ArviZ posterior, for r_hat and ESS.

    Example::

        >>> import torch
        >>> idata = chains_to_arviz(torch.randn(4, 100, 2))
        >>> sorted(idata.posterior["x"].dims)
        ['chain', 'draw', 'x_dim']
    """
    if samples.dim() < 2:
        raise ValueError(f"samples: expected shape (chains, draws, ...), got {tuple(samples.shape)}")
    dims = {name: [f"{name}_dim{i}" if samples.dim() > 3 else f"{name}_dim" for i in range(samples.dim() - 2)]}
    groups = {"posterior": {name: samples}}
    if extra:
        groups["sample_stats"] = extra
    return from_groups(groups, dims=dims)


# -- ArviZ's ELPD objects from per-example values ---------------------------------
@renamed(n_samples="num_samples")
def elpd_data(pointwise, num_samples: int = 1):
    """ArviZ's ELPD object for per-example held-out log densities ``log p(x_i)`` (nats), numpy only.

    ``elpd = sum_i log p(x_i)``, ``se = sqrt(N var_i log p(x_i))`` (as ArviZ
    computes them for PSIS-LOO), ``p`` = nan (no effective number of
    parameters is estimated), the values themselves as the pointwise array,
    scale ``"log"``. It is labelled ``loo``, the one kind ArviZ compares:
    held-out values on test data estimate what LOO estimates. ``az.compare``
    takes a dict of these.

    Example::

        >>> import arviz as az, numpy as np
        >>> a = elpd_data(np.array([-1.0, -2.0, -3.0]))
        >>> b = elpd_data(np.array([-2.0, -2.5, -3.0]))
        >>> list(az.compare({"b": b, "a": a}).index)  # elpd -6 beats -7.5
        ['a', 'b']
    """
    values = np.asarray(pointwise, dtype=float).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"pointwise: expected finite per-example log densities, got {values.size} values "
                         f"({int(np.sum(~np.isfinite(values)))} not finite)")
    n = values.size
    elpd, se = float(values.sum()), float(math.sqrt(n * values.var()))
    if ARVIZ_MAJOR >= 1:
        return _elpd_dataclass(values, elpd, se, num_samples)
    from arviz.stats.stats_utils import ELPDData

    pointwise_da = xr.DataArray(values, dims=["example"], name="loo_i")
    return ELPDData(data=[elpd, se, float("nan"), num_samples, n, False, pointwise_da, "log", 0.7],
                    index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "scale",
                           "good_k"])


def _elpd_dataclass(values, elpd, se, n_samples):
    """arviz_stats' ELPDData: ``ELPDDataLOO`` where it exists (1.3+), else ``ELPDData(kind="loo")`` (1.0-1.2)."""
    import arviz_stats.utils as azs

    cls = getattr(azs, "ELPDDataLOO", azs.ELPDData)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = dict(kind="loo", elpd=elpd, se=se, p=float("nan"), n_samples=n_samples, n_data_points=values.size,
                  scale="log", warning=False, good_k=0.7, elpd_i=xr.DataArray(values, dims=["example"]))
    return cls(**{k: v for k, v in kwargs.items() if k in fields})


def _compare_table(elpds: dict, method: str = "stacking"):
    """``az.compare`` over ELPD objects, unrounded, the same columns and signs on every arviz version.

    arviz 0.x names the columns after the criterion (``elpd_loo``, ``p_loo``),
    1.x does not (``elpd``, ``p``); ``elpd_diff`` is best minus this model on
    0.x and 1.0, this minus best from 1.3. Here: ``elpd``, ``p`` and
    ``elpd_diff = elpd - max(elpd)`` (<= 0) everywhere.
    """
    if ARVIZ_MAJOR >= 1:
        table = az.compare(elpds, method=method, round_to="none")
    else:
        table = az.compare(elpds, method=method)
    table = table.rename(columns={"elpd_loo": "elpd", "p_loo": "p"})
    table["elpd_diff"] = table["elpd"] - table["elpd"].max()
    return table


# -- running the programs -------------------------------------------------------
def _batch(data, device):
    x, _ = split_batch(data)
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"data: expected a non-empty tensor (N, *event_shape) or a tuple (x, y, ...) of them, "
                         f"got {got}")
    return split_batch(on_device(data, device))


def _check_scorable(fn, log_normalizer):
    if log_normalizer is None or not isinstance(fn, UnnormalizedDistribution):
        _refuse_unscorable(fn)


def _log_z(model, data, site, log_normalizer, dev):
    """log Z: the number given, or for "grid" / "ais" estimated as :func:`~pyro_dgm.evaluate` estimates it
    (on a tensor's rows, else on the first batch), once for all the batches."""
    if not isinstance(log_normalizer, str):
        return log_normalizer
    x, args = split_batch(on_device(data, dev) if isinstance(data, torch.Tensor) else
                          next(iter(batches_of(data, 500, dev))))
    with eval_mode(modules_of(model)), validation(False):
        with torch.no_grad():
            trace = trace_program(model, x, *args)
        fn = trace.nodes[resolve_site(trace, x, site, args)]["fn"]
        if not isinstance(fn, UnnormalizedDistribution):
            raise ValueError(f"log_normalizer: {log_normalizer!r} estimates the log Z of an unnormalized density; "
                             f"this model's data site holds a normalized one ({type(fn).__name__}), which needs none")
        return estimate_log_normalizer(fn, x, log_normalizer)[0]


def _held_out(model, guide, x, args, num_particles, site, log_normalizer):
    """Per-example held-out ``log p(x_i)`` (shape (batch,)): exact, IWAE, posterior predictive, or ``-E - log Z``."""
    if log_normalizer is None:
        return pointwise_log_likelihood(model, x, guide, num_particles, args, site)
    trace = trace_program(model, x, *args)
    _check_scorable(trace.nodes[resolve_site(trace, x, site, args)]["fn"], log_normalizer)
    if latent_sites(trace):
        raise ValueError(f"log_normalizer: only for a model without latents; this one has {latent_sites(trace)}")
    return per_example_log_prob(trace, x.shape[0]) - float(log_normalizer)


def _log_lik_given_globals(model, guide, guide_trace, x, args, plate, theta, local, num_particles):
    """``log p(x_i | theta)`` per example: the sum over the sites inside the data plate.

    No local latents: the model replayed on the guide's draw of theta. With
    local latents z_i, K = ``num_particles`` copies of the batch run at once
    with the globals held at ``theta`` (``poutine.condition``):
    ``log (1/K) sum_k p(x_i, z_ik | theta) / q(z_ik | x_i, theta)``. A local
    latent the guide leaves out is drawn from its prior (its p/q is 1), or,
    marked for enumeration (``config_enumerate``), summed out exactly.
    """
    n = x.shape[0]
    model_trace = trace_program(poutine.replay(model, trace=guide_trace), x, *args)
    drawn = set(_in_plate(model_trace, plate)) - set(weighted_sites(model_trace, guide_trace, plate))
    if not local and drawn <= set(_summed_out(model_trace, guide_trace, plate)):  # nothing left to sample
        return _log_p(model, model_trace, guide_trace, x, args, n, plate)
    k = num_particles
    xk, ak = repeat_rows(x, args, k)
    guide_k = trace_program(poutine.condition(guide, data=theta), xk, *ak)
    conditioned = poutine.condition(model, data=theta)
    model_k = trace_program(poutine.replay(conditioned, trace=guide_k), xk, *ak)
    log_w = (_log_p(conditioned, model_k, guide_k, xk, ak, k * n, plate)
             - per_example_log_prob(guide_k, k * n, local))
    return torch.logsumexp(log_w.reshape(k, n), 0) - math.log(k)


def _global_groups(model, guide, x, args, site, plate, names, num_samples, num_particles):
    """S draws theta_s ~ q: the posterior, ``log p(x_i | theta_s)`` and the posterior predictive."""
    draws, log_lik, predictive = {n: [] for n in names}, [], []
    for _ in range(num_samples):
        guide_trace = trace_program(guide, x, *args)
        theta = {n: guide_trace.nodes[n]["value"] for n in names}
        local = [n for n in _in_plate(guide_trace, plate) if not guide_trace.nodes[n]["is_observed"]]
        log_lik.append(_log_lik_given_globals(model, guide, guide_trace, x, args, plate, theta, local,
                                              num_particles))
        predictive.append(predictive_trace(model, guide_trace, x, args, site).nodes[site]["value"])
        for n in names:
            draws[n].append(theta[n])
    posterior = {n: torch.stack(v).unsqueeze(0) for n, v in draws.items()}
    return posterior, torch.stack(log_lik).unsqueeze(0), torch.stack(predictive).unsqueeze(0)


def _local_draws(model, guide, x, args, site, num_samples, shape):
    """S draws z_s ~ q(z|x_i) per example (as S copies of the batch; no guide: no z) and a draw of the
    data site (of ``shape``, the observed item's) for each."""
    n = x.shape[0]
    xr_, ar = repeat_rows(x, args, num_samples)
    guide_trace = trace_program(guide, xr_, *ar) if guide is not None else poutine.Trace()
    predictive = predictive_trace(model, guide_trace, xr_, ar, site).nodes[site]["value"]
    draws = {}
    for name in latent_sites(guide_trace):
        v = guide_trace.nodes[name]["value"]
        if v.dim() > 0 and v.shape[0] == num_samples * n:
            draws[name] = v.reshape(1, num_samples, n, *v.shape[1:])
    return draws, predictive.reshape(1, num_samples, *shape)


def _event_dims(prefix, ndim):
    return [f"{prefix}_dim"] if ndim == 1 else [f"{prefix}_dim{i}" for i in range(ndim)]


def to_arviz(model, guide=None, data=None, num_samples: int = 100, *, num_particles: int = 100,
             site: str | None = None, log_normalizer: float | None = None, seed: int | None = None):
    """An ArviZ object describing a fitted model on ``data``, with modules in eval mode.

    ``data`` is a tensor ``(N, *event_shape)`` or a batch ``(x, y, ...)``
    (the model is called ``model(x, y, ...)``). The data site is found as
    :func:`~pyro_dgm.programs.resolve_site` finds it (``site=`` to choose);
    its name is the ArviZ variable name. Groups:

    * **Global latents** (a guide whose latents lie outside the data plate):
      ``posterior`` holds S = ``num_samples`` draws ``theta_s ~ q(theta)``
      (1 chain, S draws); ``log_likelihood[site]`` holds ``log p(x_i |
      theta_s)``, shape (1, S, N), summed over the sites inside the data plate
      (local latents, if any, importance-weighted with ``num_particles``);
      ``posterior_predictive[site]`` holds x ~ p(x | theta_s). ``az.loo`` on
      it is PSIS-LOO over draws of the parameters.
    * **Only per-example latents** (a VAE; a guide) or **none** (no guide):
      ``log_likelihood[site]`` holds one held-out estimate of ``log p(x_i)``
      per example, shape (1, 1, N): exact without latents, the importance
      weighted bound with ``num_particles`` draws with them. These are not
      posterior draws; compare such models with :func:`compare` (or
      ``az.compare`` over :func:`elpd_data`), not ``az.loo``. For inspection,
      ``posterior`` holds the guide's per-example draws ``z ~ q(z|x_i)`` as
      ``<z>_given_<site>`` (dims ``chain, draw, example, <z>_dim``) and
      ``posterior_predictive[site]`` x ~ p(x|z) for each. Without latents,
      ``posterior_predictive[<site>_sample]`` holds ``num_samples`` model
      samples (not tied to examples: dims ``chain, draw, <site>_dim``).
    * ``observed_data[site]``: the data.

    An unnormalized density (an EBM) at the data site is scored ``-E(x) -
    log Z`` and needs ``log_normalizer=``: log Z, or ``"grid"`` / ``"ais"`` to
    estimate it as :func:`~pyro_dgm.evaluate` does; without it, a ValueError.

    Example::

        >>> import torch, arviz as az
        >>> from pyro_dgm.models import VAE
        >>> vae = VAE(16, latent_dim=2, hidden=(8,))
        >>> idata = to_arviz(vae.model, vae.guide, torch.bernoulli(torch.rand(5, 16)), num_samples=10,
        ...                  num_particles=8)
        >>> idata.posterior["z_given_x"].shape, idata.log_likelihood["x"].shape
        ((1, 10, 5, 2), (1, 1, 5))
    """
    if data is None:
        raise ValueError("data: expected a non-empty tensor (N, *event_shape), got None")
    count("num_samples", num_samples)
    count("num_particles", num_particles)
    x, args = _batch(data, device_of(model))
    with shared_seed(OneProcess(), seed, x.device) as seed:  # seeded: on a fork, the caller's stream untouched
        if seed is not None:
            torch.manual_seed(seed)
        log_normalizer = _log_z(model, x if not args else (x, *args), site, log_normalizer, x.device)
        return _arviz_groups(model, guide, x, args, num_samples, num_particles, site, log_normalizer)


def _arviz_groups(model, guide, x, args, num_samples, num_particles, site, log_normalizer):
    """The groups of :func:`to_arviz`, drawn from the current random state."""
    n = x.shape[0]
    with torch.no_grad(), validation(False), eval_mode(modules_of(model, guide)):
        trace = trace_program(model, x, *args)
        site = resolve_site(trace, x, site, args)
        _check_scorable(trace.nodes[site]["fn"], log_normalizer)
        item = observed_item(trace.nodes[site], x, args)  # model(x, y) with obs=y: y is the data
        y = args[item - 1] if item else x
        dims = {site: ["example", *_event_dims(site, y.dim() - 1)]}
        observed = {site: y}
        plate, names = None, []
        if guide is not None:
            replayed = trace_program(poutine.replay(model, trace=trace_program(guide, x, *args)), x, *args)
            plate = data_plate(replayed, site, n)
            names = global_latents(replayed, plate) if plate is not None else []
        if names:
            posterior, log_lik, predictive = _global_groups(model, guide, x, args, site, plate, names,
                                                            num_samples, num_particles)
            groups = {"posterior": posterior, "log_likelihood": {site: log_lik},
                      "posterior_predictive": {site: predictive}, "observed_data": observed}
            what = "log p(x_i | theta_s), theta_s ~ q(theta)"
            return from_groups(groups, dims=dims, attrs={"log_likelihood": {"pyro_dgm": what}})
        log_lik = _held_out(model, guide, x, args, num_particles, site, log_normalizer).reshape(1, 1, n)
        groups = {"log_likelihood": {site: log_lik}, "observed_data": observed}
        if guide is None and not item:
            samples = sample_program(model, num_samples, site, like=x, args=args)
            groups["posterior_predictive"] = {f"{site}_sample": samples.reshape(1, num_samples, *x.shape[1:])}
            dims[f"{site}_sample"] = _event_dims(site, x.dim() - 1)
        else:  # latents, or y given x: draws for each example
            draws, predictive = _local_draws(model, guide, x, args, site, num_samples, y.shape)
            groups["posterior"] = {f"{name}_given_{site}": v for name, v in draws.items()}
            dims.update({f"{name}_given_{site}": ["example", *_event_dims(name, v.dim() - 3)]
                         for name, v in draws.items()})
            groups["posterior_predictive"] = {site: predictive}
    what = "held-out log p(x_i) per example (exact or importance-weighted); not posterior draws"
    return from_groups(groups, dims=dims, attrs={"log_likelihood": {"pyro_dgm": what}})


# -- comparison -------------------------------------------------------------------
def _program_pair(name, value):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"models[{name!r}]: expected a model or a (model, guide) pair, got {len(value)} items")
        return value[0], value[1]
    if not callable(value):
        raise ValueError(f"models[{name!r}]: expected a model program or a (model, guide) pair, "
                         f"got {type(value).__name__}")
    return value, None


def held_out_log_likelihood(model, data, guide=None, *, num_particles: int = 100, batch_size: int = 500,
                            site: str | None = None, log_normalizer: float | None = None, seed: int | None = None,
                            all_ranks: bool = False) -> np.ndarray:
    """Per-example held-out ``log p(x_i)`` of ``data`` (nats, float64, shape (N,)), in eval mode.

    The estimates of :func:`~pyro_dgm.evaluate` (``nll`` is minus their mean):
    exact without latents, the importance-weighted bound with
    ``num_particles`` draws for per-example latents, the posterior predictive
    density for global latents; ``-E(x) - log Z`` with ``log_normalizer``.
    ``seed`` and ``all_ranks`` as in ``evaluate``: with ``all_ranks=True``
    (every rank calls it, under ``torchrun``) the ranks share the batches,
    and every rank returns all N values.

    Example::

        >>> import torch
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> held_out_log_likelihood(FactorizedBernoulli(3).model, torch.zeros(2, 3)).round(4)  # 3 log 1/2
        array([-2.0794, -2.0794])
    """
    count("num_particles", num_particles)
    count("batch_size", batch_size)
    dev = device_of(model)
    _batch(data, dev)  # the same checks of data as to_arviz
    ranks = of_the_group(dev) if all_ranks else OneProcess()
    with shared_seed(ranks, seed, dev) as seed:
        log_normalizer = _log_z(model, data, site, log_normalizer, dev)
        with torch.no_grad(), validation(False), eval_mode(modules_of(model, guide)):
            values, _ = scores_of_batches(data, batch_size, dev, ranks, seed, lambda x, args: _held_out(
                model, guide, x, args, num_particles, site, log_normalizer))
    return values.numpy()


def compare(models: dict, data, *, num_particles: int = 100, batch_size: int = 500, site: str | None = None,
            log_normalizers: dict | None = None, method: str = "stacking", seed: int | None = None,
            all_ranks: bool = False):
    """Rank models of any family by their held-out ``log p(x_i)`` on ``data``: ArviZ's comparison table.

    ``models`` maps a name to a model program (exact densities: flows,
    autoregressive models, baselines) or a ``(model, guide)`` pair (VAEs,
    models with global latents). Each gets the per-example estimates of
    :func:`held_out_log_likelihood` on the test ``data`` (``log_normalizers``:
    ``{name: log Z}`` for EBMs), turned into ArviZ's ELPD object by
    :func:`elpd_data`; the table is ``az.compare``'s (``method`` sets the
    weights), one row per model, best first, with the columns ``elpd``
    (the sum over examples), ``se``, ``elpd_diff`` (``elpd`` minus the best
    model's, <= 0, whatever sign the installed ArviZ uses), ``dse`` (standard
    error of the paired difference to the best model), ``weight``, and ``p``
    (nan: no effective number of parameters is estimated) among ArviZ's others.
    ``seed``: each model's estimates draw from the same seeded streams;
    ``all_ranks=True``: under ``torchrun`` every rank calls ``compare`` and
    the ranks share the batches, as in ``evaluate``.

    Example::

        >>> import torch
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> x = torch.bernoulli(torch.full((50, 4), 0.9))
        >>> fitted, flat = FactorizedBernoulli(4), FactorizedBernoulli(4)
        >>> with torch.no_grad():
        ...     _ = fitted.logits.fill_(2.0)
        >>> list(compare({"flat": flat.model, "fitted": fitted.model}, x).index)
        ['fitted', 'flat']
    """
    if not isinstance(models, dict) or not models:
        raise ValueError(f"models: expected a non-empty dict {{name: model or (model, guide)}}, got {models!r}")
    log_normalizers = log_normalizers or {}
    elpds = {}
    for name, value in models.items():
        model, guide = _program_pair(name, value)
        values = held_out_log_likelihood(model, data, guide, num_particles=num_particles, batch_size=batch_size,
                                         site=site, log_normalizer=log_normalizers.get(name), seed=seed,
                                         all_ranks=all_ranks)
        elpds[name] = elpd_data(values, num_samples=num_particles if guide is not None else 1)
    return _compare_table(elpds, method)
