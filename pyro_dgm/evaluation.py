"""Test log-likelihoods: exact for models with a density, importance-weighted for VAEs.

All numbers are in nats per example; ``bits_per_dim`` divides by
``D * log 2`` where D is the number of dimensions of one example.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine

from .fit import _first_tensor, _validation
from .inference.checks import count, expected_event_shape
from .inference.objective import data_site, device_of, latent_sites, sample_sites

__all__ = ["evaluate", "per_example_log_prob", "iwae_log_weights", "to_bits_per_dim"]


def to_bits_per_dim(nll_nats: float, dims: int) -> float:
    """Nats per example -> bits per dimension."""
    return nll_nats / (dims * math.log(2.0))


def per_example_log_prob(trace, batch_size: int, sites=None) -> torch.Tensor:
    """Sum of the log densities of ``sites`` (all sample sites by default), shape (batch,)."""
    total = torch.zeros(batch_size)
    for name in sample_sites(trace) if sites is None else sites:
        site = trace.nodes[name]
        lp = site["fn"].log_prob(site["value"])
        if lp.dim() == 0:
            raise ValueError(f"site {name!r} has no batch dimension; put it inside pyro.plate('data', N)")
        total = total.to(lp.device) + lp.reshape(batch_size, -1).sum(-1)
    return total


def iwae_log_weights(model, guide, x: torch.Tensor, num_particles: int, chunk: int = 64) -> torch.Tensor:
    """log w_k = log p(x, z_k) - log q(z_k|x) for z_k ~ q(z|x), shape (num_particles, batch)."""
    out = []
    b = x.shape[0]
    for start in range(0, num_particles, chunk):
        c = min(chunk, num_particles - start)
        xr = x.repeat(c, *([1] * (x.dim() - 1)))
        guide_trace = poutine.trace(guide).get_trace(xr)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(xr)
        log_q = per_example_log_prob(guide_trace, c * b, latent_sites(guide_trace))
        log_p = per_example_log_prob(model_trace, c * b)
        out.append((log_p - log_q).reshape(c, b))
    return torch.cat(out, 0)


def _event_dims(model, x):
    shape = expected_event_shape(model)
    return math.prod(shape) if shape is not None else math.prod(x.shape[1:])


def _batches(data, batch_size, device):
    if isinstance(data, torch.Tensor):
        for i in range(0, data.shape[0], batch_size):
            yield data[i:i + batch_size].to(device)
    else:
        loader = data if isinstance(data, torch.utils.data.DataLoader) else torch.utils.data.DataLoader(
            data, batch_size=batch_size)
        for batch in loader:
            yield _first_tensor(batch).to(device)


def evaluate(model, data, guide=None, num_particles: int = 1, *, batch_size: int = 500,
             log_normalizer: float | None = None, device=None, seed: int | None = None) -> dict:
    """Test negative log-likelihood of ``data`` under a model.

    * No guide: the exact ``-log p(x)`` summed over the model's sample sites
      (every site must be observed). For an unnormalized model (an EBM) pass
      its ``log_normalizer`` (log Z), which is added to the NLL.
    * A guide: the importance-weighted bound of Burda et al. (2016),
      ``-log (1/K) sum_k p(x, z_k) / q(z_k|x)`` with K = ``num_particles``
      samples from the guide; K = 1 is the ELBO, and the bound tightens as K grows.

    Returns a dict: ``nll`` (nats per example), ``nll_stderr`` (standard error
    over examples), ``bits_per_dim``, ``num_examples``, ``num_particles``.

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> x = torch.zeros(10, 4)
        >>> round(pyro_dgm.evaluate(FactorizedBernoulli(4).model, x)["nll"], 4)  # 4 log 2
        2.7726
    """
    count("num_particles", num_particles)
    if isinstance(data, torch.Tensor) and data.shape[0] == 0:
        raise ValueError("data: is empty; expected at least one example")
    if seed is not None:
        torch.manual_seed(seed)
    dev = torch.device(device) if device is not None else device_of(model)
    values, dims = [], None
    with torch.no_grad(), _validation(False):
        for x in _batches(data, batch_size, dev):
            dims = dims or _event_dims(model, x)
            if guide is None:
                trace = poutine.trace(model).get_trace(x)
                data_site(trace)
                latent = latent_sites(trace)
                if latent:
                    raise ValueError(f"guide: the model has latent sites {latent}; pass a guide for the IWAE bound")
                values.append(-per_example_log_prob(trace, x.shape[0]))
            else:
                log_w = iwae_log_weights(model, guide, x, num_particles)
                values.append(-(torch.logsumexp(log_w, 0) - math.log(num_particles)))
    nll = torch.cat(values).double().cpu()
    if log_normalizer is not None:
        nll = nll + float(log_normalizer)
    mean = float(nll.mean())
    stderr = float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else float("nan")
    return {"nll": mean, "nll_stderr": stderr, "bits_per_dim": to_bits_per_dim(mean, dims),
            "num_examples": nll.numel(), "num_particles": num_particles}

