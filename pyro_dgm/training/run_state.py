"""What a checkpoint of a ``fit`` run holds, and how a run resumes from one.

Rank 0 writes the file; every rank resumes from it. The modules and
optimizers are the same on every rank; the random streams and the
objective's own state (a PCD replay buffer) are per rank, so a checkpoint of
N ranks keeps N of each (``"ranks"``) and each rank takes back its own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .. import checkpoint as ckpt

__all__ = ["Progress", "checkpoint_of", "restore"]


@dataclass
class Progress:
    """Where a run stands: the loss history, the step, the epoch and the batch within it."""

    losses: dict
    terms: dict = field(default_factory=dict)
    step: int = 0
    epoch: int = 0
    skip: int = 0


def checkpoint_of(run, progress: Progress, ranks) -> dict | None:
    """The checkpoint of ``run`` (a :class:`pyro_dgm.fit` run's parts) on rank 0; None elsewhere.

    A collective under ``torchrun``: every rank calls it at the same step.
    """
    per_rank = ranks.gather({"rng": ckpt.rng_state(), "objective": run.objective.state_dict()})
    if not ranks.is_main:
        return None
    state = {
        "format": ckpt.FORMAT,
        "signature": ckpt.module_signature(run.modules),
        "modules": [m.state_dict() for m in run.modules],
        "optimizers": {g: o.state_dict() for g, o in run.optimizers.items()},
        "schedulers": {g: s.state_dict() for g, s in run.schedulers.items()},
        "objective": per_rank[0]["objective"],
        "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in run.callbacks],
        "callback_kinds": [_kind(cb) for cb in run.callbacks],
        "losses": progress.losses, "terms": progress.terms,
        "step": progress.step, "epoch": progress.epoch, "batch_in_epoch": progress.skip,
        "shuffle_seed": run.batches.shuffle_seed,
        "settings": run.settings,
        "rng": per_rank[0]["rng"],
    }
    if ranks.world > 1:
        state["ranks"] = per_rank
    return state


def restore(run, path: Path, ranks, device) -> Progress:
    """Load the checkpoint at ``path`` into ``run``; return where it stood."""
    if ranks.is_main:  # only rank 0 writes, so only rank 0 clears what a killed write left
        ckpt.remove_orphans(path)
    state = ckpt.load(path, map_location=device)
    ckpt.check_signature(state["signature"], run.modules, path)
    skip = _resume_settings(state.get("settings"), run.settings, path, run.schedulers)
    for m, sd in zip(run.modules, state["modules"]):
        m.load_state_dict(sd)
    for g, sd in state["optimizers"].items():
        opt = run.optimizers[g]
        lrs = [pg["lr"] for pg in opt.param_groups]
        opt.load_state_dict(sd)
        if not run.schedulers:  # the lr given now is the one used (a scheduler's restored state decides otherwise)
            for pg, new in zip(opt.param_groups, lrs):
                pg["lr"] = new
    for g, sd in state["schedulers"].items():
        run.schedulers[g].load_state_dict(sd)
    own = _own_rank_state(state, ranks, path)
    try:
        run.objective.load_state_dict(own["objective"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"resume: the checkpoint's objective state does not fit {run.objective!r} "
                         f"({type(err).__name__}: {err}); resume with the objective it was written with") from err
    pairs, notes = _matched_callbacks(run.callbacks, state, path)
    for cb, cb_state in pairs:
        cb.load_state_dict(cb_state)  # a callback may refuse the resume here (RunIdentity): before any warning
    for note in notes:
        warnings.warn(note, stacklevel=4)
    run.batches.shuffle_seed = state["shuffle_seed"]
    ckpt.set_rng_state(own["rng"])
    return Progress({g: list(v) for g, v in state["losses"].items()}, {k: list(v) for k, v in state["terms"].items()},
                    state["step"], state["epoch"], state["batch_in_epoch"] if skip is None else skip)


def _kind(callback) -> str:
    return f"{type(callback).__module__}.{type(callback).__qualname__}"


def _matched_callbacks(callbacks, state, path) -> tuple[list, list]:
    """``(pairs, notes)``: (callback, its saved state) for each callback with a ``load_state_dict``,
    and what to warn of.

    A callback takes the state of the saved callback of its own type and rank
    among that type (the second EarlyStopping the second one's), so a resume
    may list the callbacks in another order or add stateless ones. A stateful
    callback with no saved counterpart starts afresh, and a saved state with
    no callback now is dropped, each with a note. Checkpoints written
    before the types were kept match by position.
    """
    states = state.get("callbacks", [])
    kinds = state.get("callback_kinds")
    if kinds is None:
        return [(cb, st) for cb, st in zip(callbacks, states) if hasattr(cb, "load_state_dict")], []
    saved = {}
    for kind, st in zip(kinds, states):
        saved.setdefault(kind, []).append(st)
    taken, pairs, notes = {}, [], []
    for cb in callbacks:
        kind = _kind(cb)
        i = taken[kind] = taken.get(kind, -1) + 1
        if not hasattr(cb, "load_state_dict"):
            continue
        if i < len(saved.get(kind, [])):
            pairs.append((cb, saved[kind][i]))
        else:
            notes.append(f"resume: {str(path)!r} holds no state of a {type(cb).__name__} callback for this one "
                         "(it was not among the callbacks when the checkpoint was written): it starts afresh")
    dropped = [kind.rsplit(".", 1)[-1] for kind, sts in saved.items() for st in sts[taken.get(kind, -1) + 1:] if st]
    if dropped:
        notes.append(f"resume: {str(path)!r} holds the state of callback(s) {dropped} that this call does not "
                     "pass; that state is not used")
    return pairs, notes


def _own_rank_state(state, ranks, path):
    saved = state.get("ranks")
    if saved is not None and len(saved) == ranks.world:
        return saved[ranks.rank]
    if ranks.world > 1 or saved is not None:
        warnings.warn(f"resume: {str(path)!r} was written by {len(saved) if saved else 1} process(es), this run has "
                      f"{ranks.world}; every rank starts from rank 0's random state and objective state",
                      stacklevel=4)
    return {"rng": state["rng"], "objective": state["objective"]}


def _resume_settings(saved, now, path, schedulers):
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
                      stacklevel=5)
    return restart
