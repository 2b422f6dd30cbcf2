"""The one training loop of pyro_dgm: :func:`fit`.

Every model family trains here. An objective (``pyro_dgm.inference``) says
which losses step which parameter group; ``fit`` owns batching, devices,
optimizers, schedulers, clipping, mixed precision, progress, callbacks,
checkpoints and NaN detection.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .checks import bounded_support, check_support, count, trace_on_batch
from .inference.objective import Objective
from .programs import fit_owns_parameters, minibatch_plate, modules_of, resolve_site, split_batch
from .runtime import check_finite, on_device, validation
from .safety import Interrupts, Snapshot, as_training_dtype, check_arguments, exclusive, finite, total_norm

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
        losses: ``{group: [loss per update]}``.
        terms: ``{"group/term": [value per update]}`` for objectives with named terms.
        modules: the trained modules (in eval mode, on ``device``).
        objective: the objective, set up (its estimators are ready to reuse).
        steps: the number of batches trained on, in total (across resumes).
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
    def loss(self) -> float:
        """The last loss of the first parameter group."""
        first = next(iter(self.losses.values()))
        return first[-1] if first else float("nan")


def resolve_device(device) -> torch.device:
    """Parse ``device`` ("cpu", "cuda", "cuda:1", a torch.device) and check it exists."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for CUDA, but no CUDA device is available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device: {device!r} asked for Apple's MPS, which this machine does not have")
    elif dev.type != "cpu":
        raise ValueError(f"device: unsupported device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return dev


class _Batches:
    """Reproducible batches from a tensor, Dataset or DataLoader.

    The order of epoch ``e`` depends only on (``shuffle_seed``, ``e``), so a
    resumed run sees exactly the batches the interrupted one would have. (For
    a DataLoader this holds when it shuffles with a ``RandomSampler`` or not
    at all; a custom sampler keeps its own randomness.)
    """

    def __init__(self, data, batch_size, shuffle, drop_last, shuffle_seed, device, dtype=torch.float32):
        self.device, self.shuffle, self.drop_last, self.dtype = device, shuffle, drop_last, dtype
        self.shuffle_seed, self.loader, self.site = shuffle_seed, None, None
        if isinstance(data, torch.utils.data.DataLoader):
            self.loader, self.dataset = data, None
            n = len(data.dataset) if hasattr(data.dataset, "__len__") else None
            if n == 0:
                raise ValueError("data: the DataLoader's dataset is empty; expected at least one example")
            self.batch_size = data.batch_size or 1
        elif isinstance(data, torch.Tensor):
            data = as_training_dtype(data, dtype)
            check_finite(data)
            self.dataset, n = data, data.shape[0]
        elif isinstance(data, torch.utils.data.Dataset):
            n = len(data)
            if n == 0:
                raise ValueError("data: the Dataset is empty; expected at least one example")
            self.dataset = data
        else:
            raise ValueError(
                f"data: expected a torch.Tensor, Dataset or DataLoader, got {type(data).__name__}"
            )
        if self.loader is None:
            count("batch_size", batch_size)
            if drop_last and batch_size > n:
                raise ValueError(
                    f"batch_size: {batch_size} is larger than the data ({n} examples) with drop_last=True, "
                    "so no batch would be trained on"
                )
            self.batch_size = min(batch_size, n)
        self.n = n

    def watch(self, site: dict) -> None:
        """Check the data against the support of the data site's distribution: a tensor data set
        now, in one pass; batches from a Dataset or DataLoader as they come (with finite values)."""
        if isinstance(self.dataset, torch.Tensor):
            if site["value"].shape[1:] == self.dataset.shape[1:]:
                check_support(site, self.dataset)
        else:
            self.site = site

    def _ready(self, batch):
        batch = on_device(batch, self.device)
        x, args = split_batch(batch)
        x = as_training_dtype(x, self.dtype)
        if self.site is not None:  # batches not checked at setup: finite values and support, each batch
            if bounded_support(self.site):
                check_support(self.site, x)  # one pass: a NaN lies outside any bounded support
            else:
                check_finite(x, "data")
        return (x, *args) if args else x

    def __len__(self):
        if self.loader is not None:
            return len(self.loader)
        full, rest = divmod(self.n, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def order(self, epoch):
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(int(self.shuffle_seed) * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def epoch(self, epoch, skip=0):
        """Yield the batches of ``epoch``, skipping the first ``skip``."""
        if self.loader is not None:
            # The loader's shuffle and worker seeds, made functions of (seed, epoch) so that
            # resume is exact; left alone, each new iterator would draw from the global RNG.
            seed = int(self.shuffle_seed) * 100_003 + epoch
            self.loader.generator = torch.Generator().manual_seed(seed)
            sampler = getattr(self.loader, "sampler", None)
            if isinstance(sampler, torch.utils.data.RandomSampler):
                sampler.generator = torch.Generator().manual_seed(seed)
            for i, batch in enumerate(self.loader):
                if i >= skip:
                    yield self._ready(batch)
            return
        idx = self.order(epoch)
        for i in range(skip, len(self)):
            chunk = idx[i * self.batch_size:(i + 1) * self.batch_size]
            if isinstance(self.dataset, torch.Tensor):
                # unshuffled: a view, no copy
                batch = self.dataset[chunk] if self.shuffle else self.dataset[i * self.batch_size:(i + 1) * self.batch_size]
            else:
                batch = torch.utils.data.default_collate([self.dataset[int(j)] for j in chunk])
            yield self._ready(batch)


_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
               "rmsprop": torch.optim.RMSprop}


def _check_optimizer(optimizer):
    """A torch optimizer class or factory for ``optimizer``, or a ValueError naming it.

    Accepts a name, a ``torch.optim.Optimizer`` subclass, a callable
    ``(params, lr, **kw)``, or one of Pyro's ``pyro.optim`` wrappers
    (``pyro.optim.Adam({"lr": 1e-3})``, ``ClippedAdam``): its torch class and
    options are used for one optimizer per group, as fit builds them.
    """
    from pyro.optim import PyroOptim
    from pyro.optim.lr_scheduler import PyroLRScheduler

    if isinstance(optimizer, str):
        if optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(f"optimizer: unknown name {optimizer!r}; expected one of {sorted(_OPTIMIZERS)} "
                             "or a torch.optim class")
        return _OPTIMIZERS[optimizer.lower()]
    if isinstance(optimizer, PyroLRScheduler):
        raise ValueError("optimizer: a pyro.optim learning-rate scheduler is not an optimizer here; pass "
                         "optimizer=<torch or pyro.optim optimizer> and scheduler=lambda opt: <torch scheduler>")
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


def _from_pyro_optim(constructor, options, params, lr=None, **kwargs):
    options = {**options, **kwargs}
    if lr is not None:
        options["lr"] = lr
    return constructor(params, **options)


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
    return objective, trace.nodes[site]


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


_FUSABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def _per_group(value, group, what, groups=()):
    # A dict is per group only when its keys name groups: {"betas": ...} is one optimizer's options.
    if isinstance(value, dict) and not set(value).isdisjoint(groups):
        if group not in value:
            raise ValueError(f"{what}: no entry for parameter group {group!r} in {sorted(value)}")
        return value[group]
    return value


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


def _call_callback(cb, hook, state):
    fn = getattr(cb, hook, None)
    if fn is not None:
        fn(state)
    elif hook == "on_step_end" and callable(cb) and not hasattr(cb, "on_epoch_end"):
        cb(state)


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
            given, whichever ends first). Neither: 10 epochs.
        batch_size, shuffle, drop_last: batching of tensors and Datasets.
        optimizer: "adam", "adamw", "sgd", "rmsprop", a ``torch.optim`` class,
            a ``pyro.optim`` optimizer (``pyro.optim.Adam({"lr": 1e-3})``,
            ``ClippedAdam``) or a callable ``(params, lr, **kw) -> Optimizer``.
            ``lr`` (default 1e-3, or the pyro.optim options' own) and
            ``optimizer_kwargs`` may be dicts keyed by parameter group.
        scheduler: a callable ``optimizer -> LRScheduler`` (or a dict of them by
            group), stepped every epoch or every step (``scheduler_every``).
        clip_grad: clip each group's gradient norm to this value.
        precision: "32", or "bf16" for autocast mixed precision.
        device: "cpu", "cuda", "cuda:N" or a torch.device.
        seed: seeds Python, NumPy and torch, and the data order.
        site: the name of the data site; default ``"x"`` if the model has it,
            else the one observed site whose value is the batch.
        modules: extra ``nn.Module``\\ s to train in group "model" (for programs
            that are plain functions).
        callbacks: objects with ``on_step_end(state)``, ``on_epoch_end(state)``
            and ``on_train_end(state)`` (see :class:`FitState`), or plain
            callables called every step. A callback's ``state_dict()`` /
            ``load_state_dict()``, if it has them, go into checkpoints.
        checkpoint: path of the checkpoint file, written atomically every
            ``checkpoint_every`` steps, at every epoch end and at the end.
        resume: True to continue from ``checkpoint`` if it exists, or a path.
        progress: a tqdm bar; default on when stderr is a terminal.

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
    dev = resolve_device(device)
    if epochs is None and steps is None:
        epochs = 10
    check_arguments(epochs=epochs, steps=steps, checkpoint_every=checkpoint_every, lr=lr, clip_grad=clip_grad,
                    precision=precision, scheduler_every=scheduler_every, seed=seed, callbacks=callbacks,
                    shuffle=shuffle, drop_last=drop_last, progress=progress)
    optimizer = _check_optimizer(optimizer)
    objective = _check_objective(objective)
    if site is not None and not isinstance(site, str):
        raise ValueError(f"site: expected the name of a sample site (a str), got {site!r}")
    bad = [m for m in (modules or []) if not isinstance(m, nn.Module)]
    if bad:
        raise ValueError(f"modules: expected torch.nn.Modules, got {[type(m).__name__ for m in bad]}")
    ckpt_path = ckpt.check_writable(checkpoint) if checkpoint is not None else None
    resume_path = Path(resume) if isinstance(resume, (str, Path)) else (ckpt_path if resume else None)
    if resume and resume_path is None:
        raise ValueError("resume: True needs checkpoint= (the file to resume from)")
    if isinstance(resume, (str, Path)) and not resume_path.exists():
        raise ValueError(f"resume: no checkpoint at {str(resume_path)!r}")
    if seed is not None:
        _seed_everything(int(seed))
    shuffle_seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())

    own = modules_of(model, guide) + list(modules or [])
    batches = _Batches(data, batch_size, shuffle, drop_last, shuffle_seed, dev, _float_dtype(own))
    if len(batches) == 0:
        raise ValueError("data: the DataLoader yields no batches (drop_last=True with a batch_size "
                         "larger than the data?)")
    for m in own:
        m.to(dev)

    first = next(iter(batches.epoch(0)))
    x0, args0 = split_batch(first)
    check_finite(x0, "data")
    with validation(True), torch.no_grad():
        objective, data_node = _prepare(objective, model, guide, x0, args0, site, batches.n)
        batches.watch(data_node)
        groups = {g: list(ms) for g, ms in objective.param_groups().items()}
        if modules:
            groups["model"] = _unique(groups.get("model", []) + list(modules))
        for ms in groups.values():
            for m in ms:
                m.to(dev)
        # One forward pass with validation on, so argument errors surface now.
        for g in objective.groups_for_step(0):
            objective.loss(g, x0)

    all_modules = _unique(m for ms in groups.values() for m in ms)
    optimizers, schedulers = _optimizers(groups, optimizer, lr, optimizer_kwargs, scheduler)
    settings = {"optimizer": {g: type(o).__name__ for g, o in optimizers.items()},
                "lr": {g: o.param_groups[0]["lr"] for g, o in optimizers.items()},
                "batch_size": batches.batch_size, "objective": repr(objective)}

    losses = {g: [] for g in groups}
    terms: dict[str, list] = {}
    step, epoch, skip = 0, 0, 0
    if resume_path is not None and resume_path.exists():
        ckpt.remove_orphans(resume_path)
        state = ckpt.load(resume_path, map_location=dev)
        ckpt.check_signature(state["signature"], all_modules, resume_path)
        skip = _resume_settings(state.get("settings"), settings, resume_path, optimizers, schedulers)
        for m, sd in zip(all_modules, state["modules"]):
            m.load_state_dict(sd)
        for g, sd in state["optimizers"].items():
            lrs = [pg["lr"] for pg in optimizers[g].param_groups]
            optimizers[g].load_state_dict(sd)
            if not schedulers:  # the lr given now is the one used (a scheduler's restored state decides otherwise)
                for pg, new in zip(optimizers[g].param_groups, lrs):
                    pg["lr"] = new
        for g, sd in state["schedulers"].items():
            schedulers[g].load_state_dict(sd)
        try:
            objective.load_state_dict(state["objective"])
        except (KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f"resume: the checkpoint's objective state does not fit {objective!r} "
                             f"({type(err).__name__}: {err}); resume with the objective it was written with") from err
        for cb, cb_state in zip(callbacks, state.get("callbacks", [])):
            if hasattr(cb, "load_state_dict"):
                cb.load_state_dict(cb_state)
        losses = {g: list(v) for g, v in state["losses"].items()}
        terms = {k: list(v) for k, v in state["terms"].items()}
        step, epoch = state["step"], state["epoch"]
        skip = state["batch_in_epoch"] if skip is None else skip
        batches.shuffle_seed = state["shuffle_seed"]
        ckpt.set_rng_state(state["rng"])

    per_epoch = len(batches)
    total = steps if epochs is None else (epochs * per_epoch if steps is None else min(steps, epochs * per_epoch))
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=total, initial=min(step, total), disable=not progress, dynamic_ncols=True,
               desc=type(objective).__name__, leave=False)
    fit_state = FitState(step, epoch, losses, all_modules, objective, dev)

    def save():
        if ckpt_path is None:
            return
        params = [p for m in all_modules for p in m.parameters()]
        if not finite(params):
            raise NonFiniteLossError(f"a parameter became NaN or infinite by step {step} although every loss and "
                                     "gradient was finite (a too large lr?); that state is not checkpointed: "
                                     f"the checkpoint at {str(ckpt_path)!r} from before it is kept")
        ckpt.save_atomic({
            "format": ckpt.FORMAT,
            "signature": ckpt.module_signature(all_modules),
            "modules": [m.state_dict() for m in all_modules],
            "optimizers": {g: o.state_dict() for g, o in optimizers.items()},
            "schedulers": {g: s.state_dict() for g, s in schedulers.items()},
            "objective": objective.state_dict(),
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in callbacks],
            "losses": losses, "terms": terms,
            "step": step, "epoch": epoch, "batch_in_epoch": skip,
            "shuffle_seed": batches.shuffle_seed,
            "settings": settings,
            "rng": ckpt.rng_state(),
        }, ckpt_path)

    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    for m in all_modules:
        m.train()
    running = None
    try:
        with validation(False), Interrupts() as interrupts:
            while step < total and not fit_state.stop:
                for batch in batches.epoch(epoch, skip):
                    x, objective.args = split_batch(batch)
                    _train_step(objective, x, step, optimizers, autocast, clip_grad, losses, terms,
                                schedulers if scheduler_every == "step" else {})
                    step += 1
                    skip += 1
                    running = _update_bar(bar, losses, running, step, epoch, progress)
                    fit_state.step = step
                    for cb in callbacks:
                        _call_callback(cb, "on_step_end", fit_state)
                    if interrupts.received is not None:
                        save()
                        raise interrupts.leave(step, f"checkpoint {str(ckpt_path)!r} written: fit(..., resume=True) "
                                               "continues" if ckpt_path else "no checkpoint= was given")
                    if checkpoint_every and step % checkpoint_every == 0:
                        save()
                    if step >= total or fit_state.stop:
                        break
                if skip >= per_epoch:  # the epoch is complete
                    epoch, skip = epoch + 1, 0
                    fit_state.epoch = epoch
                    if scheduler_every == "epoch":
                        for s in schedulers.values():
                            s.step()
                    for cb in callbacks:
                        _call_callback(cb, "on_epoch_end", fit_state)
                    if not checkpoint_every or step % checkpoint_every:
                        save()
        save()
        for cb in callbacks:
            _call_callback(cb, "on_train_end", fit_state)
    finally:
        bar.close()
        for m in all_modules:  # eval mode after success and after any error alike
            m.eval()
    return FitResult(losses, terms, all_modules, objective, step, epoch, dev, ckpt_path, optimizers)


def _float_dtype(modules):
    for m in modules:
        for p in m.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.get_default_dtype()


def _optimizers(groups, optimizer, lr, optimizer_kwargs, scheduler):
    """One optimizer (and scheduler, if asked) per parameter group; a ValueError names bad options."""
    optimizers, schedulers = {}, {}
    for g, ms in groups.items():
        params = _unique(p for m in ms for p in m.parameters() if p.requires_grad)
        if not params:
            raise ValueError(f"modules: parameter group {g!r} has no trainable parameters")
        options = _per_group(optimizer_kwargs, g, "optimizer_kwargs", groups)
        try:
            optimizers[g] = _make_optimizer(optimizer, params, _per_group(lr, g, "lr", groups), options)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"optimizer_kwargs: {options!r} do not fit the optimizer of group {g!r} "
                             f"({type(err).__name__}: {err})") from err
        sched = _per_group(scheduler, g, "scheduler", groups) if scheduler is not None else None
        if sched is not None:
            schedulers[g] = sched(optimizers[g])
    return optimizers, schedulers


def _resume_settings(saved, now, path, optimizers, schedulers):
    """Compare the checkpoint's settings with this call's; warn of each difference and say what is used.

    Returns 0 when the batch size changed (the interrupted epoch restarts: its
    position no longer means the same examples), else None (resume where it stopped).
    """
    if not saved:
        return None
    if saved["optimizer"] != now["optimizer"]:
        raise ValueError(f"resume: {str(path)!r} was trained with optimizer {saved['optimizer']}, this call uses "
                         f"{now['optimizer']}; their states do not transfer. Resume with the same optimizer, or "
                         "start a new run (another checkpoint path)")
    notes, restart = [], None
    if saved["lr"] != now["lr"]:
        used = "the checkpoint's schedule is restored" if schedulers else "the new lr is used"
        notes.append(f"lr {saved['lr']} -> {now['lr']} ({used})")
    if saved["batch_size"] != now["batch_size"]:
        notes.append(f"batch_size {saved['batch_size']} -> {now['batch_size']} (the new one is used; the "
                     "interrupted epoch restarts from its beginning)")
        restart = 0
    if saved["objective"] != now["objective"]:
        notes.append(f"objective {saved['objective']} -> {now['objective']} (the new one is used)")
    if notes:
        warnings.warn(f"resume: this call differs from the checkpoint {str(path)!r}: " + "; ".join(notes),
                      stacklevel=3)
    return restart


def _train_step(objective, x, step, optimizers, autocast, clip_grad, losses, terms, schedulers):
    """Every group of this step on batch ``x``; a failing later group undoes the earlier ones' updates."""
    groups = objective.groups_for_step(step)
    done = []  # (group, snapshot before its update, loss, terms)
    for i, g in enumerate(groups):
        # Only a step with more groups to come needs a way back (a GAN's critic before its generator).
        snapshot = Snapshot(optimizers[g]) if i < len(groups) - 1 else None
        try:
            value, named = _train_group(objective, g, x, step, optimizers[g], autocast, clip_grad)
        except NonFiniteLossError as err:
            for _, earlier, _, _ in reversed(done):
                earlier.restore()
            if done:
                raise NonFiniteLossError(f"{err}; the update of group(s) {[d[0] for d in done]} on this batch was "
                                         f"undone, so every module stands as after step {step - 1}") from None
            raise
        done.append((g, snapshot, value, named))
    for g, _, value, named in done:  # every group succeeded: the step counts
        losses[g].append(value)
        for k, v in named.items():
            terms.setdefault(k, []).append(v)
        if g in schedulers:
            schedulers[g].step()


def _train_group(objective, group, batch, step, opt, autocast, clip_grad):
    """One optimizer step of one parameter group; returns (loss, {term: value})."""
    opt.zero_grad(set_to_none=True)
    with autocast:
        total_loss, named = _split_loss(objective.loss(group, batch), group)
    value = float(total_loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(_nan_message(step, group, f"loss of group {group!r} is {value}", named))
    params = [p for pg in opt.param_groups for p in pg["params"]]
    if not getattr(objective, "backward_inside", False):  # PyroELBO around loss_and_grads did it already
        total_loss.backward(inputs=params)  # only this group's gradients: a GAN's critic loss leaves G alone
    grads = [p.grad for p in params if p.grad is not None]
    norm = (torch.nn.utils.clip_grad_norm_(params, clip_grad) if clip_grad is not None else total_norm(grads))
    if not bool(torch.isfinite(norm)):
        raise NonFiniteLossError(_nan_message(step, group, f"the loss of group {group!r} is finite ({value}) but "
                                              "its gradient is not", None))
    opt.step()
    objective.after_step(group)
    return value, {k: float(v.detach()) for k, v in (named or {}).items()}


def _update_bar(bar, losses, running, step, epoch, progress):
    last = losses[next(iter(losses))]
    if last:
        running = last[-1] if running is None else 0.95 * running + 0.05 * last[-1]
    if progress and step % 10 == 0 and running is not None:
        bar.set_postfix(loss=f"{running:.4g}", epoch=epoch)
    bar.update(1)
    return running


def _nan_message(step, group, what, named):
    parts = [f"{what} at step {step}"]
    if named:
        bad = [k for k, v in named.items() if not math.isfinite(float(v.detach()))]
        parts.append(f"non-finite terms: {bad}")
    parts.append(f"group {group!r} was not updated on this batch; the last checkpoint (if any) is kept and resumes")
    return "; ".join(parts)


def _unique(items):
    out, seen = [], set()
    for it in items:
        if id(it) not in seen:
            seen.add(id(it))
            out.append(it)
    return out
