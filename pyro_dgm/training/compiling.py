"""``fit(..., compile=True)``: the networks a program calls, compiled with ``torch.compile``.

The program itself stays eager: it runs under Pyro's effect handlers
(``poutine.trace``, ``scale``, ``block``), whose messages ``torch.compile``
would break into many graphs. What it calls is compiled instead: each
outermost submodule with a ``forward`` of its own (an encoder, a decoder, a
coupling's network, a critic), once per module. Pyro transforms and the
modules that *are* programs are walked through, not compiled. The compiled
``forward`` is set on the instance, so parameters, ``state_dict`` keys and
checkpoints are those of the eager module; leaving :func:`compiled` takes it off.
"""

from __future__ import annotations

import contextlib

import torch
from pyro.distributions.torch_transform import TransformModule
from torch import nn

__all__ = ["networks", "compile_options", "compiled"]


def _has_forward(m: nn.Module) -> bool:
    return type(m).forward is not nn.Module.forward


def networks(modules, programs=()) -> list[nn.Module]:
    """The outermost submodules of ``modules`` that a program calls through their ``forward``."""
    skip = {id(m) for m in programs}
    found, seen = [], set()

    def walk(m):
        if id(m) in seen:
            return
        seen.add(id(m))
        if id(m) not in skip and _has_forward(m) and not isinstance(m, TransformModule):
            found.append(m)
            return
        for child in m.children():
            walk(child)

    for m in modules:
        walk(m)
    return found


def compile_options(compile) -> dict | None:
    """``torch.compile``'s keyword arguments for ``compile=`` (False, True or a dict of them); a
    ValueError otherwise."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return {}
    if isinstance(compile, dict):
        return dict(compile)
    raise ValueError(f"compile: expected True, False or a dict of torch.compile options, got {compile!r}")


@contextlib.contextmanager
def compiled(modules, programs, options):
    """Inside: the networks of ``modules`` run compiled (``options`` None: nothing changes)."""
    nets = networks(modules, programs) if options is not None else []
    for net in nets:
        net.forward = torch.compile(net.forward, **options)
    try:
        yield nets
    finally:
        for net in nets:
            del net.forward  # the class's eager forward again
