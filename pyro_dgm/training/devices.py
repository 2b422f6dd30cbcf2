"""The device a run trains on: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` or a torch.device."""

from __future__ import annotations

import ctypes
import os
import platform

import torch

__all__ = ["resolve_device"]


def resolve_device(device, local_rank: int | None = None, local_world_size: int = 1) -> torch.device:
    """Parse ``device`` and check it exists.

    ``None`` is the CPU; ``"auto"`` is CUDA when a CUDA device is available,
    else the CPU. Under ``torchrun`` (``local_rank`` given) ``"auto"`` and
    ``"cuda"`` mean this rank's own GPU, ``cuda:<local_rank>``. With several
    ranks on one machine that see several GPUs, an explicit ``cuda:N`` other
    than the rank's own is refused: a script's ``device="cuda:0"`` would put
    every rank on one GPU. Choose the GPUs with ``CUDA_VISIBLE_DEVICES``.

    Example::

        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for CUDA, but no CUDA device is available here")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
        _check_rank_device(dev, local_rank, local_world_size)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {str(dev)!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device: {device!r} asked for Apple's MPS, which this machine does not have")
    elif dev.type != "cpu":
        raise ValueError(f"device: unsupported device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev


def _check_rank_device(dev: torch.device, local_rank: int | None, local_world_size: int) -> None:
    # One GPU visible per rank (CUDA_VISIBLE_DEVICES set per rank) makes cuda:0 right for every rank.
    if local_rank is None or local_world_size <= 1 or torch.cuda.device_count() <= 1 or dev.index == local_rank:
        return
    raise ValueError(
        f"device: {str(dev)!r} given to the rank with LOCAL_RANK={local_rank} of {local_world_size} ranks on "
        f"this machine: each rank needs its own GPU. Pass device='cuda' or 'auto' (rank r trains on cuda:r), "
        "and choose which GPUs with CUDA_VISIBLE_DEVICES"
    )


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_MAX = 32 * 2**20  # glibc's largest mmap threshold on 64-bit systems
_TRIM = 2**30
_allocator_tuned = False


def keep_freed_cpu_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse, once per process; whether it is now so.

    A training step allocates and frees the same large activation buffers
    every time. glibc's defaults hand blocks above its mmap threshold back to
    the kernel when they are freed, and trim the heap's top, so each step
    faults its activations in again: thousands of minor page faults per Glow
    step at 3x32x32, about a fifth of its CPU time. Raising the mmap
    threshold to its maximum (32 MiB) and the trim threshold to 1 GiB keeps
    them (``benchmarks/image_scale.py`` shows the effect). Neither torch nor
    Pyro does this, and a preloaded jemalloc or tcmalloc is a deployment
    choice a library cannot make, hence ``mallopt`` by hand. The process
    keeps at most the memory its peak needed; blocks over 32 MiB still go
    back.

    Nothing is changed off glibc, when ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` is set (the user tuned malloc), or with
    ``PYRO_DGM_MALLOC=system``.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if (os.environ.get("PYRO_DGM_MALLOC") == "system" or platform.libc_ver()[0] != "glibc"
            or any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))):
        return False
    libc = ctypes.CDLL(None)
    _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM))
    return _allocator_tuned
