"""One optimizer (and scheduler) per parameter group, from what a user may pass as ``optimizer=``."""

from __future__ import annotations

import functools

import torch

__all__ = ["check_optimizer", "check_scheduling", "build_optimizers", "per_group", "unique"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def check_optimizer(optimizer):
    """A torch optimizer class or factory for ``optimizer``, or a ValueError naming it.

    Accepts a name, a ``torch.optim.Optimizer`` subclass, a callable
    ``(params, lr, **kw)``, or one of Pyro's ``pyro.optim`` wrappers
    (``pyro.optim.Adam({"lr": 1e-3})``, ``ClippedAdam``): its torch class and
    options are used for one optimizer per group, as fit builds them.
    """
    from pyro.optim import PyroOptim

    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer: unknown name {optimizer!r}; expected one of {sorted(OPTIMIZERS)} "
                             "or a torch.optim class")
        return OPTIMIZERS[optimizer.lower()]
    if isinstance(optimizer, PyroOptim):
        options = optimizer.pt_optim_args
        if callable(options):
            raise ValueError("optimizer: pyro.optim with per-parameter options (a callable) is not supported by "
                             "fit; give a dict of options, or lr=/optimizer_kwargs= keyed by parameter group")
        return functools.partial(_from_pyro_optim, optimizer.pt_optim_constructor, dict(options))
    if isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer: got an optimizer instance ({type(optimizer).__name__}); fit builds one "
                         "per parameter group: pass its class (e.g. torch.optim.Adam) and optimizer_kwargs")
    if isinstance(optimizer, type) and not issubclass(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer: {optimizer.__name__} is not a torch.optim.Optimizer")
    if not callable(optimizer):
        raise ValueError(f"optimizer: expected a name, a torch.optim class, a pyro.optim optimizer or a "
                         f"callable (params, lr, **kw) -> Optimizer; got {type(optimizer).__name__}")
    return optimizer


def check_scheduling(optimizer, scheduler):
    """``(optimizer, scheduler)`` as fit builds them per group, from what was passed as ``optimizer=``
    and ``scheduler=``; a ValueError for a bad scheduler.

    ``optimizer=`` may be one of Pyro's schedulers, as ``SVI`` takes it
    (``pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args":
    {"lr": 1e-2}, "gamma": 0.9})``): its torch optimizer and options, and its
    torch scheduler with the remaining options, stepped as ``scheduler_every``
    says (every epoch by default, where an SVI loop calls ``scheduler.step()``).
    """
    from pyro.optim.lr_scheduler import PyroLRScheduler

    if isinstance(scheduler, PyroLRScheduler):
        raise ValueError("scheduler: a pyro.optim scheduler brings its own optimizer; pass it as optimizer= (as "
                         "SVI takes it), or give scheduler=lambda opt: <a torch.optim.lr_scheduler on opt>")
    if scheduler is not None and not callable(scheduler) and not isinstance(scheduler, dict):
        raise ValueError(f"scheduler: expected a callable optimizer -> LRScheduler (or a dict of them by parameter "
                         f"group), got {type(scheduler).__name__}")
    if isinstance(optimizer, PyroLRScheduler):
        if scheduler is not None:
            raise ValueError("scheduler: optimizer= is a pyro.optim scheduler, which has its own; give one of them")
        scheduler = functools.partial(_from_pyro_scheduler, optimizer.pt_scheduler_constructor,
                                      dict(optimizer.kwargs))
        optimizer = functools.partial(_from_pyro_optim, optimizer.pt_optim_constructor,
                                      dict(optimizer.pt_optim_args))
    return check_optimizer(optimizer), scheduler


def _from_pyro_scheduler(constructor, options, optimizer):
    return constructor(optimizer, **options)


def _from_pyro_optim(constructor, options, params, lr=None, **kwargs):
    options = {**options, **kwargs}
    if lr is not None:
        options["lr"] = lr
    return constructor(params, **options)


def _make_optimizer(optimizer, params, lr, kwargs):
    kwargs = dict(kwargs or {})
    if lr is None:
        if isinstance(optimizer, functools.partial) and optimizer.func is _from_pyro_optim:
            return optimizer(params, **kwargs)  # the pyro.optim options' own lr
        lr = 1e-3
    if optimizer in _FUSABLE and "foreach" not in kwargs and "fused" not in kwargs:
        # The fused kernel updates every tensor in one pass: on a 784-400-20 VAE
        # its Adam step takes 0.34 ms against 1.13 ms (foreach) and 1.40 ms (the
        # CPU default). Older torch or unusual parameters fall back to foreach.
        try:
            return optimizer(params, lr=lr, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            kwargs["foreach"] = True
    return optimizer(params, lr=lr, **kwargs)


def per_group(value, group, what, groups=()):
    """``value[group]`` when ``value`` is a dict keyed by group names, else ``value`` itself."""
    # A dict is per group only when its keys name groups: {"betas": ...} is one optimizer's options.
    if isinstance(value, dict) and not set(value).isdisjoint(groups):
        if group not in value:
            raise ValueError(f"{what}: no entry for parameter group {group!r} in {sorted(value)}")
        return value[group]
    return value


def build_optimizers(groups, optimizer, lr, optimizer_kwargs, scheduler):
    """One optimizer (and scheduler, if asked) per parameter group; a ValueError names bad options."""
    optimizers, schedulers = {}, {}
    for g, ms in groups.items():
        params = unique(p for m in ms for p in m.parameters() if p.requires_grad)
        if not params:
            raise ValueError(f"modules: parameter group {g!r} has no trainable parameters")
        options = per_group(optimizer_kwargs, g, "optimizer_kwargs", groups)
        try:
            optimizers[g] = _make_optimizer(optimizer, params, per_group(lr, g, "lr", groups), options)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"optimizer_kwargs: {options!r} do not fit the optimizer of group {g!r} "
                             f"({type(err).__name__}: {err})") from err
        sched = per_group(scheduler, g, "scheduler", groups) if scheduler is not None else None
        if sched is not None:
            schedulers[g] = sched(optimizers[g])
    return optimizers, schedulers


def unique(items):
    """``items`` without repeats (by identity), in order."""
    out, seen = [], set()
    for it in items:
        if id(it) not in seen:
            seen.add(id(it))
            out.append(it)
    return out
