"""Callbacks for :func:`pyro_dgm.fit`: objects with ``on_step_end(state)`` / ``on_epoch_end(state)``."""

from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .evaluation import evaluate
from .runtime import eval_mode, on_device, validation
from .programs import split_batch
from .checks import count

__all__ = ["EarlyStopping", "WeightAverage", "validation_loss"]


def validation_loss(objective, data, batch_size: int = 500, group: str | None = None) -> float:
    """The objective's loss on ``data`` (no gradients, modules in eval mode), averaged over examples.

    ``data`` is a tensor or a tuple ``(x, y, ...)`` of tensors, as fit's
    batches are. Eval mode matters: a MADE then scores its ensemble of
    orderings, batch norm uses its running statistics.
    """
    group = group or next(iter(objective.param_groups()))
    x_all, rest = split_batch(data)
    total, n, saved_args = 0.0, 0, objective.args
    try:
        with torch.no_grad(), validation(False), eval_mode(objective.param_groups()[group]):
            for i in range(0, x_all.shape[0], batch_size):
                x = x_all[i:i + batch_size]
                objective.args = tuple(a[i:i + batch_size] if isinstance(a, torch.Tensor) and a.dim() else a
                                       for a in rest)
                out = objective.loss(group, x)
                value = sum(out.values()) if isinstance(out, dict) else out
                total += float(value) * x.shape[0]
                n += x.shape[0]
    finally:
        objective.args = saved_args
    return total / n


MONITORS = ("loss", "nll")


class EarlyStopping:
    """Stop when a validation estimate has not improved for ``patience`` epochs.

    Args:
        data: validation tensor, or tuple ``(x, y, ...)`` (moved to the training device).
        patience: epochs without an improvement larger than ``min_delta``.
        restore_best: load the best modules' weights back when training ends.
        monitor: what is watched (lower is better): ``"loss"``, the
            objective's own loss on ``data`` (for a VAE the 1-sample ELBO, which
            swings by tenths of a nat on a small split); ``"nll"``,
            :func:`pyro_dgm.evaluate`'s NLL of ``data`` (with a guide, the
            importance-weighted bound with ``num_particles`` samples); or a
            callable ``monitor(state) -> float``.
        num_particles: importance samples of the ``"nll"`` monitor.
        average: a :class:`WeightAverage` of the model: each epoch scores
            the average instead of the live weights, and ``restore_best``
            keeps the best average (so the WeightAverage no longer loads its
            last one at the end).

    After training, ``best`` holds the best validation value and ``history``
    every epoch's value.

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> x = torch.bernoulli(torch.full((64, 4), 0.3))
        >>> stop = EarlyStopping(x[:16], patience=2)
        >>> r = pyro_dgm.fit(FactorizedBernoulli(4).model, None, x, epochs=50, callbacks=[stop], progress=False)
        >>> len(stop.history) <= 50
        True
    """

    def __init__(self, data: torch.Tensor, patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True, batch_size: int = 500, monitor="loss", num_particles: int = 100,
                 average: WeightAverage | None = None):
        count("patience", patience)
        if average is not None and not isinstance(average, WeightAverage):
            raise ValueError(f"average: expected a WeightAverage, got {type(average).__name__}")
        if not (callable(monitor) or monitor in MONITORS):
            raise ValueError(f"monitor: expected one of {MONITORS} or a callable monitor(state) -> float, "
                             f"got {monitor!r}")
        self.data, self.patience, self.min_delta = data, patience, float(min_delta)
        self.restore_best, self.batch_size = restore_best, batch_size
        self.monitor, self.num_particles = monitor, count("num_particles", num_particles)
        self.best, self.history, self.bad_epochs, self._best_state = math.inf, [], 0, None
        self.average = average
        if average is not None and restore_best:
            average.load_at_end = False  # the best average comes back, not the last

    def value(self, state) -> float:
        """This epoch's validation value of the monitored estimate."""
        if callable(self.monitor):
            return float(self.monitor(state))
        data = on_device(self.data, state.device)
        if self.monitor == "loss":
            return validation_loss(state.objective, data, self.batch_size)
        objective = state.objective
        return evaluate(objective.model, data, guide=objective.guide, num_particles=self.num_particles,
                        batch_size=self.batch_size, site=objective.site, all_ranks=True)["nll"]  # every rank is here

    def on_epoch_end(self, state) -> None:
        with self.average.applied() if self.average is not None else contextlib.nullcontext():
            value = self.value(state)
            self.history.append(value)
            if value < self.best - self.min_delta:
                self.best, self.bad_epochs = value, 0
                if self.restore_best:
                    self._best_state = [copy.deepcopy(m.state_dict()) for m in state.modules]
                return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            state.stop = True

    def state_dict(self) -> dict:
        """Progress so far, so that a resumed run keeps its patience count and best weights."""
        return {"best": self.best, "bad_epochs": self.bad_epochs, "history": list(self.history),
                "best_state": self._best_state or []}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
        self.history, self._best_state = list(state["history"]), state["best_state"] or None

    def on_train_end(self, state) -> None:
        """Load the best weights back, whether patience ran out or the epochs did."""
        if self.restore_best and self._best_state is not None:
            for m, sd in zip(state.modules, self._best_state):
                m.load_state_dict(sd)


class WeightAverage:
    """An exponential moving average of a module's weights, loaded into it when training ends.

    After each step from step ``start`` on, ``avg = decay * avg + (1 - decay) * w``
    (the EMA rule of torch's ``swa_utils``, applied to copies of the
    parameters), the usual way to sharpen the samples of GANs and score
    models and to smooth the noise of small batches out of a likelihood
    model's weights. Only parameters are averaged; buffers (batch-norm
    statistics, ActNorm's flag) stay the live module's. The average rides in
    fit's checkpoints, so a resumed run continues it.

    The module itself is never copied: torch's ``AveragedModel`` deep-copies
    it, which fails for Pyro's transforms once they have cached a pass
    (``affine_coupling``, ``spline_coupling``, ... hold non-leaf tensors),
    hence the parameters by hand.

    Args:
        module: the ``nn.Module`` whose weights are averaged (a GAN's
            generator, a whole model), or None for every parameter fit
            trains: the modules of the programs and the ``pyro.param``
            sites of Pyro's param store (a plain Pyro program with no
            module of its own, e.g. ``pyro.param("loc", ...)``), whose
            store then holds the average after training. A GAN's critic
            (the objective's "critic" group) is left out: it keeps its
            live weights.
        decay: in [0, 1): how much of the average each step keeps.
        start: the first step that is averaged (the first copies the weights).
        load_at_end: load the average into ``module`` when training ends.

    ``with average.applied(): ...`` runs a block with the average in the
    module (scoring it, sampling from it) and puts the live weights back
    after it. :class:`EarlyStopping` ``(average=...)`` stops on the
    average's validation value and keeps its best average.

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> m = FactorizedBernoulli(4)
        >>> ema = WeightAverage(m, decay=0.9)
        >>> r = pyro_dgm.fit(m.model, None, torch.ones(64, 4), steps=20, callbacks=[ema], progress=False)
        >>> ema.n_averaged
        20
    """

    stops_mid_epoch = False  # its step hook never stops training: under torchrun no rank has to agree on it

    def __init__(self, module: nn.Module | None = None, decay: float = 0.999, start: int = 1,
                 load_at_end: bool = True):
        if module is not None and not isinstance(module, nn.Module):
            raise ValueError(f"module: expected a torch.nn.Module or None (every parameter fit trains), got "
                             f"{type(module).__name__}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay: expected a number in [0, 1), got {decay!r}")
        self.module, self.decay, self.start = module, float(decay), count("start", start)
        self.load_at_end = bool(load_at_end)
        self.average, self.n_averaged = None, 0
        self._update = get_ema_multi_avg_fn(self.decay)

    def _parameters(self) -> list:
        if self.module is None:  # not bound to fit's modules yet: nothing to average
            return []
        return list(self.module.parameters())

    def _live(self) -> list:
        return [p.detach() for p in self._parameters()]

    def _bind(self, state) -> None:
        """``module=None``: fit's trained modules, known from the first step on (an autoguide's
        parameters and the param store's sites exist only after the programs have run), but for a
        GAN's critic: only what samples is averaged, as the GAN literature averages the generator."""
        if self.module is None:
            critic = {id(m) for m in state.objective.param_groups().get("critic", [])}
            self.module = nn.ModuleList([m for m in state.modules if id(m) not in critic])
            self._average_on_devices()  # resumed: the checkpoint's average onto the parameters' devices

    def _average_on_devices(self) -> None:
        if self.average is not None:
            self.average = [t.to(p.device) for t, p in zip(self.average, self._parameters())]

    def on_step_end(self, state) -> None:
        self._bind(state)
        if state.step < self.start:
            return
        if self.average is None:
            self.average = [p.clone() for p in self._live()]
        else:
            self._update(self.average, self._live(), self.n_averaged)
        self.n_averaged += 1

    def _load(self, tensors) -> None:
        with torch.no_grad():
            for live, value in zip(self._parameters(), tensors):
                live.copy_(value)

    @contextlib.contextmanager
    def applied(self):
        """The module with the averaged weights inside the block (the live ones if nothing is averaged yet)."""
        if self.average is None:
            yield self.module
            return
        live = [p.clone() for p in self._live()]
        self._load(self.average)
        try:
            yield self.module
        finally:
            self._load(live)

    def on_train_end(self, state) -> None:
        if self.load_at_end and self.average is not None:
            self._load(self.average)

    def state_dict(self) -> dict:
        return {"average": self.average, "n_averaged": self.n_averaged}

    def load_state_dict(self, state: dict) -> None:
        if "average" not in state:  # a checkpoint from before fit kept callback types matches by position
            raise ValueError("resume: the checkpoint holds no weight average where this WeightAverage stands in "
                             "callbacks; pass the callbacks in the order they were given when it was written")
        self.n_averaged = int(state["n_averaged"])
        self.average = state["average"]
        if self.module is not None:  # module=None: moved when bound, at the first step
            self._average_on_devices()
