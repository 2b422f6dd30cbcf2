"""Fault injection: SIGKILL a training process N times, resume each time, compare with an uninterrupted run.

A child process (``python -c CHILD``, ``sys.executable``) trains a VAE on
scikit-learn's binary digits with ``pyro_dgm.fit(..., checkpoint=path,
checkpoint_every=1, seed=...)``. The parent kills it with SIGKILL, starts a
new child with ``resume=True``, and repeats until ``--kills`` kills have been
delivered; the last child trains to the end. A second child trains the same
model with the same seed without interruption. The VAE is wide (``--hidden``)
so that each checkpoint is several MB and its write takes a good share of a
step: with ``checkpoint_every=1`` a kill often lands inside ``save_atomic``.

The child prints markers on stdout: ``READY`` (imported, data loaded, about
to call ``fit``), ``START r`` (first step after resuming from step r),
``STEP n`` (step n finished, from a callback), ``W+ n`` / ``W- n``
(``pyro_dgm.checkpoint.save_atomic`` entered / returned; the child wraps it).
Each kill is aimed, by a plan drawn from ``--seed``, at one of:

* ``write``: a random delay (0 to the median write time seen so far)
  after the ``W+`` of a random step: inside a checkpoint write;
* ``step``: a random delay after the ``W-`` of a random step (0 to the median
  step period less the median write): between writes, in the training step;
* ``startup``: a random delay (0 to the median set-up time) after the child's
  ``READY`` (printed after imports and data, just before ``fit``): in fit's
  checks, loading the checkpoint, the validation pass, the first step.

After each kill the parent drains the child's output (so it knows the last
step finished and whether the kill landed between ``W+`` and ``W-``), loads the
checkpoint with ``pyro_dgm.checkpoint.load`` (a refusal counts as a corrupt
checkpoint; the file is moved aside and training restarts from scratch, which
with a fixed seed still ends where the uninterrupted run ends) and counts the
temporary files ``.<name>.*.tmp`` in the folder.

Table: kills survived / N (the next child resumed from a readable checkpoint,
or from scratch if none had been written yet, and went on), kills that landed
inside a write, corrupt checkpoints, orphan temp files left at the end, max
(and mean) steps lost per kill (last step finished before the kill minus the
step the resume started from), and whether the resumed run equals the
uninterrupted one: exact equality of the loss history, max abs difference
of the weights (and of the optimizer state). The timing of each kill is not
reproducible (it races the child), the plan is.

    python benchmarks/fault_injection.py [--kills 30] [--seed 0] [--hidden 512,512] [--batch-size 64]
        [--steps auto] [--dir DIR] [--keep]

Exit code 0 whatever the table says (it is a measurement: a resumed child
that fails by itself is reported, not raised); 2 only if the benchmark itself
could not run (the uninterrupted run failed, or a child stalled for 300 s).
"""

from __future__ import annotations

import argparse
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pyro_dgm import checkpoint as ckpt

CHILD = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    import pyro_dgm
    from pyro_dgm import checkpoint as ckpt
    from pyro_dgm.data import load_digits
    from pyro_dgm.models import VAE

    path, steps, seed, hidden, batch_size, resume = sys.argv[1:7]
    steps, seed, batch_size = int(steps), int(seed), int(batch_size)
    hidden = tuple(int(h) for h in hidden.split(","))

    def say(line):
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    save_atomic = ckpt.save_atomic

    def marked_save(obj, p):
        say(f"W+ {obj['step']}")
        out = save_atomic(obj, p)
        say(f"W- {obj['step']}")
        return out

    ckpt.save_atomic = marked_save  # fit calls ckpt.save_atomic through the module

    first = [True]

    def marker(state):
        if first[0]:
            first[0] = False
            say(f"START {state.step - 1}")
        say(f"STEP {state.step}")

    x = load_digits("train")
    torch.manual_seed(seed)
    vae = VAE(64, latent_dim=16, hidden=hidden)
    say("READY")
    pyro_dgm.fit(vae.model, vae.guide, x, steps=steps, batch_size=batch_size, seed=seed, checkpoint=path,
                 checkpoint_every=1, resume=resume == "1", callbacks=[marker], progress=False)
    say("DONE")
""")

MODES = ("write", "step", "startup")
MODE_WEIGHTS = (0.6, 0.25, 0.15)


@dataclass
class Plan:
    """What one kill aims at: ``mode``, the marker step offset ``k`` after the resume, a delay fraction."""

    mode: str
    k: int
    frac: float


@dataclass
class Kill:
    plan: Plan
    resumed_from: int          # the step the child started from (checkpoint step, or 0)
    last_step: int             # the last STEP marker printed before it died (resumed_from if none)
    in_write: bool             # the last marker was W+ without its W-
    corrupt: bool = False      # the checkpoint after the kill was refused by ckpt.load
    ckpt_step: int | None = None  # the checkpoint's step after the kill (None: no file)
    orphans: int = 0           # temp files in the folder right after the kill
    resumed_ok: bool = False   # the next child started from ckpt_step (filled in later)


@dataclass
class Stats:
    write_s: list = field(default_factory=list)     # W+ -> W- as seen by the parent
    step_s: list = field(default_factory=list)      # STEP -> STEP
    startup_s: list = field(default_factory=list)   # READY -> first STEP: fit's set-up and resume


# ---------------------------------------------------------------- the child

class Child:
    """A training child whose stdout lines arrive, timestamped, on a queue."""

    def __init__(self, path, args, resume):
        cmd = [sys.executable, "-c", CHILD, str(path), str(args.steps), str(args.seed), args.hidden,
               str(args.batch_size), "1" if resume else "0"]
        self.stderr = tempfile.TemporaryFile()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list = []  # (time, line) consumed so far
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))
        self.lines.put((time.monotonic(), None))

    def next_line(self, timeout):
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        self.seen.append(item)
        return item

    def wait_for(self, prefix, value=None, timeout=300.0):
        """Consume lines until ``prefix [value]``; the time it came, or None if the child ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.next_line(deadline - time.monotonic())
            if item is None or item[1] is None:
                return None
            t, line = item
            word, _, rest = line.partition(" ")
            if word == prefix and (value is None or int(rest) == value):
                return t
        return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.finish()

    def finish(self):
        """Wait for the child to end and drain its output; its return code."""
        rc = self.proc.wait()
        self.reader.join()
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                break
        return rc

    def error_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]

    def markers(self):
        return [line for _, line in self.seen if line]


def last_marker_state(lines, resumed_from):
    """(last STEP finished, whether the last W+ had no W-, the START step or None)."""
    last, open_write, start = resumed_from, False, None
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "STEP":
            last = int(rest)
        elif word == "W+":
            open_write = True
        elif word == "W-":
            open_write = False
        elif word == "START":
            start = int(rest)
    return last, open_write, start


def record_timings(child, stats):
    """Write and step durations (parent-side) and the time to the first step, from a child's markers."""
    w_open, prev_step, ready = None, None, None
    for t, line in child.seen:
        if not line:
            continue
        word = line.split(" ", 1)[0]
        if word == "READY":
            ready = t
        elif word == "W+":
            w_open = t
        elif word == "W-" and w_open is not None:
            stats.write_s.append(t - w_open)
            w_open = None
        elif word == "STEP":
            if prev_step is None and ready is not None:
                stats.startup_s.append(t - ready)
            else:
                stats.step_s.append(t - prev_step)
            prev_step = t


# ---------------------------------------------------------------- one kill

def draw_plan(rng, kills, max_k):
    plans = []
    for i in range(kills):
        mode = "write" if i == 0 else rng.choices(MODES, MODE_WEIGHTS)[0]  # the first measures the timings
        k = 0 if mode == "startup" else rng.randint(1, max_k)
        plans.append(Plan(mode, k, rng.random()))
    return plans


def median(xs, default):
    return statistics.median(xs) if xs else default


def aim_and_kill(child, plan, resumed_from, stats):
    """Wait for what ``plan`` aims at, sleep its delay, SIGKILL. False if the child ended by itself first."""
    if plan.mode == "startup":  # after imports and data, in fit's set-up: checks, loading the checkpoint
        if child.wait_for("READY") is None:
            return _ended_or_stalled(child)
        time.sleep(plan.frac * median(stats.startup_s, 0.5))
    else:
        target = resumed_from + plan.k
        write, step = median(stats.write_s, 0.02), median(stats.step_s, 0.03)
        if plan.mode == "write":  # into the write of step `target`
            marker, span = "W+", write
        else:  # after that write, before the next one
            marker, span = "W-", max(step - write, 0.001)
        if child.wait_for(marker, target) is None:
            return _ended_or_stalled(child)
        time.sleep(plan.frac * span)
    if child.proc.poll() is not None:
        return False
    child.kill()
    return True


def _ended_or_stalled(child):
    """False if the child ended by itself; a RuntimeError if it is alive but silent past the timeout."""
    if child.proc.poll() is None:
        child.kill()
        raise RuntimeError(f"a child stalled (no marker for 300 s):\n{child.error_text()}")
    return False


def inspect_checkpoint(path, folder, name, corrupt_dir, n):
    """(step or None, corrupt?, orphan count) after a kill; a corrupt file is moved aside."""
    orphans = count_orphans(folder, name)
    if not path.exists():
        return None, False, orphans
    try:
        return int(ckpt.load(path)["step"]), False, orphans
    except ValueError:
        shutil.move(str(path), str(corrupt_dir / f"corrupt-{n}.pt"))
        return None, True, orphans


def count_orphans(folder, name):
    return len(list(Path(folder).glob(f".{name}.*.tmp")))


# ---------------------------------------------------------------- the runs

@dataclass
class KilledRun:
    kills: list = field(default_factory=list)
    finished_early: bool = False  # the run ended before every planned kill was delivered
    failure: str | None = None    # a child that died by itself (not by a kill), with its stderr


def run_killed(args, folder, plans, stats, log):
    """Kill a child per plan, resume in a new one each time, train to the end; a :class:`KilledRun`."""
    path = folder / "ck.pt"
    corrupt_dir = folder.parent / "corrupt"
    corrupt_dir.mkdir(exist_ok=True)
    run = KilledRun()
    pending: list[Kill] = []  # kills whose resume no child has confirmed yet (by its START marker)
    resumed_from = 0

    def confirm(child):
        _, _, start = last_marker_state(child.markers(), resumed_from)
        if start is not None:
            for k in pending:
                k.resumed_ok = start == resumed_from
            pending.clear()

    def ended(child, what):
        rc = child.finish()
        confirm(child)
        if rc != 0:  # the kills still pending were not survived
            run.failure = f"{what} failed by itself (rc {rc}) resuming from step {resumed_from}:\n" \
                          f"{child.error_text()}"
            log(f"  {what}: FAILED (rc {rc})")
        return run

    for n, plan in enumerate(plans):
        child = Child(path, args, resume=path.exists())
        if not aim_and_kill(child, plan, resumed_from, stats):
            run.finished_early = True
            log(f"  kill {n + 1}: the child ended before the kill ({plan.mode}, k={plan.k})")
            return ended(child, f"child {n + 1}")
        record_timings(child, stats)
        confirm(child)
        last, in_write, _ = last_marker_state(child.markers(), resumed_from)
        step, corrupt, orphans = inspect_checkpoint(path, folder, path.name, corrupt_dir, n)
        kill = Kill(plan, resumed_from, last, in_write, corrupt, step, orphans)
        run.kills.append(kill)
        pending.append(kill)
        log(f"  kill {n + 1:3d}: {plan.mode:7s} resumed at {resumed_from:4d}, last step {last:4d}, "
            f"{'in a write' if in_write else 'not in a write':14s} checkpoint step {step}, orphans {orphans}"
            + (", CORRUPT (moved aside, restart from 0)" if corrupt else ""))
        resumed_from = step if step is not None else 0
    return ended(Child(path, args, resume=path.exists()), "the final child")


def run_reference(args, folder):
    child = Child(folder / "ck.pt", args, resume=False)
    rc = child.finish()
    if rc != 0:
        raise RuntimeError(f"the uninterrupted child failed (rc {rc}):\n{child.error_text()}")
    return ckpt.load(folder / "ck.pt")


def max_abs_diff(a, b):
    """Max abs difference over matching tensors of two nested state structures (inf if they differ in form)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            return float("inf")
        if a.numel() == 0:
            return 0.0
        return float((a.double() - b.double()).abs().max())
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return float("inf")
        return max((max_abs_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return float("inf")
        return max((max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return 0.0 if a == b else float("inf")


# ---------------------------------------------------------------- report

def table(rows):
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def report(args, run, final, ref, orphans_end, seconds):
    kills, n = run.kills, len(run.kills)
    lost = [k.last_step - (k.ckpt_step or 0) for k in kills]
    survived = sum(k.resumed_ok and not k.corrupt for k in kills)
    by_mode = {m: sum(k.plan.mode == m for k in kills) for m in MODES}
    rows = [
        ("kills survived / N", f"{survived} / {n}" + (f"  (asked {args.kills}; the run ended first)"
                                                    if run.finished_early and not run.failure else "")),
        ("kills aimed write/step/startup", f"{by_mode['write']} / {by_mode['step']} / {by_mode['startup']}"),
        ("kills that landed inside a write", f"{sum(k.in_write for k in kills)} / {n}"),
        ("corrupt checkpoint files", str(sum(k.corrupt for k in kills))),
        ("orphan temp files at the end", f"{orphans_end}  (.ck.pt.*.tmp; max seen after a kill: "
                                         f"{max((k.orphans for k in kills), default=0)})"),
        ("max steps lost per kill", f"{max(lost, default=0)}  (mean {statistics.mean(lost) if lost else 0:.2f}; "
                                    f"checkpoint_every=1)"),
    ]
    if final is None:
        rows.append(("resumed == uninterrupted", "n/a: the resumed run did not finish (see above)"))
    else:
        same = final["losses"] == ref["losses"] and final["terms"] == ref["terms"]
        rows += [
            ("final step (resumed / uninterrupted)", f"{final['step']} / {ref['step']}"),
            ("resumed == uninterrupted: losses", "exactly equal" if same else "DIFFER"),
            ("max |weight diff|", f"{max_abs_diff(final['modules'], ref['modules']):.3g}"),
            ("max |optimizer state diff|", f"{max_abs_diff(final['optimizers'], ref['optimizers']):.3g}"),
        ]
    rows.append(("wall time", f"{seconds:.0f} s"))
    return table(rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=30, help="number of SIGKILLs (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill plan and the training run")
    p.add_argument("--hidden", default="512,512", help="VAE hidden widths, comma-separated (checkpoint size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-k", type=int, default=4, help="a kill aims at a step 1..max-k after the resume")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps; default enough that every planned kill happens before the end")
    p.add_argument("--dir", default=None, help="work folder (default a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--quiet", action="store_true", help="no line per kill")
    args = p.parse_args(argv)
    try:
        widths = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        p.error(f"--hidden: expected comma-separated positive widths, got {args.hidden!r}")
    if args.kills < 0 or args.max_k < 1:
        p.error("--kills must be >= 0 and --max-k >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    plans = draw_plan(rng, args.kills, args.max_k)
    if args.steps is None:
        # every kill moves the run on by at most k steps (a startup kill maybe a few): margin of 10
        args.steps = sum(pl.k for pl in plans) + 3 * sum(pl.mode == "startup" for pl in plans) + 10
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pyro_dgm_faults_"))
    killed_dir, ref_dir = root / "killed", root / "reference"
    for d in (killed_dir, ref_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    print(f"fault injection: {args.kills} kills, seed {args.seed}, VAE 64-{args.hidden.replace(',', '-')}-16, "
          f"batch {args.batch_size}, {args.steps} steps, checkpoint_every=1, folder {root}", flush=True)
    t0 = time.monotonic()
    try:
        stats = Stats()
        run = run_killed(args, killed_dir, plans, stats, log)
        if run.failure:
            print(run.failure)
        path = killed_dir / "ck.pt"
        final = None if run.failure else ckpt.load(path)
        orphans_end = count_orphans(killed_dir, path.name)
        size_mb = path.stat().st_size / 2**20 if path.exists() else float("nan")
        ref = run_reference(args, ref_dir)
        print(f"checkpoint {size_mb:.1f} MB; median write {1e3 * median(stats.write_s, 0):.1f} ms, "
              f"median step {1e3 * median(stats.step_s, 0):.1f} ms, "
              f"median fit set-up {1e3 * median(stats.startup_s, 0):.0f} ms (as the parent sees them)")
        print(report(args, run, final, ref, orphans_end, time.monotonic() - t0))
    except RuntimeError as err:
        print(f"fault injection could not run: {err}", file=sys.stderr)
        return 2
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
