"""The one training loop of pyro_dgm: :func:`fit`.

Every model family trains here. An objective (``pyro_dgm.inference``) says
which losses step which parameter group; ``fit`` owns batching, devices,
optimizers, schedulers, clipping, mixed precision, compilation, progress,
callbacks, checkpoints, NaN detection and running on several processes
under ``torchrun``. The pieces live in :mod:`pyro_dgm.training`; this file
is the order they run in: check the call, set the run up, resume, loop.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .checks import trace_on_batch
from .inference.objective import Objective
from .programs import (fit_owns_parameters, minibatch_plate, modules_of, observed_item, resolve_site, split_batch,
                       subsampled_plate)
from .runtime import check_finite, validation
from .safety import Interrupts, Snapshot, check_arguments, exclusive, finite, total_norm
from .training import distributed
from .training.batching import Batches
from .training.compiling import compile_options, compiled
from .training.devices import keep_freed_cpu_memory, resolve_device
from .training.optimizers import build_optimizers, check_scheduling, unique
from .training.run_state import Progress, checkpoint_of, restore

__all__ = ["fit", "FitResult", "FitState", "NonFiniteLossError", "resolve_device"]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; training stopped before applying that step."""


@dataclass
class FitState:
    """What callbacks see. Set ``stop = True`` to end training after this step."""

    step: int
    epoch: int
    losses: dict
    modules: list
    objective: Objective
    device: torch.device
    stop: bool = False


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        losses: ``{group: [loss per update]}`` (one entry per optimizer step of the group).
        terms: ``{"group/term": [value per update]}`` for objectives with named terms.
        modules: the trained modules (in eval mode, on ``device``).
        objective: the objective, set up (its estimators are ready to reuse).
        steps: the number of batches trained on, in total (across resumes). A group
            need not step on every batch: a WGAN with ``n_critic=5`` makes
            ``steps / 5`` generator updates; :attr:`updates` counts them.
        epochs: completed epochs.
        checkpoint: the path of the last checkpoint, or None.
        optimizers: ``{group: torch.optim.Optimizer}``, to continue training by hand.
    """

    losses: dict
    terms: dict
    modules: list
    objective: Objective
    steps: int
    epochs: int
    device: torch.device
    checkpoint: Path | None = None
    optimizers: dict = field(default_factory=dict)

    @property
    def updates(self) -> dict:
        """``{group: optimizer steps}`` in total (across resumes): ``steps`` counts batches, this counts updates."""
        return {group: len(values) for group, values in self.losses.items()}

    @property
    def loss(self) -> float:
        """The last loss of the first parameter group."""
        first = next(iter(self.losses.values()))
        return first[-1] if first else float("nan")


@dataclass
class _Run:
    """The parts of one fit run, set up: what the loop steps and what a checkpoint holds."""

    objective: Objective
    batches: Batches
    modules: list
    optimizers: dict
    schedulers: dict
    callbacks: list
    settings: dict
    device: torch.device
    ranks: distributed.OneProcess
    checkpoint: Path | None
    params: dict = field(default_factory=dict)  # {group: [its trainable parameters]}, gathered once


def _check_objective(objective):
    """An :class:`Objective` for ``objective`` (None, an Objective, or a ``pyro.infer.ELBO``), or a ValueError."""
    from pyro.infer import ELBO as PyroELBOBase

    from .inference import PyroELBO

    if objective is None or isinstance(objective, Objective):
        return objective
    if isinstance(objective, PyroELBOBase):
        return PyroELBO(objective)
    raise ValueError(f"objective: expected a pyro_dgm.inference objective or a pyro.infer ELBO "
                     f"(Trace_ELBO(), TraceMeanField_ELBO(), ...), got {type(objective).__name__}")


def _default_objective(fn, guide):
    """The objective the distribution at the data site asks for."""
    from .distributions import ScoreField
    from .inference import ELBO, DenoisingScoreMatching, MaximumLikelihood
    from .inference.likelihood import refuse_unnormalized

    if guide is not None:
        return ELBO()
    if isinstance(fn, ScoreField):
        return DenoisingScoreMatching()
    refuse_unnormalized(fn, "objective")
    return MaximumLikelihood()


def _prepare(objective, model, guide, x, args, site, num_data):
    """Resolve the data site, the default objective and the data plate, then set the objective up."""
    from .inference import Adversarial

    trace = trace_on_batch(model, x, args)
    site = resolve_site(trace, x, site, args) if not isinstance(objective, Adversarial) else (site or "x")
    if objective is None:
        objective = _default_objective(trace.nodes[site]["fn"], guide)
    objective.site, objective.args, objective.num_data = site, args, num_data
    objective.setup(model, guide, x)
    objective.plate = minibatch_plate(trace, guide, x, args, site, num_data)
    objective.subsampled = subsampled_plate(trace, site, num_data) is not None
    return objective, trace.nodes[site]


def _split_loss(out, group):
    if isinstance(out, dict):
        terms = {f"{group}/{k}": v for k, v in out.items()}
        total = sum(out.values())
        return total, terms
    return out, None


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _hook(cb, hook):
    """``cb``'s function for ``hook``, or None; a plain callable is a step hook."""
    fn = getattr(cb, hook, None)
    if fn is None and hook == "on_step_end" and callable(cb) and not hasattr(cb, "on_epoch_end"):
        fn = cb
    return fn


def _call_callback(cb, hook, state):
    fn = _hook(cb, hook)
    if fn is not None:
        fn(state)


def _may_stop_mid_epoch(callbacks) -> bool:
    """Whether a callback's step hook may set ``state.stop``: any step hook may, unless its callback
    says ``stops_mid_epoch = False`` (WeightAverage, a timer). Under torchrun such a stop is agreed
    after every step, in one more small all-reduce; without one, nothing has to be."""
    return any(_hook(cb, "on_step_end") is not None and getattr(cb, "stops_mid_epoch", True) for cb in callbacks)


def _owning_parameters(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with exclusive(), fit_owns_parameters():
            return fn(*args, **kwargs)
    return wrapper


@_owning_parameters
def fit(
    model,
    guide=None,
    data=None,
    objective: Objective | None = None,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 128,
    shuffle: bool = True,
    drop_last: bool = False,
    optimizer="adam",
    lr=None,
    optimizer_kwargs: dict | None = None,
    scheduler=None,
    scheduler_every: str = "epoch",
    clip_grad: float | None = None,
    precision: str = "32",
    device=None,
    seed: int | None = None,
    site: str | None = None,
    modules=None,
    callbacks=(),
    checkpoint=None,
    checkpoint_every: int | None = None,
    resume=False,
    progress: bool | None = None,
    compile=False,
) -> FitResult:
    """Train a Pyro program on data with one objective.

    Args:
        model: a Pyro program ``model(x, *args)`` that observes the data at a
            sample site (``"x"``, or see ``site``): a function, a bound method
            of an ``nn.Module``, or the module itself. Its parameters are found
            as ``SVI`` finds them (``pyro.param``, ``pyro.module``,
            ``PyroParam``) and in the modules that own the model and guide.
        guide: a guide ``guide(x, *args)`` (amortized, or an autoguide), or None.
        data: a tensor ``(N, *event_shape)``, a ``Dataset`` or a ``DataLoader``.
            Batches that are tuples ``(x, y, ...)`` call ``model(x, y, ...)``.
            With minibatches, the sites inside the data plate count N/B times
            when the model has global latents (the full-data posterior).
            ``x`` of dtype bool, integer or another float precision is
            converted to the model's float dtype (float32 unless its
            parameters are float64); complex data is refused. A tensor is
            checked once, whole, for finite values and the data site's
            support; batches of a Dataset or DataLoader as they come.
        objective: a :mod:`pyro_dgm.inference` objective or one of Pyro's ELBO
            objects (``pyro.infer.Trace_ELBO()``, ...). Default: the ELBO when
            there is a guide; else what the data site's distribution needs
            (maximum likelihood for a density, denoising score matching for a
            score field; an unnormalized density is refused with the choices).
        epochs, steps: how long to train (``steps`` counts batches; if both are
            given, whichever ends first; a GAN's generator steps on one batch in n_critic: see
            ``FitResult.updates``). Neither: 10 epochs.
        batch_size, shuffle, drop_last: batching of tensors and Datasets.
        optimizer: "adam", "adamw", "sgd", "rmsprop", a ``torch.optim`` class,
            a ``pyro.optim`` optimizer (``pyro.optim.Adam({"lr": 1e-3})``,
            ``ClippedAdam``), one of Pyro's schedulers as SVI takes them
            (``pyro.optim.ExponentialLR({"optimizer": ..., "optim_args": ...,
            "gamma": ...})``: its optimizer and its scheduler) or a callable
            ``(params, lr, **kw) -> Optimizer``.
            ``lr`` (default 1e-3, or the pyro.optim options' own) and
            ``optimizer_kwargs`` may be dicts keyed by parameter group.
        scheduler: a callable ``optimizer -> LRScheduler`` (or a dict of them by
            group), stepped every epoch or every step (``scheduler_every``).
        clip_grad: clip each group's gradient norm to this value.
        precision: "32", or "bf16" for autocast mixed precision.
        device: "cpu" (the default), "cuda", "cuda:N", "auto" (CUDA when
            there is a GPU, else the CPU) or a torch.device. On the CPU (with
            glibc) fit first has malloc keep freed memory for reuse, so each
            step's activations are not faulted in again (1.1-1.2x faster
            image models; ``PYRO_DGM_MALLOC=system`` leaves malloc alone; see
            :func:`pyro_dgm.training.devices.keep_freed_cpu_memory`).
        seed: seeds Python, NumPy and torch when fit starts, and the data order, so
            the training noise (a VAE's epsilon, a GAN's z) and the batches repeat.
            It cannot reach the model's initial weights, drawn when the model was
            built: for a run that repeats exactly, call ``pyro.set_rng_seed(seed)``
            before building the model too (the CLI's ``--seed`` does both).
        site: the name of the data site; default ``"x"`` if the model has it,
            else the one observed site whose value is the batch.
        modules: extra ``nn.Module``\\ s to train in group "model" (for programs
            that are plain functions).
        callbacks: objects with ``on_step_end(state)``, ``on_epoch_end(state)``
            and ``on_train_end(state)`` (see :class:`FitState`), or plain
            callables called every step. A callback's ``state_dict()`` /
            ``load_state_dict()``, if it has them, go into checkpoints (an
            object with only these two is state that rides in the checkpoint);
            a resume hands each the state of the saved callback of its type
            and rank among that type, whatever the order of the list.
        checkpoint: path of the checkpoint file, written atomically every
            ``checkpoint_every`` steps, at every epoch end and at the end.
        resume: True to continue from ``checkpoint`` if it exists, or a path.
        progress: a tqdm bar; default on when stderr is a terminal.
        compile: True to ``torch.compile`` the networks the programs call
            (their ``forward``; the programs stay eager under Pyro's
            handlers) while fit trains, or a dict of ``torch.compile``
            options (``{"backend": "aot_eager"}``, ``{"mode": "max-autotune"}``).

    Under ``torchrun --nproc_per_node N`` (or in an initialised process
    group) the same call trains on N processes: each joins the group (NCCL on
    CUDA, gloo on the CPU) and trains on its own device (``cuda:LOCAL_RANK``
    for "cuda" and "auto"), on its shard of the data (every example once per
    epoch; ``batch_size`` is per process, so N processes at B train as one
    at N x B). Rank 0's parameters are broadcast after setup (so
    data-dependent initialisation such as ActNorm's agrees), every group's
    gradients and losses are averaged, checkpoints are written by rank 0
    and resumed by every rank (each with its own random state and objective
    state), the progress bar is rank 0's, and callbacks' state
    (EarlyStopping) is rank 0's after every epoch. A signal on any rank stops
    all, after the step whose gradient all-reduce carries it (the step it
    came in, or the next). A stop set by a step hook on any rank stops all at
    that step: for it the ranks agree after every step, in one more small
    all-reduce, unless every callback with a step hook has
    ``stops_mid_epoch = False`` (:class:`~pyro_dgm.callbacks.WeightAverage`
    has; a function can be given the attribute).

    Returns:
        A :class:`FitResult` with the loss history per parameter group.

    Raises:
        ValueError: a bad argument or bad data, before any training step.
        NonFiniteLossError: a NaN or infinite loss or gradient (that update is
            not applied; a step's earlier groups are undone) or weight (never
            checkpointed). The modules are left in eval mode.
        FitInterrupted: SIGINT or SIGTERM: the step in progress finishes, a
            checkpoint is written, and fit leaves with one line on stderr and
            exit status 128 + the signal (a second Ctrl-C stops at once).
        RuntimeError: another ``fit`` is running in this process.

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import VAE
        >>> x = torch.bernoulli(torch.rand(64, 16))
        >>> vae = VAE(16, latent_dim=2, hidden=(32,))
        >>> r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=2, batch_size=32, progress=False)
        >>> len(r.losses["model"])
        4
    """
    if data is None:
        raise ValueError("data: expected a tensor, Dataset or DataLoader, got None")
    ranks, dev = distributed.join(device)
    if epochs is None and steps is None:
        epochs = 10
    check_arguments(epochs=epochs, steps=steps, checkpoint_every=checkpoint_every, lr=lr, clip_grad=clip_grad,
                    precision=precision, scheduler_every=scheduler_every, seed=seed, callbacks=callbacks,
                    shuffle=shuffle, drop_last=drop_last, progress=progress)
    optimizer, scheduler = check_scheduling(optimizer, scheduler)
    objective = _check_objective(objective)
    compile_with = compile_options(compile)
    if compile_with is not None and getattr(objective, "double_backward", False):
        raise ValueError(f"compile: {objective!r} differentiates a gradient (a double backward), which torch.compile "
                         "does not support; train it with compile=False")
    if site is not None and not isinstance(site, str):
        raise ValueError(f"site: expected the name of a sample site (a str), got {site!r}")
    bad = [m for m in (modules or []) if not isinstance(m, nn.Module)]
    if bad:
        raise ValueError(f"modules: expected torch.nn.Modules, got {[type(m).__name__ for m in bad]}")
    ckpt_path, resume_path = _checkpoint_paths(checkpoint, resume, ranks)
    if seed is not None:
        _seed_everything(int(seed))
    shuffle_seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    shuffle_seed = ranks.broadcast(shuffle_seed)
    if dev.type == "cpu":  # each step's activations reused, not faulted in again (its docstring says why)
        keep_freed_cpu_memory()

    run = _set_up(model, guide, data, objective, modules, callbacks, ranks, dev, ckpt_path,
                  batching=(batch_size, shuffle, drop_last, shuffle_seed), site=site,
                  optimizing=(optimizer, lr, optimizer_kwargs, scheduler))
    if ranks.world > 1:  # independent noise on each rank (a GAN's z, a VAE's epsilon), seeded
        _seed_everything((shuffle_seed + 1) * 1_000_003 + ranks.rank)
    if resume_path is not None and resume_path.exists():
        progress_at = restore(run, resume_path, ranks, dev)
    else:
        progress_at = Progress({g: [] for g in run.optimizers})
    total = _last_step(epochs, steps, len(run.batches), progress_at)
    show = (sys.stderr.isatty() if progress is None else progress) and ranks.is_main
    _train(run, progress_at, total, clip_grad=clip_grad, precision=precision, scheduler_every=scheduler_every,
           checkpoint_every=checkpoint_every, show=show, compile_with=compile_with,
           programs=modules_of(model, guide))
    return FitResult(progress_at.losses, progress_at.terms, run.modules, run.objective, progress_at.step,
                     progress_at.epoch, dev, ckpt_path, run.optimizers)


def _last_step(epochs, steps, per_epoch, at: Progress) -> int:
    """The step count at which training ends: ``steps`` batches in all, or the end of epoch ``epochs`` at
    this batch size. Counted from where ``at`` stands, so that a run resumed with another batch size (whose
    steps so far were of the old size) trains the epochs left, not the steps left."""
    if epochs is None:
        return steps
    by_epochs = at.step + (epochs - at.epoch) * per_epoch - at.skip
    return by_epochs if steps is None else min(steps, by_epochs)


def _checkpoint_paths(checkpoint, resume, ranks):
    """``(checkpoint path or None, path to resume from or None)``; a ValueError for bad ones on every rank."""
    problem = None
    if checkpoint is not None and ranks.is_main:  # one rank probes the folder: probes of several would race
        try:
            ckpt.check_writable(checkpoint)
        except ValueError as err:
            problem = str(err)
    problem = ranks.broadcast(problem)
    if problem is not None:
        raise ValueError(problem)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    resume_path = Path(resume) if isinstance(resume, (str, Path)) else (ckpt_path if resume else None)
    if resume and resume_path is None:
        raise ValueError("resume: True needs checkpoint= (the file to resume from)")
    if isinstance(resume, (str, Path)) and not resume_path.exists():
        raise ValueError(f"resume: no checkpoint at {str(resume_path)!r}")
    return ckpt_path, resume_path


def _set_up(model, guide, data, objective, modules, callbacks, ranks, dev, ckpt_path, *, batching, site,
            optimizing) -> _Run:
    """Batches, the objective set up on the first batch (checked with validation on), the modules on
    ``dev`` with rank 0's values, and one optimizer per parameter group."""
    own = modules_of(model, guide) + list(modules or [])
    batches = Batches(data, *batching, dev, _float_dtype(own), ranks.rank, ranks.world)
    if len(batches) == 0:
        raise ValueError("data: the DataLoader yields no batches (drop_last=True with a batch_size "
                         "larger than the data?)")
    for m in own:
        m.to(dev)
    x0, args0 = split_batch(batches.first())
    check_finite(x0, "data")
    with validation(True), torch.no_grad():
        objective, data_node = _prepare(objective, model, guide, x0, args0, site, batches.n)
        batches.watch(data_node, observed_item(data_node, x0, args0))
        groups = {g: list(ms) for g, ms in objective.param_groups().items()}
        if modules:
            groups["model"] = unique(groups.get("model", []) + list(modules))
        for ms in groups.values():
            for m in ms:
                m.to(dev)
        # One forward pass with validation on, so argument errors surface now.
        for g in objective.groups_for_step(0):
            objective.loss(g, x0)
    all_modules = unique(m for ms in groups.values() for m in ms)
    ranks.broadcast_modules(all_modules)
    optimizers, schedulers = build_optimizers(groups, *optimizing)
    settings = {"optimizer": {g: type(o).__name__ for g, o in optimizers.items()},
                "lr": {g: o.param_groups[0]["lr"] for g, o in optimizers.items()},
                "batch_size": batches.batch_size, "objective": repr(objective)}
    params = {g: [p for pg in o.param_groups for p in pg["params"]] for g, o in optimizers.items()}
    return _Run(objective, batches, all_modules, optimizers, schedulers, list(callbacks), settings, dev, ranks,
                ckpt_path, params)


def _train(run, at: Progress, total, *, clip_grad, precision, scheduler_every, checkpoint_every, show,
           compile_with, programs):
    """The loop: batches until ``total`` steps or a stop; checkpoints; callbacks; modules left in eval mode."""
    bar = tqdm(total=total, initial=min(at.step, total), disable=not show, dynamic_ncols=True, unit="batch",
               desc=type(run.objective).__name__, leave=False)
    state = FitState(at.step, at.epoch, at.losses, run.modules, run.objective, run.device)
    autocast = (torch.autocast(run.device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    step_schedulers = run.schedulers if scheduler_every == "step" else {}
    per_epoch = len(run.batches)
    # One process agrees with itself for free. N ranks agree on a signal inside every step's gradient
    # all-reduce, and on a callback's stop after the step only where a step hook may stop.
    agree_after_step = run.ranks.world == 1 or _may_stop_mid_epoch(run.callbacks)
    for m in run.modules:
        m.train()
    running = None
    try:
        with validation(False), Interrupts() as interrupts, compiled(run.modules, programs, compile_with):
            while at.step < total and not state.stop:
                for batch in run.batches.epoch(at.epoch, at.skip):
                    x, run.objective.args = split_batch(batch)
                    signal = _train_step(run, x, at, autocast, clip_grad, step_schedulers, interrupts.received)
                    at.step += 1
                    at.skip += 1
                    running = _update_bar(bar, at.losses, running, at.step, at.epoch, show)
                    state.step = at.step
                    for cb in run.callbacks:
                        _call_callback(cb, "on_step_end", state)
                    if agree_after_step:
                        late, stop = run.ranks.agree([interrupts.received or 0, int(state.stop)])
                        signal, state.stop = max(signal, late), bool(stop)
                    if signal:
                        interrupts.received = signal
                        _save(run, at)
                        raise interrupts.leave(at.step, f"checkpoint {str(run.checkpoint)!r} written: fit(..., "
                                               "resume=True) continues" if run.checkpoint else "no checkpoint= was given")
                    if checkpoint_every and at.step % checkpoint_every == 0:
                        _save(run, at)
                    if at.step >= total or state.stop:
                        break
                if at.skip >= per_epoch:  # the epoch is complete
                    _end_epoch(run, at, state, scheduler_every)
                    if not checkpoint_every or at.step % checkpoint_every:
                        _save(run, at)
        _save(run, at)
        for cb in run.callbacks:
            _call_callback(cb, "on_train_end", state)
    finally:
        bar.close()
        for m in run.modules:  # eval mode after success and after any error alike
            m.eval()


def _end_epoch(run, at, state, scheduler_every):
    at.epoch, at.skip = at.epoch + 1, 0
    state.epoch = at.epoch
    if scheduler_every == "epoch":
        for s in run.schedulers.values():
            s.step()
    for cb in run.callbacks:
        _call_callback(cb, "on_epoch_end", state)
    if run.ranks.world > 1:  # rank 0's callbacks decide (EarlyStopping's validation loss, its best weights)
        stateful = [cb for cb in run.callbacks if hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict")]
        shared = run.ranks.broadcast({"stop": state.stop, "callbacks": [cb.state_dict() for cb in stateful]})
        state.stop = shared["stop"]
        for cb, cb_state in zip(stateful, shared["callbacks"]):
            cb.load_state_dict(cb_state)


def _save(run, at):
    """Write the checkpoint (rank 0; every rank takes part), unless a weight is no longer finite."""
    if run.checkpoint is None:
        return
    if not finite([p for m in run.modules for p in m.parameters()]):
        raise NonFiniteLossError(f"a parameter became NaN or infinite by step {at.step} although every loss and "
                                 "gradient was finite (a too large lr?); that state is not checkpointed: "
                                 f"the checkpoint at {str(run.checkpoint)!r} from before it is kept")
    state = checkpoint_of(run, at, run.ranks)
    if state is not None:
        ckpt.save_atomic(state, run.checkpoint)
    run.ranks.barrier()  # no rank goes on (and may resume) before the file is there


def _float_dtype(modules):
    for m in modules:
        for p in m.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.get_default_dtype()


def _train_step(run, x, at, autocast, clip_grad, schedulers, received):
    """Every group of this step on batch ``x``; a failing later group undoes the earlier ones' updates.

    Returns the signal that any rank had ``received`` by its gradient all-reduce (0 if none; in one
    process always 0: its own ``received`` is read after the step)."""
    groups = run.objective.groups_for_step(at.step)
    done = []  # (group, snapshot before its update, loss, terms)
    signal = 0
    for i, g in enumerate(groups):
        # Only a step with more groups to come needs a way back (a GAN's critic before its generator).
        snapshot = Snapshot(run.optimizers[g]) if i < len(groups) - 1 else None
        try:
            value, named, came = _train_group(run, g, x, at.step, autocast, clip_grad, received)
        except NonFiniteLossError as err:
            for _, earlier, _, _ in reversed(done):
                earlier.restore()
            if done:
                raise NonFiniteLossError(f"{err}; the update of group(s) {[d[0] for d in done]} on this batch was "
                                         f"undone, so every module stands as after step {at.step - 1}") from None
            raise
        done.append((g, snapshot, value, named))
        signal = max(signal, came)
    for g, _, value, named in done:  # every group succeeded: the step counts
        at.losses[g].append(value)
        for k, v in named.items():
            at.terms.setdefault(k, []).append(v)
        if g in schedulers:
            schedulers[g].step()
    return signal


def _train_group(run, group, batch, step, autocast, clip_grad, received):
    """One optimizer step of one parameter group; returns (loss, {term: value}, signal).

    The loss, its terms and the gradient norm come to the host together, in
    one synchronisation; under torchrun the gradients, loss and terms are
    first averaged over the ranks (one all-reduce), so every rank checks and
    steps the same numbers. A flag for each signal this rank has
    ``received`` rides in that all-reduce: the returned signal is the largest
    that any rank has (0 if none), the same on every rank.
    """
    objective, opt, params = run.objective, run.optimizers[group], run.params[group]
    opt.zero_grad(set_to_none=True)
    with autocast:
        total_loss, named = _split_loss(objective.loss(group, batch), group)
    if not getattr(objective, "backward_inside", False):  # PyroELBO around loss_and_grads did it already
        total_loss.backward(inputs=params)  # only this group's gradients: a GAN's critic loss leaves G alone
    named = named or {}
    scalars = [total_loss.detach(), *(v.detach() for v in named.values())]
    scalars, shares = run.ranks.average_gradients(params, scalars, [received == s for s in Interrupts.SIGNALS])
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip_grad) if clip_grad is not None else total_norm(grads)
    host = torch.stack([t.double() for t in (*shares, *scalars, norm.to(scalars[0].device))]).tolist()
    shares, (value, *values, norm) = host[:len(shares)], host[len(shares):]
    signal = max([0] + [s for s, share in zip(Interrupts.SIGNALS, shares) if share > 0])
    terms = dict(zip(named, values))
    if not math.isfinite(value):
        raise NonFiniteLossError(_nan_message(step, group, f"loss of group {group!r} is {value}", terms))
    if not math.isfinite(norm):
        raise NonFiniteLossError(_nan_message(step, group, f"the loss of group {group!r} is finite ({value}) but "
                                              "its gradient is not", None))
    opt.step()
    objective.after_step(group)
    return value, terms, signal


def _update_bar(bar, losses, running, step, epoch, show):
    """A running mean of every group's loss; with several groups the bar also says how often each stepped."""
    running = {} if running is None else running
    for group, values in losses.items():
        if values:
            running[group] = values[-1] if group not in running else 0.95 * running[group] + 0.05 * values[-1]
    if show:
        if step % 10 == 0 and running:
            if len(losses) == 1:
                bar.set_postfix(loss=f"{next(iter(running.values())):.4g}", epoch=epoch)
            else:  # e.g. critic=0.52 (500 updates), generator=1.3 (100 updates)
                bar.set_postfix({g: f"{v:.4g} ({len(losses[g])} updates)" for g, v in running.items()}, epoch=epoch)
        bar.update(1)
    return running


def _nan_message(step, group, what, terms):
    parts = [f"{what} at step {step}"]
    if terms:
        parts.append(f"non-finite terms: {[k for k, v in terms.items() if not math.isfinite(v)]}")
    parts.append(f"group {group!r} was not updated on this batch; the last checkpoint (if any) is kept and resumes")
    return "; ".join(parts)
