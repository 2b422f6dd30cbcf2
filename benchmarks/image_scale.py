"""Every image model at MNIST size (1, 28, 28) and CIFAR size (3, 32, 32), batch 64: ms per
``pyro_dgm.fit`` step, peak memory of training, and seconds to draw 64 samples.

The models are those of ``tests/test_image_scale.py`` (``CASES``), built with
``--width`` feature maps; the data are random tensors of the right kind
(speed does not depend on the pixels). On the CPU each (model, shape) runs in
a fresh process, so that the peak memory is its own:

* on CUDA, ``torch.cuda.max_memory_allocated`` during fit's steps (all
  tensors on the device: weights, data, activations, gradients, Adam state);
* on the CPU, the growth of the process's peak resident set
  (``resource.getrusage(...).ru_maxrss``) from just before fit to its end:
  what training adds on top of the weights and the data. tracemalloc does not
  see torch's allocations, hence the RSS.

For PixelCNN and Glow a hand-written PyTorch loop trains the same modules
(same loss, computed from the modules directly; the same fused Adam) as the
reference. It starts from the same initial weights on its own copy and runs
one step after each of fit's steps (in fit's callback, its time taken out of
fit's), so that load from other processes slows both alike; the table gives
the ratio of their median step times (target: fit / hand <= 1.05) and their
first losses, which must agree.

Sampling: flows, the VAE, the GAN and the score model draw 64 samples in
full (the score model with annealed Langevin, ``--langevin-steps`` per level
on its 4 noise levels). The two PixelCNNs need one network pass per pixel
and channel (2,352 or 3,072); on the CPU they are timed over their first
``--ar-rows`` rows and the per-row times, fitted by a line in the rows a pass
reads (the gated PixelCNN's vertical pass for row r runs on rows 0..r, the
PixelCNN's passes on rows r - reach..r), are summed over all rows ("~" in the
table); ``--full-sampling`` (and CUDA) draws them in full. Checked once at
width 16 on an idle machine: PixelCNN estimates 2.14 s (1x28x28) and 9.97 s
(3x32x32) against 1.70 s and 9.35 s drawn in full.

    python benchmarks/image_scale.py [--device cpu|cuda|auto] [--bf16] [--compile] [--steps 8]
                                     [--width 16] [--models pixelcnn,glow] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_image_scale import CASES, SHAPES, fit_case, make_data  # noqa: E402

import pyro_dgm  # noqa: E402
from pyro_dgm.samplers import AnnealedLangevin  # noqa: E402
from pyro_dgm.training.devices import keep_freed_cpu_memory  # noqa: E402

BATCH = 64
HAND = ("pixelcnn", "glow")
AUTOREGRESSIVE = ("pixelcnn", "gated-pixelcnn")


# ------------------------------------------------------------------ the hand-written references

def pixelcnn_loss(m, x):
    """-log p(x) per example, from the network's conditionals: the loss fit computes at site "x"."""
    params = m(m.output.encode(x))
    return -m.output.distribution(params).log_prob(x.reshape(x.shape[0], -1)).sum(-1).mean()


def glow_loss(m, x):
    """-log p(x) = -(log N(f(x); 0, I) + log|det df/dx|) per example, from the flow's modules."""
    z = m.flow(x)
    log_det = m.flow.log_abs_det_jacobian(x, z)
    log_base = -0.5 * (z.pow(2) + math.log(2 * math.pi)).flatten(1).sum(-1)
    return -(log_base + log_det).mean()


HAND_LOSS = {"pixelcnn": pixelcnn_loss, "glow": glow_loss}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class HandLoop:
    """A plain fused-Adam loop on ``module``, one step per call: ``step() -> (seconds, loss)``."""

    def __init__(self, name, module, x, dev, bf16, lr=3e-3):
        if dev.type == "cpu":
            keep_freed_cpu_memory()  # as fit has malloc keep freed memory (fit ran first here anyway)
        self.loss_fn, self.module, self.x, self.dev, self.bf16 = HAND_LOSS[name], module.train(), x, dev, bf16
        self.opt = torch.optim.Adam(module.parameters(), lr=lr, fused=True)

    def step(self):
        t0 = time.perf_counter()
        with torch.enable_grad(), torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss_fn(self.module, self.x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        value = float(loss)  # one sync per step, as fit reads its loss
        return time.perf_counter() - t0, value


def fit_loop(name, module, x, steps, dev, bf16, compile_, hand=None):
    """fit for ``steps`` steps; ``module`` is trained in place. Returns fit's step times (s), fit's losses
    and, when ``hand`` is given, the (seconds, loss) of one hand-written step run after each of fit's steps
    (in fit's callback, its time taken out of fit's): the two alternate step by step, so that a busy
    machine slows both alike."""
    fit_times, hand_steps, mark = [], [], [time.perf_counter()]

    def stamp(state):
        _sync(dev)
        fit_times.append(time.perf_counter() - mark[0])
        if hand is not None:
            hand_steps.append(hand.step())
        mark[0] = time.perf_counter()

    options = {"compile": True} if compile_ else {}
    result = fit_case(CASES[name], module, x, steps=steps, device=dev, callbacks=[stamp],
                      precision="bf16" if bf16 else "32", **options)
    group = "critic" if name == "dcgan" else next(iter(result.losses))
    return fit_times, result.losses[group], hand_steps


# ------------------------------------------------------------------ sampling

class _Enough(Exception):
    """Raised from the sampling hook once enough rows are timed."""


def _timed_rows(module, n, rows):
    """Seconds per row of the first ``rows`` rows of ``module.sample(n)`` (its head runs once per pixel
    and channel), stopped there."""
    c, _, w = module.event_shape
    per_row, calls, stamps = c * w, [0], [time.perf_counter()]

    def hook(*_):
        calls[0] += 1
        if calls[0] % per_row == 0:
            stamps.append(time.perf_counter())
            if len(stamps) > rows:
                raise _Enough

    handle = module.head.register_forward_hook(hook)
    try:
        with contextlib.suppress(_Enough):
            module.sample(n)
    finally:
        handle.remove()
    return [b - a for a, b in zip(stamps[:-1], stamps[1:])]


def _extrapolate(row_times, height, reach=None):
    """Sum over ``height`` rows of the least-squares line of the measured per-row times against the rows
    each row's passes read: r + 1, or at most ``reach`` + 1 (a PixelCNN's window)."""
    read = [i + 1 if reach is None else min(i, reach) + 1 for i in range(height)]
    if len(row_times) < 2:
        return sum(row_times[0] * r / read[0] for r in read)
    slope, intercept = statistics.linear_regression(read[:len(row_times)], row_times)
    if slope < 0:  # a pass never gets cheaper further down
        slope, intercept = 0.0, statistics.fmean(row_times)
    return sum(intercept + slope * r for r in read)


def sample_seconds(name, module, dev, args):
    """(seconds to draw BATCH samples, whether extrapolated)."""
    module.eval()
    with torch.no_grad():
        if name in AUTOREGRESSIVE and dev.type == "cpu" and not args.full_sampling:
            rows = _timed_rows(module, BATCH, args.ar_rows)
            return _extrapolate(rows, module.event_shape[1], getattr(module, "reach", None)), True
        _sync(dev)
        t0 = time.perf_counter()
        out = module.sample(BATCH)
        _sync(dev)
        seconds = time.perf_counter() - t0
    if not torch.isfinite(out).all():
        raise RuntimeError(f"{name}: non-finite samples")
    return seconds, False


# ------------------------------------------------------------------ one (model, shape), in its own process

def build(name, shape, args):
    torch.manual_seed(0)
    module = CASES[name].build(shape, args.width)
    if name == "ncsn":
        module.sampler = AnnealedLangevin(module.sigmas, steps_per_level=args.langevin_steps)
    return module


def _device(name):
    """--device as a torch.device ("auto": CUDA when there is a GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    return torch.device(name)


def _minor_faults():
    """Minor page faults of this process so far: memory handed back to the kernel and faulted in again."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(name, shape_name, args) -> dict:
    """One row: a short fit alone for the peak memory, then the timed fit (with the hand-written
    loop alternating with it, for PixelCNN and Glow), then sampling."""
    dev = _device(args.device)
    shape = SHAPES[shape_name]
    x = make_data(CASES[name], shape, BATCH).to(dev)
    initial = build(name, shape, args)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _rss_mib()
    fit_loop(name, copy.deepcopy(initial), x, 2, dev, args.bf16, args.compile)
    _sync(dev)
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_mib() - rss_before)
    module = copy.deepcopy(initial)
    hand = HandLoop(name, copy.deepcopy(initial).to(dev), x, dev, args.bf16) if name in HAND else None
    faults = _minor_faults()
    fit_times, fit_losses, hand_steps = fit_loop(name, module, x, args.steps + 1, dev, args.bf16, args.compile,
                                                 hand)
    row = {"fit_ms": [t * 1e3 for t in fit_times[1:]], "peak_mib": peak,  # step 1: setup and warm-up
           "finite": all(math.isfinite(v) for v in fit_losses),
           "faults_per_step": (_minor_faults() - faults) / len(fit_times)}  # fit's and the hand loop's
    if hand is not None:
        row["hand_ms"] = [t * 1e3 for t, _ in hand_steps[1:]]
        row["first_losses"] = (fit_losses[0], hand_steps[0][1])
    row["sample_s"], row["sample_est"] = sample_seconds(name, module, dev, args)
    return row


# ------------------------------------------------------------------ the table

def _cell(row, key):
    return f"{statistics.median(row[key]):9.1f}" if row.get(key) else f"{'-':>9s}"


def header(args, dev) -> list[str]:
    mem = "peak MiB (cuda max allocated)" if dev.type == "cuda" else "MiB (peak RSS growth)"
    return [f"image models, batch {BATCH}, width {args.width}, device {dev}, torch {torch.__version__}, "
            f"{args.threads} thread(s), {'bf16' if args.bf16 else 'fp32'}"
            f"{', compile' if args.compile else ''}; median of {args.steps} steps after a warm-up one, "
            f"the hand-written references alternating with fit step by step",
            f"{'model':15s} {'shape':9s} {'fit ms':>9s} {'hand ms':>9s} {'fit/hand':>9s} {mem:>22s} "
            f"{'s/64 samples':>13s}  first losses fit | hand"]


def line(name, shape_name, row) -> str:
    shape = "x".join(map(str, SHAPES[shape_name]))
    if "error" in row:
        return f"{name:15s} {shape:9s} failed: {row['error']}"
    ratio = (f"{statistics.median(row['fit_ms']) / statistics.median(row['hand_ms']):9.3f}"
             if row.get("hand_ms") else f"{'-':>9s}")
    sample = f"{'~' if row['sample_est'] else ''}{row['sample_s']:.2f}"
    first = "" if not row.get("first_losses") else "  {:.6g} | {:.6g}".format(*row["first_losses"])
    return (f"{name:15s} {shape:9s} {_cell(row, 'fit_ms')} {_cell(row, 'hand_ms')} {ratio} "
            f"{row['peak_mib']:22.1f} {sample:>13s}{first}{'' if row['finite'] else '  NON-FINITE LOSS'}")


def footer(args, dev) -> list[str]:
    lines = []
    if dev.type == "cpu" and not args.full_sampling:
        lines.append(f"~: PixelCNN sampling timed over the first {args.ar_rows} rows and summed over all rows "
                     "(a line fitted to the per-row times); --full-sampling draws in full")
    lines.append(f"score model: annealed Langevin, 4 levels x {args.langevin_steps} steps")
    if args.compile:
        lines.append("--compile: fit compiles the networks, the hand-written loop stays eager; fit's first "
                     "(compiling) step is not timed; the peak memory includes the compiler's")
    return lines


def _row(name, shape_name, args):
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    # fit trains with Pyro's and torch's argument validation off; so does the hand-written loop
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        return measure(name, shape_name, args)
    except Exception as err:  # a failing model is a row of the table, not the end of the run
        return {"error": f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"}


def _in_child(name, shape_name, args, env=None):
    """The row measured in a fresh process (the CPU's peak RSS is per process), with ``env`` added to its
    environment."""
    cmd = [sys.executable, __file__, *_child_args(args), "--one", name, shape_name]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    found = [line[4:] for line in out.stdout.splitlines() if line.startswith("ROW ")]
    return json.loads(found[-1]) if found else {"error": f"exit {out.returncode}: {' '.join(out.stderr.split()[-20:])}"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--bf16", action="store_true", help="fit(precision='bf16'); the hand loop under autocast")
    p.add_argument("--compile", action="store_true", help="fit(compile=True), if this fit takes it")
    p.add_argument("--steps", type=int, default=8, help="timed steps (after one warm-up step)")
    p.add_argument("--width", type=int, default=16, help="feature maps of every network")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--langevin-steps", type=int, default=5)
    p.add_argument("--ar-rows", type=int, default=3, help="rows timed of PixelCNN sampling on the CPU")
    p.add_argument("--full-sampling", action="store_true", help="draw PixelCNN samples in full on the CPU")
    p.add_argument("--models", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "SHAPE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("steps", "width", "threads", "langevin_steps", "ar_rows"):
        if getattr(args, name) < 1 or (name in ("steps", "ar_rows") and getattr(args, name) < 2):
            raise SystemExit(f"--{name.replace('_', '-')}: too small ({getattr(args, name)})")
    models = args.models.split(",")
    unknown = sorted(set(models) - set(CASES))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected some of {list(CASES)}")
    if args.one:
        return print("ROW " + json.dumps(_row(*args.one, args)))
    dev = _device(args.device)
    if args.compile and "compile" not in inspect.signature(pyro_dgm.fit).parameters:
        print("note: this pyro_dgm.fit takes no compile=; --compile ignored")
        args.compile = False
    torch.set_num_threads(args.threads)
    # each row is printed (and written to --out) as soon as it is measured, so a time limit keeps the rows done
    out = open(args.out, "w") if args.out else None

    def emit(lines):
        for text in lines:
            print(text, flush=True)
            if out is not None:
                out.write(text + "\n")
                out.flush()

    emit(header(args, dev))
    for name in models:
        for shape_name in SHAPES:
            # CUDA resets its peak counter per row, so one process serves (and starts CUDA once)
            row = _row(name, shape_name, args) if dev.type == "cuda" else _in_child(name, shape_name, args)
            emit([line(name, shape_name, row)])
    emit(footer(args, dev))
    if out is not None:
        out.close()


def _child_args(args):
    out = ["--device", args.device, "--steps", str(args.steps), "--width",
           str(args.width), "--threads", str(args.threads), "--langevin-steps", str(args.langevin_steps),
           "--ar-rows", str(args.ar_rows)]
    return out + [flag for flag, on in (("--bf16", args.bf16), ("--compile", args.compile),
                                        ("--full-sampling", args.full_sampling)) if on]


if __name__ == "__main__":
    main()
