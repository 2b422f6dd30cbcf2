"""Atomic checkpoints that load without unpickling code (``weights_only=True``)."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "pyro_dgm.checkpoint/1"


def module_signature(modules) -> list:
    """Class name and parameter shapes of each module: what a checkpoint must match."""
    return [
        [type(m).__name__, [[k, list(v.shape)] for k, v in m.state_dict().items()]]
        for m in modules
    ]


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    # Checkpoints are loaded with map_location=device; RNG states must be CPU byte tensors.
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_atomic(obj: dict, path) -> Path:
    """Write ``obj`` to ``path`` through a temporary file, fsync and rename.

    A crash at any moment leaves either the old file or the new one, never a
    torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load(path, map_location=None) -> dict:
    """Read a checkpoint written by :func:`save_atomic`; a clear ValueError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint: no file at {str(path)!r}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a torn or foreign file
        raise ValueError(
            f"checkpoint: {str(path)!r} is corrupt or not a pyro_dgm checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a pyro_dgm checkpoint (format {FORMAT!r})")
    return obj


def check_signature(saved: list, modules, path) -> None:
    current = module_signature(modules)
    if saved != current:
        names = lambda sig: [s[0] for s in sig]  # noqa: E731
        raise ValueError(
            f"checkpoint: {str(path)!r} was written for other modules "
            f"({names(saved)}, parameter shapes differ) than the ones being trained ({names(current)})"
        )
