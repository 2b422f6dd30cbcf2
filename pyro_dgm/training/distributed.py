"""The process group under ``torchrun``: joining it, and the few collectives ``fit`` and ``evaluate`` need.

``fit`` runs unchanged in one process and in N: :func:`join` returns
:class:`OneProcess` (every collective is the identity) or :class:`Ranks`
(torch.distributed). Gradients are averaged by one all-reduce of each group's
gradients after its backward, not by wrapping modules in
``DistributedDataParallel``: a Pyro program calls its networks from inside
the program, under Pyro's handlers, never through one wrapped ``forward``,
and a GAN steps two groups with two losses per batch. Averaging the finished
gradients is what DDP computes, for every parameter group, ``pyro.param``
sites included, whatever the program does.
"""

from __future__ import annotations

import atexit
import contextlib
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils._pytree import tree_map

from .devices import resolve_device

__all__ = ["join", "rank_device", "of_the_group", "OneProcess", "Ranks", "shared_seed", "seed_batch", "in_batch_order",
           "failing_together", "scored_in_turn"]


class OneProcess:
    """A run in one process: nothing to share."""

    rank, world, is_main = 0, 1, True

    def broadcast_modules(self, modules) -> None:
        """Give every rank rank 0's parameters and buffers."""

    def average_gradients(self, params, scalars: list, flags=()) -> tuple[list, list]:
        """Average ``params``' gradients and the 0-d tensors ``scalars`` (the loss and its terms) over the ranks.

        ``flags`` (booleans: which signals this rank has received) ride in the same all-reduce; returns the
        averaged scalars and each flag's share of the ranks (0-d tensors, > 0 where any rank has it; none
        in one process, whose own flags stand)."""
        return scalars, []

    def agree(self, values: list[int]) -> list[int]:
        """The largest of each value over the ranks (a stop or a signal on any rank stops all)."""
        return values

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (tensors on the CPU)."""
        return [obj]

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank."""
        return obj

    def barrier(self) -> None:
        """Wait until every rank is here."""


class Ranks(OneProcess):
    """Rank ``rank`` of ``world`` processes in torch.distributed's default group."""

    def __init__(self, device: torch.device):
        self.rank, self.world, self.device = dist.get_rank(), dist.get_world_size(), device
        self.is_main = self.rank == 0

    def broadcast_modules(self, modules) -> None:
        with torch.no_grad():
            for m in modules:
                for t in list(m.parameters()) + list(m.buffers()):
                    # gloo has no bool tensors (ActNorm's "initialized"): send them as bytes
                    carrier = t.to(torch.uint8) if t.dtype == torch.bool else t.data
                    dist.broadcast(carrier, 0)
                    if carrier is not t.data:
                        t.copy_(carrier)

    def average_gradients(self, params, scalars, flags=()):
        grads = []
        for p in params:
            if p.grad is None:  # every rank must send the same tensors; an unused parameter sends zeros
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        # One all-reduce of everything (flattened) instead of one per tensor: a collective's fixed cost
        # is paid once per group and step.
        raised = grads[0].new_zeros(len(flags))
        for i, flag in enumerate(flags):
            if flag:
                raised[i] = 1  # a fill on the device: no copy from the host, no synchronisation
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.stack(scalars).to(grads[0]), raised])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        averaged = list(flat[offset:].unbind())
        return averaged[:len(scalars)], averaged[len(scalars):]

    def barrier(self):
        dist.barrier()

    def agree(self, values):
        t = torch.tensor(values, dtype=torch.int64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def gather(self, obj):
        out = [None] * self.world
        dist.all_gather_object(out, tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, obj))
        return out

    def broadcast(self, obj):
        box = [tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, obj)]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _comm_device(self):
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _world_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device) -> torch.device:
    """``device`` parsed and checked (:func:`~.devices.resolve_device`); under torchrun, this rank's own."""
    if _world_from_env() <= 1 and not (dist.is_available() and dist.is_initialized()):
        return resolve_device(device)
    return resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")),
                          int(os.environ.get("LOCAL_WORLD_SIZE", _world_from_env())))


def join(device):
    """``(ranks, device)`` for this process: under ``torchrun`` (``WORLD_SIZE`` > 1) or inside an
    initialised process group, join it (NCCL on CUDA, gloo on the CPU) and train on this rank's
    own device, ``cuda:LOCAL_RANK`` for ``"auto"`` or ``"cuda"``; else one process."""
    if not dist.is_available() or (not dist.is_initialized() and _world_from_env() <= 1):
        return OneProcess(), resolve_device(device)
    dev = rank_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")  # torchrun's env:// settings
        atexit.register(_leave)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.get_world_size() == 1:
        return OneProcess(), dev
    return Ranks(dev), dev


@contextlib.contextmanager
def shared_seed(ranks, seed: int | None, device: torch.device):
    """``with shared_seed(ranks, seed, device) as seed:`` ``seed``, or on several ranks without one, a
    seed rank 0 draws from its random stream, so that the ranks' estimates draw alike (after fit each
    rank's stream is its own). With either, the block runs on a fork of the random state: the caller's
    streams (a training run's, whose noise is per rank; a loop's next model) go on afterwards as if it
    had not run, so a seeded evaluation does not reseed its caller."""
    if seed is None and ranks.world == 1:
        yield seed
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # rank 0's draw too
        yield seed if seed is not None else ranks.broadcast(int(torch.randint(2**62, ())) if ranks.is_main else None)


def of_the_group(device):
    """The ranks of an initialised process group (one process where there is none), for work that every
    rank runs: unlike :func:`join` it checks no device, since a check that failed on some ranks only
    would leave the others waiting in a collective."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Ranks(device)
    if _world_from_env() > 1:  # under torchrun before any fit: join the group
        return join(device)[0]
    return OneProcess()


@contextlib.contextmanager
def failing_together(ranks):
    """A block that each rank runs on its own share of the work: an exception on one rank is raised on
    every rank (there as a RuntimeError) instead of leaving the others waiting in the next collective.
    One small all-reduce on the way out, whether the block failed or not."""
    try:
        yield
    except Exception:
        if ranks.world > 1:
            ranks.agree([1])
        raise
    if ranks.world > 1 and ranks.agree([0])[0]:
        raise RuntimeError("another rank failed while scoring its share of the batches; its error is in its "
                           "output")


def seed_batch(seed: int | None, key: int) -> None:
    """Seed batch ``key``'s random stream: the seed itself for the first batch, one derived from
    ``(seed, key)`` for the others (numpy's SeedSequence: streams that do not overlap), so a batch
    draws the same numbers whichever rank scores it. No seed: the stream goes on as it is."""
    if seed is not None:
        torch.manual_seed(seed if key == 0 else int(np.random.SeedSequence([seed, key]).generate_state(1)[0]))


def in_batch_order(ranks, values: dict) -> list:
    """Every rank's ``{batch key: value}``, gathered and sorted by key: each rank's list is the same."""
    gathered = {k: v for share in ranks.gather(values) for k, v in share.items()}
    return [gathered[k] for k in sorted(gathered)]


def scored_in_turn(ranks, seed, batches, score, sharded: bool = False) -> torch.Tensor:
    """``score(batch)`` of every batch, concatenated in batch order (float64, CPU), on every rank.

    Rank r of N scores batches r, r + N, ... (``sharded``: the batches are this rank's own already, keyed
    i N + r), each after :func:`seed_batch`; an error on one rank is raised on all; the ranks gather the
    values, so each returns them all.
    """
    values = {}
    with failing_together(ranks):  # a rank whose batches fail must not leave the others in the gather
        for i, batch in enumerate(batches):
            if sharded or i % ranks.world == ranks.rank:
                key = i * ranks.world + ranks.rank if sharded else i
                seed_batch(seed, key)
                values[key] = score(batch)
    return torch.cat([v.double().cpu() for v in in_batch_order(ranks, values)])


def _leave():
    if dist.is_initialized():
        dist.destroy_process_group()
