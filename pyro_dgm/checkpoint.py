"""Atomic checkpoints that load without unpickling code (``weights_only=True``)."""

from __future__ import annotations

import errno
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


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_orphans(path) -> list[Path]:
    """Delete the temporary files a killed :func:`save_atomic` of ``path`` left behind; return them.

    Only files named as its temporaries are (``.<name>.<random>.tmp`` beside
    ``path``) are touched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    orphans = [p for p in path.parent.glob(f"{_temp_prefix(path)}*.tmp") if p.is_file()]
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def _user_mode() -> int:
    """0o666 less the umask: the mode ``open()`` gives a new file (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _no_space(err: BaseException) -> bool:
    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left" in str(err)


def check_writable(path) -> Path:
    """A ValueError now, not at the first save, when ``path`` cannot hold a checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint: {str(path)!r} is a directory; expected a file path such as "
                         f"{str(path / 'checkpoint.pt')!r}")
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists() and not p.is_dir():
            raise ValueError(f"checkpoint: {str(path)!r} lies under {str(p)!r}, which is a file, not a folder")
        if p.exists():
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"checkpoint: cannot write into {str(parent)!r} ({err.strerror or err})") from err
    return path


def save_atomic(obj: dict, path) -> Path:
    """Write ``obj`` to ``path`` through a temporary file, fsync and rename.

    A crash at any moment leaves either the old file or the new one, never a
    torn file; the temporaries of earlier crashes are removed first. The file
    gets the user's usual permissions (0o666 less the umask). A full disk is
    an ``OSError`` that says so, and the previous checkpoint is kept.
    """
    return write_atomic(path, lambda f: torch.save(obj, f), "checkpoint")


def write_atomic(path, write, what: str = "file") -> Path:
    """``write(f)`` into a temporary file beside ``path``, fsync it and rename it to ``path``
    (:func:`save_atomic` for anything written to a binary file: a figure, a tensor)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _user_mode())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _no_space(err):
            raise OSError(errno.ENOSPC, f"{what}: no space left on the device writing {str(path)!r}; "
                          f"the previous {what} is kept") from err
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder) -> None:
    """fsync a folder, so that the renames into it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """A ValueError naming the parameters whose shapes differ when a checkpoint is for other modules."""
    current = module_signature(modules)
    if saved == current:
        return
    names = lambda sig: [s[0] for s in sig]  # noqa: E731
    differ = []
    for i, (old, new) in enumerate(zip(saved, current)):
        old_shapes, new_shapes = dict((k, v) for k, v in old[1]), dict((k, v) for k, v in new[1])
        for key in sorted(set(old_shapes) | set(new_shapes)):
            if old_shapes.get(key) != new_shapes.get(key):
                differ.append(f"{new[0] if i < len(current) else old[0]}.{key}: "
                              f"{old_shapes.get(key, 'absent')} in the checkpoint, {new_shapes.get(key, 'absent')} now")
    if len(saved) != len(current):
        differ.append(f"{len(saved)} modules in the checkpoint, {len(current)} now")
    shown = "; ".join(differ[:6]) + (f"; and {len(differ) - 6} more" if len(differ) > 6 else "")
    raise ValueError(
        f"checkpoint: {str(path)!r} was written for other modules ({names(saved)}) than the ones being "
        f"trained ({names(current)}): {shown}"
    )
