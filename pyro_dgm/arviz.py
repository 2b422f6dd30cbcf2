"""Conversion of fitted models and sampler chains to ArviZ.

Works with arviz 0.x (``InferenceData``) and 1.x (``DataTree``): both are
built by ``az.from_dict``, whose signature changed between them.
"""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import torch
from pyro import poutine

from .evaluation import per_example_log_prob
from .fit import _validation
from .programs import data_site, latent_sites

__all__ = ["to_arviz", "from_groups", "chains_to_arviz", "ARVIZ_MAJOR"]

ARVIZ_MAJOR = int(az.__version__.split(".")[0])


def _np(t):
    return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def from_groups(groups: dict, dims: dict | None = None, coords: dict | None = None):
    """``{group: {variable: array (chain, draw, ...)}}`` -> an ArviZ object of the installed version.

    ``observed_data`` variables carry no chain/draw dimensions.
    """
    groups = {g: {k: _np(v) for k, v in vs.items()} for g, vs in groups.items() if vs}
    if ARVIZ_MAJOR >= 1:
        return az.from_dict(groups, dims=dims, coords=coords)
    return az.from_dict(**groups, dims=dims, coords=coords)


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


def to_arviz(model, guide=None, data=None, num_samples: int = 100, *, seed: int | None = None):
    """An ArviZ object describing a fitted model on ``data``.

    With a guide (a VAE), each example gets ``num_samples`` latent draws from
    q(z|x): groups ``posterior`` (dims ``chain, draw, example, <site>_dim``),
    ``posterior_predictive`` (x ~ p(x|z) for every draw), ``log_likelihood``
    (log p(x|z) per example and draw) and ``observed_data``. Without a guide,
    ``posterior_predictive`` holds ``num_samples`` model samples and
    ``log_likelihood`` the exact log p(x) per example (one draw).
    ``az.summary``, ``az.plot_posterior``, ``az.loo`` and ``az.compare`` read it.

    Example::

        >>> import torch, arviz as az
        >>> from pyro_dgm.models import VAE
        >>> vae = VAE(16, latent_dim=2, hidden=(8,))
        >>> idata = to_arviz(vae.model, vae.guide, torch.bernoulli(torch.rand(5, 16)), num_samples=10)
        >>> idata.posterior["z"].shape
        (1, 10, 5, 2)
    """
    if data is None or not isinstance(data, torch.Tensor) or data.shape[0] == 0:
        raise ValueError("data: expected a non-empty tensor (N, *event_shape)")
    if seed is not None:
        torch.manual_seed(seed)
    x = data
    n = x.shape[0]
    event_dims = [f"x_dim{i}" for i in range(x.dim() - 1)] if x.dim() > 2 else ["x_dim"]
    dims = {"x": ["example", *event_dims]}
    with torch.no_grad(), _validation(False):
        if guide is None:
            trace = poutine.trace(model).get_trace(x)
            data_site(trace)
            log_lik = per_example_log_prob(trace, n).reshape(1, 1, n)
            samples = poutine.trace(model).get_trace(None, num_samples=num_samples).nodes["x"]["value"]
            groups = {
                # model samples are not tied to examples: their own variable and dims
                "posterior_predictive": {"x_sample": samples.reshape(1, num_samples, *samples.shape[1:])},
                "log_likelihood": {"x": log_lik},
                "observed_data": {"x": x},
            }
            return from_groups(groups, dims={"x": ["example", *event_dims], "x_sample": event_dims})
        xr = x.repeat(num_samples, *([1] * (x.dim() - 1)))
        guide_trace = poutine.trace(guide).get_trace(xr)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(xr)
        predictive = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            None, num_samples=xr.shape[0]).nodes["x"]["value"]
    posterior = {}
    for name in latent_sites(guide_trace):
        v = guide_trace.nodes[name]["value"].reshape(num_samples, n, -1)
        posterior[name] = v.unsqueeze(0)
        dims[name] = ["example", f"{name}_dim"]
    lp = data_site(model_trace)
    log_lik = lp["fn"].log_prob(lp["value"]).reshape(1, num_samples, n)
    groups = {
        "posterior": posterior,
        "posterior_predictive": {"x": predictive.reshape(1, num_samples, *x.shape)},
        "log_likelihood": {"x": log_lik},
        "observed_data": {"x": x},
    }
    return from_groups(groups, dims=dims)

