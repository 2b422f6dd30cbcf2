"""The small pieces every entry point shares: the validation switch, batches on a device, eval mode.

``fit``, ``evaluate``, ``to_arviz``/``compare`` and the callbacks import
these from here, so no module reaches into another's private helpers.
"""

from __future__ import annotations

import contextlib

import pyro
import torch

from .programs import split_batch

__all__ = ["validation", "on_device", "check_finite", "eval_mode", "batches_of", "repeat_rows"]


@contextlib.contextmanager
def validation(enabled: bool):
    """Pyro's and torch's distribution argument checks on or off inside; both restored after.

    ``fit`` checks the program once with them on, then trains with them off:
    validating every step costs time and finds nothing new.
    """
    old = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(enabled)
    try:
        with pyro.validation_enabled(enabled):
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(old)


def on_device(batch, device):
    """A batch (a tensor, or a tuple ``(x, y, ...)`` whose first item is one) with its tensors on ``device``."""
    x, args = split_batch(batch)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"data: batches must be tensors (or tuples whose first item is one), got {type(x).__name__}")
    x = x.to(device, non_blocking=True)
    if not args:
        return x
    return (x, *(a.to(device, non_blocking=True) if isinstance(a, torch.Tensor) else a for a in args))


def check_finite(x: torch.Tensor, what: str = "data") -> None:
    """A ValueError naming ``what`` if ``x`` is empty or holds a NaN or infinite value."""
    if x.numel() == 0 or x.shape[0] == 0:
        raise ValueError(f"{what}: is empty (shape {tuple(x.shape)}); expected at least one example")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what}: contains {n} NaN or infinite value(s); expected finite numbers")


def _rows(item, start, stop):
    return item[start:stop] if isinstance(item, torch.Tensor) and item.dim() > 0 else item


def batches_of(data, batch_size: int, device):
    """Batches of ``data`` on ``device``, in order: a tensor, a tuple ``(x, y, ...)`` of tensors
    (sliced together), a ``Dataset`` or a ``DataLoader``."""
    if isinstance(data, (torch.Tensor, tuple, list)):
        x, _ = split_batch(data)
        for i in range(0, x.shape[0], batch_size):
            batch = _rows(data, i, i + batch_size) if isinstance(data, torch.Tensor) else \
                tuple(_rows(item, i, i + batch_size) for item in data)
            yield on_device(batch, device)
        return
    loader = data if isinstance(data, torch.utils.data.DataLoader) else torch.utils.data.DataLoader(
        data, batch_size=batch_size)
    for batch in loader:
        yield on_device(batch, device)


def repeat_rows(x: torch.Tensor, args, k: int):
    """``k`` copies of a batch stacked along the batch dimension: ``(x, args)`` for K particles at once."""
    def rep(t):
        return t.repeat(k, *([1] * (t.dim() - 1))) if isinstance(t, torch.Tensor) and t.dim() > 0 else t

    return rep(x), tuple(rep(a) for a in args)


@contextlib.contextmanager
def eval_mode(modules):
    """Modules in eval mode inside (a MADE's ensemble, batch norm's running statistics), restored after."""
    modes = [(m, m.training) for m in modules]
    try:
        for m, _ in modes:
            m.eval()
        yield
    finally:
        for m, mode in modes:
            m.train(mode)
