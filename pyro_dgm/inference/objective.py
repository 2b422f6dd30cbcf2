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

import contextlib

from torch import nn

from ..programs import (DataPlateScale, data_site, device_of, latent_sites, modules_of,
                        program_modules, sample_program, sample_sites, split_batch, trace_program)

__all__ = ["Objective", "modules_of", "trace_program", "data_site", "sample_program", "sample_sites",
           "latent_sites", "device_of", "split_batch"]


class Objective:
    """Base class: one parameter group, ``"model"``, updated on every batch.

    ``fit`` sets, before ``setup``: ``site`` (the name of the data site),
    ``num_data`` (N, the number of training examples, or None) and, before
    every ``loss``, ``args``: the further items of the batch ``(x, y, ...)``,
    which the programs receive after ``x`` (``program(x, *args)``). Objectives
    call programs through :meth:`trace`, :meth:`sample` and :meth:`scaled`
    so that all three are honoured.
    """

    site = "x"
    args = ()
    num_data = None
    plate = None  # the data plate's name, when minibatches must be scaled by N/B (see DataPlateScale)
    subsampled = False  # the program subsamples its data plate of size N itself: Pyro counts it N/B times
    double_backward = False  # the loss differentiates a gradient (torch.compile cannot train it)

    def setup(self, model, guide, batch):
        self.model, self.guide = model, guide
        self._modules = program_modules(model, guide, batch, self.args)

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

    # -- running the programs --------------------------------------------------
    def trace(self, program, x):
        """The trace of ``program(x, *self.args)``."""
        return trace_program(program, x, *self.args)

    def data_fn(self, program, x):
        """The distribution at the data site of ``program`` run on ``x``."""
        return data_site(self.trace(program, x), self.site)["fn"]

    def sample(self, program, n, like=None):
        """``n`` draws of the data site of ``program`` (see :func:`pyro_dgm.programs.sample_program`)."""
        return sample_program(program, n, self.site, like=like, args=self.args, grad=True)

    def scaled(self):
        """A context in which the data plate counts N/B times (nothing when no scaling is needed)."""
        if self.plate is None or self.num_data is None:
            return contextlib.nullcontext()
        return DataPlateScale(self.plate, self.num_data)

    def examples(self, x) -> int:
        """What a loss is divided by to be per example: N where the batch counts N/B times (under
        :meth:`scaled`, or in a plate the program subsamples), else the batch size."""
        whole = self.num_data is not None and (self.plate is not None or self.subsampled)
        return self.num_data if whole else x.shape[0]

    def __repr__(self):
        return f"{type(self).__name__}()"




