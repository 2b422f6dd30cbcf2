"""Bad inputs to ``pyro_dgm.fit``, across model families: which fail cleanly, which late, which not at all.

Rows are bad inputs (data with NaN or inf, wrong shapes and dtypes, bad
values of fit's arguments, unusable checkpoint paths, ...); columns are
families:

* ``VAE``: ``pyro_dgm.models.VAE`` on binary digits (Bernoulli likelihood);
* ``RealNVP``: ``pyro_dgm.models.RealNVP`` with a logit first layer on
  continuous digits in [0, 1);
* ``MADE``: ``pyro_dgm.models.MADE`` on binary digits;
* ``GAN``: ``MLPGenerator`` + ``MLPCritic`` + ``pyro_dgm.inference.Adversarial``
  on binary digits;
* ``EBM``: the registry's EBM (``--ebm``, default ``ebm-nce``) with its
  registered objective, on 2-D points.

Each cell builds a fresh tiny model (seeded) and runs ``fit(..., steps=2,
batch_size=16)`` with one bad input; a callback counts ``on_step_end`` calls,
so an error is known to come before or after training steps. Outcomes:

* ``ValueError (clean)``: raised before any step, and the message starts with
  the name of the argument at fault (``data``, ``lr``, ``checkpoint``, ...);
* ``ValueError (unnamed)``: before any step, but the message names another
  argument or none (e.g. torch's "Invalid learning rate");
* ``ValueError (late)``: after training steps ran;
* ``other <Type>``: any other exception (``(late)`` if steps ran);
* ``accepted``: fit ran. For the dtype rows, ``accepted (converted)`` means the
  model saw the data at its observed sites in the default float dtype (fit
  converted it), ``accepted (as <dtype>)`` that it saw the raw dtype;
  ``(converted, lossy)`` is a complex dtype converted to real;
* ``n/a``: the input is not bad for that family (no bounded support), or the
  check cannot be made here (a read-only folder when running as root).

The target is a clean ValueError everywhere, except that data of dtype bool or
int (or another real float dtype) may be converted by a documented rule; those
are counted separately. A bad value sits in the last row of the data, so a
check of the first batch only does not see it.

    python benchmarks/bad_inputs.py [--seed 0] [--ebm ebm-nce] [--rows SUBSTR] [--families VAE,GAN] [--verbose]

Exit code 0 (it is a measurement).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import stat
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from pyro.poutine.messenger import Messenger

import pyro_dgm
from pyro_dgm import registry
from pyro_dgm.data import load_digits, toy_2d
from pyro_dgm.inference import Adversarial
from pyro_dgm.models import MADE, VAE, MLPCritic, MLPGenerator, RealNVP

N, BATCH, STEPS = 64, 16, 2


# ---------------------------------------------------------------- families

@dataclass
class Family:
    """One model to train: its programs, data, objective and the modules whose inputs are watched."""

    model: Callable
    guide: Callable | None
    data: torch.Tensor
    objective: object = None
    support: str | None = None   # a bounded support of the data site, or None (all of R^D / no density)
    watched: list = field(default_factory=list)  # modules that see the data directly (the GAN's critic)


@functools.lru_cache(maxsize=None)
def _digits(kind):
    return load_digits("train", kind=kind)[:N]


def vae_family(seed, ebm):
    torch.manual_seed(seed)
    vae = VAE(64, latent_dim=4, hidden=(32,))
    return Family(vae.model, vae.guide, _digits("binary").clone(), support="{0, 1}")


def flow_family(seed, ebm):
    torch.manual_seed(seed)
    flow = RealNVP(64, num_couplings=2, hidden=(32,), logit=0.05)
    return Family(flow.model, None, _digits("continuous").clone(), support="(0, 1) (logit layer)")


def made_family(seed, ebm):
    torch.manual_seed(seed)
    made = MADE(64, hidden=(32,), seed=seed)
    return Family(made.model, None, _digits("binary").clone(), support="{0, 1}")


def gan_family(seed, ebm):
    torch.manual_seed(seed)
    gen, critic = MLPGenerator(64, latent_dim=4, hidden=(32,), output="sigmoid"), MLPCritic(64, hidden=(32,))
    return Family(gen.model, None, _digits("binary").clone(), Adversarial(critic), watched=[critic])


def ebm_family(seed, ebm):
    registry._load_all()
    spec = registry.get_model(ebm)
    torch.manual_seed(seed)
    module = spec.build((2,), "points", hidden=(32, 32))
    objective = spec.objective(module=module, data_kind="points") if spec.objective else None
    return Family(module.model, getattr(module, "guide", None), toy_2d("8gaussians", N, seed=seed), objective)


FAMILIES = {"VAE": vae_family, "RealNVP": flow_family, "MADE": made_family, "GAN": gan_family, "EBM": ebm_family}


# ---------------------------------------------------------------- bad inputs

@dataclass
class Case:
    """A row: ``make(family, tmp) -> {fit keyword: value}`` (``data`` included), or a str saying why n/a."""

    name: str
    names: tuple          # the argument names a clean message may start with
    make: Callable
    dtype: torch.dtype | None = None


def _last_row(value):
    def make(fam, tmp):
        x = fam.data.clone()
        x[-1, 0] = value
        return {"data": x}
    return make


def _outside_support(fam, tmp):
    if fam.support is None:
        return "no bounded support"
    x = fam.data.clone()
    x[-1, 0] = 2.0
    return {"data": x}


def _extra_column(fam, tmp):
    return {"data": torch.cat([fam.data, fam.data[:, :1]], dim=1)}


def _as_dtype(dtype):
    return lambda fam, tmp: {"data": fam.data.to(dtype)}


def _arg(name, value):
    return lambda fam, tmp: {name: value}


def _under_a_file(fam, tmp):
    (tmp / "a_file").write_text("not a folder")
    return {"checkpoint": tmp / "a_file" / "ck.pt"}


def _read_only(fam, tmp):
    ro = tmp / "read_only"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(ro, os.W_OK):  # root ignores permissions
        return "running as root: the folder stays writable"
    return {"checkpoint": ro / "ck.pt"}


def _optimizer_instance(fam, tmp):
    return {"optimizer": torch.optim.Adam([torch.zeros(1, requires_grad=True)])}


def cases():
    rows = [
        Case("data: NaN (last row)", ("data",), _last_row(float("nan"))),
        Case("data: inf (last row)", ("data",), _last_row(float("inf"))),
        Case("data: wrong event shape (+1 column)", ("data",), _extra_column),
        Case("data: empty (0 rows)", ("data",), lambda fam, tmp: {"data": fam.data[:0]}),
        Case("data: outside support (2.0, last row)", ("data",), _outside_support),
    ]
    for dt in (torch.int64, torch.bool, torch.float64, torch.float16, torch.complex64):
        rows.append(Case(f"data: dtype {str(dt).replace('torch.', '')}", ("data",), _as_dtype(dt), dtype=dt))
    rows.append(Case("data: a list, not a tensor", ("data",), lambda fam, tmp: {"data": fam.data.tolist()}))
    for v in (0, -1, True, 1.5):
        rows.append(Case(f"batch_size={v!r}", ("batch_size",), _arg("batch_size", v)))
    for v in (0, True, -3):
        rows.append(Case(f"epochs={v!r}", ("epochs",), lambda fam, tmp, v=v: {"epochs": v, "steps": None}))
    rows.append(Case("steps=0", ("steps",), _arg("steps", 0)))
    for v in (0, -1, float("nan"), float("inf"), "fast"):
        rows.append(Case(f"lr={v!r}", ("lr",), _arg("lr", v)))
    for v in (0, -1, float("nan")):
        rows.append(Case(f"clip_grad={v!r}", ("clip_grad",), _arg("clip_grad", v)))
    rows += [
        Case("optimizer='adamm'", ("optimizer",), _arg("optimizer", "adamm")),
        Case("optimizer=42", ("optimizer",), _arg("optimizer", 42)),
        Case("optimizer=an Adam instance", ("optimizer",), _optimizer_instance),
        Case("optimizer_kwargs={'betas': 3}", ("optimizer_kwargs",), _arg("optimizer_kwargs", {"betas": 3})),
    ]
    for v in ("mps", "cuda:99", "tpu"):
        rows.append(Case(f"device={v!r}", ("device",), _arg("device", v)))
    rows += [
        Case("checkpoint: path under a file", ("checkpoint",), _under_a_file),
        Case("checkpoint: a directory", ("checkpoint",), lambda fam, tmp: {"checkpoint": tmp}),
        Case("checkpoint: in a read-only folder", ("checkpoint",), _read_only),
        Case("resume=True without checkpoint", ("resume",), _arg("resume", True)),
        Case("resume='missing.pt'", ("resume", "checkpoint"),
             lambda fam, tmp: {"resume": str(tmp / "missing.pt")}),
        Case("precision='fp8'", ("precision",), _arg("precision", "fp8")),
        Case("scheduler_every='sometimes'", ("scheduler_every",), _arg("scheduler_every", "sometimes")),
        Case("seed='abc'", ("seed",), _arg("seed", "abc")),
        Case("callbacks=[42]", ("callbacks",), _arg("callbacks", [42])),
        Case("modules=[3]", ("modules",), _arg("modules", [3])),
    ]
    return rows


# ---------------------------------------------------------------- one cell

class StepCounter:
    """A callback: how many training steps ran."""

    def __init__(self):
        self.steps = 0

    def on_step_end(self, state):
        self.steps += 1


class ObservedDtypes(Messenger):
    """Records the dtype of every observed value at a sample site while it is active."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def _pyro_sample(self, msg):
        if msg.get("is_observed") and isinstance(msg.get("value"), torch.Tensor):
            self.dtypes.add(msg["value"].dtype)


def _watch_inputs(modules, dtypes):
    def hook(module, args):
        dtypes.update(a.dtype for a in args if isinstance(a, torch.Tensor))
    return [m.register_forward_pre_hook(hook) for m in modules]


@dataclass
class Outcome:
    label: str
    steps: int = 0
    message: str = ""
    clean: bool = False
    by_rule: bool = False
    applicable: bool = True


def _first_word(message):
    m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", message)
    return m.group(1) if m else ""


def classify(case, err, steps, seen):
    if err is None:
        if case.dtype is None:
            return Outcome("accepted", steps)
        if case.dtype in seen:
            return Outcome(f"accepted (as {str(case.dtype).replace('torch.', '')})", steps)
        if seen and all(d == torch.get_default_dtype() for d in seen):
            if case.dtype.is_complex:
                return Outcome("accepted (converted, lossy)", steps)
            return Outcome("accepted (converted)", steps, by_rule=True)
        return Outcome(f"accepted (saw {sorted(str(d) for d in seen)})", steps)
    message = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    late = " (late)" if steps else ""
    if not isinstance(err, ValueError):
        return Outcome(f"other {type(err).__name__}{late}", steps, message)
    if steps:
        return Outcome("ValueError (late)", steps, message)
    if _first_word(str(err)) in case.names:
        return Outcome("ValueError (clean)", 0, message, clean=True)
    return Outcome("ValueError (unnamed)", 0, message)


def run_cell(case, maker, seed, ebm):
    with tempfile.TemporaryDirectory(prefix="pyro_dgm_bad_") as tmp:
        tmp = Path(tmp)
        try:
            return _run_cell(case, maker(seed, ebm), tmp, seed)
        finally:
            for p in tmp.rglob("*"):  # let the folder be removed after the read-only row
                if p.is_dir():
                    p.chmod(stat.S_IRWXU)


def _run_cell(case, fam, tmp, seed):
    made = case.make(fam, tmp)
    if isinstance(made, str):
        return Outcome("n/a", message=made, applicable=False)
    kwargs = {"objective": fam.objective, "steps": STEPS, "batch_size": BATCH, "seed": seed, "progress": False}
    kwargs.update(made)
    data = kwargs.pop("data", fam.data)
    counter = StepCounter()
    kwargs["callbacks"] = list(kwargs.get("callbacks", ())) + [counter]
    spy = ObservedDtypes()
    hooks = _watch_inputs(fam.watched, spy.dtypes)
    err = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with spy:
                pyro_dgm.fit(fam.model, fam.guide, data, **kwargs)
    except Exception as e:  # noqa: BLE001 -- classifying every exception is the point
        err = e
    finally:
        for h in hooks:
            h.remove()
    return classify(case, err, counter.steps, spy.dtypes)


# ---------------------------------------------------------------- the table

def print_table(rows, families, results):
    w0 = max(len(c.name) for c in rows)
    widths = [max(len(f), *(len(results[c.name, f].label) for c in rows)) for f in families]
    header = f"{'bad input':<{w0}} | " + " | ".join(f"{f:<{w}}" for f, w in zip(families, widths))
    print(header)
    print("-" * len(header))
    for c in rows:
        print(f"{c.name:<{w0}} | " + " | ".join(f"{results[c.name, f].label:<{w}}"
                                               for f, w in zip(families, widths)))


def print_details(rows, families, results):
    print("\nwhat happened in every cell that is neither a clean ValueError nor converted by rule:")
    shown = 0
    for c in rows:
        for f in families:
            o = results[c.name, f]
            if not o.clean and not o.by_rule and o.applicable:
                what = o.message or f"no error, {o.steps} step(s) trained"
                print(f"  {c.name} / {f}: {o.label}: {what}")
                shown += 1
    if not shown:
        print("  (none)")


def summary(results):
    cells = [o for o in results.values() if o.applicable]
    kinds = {}
    for o in cells:
        kinds[o.label] = kinds.get(o.label, 0) + 1
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    n_a = len(results) - len(cells)
    clean, by_rule = sum(o.clean for o in cells), sum(o.by_rule for o in cells)
    return (f"outcomes ({len(cells)} cells, {n_a} n/a): {counts}\n"
            f"clean ValueErrors: {clean} of {len(cells)} (accepted by rule: {by_rule})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="seeds the models, the toy data and fit")
    p.add_argument("--ebm", default="ebm-nce", help="the registered EBM (with its objective) for column EBM")
    p.add_argument("--rows", default=None, help="only rows whose name contains this")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    p.add_argument("--verbose", action="store_true",
                   help="print what happened in every cell that is neither clean nor converted by rule")
    args = p.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        p.error(f"--families: unknown {unknown}; expected some of {list(FAMILIES)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    rows = [c for c in cases() if args.rows is None or args.rows in c.name]
    t0 = time.perf_counter()
    results = {(c.name, f): run_cell(c, FAMILIES[f], args.seed, args.ebm) for c in rows for f in args.families}
    print(f"bad inputs to pyro_dgm.fit: steps={STEPS}, batch_size={BATCH}, {N} examples, seed {args.seed}, "
          f"EBM {args.ebm}; {time.perf_counter() - t0:.0f} s\n")
    print_table(rows, args.families, results)
    if args.verbose:
        print_details(rows, args.families, results)
    print()
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
