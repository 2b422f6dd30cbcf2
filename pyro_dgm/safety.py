"""What keeps a ``fit`` run from losing work or taking bad input: checks, signals, one run at a time.

* :func:`check_arguments`: every numeric argument of ``fit`` checked before any work.
* :func:`as_training_dtype`: the documented rule for the dtype of the data.
* :class:`Interrupts`: SIGINT and SIGTERM become "finish this step, write a
  checkpoint, leave with one line" (a second Ctrl-C stops at once).
* :func:`exclusive`: one ``fit`` per process at a time; Pyro's validation
  switch and torch's are process-wide, so two runs in two threads would
  change each other's settings.
* :func:`total_norm`, :func:`finite`: non-finite gradients and parameters.
* :class:`Snapshot`: the parameters and optimizer state of a group, to undo
  its step when a later group of the same batch fails.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import torch

from .checks import count, positive

__all__ = ["check_arguments", "as_training_dtype", "Interrupts", "exclusive", "total_norm", "finite", "Snapshot",
           "FitInterrupted"]


class FitInterrupted(SystemExit):
    """SIGINT or SIGTERM ended a ``fit``: a checkpoint was written; its message says where."""


def _positive_or_per_group(name, value):
    if isinstance(value, dict):
        for group, v in value.items():
            positive(f"{name}[{group!r}]", v)
    elif value is not None:
        positive(name, value)


def check_arguments(*, epochs, steps, checkpoint_every, lr, clip_grad, precision, scheduler_every, seed,
                    callbacks, shuffle, drop_last, progress) -> None:
    """A ValueError naming the first bad argument of ``fit``; nothing otherwise."""
    for name, value in (("epochs", epochs), ("steps", steps), ("checkpoint_every", checkpoint_every)):
        if value is not None:
            count(name, value)
    _positive_or_per_group("lr", lr)
    if clip_grad is not None:
        positive("clip_grad", clip_grad)
    if precision not in ("32", "bf16"):
        raise ValueError(f"precision: expected '32' or 'bf16', got {precision!r}")
    if scheduler_every not in ("epoch", "step"):
        raise ValueError(f"scheduler_every: expected 'epoch' or 'step', got {scheduler_every!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    for name, value in (("shuffle", shuffle), ("drop_last", drop_last)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected True or False, got {value!r}")
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress: expected True, False or None, got {progress!r}")
    hooks = ("on_step_end", "on_epoch_end", "on_train_end")
    stateful = ("state_dict", "load_state_dict")  # state that only rides in the checkpoint
    bad = [cb for cb in callbacks if not (callable(cb) or any(hasattr(cb, h) for h in hooks)
                                          or all(hasattr(cb, h) for h in stateful))]
    if bad:
        raise ValueError(f"callbacks: expected objects with {'/'.join(hooks)} (or state_dict and load_state_dict), "
                         f"or callables, got {bad!r}")


def as_training_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The data as fit trains on it: ``dtype``, the floating dtype of the model's parameters.

    The rule: bool and integer data (binary pixels, counts, 0-255 levels as
    stored) and other float precisions are converted to ``dtype`` (float32
    unless the model is float64); complex data is refused.
    """
    if x.is_complex():
        raise ValueError(f"data: has dtype {x.dtype}; expected real numbers (bool, integer or floating point)")
    return x if x.dtype == dtype else x.to(dtype)


class Interrupts:
    """Inside: SIGINT and SIGTERM are recorded (``received``) instead of raising mid-step.

    ``fit`` checks after every step, writes a checkpoint and raises
    :class:`FitInterrupted` with one line. A checkpoint write is therefore
    never cut short. A second SIGINT raises ``KeyboardInterrupt`` at once.
    Handlers can only be set from the main thread; elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def leave(self, step, where) -> FitInterrupted:
        """The exception to raise after the checkpoint is written: exit status 128 + the signal."""
        name = signal.Signals(self.received).name
        print(f"pyro_dgm.fit: stopped by {name} after step {step}; {where}", file=sys.stderr)
        return FitInterrupted(128 + int(self.received))


_RUNNING = threading.Lock()


@contextlib.contextmanager
def exclusive():
    """One ``fit`` at a time in this process: a second, concurrent call gets a RuntimeError."""
    if not _RUNNING.acquire(blocking=False):
        raise RuntimeError("fit: another fit is running in this process (in another thread). Pyro's and torch's "
                           "validation switches are process-wide, so two runs would change each other's settings; "
                           "run them one after the other, or in separate processes")
    try:
        yield
    finally:
        _RUNNING.release()


def total_norm(tensors) -> torch.Tensor:
    """The 2-norm of a list of tensors taken together (NaN or inf if any entry is)."""
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(tensors)]))


def finite(tensors) -> bool:
    """Whether every entry of every tensor is finite (one synchronisation)."""
    return bool(torch.isfinite(total_norm([t.detach() for t in tensors])))


def _cloned(obj):
    """A copy of an optimizer's state dict with its tensors cloned: copy.deepcopy's memo and dispatch
    cost about a sixth of a small GAN's step, for the same values."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _cloned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cloned(v) for v in obj)
    return obj


class Snapshot:
    """The parameters and optimizer state of one group, to put back when a later group fails."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.values = [p.detach().clone() for p in self.params]
        self.state = _cloned(optimizer.state_dict())

    def restore(self):
        with torch.no_grad():
            for p, v in zip(self.params, self.values):
                p.copy_(v)
        self.optimizer.load_state_dict(self.state)
