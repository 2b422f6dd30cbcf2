"""The objective protocol that :func:`pyro_dgm.fit` trains against.

An objective turns a Pyro program (a model with a sample site ``"x"`` and an
optional guide) into losses. It owns *what* is minimized; :func:`pyro_dgm.fit`
owns *how* (batching, optimizers, devices, checkpoints, logging). No objective
contains a training loop.

The protocol, in the order ``fit`` calls it:

1. ``setup(model, guide, batch)`` once, before training, on a small first
   batch. Validate the program against the data here (raise ``ValueError``)
   and find the modules to train.
2. ``param_groups()`` -> ``{group name: [nn.Module, ...]}``. ``fit`` builds one
   optimizer per group. A GAN has ``{"generator": [...], "critic": [...]}``.
3. For every batch, ``groups_for_step(step)`` -> the group names to update on
   this batch, in order (a WGAN returns ``["critic"]`` on most batches and
   ``["critic", "generator"]`` every ``n_critic``-th).
4. For each of those groups, ``loss(group, batch)`` -> a scalar tensor, or a
   dict of named scalar terms whose sum is minimized (the names appear in the
   loss history and in NaN errors). ``fit`` calls ``backward`` and steps the
   group's optimizer, then ``after_step(group)`` (weight clipping, replay
   buffers).
5. ``state_dict()`` / ``load_state_dict()``: state that is not a module
   parameter (a replay buffer) and must survive a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from pyro import poutine
from pyro.poutine.util import site_is_subsample

__all__ = ["Objective", "modules_of", "trace_program", "data_site", "sample_program", "sample_sites",
           "latent_sites", "device_of"]


class Objective:
    """Base class: one parameter group, ``"model"``, updated on every batch."""

    def setup(self, model, guide, batch):
        self.model, self.guide = model, guide
        self._modules = modules_of(model, guide)

    def param_groups(self) -> dict[str, list[nn.Module]]:
        return {"model": self._modules}

    def groups_for_step(self, step: int) -> list[str]:
        return list(self.param_groups())

    def loss(self, group: str, batch):
        raise NotImplementedError(f"{type(self).__name__} must define loss(group, batch)")

    def after_step(self, group: str) -> None:
        """Called after the optimizer of ``group`` stepped."""

    def state_dict(self) -> dict:
        """Non-parameter state to checkpoint (a replay buffer); none by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; nothing by default."""

    def __repr__(self):
        return f"{type(self).__name__}()"


def _module_of(program):
    if isinstance(program, nn.Module):
        return program
    owner = getattr(program, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner
    return None


def modules_of(*programs) -> list[nn.Module]:
    """The ``nn.Module``\\ s that own the given programs, without repeats.

    A program is an ``nn.Module`` (called through ``forward``) or a bound
    method of one (``vae.model``). Plain functions own no parameters; pass
    their modules to ``fit(..., modules=[...])`` instead.
    """
    found, seen = [], set()
    for program in programs:
        if program is None:
            continue
        module = _module_of(program)
        if module is not None and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def device_of(obj) -> torch.device:
    """The device of the module behind ``obj`` (a module or a bound method of one); CPU otherwise."""
    module = _module_of(obj)
    if module is not None:
        for t in list(module.parameters()) + list(module.buffers()):
            return t.device
    return torch.device("cpu")


def trace_program(program, *args, **kwargs) -> poutine.Trace:
    """Run ``program`` under ``poutine.trace`` and return its trace."""
    return poutine.trace(program).get_trace(*args, **kwargs)


def sample_sites(trace: poutine.Trace) -> list[str]:
    """Names of the sample sites of a trace (plates' subsample sites left out)."""
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]


def latent_sites(trace: poutine.Trace) -> list[str]:
    """Names of the unobserved sample sites of a trace."""
    return [n for n in sample_sites(trace) if not trace.nodes[n]["is_observed"]]


def data_site(trace: poutine.Trace, name: str = "x") -> dict:
    """The site ``name`` of a trace, with a clear error when the program has none."""
    if name not in trace.nodes:
        sites = sample_sites(trace)
        raise ValueError(
            f"the program has no sample site {name!r} for the data; "
            f"its sample sites are {sites}. Name the data site 'x'."
        )
    return trace.nodes[name]


def sample_program(model, num_samples: int, site: str = "x") -> torch.Tensor:
    """Draw ``num_samples`` values of site ``"x"`` by running the program forward.

    Programs follow the convention ``model(x=None, num_samples=None)``.
    """
    with torch.no_grad():
        trace = trace_program(model, None, num_samples=num_samples)
    return data_site(trace, site)["value"]

