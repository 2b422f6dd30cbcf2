"""Checks that a program and a batch of data fit together, run once before training."""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints

from .programs import data_site, module_of as _module_of, trace_program


def positive(name: str, value) -> float:
    """``value`` as a float if it is a finite number > 0, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def count(name: str, value, least: int = 1) -> int:
    """``value`` if it is an integer >= ``least``, else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
    return value


def as_event_shape(value, name: str = "event_shape") -> torch.Size:
    """``value`` (a positive int, or a non-empty sequence of them) as a ``torch.Size``, else a ValueError."""
    shape = (value,) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list, torch.Size)) else ()
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"{name}: expected a positive int or a tuple of positive ints, got {value!r}")
    return torch.Size(shape)


def widths(name: str, value, allow_empty: bool = False) -> tuple:
    """Hidden-layer widths given as an int or a sequence of ints >= 1, as a tuple; else a ValueError."""
    sizes = (value,) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if sizes is None or (not sizes and not allow_empty) or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes):
        raise ValueError(f"{name}: expected an integer >= 1 or a {'' if allow_empty else 'non-empty '}"
                         f"sequence of them, got {value!r}")
    return sizes


def expected_event_shape(model):
    """The data shape a model declares through an ``event_shape`` attribute, if any."""
    module = _module_of(model)
    shape = getattr(module if module is not None else model, "event_shape", None)
    return None if shape is None else torch.Size(shape)


def check_batch_shape(model, batch: torch.Tensor) -> None:
    shape = expected_event_shape(model)
    if shape is not None and tuple(batch.shape[1:]) != tuple(shape):
        raise ValueError(
            f"data: each example has shape {tuple(batch.shape[1:])}, but the model "
            f"expects examples of shape {tuple(shape)} (data is (batch, *event_shape))"
        )


def trace_on_batch(model, batch: torch.Tensor, args=()):
    """Trace the model on ``batch``, turning shape errors inside it into a ValueError."""
    check_batch_shape(model, batch)
    try:
        return trace_program(model, batch, *args)
    except RuntimeError as err:  # e.g. a Linear layer fed the wrong width
        raise ValueError(
            f"data: the model failed on a batch of shape {tuple(batch.shape)}: {err}"
        ) from err


def bounded_support(site: dict) -> bool:
    """Whether the data site's distribution has a support that :func:`check_support` can check."""
    support = getattr(site["fn"], "support", None)
    return support is not None and support is not constraints.real


def check_support(site: dict, batch: torch.Tensor) -> None:
    """Every data value must lie in the support of the distribution at the data site (NaN never does)."""
    fn = site["fn"]
    support = getattr(fn, "support", None)
    if not bounded_support(site):
        return
    try:
        ok = support.check(batch)
    except (NotImplementedError, RuntimeError):
        return
    if not bool(torch.as_tensor(ok).all()):
        if batch.is_floating_point() and not bool(torch.isfinite(batch).all()):
            n = int((~torch.isfinite(batch)).sum())
            raise ValueError(f"data: contains {n} NaN or infinite value(s); expected finite numbers")
        bad = batch[~_broadcast_ok(ok, batch)]
        shown = bad.flatten()[:5].tolist()
        raise ValueError(
            f"data: values {shown} lie outside the support of the model's "
            f"distribution at site {site['name']!r} ({type(fn).__name__}, support {support}); "
            + ("binarize the data (pyro_dgm.data.binarize) for a Bernoulli likelihood"
               if _is_boolean(support) else "transform the data into that support")
        )


def _is_boolean(support) -> bool:
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return support is constraints.boolean


def _broadcast_ok(ok, batch):
    ok = torch.as_tensor(ok)
    while ok.dim() < batch.dim():
        ok = ok.unsqueeze(-1)
    return ok.expand_as(batch)


def check_program_on_batch(model, batch: torch.Tensor, site: str = "x", args=()):
    """Trace ``model`` on ``batch`` and validate its data site; return the trace."""
    trace = trace_on_batch(model, batch, args)
    node = data_site(trace, site)
    value = node["value"]
    if value.dim() == 0 or value.shape[0] != batch.shape[0]:
        raise ValueError(
            f"data: batch of shape {tuple(batch.shape)} does not match the shape "
            f"{tuple(value.shape)} of the model's site {site!r}"
        )
    check_support(node, value)
    return trace
